// run_process: children written in Python (an independent program) that allocate, fail, print, sleep and burn CPU
// by known amounts; the measured status, output, times and peak RSS must match what they were told to do.
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/core/subprocess.h>

#include <fstream>
#include <sstream>

#include "unit/test_util.h"

namespace shrink {
namespace {

ProcessResult python(const std::string& code, bool pass_stderr = false) {
  ProcessOptions opt;
  opt.exe = "/usr/bin/python3";
  opt.args = {"-c", code};
  opt.pass_stderr = pass_stderr;
  return run_process(opt);
}

TEST(Subprocess, PeakRssCoversTouchedMemory) {
  // 256 MiB written byte by byte (bytes * n fills the buffer, so every page is resident).
  const auto r = python("x = b'\\x01' * (256 << 20)\nprint(len(x))");
  ASSERT_TRUE(r.ok()) << r.describe_failure();
  EXPECT_EQ(r.out, "268435456\n");
  EXPECT_GE(r.peak_rss_bytes, uint64_t{256} << 20);
  EXPECT_LT(r.peak_rss_bytes, uint64_t{1} << 30);  // the Python interpreter itself is far below 768 MiB
}

TEST(Subprocess, SmallChildHasSmallPeak) {
  const auto r = python("pass");
  ASSERT_TRUE(r.ok());
  EXPECT_LT(r.peak_rss_bytes, uint64_t{128} << 20);
}

TEST(Subprocess, FailingChildGivesStatusAndLastLines) {
  const auto r = python(
      "import sys\nfor i in range(30): sys.stderr.write(f'line {i}\\n')\n"
      "sys.stderr.write('error: model.bin: truncated\\n')\nsys.exit(3)");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.signal, 0);
  // The default keeps 20 lines: "line 11" .. "line 29" and the error.
  EXPECT_EQ(r.err_tail.substr(0, 8), "line 11\n");
  EXPECT_NE(r.err_tail.find("error: model.bin: truncated"), std::string::npos);
  EXPECT_EQ(r.err_tail.find("line 10\n"), std::string::npos);
  const std::string d = r.describe_failure();
  EXPECT_NE(d.find("exited with status 3"), std::string::npos) << d;
  EXPECT_NE(d.find("truncated"), std::string::npos) << d;
}

TEST(Subprocess, KilledChildReportsSignal) {
  const auto r = python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.signal, 9);
  EXPECT_NE(r.describe_failure().find("signal 9"), std::string::npos);
}

TEST(Subprocess, WallAndCpuSeconds) {
  // Sleeps 0.3 s (wall, no CPU), then spins for 0.3 s of its own CPU time.
  const auto r =
      python("import time\ntime.sleep(0.3)\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass");
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r.wall_s, 0.6);
  EXPECT_GE(r.cpu_s, 0.3);
  EXPECT_LT(r.cpu_s, r.wall_s);
}

TEST(Subprocess, LargeStdoutAndStderrTogetherDoNotDeadlock) {
  // 4 MiB on each stream, interleaved: a runner reading one pipe at a time would block the child.
  const auto r = python(
      "import sys\nfor i in range(4096):\n  sys.stdout.write('o' * 1023 + '\\n')\n  sys.stderr.write('e' * 1023 + "
      "'\\n')");
  ASSERT_TRUE(r.ok()) << r.describe_failure();
  EXPECT_EQ(r.out.size(), 4096u * 1024);
  EXPECT_EQ(r.err_tail.size(), 20u * 1024 - 1);
}

TEST(Subprocess, EnvAndLogFile) {
  const auto dir = testing::temp_dir("subprocess");
  ProcessOptions opt;
  opt.exe = "/usr/bin/python3";
  opt.args = {"-c", "import os, sys\nsys.stderr.write(os.environ['SHRINK_TEST_VALUE'] + '\\n')"};
  opt.env = {"SHRINK_TEST_VALUE=hello from the parent"};
  opt.log_file = dir / "stage.log";
  opt.pass_stderr = false;
  const auto r = run_process(opt);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.err_tail, "hello from the parent");
  std::ifstream in(opt.log_file);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string log = ss.str();
  EXPECT_EQ(log.rfind("$ /usr/bin/python3 -c ", 0), 0u) << log;
  EXPECT_NE(log.find("hello from the parent\n# ok, "), std::string::npos) << log;
}

TEST(Subprocess, MissingProgramIsAnError) {
  ProcessOptions opt;
  opt.exe = "/nonexistent/shrink";
  try {
    run_process(opt);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/shrink"), std::string::npos) << e.what();
  }
}

TEST(Subprocess, ShrinkChildErrorMessage) {
  ProcessOptions opt;
  opt.exe = SHRINK_CLI_PATH;
  opt.args = {"info", "/nonexistent/model-dir"};
  opt.pass_stderr = false;
  const auto r = run_process(opt);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err_tail.find("/nonexistent/model-dir"), std::string::npos) << r.err_tail;
}

TEST(Subprocess, FormatCommandQuotes) {
  EXPECT_EQ(format_command("/bin/echo", {"a b", "it's", "plain"}), "/bin/echo 'a b' 'it'\\''s' plain");
}

}  // namespace
}  // namespace shrink
