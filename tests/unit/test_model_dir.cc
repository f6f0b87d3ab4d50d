// The compressed model directory: llama2.c -> Hugging Face directory against run.c's logits, save -> load bit-identical
// logits for every scheme (LLaMA, GPT-2 Conv1D with a tied head, BERT), config/metadata contents, sharding,
// atomic writes, and load errors that name the tensor.
#include <gtest/gtest.h>
#include <shrink/compress/quantize.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/model_dir.h>
#include <shrink/formats/safetensors.h>
#include <shrink/models/synth.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;
using testing::temp_dir;
namespace fs = std::filesystem;

std::unique_ptr<Model> load_stories_bin() {
  LoadOptions o;
  o.tokenizer = fixture("stories260K/tok512.bin");
  return load_model(fixture("stories260K/stories260K.bin"), o);
}

std::vector<float> all_logits(const Model& m, const std::vector<int32_t>& ids) {
  const auto& d = dynamic_cast<const DecoderModel&>(m);
  KvCache c = d.new_cache(static_cast<int64_t>(ids.size()));
  std::vector<float> out(ids.size() * d.config().vocab_size);
  d.forward(c, ids.data(), static_cast<int64_t>(ids.size()), out.data(), true);
  return out;
}

// The token ids of run.c's greedy pass (prompt + 64 generated), from the fixture.
const std::vector<int32_t>& ref_ids() {
  static const std::vector<int32_t> ids = [] {
    auto ref = nlohmann::json::parse(read_text_file(fixture("stories260K/reference.json")));
    return ref["greedy"]["all_token_ids"].get<std::vector<int32_t>>();
  }();
  return ids;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

// stories260K converted once to a Hugging Face directory (fp32), shared by the round-trip tests.
const fs::path& stories_hf_dir() {
  static const fs::path dir = [] {
    auto d = temp_dir("stories_hf") / "stories260K";
    SaveOptions so;
    so.tokenizer = fixture("stories260K/tok512.bin");
    save_model(*load_stories_bin(), d, so);
    return d;
  }();
  return dir;
}

TEST(Sha256, FipsVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million.data(), million.size()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(ModelDir, Llama2cBecomesHfDirectoryWithRunCLogits) {
  const fs::path& dir = stories_hf_dir();
  EXPECT_TRUE(fs::exists(dir / "tokenizer.bin"));
  auto cfg = nlohmann::json::parse(read_text_file(dir / "config.json"));
  EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
  EXPECT_FALSE(cfg.contains("quantization_config"));  // nothing quantized
  auto m = load_model(dir);                           // tokenizer found beside it
  ASSERT_NE(m->tokenizer(), nullptr);
  EXPECT_FALSE(m->config().rope_interleaved);  // q/k rows now in Hugging Face order
  const auto ref = nlohmann::json::parse(read_text_file(fixture("stories260K/reference.json")));
  EXPECT_EQ(m->tokenizer()->encode(ref["prompt"].get<std::string>(), true),
            ref["prompt_token_ids"].get<std::vector<int32_t>>());
  const auto logits = all_logits(*m, ref_ids());
  double err = 0;
  for (const char* key : {"pos_0", "pos_1", "pos_2", "pos_3", "last"}) {
    const auto& r = ref["logits"][key];
    const auto values = r["values"].get<std::vector<float>>();
    const int pos = r["pos"].get<int>();
    for (size_t i = 0; i < values.size(); ++i)
      err = std::max(err, std::fabs(double(values[i]) - logits[pos * 512 + i]));
  }
  EXPECT_LE(err, 1e-4) << "run.c logits vs the converted directory";
}

struct SchemeCase {
  const char* scheme;
  bool lm_head;
};

class RoundTrip : public ::testing::TestWithParam<SchemeCase> {};

TEST_P(RoundTrip, SaveLoadGivesBitIdenticalLogits) {
  const SchemeCase c = GetParam();
  auto m = load_model(stories_hf_dir());
  QuantizeOptions o;
  o.scheme = parse_quant_spec(c.scheme);
  o.quantize_lm_head = c.lm_head;
  quantize_model(*m, o);
  const auto before = all_logits(*m, ref_ids());
  const fs::path out = temp_dir("roundtrip") / "q";
  SaveResult saved = save_model(*m, out);
  EXPECT_EQ(saved.size_bytes, path_size_bytes(out.string()));
  auto back = load_model(out);
  ASSERT_EQ(back->linears().size(), m->linears().size());
  for (size_t i = 0; i < m->linears().size(); ++i) {
    EXPECT_EQ(back->linears()[i].name, m->linears()[i].name);
    EXPECT_EQ(back->linears()[i].impl->scheme(), m->linears()[i].impl->scheme()) << m->linears()[i].name;
  }
  EXPECT_EQ(back->find_linear("lm_head")->impl->scheme(), c.lm_head ? o.scheme.name() : "f32");
  EXPECT_TRUE(bit_identical(all_logits(*back, ref_ids()), before)) << c.scheme;
  if (!c.lm_head) {  // a quantized tied head gets weights of its own
    EXPECT_EQ(back->parameters(), m->parameters());
  }
}

INSTANTIATE_TEST_SUITE_P(Schemes, RoundTrip,
                         ::testing::Values(SchemeCase{"w8a16", false}, SchemeCase{"w8a8", false},
                                           SchemeCase{"w4a16-g32", false}, SchemeCase{"w4a16-g64-asym", false},
                                           SchemeCase{"w4a16-g128", false}, SchemeCase{"bf16", false},
                                           SchemeCase{"w4a16-g32", true}, SchemeCase{"w8a8", true}),
                         [](const auto& info) {
                           std::string n = std::string(info.param.scheme) + (info.param.lm_head ? "_lm_head" : "");
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST(ModelDir, FromLlama2cQuantizedMatchesInMemory) {
  // Quantizing the .bin directly: the saved q/k rows are permuted to HF order, so logits agree to rounding.
  auto m = load_stories_bin();
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w4a16-g32");
  quantize_model(*m, o);
  const auto before = all_logits(*m, ref_ids());
  const fs::path out = temp_dir("from_bin") / "q";
  SaveOptions so;
  so.tokenizer = fixture("stories260K/tok512.bin");
  save_model(*m, out, so);
  auto back = load_model(out);
  EXPECT_LE(max_abs_diff(all_logits(*back, ref_ids()), before), 1e-4);
}

TEST(ModelDir, ConfigAndMetadataDescribeTheScheme) {
  auto m = load_model(stories_hf_dir());
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w4a16-g32");
  o.overrides = {{"mlp\\.down_proj", parse_quant_spec("w8a8")}};
  quantize_model(*m, o);
  const fs::path out = temp_dir("meta") / "q";
  SaveOptions so;
  so.recipe = {{"scheme", "w4a16-g32"}};
  SaveResult saved = save_model(*m, out, so);
  auto cfg = nlohmann::json::parse(read_text_file(out / "config.json"));
  const auto& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["format"], "mixed-precision");
  EXPECT_EQ(qc["ignore"], nlohmann::json::array({"lm_head"}));
  int w4_groups = 0, w8_groups = 0;
  for (auto& [name, g] : qc["config_groups"].items()) {
    if (g["weights"]["num_bits"] == 4) {
      ++w4_groups;
      EXPECT_EQ(g["format"], "pack-quantized");
      EXPECT_EQ(g["weights"]["strategy"], "group");
      EXPECT_EQ(g["weights"]["group_size"], 32);
      EXPECT_EQ(g["weights"]["symmetric"], true);
      EXPECT_TRUE(g["input_activations"].is_null());
      EXPECT_EQ(g["targets"].size(), 5u * 6);  // q, k, v, o, gate, up of 5 layers
    } else {
      ++w8_groups;
      EXPECT_EQ(g["format"], "int-quantized");
      EXPECT_EQ(g["weights"]["strategy"], "channel");
      EXPECT_EQ(g["input_activations"]["dynamic"], true);
      EXPECT_EQ(g["input_activations"]["strategy"], "token");
      EXPECT_EQ(g["targets"].size(), 5u);
    }
  }
  EXPECT_EQ(w4_groups, 1);
  EXPECT_EQ(w8_groups, 1);
  EXPECT_EQ(qc["shrink"]["layers"]["model.layers.0.mlp.down_proj"], "w8a8");
  EXPECT_EQ(qc["shrink"]["layers"]["model.layers.4.self_attn.q_proj"], "w4a16-g32");
  EXPECT_FALSE(qc["shrink"]["layers"].contains("lm_head"));
  EXPECT_EQ(qc["shrink"]["source_dtype"], "F32");

  SafetensorsFile st = read_safetensors(out / "model.safetensors");
  EXPECT_EQ(st.metadata["format"], "pt");
  EXPECT_EQ(st.metadata["shrink_format_version"], std::to_string(kModelDirFormatVersion));
  EXPECT_EQ(st.metadata["source_model_sha256"], saved.source_sha256);
  EXPECT_EQ(st.metadata["source_model_sha256"].size(), 64u);
  EXPECT_EQ(st.metadata["scheme"], "mixed");
  EXPECT_EQ(nlohmann::json::parse(st.metadata["recipe"])["scheme"], "w4a16-g32");
  // Packed tensors by the contract of ops/qlinear.h; untouched tensors as they were.
  const Tensor& wp = st.tensors.at("model.layers.0.mlp.up_proj.weight_packed");
  EXPECT_EQ(wp.dtype(), DType::U8);
  EXPECT_EQ(wp.shape(), (Shape{172, 32}));
  EXPECT_EQ(st.tensors.at("model.layers.0.mlp.up_proj.weight_scale").dtype(), DType::F16);
  EXPECT_EQ(st.tensors.at("model.layers.0.mlp.down_proj.weight").dtype(), DType::I8);
  EXPECT_EQ(st.tensors.at("model.layers.0.mlp.down_proj.weight").shape(), (Shape{64, 172}));
  EXPECT_EQ(st.tensors.count("model.layers.0.mlp.up_proj.weight"), 0u);
  EXPECT_EQ(st.tensors.at("model.embed_tokens.weight").dtype(), DType::F32);
  // The source hash is of the source model, not of what was written.
  EXPECT_EQ(saved.source_sha256, model_source_hash(*load_model(stories_hf_dir())));
}

TEST(ModelDir, ShardedSaveLoadsIdentically) {
  auto m = load_model(stories_hf_dir());
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a16");
  quantize_model(*m, o);
  const fs::path out = temp_dir("sharded") / "q";
  SaveOptions so;
  so.max_shard_bytes = 64 * 1024;
  SaveResult saved = save_model(*m, out, so);
  EXPECT_GT(saved.shards, 1);
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  EXPECT_TRUE(bit_identical(all_logits(*load_model(out), ref_ids()), all_logits(*m, ref_ids())));
}

TEST(ModelDir, Gpt2Conv1dAndTiedHeadRoundTrip) {
  const fs::path src = temp_dir("gpt2src") / "gpt2";
  synth_model(find_synth_preset("gpt2-tiny"), src, 7, DType::F16);
  auto m = load_model(src);
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a8");
  o.quantize_lm_head = true;  // lm_head reads wte: it gets int8 weights of its own
  quantize_model(*m, o);
  const std::vector<int32_t> ids = {5, 17, 300, 999, 42, 0, 7};
  const auto before = all_logits(*m, ids);
  const fs::path out = temp_dir("gpt2q") / "q";
  save_model(*m, out);
  SafetensorsFile st = read_safetensors(out / "model.safetensors");
  const Tensor& qkv = st.tensors.at("transformer.h.0.attn.c_attn.weight");
  EXPECT_EQ(qkv.dtype(), DType::I8);
  EXPECT_EQ(qkv.shape(), (Shape{192, 64}));  // [out, in], not Conv1D's [in, out]
  EXPECT_EQ(st.tensors.at("transformer.h.0.attn.c_attn.bias").dtype(), DType::F32);
  EXPECT_EQ(st.tensors.at("transformer.wte.weight").dtype(), DType::F16);  // unchanged
  EXPECT_EQ(st.tensors.at("lm_head.weight").dtype(), DType::I8);
  auto cfg = nlohmann::json::parse(read_text_file(out / "config.json"));
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
  EXPECT_TRUE(fs::exists(out / "tokenizer.json"));
  auto back = load_model(out);
  EXPECT_TRUE(bit_identical(all_logits(*back, ids), before));
}

// W4 covers the packed pooler (stored as weight_packed, no dense weight): BertForSequenceClassification must find it.
class BertRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(BertRoundTrip, ClassifierSkippedByDefaultAndRoundTrips) {
  const fs::path src = temp_dir("bertsrc") / "bert";
  synth_model(find_synth_preset("bert-tiny"), src, 3);
  auto m = load_model(src);
  QuantizeOptions o;
  o.scheme = parse_quant_spec(GetParam());
  quantize_model(*m, o);
  EXPECT_EQ(m->find_linear("classifier")->impl->scheme(), "f32");
  const fs::path out = temp_dir("bertq_" + GetParam()) / "q";
  save_model(*m, out);
  auto back = load_model(out);
  EXPECT_EQ(back->find_linear("classifier")->impl->scheme(), "f32");
  EXPECT_EQ(back->find_linear("bert.encoder.layer.0.attention.self.query")->impl->scheme(), GetParam());
  EXPECT_EQ(back->find_linear("bert.pooler.dense")->impl->scheme(), GetParam());
  const auto& e0 = dynamic_cast<const EncoderModel&>(*m);
  const auto& e1 = dynamic_cast<const EncoderModel&>(*back);
  const BatchEncoding b = m->require_tokenizer().encode_batch({"hello world", "a longer second text here"});
  const EncoderOutput o0 = e0.forward(b), o1 = e1.forward(b);
  ASSERT_EQ(o0.logits.numel(), o1.logits.numel());
  EXPECT_EQ(std::memcmp(o0.logits.raw(), o1.logits.raw(), o0.logits.nbytes()), 0);
}

INSTANTIATE_TEST_SUITE_P(Schemes, BertRoundTrip, ::testing::Values("w8a8", "w4a16-g32"));

// A saved W4 model whose safetensors we rewrite with one tensor changed.
fs::path broken_copy(const std::string& tag, const std::function<void(TensorMap&)>& edit) {
  static const fs::path good = [] {
    auto m = load_model(stories_hf_dir());
    QuantizeOptions o;
    o.scheme = parse_quant_spec("w4a16-g32");
    quantize_model(*m, o);
    auto d = temp_dir("good_w4") / "q";
    save_model(*m, d);
    return d;
  }();
  const fs::path d = temp_dir(tag) / "q";
  fs::copy(good, d, fs::copy_options::recursive);
  SafetensorsFile st = read_safetensors(good / "model.safetensors");
  TensorMap t = st.tensors;
  edit(t);
  write_safetensors(d / "model.safetensors", t, st.metadata);
  return d;
}

std::string load_error(const fs::path& dir) {
  try {
    load_model(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded without error)";
}

TEST(ModelDirErrors, MissingPackedTensorIsNamed) {
  const auto d = broken_copy("missing", [](TensorMap& t) { t.erase("model.layers.2.mlp.up_proj.weight_scale"); });
  const std::string msg = load_error(d);
  EXPECT_NE(msg.find("model.layers.2.mlp.up_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weight_scale"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find((d / "model.safetensors").string()), std::string::npos) << msg;
}

TEST(ModelDirErrors, ShardedModelNamesTheShard) {
  auto m = load_model(stories_hf_dir());
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a16");
  quantize_model(*m, o);
  const fs::path d = temp_dir("shard_err") / "q";
  SaveOptions so;
  so.max_shard_bytes = 64 * 1024;
  save_model(*m, d, so);
  // Rewrite the shard holding layer 3's down_proj without its scale.
  const auto index = nlohmann::json::parse(read_text_file(d / "model.safetensors.index.json"));
  const std::string shard = index["weight_map"]["model.layers.3.mlp.down_proj.weight_scale"];
  SafetensorsFile st = read_safetensors(d / shard);
  TensorMap t = st.tensors;
  t.erase("model.layers.3.mlp.down_proj.weight_scale");
  write_safetensors(d / shard, t, st.metadata);
  const std::string msg = load_error(d);
  EXPECT_NE(msg.find("model.layers.3.mlp.down_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weight_scale"), std::string::npos) << msg;
  EXPECT_NE(msg.find(shard), std::string::npos) << msg;
}

TEST(ModelDirErrors, WrongDtypeIsNamed) {
  const auto d = broken_copy("dtype", [](TensorMap& t) {
    Tensor& s = t.at("model.layers.1.self_attn.k_proj.weight_scale");
    s = s.to_f32();  // F16 expected
  });
  const std::string msg = load_error(d);
  EXPECT_NE(msg.find("model.layers.1.self_attn.k_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("weight_scale"), std::string::npos) << msg;
  EXPECT_NE(msg.find("F32"), std::string::npos) << msg;
  EXPECT_NE(msg.find("F16"), std::string::npos) << msg;
}

TEST(ModelDirErrors, WrongShapeIsNamed) {
  const auto d = broken_copy("shape", [](TensorMap& t) {
    Tensor& p = t.at("model.layers.0.self_attn.q_proj.weight_packed");
    p = p.clone().reshape({32, 64});  // [64, 32] expected
  });
  const std::string msg = load_error(d);
  EXPECT_NE(msg.find("weight_packed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[64, 32]"), std::string::npos) << msg;
}

TEST(ModelDirErrors, UnknownSchemeInConfigListsValidOnes) {
  const auto d = broken_copy("scheme", [](TensorMap&) {});
  auto cfg = nlohmann::json::parse(read_text_file(d / "config.json"));
  cfg["quantization_config"]["shrink"]["layers"]["model.layers.0.mlp.up_proj"] = "w3a16";
  testing::write_bytes(d / "config.json", cfg.dump());
  const std::string msg = load_error(d);
  EXPECT_NE(msg.find("model.layers.0.mlp.up_proj"), std::string::npos) << msg;
  EXPECT_NE(msg.find("w3a16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("w8a16"), std::string::npos) << msg;  // the list of valid schemes
}

TEST(ModelDirErrors, RefusesForeignDirectoryAndLeavesItAlone) {
  const fs::path d = temp_dir("foreign");
  testing::write_bytes(d / "notes.txt", "mine");
  auto m = load_model(stories_hf_dir());
  try {
    save_model(*m, d);
    FAIL() << "saved over a foreign directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not written by shrink"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_text_file(d / "notes.txt"), "mine");
  EXPECT_FALSE(fs::exists(d / "config.json"));
}

TEST(ModelDirErrors, FailedSaveLeavesNothing) {
  const fs::path parent = temp_dir("failed");
  auto m = load_model(stories_hf_dir());
  SaveOptions so;
  so.tokenizer = parent / "no_such_tokenizer.bin";  // fails after the tensors are written
  EXPECT_THROW(save_model(*m, parent / "out", so), Error);
  EXPECT_TRUE(fs::is_empty(parent)) << "temporary or partial output left behind";
}

TEST(ModelDir, ReplacesEarlierShrinkOutput) {
  const fs::path out = temp_dir("replace") / "q";
  auto m = load_model(stories_hf_dir());
  save_model(*m, out);  // f32 copy
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a16");
  quantize_model(*m, o);
  save_model(*m, out);  // overwrites its own earlier output...
  auto back = load_model(out);
  EXPECT_EQ(back->find_linear("model.layers.0.mlp.up_proj")->impl->scheme(), "w8a16");
  save_model(*m, out);  // ...including a quantized one
  for (const auto& e : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(e.path().filename(), "q") << "left behind: " << e.path();
}

}  // namespace
}  // namespace shrink
