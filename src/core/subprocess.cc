// Child processes with their cost: posix_spawn, one poll loop over stdout/stderr, wait4 for the rusage.
#include <fcntl.h>
#include <poll.h>
#include <shrink/core/error.h>
#include <shrink/core/subprocess.h>
#include <shrink/core/timer.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

extern char** environ;

namespace shrink {

namespace {

// Keeps at most this many bytes of stderr for the tail (a runaway child must not grow our memory).
constexpr size_t kTailBytes = 64 * 1024;

std::string last_lines(const std::string& text, int n) {
  size_t end = text.size();
  while (end > 0 && text[end - 1] == '\n') --end;
  size_t pos = end;
  for (int lines = 0; pos > 0; --pos)
    if (text[pos - 1] == '\n' && ++lines == n) break;
  return text.substr(pos, end - pos);
}

// Our environment with `extra` entries added or replacing ones of the same name.
std::vector<std::string> merged_env(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> by_name;
  std::vector<std::string> order;
  auto put = [&](const std::string& entry) {
    const std::string name = entry.substr(0, entry.find('='));
    if (!by_name.count(name)) order.push_back(name);
    by_name[name] = entry;
  };
  for (char** e = environ; *e; ++e) put(*e);
  for (const auto& e : extra) put(e);
  std::vector<std::string> out;
  for (const auto& name : order) out.push_back(by_name[name]);
  return out;
}

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (::pipe2(fd, O_CLOEXEC) != 0) fail("cannot create a pipe for a child process: {}", std::strerror(errno));
  }
  ~Pipe() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  void close_end(int i) {
    ::close(fd[i]);
    fd[i] = -1;
  }
};

}  // namespace

std::string format_command(const std::filesystem::path& exe, const std::vector<std::string>& args) {
  auto quote = [](const std::string& a) {
    if (!a.empty() && a.find_first_of(" \t\n'\"\\$*?;&|<>()") == std::string::npos) return a;
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string s = quote(exe.string());
  for (const auto& a : args) s.append(1, ' ').append(quote(a));
  return s;
}

std::string ProcessResult::describe_failure() const {
  std::string s = signal ? fmt::format("killed by signal {} ({})", signal, ::strsignal(signal))
                         : fmt::format("exited with status {}", exit_code);
  if (!err_tail.empty()) s += ":\n" + err_tail;
  return s;
}

ProcessResult run_process(const ProcessOptions& opt) {
  Pipe out_pipe, err_pipe;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe.fd[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe.fd[1], 2);

  std::vector<std::string> argv_s{opt.exe.string()};
  argv_s.insert(argv_s.end(), opt.args.begin(), opt.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s = merged_env(opt.env);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  std::ofstream log;
  if (!opt.log_file.empty()) {
    log.open(opt.log_file, std::ios::app | std::ios::binary);
    if (!log)
      fail("{}: cannot open the log file for writing; check the directory exists and is writable",
           opt.log_file.string());
    log << "$ " << format_command(opt.exe, opt.args) << "\n";
  }

  Timer timer;
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, argv_s[0].c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) fail("cannot start {}: {}", format_command(opt.exe, opt.args), std::strerror(rc));
  out_pipe.close_end(1);
  err_pipe.close_end(1);

  ProcessResult r;
  std::string err_buf;
  pollfd fds[2] = {{out_pipe.fd[0], POLLIN, 0}, {err_pipe.fd[0], POLLIN, 0}};
  char buf[65536];
  for (int open = 2; open > 0;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fail("waiting for the output of {}: {}", format_command(opt.exe, opt.args), std::strerror(errno));
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fds[i].fd = -1;  // the pipe's fd is closed by ~Pipe
        --open;
        continue;
      }
      if (i == 0) {
        r.out.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (opt.pass_stderr) {
        std::fwrite(buf, 1, static_cast<size_t>(n), stderr);
        std::fflush(stderr);
      }
      if (log.is_open()) log.write(buf, n).flush();
      err_buf.append(buf, static_cast<size_t>(n));
      if (err_buf.size() > 2 * kTailBytes) err_buf.erase(0, err_buf.size() - kTailBytes);
    }
  }

  int status = 0;
  rusage ru{};
  while (::wait4(pid, &status, 0, &ru) < 0)
    if (errno != EINTR) fail("waiting for {}: {}", format_command(opt.exe, opt.args), std::strerror(errno));
  r.wall_s = timer.elapsed_ms() / 1000;
  r.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  r.peak_rss_bytes = static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
  if (WIFEXITED(status)) {
    r.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.signal = WTERMSIG(status);
  }
  r.err_tail = last_lines(err_buf, opt.stderr_tail_lines);
  if (log.is_open())
    log << fmt::format("# {}, {:.2f} s wall, {:.2f} s CPU, peak RSS {} bytes\n",
                       r.ok() ? "ok" : (r.signal ? "killed" : "failed"), r.wall_s, r.cpu_s, r.peak_rss_bytes);
  return r;
}

}  // namespace shrink
