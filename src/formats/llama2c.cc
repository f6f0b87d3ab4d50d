// llama2.c checkpoints (legacy v0 .bin): validated mmap reader mapping the arrays to Hugging Face slot
// names, and a writer. The tokenizer .bin lives in llama2c_vocab.cc.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/llama2c.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace shrink {

namespace {

constexpr size_t kHeaderBytes = 7 * sizeof(int32_t);
constexpr int64_t kMaxField = 1'000'000;  // no real checkpoint comes near; keeps size arithmetic in range

struct Header {
  int64_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
  bool shared;  // classifier shared with the token embedding (vocab_size > 0 in the file)
  int64_t head_size() const { return dim / n_heads; }
  int64_t kv_dim() const { return n_kv_heads * head_size(); }
};

// One float32 array of the file, in file order, with its Hugging Face name ("" = skipped) and shape.
struct Array {
  std::string name;
  Shape shape;
};

std::vector<Array> layout(const Header& h) {
  const int64_t d = h.dim, kv = h.kv_dim(), ff = h.hidden_dim, L = h.n_layers;
  std::vector<Array> a;
  auto per_layer = [&](const std::string& slot, Shape shape) {
    for (int64_t i = 0; i < L; ++i) a.push_back({fmt::format("model.layers.{}.{}", i, slot), shape});
  };
  a.push_back({"model.embed_tokens.weight", {h.vocab_size, d}});
  per_layer("input_layernorm.weight", {d});
  per_layer("self_attn.q_proj.weight", {d, d});
  per_layer("self_attn.k_proj.weight", {kv, d});
  per_layer("self_attn.v_proj.weight", {kv, d});
  per_layer("self_attn.o_proj.weight", {d, d});
  per_layer("post_attention_layernorm.weight", {d});
  per_layer("mlp.gate_proj.weight", {ff, d});  // w1
  per_layer("mlp.down_proj.weight", {d, ff});  // w2
  per_layer("mlp.up_proj.weight", {ff, d});    // w3
  a.push_back({"model.norm.weight", {d}});
  a.push_back({"", {h.seq_len, h.head_size() / 2}});  // freq_cis_real, unused: RoPE is recomputed
  a.push_back({"", {h.seq_len, h.head_size() / 2}});  // freq_cis_imag
  if (!h.shared) a.push_back({"lm_head.weight", {h.vocab_size, d}});
  return a;
}

// The arithmetic twin of layout(): run on unvalidated sizes, it must not build a million names.
uint64_t expected_bytes(const Header& h) {
  // Every field is below 1e6: a layer holds < 1e13 floats, all layers < 1e19 < 2^64.
  const uint64_t d = h.dim, kv = h.kv_dim(), ff = h.hidden_dim, L = h.n_layers, V = h.vocab_size;
  const uint64_t per_layer = d * (2 + 2 * d + 2 * kv + 3 * ff);
  uint64_t floats = V * d + L * per_layer + d + 2 * h.seq_len * (h.head_size() / 2) + (h.shared ? 0 : V * d);
  if (floats < L * per_layer || floats > (UINT64_MAX - kHeaderBytes) / 4) return UINT64_MAX;  // larger than any file
  return kHeaderBytes + 4 * floats;
}

Header parse_header(const uint8_t* data, size_t size, const std::string& name) {
  if (size < kHeaderBytes)
    fail(
        "{}: {} bytes is too short for a llama2.c checkpoint (a {}-byte header comes first); the file is truncated "
        "or not a llama2.c .bin",
        name, size, kHeaderBytes);
  int32_t f[7];
  std::memcpy(f, data, kHeaderBytes);
  static constexpr const char* kNames[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                            "n_kv_heads", "vocab_size", "seq_len"};
  const std::string header_str = fmt::format(
      "dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} "
      "vocab_size={} seq_len={}",
      f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
  for (int i = 0; i < 7; ++i) {
    const int64_t v = i == 5 ? std::abs(int64_t{f[i]}) : f[i];
    if (v <= 0 || v >= kMaxField)
      fail(
          "{}: header field {} = {} is outside 1..{} (header: {}); the file is not a llama2.c v0 checkpoint (newer "
          "exports start with magic 'ak42': re-export with --version 0)",
          name, kNames[i], f[i], kMaxField - 1, header_str);
  }
  Header h{f[0], f[1], f[2], f[3], f[4], std::abs(int64_t{f[5]}), f[6], f[5] > 0};
  if (h.dim % h.n_heads != 0)
    fail("{}: dim {} is not divisible by n_heads {} (header: {}); the file is corrupt", name, h.dim, h.n_heads,
         header_str);
  if (h.n_kv_heads > h.n_heads || h.n_heads % h.n_kv_heads != 0)
    fail("{}: n_heads {} is not a multiple of n_kv_heads {} (header: {}); the file is corrupt", name, h.n_heads,
         h.n_kv_heads, header_str);
  if (h.head_size() % 2 != 0)
    fail("{}: head size {} is odd, RoPE needs pairs (header: {}); the file is corrupt", name, h.head_size(),
         header_str);
  const uint64_t want = expected_bytes(h);
  if (size != want) {
    Header other = h;
    other.shared = !h.shared;
    const bool flipped = size == expected_bytes(other);
    fail("{}: file is {} bytes but its header ({}) implies {} bytes with a {} classifier; {}", name, size, header_str,
         want, h.shared ? "shared" : "separate",
         flipped       ? "the size fits the other classifier layout, so the sign of vocab_size is wrong: re-export it"
         : size < want ? "the file is truncated, re-download it"
                       : "the file has trailing bytes or is not a llama2.c v0 checkpoint");
  }
  return h;
}

ModelConfig config_from_header(const Header& h) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = static_cast<int>(h.vocab_size);
  c.hidden_size = static_cast<int>(h.dim);
  c.intermediate_size = static_cast<int>(h.hidden_dim);
  c.num_layers = static_cast<int>(h.n_layers);
  c.num_heads = static_cast<int>(h.n_heads);
  c.num_kv_heads = static_cast<int>(h.n_kv_heads);
  c.head_dim = static_cast<int>(h.head_size());
  c.max_position_embeddings = static_cast<int>(h.seq_len);
  c.norm_eps = 1e-5f;  // hard-coded in run.c
  c.rope_theta = 10000.f;
  c.rope_interleaved = true;  // q/k rows stay in llama2.c's order; the rope op rotates adjacent pairs
  c.tie_word_embeddings = h.shared;
  c.hidden_act = "silu";
  c.bos_token_id = 1;  // llama2.c tokenizers: 1 = BOS, 2 = EOS
  c.eos_token_id = 2;
  c.raw = config_to_json(c);
  return c;
}

// Hugging Face orders each head's q/k rows as [real parts..., imaginary parts...]; llama2.c
// interleaves them (real0, imag0, real1, ...). Row 2k of a llama2.c head is HF row k, row 2k+1 is
// HF row k + head_size/2.
std::vector<float> interleave_rope_rows(const std::vector<float>& w, int64_t heads, int64_t head_size, int64_t cols) {
  std::vector<float> out(w.size());
  const int64_t half = head_size / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t k = 0; k < half; ++k)
      for (int part = 0; part < 2; ++part) {
        const float* src = &w[static_cast<size_t>((h * head_size + k + part * half) * cols)];
        std::memcpy(&out[static_cast<size_t>((h * head_size + 2 * k + part) * cols)], src,
                    static_cast<size_t>(cols) * 4);
      }
  return out;
}

}  // namespace

Llama2cModel parse_llama2c_model(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                                 const std::string& name) {
  const Header h = parse_header(data, size, name);
  Llama2cModel m;
  m.config = config_from_header(h);
  // Arrays start at byte 28, so they are float-aligned whenever the buffer is; a buffer that is not
  // (possible through this entry point only) gets copies rather than misaligned float views.
  const bool aligned = reinterpret_cast<uintptr_t>(data) % alignof(float) == 0;
  size_t offset = kHeaderBytes;
  for (const auto& a : layout(h)) {
    const size_t nbytes = static_cast<size_t>(shape_numel(a.shape)) * 4;
    if (!a.name.empty()) {
      Tensor t = Tensor::view(DType::F32, a.shape, data + offset, owner);
      m.tensors.emplace(a.name, aligned ? t : t.clone());
    }
    offset += nbytes;
  }
  check(offset == size, "{}: internal error: layout covers {} of {} bytes", name, offset, size);
  return m;
}

Llama2cModel read_llama2c_model(const std::filesystem::path& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  return parse_llama2c_model(file->data(), file->size(), file, path.string());
}

void write_llama2c_model(const std::filesystem::path& path, const ModelConfig& c, const TensorMap& tensors) {
  const std::string name = path.string();
  const bool shared = tensors.count("lm_head.weight") == 0;
  Header h{c.hidden_size, c.intermediate_size,       c.num_layers, c.num_heads, c.num_kv_heads,
           c.vocab_size,  c.max_position_embeddings, shared};
  const int64_t fields[7] = {h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len};
  for (int64_t v : fields)
    if (v <= 0 || v >= kMaxField)
      fail(
          "{}: cannot write a llama2.c checkpoint: config sizes must be in 1..{} (hidden {}, intermediate {}, "
          "layers {}, heads {}, kv heads {}, vocab {}, positions {})",
          name, kMaxField - 1, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len);
  if (h.dim % h.n_heads != 0 || h.n_heads % h.n_kv_heads != 0 || c.head_dim != h.dim / h.n_heads ||
      h.head_size() % 2 != 0)
    fail(
        "{}: cannot write a llama2.c checkpoint: it needs head_dim = hidden/heads (even) and heads a multiple of "
        "kv heads (hidden {}, heads {}, kv heads {}, head_dim {})",
        name, h.dim, h.n_heads, h.n_kv_heads, c.head_dim);
  // run.c hard-codes these; a model trained with others would silently change behaviour.
  if (std::fabs(c.rope_theta - 10000.f) > 1e-3f || std::fabs(c.norm_eps - 1e-5f) > 1e-9f || c.hidden_act != "silu")
    fail(
        "{}: cannot write a llama2.c checkpoint: the format fixes rope_theta 10000, norm eps 1e-5 and silu, the "
        "config has {}, {} and {}; save as safetensors instead",
        name, c.rope_theta, c.norm_eps, c.hidden_act);

  AtomicFileWriter out(path);
  const int32_t header[7] = {
      static_cast<int32_t>(h.dim),        static_cast<int32_t>(h.hidden_dim),
      static_cast<int32_t>(h.n_layers),   static_cast<int32_t>(h.n_heads),
      static_cast<int32_t>(h.n_kv_heads), static_cast<int32_t>(shared ? h.vocab_size : -h.vocab_size),
      static_cast<int32_t>(h.seq_len)};
  out.write(header, sizeof(header));
  const int64_t hs = h.head_size();
  int64_t freq_arrays = 0;
  for (const auto& a : layout(h)) {
    if (a.name.empty()) {
      // freq_cis_real then freq_cis_imag, as llama2.c's legacy export writes them.
      std::vector<float> f(static_cast<size_t>(shape_numel(a.shape)));
      for (int64_t t = 0; t < h.seq_len; ++t)
        for (int64_t k = 0; k < hs / 2; ++k) {
          const double angle = static_cast<double>(t) * std::pow(10000.0, -2.0 * static_cast<double>(k) / hs);
          f[static_cast<size_t>(t * (hs / 2) + k)] =
              static_cast<float>(freq_arrays == 0 ? std::cos(angle) : std::sin(angle));
        }
      ++freq_arrays;
      out.write(f.data(), f.size() * 4);
      continue;
    }
    auto it = tensors.find(a.name);
    if (it == tensors.end())
      fail("{}: cannot write a llama2.c checkpoint: tensor '{}' is missing; the model is not a complete LLaMA", name,
           a.name);
    if (it->second.shape() != a.shape)
      fail("{}: cannot write a llama2.c checkpoint: tensor '{}' has shape {}, the config implies {}", name, a.name,
           shape_str(it->second.shape()), shape_str(a.shape));
    const Tensor f32 = it->second.to_f32();
    std::vector<float> w(f32.data<float>(), f32.data<float>() + f32.numel());
    const bool is_q = a.name.ends_with("q_proj.weight"), is_k = a.name.ends_with("k_proj.weight");
    if (!c.rope_interleaved && (is_q || is_k)) w = interleave_rope_rows(w, is_q ? h.n_heads : h.n_kv_heads, hs, h.dim);
    out.write(w.data(), w.size() * 4);
  }
  out.commit();
}

}  // namespace shrink
