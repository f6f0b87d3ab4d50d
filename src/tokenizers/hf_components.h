// The stages of a Hugging Face tokenizer.json pipeline (normalizer, pre-tokenizer, model, decoder), built
// from their JSON objects. Semantics follow the `tokenizers` library and transformers.js.
#pragma once

#include <shrink/tokenizers/tokenizer.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizers/json_util.h"

namespace shrink::hf {

// Nested Sequence objects deeper than this are rejected (real files use 2 levels).
inline constexpr int kMaxNesting = 16;

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `limit_bytes` bounds the output (a Replace or Prepend chain must not grow text without bound).
  virtual std::string normalize(std::string s, size_t limit_bytes) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const Json& j, const Where& w, int depth = 0);
// Throws when `s` outgrew `limit_bytes`.
void check_growth(const std::string& s, size_t limit_bytes, const char* stage);

// One piece of pre-tokenized text; `first` marks the piece that starts the input (Metaspace "first").
struct Split {
  std::string text;
  bool first = false;
};
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits every piece further (pieces may also be rewritten, e.g. byte-level mapping).
  virtual void pre_tokenize(std::vector<Split>& splits) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const Where& w, int depth = 0);

// The GPT-2 pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ over code
// points; appends the matched pieces of `text` to `out`.
void gpt2_split(std::string_view text, std::vector<std::string>& out);
// The inverse of byte_to_unicode (shrink/tokenizers/tokenizer.h): the byte a code point stands for, -1 for other code
// points.
int unicode_to_byte(char32_t cp);

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word.
  virtual void tokenize(const std::string& word, std::vector<int32_t>& out) const = 0;
  // Vocabulary of the model (token -> id); ids are < 2^24.
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }
  int32_t unk_id() const { return unk_id_; }

 protected:
  std::unordered_map<std::string, int32_t> vocab_;
  int32_t unk_id_ = -1;
};
std::unique_ptr<Model> make_model(const Json& j, const Where& w);

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the token strings (HF decode_chain); the text is their concatenation.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const Json& j, const Where& w, int depth = 0);

// Lossy UTF-8 (invalid sequences -> U+FFFD) of raw bytes.
std::string bytes_to_text(std::string_view bytes);

}  // namespace shrink::hf
