// Calibration: read_calib_set (windows, TSV, error messages), calibrate_activations against ranges recorded by the
// test's own Linear wrapper (decoder and encoder), slots restored after errors, and static W8A8 quality on
// stories260K (calibrated on the first half of tiny Shakespeare, top-1 agreement with fp32 on the second half).
#include <gtest/gtest.h>
#include <shrink/compress/calibration.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/timer.h>
#include <shrink/models/synth.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;
using testing::temp_dir;
using testing::write_bytes;

std::unique_ptr<Model> load_stories() {
  LoadOptions opt;
  opt.tokenizer = fixture("stories260K/tok512.bin");
  return load_model(fixture("stories260K/stories260K.bin"), opt);
}

std::string shakespeare() {
  return read_text_file(fixture("text/tinyshakespeare.txt"));
}

// The first half of tiny Shakespeare (cut at a line end) for calibration, the rest for evaluation.
size_t half_point(const std::string& text) {
  return text.find('\n', text.size() / 2) + 1;
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(CalibSet, ErrorsNameTheFileWhatWasFoundAndWhatToDo) {
  auto model = load_stories();
  const Tokenizer& tok = model->require_tokenizer();
  const auto dir = temp_dir("calib");
  expect_error([&] { read_calib_set(dir / "nope.txt", tok, 4, 32); }, {"nope.txt", "not found", "--calib"});
  write_bytes(dir / "empty.txt", " \n\n");
  expect_error([&] { read_calib_set(dir / "empty.txt", tok, 4, 32); }, {"empty.txt", "empty", "3 bytes"});
  write_bytes(dir / "short.txt", "Once upon a time");
  const size_t n = tok.encode("Once upon a time", false).size();
  expect_error([&] { read_calib_set(dir / "short.txt", tok, 4, 32); },
               {"short.txt", "gives " + std::to_string(n) + " tokens", "longer text"});
  write_bytes(dir / "blank.tsv", "sentence\tlabel\n\t1\n");
  expect_error([&] { read_calib_set(dir / "blank.tsv", tok, 4, 32); }, {"blank.tsv", "first column"});
  EXPECT_THROW(read_calib_set(dir / "short.txt", tok, 0, 32), Error);
}

TEST(CalibSet, PlainTextWindowsAreSpreadSlicesOfTheTokenStream) {
  auto model = load_stories();
  const Tokenizer& tok = model->require_tokenizer();
  const std::string text = shakespeare().substr(0, 20000);
  const auto dir = temp_dir("calib");
  write_bytes(dir / "a.txt", text);
  const std::vector<int32_t> ids = tok.encode(text, false);
  const int64_t body = 63;  // 64 minus the bos the llama2.c tokenizer puts first
  const CalibSet set = read_calib_set(dir / "a.txt", tok, 8, 64);
  ASSERT_EQ(set.sequences.size(), 8u);
  const size_t stride = ids.size() / 8;
  for (size_t k = 0; k < 8; ++k) {
    const auto& s = set.sequences[k];
    ASSERT_EQ(s.size(), 64u);
    EXPECT_EQ(s[0], 1);  // llama2.c bos
    EXPECT_TRUE(std::equal(s.begin() + 1, s.end(), ids.begin() + static_cast<int64_t>(k * stride)));
  }
  // More windows asked than the text holds: as many whole windows as fit.
  const CalibSet many = read_calib_set(dir / "a.txt", tok, 100000, 64);
  EXPECT_EQ(static_cast<int64_t>(many.sequences.size()), static_cast<int64_t>(ids.size()) / body);
}

TEST(CalibSet, TsvOneSamplePerLineWithSpecialTokens) {
  auto tok = load_tokenizer(fixture("tokenizers/bert-base-uncased/tokenizer.json"));
  const auto dir = temp_dir("calib");
  write_bytes(dir / "s.tsv",
              "sentence\tlabel\nhide new secretions from the parental units \t0\n\ncontains no wit , "
              "only labored gags \t0\nthat loves its characters and communicates something rather "
              "beautiful about human nature \t1\n");
  const CalibSet set = read_calib_set(dir / "s.tsv", *tok, 10, 8);
  ASSERT_EQ(set.sequences.size(), 3u);  // header and the blank line skipped
  for (const auto& s : set.sequences) {
    EXPECT_LE(s.size(), 8u);
    EXPECT_EQ(s.front(), tok->cls_id());
    EXPECT_EQ(s.back(), tok->sep_id());
  }
  // "hide new secretions from the parental units" by HF BertTokenizer: [CLS] hide new secret ##ions from the [SEP].
  EXPECT_EQ(set.sequences[0], (std::vector<int32_t>{101, 5342, 2047, 3595, 8496, 2013, 1996, 102}));
  // CRLF line ends (the llama2.c tokenizer would keep a '\r' as a byte token) and a single-column file.
  auto stories = load_stories();
  const Tokenizer& st = stories->require_tokenizer();
  write_bytes(dir / "crlf.tsv", "text\r\nOnce upon a time\r\n");
  EXPECT_EQ(read_calib_set(dir / "crlf.tsv", st, 10, 64).sequences,
            (std::vector<std::vector<int32_t>>{st.encode("Once upon a time", true)}));
  const CalibSet two = read_calib_set(fixture("sst2/train.tsv"), *tok, 2, 128);
  EXPECT_EQ(two.sequences.size(), 2u);
}

// The test's own recording wrapper: min/max of every input a slot sees.
class Recorder final : public Linear {
 public:
  explicit Recorder(Linear* inner) : inner_(inner) {
    in_ = inner->in_features();
    out_ = inner->out_features();
  }
  void forward(const float* x, int64_t m, float* y) const override {
    inner_->forward(x, m, y);
    for (int64_t i = 0; i < m * in_; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  }
  std::string scheme() const override { return inner_->scheme(); }
  size_t weight_bytes() const override { return inner_->weight_bytes(); }
  mutable float lo = std::numeric_limits<float>::infinity(), hi = -std::numeric_limits<float>::infinity();

 private:
  Linear* inner_;
};

// Runs `run` with every slot wrapped in a Recorder; returns name -> {lo, hi}.
std::map<std::string, std::pair<float, float>> record_ranges(Model& model, const std::function<void()>& run) {
  std::vector<std::unique_ptr<Linear>> saved;
  for (auto& s : model.linears()) {
    saved.push_back(std::move(s.impl));
    s.impl = std::make_unique<Recorder>(saved.back().get());
  }
  run();
  std::map<std::string, std::pair<float, float>> out;
  size_t i = 0;
  for (auto& s : model.linears()) {
    auto* r = static_cast<Recorder*>(s.impl.get());
    out[s.name] = {r->lo, r->hi};
    s.impl = std::move(saved[i++]);
  }
  return out;
}

TEST(Calibrate, DecoderMinMaxEqualsRecordedRangesAndSlotsAreRestored) {
  auto model = load_stories();
  auto& dec = dynamic_cast<DecoderModel&>(*model);
  CalibSet set;
  const auto ids = model->require_tokenizer().encode("Once upon a time, there was a little girl named Lily.", true);
  set.sequences = {ids, std::vector<int32_t>(ids.begin(), ids.begin() + 5)};
  const auto want = record_ranges(*model, [&] {
    std::vector<float> logits(ids.size() * 512);
    for (const auto& s : set.sequences) {
      KvCache c = dec.new_cache(static_cast<int64_t>(s.size()));
      dec.forward(c, s.data(), static_cast<int64_t>(s.size()), logits.data(), true);
    }
  });
  std::vector<const Linear*> before;
  for (auto& s : model->linears()) before.push_back(s.impl.get());
  ObserverOptions opt;
  opt.per_channel = true;
  const auto got = calibrate_activations(*model, set, opt);
  ASSERT_EQ(got.size(), model->linears().size());
  for (const auto& [name, r] : want) {
    SCOPED_TRACE(name);
    const ActRange& a = got.at(name);
    EXPECT_EQ(a.lo, r.first);
    EXPECT_EQ(a.hi, r.second);
    EXPECT_EQ(a.observer, "minmax");
    // u8 parameters of [lo, hi] widened to include 0 (quant.h): scale = (hi - lo) / 255, zp = round(-lo / scale).
    const float lo = std::min(r.first, 0.f), hi = std::max(r.second, 0.f);
    EXPECT_FLOAT_EQ(a.scale, (hi - lo) / 255.f);
    EXPECT_EQ(a.zero_point, static_cast<int32_t>(std::lround(-lo / a.scale)));
    ASSERT_FALSE(a.channel_lo.empty());
    EXPECT_EQ(*std::min_element(a.channel_lo.begin(), a.channel_lo.end()), r.first);
    EXPECT_EQ(*std::max_element(a.channel_hi.begin(), a.channel_hi.end()), r.second);
  }
  size_t i = 0;
  for (auto& s : model->linears()) EXPECT_EQ(s.impl.get(), before[i++]) << s.name;
  // A failing forward (token outside the vocabulary) still restores every slot.
  CalibSet bad;
  bad.sequences = {{1, 9999}};
  EXPECT_THROW(calibrate_activations(*model, bad, opt), Error);
  i = 0;
  for (auto& s : model->linears()) EXPECT_EQ(s.impl.get(), before[i++]) << s.name;
  EXPECT_THROW(calibrate_activations(*model, CalibSet{}, opt), Error);
  opt.observer = "entropy";
  EXPECT_THROW(calibrate_activations(*model, set, opt), Error);
}

TEST(Calibrate, EncoderRunsUnpaddedSequences) {
  const auto dir = temp_dir("calib-bert");
  synth_model(find_synth_preset("bert-tiny"), dir, 7);
  auto model = load_model(dir);
  auto& enc = dynamic_cast<EncoderModel&>(*model);
  CalibSet set;
  set.sequences = {{2, 10, 11, 12, 3}, {2, 20, 3}};
  const auto want = record_ranges(*model, [&] {
    for (const auto& s : set.sequences) {
      BatchEncoding b;
      b.batch = 1;
      b.seq = static_cast<int64_t>(s.size());
      b.ids = s;
      b.type_ids.assign(s.size(), 0);
      b.attention_mask.assign(s.size(), 1);
      b.lengths = {static_cast<int32_t>(s.size())};
      enc.forward(b);
    }
  });
  ObserverOptions opt;
  opt.observer = "auto";
  const auto got = calibrate_activations(*model, set, opt);
  for (const auto& [name, r] : want) {
    SCOPED_TRACE(name);
    if (!std::isfinite(r.first)) {  // a slot the forward pass never ran is left out
      EXPECT_EQ(got.count(name), 0u);
      continue;
    }
    const ActRange& a = got.at(name);
    EXPECT_GE(a.lo, r.first);  // every observer's range lies inside the data's
    EXPECT_LE(a.hi, r.second);
    EXPECT_GT(a.scale, 0.f);
    EXPECT_GE(a.output_nmse, 0.0);
    EXPECT_LT(a.output_nmse, 1e-2);  // 8-bit: about 40 dB at worst
    EXPECT_NE(a.observer, "auto");
  }
}

// Top-1 agreement of a model's next-token predictions with fp32 ones over the evaluation windows.
std::vector<int32_t> top1(DecoderModel& dec, const std::vector<std::vector<int32_t>>& windows) {
  const int64_t vocab = dec.config().vocab_size;
  std::vector<int32_t> top;
  for (const auto& ids : windows) {
    const int64_t n = static_cast<int64_t>(ids.size());
    std::vector<float> logits(static_cast<size_t>(n * vocab));
    KvCache c = dec.new_cache(n);
    dec.forward(c, ids.data(), n, logits.data(), true);
    for (int64_t i = 0; i < n; ++i) {
      const float* l = logits.data() + i * vocab;
      top.push_back(static_cast<int32_t>(std::max_element(l, l + vocab) - l));
    }
  }
  return top;
}

double agreement(DecoderModel& dec, const std::vector<std::vector<int32_t>>& windows,
                 const std::vector<int32_t>& base_top) {
  const std::vector<int32_t> got = top1(dec, windows);
  int64_t same = 0;
  for (size_t i = 0; i < got.size(); ++i) same += got[i] == base_top[i];
  return static_cast<double>(same) / static_cast<double>(got.size());
}

// Every slot replaced by a quantized layer (spec per slot), restored after `fn`.
template <typename Fn>
double with_quantized(Model& model, const std::function<QuantSpec(const LinearSlot&)>& spec_of, Fn&& fn) {
  std::vector<std::unique_ptr<Linear>> saved;
  for (auto& s : model.linears()) {
    saved.push_back(std::move(s.impl));
    s.impl = make_quantized_linear(s.weight, s.bias.defined() ? &s.bias : nullptr, spec_of(s));
  }
  const double r = fn();
  size_t i = 0;
  for (auto& s : model.linears()) s.impl = std::move(saved[i++]);
  return r;
}

TEST(Calibrate, StaticW8A8QualityOnStories260K) {
  auto model = load_stories();
  auto& dec = dynamic_cast<DecoderModel&>(*model);
  const Tokenizer& tok = model->require_tokenizer();
  const std::string text = shakespeare();
  const size_t half = half_point(text);
  const auto dir = temp_dir("calib");
  write_bytes(dir / "first_half.txt", text.substr(0, half));
  Timer timer;
  const CalibSet set = read_calib_set(dir / "first_half.txt", tok, 32, 128);
  const double read_ms = timer.elapsed_ms();
  ASSERT_EQ(set.sequences.size(), 32u);
  // Evaluation: two 512-token windows (the model's context) from the second half: 1,024 predictions.
  const std::vector<int32_t> second = tok.encode(text.substr(half, 12000), true);
  ASSERT_GE(second.size(), 1024u);
  const std::vector<std::vector<int32_t>> eval = {{second.begin(), second.begin() + 512},
                                                  {second.begin() + 512, second.begin() + 1024}};
  const std::vector<int32_t> base_top = top1(dec, eval);
  auto scheme = [](WeightScheme w) {
    return [w](const LinearSlot&) {
      QuantSpec s;
      s.scheme = w;
      return s;
    };
  };
  const double dyn = with_quantized(*model, scheme(WeightScheme::W8A8), [&] { return agreement(dec, eval, base_top); });
  const double w8a16 =
      with_quantized(*model, scheme(WeightScheme::W8A16), [&] { return agreement(dec, eval, base_top); });
  std::printf("stories260K top-1 agreement with fp32 over 1024 tokens of tiny Shakespeare (second half):\n");
  std::printf("  w8a16 RTN           %.4f\n  w8a8 dynamic        %.4f\n", w8a16, dyn);
  std::map<std::string, double> agree;
  for (const char* name : {"minmax", "percentile", "mse", "kl", "auto"}) {
    ObserverOptions opt;
    opt.observer = name;
    Timer t;
    const auto ranges = calibrate_activations(*model, set, opt);
    const double calib_ms = t.elapsed_ms();
    ASSERT_EQ(ranges.size(), model->linears().size());
    agree[name] = with_quantized(
        *model,
        [&](const LinearSlot& s) {
          QuantSpec q;
          q.scheme = WeightScheme::W8A8;
          q.static_act = true;
          q.act_scale = ranges.at(s.name).scale;
          q.act_zero_point = ranges.at(s.name).zero_point;
          return q;
        },
        [&] { return agreement(dec, eval, base_top); });
    std::string picks;
    if (opt.observer == "auto") {
      std::map<std::string, int> count;
      for (const auto& [n, r] : ranges) ++count[r.observer];
      for (const auto& [n, c] : count) picks += " " + n + "=" + std::to_string(c);
    }
    std::printf("  w8a8-static %-10s %.4f  (calibration %.0f ms)%s\n", name, agree[name], calib_ms, picks.c_str());
  }
  std::printf("  (calibration set: 32 x 128 tokens, read in %.0f ms)\n", read_ms);
  EXPECT_GE(agree["auto"], agree["minmax"]);
  // Bound from the measured values (docs/calibration.md: 0.88-0.90 for every observer with the reference
  // Linear), a few points below them. The weight-only and dynamic figures are printed for comparison only.
  for (const auto& [name, a] : agree) EXPECT_GE(a, 0.85) << name;
}

}  // namespace
}  // namespace shrink
