// Regex patterns of tokenizer.json (Split pre-tokenizer, Replace normalizer/decoder) run with ICU's regex
// engine, with a time limit so a pathological pattern fails instead of hanging.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shrink::hf {

class IcuRegex {
 public:
  // Throws shrink::Error naming `where` when the pattern does not compile.
  IcuRegex(const std::string& pattern, const std::string& where);
  ~IcuRegex();
  IcuRegex(const IcuRegex&) = delete;
  IcuRegex& operator=(const IcuRegex&) = delete;
  // Byte ranges [begin, end) of the non-overlapping non-empty matches in `text` (valid UTF-8), left to right.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string where_;
};

}  // namespace shrink::hf
