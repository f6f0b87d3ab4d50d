// Tokenizers: HF tokenizer.json (WordPiece, byte-level BPE, SentencePiece-style BPE), SentencePiece
// .model (libsentencepiece), llama2.c vocab .bin. One interface for all (see docs/tokenizers.md).
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
  int max_length = 0;       // 0: no truncation; otherwise the length including special tokens
  bool pad_to_max = false;  // pad to max_length instead of the longest row
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // As Hugging Face encode(text, add_special_tokens=add_special).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true) const = 0;
  // As HF tokenize(text): token strings, no special tokens.
  virtual std::vector<std::string> tokenize(std::string_view text) const = 0;
  // Text of ids with special tokens skipped, through the tokenizer's decoder (WordPiece "##" joining,
  // byte-level bytes, SentencePiece "▁" and <0xNN> bytes). Decoding a growing prefix and printing the new
  // suffix is how a stream prints tokens.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // Vocabulary string of one id (throws shrink::Error when out of range).
  virtual std::string id_to_piece(int32_t id) const = 0;
  virtual int vocab_size() const = 0;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }
  int unk_id() const { return unk_id_; }
  int cls_id() const { return cls_id_; }
  int sep_id() const { return sep_id_; }

  // Single text, or a pair when `b` is not empty ([CLS] a [SEP] b [SEP] for BERT, type ids 0/1). Truncation to
  // opt.max_length counts the special tokens; pairs are truncated longest-first (HF's rule: the longer side
  // loses tokens; when both must be cut, the budget is split evenly, the odd token going to the longer one).
  Encoding encode_full(std::string_view a, std::string_view b = {}, const EncodeOptions& opt = {}) const;
  // Rows right-padded with pad_id() to the longest row (or to opt.max_length with pad_to_max).
  BatchEncoding encode_batch(const std::vector<std::string>& texts, const EncodeOptions& opt = {}) const;

 protected:
  // Joins one or two encoded sequences (`ids` holds the first on entry, `type_ids` is filled), adding the
  // special tokens when add_special (HF's post-processor). The default is LlamaTokenizer's: bos (if >= 0)
  // before each sequence, type ids 0 for the first sequence and 1 for the second.
  virtual void post_process(std::vector<int32_t>& ids, std::vector<int32_t>& type_ids,
                            const std::vector<int32_t>* second, bool add_special) const;
  // How many special tokens post_process adds.
  virtual int num_special_tokens(bool pair) const;
  int bos_id_ = -1, eos_id_ = -1, pad_id_ = 0, unk_id_ = -1;
  int cls_id_ = -1, sep_id_ = -1;
};

// Picks the loader from the path: tokenizer.json, *.model (SentencePiece), a llama2.c tokenizer .bin (needs
// vocab_size > 0), vocab.txt (BERT WordPiece), vocab.json (GPT-2 BPE with merges.txt beside it), or a model
// directory (tokenizer.json preferred, then tokenizer.model, vocab.txt, vocab.json + merges.txt). A
// tokenizer_config.json beside the file supplies special tokens and do_lower_case.
// Throws shrink::Error naming the path and what was looked for when nothing fits.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path, int vocab_size = 0);

// A Hugging Face tokenizer.json given as text (the fuzzer's entry point). `name` is used in error messages;
// `config_json` is the optional text of tokenizer_config.json. Every failure is a shrink::Error naming `name`.
std::unique_ptr<Tokenizer> parse_tokenizer_json(std::string_view json_text, const std::string& name,
                                                std::string_view config_json = {});

// GPT-2's byte-level alphabet: the code point (as UTF-8) that stands for byte `b` in byte-level BPE vocabularies;
// printable bytes stand for themselves, the others for U+0100 + n in byte order.
const std::string& byte_to_unicode(uint8_t b);

}  // namespace shrink
