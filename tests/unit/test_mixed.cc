// Mixed precision on stories260K: the chosen per-layer schemes meet the KLD budget (checked again with
// eval/compare on the held-out windows), the model gets smaller, and a layer made artificially sensitive keeps a
// higher precision than its peers.
#include <gtest/gtest.h>
#include <shrink/compress/mixed.h>
#include <shrink/compress/quantize.h>
#include <shrink/core/error.h>
#include <shrink/eval/compare.h>
#include <shrink/eval/perplexity.h>
#include <shrink/formats/model_dir.h>
#include <shrink/models/synth.h>
#include <shrink/ops/qlinear.h>

#include <algorithm>
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

// A classifier with --budget drop=X: at most X points of held-out accuracy lost. The labels are the fp32 model's own
// predictions (computed here, row by row), so fp32 scores 100% and the loss is the share of held-out predictions
// the chosen schemes flip; the quantized model's accuracy is recomputed here the same way.
std::vector<int> predictions(const EncoderModel& m, const CalibSet& set) {
  std::vector<int> p;
  for (const auto& seq : set.sequences) {
    const EncoderOutput o = m.forward(one_row_batch(seq, m.config().max_position_embeddings));
    const float* l = o.logits.data<float>();
    p.push_back(static_cast<int>(std::max_element(l, l + o.logits.numel()) - l));
  }
  return p;
}

// The rows' fp32 logit margins (label 1 minus label 0).
std::vector<float> margins(const EncoderModel& m, const CalibSet& set) {
  std::vector<float> d;
  for (const auto& seq : set.sequences) {
    const EncoderOutput o = m.forward(one_row_batch(seq, m.config().max_position_embeddings));
    d.push_back(o.logits.data<float>()[1] - o.logits.data<float>()[0]);
  }
  return d;
}

double held_out_accuracy(const EncoderModel& m, const CalibSet& set) {
  const std::vector<int> p = predictions(m, set);
  int right = 0, held = 0;
  for (size_t i = 1; i < set.sequences.size(); i += 2, ++held) right += p[i] == set.labels[i];
  return 100.0 * right / held;
}

TEST(Mixed, ClassifierMeetsAccuracyDropBudget) {
  const auto dir = testing::temp_dir("mixed_cls");
  synth_model(find_synth_preset("bert-tiny"), dir / "synth", 11);
  // 48 SST-2 sentences.
  const auto texts_path = dir / "texts.tsv";
  {
    std::ifstream in(testing::fixture("sst2/train.tsv"));
    std::string line, out = "sentence\n";
    std::getline(in, line);  // header
    for (int i = 0; i < 48 && std::getline(in, line); ++i) out += line.substr(0, line.find('\t')) + "\n";
    testing::write_bytes(texts_path, out);
  }
  // A random model gives every sentence nearly the same margin, and 4 bits flip nothing. Make it a sensitive
  // classifier: the classifier bias centres the margins (half the rows each way, many close calls) and the
  // classifier weight is scaled so those close calls are a few hundredths of a logit apart; one weight per
  // 32-column group of the last FFN output is set to 30x the layer's max (a W4 group scale then zeroes the rest).
  auto src = load_model(dir / "synth");
  const CalibSet texts = read_calib_set(texts_path, src->require_tokenizer(), 48, 32);
  ASSERT_EQ(texts.sequences.size(), 48u);
  TensorMap tensors = src->tensors();
  Tensor w = tensors.at("classifier.weight").to_f32();
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] *= 50.f;
  tensors["classifier.weight"] = w;
  const std::string hot = "bert.encoder.layer.1.output.dense.weight";
  Tensor h = tensors.at(hot).to_f32();
  float amax = 0;
  for (int64_t i = 0; i < h.numel(); ++i) amax = std::max(amax, std::fabs(h.data<float>()[i]));
  for (int64_t i = 0; i < h.numel(); i += 32) h.data<float>()[i] = (i / 32 % 2 ? 30.f : -30.f) * amax;
  tensors[hot] = h;
  auto scaled = build_model(src->config(), tensors, src->source());
  std::vector<float> d = margins(dynamic_cast<const EncoderModel&>(*scaled), texts);
  std::nth_element(d.begin(), d.begin() + 24, d.end());
  Tensor b = tensors.at("classifier.bias").to_f32();
  b.data<float>()[1] -= d[24];
  tensors["classifier.bias"] = b;
  SaveOptions so;
  so.tokenizer = dir / "synth" / "tokenizer.json";
  save_model(*build_model(src->config(), tensors, src->source()), dir / "model", so);

  auto base = load_model(dir / "model");
  const std::vector<int> fp32 = predictions(dynamic_cast<const EncoderModel&>(*base), texts);
  const auto calib = dir / "calib.tsv";
  {
    std::ifstream in(texts_path);
    std::string line, out = "sentence\tlabel\n";
    std::getline(in, line);
    for (int i = 0; std::getline(in, line); ++i)
      out += line + "\t" + std::to_string(fp32[static_cast<size_t>(i)]) + "\n";
    testing::write_bytes(calib, out);
  }
  const CalibSet set = read_labeled_calib_set(calib, base->require_tokenizer(), 48, 32, {}, 2);
  ASSERT_EQ(set.labels.size(), 48u);
  EXPECT_DOUBLE_EQ(held_out_accuracy(dynamic_cast<const EncoderModel&>(*base), set), 100.0);

  // Uniform W4 loses more than the budget: the search has to choose.
  QuantizeOptions w4;
  w4.scheme = parse_quant_spec("w4a16-g32");
  auto uniform = load_model(dir / "model");
  quantize_model(uniform, w4);
  const double w4_accuracy = held_out_accuracy(dynamic_cast<const EncoderModel&>(*uniform), set);
  constexpr double kBudget = 5;  // points: 1 of the 24 held-out rows may flip
  ASSERT_LT(w4_accuracy, 100.0 - kBudget) << "the test model must be sensitive to 4 bits";

  QuantizeOptions opt;
  opt.auto_scheme = true;
  opt.calib = calib;
  opt.calib_samples = 48;
  opt.calib_seq_len = 32;
  opt.mixed.budget_drop_pct = kBudget;
  auto model = load_model(dir / "model");
  const QuantizeReport rep = quantize_model(model, opt);
  const MixedReport& m = rep.mixed;
  EXPECT_DOUBLE_EQ(m.base_accuracy, 100.0);
  EXPECT_TRUE(m.met) << "measured " << m.measured_drop_pct << " points";
  EXPECT_LT(m.bytes_after, m.bytes_before);
  // Independently: the quantized model's held-out accuracy against the labels.
  const double acc = held_out_accuracy(dynamic_cast<const EncoderModel&>(*model), set);
  EXPECT_NEAR(m.measured_accuracy, acc, 1e-9);
  EXPECT_GE(acc, 100.0 - kBudget) << "uniform w4: " << w4_accuracy;

  // Without labels (an unlabelled TSV) the accuracy budget says what it needs.
  auto again = load_model(dir / "model");
  opt.calib = texts_path;
  try {
    quantize_model(again, opt);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sentence<TAB>label"), std::string::npos) << e.what();
  }
}

TEST(Mixed, NeedsCalibration) {
  auto model = stories();
  QuantizeOptions opt;
  opt.auto_scheme = true;
  EXPECT_THROW(quantize_model(model, opt), Error);
}

}  // namespace
}  // namespace shrink
