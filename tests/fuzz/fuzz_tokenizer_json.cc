// libFuzzer target: arbitrary bytes as a Hugging Face tokenizer.json. Only shrink::Error may come out; a file
// that loads must encode, tokenize, decode and truncate a fixed text without crashing or hanging.
#include <shrink/core/error.h>
#include <shrink/tokenizers/tokenizer.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string_view kText =
      "Hello, world! <s> </s> [CLS] [UNK] caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 \t\n  it'll 1234 "
      "\xE2\x96\x81x \xFF\xC3 ##ab <|endoftext|>";
  try {
    auto tok = shrink::parse_tokenizer_json(std::string_view(reinterpret_cast<const char*>(data), size),
                                            "fuzz/tokenizer.json");
    const auto ids = tok->encode(kText, true);
    tok->encode(kText, false);
    tok->tokenize(kText);
    tok->decode(ids);
    for (int32_t id : ids) tok->id_to_piece(id);
    shrink::EncodeOptions opt;
    opt.max_length = 8;
    tok->encode_full(kText, "second sentence", opt);
    tok->encode_batch({std::string(kText), ""}, opt);
  } catch (const shrink::Error&) {
  }
  return 0;
}
