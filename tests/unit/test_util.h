// Helpers shared by unit tests: fixture paths (fail loudly when missing), temp dirs, CLI runs.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

namespace shrink::testing {

// ../shared/fixtures/<rel>; the test fails (not skips) when it is missing.
std::filesystem::path fixture(const std::string& rel);
// A fresh empty directory under the system temp dir, removed at process exit.
std::filesystem::path temp_dir(const std::string& tag);
// Writes `bytes` to `path` as they are (test inputs, including broken files).
void write_bytes(const std::filesystem::path& path, const std::string& bytes);
// The message of the shrink::Error that f throws, or "(no error)".
std::string error_of(const std::function<void()>& f);
// Runs the built `shrink` binary with args; returns exit code, captures stdout and stderr.
struct RunResult {
  int code;
  std::string out, err;
};
RunResult run_cli(const std::string& args);
// Runs a shell command line (e.g. /usr/bin/python3 computing a reference); stdin is /dev/null.
RunResult run_command(const std::string& command_line);

}  // namespace shrink::testing
