// llama2.c tokenizer .bin reader: int32 max_token_length, then per token float32 score, int32 length, bytes.
#include <shrink/core/error.h>
#include <shrink/formats/llama2c.h>

#include <cstring>

#include "tokenizers/loaders.h"

namespace shrink {

Llama2cVocab read_llama2c_vocab(const std::filesystem::path& path, int vocab_size) {
  const std::string name = path.string();
  if (vocab_size <= 0)
    fail(
        "{}: a llama2.c tokenizer needs the vocabulary size (got {}); pass the model's vocab_size "
        "(--vocab-size or the checkpoint header)",
        name, vocab_size);
  const std::string data = tokenizers::read_text_file(path, "llama2.c tokenizer .bin", size_t{1} << 30);
  size_t pos = 0;
  auto read = [&](void* dst, size_t n, const char* what, int index) {
    if (data.size() - pos < n)
      fail(
          "{}: truncated at byte {} reading the {} of token {} (file has {} bytes, vocab_size {}); is "
          "vocab_size right and the file complete?",
          name, pos, what, index, data.size(), vocab_size);
    std::memcpy(dst, data.data() + pos, n);
    pos += n;
  };
  Llama2cVocab v;
  int32_t max_len = 0;
  read(&max_len, 4, "header", -1);
  if (max_len <= 0 || max_len > (1 << 20))
    fail("{}: max_token_length {} is not plausible; this is not a llama2.c tokenizer file", name, max_len);
  v.max_token_length = max_len;
  v.pieces.resize(static_cast<size_t>(vocab_size));
  v.scores.resize(static_cast<size_t>(vocab_size));
  for (int i = 0; i < vocab_size; ++i) {
    float score = 0;
    int32_t len = 0;
    read(&score, 4, "score", i);
    read(&len, 4, "length", i);
    if (len < 0 || static_cast<size_t>(len) > data.size() - pos)
      fail("{}: token {} has length {} at byte {}, beyond the file's {} bytes; the file is corrupt", name, i, len,
           pos - 4, data.size());
    v.pieces[static_cast<size_t>(i)].assign(data.data() + pos, static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    v.scores[static_cast<size_t>(i)] = score;
  }
  if (pos != data.size())
    fail(
        "{}: {} bytes remain after {} tokens; the file holds more tokens than vocab_size {} (pass the right "
        "vocab_size)",
        name, data.size() - pos, vocab_size, vocab_size);
  return v;
}

}  // namespace shrink
