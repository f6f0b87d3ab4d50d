// Shared test helpers (see test_util.h).
#include "unit/test_util.h"

#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace shrink::testing {

std::filesystem::path fixture(const std::string& rel) {
  const char* env = std::getenv("SHRINK_FIXTURES_DIR");
  std::filesystem::path root = env && *env ? env : SHRINK_FIXTURES_DIR;
  std::filesystem::path p = root / rel;
  if (!std::filesystem::exists(p)) {
    ADD_FAILURE() << "fixture missing: " << p << " (../shared/fixtures must sit beside the repository)";
    throw std::runtime_error("fixture missing: " + p.string());
  }
  return p;
}

namespace {
struct TempDirs {
  std::vector<std::filesystem::path> dirs;
  ~TempDirs() {
    std::error_code ec;
    for (auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};
TempDirs g_temp_dirs;
}  // namespace

std::filesystem::path temp_dir(const std::string& tag) {
  static int counter = 0;
  auto p = std::filesystem::temp_directory_path() /
           ("shrink-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  g_temp_dirs.dirs.push_back(p);
  return p;
}

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write test file " + path.string());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

RunResult run_cli(const std::string& args) {
  return run_command(std::string(SHRINK_CLI_PATH) + " " + args);
}

RunResult run_command(const std::string& command_line) {
  auto dir = temp_dir("cli");
  const std::string out = (dir / "out").string(), err = (dir / "err").string();
  const std::string cmd = command_line + " >" + out + " 2>" + err + " </dev/null";
  const int status = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

}  // namespace shrink::testing
