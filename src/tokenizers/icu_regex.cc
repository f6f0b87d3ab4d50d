// ICU-backed regex search for tokenizer.json patterns (UTF-16 inside ICU, byte offsets outside).
#include "tokenizers/icu_regex.h"

#include <shrink/core/error.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>

#include "tokenizers/unicode.h"

namespace shrink::hf {

struct IcuRegex::Impl {
  std::unique_ptr<icu::RegexPattern> pattern;
};

IcuRegex::IcuRegex(const std::string& pattern, const std::string& where) : impl_(new Impl), where_(where) {
  UErrorCode status = U_ZERO_ERROR;
  UParseError perr{};
  const icu::UnicodeString p = icu::UnicodeString::fromUTF8(unicode::sanitize_utf8(pattern));
  impl_->pattern.reset(icu::RegexPattern::compile(p, 0, perr, status));
  if (U_FAILURE(status) || !impl_->pattern)
    fail("{}: regex '{}' does not compile ({} at offset {}); fix the pattern", where, pattern.substr(0, 80),
         u_errorName(status), perr.offset);
}

IcuRegex::~IcuRegex() = default;

std::vector<std::pair<size_t, size_t>> IcuRegex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  if (text.empty()) return out;
  // UTF-16 index -> byte offset, so matches map back onto the UTF-8 text.
  std::vector<size_t> byte_at;
  byte_at.reserve(text.size() + 1);
  icu::UnicodeString u;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t cp = unicode::next_cp(text, pos);
    u.append(static_cast<UChar32>(cp));
    byte_at.push_back(start);
    if (cp > 0xFFFF) byte_at.push_back(start);
  }
  byte_at.push_back(text.size());
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(impl_->pattern->matcher(u, status));
  if (U_FAILURE(status)) fail("{}: regex matcher failed ({})", where_, u_errorName(status));
  m->setTimeLimit(2000, status);  // ~seconds of backtracking at most, then U_REGEX_TIME_OUT
  while (m->find(status)) {
    const int32_t b = m->start(status), e = m->end(status);
    if (U_FAILURE(status)) break;
    if (e > b) out.emplace_back(byte_at[static_cast<size_t>(b)], byte_at[static_cast<size_t>(e)]);
  }
  if (U_FAILURE(status))
    fail("{}: regex search failed ({}); the pattern backtracks too much or is invalid", where_, u_errorName(status));
  return out;
}

}  // namespace shrink::hf
