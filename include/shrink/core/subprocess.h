// Running a program as a child process and measuring what it cost: exit status, wall and CPU seconds, peak RSS
// (wait4's ru_maxrss), stdout captured, stderr passed through and/or logged with its last lines kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace shrink {

struct ProcessOptions {
  std::filesystem::path exe = "/proc/self/exe";  // default: this very program (a shrink subcommand)
  std::vector<std::string> args;                 // argv[1..]; argv[0] is exe
  std::filesystem::path log_file;                // when set, the child's stderr is appended here
  bool pass_stderr = true;                       // copy the child's stderr to ours as it comes
  int stderr_tail_lines = 20;                    // how many last stderr lines to keep for error messages
  std::vector<std::string> env;                  // extra "NAME=VALUE" entries on top of our environment
};

struct ProcessResult {
  int exit_code = -1;            // the child's exit status; -1 when it was killed by a signal
  int signal = 0;                // the signal that ended it, 0 when it exited
  std::string out;               // everything it wrote to stdout
  std::string err_tail;          // its last stderr lines
  double wall_s = 0, cpu_s = 0;  // elapsed, and user + system CPU of the child
  uint64_t peak_rss_bytes = 0;   // the child's high-water resident set
  bool ok() const { return signal == 0 && exit_code == 0; }
  // "exited with status 3" / "killed by signal 9 (Killed)", then the last stderr lines.
  std::string describe_failure() const;
};

// Spawns exe with args (posix_spawn: no fork of a large address space, no atfork handlers) and waits for it.
// Throws shrink::Error only when the child cannot be started at all.
ProcessResult run_process(const ProcessOptions& opt);

// The command line as a shell would show it (for logs and error messages).
std::string format_command(const std::filesystem::path& exe, const std::vector<std::string>& args);

}  // namespace shrink
