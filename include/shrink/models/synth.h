// Random-weight models of real shapes (bert-base, distilbert, bert-mini, gpt2, tinyllama-1.1b, and
// tiny test presets) with a synthetic tokenizer, so speed can be measured without downloads.
#pragma once

#include <shrink/core/dtype.h>
#include <shrink/formats/config.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace shrink {

struct SynthPreset {
  std::string name, arch;  // arch: llama | gpt2 | bert | distilbert
  int layers, hidden, heads, kv_heads, intermediate, vocab, context;
  int labels = 2;
};

const std::vector<SynthPreset>& synth_presets();
const SynthPreset& find_synth_preset(const std::string& name);

// A Hugging Face config.json for the preset (architecture LlamaForCausalLM, GPT2LMHeadModel,
// BertForSequenceClassification or DistilBertForSequenceClassification).
nlohmann::json synth_config_json(const SynthPreset& p);
// A tokenizer.json of the family's type (WordPiece, byte-level BPE, SentencePiece-style BPE with
// byte fallback) with exactly p.vocab tokens; pieces are generated, not learned.
nlohmann::json synth_tokenizer_json(const SynthPreset& p);

// Writes config.json, model.safetensors and tokenizer.json into `out` (created). Weights are
// uniform with std 0.02 (norm weights 1, biases 0), deterministic in `seed`.
void synth_model(const SynthPreset& p, const std::filesystem::path& out, uint64_t seed, DType dtype = DType::F32);

}  // namespace shrink
