// shrink::Error — the one error type. Messages name the thing (file, tensor, field), what was
// expected, what was found, and what to do (see docs/errors.md and DESIGN.md's error contract).
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace shrink {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// check(cond, "...") throws shrink::Error with the formatted message when cond is false.
template <typename... Args>
void check(bool cond, fmt::format_string<Args...> format, Args&&... args) {
  if (!cond) throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace shrink
