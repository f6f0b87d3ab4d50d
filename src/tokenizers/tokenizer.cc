// Tokenizer base behaviour (pairs, truncation, batches with padding) and load_tokenizer's choice of loader.
#include <shrink/core/error.h>
#include <shrink/tokenizers/tokenizer.h>

#include <algorithm>

#include "tokenizers/loaders.h"

namespace shrink {

void Tokenizer::post_process(std::vector<int32_t>& ids, std::vector<int32_t>& type_ids,
                             const std::vector<int32_t>* second, bool add_special) const {
  const bool bos = add_special && bos_id_ >= 0;
  if (bos) ids.insert(ids.begin(), bos_id_);
  type_ids.assign(ids.size(), 0);
  if (!second) return;
  if (bos) ids.push_back(bos_id_), type_ids.push_back(1);
  ids.insert(ids.end(), second->begin(), second->end());
  type_ids.insert(type_ids.end(), second->size(), 1);
}

int Tokenizer::num_special_tokens(bool pair) const {
  return bos_id_ >= 0 ? (pair ? 2 : 1) : 0;
}

Encoding Tokenizer::encode_full(std::string_view a, std::string_view b, const EncodeOptions& opt) const {
  const bool pair = !b.empty();
  std::vector<int32_t> first = encode(a, false), second;
  if (pair) second = encode(b, false);
  if (opt.max_length > 0) {
    const int special = opt.add_special ? num_special_tokens(pair) : 0;
    if (opt.max_length < special)
      fail("max_length {} is smaller than the {} special tokens the tokenizer adds; use a larger max_length",
           opt.max_length, special);
    const size_t budget = static_cast<size_t>(opt.max_length - special);
    if (!pair) {
      if (first.size() > budget) first.resize(budget);
    } else if (first.size() + second.size() > budget) {
      // HF tokenizers' longest-first rule, in closed form.
      size_t n1 = first.size(), n2 = second.size();
      const bool swap = n1 > n2;
      if (swap) std::swap(n1, n2);
      n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
      if (n1 + n2 > budget) n1 = budget / 2, n2 = n1 + budget % 2;
      if (swap) std::swap(n1, n2);
      first.resize(std::min(first.size(), n1));
      second.resize(std::min(second.size(), n2));
    }
  }
  Encoding e;
  post_process(first, e.type_ids, pair ? &second : nullptr, opt.add_special);
  e.ids = std::move(first);
  e.attention_mask.assign(e.ids.size(), 1);
  return e;
}

BatchEncoding Tokenizer::encode_batch(const std::vector<std::string>& texts, const EncodeOptions& opt) const {
  std::vector<Encoding> rows;
  rows.reserve(texts.size());
  size_t longest = 0;
  for (const std::string& t : texts) {
    rows.push_back(encode_full(t, {}, opt));
    longest = std::max(longest, rows.back().ids.size());
  }
  size_t seq = longest;
  if (opt.pad_to_max && opt.max_length > 0) seq = std::max(seq, static_cast<size_t>(opt.max_length));
  BatchEncoding b;
  b.batch = static_cast<int64_t>(rows.size());
  b.seq = static_cast<int64_t>(seq);
  b.ids.assign(rows.size() * seq, pad_id_);
  b.type_ids.assign(rows.size() * seq, 0);
  b.attention_mask.assign(rows.size() * seq, 0);
  for (size_t r = 0; r < rows.size(); ++r) {
    const Encoding& e = rows[r];
    std::copy(e.ids.begin(), e.ids.end(), b.ids.begin() + static_cast<ptrdiff_t>(r * seq));
    std::copy(e.type_ids.begin(), e.type_ids.end(), b.type_ids.begin() + static_cast<ptrdiff_t>(r * seq));
    std::fill_n(b.attention_mask.begin() + static_cast<ptrdiff_t>(r * seq), e.ids.size(), 1);
    b.lengths.push_back(static_cast<int32_t>(e.ids.size()));
  }
  return b;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path, int vocab_size) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "tokenizer.json")) return tokenizers::load_hf_tokenizer_json(path / "tokenizer.json");
    if (fs::exists(path / "tokenizer.model")) return tokenizers::load_sentencepiece(path / "tokenizer.model");
    if (fs::exists(path / "vocab.txt")) return tokenizers::load_bert_vocab_txt(path / "vocab.txt");
    if (fs::exists(path / "vocab.json")) {
      if (!fs::exists(path / "merges.txt"))
        fail("{}: vocab.json is there but merges.txt is missing; a GPT-2 tokenizer needs both", path.string());
      return tokenizers::load_gpt2_vocab_merges(path / "vocab.json", path / "merges.txt");
    }
    // A llama2.c model saved as a directory by shrink keeps its tokenizer as tokenizer.bin.
    if (fs::exists(path / "tokenizer.bin")) return load_tokenizer(path / "tokenizer.bin", vocab_size);
    fail(
        "{}: no tokenizer found in this directory (looked for tokenizer.json, tokenizer.model, vocab.txt, "
        "vocab.json + merges.txt, tokenizer.bin); copy the model's tokenizer files there or pass the tokenizer file",
        path.string());
  }
  if (!fs::exists(path, ec))
    fail(
        "{}: no such file or directory; expected a tokenizer.json, a SentencePiece .model, a llama2.c tokenizer "
        ".bin, vocab.txt, vocab.json, or a model directory holding one",
        path.string());
  const std::string file = path.filename().string(), ext = path.extension().string();
  if (file == "vocab.json") return tokenizers::load_gpt2_vocab_merges(path, path.parent_path() / "merges.txt");
  if (ext == ".json") return tokenizers::load_hf_tokenizer_json(path);
  if (ext == ".model") return tokenizers::load_sentencepiece(path);
  if (ext == ".txt") return tokenizers::load_bert_vocab_txt(path);
  if (ext == ".bin") {
    if (vocab_size <= 0)
      fail(
          "{}: a llama2.c tokenizer .bin needs the vocabulary size (got {}); pass --vocab-size or load it with "
          "its model",
          path.string(), vocab_size);
    return tokenizers::load_llama2c_tokenizer(path, vocab_size);
  }
  fail(
      "{}: unknown tokenizer file type '{}'; expected tokenizer.json, *.model (SentencePiece), *.bin (llama2.c), "
      "vocab.txt or vocab.json",
      path.string(), ext);
}

}  // namespace shrink
