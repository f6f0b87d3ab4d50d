// Random-weight checkpoints of real model shapes plus generated tokenizers (see synth.h).
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/parallel.h>
#include <shrink/formats/safetensors.h>
#include <shrink/models/synth.h>
#include <shrink/tokenizers/tokenizer.h>

#include <deque>
#include <set>

namespace shrink {

const std::vector<SynthPreset>& synth_presets() {
  static const std::vector<SynthPreset> p = {
      {"bert-base", "bert", 12, 768, 12, 12, 3072, 30522, 512},
      {"distilbert", "distilbert", 6, 768, 12, 12, 3072, 30522, 512},
      {"bert-mini", "bert", 4, 256, 4, 4, 1024, 30522, 512},
      {"bert-tiny", "bert", 2, 128, 2, 2, 512, 30522, 512},
      {"gpt2", "gpt2", 12, 768, 12, 12, 3072, 50257, 1024},
      {"gpt2-tiny", "gpt2", 2, 64, 4, 4, 256, 1000, 128},
      {"tinyllama-1.1b", "llama", 22, 2048, 32, 4, 5632, 32000, 2048},
      {"llama-tiny", "llama", 2, 64, 4, 2, 172, 1000, 256},
  };
  return p;
}

const SynthPreset& find_synth_preset(const std::string& name) {
  std::string list;
  for (auto& p : synth_presets()) {
    if (p.name == name) return p;
    list += (list.empty() ? "" : ", ") + p.name;
  }
  fail("synth preset '{}' is unknown; presets: {}", name, list);
}

nlohmann::json synth_config_json(const SynthPreset& p) {
  nlohmann::json j;
  if (p.arch == "llama") {
    j = {{"architectures", {"LlamaForCausalLM"}},
         {"model_type", "llama"},
         {"hidden_size", p.hidden},
         {"intermediate_size", p.intermediate},
         {"num_hidden_layers", p.layers},
         {"num_attention_heads", p.heads},
         {"num_key_value_heads", p.kv_heads},
         {"max_position_embeddings", p.context},
         {"rms_norm_eps", 1e-5},
         {"rope_theta", 10000.0},
         {"tie_word_embeddings", false},
         {"hidden_act", "silu"},
         {"vocab_size", p.vocab},
         {"bos_token_id", 1},
         {"eos_token_id", 2}};
  } else if (p.arch == "gpt2") {
    j = {{"architectures", {"GPT2LMHeadModel"}},
         {"model_type", "gpt2"},
         {"n_embd", p.hidden},
         {"n_layer", p.layers},
         {"n_head", p.heads},
         {"n_inner", p.intermediate},
         {"n_positions", p.context},
         {"n_ctx", p.context},
         {"layer_norm_epsilon", 1e-5},
         {"activation_function", "gelu_new"},
         {"vocab_size", p.vocab},
         {"bos_token_id", p.vocab - 1},
         {"eos_token_id", p.vocab - 1}};
  } else if (p.arch == "bert") {
    j = {{"architectures", {"BertForSequenceClassification"}},
         {"model_type", "bert"},
         {"hidden_size", p.hidden},
         {"num_hidden_layers", p.layers},
         {"num_attention_heads", p.heads},
         {"intermediate_size", p.intermediate},
         {"max_position_embeddings", p.context},
         {"type_vocab_size", 2},
         {"layer_norm_eps", 1e-12},
         {"hidden_act", "gelu"},
         {"vocab_size", p.vocab},
         {"pad_token_id", 0}};
  } else {
    j = {{"architectures", {"DistilBertForSequenceClassification"}},
         {"model_type", "distilbert"},
         {"dim", p.hidden},
         {"n_layers", p.layers},
         {"n_heads", p.heads},
         {"hidden_dim", p.intermediate},
         {"max_position_embeddings", p.context},
         {"activation", "gelu"},
         {"vocab_size", p.vocab},
         {"pad_token_id", 0}};
  }
  if (p.arch == "bert" || p.arch == "distilbert") {
    nlohmann::json id2label, label2id;
    for (int i = 0; i < p.labels; ++i) {
      id2label[std::to_string(i)] = "LABEL_" + std::to_string(i);
      label2id["LABEL_" + std::to_string(i)] = i;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
  }
  return j;
}

namespace {

nlohmann::json added_token(int id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

// Grows `vocab` breadth-first: every piece extended by every letter, recording the merge "a b".
void grow_bpe(std::vector<std::string>& vocab, std::set<std::string>& seen, std::vector<std::string>& merges,
              const std::vector<std::string>& seeds, const std::vector<std::string>& letters, size_t target) {
  std::deque<std::string> queue(seeds.begin(), seeds.end());
  while (vocab.size() < target && !queue.empty()) {
    const std::string t = queue.front();
    queue.pop_front();
    for (const auto& l : letters) {
      if (vocab.size() >= target) break;
      const std::string n = t + l;
      if (!seen.insert(n).second) continue;
      vocab.push_back(n);
      merges.push_back(t + " " + l);
      queue.push_back(n);
    }
  }
}

std::vector<std::string> letters() {
  std::vector<std::string> l;
  for (char c : std::string("etaoinshrdlucmfwypvbgkjqxz")) l.emplace_back(1, c);
  return l;
}

}  // namespace

nlohmann::json synth_tokenizer_json(const SynthPreset& p) {
  nlohmann::json j = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}};
  const size_t target = static_cast<size_t>(p.vocab);
  if (p.arch == "bert" || p.arch == "distilbert") {
    std::vector<std::string> vocab = {"[PAD]"};
    for (int i = 1; i < 100; ++i) vocab.push_back("[unused" + std::to_string(i - 1) + "]");
    for (const char* s : {"[UNK]", "[CLS]", "[SEP]", "[MASK]"}) vocab.emplace_back(s);
    std::set<std::string> seen(vocab.begin(), vocab.end());
    for (int c = 33; c < 127; ++c)
      if (!(c >= 'A' && c <= 'Z')) vocab.emplace_back(1, static_cast<char>(c)), seen.insert(vocab.back());
    for (char c = 'a'; c <= 'z'; ++c) vocab.push_back(std::string("##") + c), seen.insert(vocab.back());
    std::vector<std::string> merges_unused;
    std::vector<std::string> seeds;
    for (auto& l : letters()) seeds.push_back(l), seeds.push_back("##" + l);
    grow_bpe(vocab, seen, merges_unused, seeds, letters(), target);
    check(vocab.size() == target, "synth: could not generate {} WordPiece tokens", target);
    nlohmann::json v;
    for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
    j["added_tokens"] = {added_token(0, "[PAD]"), added_token(100, "[UNK]"), added_token(101, "[CLS]"),
                         added_token(102, "[SEP]"), added_token(103, "[MASK]")};
    j["normalizer"] = {{"type", "BertNormalizer"},
                       {"clean_text", true},
                       {"handle_chinese_chars", true},
                       {"strip_accents", nullptr},
                       {"lowercase", true}};
    j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
    auto special = [](const char* id, int type) {
      return nlohmann::json{{"SpecialToken", {{"id", id}, {"type_id", type}}}};
    };
    auto seq = [](const char* id, int type) { return nlohmann::json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)}},
        {"pair", {special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)}},
        {"special_tokens",
         {{"[CLS]", {{"id", "[CLS]"}, {"ids", {101}}, {"tokens", {"[CLS]"}}}},
          {"[SEP]", {{"id", "[SEP]"}, {"ids", {102}}, {"tokens", {"[SEP]"}}}}}}};
    j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
    j["model"] = {{"type", "WordPiece"},
                  {"unk_token", "[UNK]"},
                  {"continuing_subword_prefix", "##"},
                  {"max_input_chars_per_word", 100},
                  {"vocab", v}};
    return j;
  }
  if (p.arch == "gpt2") {
    std::vector<std::string> vocab(256);
    for (int b = 0; b < 256; ++b) vocab[b] = byte_to_unicode(static_cast<uint8_t>(b));
    std::set<std::string> seen(vocab.begin(), vocab.end());
    std::vector<std::string> merges, seeds;
    const std::string space = "\xC4\xA0";  // 'Ġ', the byte-level space
    for (auto& l : letters()) seeds.push_back(l);
    seeds.insert(seeds.begin(), space);
    grow_bpe(vocab, seen, merges, seeds, letters(), target - 1);
    vocab.push_back("<|endoftext|>");
    check(vocab.size() == target, "synth: could not generate {} BPE tokens", target);
    nlohmann::json v;
    for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
    j["added_tokens"] = {added_token(static_cast<int>(target - 1), "<|endoftext|>")};
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {
        {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    j["post_processor"] = {
        {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
    j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", ""},
                  {"end_of_word_suffix", ""},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"vocab", v},
                  {"merges", merges}};
    return j;
  }
  // LLaMA: SentencePiece-style BPE with byte fallback.
  std::vector<std::string> vocab = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) vocab.push_back(fmt::format("<0x{:02X}>", b));
  const std::string meta = "\xE2\x96\x81";  // '▁'
  vocab.push_back(meta);
  for (auto& l : letters()) vocab.push_back(l);
  std::set<std::string> seen(vocab.begin(), vocab.end());
  std::vector<std::string> merges, seeds = {meta};
  for (auto& l : letters()) seeds.push_back(l);
  grow_bpe(vocab, seen, merges, seeds, letters(), target);
  check(vocab.size() == target, "synth: could not generate {} BPE tokens", target);
  nlohmann::json v;
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  j["added_tokens"] = {added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>")};
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", meta}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", meta}}}}};
  j["pre_tokenizer"] = nullptr;
  auto special = [](const char* id, int type) {
    return nlohmann::json{{"SpecialToken", {{"id", id}, {"type_id", type}}}};
  };
  auto seq = [](const char* id, int type) { return nlohmann::json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {special("<s>", 0), seq("A", 0)}},
                         {"pair", {special("<s>", 0), seq("A", 0), special("<s>", 1), seq("B", 1)}},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", "<unk>"},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"vocab", v},
                {"merges", merges}};
  return j;
}

namespace {

// SplitMix64-seeded xorshift: fast, deterministic per chunk so threads agree with one thread.
inline uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Tensor random_tensor(Shape shape, uint64_t seed, float std, DType dtype) {
  Tensor f = Tensor::empty(DType::F32, shape);
  float* d = f.data<float>();
  const int64_t n = f.numel();
  const float a = std * 1.7320508f;  // uniform(-a, a) has std a / sqrt(3)
  constexpr int64_t kChunk = 1 << 16;
  parallel_for((n + kChunk - 1) / kChunk, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      uint64_t s = seed * 0x100000001B3ull + static_cast<uint64_t>(c);
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) {
        const double u = static_cast<double>(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
        d[i] = static_cast<float>((2.0 * u - 1.0) * a);
      }
    }
  });
  if (dtype == DType::F32) return f;
  Tensor out = Tensor::empty(dtype, shape);
  auto* o = out.data<uint16_t>();
  for (int64_t i = 0; i < n; ++i) o[i] = dtype == DType::BF16 ? f32_to_bf16(d[i]) : f32_to_f16(d[i]);
  return out;
}

Tensor filled(Shape shape, float v, DType dtype) {
  Tensor f = Tensor::empty(DType::F32, shape);
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = v;
  if (dtype == DType::F32) return f;
  Tensor out = Tensor::empty(dtype, shape);
  for (int64_t i = 0; i < f.numel(); ++i)
    out.data<uint16_t>()[i] = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
  return out;
}

}  // namespace

void synth_model(const SynthPreset& p, const std::filesystem::path& out, uint64_t seed, DType dtype) {
  check(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16, "synth: --dtype must be f32, bf16 or f16");
  std::filesystem::create_directories(out);
  TensorMap t;
  uint64_t k = seed * 1000003ull;
  auto w = [&](const std::string& name, Shape shape) { t[name] = random_tensor(std::move(shape), ++k, 0.02f, dtype); };
  auto one = [&](const std::string& name, int64_t n) { t[name] = filled({n}, 1.f, dtype); };
  auto zero = [&](const std::string& name, int64_t n) { t[name] = filled({n}, 0.f, dtype); };
  const int64_t d = p.hidden, ff = p.intermediate, V = p.vocab, hd = d / p.heads;
  if (p.arch == "llama") {
    w("model.embed_tokens.weight", {V, d});
    for (int i = 0; i < p.layers; ++i) {
      const std::string l = "model.layers." + std::to_string(i) + ".";
      one(l + "input_layernorm.weight", d);
      one(l + "post_attention_layernorm.weight", d);
      w(l + "self_attn.q_proj.weight", {d, d});
      w(l + "self_attn.k_proj.weight", {int64_t{p.kv_heads} * hd, d});
      w(l + "self_attn.v_proj.weight", {int64_t{p.kv_heads} * hd, d});
      w(l + "self_attn.o_proj.weight", {d, d});
      w(l + "mlp.gate_proj.weight", {ff, d});
      w(l + "mlp.up_proj.weight", {ff, d});
      w(l + "mlp.down_proj.weight", {d, ff});
    }
    one("model.norm.weight", d);
    w("lm_head.weight", {V, d});
  } else if (p.arch == "gpt2") {
    w("transformer.wte.weight", {V, d});
    w("transformer.wpe.weight", {p.context, d});
    for (int i = 0; i < p.layers; ++i) {
      const std::string l = "transformer.h." + std::to_string(i) + ".";
      one(l + "ln_1.weight", d), zero(l + "ln_1.bias", d);
      one(l + "ln_2.weight", d), zero(l + "ln_2.bias", d);
      w(l + "attn.c_attn.weight", {d, 3 * d}), zero(l + "attn.c_attn.bias", 3 * d);
      w(l + "attn.c_proj.weight", {d, d}), zero(l + "attn.c_proj.bias", d);
      w(l + "mlp.c_fc.weight", {d, ff}), zero(l + "mlp.c_fc.bias", ff);
      w(l + "mlp.c_proj.weight", {ff, d}), zero(l + "mlp.c_proj.bias", d);
    }
    one("transformer.ln_f.weight", d), zero("transformer.ln_f.bias", d);
  } else {
    const bool bert = p.arch == "bert";
    const std::string pre = bert ? "bert." : "distilbert.";
    w(pre + "embeddings.word_embeddings.weight", {V, d});
    w(pre + "embeddings.position_embeddings.weight", {p.context, d});
    if (bert) w(pre + "embeddings.token_type_embeddings.weight", {2, d});
    one(pre + "embeddings.LayerNorm.weight", d), zero(pre + "embeddings.LayerNorm.bias", d);
    auto lin = [&](const std::string& n, int64_t out_f, int64_t in_f) {
      w(n + ".weight", {out_f, in_f});
      zero(n + ".bias", out_f);
    };
    for (int i = 0; i < p.layers; ++i) {
      if (bert) {
        const std::string l = pre + "encoder.layer." + std::to_string(i) + ".";
        lin(l + "attention.self.query", d, d), lin(l + "attention.self.key", d, d);
        lin(l + "attention.self.value", d, d), lin(l + "attention.output.dense", d, d);
        one(l + "attention.output.LayerNorm.weight", d), zero(l + "attention.output.LayerNorm.bias", d);
        lin(l + "intermediate.dense", ff, d), lin(l + "output.dense", d, ff);
        one(l + "output.LayerNorm.weight", d), zero(l + "output.LayerNorm.bias", d);
      } else {
        const std::string l = pre + "transformer.layer." + std::to_string(i) + ".";
        lin(l + "attention.q_lin", d, d), lin(l + "attention.k_lin", d, d);
        lin(l + "attention.v_lin", d, d), lin(l + "attention.out_lin", d, d);
        one(l + "sa_layer_norm.weight", d), zero(l + "sa_layer_norm.bias", d);
        lin(l + "ffn.lin1", ff, d), lin(l + "ffn.lin2", d, ff);
        one(l + "output_layer_norm.weight", d), zero(l + "output_layer_norm.bias", d);
      }
    }
    if (bert)
      lin("bert.pooler.dense", d, d);
    else
      lin("pre_classifier", d, d);
    lin("classifier", p.labels, d);
  }
  const auto write_json = [&](const std::string& name, const nlohmann::json& j) {
    AtomicFileWriter f(out / name);
    const std::string s = j.dump(2);
    f.write(s.data(), s.size());
    f.commit();
  };
  write_safetensors_model(out, t, {{"format", "pt"}, {"shrink.synth", p.name}, {"shrink.seed", std::to_string(seed)}});
  write_json("config.json", synth_config_json(p));
  write_json("tokenizer.json", synth_tokenizer_json(p));
}

}  // namespace shrink
