// llama2.c .bin loader against the stories260K fixture (header and layout from its REFERENCE.md, values
// read independently with fread), error cases, and writer round trips.
#include <gtest/gtest.h>
#include <shrink/core/mmap.h>
#include <shrink/core/error.h>
#include <shrink/formats/llama2c.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>

#include "unit/test_util.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected shrink::Error containing '" << parts.front() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// n float32 values at byte `offset` of `path`, read with plain stdio.
std::vector<float> fread_floats(const fs::path& path, long offset, size_t n) {
  std::vector<float> v(n);
  FILE* f = std::fopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr);
  if (!f) return v;
  EXPECT_EQ(std::fseek(f, offset, SEEK_SET), 0);
  EXPECT_EQ(std::fread(v.data(), 4, n, f), n);
  std::fclose(f);
  return v;
}

std::vector<int32_t> fread_header(const fs::path& path) {
  std::vector<int32_t> h(7);
  FILE* f = std::fopen(path.c_str(), "rb");
  EXPECT_NE(f, nullptr);
  if (!f) return h;
  EXPECT_EQ(std::fread(h.data(), 4, 7, f), 7u);
  std::fclose(f);
  return h;
}


std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// stories260K per REFERENCE.md: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, seq 512.
constexpr int64_t kDim = 64, kHidden = 172, kLayers = 5, kHeads = 8, kKvHeads = 4, kVocab = 512, kSeq = 512;
constexpr int64_t kHs = kDim / kHeads, kKv = kKvHeads * kHs;

TEST(Llama2c, Stories260KHeaderAndShapes) {
  const fs::path path = testing::fixture("stories260K/stories260K.bin");
  const Llama2cModel m = read_llama2c_model(path);
  const ModelConfig& c = m.config;
  EXPECT_EQ(c.hidden_size, kDim);
  EXPECT_EQ(c.intermediate_size, kHidden);
  EXPECT_EQ(c.num_layers, kLayers);
  EXPECT_EQ(c.num_heads, kHeads);
  EXPECT_EQ(c.num_kv_heads, kKvHeads);
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.max_position_embeddings, kSeq);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_TRUE(c.rope_interleaved);
  EXPECT_TRUE(c.tie_word_embeddings);  // vocab_size in the file is positive
  EXPECT_EQ(c.rope_theta, 10000.f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.raw["num_key_value_heads"], kKvHeads);

  // 1 embedding + 9 per layer + final norm; no lm_head (shared), no freq_cis.
  EXPECT_EQ(m.tensors.size(), 2u + 9u * kLayers);
  EXPECT_EQ(m.tensors.count("lm_head.weight"), 0u);
  EXPECT_EQ(m.tensors.at("model.embed_tokens.weight").shape(), (Shape{kVocab, kDim}));
  EXPECT_EQ(m.tensors.at("model.norm.weight").shape(), (Shape{kDim}));
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    EXPECT_EQ(m.tensors.at(p + "input_layernorm.weight").shape(), (Shape{kDim}));
    EXPECT_EQ(m.tensors.at(p + "self_attn.q_proj.weight").shape(), (Shape{kDim, kDim}));
    EXPECT_EQ(m.tensors.at(p + "self_attn.k_proj.weight").shape(), (Shape{kKv, kDim}));
    EXPECT_EQ(m.tensors.at(p + "self_attn.v_proj.weight").shape(), (Shape{kKv, kDim}));
    EXPECT_EQ(m.tensors.at(p + "self_attn.o_proj.weight").shape(), (Shape{kDim, kDim}));
    EXPECT_EQ(m.tensors.at(p + "post_attention_layernorm.weight").shape(), (Shape{kDim}));
    EXPECT_EQ(m.tensors.at(p + "mlp.gate_proj.weight").shape(), (Shape{kHidden, kDim}));
    EXPECT_EQ(m.tensors.at(p + "mlp.down_proj.weight").shape(), (Shape{kDim, kHidden}));
    EXPECT_EQ(m.tensors.at(p + "mlp.up_proj.weight").shape(), (Shape{kHidden, kDim}));
  }
  for (const auto& [name, t] : m.tensors) EXPECT_EQ(t.dtype(), DType::F32) << name;
}

TEST(Llama2c, Stories260KValuesMatchTheFileBytes) {
  const fs::path path = testing::fixture("stories260K/stories260K.bin");
  const auto header = fread_header(path);
  EXPECT_EQ(header, (std::vector<int32_t>{64, 172, 5, 8, 4, 512, 512}));
  const Llama2cModel m = read_llama2c_model(path);

  const auto embed = fread_floats(path, 28, 4);
  const float* e = m.tensors.at("model.embed_tokens.weight").data<float>();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(e[i], embed[i]) << i;

  // Offsets (in floats after the header) of later arrays, from the layout table in REFERENCE.md.
  const int64_t rms_att = kVocab * kDim;
  const int64_t wq = rms_att + kLayers * kDim;
  const int64_t wk = wq + kLayers * kDim * kDim;
  const int64_t wv = wk + kLayers * kKv * kDim;
  const int64_t wo = wv + kLayers * kKv * kDim;
  const int64_t rms_ffn = wo + kLayers * kDim * kDim;
  const int64_t w1 = rms_ffn + kLayers * kDim;
  const int64_t w2 = w1 + kLayers * kHidden * kDim;
  const int64_t w3 = w2 + kLayers * kDim * kHidden;
  const int64_t rms_final = w3 + kLayers * kHidden * kDim;
  const int64_t freq = rms_final + kDim;
  EXPECT_EQ(28 + 4 * (freq + 2 * kSeq * kHs / 2), 1056540);  // the fixture's size: nothing left over

  auto at = [&](int64_t float_offset, size_t n) { return fread_floats(path, 28 + 4 * float_offset, n); };
  EXPECT_EQ(values(m.tensors.at("model.norm.weight")), at(rms_final, kDim));
  EXPECT_EQ(values(m.tensors.at("model.layers.2.input_layernorm.weight")), at(rms_att + 2 * kDim, kDim));
  EXPECT_EQ(values(m.tensors.at("model.layers.3.self_attn.k_proj.weight")), at(wk + 3 * kKv * kDim, kKv * kDim));
  EXPECT_EQ(values(m.tensors.at("model.layers.4.self_attn.o_proj.weight")), at(wo + 4 * kDim * kDim, kDim * kDim));
  EXPECT_EQ(values(m.tensors.at("model.layers.1.mlp.down_proj.weight")), at(w2 + 1 * kDim * kHidden, kDim * kHidden));
  EXPECT_EQ(values(m.tensors.at("model.layers.0.mlp.up_proj.weight")), at(w3, kHidden * kDim));
  EXPECT_EQ(values(m.tensors.at("model.layers.4.post_attention_layernorm.weight")), at(rms_ffn + 4 * kDim, kDim));
}

TEST(Llama2c, TruncatedAndPaddedFiles) {
  const auto dir = testing::temp_dir("l2c-trunc");
  const std::string full = read_text_file(testing::fixture("stories260K/stories260K.bin"));
  const fs::path p = dir / "cut.bin";
  testing::write_bytes(p, full.substr(0, full.size() - 100));
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "1056440", "1056540", "truncated"});
  testing::write_bytes(p, full + "xyz");
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "1056543", "1056540"});
  testing::write_bytes(p, full.substr(0, 20));
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "20 bytes"});
  // The same bytes claiming an unshared classifier: the size fits the shared layout.
  std::string flipped = full;
  const int32_t neg = -512;
  std::memcpy(&flipped[20], &neg, 4);
  testing::write_bytes(p, flipped);
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "sign of vocab_size"});
}

TEST(Llama2c, BadHeaders) {
  const auto dir = testing::temp_dir("l2c-header");
  const fs::path p = dir / "bad.bin";
  auto with_header = [&](std::vector<int32_t> h) {
    std::string s(28, '\0');
    std::memcpy(s.data(), h.data(), 28);
    testing::write_bytes(p, s + std::string(4096, '\0'));
  };
  with_header({64, 172, 5, 0, 4, 512, 512});
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "n_heads", "0"});
  with_header({64, 172, 5, 8, 3, 512, 512});
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "n_kv_heads 3"});
  with_header({60, 172, 5, 8, 4, 512, 512});
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "dim 60"});
  with_header({0x616b3432, 1, 1, 1, 1, 1, 1});  // a v1+ export starts with magic "ak42"
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "dim", "version"});
  with_header({64, 172, 5, 8, 4, std::numeric_limits<int32_t>::min(), 512});
  expect_error([&] { read_llama2c_model(p); }, {p.string(), "vocab_size"});
}

struct Synth {
  ModelConfig config;
  TensorMap tensors;
};

// A small random LLaMA with HF names; `shared` drops lm_head.weight.
Synth synth(bool shared) {
  Synth s;
  ModelConfig& c = s.config;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 32, c.hidden_size = 16, c.intermediate_size = 24, c.num_layers = 2, c.num_heads = 4;
  c.num_kv_heads = 2, c.head_dim = 4, c.max_position_embeddings = 8, c.hidden_act = "silu";
  c.rope_interleaved = true;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  auto add = [&](const std::string& name, Shape shape) {
    std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
    for (auto& x : v) x = nd(rng);
    s.tensors[name] = Tensor::from_f32(v, shape);
  };
  add("model.embed_tokens.weight", {32, 16});
  for (int i = 0; i < 2; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {16});
    add(p + "self_attn.q_proj.weight", {16, 16});
    add(p + "self_attn.k_proj.weight", {8, 16});
    add(p + "self_attn.v_proj.weight", {8, 16});
    add(p + "self_attn.o_proj.weight", {16, 16});
    add(p + "post_attention_layernorm.weight", {16});
    add(p + "mlp.gate_proj.weight", {24, 16});
    add(p + "mlp.down_proj.weight", {16, 24});
    add(p + "mlp.up_proj.weight", {24, 16});
  }
  add("model.norm.weight", {16});
  if (!shared) add("lm_head.weight", {32, 16});
  return s;
}

TEST(Llama2c, RoundTripUnsharedClassifier) {
  const auto dir = testing::temp_dir("l2c-rt");
  const Synth s = synth(false);
  const fs::path p = dir / "unshared.bin";
  write_llama2c_model(p, s.config, s.tensors);

  EXPECT_EQ(fread_header(p), (std::vector<int32_t>{16, 24, 2, 4, 2, -32, 8}));
  // Hand count: embed 512, per layer 16+256+128+128+256+16+384+384+384 = 1952, norm 16,
  // freq_cis 2*8*2 = 32, lm_head 512.
  EXPECT_EQ(fs::file_size(p), 28u + 4u * (512 + 2 * 1952 + 16 + 32 + 512));
  // llama2.c's legacy export stores cos/sin of t * 10000^(-2k/head_size): t = 3, k = 1 -> angle 0.03.
  const auto freq = fread_floats(p, 28 + 4 * (512 + 2 * 1952 + 16), 32);
  EXPECT_FLOAT_EQ(freq[3 * 2 + 1], std::cos(0.03f));
  EXPECT_FLOAT_EQ(freq[16 + 3 * 2 + 1], std::sin(0.03f));

  const Llama2cModel m = read_llama2c_model(p);
  EXPECT_FALSE(m.config.tie_word_embeddings);
  ASSERT_EQ(m.tensors.size(), s.tensors.size());
  for (const auto& [name, t] : s.tensors) {
    ASSERT_TRUE(m.tensors.count(name)) << name;
    EXPECT_EQ(m.tensors.at(name).shape(), t.shape()) << name;
    EXPECT_EQ(values(m.tensors.at(name)), values(t)) << name;
  }
}

TEST(Llama2c, RoundTripSharedAndHfRopeOrder) {
  const auto dir = testing::temp_dir("l2c-hf");
  Synth s = synth(true);
  s.config.rope_interleaved = false;  // q/k rows in Hugging Face order: written interleaved
  const fs::path p = dir / "shared.bin";
  write_llama2c_model(p, s.config, s.tensors);
  EXPECT_EQ(fread_header(p)[5], 32);
  const Llama2cModel m = read_llama2c_model(p);
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_EQ(m.tensors.count("lm_head.weight"), 0u);
  EXPECT_EQ(values(m.tensors.at("model.layers.1.self_attn.v_proj.weight")),
            values(s.tensors.at("model.layers.1.self_attn.v_proj.weight")));
  // head_size 4: llama2.c rows (0,1,2,3) of each head are HF rows (0,2,1,3).
  for (const char* w : {"q_proj", "k_proj"}) {
    const std::string name = std::string("model.layers.0.self_attn.") + w + ".weight";
    const Tensor& hf = s.tensors.at(name);
    const Tensor& l2c = m.tensors.at(name);
    const int64_t heads = hf.dim(0) / 4;
    const int perm[4] = {0, 2, 1, 3};
    for (int64_t h = 0; h < heads; ++h)
      for (int r = 0; r < 4; ++r)
        for (int64_t col = 0; col < 16; ++col)
          EXPECT_EQ(l2c.data<float>()[(h * 4 + r) * 16 + col], hf.data<float>()[(h * 4 + perm[r]) * 16 + col]);
  }
}

TEST(Llama2c, WriterRefusesWhatTheFormatCannotHold) {
  const auto dir = testing::temp_dir("l2c-refuse");
  Synth s = synth(true);
  s.config.rope_theta = 500000.f;
  expect_error([&] { write_llama2c_model(dir / "a.bin", s.config, s.tensors); }, {"a.bin", "rope_theta", "500000"});
  s = synth(true);
  s.tensors.erase("model.layers.1.mlp.up_proj.weight");
  expect_error([&] { write_llama2c_model(dir / "b.bin", s.config, s.tensors); },
               {"b.bin", "model.layers.1.mlp.up_proj.weight"});
  s = synth(true);
  s.tensors["model.norm.weight"] = Tensor::zeros(DType::F32, {15});
  expect_error([&] { write_llama2c_model(dir / "c.bin", s.config, s.tensors); },
               {"c.bin", "model.norm.weight", "[15]"});
  EXPECT_TRUE(fs::is_empty(dir));  // no partial files
}

TEST(Llama2c, ParseFromBytesCopiesWhenMisaligned) {
  const std::string full = read_text_file(testing::fixture("stories260K/stories260K.bin"));
  std::vector<uint8_t> buf(full.size() + 1);
  std::memcpy(buf.data() + 1, full.data(), full.size());
  const Llama2cModel m = parse_llama2c_model(buf.data() + 1, full.size(), nullptr, "shifted");
  const Tensor& e = m.tensors.at("model.embed_tokens.weight");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(e.raw()) % 4, 0u);
  float first;
  std::memcpy(&first, full.data() + 28, 4);
  EXPECT_EQ(e.data<float>()[0], first);
}

}  // namespace
}  // namespace shrink
