// Helpers shared by unit tests: fixture paths (fail loudly when missing), temp dirs, CLI runs.
#pragma once

#include <gtest/gtest.h>
#include <shrink/compress/quantize.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

// Expects `haystack` (a std::string) to contain `needle`, printing the haystack when it does not.
#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

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

// x' = q * d of kernels/quant.h quantize_row_q8_32_ref for rows [0, m) of x (row stride ldx, k values each): what
// the decode GEMVs that round x to int8 per 32 values (W4, W8A16 on AVX2) multiply by; the rest of x is copied.
std::vector<float> round_x_q8(const std::vector<float>& x, int64_t m, int64_t ldx, int64_t k);

// The tiny Shakespeare fixture (text/tinyshakespeare.txt) as text.
std::string shakespeare();
// A calibration file under a fresh temp dir: the first `bytes` of tiny Shakespeare.
std::filesystem::path calib_file(const std::string& tag, size_t bytes);

// The whole-pass setting of the calibrated quantization tests: stories260K (llama2.c fixture) with its tokenizer,
// the first half of tiny Shakespeare as the calibration file, 2,048 tokens of the second half held out.
struct Stories260k {
  std::filesystem::path calib;
  std::vector<int32_t> held_out;
  std::unique_ptr<Model> load() const;  // a fresh fp32 copy
};
Stories260k stories260k(const std::string& tag);
// A test-suite fixture over stories260K (llama2.c fixture, tok512.bin) and its reference.json (llama2.c run.c's
// outputs), loaded once per suite: `struct Stories : testing::StoriesSuite {};`, then TEST_F(Stories, ...).
class StoriesSuite : public ::testing::Test {
 public:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  static DecoderModel& dec() { return dynamic_cast<DecoderModel&>(*model_); }

 protected:
  static inline nlohmann::json* ref_ = nullptr;
  static inline Model* model_ = nullptr;
};

// KLD (base -> candidate, windows of 256) of two decoders on `tokens`.
double kld_on(const Model& base, const Model& candidate, const std::vector<int32_t>& tokens);
// Every layer the pass reports except lm_head (left alone by default) carries `scheme`.
void expect_schemes(const QuantizeReport& rep, const std::string& scheme);

// A linear layer with input channel j scaled by s[j] (AWQ, SmoothQuant): W diag(s) for w [out, in] and
// x / s for the rows of x [rows, in]. The product is the same up to rounding.
struct ScaledLinear {
  Tensor w;
  std::vector<float> x;
};
ScaledLinear scale_channels(const Tensor& w, const std::vector<float>& x, const std::vector<float>& s);

// Logits of a decoder model at every position of `toks` (one sequence from an empty cache).
std::vector<float> decoder_logits(const Model& m, const std::vector<int32_t>& toks);

// The folding check of the scale searches (AWQ, SmoothQuant): on llama-tiny and gpt2-tiny synth models (seed),
// `fold` gets the preset, the loaded model and a plan of `scheme` on every linear but lm_head, and returns the
// folded model; its logits must equal the original's within 1e-5 of the largest logit (folding changes no function).
using FoldSearch = std::function<std::unique_ptr<Model>(const std::string& preset, Model& model,
                                                        const std::map<std::string, QuantSpec>& plan)>;
void expect_folding_keeps_outputs(const std::string& scheme, uint32_t seed, const FoldSearch& fold);

}  // namespace shrink::testing
