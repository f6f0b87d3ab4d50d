// Sequential GPTQ calibration (include/shrink/compress/sequential.h): Hessian-capturing Linear decorators, the
// block-by-block decoder loop over held hidden states, and the per-block full-forward fallback for encoders.
#include <malloc.h>
#include <shrink/compress/sequential.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/timer.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <regex>

namespace shrink {

namespace {

// Thrown by a capturing Linear once it has seen its input, to end a block pass whose remaining work is not needed.
struct StopPass {};

// Feeds every input it sees into a sink; with `stop`, throws StopPass instead of computing the output.
// forward_rows stays false: fused callers then call forward() on their own thread, outside any parallel region,
// so the throw unwinds only through the model's plain code.
class CapturingLinear final : public Linear {
 public:
  CapturingLinear(std::unique_ptr<Linear> inner, RowSink sink, bool stop)
      : inner_(std::move(inner)), sink_(std::move(sink)), stop_(stop) {
    in_ = inner_->in_features();
    out_ = inner_->out_features();
  }
  void forward(const float* x, int64_t m, float* y) const override {
    sink_(x, m);
    if (stop_) throw StopPass{};
    inner_->forward(x, m, y);
  }
  std::string scheme() const override { return inner_->scheme(); }
  size_t weight_bytes() const override { return inner_->weight_bytes(); }
  const PackedLinear* packed() const override { return inner_->packed(); }
  std::unique_ptr<Linear> release() { return std::move(inner_); }

 private:
  std::unique_ptr<Linear> inner_;
  RowSink sink_;
  bool stop_;
};

// Wraps slots for its lifetime; puts the original implementations back on destruction (also on error).
class CaptureScope {
 public:
  CaptureScope() = default;
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;
  ~CaptureScope() { restore(); }
  void wrap(LinearSlot* s, RowSink sink, bool stop) {
    s->impl = std::make_unique<CapturingLinear>(std::move(s->impl), std::move(sink), stop);
    slots_.push_back(s);
  }
  // A Hessian fed by the slot's inputs, owned by the scope.
  HessianAccumulator* wrap(LinearSlot* s, bool stop) {
    accs_.push_back(std::make_unique<HessianAccumulator>(s->impl->in_features()));
    HessianAccumulator* acc = accs_.back().get();
    wrap(
        s, [acc](const float* x, int64_t m) { acc->add(x, m); }, stop);
    return acc;
  }
  void restore() {
    for (LinearSlot* s : slots_) s->impl = static_cast<CapturingLinear*>(s->impl.get())->release();
    slots_.clear();
  }

 private:
  std::vector<LinearSlot*> slots_;
  std::vector<std::unique_ptr<HessianAccumulator>> accs_;
};

void quantize_slot(LinearSlot* s, const HessianAccumulator& acc, const QuantSpec& spec, const GptqOptions& opt,
                   GptqReport* rep) {
  check(acc.rows() > 0,
        "GPTQ: layer '{}' saw no calibration input (the calibration set never reached it); --skip it or use "
        "--method rtn",
        s->name);
  check(s->weight.defined() && s->weight.numel() > 0,
        "GPTQ: layer '{}' has no dense source weight (loaded packed); quantize from the original model", s->name);
  GptqStats st;
  const Tensor* bias = s->bias.defined() && s->bias.numel() > 0 ? &s->bias : nullptr;
  s->impl = make_packed_linear(gptq_quantize(s->weight, bias, acc.hessian(), spec, opt, &st));
  // The source weight is not read again by this pass: its mapped pages go (they reload if a saver copies it).
  drop_mapped_pages(s->weight.raw(), s->weight.nbytes());
  rep->layers.push_back({s->name, acc.rows(), st.dead_columns, st.damp_used, st.time_ms});
}

// A finished block holds no memory it can rebuild: dense linears (left dense by the pass, or not yet replaced) drop
// their packed copies and every source weight its mapped pages, so RSS stays about one block however large the
// model (docs/gptq.md, "Bounded memory"). What the slots compute does not change: both come back on the next use.
// The freed heap goes back to the system too: glibc keeps freed chunks below its mmap threshold, and the block's
// temporaries (packed copies, GPTQ work) freed between the kept quantized tensors would otherwise stay resident
// (tests/unit/test_bounded_calibration.cc, 4.7 MB blocks: the peak grew 1.2 MB per block without the trim, 0.7 MB
// with it, 0.55 MB of which are the kept W4 layers).
void release_block(const std::vector<std::vector<LinearSlot*>>& groups) {
  for (const auto& group : groups)
    for (LinearSlot* s : group) {
      s->impl->release_packed();
      drop_mapped_pages(s->weight.raw(), s->weight.nbytes());
    }
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

std::vector<int64_t> lengths_of(const CalibSet& set, int64_t max_len) {
  std::vector<int64_t> len;
  for (const auto& s : set.sequences) {
    const int64_t n =
        max_len > 0 ? std::min<int64_t>(static_cast<int64_t>(s.size()), max_len) : static_cast<int64_t>(s.size());
    if (n > 0) len.push_back(n);
  }
  return len;
}

// One capture step of a block: `forward` runs with the scope's captures in place (its time counted as the block's
// forward time), the original slots go back, then `quantize` runs on what was captured (counted as GPTQ time).
void capture_then_quantize(GptqBlockReport& br, CaptureScope& scope, const std::function<void()>& forward,
                           const std::function<void()>& quantize) {
  Timer ft;
  forward();
  br.forward_ms += ft.elapsed_ms();
  scope.restore();
  Timer gt;
  quantize();
  br.gptq_ms += gt.elapsed_ms();
}

// Closes a block's report: its whole time since `block_timer` started and the process's peak RSS so far.
void finish_block(GptqBlockReport br, const Timer& block_timer, GptqReport& rep) {
  br.time_ms = block_timer.elapsed_ms();
  br.peak_rss_bytes = peak_rss_bytes();
  rep.blocks.push_back(br);
}

}  // namespace

SlotSwap::SlotSwap(std::vector<LinearSlot*> slots) : slots_(std::move(slots)) {
  for (LinearSlot* s : slots_) originals_.push_back(std::move(s->impl));
  for (size_t i = 0; i < slots_.size(); ++i) slots_[i]->impl = make_dense_linear(slots_[i]->weight, bias(i));
}

SlotSwap::~SlotSwap() {
  for (size_t i = 0; i < slots_.size(); ++i) slots_[i]->impl = std::move(originals_[i]);
}

void SlotSwap::set(size_t i, const QuantSpec& spec) {
  LinearSlot* s = slots_[i];
  s->impl = spec.scheme == WeightScheme::F32 ? make_dense_linear(s->weight, bias(i))
                                             : make_quantized_linear(s->weight, bias(i), spec);
}

void SlotSwap::set_weight(size_t i, const Tensor& weight) {
  slots_[i]->impl = make_dense_linear(weight, bias(i));
}

const Tensor* SlotSwap::bias(size_t i) const {
  const LinearSlot* s = slots_[i];
  return s->bias.defined() && s->bias.numel() > 0 ? &s->bias : nullptr;
}

GptqReport walk_decoder_blocks(DecoderModel& model, const CalibSet& set, const GroupVisitor& visit) {
  Timer total;
  GptqReport rep;
  const int64_t d = model.config().hidden_size;
  std::vector<const std::vector<int32_t>*> seqs;
  for (const auto& s : set.sequences)
    if (!s.empty()) seqs.push_back(&s);
  const std::vector<int64_t> len = lengths_of(set, model.max_context());
  check(!len.empty(), "calibration: the calibration set holds no tokens; pass --calib FILE with text the model sees");
  std::vector<int64_t> off(len.size() + 1, 0);
  for (size_t i = 0; i < len.size(); ++i) off[i + 1] = off[i] + len[i];
  rep.calib_rows = off.back();
  // The one block input held for the whole set; passes work on a copy of one sequence.
  std::vector<float> hidden(static_cast<size_t>(rep.calib_rows * d));
  rep.activation_bytes = hidden.size() * sizeof(float);
  const int64_t longest = *std::max_element(len.begin(), len.end());
  std::vector<float> work(static_cast<size_t>(longest * d));
  KvCache cache = model.new_cache(longest, KvCacheType::F32);
  for (size_t s = 0; s < len.size(); ++s) model.embed(seqs[s]->data(), len[s], 0, hidden.data() + off[s] * d);

  // Block i over every sequence; `in_place` advances hidden, otherwise the pass works on a copy (captures).
  auto pass = [&](int block, bool in_place) {
    for (size_t s = 0; s < len.size(); ++s) {
      float* h = hidden.data() + off[s] * d;
      if (!in_place)
        h = static_cast<float*>(std::memcpy(work.data(), h, static_cast<size_t>(len[s] * d) * sizeof(float)));
      cache.reset();
      try {
        model.run_block(block, cache, h, len[s]);
      } catch (const StopPass&) {
      }
    }
  };

  // Block `probe_block` over the first sequences' held inputs, into out.
  int probe_block = 0;
  const BlockProbe probe = [&](int64_t max_rows, std::vector<float>* out) {
    size_t n = 0;
    while (n < len.size() && (n == 0 || off[n + 1] <= max_rows)) ++n;
    out->assign(hidden.begin(), hidden.begin() + off[n] * d);
    for (size_t s = 0; s < n; ++s) {
      cache.reset();
      model.run_block(probe_block, cache, out->data() + off[s] * d, len[s]);
    }
  };

  for (int b = 0; b < model.num_blocks(); ++b) {
    Timer bt;
    probe_block = b;
    GptqBlockReport br;
    br.block = b;
    for (const std::vector<LinearSlot*>& group : model.block_linears(b)) {
      RowSink sink = visit.capture(b, group);
      if (!sink) continue;
      CaptureScope scope;
      // The group's linears read one input: captured by the first of them.
      scope.wrap(group.front(), std::move(sink), true);
      capture_then_quantize(
          br, scope, [&] { pass(b, false); },
          [&] {
            if (visit.captured) visit.captured(b, group, probe);
          });
    }
    Timer ft;
    pass(b, true);  // the (quantized) block gives the next block its input
    br.forward_ms += ft.elapsed_ms();
    release_block(model.block_linears(b));
    finish_block(br, bt, rep);
  }

  // lm_head from the final hidden states.
  if (LinearSlot* head = model.find_linear("lm_head")) {
    const std::vector<LinearSlot*> group{head};
    if (RowSink sink = visit.capture(-1, group)) {
      Timer bt;
      GptqBlockReport br;
      CaptureScope scope;
      scope.wrap(head, std::move(sink), true);
      std::vector<float> logits(static_cast<size_t>(longest * model.config().vocab_size));
      capture_then_quantize(
          br, scope,
          [&] {
            for (size_t s = 0; s < len.size(); ++s) {
              try {
                model.head(hidden.data() + off[s] * d, len[s], logits.data());
              } catch (const StopPass&) {
              }
            }
          },
          [&] {
            if (visit.captured) visit.captured(-1, group, BlockProbe{});
          });
      finish_block(br, bt, rep);
    }
  }
  rep.time_ms = total.elapsed_ms();
  return rep;
}

namespace {

GptqReport gptq_decoder(DecoderModel& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                        const GptqOptions& opt) {
  std::vector<GptqLayerReport> layers;
  std::unique_ptr<HessianAccumulator> acc;
  GroupVisitor visit;
  visit.capture = [&](int /*block*/, const std::vector<LinearSlot*>& group) -> RowSink {
    if (std::none_of(group.begin(), group.end(), [&](const LinearSlot* s) { return plan.count(s->name) != 0; }))
      return {};
    // The group's linears read one input: one Hessian.
    acc = std::make_unique<HessianAccumulator>(group.front()->impl->in_features());
    return [a = acc.get()](const float* x, int64_t m) { a->add(x, m); };
  };
  visit.captured = [&](int /*block*/, const std::vector<LinearSlot*>& group, const BlockProbe& /*probe*/) {
    GptqReport r;
    for (LinearSlot* s : group)
      if (plan.count(s->name)) quantize_slot(s, *acc, plan.at(s->name), opt, &r);
    layers.insert(layers.end(), r.layers.begin(), r.layers.end());
  };
  GptqReport rep = walk_decoder_blocks(model, set, visit);
  rep.layers = std::move(layers);
  // Every planned slot must have been reached (a name outside the block lists would be silently left dense).
  for (const auto& entry : plan) {
    const std::string& name = entry.first;  // (clang 14 cannot capture a structured binding)
    const bool done = std::any_of(rep.layers.begin(), rep.layers.end(), [&](const auto& l) { return l.name == name; });
    check(done, "GPTQ: layer '{}' is not part of any block of this {} model; --skip it or use --method rtn", name,
          model.config().architecture);
  }
  return rep;
}

// Encoder linears that read the attention input together (BERT attention.self.{query,key,value}, DistilBERT
// attention.{q,k,v}_lin).
bool reads_attention_input(const std::string& name) {
  static const std::regex re(R"(attention\.(self\.(query|key|value)|[qkv]_lin)$)");
  return std::regex_search(name, re);
}

GptqReport gptq_by_forward(EncoderModel& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                           const GptqOptions& opt) {
  GptqReport layers;
  std::map<std::string, std::unique_ptr<HessianAccumulator>> accs;  // by the group's first slot
  GroupVisitor visit;
  visit.capture = [&](int /*layer*/, const std::vector<LinearSlot*>& group) -> RowSink {
    if (std::none_of(group.begin(), group.end(), [&](const LinearSlot* s) { return plan.count(s->name) != 0; }))
      return {};
    auto& acc = accs[group.front()->name];
    acc = std::make_unique<HessianAccumulator>(group.front()->impl->in_features());
    return [a = acc.get()](const float* x, int64_t m) { a->add(x, m); };
  };
  visit.captured = [&](int /*layer*/, const std::vector<LinearSlot*>& group, const BlockProbe& /*probe*/) {
    const auto it = accs.find(group.front()->name);
    for (LinearSlot* s : group)
      if (plan.count(s->name)) quantize_slot(s, *it->second, plan.at(s->name), opt, &layers);
    accs.erase(it);
  };
  GptqReport rep = walk_encoder_layers(model, set, visit);
  rep.layers = std::move(layers.layers);
  return rep;
}

}  // namespace

GptqReport walk_encoder_layers(EncoderModel& model, const CalibSet& set, const GroupVisitor& visit) {
  Timer total;
  GptqReport rep;
  for (const int64_t n : lengths_of(set, model.config().max_position_embeddings)) rep.calib_rows += n;
  check(rep.calib_rows > 0,
        "calibration: the calibration set holds no tokens; pass --calib FILE with text the model sees");
  // Layers in model order, each a list of groups; slots without a layer index last (layer -1).
  const std::regex layer_re(R"(\.(\d+)\.)");
  std::vector<std::pair<int, std::vector<std::vector<LinearSlot*>>>> layers;
  std::vector<std::vector<LinearSlot*>> tail;
  for (LinearSlot& s : model.linears()) {
    std::smatch m;
    std::vector<std::vector<LinearSlot*>>* groups = &tail;
    if (std::regex_search(s.name, m, layer_re)) {
      const int layer = std::stoi(m[1].str());
      auto it = std::find_if(layers.begin(), layers.end(), [&](const auto& l) { return l.first == layer; });
      if (it == layers.end()) {
        layers.push_back({layer, {}});
        it = layers.end() - 1;
      }
      groups = &it->second;
    }
    if (reads_attention_input(s.name) && !groups->empty() && reads_attention_input(groups->back().front()->name))
      groups->back().push_back(&s);
    else
      groups->push_back({&s});
  }
  if (!tail.empty()) layers.push_back({-1, std::move(tail)});
  for (auto& [layer, groups] : layers) {
    Timer bt;
    GptqBlockReport br;
    br.block = layer;
    CaptureScope scope;
    std::vector<const std::vector<LinearSlot*>*> captured;
    for (const auto& group : groups)
      if (RowSink sink = visit.capture(layer, group)) {
        scope.wrap(group.front(), std::move(sink), false);
        captured.push_back(&group);
      }
    if (captured.empty()) continue;
    capture_then_quantize(
        br, scope, [&] { run_calibration_set(model, set); },
        [&] {
          if (visit.captured)
            for (const auto* group : captured) visit.captured(layer, *group, BlockProbe{});
        });
    finish_block(br, bt, rep);
  }
  rep.time_ms = total.elapsed_ms();
  return rep;
}

GptqReport gptq_model(Model& model, const CalibSet& set, const std::map<std::string, QuantSpec>& plan,
                      const GptqOptions& opt) {
  check(!set.sequences.empty(), "GPTQ: the calibration set is empty; pass --calib FILE with text the model sees");
  for (const auto& [name, spec] : plan)
    check(model.find_linear(name) != nullptr, "GPTQ: no layer '{}' in {}", name, model.source().string());
  if (plan.empty()) return {};
  if (auto* dec = dynamic_cast<DecoderModel*>(&model)) return gptq_decoder(*dec, set, plan, opt);
  auto* enc = dynamic_cast<EncoderModel*>(&model);
  check(enc != nullptr, "GPTQ: the model is neither a decoder nor an encoder");
  return gptq_by_forward(*enc, set, plan, opt);
}

}  // namespace shrink
