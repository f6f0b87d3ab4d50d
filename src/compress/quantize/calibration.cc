// Calibration for static INT8 (include/shrink/compress/calibration.h): calibration sets from text/TSV, activation
// ranges observed through a temporary observing Linear around every slot, the per-layer `auto` choice by W8A8-static
// output error, and W8 weights with observer-chosen clipping.
#include <shrink/compress/calibration.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/parallel.h>
#include <shrink/eval/classification.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>

namespace shrink {

namespace {

// Files above this are read up to it (cut at a line end): calibration needs thousands of tokens, not gigabytes.
constexpr size_t kMaxCalibBytes = size_t{16} << 20;
// `auto` keeps sampled input rows per slot: at most 256, fewer for big models so all samples fit in 256 MiB
// (TinyLlama-1.1B: ~160 rows; a 7B LLaMA: ~56), never fewer than 16.
constexpr int64_t kAutoSampleRows = 256;
constexpr int64_t kAutoSampleMinRows = 16;
constexpr int64_t kAutoSampleBytes = int64_t{256} << 20;

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The special tokens the tokenizer puts around one text: prefix (bos / [CLS]) and suffix ([SEP] / eos).
void special_frame(const Tokenizer& tok, std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  const std::vector<int32_t> frame = tok.encode("", true);
  auto special = [&](int32_t id) {
    return id >= 0 && (id == tok.bos_id() || id == tok.eos_id() || id == tok.cls_id() || id == tok.sep_id());
  };
  size_t end = frame.size();
  while (end > 0 && (frame[end - 1] == tok.sep_id() || frame[end - 1] == tok.eos_id()) && frame[end - 1] >= 0) --end;
  for (size_t i = 0; i < end; ++i)
    if (special(frame[i])) prefix->push_back(frame[i]);
  for (size_t i = end; i < frame.size(); ++i) suffix->push_back(frame[i]);
}

// `samples` of the rows spread evenly over them, each encoded with special tokens and truncated to seq_len (rows
// that give no tokens are passed over); labels (optional, one per row) follow their rows.
CalibSet sample_rows(const std::filesystem::path& path, const std::vector<std::string_view>& rows,
                     const std::vector<int>* labels, const Tokenizer& tok, int samples, int seq_len) {
  const size_t take = std::min(rows.size(), static_cast<size_t>(samples));
  CalibSet set;
  EncodeOptions eo;
  eo.max_length = seq_len;
  for (size_t k = 0; k < take; ++k) {
    const size_t r = k * rows.size() / take;  // spread evenly over the file
    Encoding e = tok.encode_full(rows[r], {}, eo);
    if (e.ids.empty()) continue;
    set.sequences.push_back(std::move(e.ids));
    if (labels) set.labels.push_back((*labels)[r]);
  }
  if (set.sequences.empty())
    fail("calibration file {}: {} line(s) of text gave no tokens; expected readable text in the first column",
         path.string(), rows.size());
  return set;
}

CalibSet read_tsv(const std::filesystem::path& path, const std::string& text, const Tokenizer& tok, int samples,
                  int seq_len) {
  std::vector<std::string_view> rows;
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // CRLF files
    const std::string_view col = line.substr(0, line.find('\t'));
    const bool header = first && (lower(std::string(col)) == "sentence" || lower(std::string(col)) == "text");
    first = false;
    if (header || is_blank(col)) continue;
    rows.push_back(col);
  }
  if (rows.empty())
    fail(
        "calibration file {}: no text in the first column of any line; expected TSV with one sample text per line "
        "(first column), e.g. sentence<TAB>label",
        path.string());
  return sample_rows(path, rows, nullptr, tok, samples, seq_len);
}

}  // namespace

CalibSet read_labeled_calib_set(const std::filesystem::path& path, const Tokenizer& tok, int samples, int seq_len,
                                const std::vector<std::string>& label_names, int num_labels) {
  check(samples >= 1, "calibration: {} samples requested; expected at least 1", samples);
  const LabeledText data = read_labeled_table(path, label_names, num_labels).data;
  const std::vector<std::string_view> rows(data.texts.begin(), data.texts.end());
  return sample_rows(path, rows, &data.labels, tok, samples, seq_len);
}

CalibSet read_calib_set(const std::filesystem::path& path, const Tokenizer& tok, int samples, int seq_len) {
  check(samples >= 1, "calibration: {} samples requested; expected at least 1", samples);
  check(seq_len >= 2, "calibration: sequence length {}; expected at least 2 tokens", seq_len);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail("calibration file {}: not found (or not a regular file); pass a plain-text or TSV file with --calib",
         path.string());
  std::string text = read_text_file(path);
  if (text.size() > kMaxCalibBytes) {
    const size_t cut = text.rfind('\n', kMaxCalibBytes);
    text.resize(cut == std::string::npos ? kMaxCalibBytes : cut + 1);
  }
  if (is_blank(text))
    fail(
        "calibration file {}: is empty ({} bytes, no text); expected plain text with at least {} tokens, or TSV "
        "with one sample per line",
        path.string(), text.size(), seq_len);
  if (lower(path.extension().string()) == ".tsv") return read_tsv(path, text, tok, samples, seq_len);

  std::vector<int32_t> prefix, suffix;
  special_frame(tok, &prefix, &suffix);
  const int64_t body = seq_len - static_cast<int64_t>(prefix.size() + suffix.size());
  check(body >= 1,
        "calibration: sequence length {} leaves no room for text after {} special token(s); use a longer one", seq_len,
        prefix.size() + suffix.size());
  const std::vector<int32_t> ids = tok.encode(text, false);
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n < body)
    fail(
        "calibration file {}: gives {} tokens; one window of {} tokens needs {} (plus {} special). Give a longer "
        "text or a shorter calibration sequence length",
        path.string(), n, seq_len, body, prefix.size() + suffix.size());
  const int64_t windows = std::min<int64_t>(samples, n / body);
  const int64_t stride = n / windows;  // >= body: windows never overlap, spread over the whole text
  CalibSet set;
  for (int64_t k = 0; k < windows; ++k) {
    std::vector<int32_t> seq = prefix;
    seq.insert(seq.end(), ids.begin() + k * stride, ids.begin() + k * stride + body);
    seq.insert(seq.end(), suffix.begin(), suffix.end());
    set.sequences.push_back(std::move(seq));
  }
  return set;
}

namespace {

// What one slot saw: a histogram of every input value, per-channel extremes when asked, and for `auto` a
// reservoir sample of input rows.
struct LayerStats {
  explicit LayerStats(int bins, uint64_t seed) : hist(bins), rng(seed) {}
  Histogram hist;
  ChannelMinMax channels;
  bool per_channel = false;
  int64_t keep_rows = 0;
  int64_t rows_seen = 0;
  std::vector<float> sample;  // rows of `in` values
  std::mt19937_64 rng;
  std::mutex mu;

  void observe(const float* x, int64_t m, int64_t in) {
    std::lock_guard<std::mutex> lock(mu);
    hist.add(x, m * in);
    if (per_channel) channels.add(x, m, in);
    for (int64_t r = 0; r < m && keep_rows > 0; ++r, ++rows_seen) {
      const float* row = x + r * in;
      const int64_t held = static_cast<int64_t>(sample.size()) / in;
      if (held < keep_rows) {
        sample.insert(sample.end(), row, row + in);
      } else {
        const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(rows_seen + 1));
        if (j < keep_rows) std::copy(row, row + in, sample.begin() + j * in);
      }
    }
  }
};

class ObservingLinear final : public Linear {
 public:
  ObservingLinear(std::unique_ptr<Linear> inner, LayerStats* stats) : inner_(std::move(inner)), stats_(stats) {
    in_ = inner_->in_features();
    out_ = inner_->out_features();
  }
  void forward(const float* x, int64_t m, float* y) const override {
    inner_->forward(x, m, y);
    stats_->observe(x, m, in_);
  }
  std::string scheme() const override { return inner_->scheme(); }
  size_t weight_bytes() const override { return inner_->weight_bytes(); }
  const PackedLinear* packed() const override { return inner_->packed(); }
  // forward_rows stays false: fused callers fall back to forward(), where the input is observed once per call.
  std::unique_ptr<Linear> release() { return std::move(inner_); }

 private:
  std::unique_ptr<Linear> inner_;
  LayerStats* stats_;
};

// Wraps every slot for its lifetime; the destructor puts the original implementations back, also on error.
class ObserveScope {
 public:
  ObserveScope(Model& model, const ObserverOptions& opt, bool sample) {
    int64_t row_floats = 0;
    for (const LinearSlot& s : model.linears())
      if (s.impl) row_floats += s.impl->in_features();
    const int64_t keep = std::clamp<int64_t>(kAutoSampleBytes / std::max<int64_t>(1, 4 * row_floats),
                                             kAutoSampleMinRows, kAutoSampleRows);
    uint64_t seed = 1;
    for (LinearSlot& s : model.linears()) {
      if (!s.impl) continue;
      auto st = std::make_unique<LayerStats>(opt.bins, seed++);
      st->per_channel = opt.per_channel;
      st->keep_rows = sample ? keep : 0;
      s.impl = std::make_unique<ObservingLinear>(std::move(s.impl), st.get());
      wrapped_.push_back({&s, std::move(st)});
    }
  }
  ~ObserveScope() {
    for (auto& w : wrapped_) w.slot->impl = static_cast<ObservingLinear*>(w.slot->impl.get())->release();
  }
  ObserveScope(const ObserveScope&) = delete;
  ObserveScope& operator=(const ObserveScope&) = delete;

  struct Wrapped {
    LinearSlot* slot;
    std::unique_ptr<LayerStats> stats;
  };
  std::vector<Wrapped> wrapped_;
};

ActRange range_from(ClipRange r, const std::string& observer) {
  ActRange a;
  a.lo = r.lo;
  a.hi = r.hi;
  kernels::choose_u8_params(r.lo, r.hi, &a.scale, &a.zero_point);
  a.observer = observer;
  return a;
}

// `auto` for one layer: the observer whose W8A8-static output (RTN W8 weights) is closest to the fp32 output on
// the sampled rows. Layers without a dense source weight compare fake-quantized inputs through the layer itself.
ActRange choose_auto(const LinearSlot& slot, const Linear& inner, const LayerStats& st, const ObserverOptions& opt) {
  const int64_t in = inner.in_features(), out = inner.out_features();
  const int64_t rows = static_cast<int64_t>(st.sample.size()) / in;
  std::vector<float> ref(static_cast<size_t>(rows * out)), got(ref.size());
  if (slot.weight.defined()) {
    const Tensor* bias = slot.bias.defined() ? &slot.bias : nullptr;
    make_dense_linear(slot.weight, bias)->forward(st.sample.data(), rows, ref.data());
  } else {
    inner.forward(st.sample.data(), rows, ref.data());
  }
  QuantSpec spec;
  spec.scheme = WeightScheme::W8A8;
  spec.static_act = true;
  spec.act_scale = 1.f;
  PackedLinear base;
  if (slot.weight.defined())
    base = quantize_linear_weights(slot.weight, slot.bias.defined() ? &slot.bias : nullptr, spec);
  ActRange best;
  double best_err = std::numeric_limits<double>::infinity();
  std::vector<float> xq;
  for (const std::string& name : observer_names()) {
    ObserverOptions o = opt;
    o.observer = name;
    ActRange a = range_from(observe_range(st.hist, o, false), name);
    if (slot.weight.defined()) {
      PackedLinear p = base;
      for (auto& [n, t] : p.tensors) {
        if (n == "input_scale") t = Tensor::from_f32({a.scale}, {1});
        if (n == "input_zero_point") {
          t = Tensor::empty(DType::I32, {1});
          t.data<int32_t>()[0] = a.zero_point;
        }
      }
      p.spec.act_scale = a.scale;
      p.spec.act_zero_point = a.zero_point;
      make_packed_linear(std::move(p))->forward(st.sample.data(), rows, got.data());
    } else {
      xq.resize(st.sample.size());
      std::vector<uint8_t> q(static_cast<size_t>(in));
      for (int64_t r = 0; r < rows; ++r) {
        kernels::quantize_row_u8_ref(st.sample.data() + r * in, in, a.scale, a.zero_point, q.data());
        for (int64_t k = 0; k < in; ++k)
          xq[static_cast<size_t>(r * in + k)] = static_cast<float>(q[static_cast<size_t>(k)] - a.zero_point) * a.scale;
      }
      inner.forward(xq.data(), rows, got.data());
    }
    a.output_nmse = kernels::nmse(got.data(), ref.data(), rows * out);
    if (a.output_nmse < best_err) best_err = a.output_nmse, best = a;  // ties keep the earlier (min-max first)
  }
  return best;
}

}  // namespace

void run_calibration_set(Model& model, const CalibSet& set) {
  if (auto* dec = dynamic_cast<DecoderModel*>(&model)) {
    const int64_t vocab = dec->config().vocab_size;
    std::vector<float> logits;
    for (const auto& seq : set.sequences) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(seq.size()), dec->max_context());
      if (n <= 0) continue;
      KvCache cache = dec->new_cache(n);
      logits.resize(static_cast<size_t>(n * vocab));
      dec->forward(cache, seq.data(), n, logits.data(), true);  // all positions: the head sees every row
    }
    return;
  }
  auto* enc = dynamic_cast<EncoderModel*>(&model);
  check(enc != nullptr, "calibration: the model is neither a decoder nor an encoder");
  if (enc->takes_images()) {
    const ModelConfig& c = enc->config();
    const int64_t per = int64_t{c.num_channels} * c.image_size * c.image_size,
                  n = static_cast<int64_t>(set.images.size()) / per;
    check(n > 0 && static_cast<int64_t>(set.images.size()) == n * per,
          "calibration: {} pixel values; {} takes images of {}x{}x{} (pass calibration images, e.g. --calib-images)",
          set.images.size(), c.architecture, c.num_channels, c.image_size, c.image_size);
    constexpr int64_t kBatch = 16;  // no padding in images: batching changes nothing the observers see
    for (int64_t i = 0; i < n; i += kBatch) enc->forward_images(set.images.data() + i * per, std::min(kBatch, n - i));
    return;
  }
  check(!set.sequences.empty(), "calibration: {} reads text; the calibration set holds images",
        enc->config().architecture);
  for (const auto& seq : set.sequences)
    if (!seq.empty()) enc->forward(one_row_batch(seq, enc->config().max_position_embeddings));
}

BatchEncoding one_row_batch(const std::vector<int32_t>& ids, int64_t max_len) {
  const int64_t n =
      max_len > 0 ? std::min<int64_t>(static_cast<int64_t>(ids.size()), max_len) : static_cast<int64_t>(ids.size());
  BatchEncoding b;
  b.batch = 1;
  b.seq = n;
  b.ids.assign(ids.begin(), ids.begin() + n);
  b.type_ids.assign(static_cast<size_t>(n), 0);
  b.attention_mask.assign(static_cast<size_t>(n), 1);
  b.lengths = {static_cast<int32_t>(n)};
  return b;
}

std::map<std::string, ActRange> calibrate_activations(Model& model, const CalibSet& set, const ObserverOptions& opt) {
  check_observer_name(opt.observer);
  check(opt.percentile > 0 && opt.percentile <= 100,
        "calibration: percentile {} is outside (0, 100]; 99.99 is the usual choice", opt.percentile);
  check(!set.empty(), "calibration: the calibration set is empty; read one with read_calib_set (--calib)");
  const bool is_auto = opt.observer == "auto";
  std::map<std::string, ActRange> result;
  ObserveScope scope(model, opt, is_auto);
  run_calibration_set(model, set);
  for (auto& w : scope.wrapped_) {
    const LayerStats& st = *w.stats;
    if (st.hist.nonfinite() > 0)
      fail(
          "calibration: layer {} saw {} non-finite input values (NaN/Inf); the model overflows on the calibration "
          "text. Check the model's weights or use other calibration text",
          w.slot->name, st.hist.nonfinite());
    if (st.hist.total() == 0) continue;  // never ran (e.g. an unused head): the caller keeps it dynamic or fp32
    const auto& inner = *static_cast<const ObservingLinear*>(w.slot->impl.get());
    ActRange a =
        is_auto ? choose_auto(*w.slot, inner, st, opt) : range_from(observe_range(st.hist, opt, false), opt.observer);
    if (opt.per_channel) {
      a.channel_lo = st.channels.lo;
      a.channel_hi = st.channels.hi;
    }
    result.emplace(w.slot->name, std::move(a));
  }
  return result;
}

namespace {

// Rows of in values whose observer-chosen |w| threshold is `t`: codes and scale as quantize_row_s8_ref with
// amax replaced by t (values beyond t saturate at +-127).
void quantize_row_s8_clipped(const float* w, int64_t n, float t, int8_t* q, float* scale) {
  const float s = t > 0.f ? t / 127.f : 1.f;
  const float inv = 1.f / s;
  for (int64_t i = 0; i < n; ++i)
    q[i] = static_cast<int8_t>(std::clamp(static_cast<int32_t>(std::lround(w[i] * inv)), -127, 127));
  *scale = s;
}

double s8_error(const float* w, int64_t n, float t) {
  const float s = t > 0.f ? t / 127.f : 1.f;
  const float inv = 1.f / s;
  double e = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float d = static_cast<float>(std::clamp(static_cast<int32_t>(std::lround(w[i] * inv)), -127, 127)) * s - w[i];
    e += static_cast<double>(d) * d;
  }
  return e;
}

// Threshold for a block of weights: the observer's, or for `auto` the one with the lowest squared error.
float weight_threshold(const float* w, int64_t n, const ObserverOptions& opt, int bins) {
  Histogram h(bins);
  h.add(w, n);
  if (opt.observer != "auto") return observe_range(h, opt, true).hi;
  float best_t = 0.f;
  double best = std::numeric_limits<double>::infinity();
  for (const std::string& name : observer_names()) {
    ObserverOptions o = opt;
    o.observer = name;
    const float t = observe_range(h, o, true).hi;
    const double e = s8_error(w, n, t);
    if (e < best) best = e, best_t = t;
  }
  return best_t;
}

}  // namespace

PackedLinear quantize_w8_with_observer(const Tensor& weight, const Tensor* bias, const QuantSpec& spec,
                                       const ObserverOptions& opt) {
  check_observer_name(opt.observer);
  check(spec.scheme == WeightScheme::W8A16 || spec.scheme == WeightScheme::W8A8,
        "quantize with observer: scheme {} has no W8 weights; expected w8a16, w8a8 or w8a8-static", spec.name());
  PackedLinear p = quantize_linear_weights(weight, bias, spec);  // layout, bias and static input parameters
  if (opt.observer == "minmax" && opt.per_channel) return p;     // RTN is exactly per-row min-max
  const Tensor w = weight.dtype() == DType::F32 ? weight : weight.to_f32();
  const float* wf = w.data<float>();
  const int64_t out = p.out, in = p.in;
  Tensor q = Tensor::empty(DType::I8, {out, in});
  Tensor s = Tensor::empty(DType::F32, {out, 1});
  if (opt.per_channel) {
    // A row holds `in` values: histograms much finer than that only cost time (KL is quadratic in bins).
    const int bins = std::max(256, std::min(opt.bins, static_cast<int>((in + 1) / 2 * 2)));
    parallel_for(out, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float t = weight_threshold(wf + r * in, in, opt, bins);
        quantize_row_s8_clipped(wf + r * in, in, t, q.data<int8_t>() + r * in, s.data<float>() + r);
      }
    });
  } else {
    const float t = weight_threshold(wf, out * in, opt, opt.bins);
    parallel_for(out, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        quantize_row_s8_clipped(wf + r * in, in, t, q.data<int8_t>() + r * in, s.data<float>() + r);
    });
  }
  for (auto& [n, t] : p.tensors) {
    if (n == "weight") t = q;
    if (n == "weight_scale") t = s;
  }
  return p;
}

}  // namespace shrink
