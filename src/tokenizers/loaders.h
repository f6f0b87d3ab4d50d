// Constructors of the concrete tokenizers, used by load_tokenizer (src/tokenizers/tokenizer.cc).
#pragma once

#include <shrink/tokenizers/tokenizer.h>

#include <filesystem>
#include <memory>
#include <string>

namespace shrink::tokenizers {

// Whole file as text; throws naming the file (and `what` it should be) when missing, unreadable or larger than
// max_bytes.
std::string read_text_file(const std::filesystem::path& path, const char* what, size_t max_bytes);

// tokenizer.json, with tokenizer_config.json from the same directory when present.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::filesystem::path& path);
// BERT vocab.txt (one token per line) as HF's BertTokenizerFast builds it; tokenizer_config.json beside it
// supplies do_lower_case, strip_accents, tokenize_chinese_chars and the special tokens.
std::unique_ptr<Tokenizer> load_bert_vocab_txt(const std::filesystem::path& vocab_txt);
// GPT-2 vocab.json + merges.txt as HF's GPT2TokenizerFast builds them.
std::unique_ptr<Tokenizer> load_gpt2_vocab_merges(const std::filesystem::path& vocab_json,
                                                  const std::filesystem::path& merges_txt);
// SentencePiece .model through libsentencepiece (bos added like LlamaTokenizer).
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& path);
// llama2.c tokenizer .bin (run.c's encode/decode).
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& path, int vocab_size);

}  // namespace shrink::tokenizers
