// save_model: a Model as a Hugging Face style directory with compressed-tensors naming for quantized slots, written
// atomically (temp directory + rename); the quantization_config and source hash it carries.
#include <shrink/compress/lowrank.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/config.h>
#include <shrink/formats/model_dir.h>
#include <shrink/formats/safetensors.h>
#include <shrink/ops/qlinear.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <set>

namespace shrink {

namespace {

using json = nlohmann::json;

// ---- SHA-256 (FIPS 180-4) ----
struct Sha256 {
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf[64] = {};
  size_t buf_len = 0;
  uint64_t total = 0;

  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void block(const uint8_t* p) {
    static constexpr uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t{p[4 * i]} << 24 | uint32_t{p[4 * i + 1]} << 16 | uint32_t{p[4 * i + 2]} << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }

  void update(const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    total += n;
    while (n > 0) {
      const size_t take = std::min(n, 64 - buf_len);
      std::memcpy(buf + buf_len, p, take);
      buf_len += take, p += take, n -= take;
      if (buf_len == 64) block(buf), buf_len = 0;
    }
  }

  std::string hex() {
    const uint64_t bits = total * 8;
    const uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (buf_len != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    std::string s;
    for (uint32_t v : h) s += fmt::format("{:08x}", v);
    return s;
  }
};

// compressed-tensors description of one shrink scheme; null when it has none (bf16 is a plain dtype there).
json ct_group(const QuantSpec& s) {
  json weights = {{"num_bits", 8},
                  {"type", "int"},
                  {"symmetric", true},
                  {"strategy", "channel"},
                  {"group_size", nullptr},
                  {"dynamic", false},
                  {"observer", "minmax"},
                  {"actorder", nullptr},
                  {"block_structure", nullptr},
                  {"observer_kwargs", json::object()}};
  json input = nullptr;
  std::string format;
  switch (s.scheme) {
    case WeightScheme::F32:
    case WeightScheme::BF16: return nullptr;
    case WeightScheme::W8A16: format = "naive-quantized"; break;  // the int8 weight stored as is
    case WeightScheme::W8A8:
      format = "int-quantized";
      input = {{"num_bits", 8},
               {"type", "int"},
               {"symmetric", !s.static_act},
               {"strategy", s.static_act ? "tensor" : "token"},
               {"dynamic", !s.static_act},
               {"group_size", nullptr},
               {"observer", s.static_act ? json("minmax") : json(nullptr)},
               {"observer_kwargs", json::object()}};
      break;
    case WeightScheme::W4A16:
      format = "pack-quantized";
      weights["num_bits"] = 4;
      weights["symmetric"] = !s.asym;
      weights["strategy"] = "group";
      weights["group_size"] = s.group;
      break;
  }
  return {{"weights", weights}, {"input_activations", input}, {"output_activations", nullptr}, {"format", format}};
}

// Rows of a tensor whose first dimension is a q/k projection's output features, from llama2.c's interleaved RoPE
// order (row 2k + part of a head) to Hugging Face's halves (row k + part * head_dim / 2).
Tensor rows_to_hf_rope_order(const Tensor& t, int64_t head_dim) {
  const int64_t rows = t.dim(0), half = head_dim / 2;
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(rows);
  Tensor out = Tensor::empty(t.dtype(), t.shape());
  const auto* src = static_cast<const uint8_t*>(t.raw());
  auto* dst = out.data<uint8_t>();
  for (int64_t h = 0; h < rows / head_dim; ++h)
    for (int64_t k = 0; k < half; ++k)
      for (int64_t part = 0; part < 2; ++part)
        std::memcpy(dst + (h * head_dim + k + part * half) * row_bytes, src + (h * head_dim + 2 * k + part) * row_bytes,
                    row_bytes);
  return out;
}

// Written by save_model: its safetensors carry shrink_format_version in __metadata__.
bool is_shrink_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir / "config.json", ec)) return false;
  try {
    return read_safetensors_model(dir).metadata.count("shrink_format_version") > 0;
  } catch (const Error&) {
    return false;
  }
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  AtomicFileWriter out(path);
  out.write(text.data(), text.size());
  out.commit();
}

void copy_into(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::error_code ec;
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) fail("{}: cannot copy to {} ({}); check the path and free space", from.string(), to.string(), ec.message());
}

// Removes the temporary directory unless the save completed.
struct TempDirGuard {
  std::filesystem::path path;
  bool keep = false;
  ~TempDirGuard() {
    if (keep) return;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

std::string sha256_hex(const void* data, size_t n) {
  Sha256 s;
  s.update(data, n);
  return s.hex();
}

std::string model_source_hash(const Model& model) {
  Sha256 s;
  const json& raw = model.config().raw;
  const std::string cfg = raw.is_object() ? raw.dump() : config_to_json(model.config()).dump();
  s.update(cfg.data(), cfg.size());
  for (const auto& [name, t] : model.tensors()) {
    const std::string line = fmt::format("\n{} {} {}", name, dtype_name(t.dtype()), shape_str(t.shape()));
    s.update(line.data(), line.size());
  }
  return s.hex();
}

json quantization_config_json(const Model& model) {
  json layers = json::object(), ignore = json::array(), groups = json::object();
  std::map<std::string, json> targets;  // scheme name -> slot names
  std::set<std::string> formats;
  std::string source_dtype;
  for (const auto& s : model.linears()) {
    const auto parts = packed_parts(s);
    if (parts.empty()) ignore.push_back(s.name);
    for (const auto& [name, p] : parts) {
      layers[name] = p->spec.name();
      if (ct_group(p->spec).is_null())
        ignore.push_back(name);  // compressed-tensors reads a bf16 layer as a plain dense one
      else
        targets[p->spec.name()].push_back(name);
    }
    if (parts.empty()) continue;
    if (source_dtype.empty() && s.weight.defined() && s.weight.numel() > 0) {
      auto it = model.tensors().find(s.name + ".weight");
      source_dtype = dtype_name(it != model.tensors().end() ? it->second.dtype() : s.weight.dtype());
    }
  }
  int i = 0;
  for (auto& [scheme, names] : targets) {
    json g = ct_group(parse_quant_spec(scheme));
    formats.insert(g["format"].get<std::string>());
    g["targets"] = names;
    groups[fmt::format("group_{}", i++)] = g;
  }
  json shrink = {{"format_version", kModelDirFormatVersion}, {"layers", layers}, {"kv_cache", nullptr}};
  // A model re-saved from a quantized one keeps what its original was.
  if (const json& raw = model.config().raw;
      raw.is_object() && raw.contains("quantization_config") && raw["quantization_config"].is_object() &&
      raw["quantization_config"].contains("shrink") && raw["quantization_config"]["shrink"].contains("source_dtype"))
    shrink["source_dtype"] = raw["quantization_config"]["shrink"]["source_dtype"];
  else
    shrink["source_dtype"] = source_dtype.empty() ? "F32" : source_dtype;
  return {{"quant_method", "compressed-tensors"},
          {"quantization_status", "compressed"},
          {"format", formats.empty()       ? "dense"
                     : formats.size() == 1 ? *formats.begin()
                                           : "mixed-precision"},
          {"config_groups", groups},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"shrink", shrink}};
}

SaveResult save_model(const Model& model, const std::filesystem::path& dir_in, const SaveOptions& opt) {
  namespace fs = std::filesystem;
  check(!dir_in.empty(), "save: no output directory given; pass --out DIR");
  const fs::path dir = fs::absolute(dir_in).lexically_normal();
  const fs::path target = dir.filename().empty() ? dir.parent_path() : dir;
  std::error_code ec;
  if (fs::exists(target, ec) && !fs::is_directory(target, ec))
    fail("{}: exists and is a file; --out must be a directory (new, empty, or written by shrink)", target.string());
  if (!model.source().empty() && fs::exists(model.source(), ec) && fs::equivalent(model.source(), target, ec))
    fail("{}: the output directory is the source model itself; choose another --out", target.string());
  const bool exists_nonempty = fs::exists(target, ec) && !fs::is_empty(target, ec);
  if (exists_nonempty && !(opt.replace_shrink_dir && is_shrink_dir(target)))
    fail(
        "{}: the directory exists, is not empty and was not written by shrink; choose a new --out or remove it "
        "(shrink never overwrites other files)",
        target.string());
  fs::create_directories(target.parent_path(), ec);
  if (ec)
    fail("{}: cannot create the parent directory ({}); check the path and permissions", target.parent_path().string(),
         ec.message());

  TempDirGuard tmp{target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), ::getpid())};
  fs::remove_all(tmp.path, ec);
  fs::create_directory(tmp.path, ec);
  if (ec) fail("{}: cannot create a temporary directory ({})", tmp.path.string(), ec.message());

  const ModelConfig& cfg = model.config();
  const bool to_hf_rope = cfg.rope_interleaved;  // llama2.c source: q/k rows go to Hugging Face order
  auto rope_heads_of = [&](const std::string& name) -> bool {
    return to_hf_rope && (name.ends_with("self_attn.q_proj") || name.ends_with("self_attn.k_proj"));
  };

  // Tensors: packed slots from their PackedLinear, everything else as in the checkpoint.
  std::set<std::string> replaced;
  bool lm_head_packed_from_tied = false;
  for (const auto& s : model.linears()) {
    const auto parts = packed_parts(s);
    if (parts.empty()) continue;
    replaced.insert(s.name + ".weight");
    replaced.insert(s.name + ".bias");  // a packed layer (a packed low-rank B) carries it
    for (const auto& [name, p] : parts) {
      replaced.insert(name);
      for (const auto& [n, t] : p->tensors) replaced.insert(name + "." + n);
    }
    if (s.name == "lm_head" && !model.tensors().count("lm_head.weight") &&
        !model.tensors().count("lm_head.weight_packed"))
      lm_head_packed_from_tied = true;
  }
  // Low-rank slots: their factors replace the dense weight (the bias stays under its own name).
  nlohmann::json lowrank_layers = json::object();
  for (const auto& s : model.linears())
    if (const LowRankLinear* lr = as_lowrank(s.impl.get())) {
      replaced.insert(s.name + ".weight");
      replaced.insert(s.name + "." + kLowRankA);
      replaced.insert(s.name + "." + kLowRankB);
      lowrank_layers[s.name] = lr->rank();
    }
  TensorMap out;
  for (const auto& [name, t] : model.tensors()) {
    if (replaced.count(name)) continue;
    const bool qk = name.ends_with(".weight") && rope_heads_of(name.substr(0, name.size() - 7)) && t.rank() == 2;
    out.emplace(name, qk ? rows_to_hf_rope_order(t, cfg.head_dim) : t);
  }
  for (const auto& s : model.linears())
    for (const auto& [name, p] : packed_parts(s)) {
      // Output rows move with RoPE's order: a packed layer's, or a low-rank B's (A's rows are the rank).
      const bool rows_are_outputs = name == s.name || name.ends_with(kLowRankB);
      for (const auto& [n, t] : p->tensors) {
        const bool by_row =
            rows_are_outputs && rope_heads_of(s.name) && t.rank() >= 1 && t.dim(0) == p->out && n != "weight_shape";
        out.emplace(name + "." + n, by_row ? rows_to_hf_rope_order(t, cfg.head_dim) : t);
      }
    }

  for (const auto& s : model.linears())
    if (const LowRankLinear* lr = as_lowrank(s.impl.get())) {
      if (!lr->packed_a()) out.emplace(s.name + "." + kLowRankA, lr->a());
      if (!lr->packed_b())
        out.emplace(s.name + "." + kLowRankB,
                    rope_heads_of(s.name) ? rows_to_hf_rope_order(lr->b(), cfg.head_dim) : lr->b());
      if (lr->bias().defined() && !lr->packed_b() && !out.count(s.name + ".bias"))
        out.emplace(s.name + ".bias", lr->bias());
    }

  // config.json: the source's own file, plus quantization_config when any slot is packed.
  json config = cfg.raw.is_object() ? cfg.raw : config_to_json(cfg);
  config.erase("quantization_config");
  config.erase(kLowRankConfigKey);
  if (!lowrank_layers.empty()) config[kLowRankConfigKey] = {{"format_version", 1}, {"layers", lowrank_layers}};
  if (to_hf_rope) config["torch_dtype"] = "float32";
  const json qc = quantization_config_json(model);
  const bool quantized = !qc["shrink"]["layers"].empty();
  if (quantized) config["quantization_config"] = qc;
  if (lm_head_packed_from_tied) config["tie_word_embeddings"] = false;  // lm_head now has weights of its own
  write_text(tmp.path / "config.json", config.dump(2) + "\n");

  SaveResult r;
  r.source_sha256 = model_source_hash(model);
  std::string scheme_summary = "f32";
  if (quantized) {
    std::set<std::string> schemes;
    for (auto& [n, s] : qc["shrink"]["layers"].items()) schemes.insert(s.get<std::string>());
    scheme_summary = schemes.size() == 1 ? *schemes.begin() : "mixed";
  }
  std::map<std::string, std::string> meta = {{"format", "pt"},
                                             {"shrink_format_version", std::to_string(kModelDirFormatVersion)},
                                             {"shrink_version", version()},
                                             {"shrink_commit", commit()},
                                             {"source_model_sha256", r.source_sha256},
                                             {"scheme", scheme_summary}};
  if (!opt.recipe.is_null()) meta["recipe"] = opt.recipe.dump();
  write_safetensors_model(tmp.path, out, meta, opt.max_shard_bytes);

  // Tokenizer files.
  if (!opt.tokenizer.empty()) {
    if (!fs::is_regular_file(opt.tokenizer, ec))
      fail("{}: tokenizer file not found; pass an existing --tokenizer FILE", opt.tokenizer.string());
    const bool llama2c_vocab = opt.tokenizer.extension() == ".bin";
    copy_into(opt.tokenizer, tmp.path / (llama2c_vocab ? fs::path("tokenizer.bin") : opt.tokenizer.filename()));
  } else if (!model.source().empty()) {
    const fs::path src_dir = fs::is_directory(model.source(), ec) ? model.source() : model.source().parent_path();
    for (const char* f :
         {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
          "vocab.txt", "vocab.json", "merges.txt", "generation_config.json", "tokenizer.bin"})
      if (fs::is_regular_file(src_dir / f, ec)) copy_into(src_dir / f, tmp.path / f);
  }

  r.size_bytes = path_size_bytes(tmp.path.string());
  r.shards = fs::exists(tmp.path / "model.safetensors.index.json", ec) ? 0 : 1;
  if (r.shards == 0)
    for (const auto& e : fs::directory_iterator(tmp.path))
      if (e.path().extension() == ".safetensors") ++r.shards;

  // Swap into place: the old directory (empty, or an earlier shrink output) goes only after the new one is whole.
  const fs::path old = target.parent_path() / fmt::format(".{}.old-{}", target.filename().string(), ::getpid());
  const bool had_old = fs::exists(target, ec);
  if (had_old) {
    fs::remove_all(old, ec);
    fs::rename(target, old, ec);
    if (ec) fail("{}: cannot move the previous directory aside ({})", target.string(), ec.message());
  }
  fs::rename(tmp.path, target, ec);
  if (ec) {
    std::error_code ec2;
    if (had_old) fs::rename(old, target, ec2);
    fail("{}: cannot rename the finished output into place ({})", target.string(), ec.message());
  }
  tmp.keep = true;
  if (had_old) fs::remove_all(old, ec);
  r.dir = target;
  return r;
}

}  // namespace shrink
