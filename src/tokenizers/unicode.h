// UTF-8 and Unicode helpers shared by the tokenizers: code points, lossy decoding, character classes
// (JavaScript/HF definitions), normalization and lowercasing (ICU underneath).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace shrink::unicode {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Next code point of `s` at `pos` (advanced past it). Invalid UTF-8 yields U+FFFD for each maximal invalid
// subpart, the WHATWG / Rust from_utf8_lossy / ICU convention.
char32_t next_cp(std::string_view s, size_t& pos);
void append_utf8(std::string& out, char32_t cp);
bool is_valid_utf8(std::string_view s);
// `s` with every invalid sequence replaced by U+FFFD (a copy of `s` when it is valid).
std::string sanitize_utf8(std::string_view s);
size_t count_cps(std::string_view s);

// General categories (ICU's Unicode data).
bool is_letter(char32_t c);            // \p{L}
bool is_number(char32_t c);            // \p{N}
bool is_punctuation(char32_t c);       // \p{P}
bool is_nonspacing_mark(char32_t c);   // \p{Mn}
bool is_other_no_cn(char32_t c);       // \p{Cc} | \p{Cf} | \p{Co} | \p{Cs} (transformers.js BERT "control")
bool is_js_whitespace(char32_t c);     // JavaScript \s
bool is_white_space(char32_t c);       // Unicode White_Space (Rust char::is_whitespace)
bool is_bert_punctuation(char32_t c);  // \p{P} plus ASCII symbols 33-47, 58-64, 91-96, 123-126
bool is_chinese_char(char32_t c);      // BERT's _is_chinese_char ranges (CJK ideographs only)

enum class NormForm { kNfc, kNfd, kNfkc, kNfkd };
std::string normalize(std::string_view s, NormForm form);
// Full Unicode lowercase mapping with the root locale (final sigma in context, as JavaScript toLowerCase).
std::string to_lower(std::string_view s);
std::string to_upper(std::string_view s);

}  // namespace shrink::unicode
