// Mixed precision on stories260K: the chosen per-layer schemes meet the KLD budget (checked again with
// eval/compare on the held-out windows), the model gets smaller, and a layer made artificially sensitive keeps a
// higher precision than its peers.
#include <gtest/gtest.h>
#include <shrink/compress/mixed.h>
#include <shrink/compress/quantize.h>
#include <shrink/core/error.h>
#include <shrink/eval/compare.h>
#include <shrink/eval/perplexity.h>
#include <shrink/ops/qlinear.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include "unit/test_util.h"

namespace shrink {
namespace {

std::filesystem::path calib_file() {
  std::ifstream f(testing::fixture("text/tinyshakespeare.txt"));
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  const auto path = testing::temp_dir("mixed_calib") / "calib.txt";
  testing::write_bytes(path, text.substr(0, text.size() / 2));
  return path;
}

std::unique_ptr<Model> stories() {
  LoadOptions lo;
  lo.tokenizer = testing::fixture("stories260K/tok512.bin");
  return load_model(testing::fixture("stories260K/stories260K.bin"), lo);
}

// --scheme auto on `samples` windows of 128 tokens of the calibration file (half for the sensitivities, half held out).
QuantizeOptions auto_options(const std::filesystem::path& calib, int samples) {
  QuantizeOptions opt;
  opt.auto_scheme = true;
  opt.calib = calib;
  opt.calib_samples = samples;
  opt.calib_seq_len = 128;
  return opt;
}

TEST(Mixed, MeetsKldBudget) {
  const auto calib = calib_file();
  auto base = stories();
  auto model = stories();
  QuantizeOptions opt = auto_options(calib, 8);
  opt.mixed.budget_kld = 0.02;
  const QuantizeReport rep = quantize_model(model, opt);
  const MixedReport& m = rep.mixed;
  ASSERT_EQ(m.layers.size(), 35u);  // 5 blocks x 7 linears; lm_head skipped by default
  EXPECT_TRUE(m.met) << "measured " << m.measured_kld;
  EXPECT_LE(m.measured_kld, 0.02);
  EXPECT_LT(m.bytes_after, m.bytes_before / 2) << "the budget leaves room for 4-bit layers";
  // Every layer ended in the scheme the search chose.
  for (const auto& l : m.layers)
    for (const auto& q : rep.layers) {
      if (q.name == l.name) {
        EXPECT_EQ(q.scheme, m.candidates[static_cast<size_t>(l.chosen)]) << l.name;
      }
    }
  // Independent check: eval/compare's KLD on the held-out (odd) calibration windows.
  const CalibSet set = read_calib_set(calib, base->require_tokenizer(), 8, 128);
  double kld = 0;
  for (size_t i = 1; i < set.sequences.size(); i += 2)
    kld += compare_decoders(dynamic_cast<const DecoderModel&>(*base), dynamic_cast<const DecoderModel&>(*model),
                            set.sequences[i], 128)
               .kld;
  kld /= static_cast<double>(set.sequences.size() / 2);
  EXPECT_LE(kld, 0.02 * 1.05) << "compare_decoders on the held-out windows";
}

// --budget drop=2: the held-out perplexity rises by at most 2%; checked independently with eval/perplexity on the
// held-out (odd) calibration windows, one window per sequence as the search scores them.
TEST(Mixed, MeetsPerplexityDropBudget) {
  const auto calib = calib_file();
  auto base = stories();
  auto model = stories();
  QuantizeOptions opt = auto_options(calib, 4);  // 2 windows for the sensitivities, 2 held out
  opt.mixed.budget_drop_pct = 2;
  const QuantizeReport rep = quantize_model(model, opt);
  const MixedReport& m = rep.mixed;
  EXPECT_TRUE(m.met) << "measured " << m.measured_drop_pct << "%";
  EXPECT_LE(m.measured_drop_pct, 2.0);
  EXPECT_LT(m.bytes_after, m.bytes_before) << "the budget leaves room for quantized layers";
  const CalibSet set = read_calib_set(calib, base->require_tokenizer(), 4, 128);
  double nll_base = 0, nll_q = 0;
  int64_t tokens = 0;
  for (size_t i = 1; i < set.sequences.size(); i += 2) {
    const auto& seq = set.sequences[i];
    const PerplexityResult b = perplexity(dynamic_cast<const DecoderModel&>(*base), seq, 128);
    const PerplexityResult q = perplexity(dynamic_cast<const DecoderModel&>(*model), seq, 128);
    nll_base += b.nll * static_cast<double>(b.tokens);
    nll_q += q.nll * static_cast<double>(q.tokens);
    tokens += b.tokens;
  }
  const double ppl_base = std::exp(nll_base / static_cast<double>(tokens)),
               ppl_q = std::exp(nll_q / static_cast<double>(tokens));
  EXPECT_NEAR(m.base_ppl, ppl_base, 1e-3 * ppl_base);
  EXPECT_NEAR(m.measured_ppl, ppl_q, 1e-3 * ppl_q);
  EXPECT_LE(100 * (ppl_q / ppl_base - 1), 2.0 + 1e-3) << ppl_base << " -> " << ppl_q;
}

struct LayerChoice {
  size_t bytes = 0;   // of the chosen scheme
  double kld_w4 = 0;  // single-layer KLD at w4a16-g32
};

LayerChoice choose_for(Model& model, const std::filesystem::path& calib, const std::string& layer) {
  const CalibSet set = read_calib_set(calib, model.require_tokenizer(), 4, 64);
  CalibSet a, b;
  for (size_t i = 0; i < set.sequences.size(); ++i) (i % 2 ? b : a).sequences.push_back(set.sequences[i]);
  std::vector<std::string> slots;
  for (const auto& s : model.linears())
    if (s.name != "lm_head") slots.push_back(s.name);
  MixedOptions opt;
  opt.budget_kld = 0.3;  // loose: the unchanged model fits in 4 bits everywhere
  const MixedReport m = choose_mixed_precision(model, slots, a, b, opt);
  EXPECT_TRUE(m.met) << m.measured_kld;
  for (const auto& l : m.layers)
    if (l.name == layer) return {l.bytes[static_cast<size_t>(l.chosen)], l.kld[0]};
  ADD_FAILURE() << "no " << layer;
  return {};
}

TEST(Mixed, SensitiveLayerKeepsHigherPrecision) {
  const auto calib = calib_file();
  const std::string hot = "model.layers.2.mlp.up_proj";
  auto src = stories();
  const LayerChoice plain = choose_for(*src, calib, hot);
  // One weight per 32-column group of that layer set to 30x the layer's largest |w|: a W4 group scale then rounds
  // every other weight of the group to zero, so the layer becomes very sensitive to 4 bits.
  TensorMap tensors = src->tensors();
  Tensor w = tensors.at(hot + ".weight").to_f32();
  float amax = 0;
  for (int64_t i = 0; i < w.numel(); ++i) amax = std::max(amax, std::fabs(w.data<float>()[i]));
  for (int64_t i = 0; i < w.numel(); i += 32) w.data<float>()[i] = (i / 32 % 2 ? 30.f : -30.f) * amax;
  tensors[hot + ".weight"] = w;
  auto model = build_model(src->config(), tensors, src->source());
  model->set_tokenizer(load_tokenizer(testing::fixture("stories260K/tok512.bin"), model->config().vocab_size));
  const LayerChoice hot_choice = choose_for(*model, calib, hot);
  EXPECT_GT(hot_choice.kld_w4, 5 * plain.kld_w4) << "the changed layer is sensitive to 4 bits";
  EXPECT_GT(hot_choice.bytes, plain.bytes) << "the sensitive layer got a higher precision";
  // The model itself is left as it was.
  for (const auto& s : model->linears()) EXPECT_EQ(s.impl->scheme(), "f32") << s.name;
}

TEST(Mixed, NeedsCalibration) {
  auto model = stories();
  QuantizeOptions opt;
  opt.auto_scheme = true;
  EXPECT_THROW(quantize_model(model, opt), Error);
}

}  // namespace
}  // namespace shrink
