// Tokenizers: HF tokenizer.json (WordPiece, byte-level BPE, SentencePiece-style BPE), SentencePiece
// .model (libsentencepiece), llama2.c vocab .bin. One interface for all.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace shrink {

struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;        // BERT token_type_ids (0 for the first sentence, 1 for the second)
  std::vector<int32_t> attention_mask;  // 1 real token, 0 padding
};

struct BatchEncoding {
  int64_t batch = 0, seq = 0;  // ids are [batch][seq], right-padded with pad_id
  std::vector<int32_t> ids, type_ids, attention_mask;
  std::vector<int32_t> lengths;  // real tokens per row
};

struct EncodeOptions {
  bool add_special = true;
  int max_length = 0;       // 0: no truncation
  bool pad_to_max = false;  // pad to max_length instead of the longest row
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // As Hugging Face encode(text, add_special_tokens=add_special).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true) const = 0;
  // As HF tokenize(text): token strings, no special tokens.
  virtual std::vector<std::string> tokenize(std::string_view text) const = 0;
  // Text of ids (special tokens skipped); decode_piece gives what a stream should print for `id`
  // following `prev` (llama-style leading-space handling, byte tokens).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string id_to_piece(int32_t id) const = 0;
  virtual int vocab_size() const = 0;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }
  int unk_id() const { return unk_id_; }

  // Single text or BERT pair ([CLS] a [SEP] b [SEP], type ids 0/1), truncation (longest-first for pairs).
  Encoding encode_full(std::string_view a, std::string_view b = {}, const EncodeOptions& opt = {}) const;
  BatchEncoding encode_batch(const std::vector<std::string>& texts, const EncodeOptions& opt = {}) const;

 protected:
  // Special tokens around one or two sequences; default adds bos (if >= 0) before the first.
  virtual void add_special_tokens(std::vector<int32_t>& ids, std::vector<int32_t>& type_ids,
                                  const std::vector<int32_t>* second) const;
  virtual int num_special_tokens(bool pair) const;
  int bos_id_ = -1, eos_id_ = -1, pad_id_ = 0, unk_id_ = -1;
  int cls_id_ = -1, sep_id_ = -1;
};

// Picks the loader from the path: tokenizer.json, *.model (SentencePiece), a llama2.c tokenizer
// .bin (needs vocab_size), or a model directory (tokenizer.json preferred, then tokenizer.model).
// Throws shrink::Error naming the path and what was looked for when nothing fits.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path, int vocab_size = 0);

}  // namespace shrink
