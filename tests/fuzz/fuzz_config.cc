// libFuzzer target: arbitrary bytes as config.json. Only shrink::Error may come out, and whatever
// parses must survive config_to_json -> parse_config unchanged.
#include <shrink/core/error.h>
#include <shrink/formats/config.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

void expect(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "config round trip changed %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  shrink::ModelConfig c;
  try {
    c = shrink::parse_config_text(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  } catch (const shrink::Error&) {
    return 0;
  }
  // A config we accepted must be writable and read back the same; an Error here is a bug.
  const shrink::ModelConfig r = shrink::parse_config(shrink::config_to_json(c), "fuzz/roundtrip.json");
  expect(r.architecture == c.architecture && r.model_type == c.model_type, "architecture");
  expect(r.vocab_size == c.vocab_size && r.hidden_size == c.hidden_size && r.intermediate_size == c.intermediate_size,
         "sizes");
  expect(r.num_layers == c.num_layers && r.num_heads == c.num_heads && r.num_kv_heads == c.num_kv_heads &&
             r.head_dim == c.head_dim,
         "layers/heads");
  expect(r.max_position_embeddings == c.max_position_embeddings && r.type_vocab_size == c.type_vocab_size,
         "positions/types");
  expect(r.norm_eps == c.norm_eps && r.rope_theta == c.rope_theta, "norm_eps/rope_theta");
  expect(r.tie_word_embeddings == c.tie_word_embeddings && r.hidden_act == c.hidden_act, "tie/act");
  expect(r.num_labels == c.num_labels && r.id2label == c.id2label, "labels");
  expect(r.bos_token_id == c.bos_token_id && r.eos_token_id == c.eos_token_id && r.pad_token_id == c.pad_token_id,
         "token ids");
  return 0;
}
