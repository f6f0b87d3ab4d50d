// Shared test helpers (see test_util.h).
#include "unit/test_util.h"

#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/compare.h>
#include <shrink/kernels/quant.h>
#include <shrink/models/synth.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace shrink::testing {

std::vector<float> round_x_q8(const std::vector<float>& x, int64_t m, int64_t ldx, int64_t k) {
  std::vector<float> out = x;
  std::vector<int8_t> q(static_cast<size_t>(k));
  std::vector<float> d(static_cast<size_t>((k + 31) / 32));
  for (int64_t r = 0; r < m; ++r) {
    kernels::quantize_row_q8_32_ref(&x[r * ldx], k, q.data(), d.data());
    for (int64_t i = 0; i < k; ++i) out[r * ldx + i] = static_cast<float>(q[i]) * d[i / 32];
  }
  return out;
}

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

std::string shakespeare() {
  std::ifstream f(fixture("text/tinyshakespeare.txt"), std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::filesystem::path calib_file(const std::string& tag, size_t bytes) {
  const auto path = temp_dir(tag) / "calib.txt";
  write_bytes(path, shakespeare().substr(0, bytes));
  return path;
}

std::unique_ptr<Model> Stories260k::load() const {
  LoadOptions lo;
  lo.tokenizer = fixture("stories260K/tok512.bin");
  return load_model(fixture("stories260K/stories260K.bin"), lo);
}

Stories260k stories260k(const std::string& tag) {
  Stories260k s;
  const std::string text = shakespeare();
  s.calib = calib_file(tag, text.size() / 2);
  s.held_out = s.load()->require_tokenizer().encode(text.substr(text.size() / 2, 20000), true);
  s.held_out.resize(2048);
  return s;
}

void StoriesSuite::SetUpTestSuite() {
  ref_ = new nlohmann::json(nlohmann::json::parse(read_text_file(fixture("stories260K/reference.json"))));
  LoadOptions opt;
  opt.tokenizer = fixture("stories260K/tok512.bin");
  model_ = load_model(fixture("stories260K/stories260K.bin"), opt).release();
}

void StoriesSuite::TearDownTestSuite() {
  delete model_;
  delete ref_;
  model_ = nullptr;
  ref_ = nullptr;
}

double kld_on(const Model& base, const Model& candidate, const std::vector<int32_t>& tokens) {
  return compare_decoders(dynamic_cast<const DecoderModel&>(base), dynamic_cast<const DecoderModel&>(candidate), tokens,
                          256)
      .kld;
}

void expect_schemes(const QuantizeReport& rep, const std::string& scheme) {
  for (const auto& l : rep.layers) {
    if (l.name != "lm_head") {
      EXPECT_EQ(l.scheme, scheme) << l.name;
    }
  }
}

ScaledLinear scale_channels(const Tensor& w, const std::vector<float>& x, const std::vector<float>& s) {
  const int64_t in = static_cast<int64_t>(s.size()), out = w.numel() / in, rows = static_cast<int64_t>(x.size()) / in;
  ScaledLinear r{w.clone(), x};
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in; ++c) r.w.data<float>()[o * in + c] *= s[c];
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < in; ++c) r.x[i * in + c] /= s[c];
  return r;
}

std::vector<float> decoder_logits(const Model& m, const std::vector<int32_t>& toks) {
  const auto& d = dynamic_cast<const DecoderModel&>(m);
  const int64_t n = static_cast<int64_t>(toks.size());
  std::vector<float> y(static_cast<size_t>(n * d.config().vocab_size));
  KvCache c = d.new_cache(n);
  d.forward(c, toks.data(), n, y.data(), true);
  return y;
}

void expect_folding_keeps_outputs(const std::string& scheme, uint32_t seed, const FoldSearch& fold) {
  for (const std::string preset : {"llama-tiny", "gpt2-tiny"}) {
    const auto dir = temp_dir("fold_" + preset);
    synth_model(find_synth_preset(preset), dir, seed);
    auto model = load_model(dir);
    const std::vector<int32_t> toks = {1, 17, 250, 3, 999, 42, 7, 8, 600, 11, 5, 90};
    const std::vector<float> before = decoder_logits(*model, toks);
    std::map<std::string, QuantSpec> plan;
    for (const auto& s : model->linears())
      if (s.name != "lm_head") plan.emplace(s.name, parse_quant_spec(scheme));
    const std::unique_ptr<Model> folded = fold(preset, *model, plan);
    ASSERT_NE(folded, nullptr) << preset;
    ASSERT_NE(folded->tokenizer(), nullptr) << preset;
    const std::vector<float> after = decoder_logits(*folded, toks);
    ASSERT_EQ(after.size(), before.size()) << preset;
    double max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < before.size(); ++i) {
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(before[i])));
      max_diff = std::max(max_diff, std::fabs(static_cast<double>(after[i]) - before[i]));
    }
    EXPECT_LT(max_diff, 1e-5 * std::max(1.0, max_ref)) << preset << " " << scheme << " max |logit| " << max_ref;
  }
}

}  // namespace shrink::testing
