// Automatic mixed precision (include/shrink/compress/mixed.h): single-layer sensitivities, the greedy choice by
// KLD per byte (or microsecond) saved, and the held-out verification with back-off.
#include <shrink/compress/mixed.h>
#include <shrink/compress/sequential.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/eval/classification.h>
#include <shrink/eval/compare.h>
#include <shrink/eval/perplexity.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

namespace shrink {

namespace {

double median_latency_us(const Linear& l) {
  std::vector<float> x(static_cast<size_t>(l.in_features())), y(static_cast<size_t>(l.out_features()));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (float& v : x) v = nd(rng);
  l.forward(x.data(), 1, y.data());  // warm
  std::vector<double> t;
  for (int r = 0; r < 15; ++r) {
    Timer tm;
    for (int k = 0; k < 4; ++k) l.forward(x.data(), 1, y.data());
    t.push_back(tm.elapsed_ms() * 1000.0 / 4);
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

std::vector<std::pair<std::string, QuantSpec>> MixedReport::overrides() const {
  std::vector<std::pair<std::string, QuantSpec>> out;
  for (const auto& l : layers) {
    const QuantSpec spec = parse_quant_spec(candidates.at(static_cast<size_t>(l.chosen)));
    if (spec.scheme != WeightScheme::F32) out.emplace_back("^" + l.name + "$", spec);
  }
  return out;
}

double mean_kld(const std::vector<float>& base, const std::vector<float>& cand, int64_t width) {
  check(base.size() == cand.size() && width > 0 && base.size() % static_cast<size_t>(width) == 0,
        "mean_kld: {} and {} logits of width {}", base.size(), cand.size(), width);
  const int64_t rows = static_cast<int64_t>(base.size()) / width;
  double sum = 0;
  for (int64_t r = 0; r < rows; ++r)
    sum += kl_divergence_logits(base.data() + r * width, cand.data() + r * width, width);
  return rows > 0 ? sum / static_cast<double>(rows) : 0.0;
}

std::vector<float> output_logits(const Model& model, const CalibSet& set, int64_t max_rows, int64_t* width,
                                 std::vector<int64_t>* seq_rows) {
  if (seq_rows) seq_rows->clear();
  std::vector<float> out;
  int64_t rows = 0;
  if (const auto* enc = dynamic_cast<const EncoderModel*>(&model)) {
    // Classifiers: one row of label logits per example.
    check(enc->has_classifier(),
          "{}: mixed-precision search scores the model's output distribution; this {} has no classification head "
          "(num_labels 0): choose per-layer schemes with --layer REGEX=SCHEME",
          model.source().string(), model.config().architecture);
    *width = enc->config().num_labels;
    auto take = [&](const EncoderOutput& o) {
      out.insert(out.end(), o.logits.data<float>(), o.logits.data<float>() + o.logits.numel());
      const int64_t n = o.logits.numel() / *width;
      rows += n;
      if (seq_rows)
        for (int64_t i = 0; i < n; ++i) seq_rows->push_back(1);
    };
    if (enc->takes_images()) {
      const ModelConfig& c = enc->config();
      const int64_t per = int64_t{c.num_channels} * c.image_size * c.image_size;
      const int64_t n = std::min(static_cast<int64_t>(set.images.size()) / per, max_rows);
      for (int64_t i = 0; i < n; i += 16)
        take(enc->forward_images(set.images.data() + i * per, std::min<int64_t>(16, n - i)));
    } else {
      for (const auto& seq : set.sequences) {
        if (rows >= max_rows) break;
        if (!seq.empty()) take(enc->forward(one_row_batch(seq, enc->config().max_position_embeddings)));
      }
    }
    check(rows > 0, "mixed precision: the calibration set holds no examples for this {}; pass --calib FILE",
          model.config().architecture);
    return out;
  }
  const auto* dec = dynamic_cast<const DecoderModel*>(&model);
  check(dec != nullptr, "{}: mixed-precision search needs a decoder or an encoder classifier; {} is neither",
        model.source().string(), model.config().architecture);
  const int64_t vocab = dec->config().vocab_size;
  *width = vocab;
  for (const auto& seq : set.sequences) {
    const int64_t n = std::min({static_cast<int64_t>(seq.size()), dec->max_context(), max_rows - rows});
    if (n <= 0) break;
    KvCache cache = dec->new_cache(n, KvCacheType::F32);
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(n * vocab));
    dec->forward(cache, seq.data(), n, out.data() + at, true);
    rows += n;
    if (seq_rows) seq_rows->push_back(n);
  }
  check(rows > 0, "mixed precision: the calibration set holds no tokens; pass --calib FILE with text");
  return out;
}

double accuracy_pct(const std::vector<float>& logits, const std::vector<int>& labels, int64_t width) {
  ClassifierRun run;  // eval's argmax per row and accuracy, on these logits
  run.num_labels = static_cast<int>(width);
  run.logits = logits;
  const std::vector<int> predicted = run.predictions();
  check(!predicted.empty() && predicted.size() <= labels.size(), "accuracy_pct: {} rows of logits for {} labels",
        predicted.size(), labels.size());
  const std::vector<int> truth(labels.begin(), labels.begin() + static_cast<ptrdiff_t>(predicted.size()));
  return 100.0 * classification_metrics(predicted, truth, run.num_labels).accuracy;
}

double mean_next_token_nll(const std::vector<float>& logits, const CalibSet& set, const std::vector<int64_t>& rows,
                           int64_t width) {
  check(rows.size() <= set.sequences.size(), "mean_next_token_nll: {} row counts for {} sequences", rows.size(),
        set.sequences.size());
  double sum = 0;
  int64_t n = 0, at = 0;
  for (size_t s = 0; s < rows.size(); ++s) {
    for (int64_t j = 0; j + 1 < rows[s]; ++j, ++n)
      sum += token_nll(logits.data() + (at + j) * width, width, set.sequences[s][static_cast<size_t>(j + 1)]);
    at += rows[s];
  }
  check(n > 0, "mixed precision: the held-out windows hold no next-token predictions; use longer windows");
  return sum / static_cast<double>(n);
}

MixedReport choose_mixed_precision(Model& model, const std::vector<std::string>& slots, const CalibSet& calib,
                                   const CalibSet& heldout, const MixedOptions& opt) {
  Timer timer;
  const bool drop = opt.budget_drop_pct > 0;
  check(drop || opt.budget_kld > 0,
        "mixed precision: the KLD budget {} must be positive, e.g. --budget kld=0.01 (or a drop budget, drop=1)",
        opt.budget_kld);
  // What the budget bounds, in its unit: mean KLD, or the held-out perplexity increase in %.
  const double budget = drop ? opt.budget_drop_pct : opt.budget_kld;
  MixedReport rep;
  rep.budget_kld = drop ? 0 : opt.budget_kld;
  rep.budget_drop_pct = drop ? opt.budget_drop_pct : 0;
  rep.candidates = opt.candidates;
  if (std::find(rep.candidates.begin(), rep.candidates.end(), "f32") == rep.candidates.end())
    rep.candidates.push_back("f32");  // the starting point of the greedy
  std::vector<QuantSpec> specs;
  for (const auto& c : rep.candidates) specs.push_back(parse_quant_spec(c));
  for (const QuantSpec& s : specs)
    check(!s.static_act, "mixed precision: candidate {} needs calibrated activations; use w8a8 (dynamic)", s.name());
  const size_t f32 =
      static_cast<size_t>(std::find(rep.candidates.begin(), rep.candidates.end(), "f32") - rep.candidates.begin());

  std::vector<LinearSlot*> ptrs;
  for (const auto& name : slots) {
    LinearSlot* s = model.find_linear(name);
    check(s != nullptr && s->weight.defined() && s->weight.numel() > 0,
          "mixed precision: layer '{}' is missing or has no dense source weight; quantize the original model", name);
    ptrs.push_back(s);
  }
  int64_t width = 0;
  const std::vector<float> base = output_logits(model, calib, opt.max_rows, &width);
  std::vector<int64_t> held_rows;
  const std::vector<float> base_held = output_logits(model, heldout, opt.max_rows, &width, &held_rows);
  // A drop budget bounds the held-out perplexity increase (decoders, %) or accuracy loss (classifiers, points).
  const bool classifier = model.kind() == ModelKind::Encoder;
  if (drop && classifier)
    check(heldout.labels.size() >= held_rows.size(),
          "mixed precision: --budget drop={} on a classifier bounds the accuracy loss on labelled held-out rows; the "
          "calibration set has none (text classifiers get them from a --calib TSV of sentence<TAB>label lines; "
          "calibration images carry none): use --budget kld=X there",
          opt.budget_drop_pct);
  const double base_nll = drop && !classifier ? mean_next_token_nll(base_held, heldout, held_rows, width) : 0;
  rep.base_ppl = drop && !classifier ? std::exp(base_nll) : 0;
  rep.base_accuracy = drop && classifier ? accuracy_pct(base_held, heldout.labels, width) : 0;
  // The current slots on the held-out windows: fills measured_kld (and the perplexity figures); returns the
  // budgeted quantity.
  auto measure = [&] {
    const std::vector<float> cand = output_logits(model, heldout, opt.max_rows, &width);
    rep.measured_kld = mean_kld(base_held, cand, width);
    if (!drop) return rep.measured_kld;
    if (classifier) {
      rep.measured_accuracy = accuracy_pct(cand, heldout.labels, width);
      rep.measured_drop_pct = rep.base_accuracy - rep.measured_accuracy;
      return rep.measured_drop_pct;
    }
    rep.measured_ppl = std::exp(mean_next_token_nll(cand, heldout, held_rows, width));
    rep.measured_drop_pct = 100.0 * (rep.measured_ppl / rep.base_ppl - 1.0);
    return rep.measured_drop_pct;
  };
  SlotSwap swap(ptrs);

  // Sensitivities: one layer at a time in each candidate scheme, every other layer fp32.
  for (size_t i = 0; i < ptrs.size(); ++i) {
    LayerSensitivity l;
    l.name = ptrs[i]->name;
    for (size_t c = 0; c < specs.size(); ++c) {
      swap.set(i, specs[c]);
      l.bytes.push_back(c == f32 ? swap.original_bytes(i) : swap.impl(i).weight_bytes());
      l.latency_us.push_back(median_latency_us(swap.impl(i)));
      l.kld.push_back(c == f32 ? 0.0 : mean_kld(base, output_logits(model, calib, opt.max_rows, &width), width));
    }
    swap.set(i, specs[f32]);
    l.chosen = static_cast<int>(f32);
    rep.layers.push_back(std::move(l));
  }
  auto cost = [&](const LayerSensitivity& l, size_t c) {
    return opt.objective == MixedObjective::Size ? static_cast<double>(l.bytes[c]) : l.latency_us[c];
  };

  // Greedy: the move with the least KLD added per unit of cost saved that keeps the additive estimate within
  // `budget`, from all-f32.
  auto greedy = [&](double budget) {
    for (auto& l : rep.layers) l.chosen = static_cast<int>(f32);
    double est = 0;
    for (;;) {
      double best_ratio = std::numeric_limits<double>::infinity();
      size_t best_l = 0, best_c = 0;
      for (size_t i = 0; i < rep.layers.size(); ++i) {
        const LayerSensitivity& l = rep.layers[i];
        const size_t cur = static_cast<size_t>(l.chosen);
        for (size_t c = 0; c < specs.size(); ++c) {
          const double saved = cost(l, cur) - cost(l, c);
          const double added = l.kld[c] - l.kld[cur];
          if (saved <= 0 || est + added > budget) continue;
          const double ratio = added / saved;
          if (ratio < best_ratio) best_ratio = ratio, best_l = i, best_c = c;
        }
      }
      if (!std::isfinite(best_ratio)) break;
      LayerSensitivity& l = rep.layers[best_l];
      est += l.kld[best_c] - l.kld[static_cast<size_t>(l.chosen)];
      l.chosen = static_cast<int>(best_c);
    }
    for (size_t i = 0; i < rep.layers.size(); ++i) swap.set(i, specs[static_cast<size_t>(rep.layers[i].chosen)]);
    return measure();
  };
  auto total_cost = [&] {
    double c = 0;
    for (const auto& l : rep.layers) c += cost(l, static_cast<size_t>(l.chosen));
    return c;
  };
  // Single-layer KLDs do not add up exactly: when the measured KLD of a choice is well inside the budget, the
  // additive budget is widened by the measured slack (up to 3 more rounds) and the cheapest choice that holds kept.
  // A perplexity budget starts from the KLD that equals its NLL increase, ln(1 + drop / 100); an accuracy budget
  // from drop / 100 nats (the rounds below widen it while the measured drop stays well inside).
  const double start = !drop        ? opt.budget_kld
                       : classifier ? opt.budget_drop_pct / 100.0
                                    : std::log1p(opt.budget_drop_pct / 100.0);
  double additive = start;
  std::vector<int> best;
  double best_cost = std::numeric_limits<double>::infinity();
  for (int round = 0; round < 4; ++round) {
    const double measured = greedy(additive);
    if (measured > budget) break;
    if (total_cost() < best_cost) {
      best_cost = total_cost(), best.clear();
      for (const auto& l : rep.layers) best.push_back(l.chosen);
    }
    if (measured < 0.9 * budget)
      additive *= std::min(4.0, budget / std::max(measured, 1e-12));
    else
      break;
  }
  // A uniform scheme is a choice too: the greedy's additive model can miss one that holds and is cheaper.
  for (size_t c = 0; c < specs.size(); ++c) {
    if (c == f32) continue;
    for (size_t i = 0; i < rep.layers.size(); ++i) {
      rep.layers[i].chosen = static_cast<int>(c);
      swap.set(i, specs[c]);
    }
    if (total_cost() >= best_cost) continue;
    if (measure() <= budget) {
      best_cost = total_cost(), best.clear();
      for (const auto& l : rep.layers) best.push_back(l.chosen);
    }
  }
  if (!best.empty()) {
    for (size_t i = 0; i < rep.layers.size(); ++i) {
      rep.layers[i].chosen = best[i];
      swap.set(i, specs[static_cast<size_t>(best[i])]);
    }
  } else {
    greedy(start);
  }

  // Verification on held-out windows; back off the layer with the largest single-layer KLD until the budget holds.
  for (;;) {
    rep.met = measure() <= budget;
    if (rep.met) break;
    size_t worst = rep.layers.size();
    for (size_t i = 0; i < rep.layers.size(); ++i) {
      const LayerSensitivity& l = rep.layers[i];
      if (l.kld[static_cast<size_t>(l.chosen)] <= 0) continue;
      if (worst == rep.layers.size() ||
          l.kld[static_cast<size_t>(l.chosen)] > rep.layers[worst].kld[static_cast<size_t>(rep.layers[worst].chosen)])
        worst = i;
    }
    if (worst == rep.layers.size()) break;  // everything is exact already
    // The cheapest candidate of that layer with a smaller single-layer KLD.
    LayerSensitivity& l = rep.layers[worst];
    const size_t cur = static_cast<size_t>(l.chosen);
    size_t next = f32;
    for (size_t c = 0; c < specs.size(); ++c)
      if (l.kld[c] < l.kld[cur] && cost(l, c) < cost(l, next)) next = c;
    l.chosen = static_cast<int>(next);
    swap.set(worst, specs[next]);
    ++rep.backoffs;
  }
  rep.estimated_kld = 0;
  for (const auto& l : rep.layers) {
    rep.estimated_kld += l.kld[static_cast<size_t>(l.chosen)];
    rep.bytes_before += l.bytes[f32];
    rep.bytes_after += l.bytes[static_cast<size_t>(l.chosen)];
  }
  rep.time_ms = timer.elapsed_ms();
  return rep;
}

}  // namespace shrink
