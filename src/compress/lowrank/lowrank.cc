// The low-rank pass: selects slots by pattern, factors each with a truncated SVD, keeps a layer dense when its
// factors would not be smaller, and reports rank, kept energy and bytes per layer.
#include <shrink/compress/lowrank.h>
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/ops/qlinear.h>

#include <regex>

namespace shrink {

std::string default_lowrank_layers(const Model&) {
  // Block linears of every supported architecture: bert.encoder.layer.N., distilbert.transformer.layer.N.,
  // model.layers.N. (LLaMA), transformer.h.N. / h.N. (GPT-2). Heads, poolers and lm_head are left alone.
  return R"((^|\.)(layer|layers|h)\.\d+\.)";
}

LowRankReport lowrank_model(Model& model, const LowRankOptions& opt) {
  Timer timer;
  const bool by_rank = opt.rank > 0;
  if (!by_rank && !(opt.energy > 0 && opt.energy <= 1))
    fail("lowrank: give --rank R (> 0) or --energy E in (0, 1] (got rank {}, energy {})", opt.rank, opt.energy);
  if (by_rank && opt.energy > 0) fail("lowrank: give either --rank or --energy, not both");
  const std::string pattern = opt.layers.empty() ? default_lowrank_layers(model) : opt.layers;
  std::regex re;
  try {
    re = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("lowrank: --layers '{}' is not a valid regular expression ({}); write e.g. 'intermediate|output\\.dense'",
         pattern, e.what());
  }
  std::vector<LinearSlot*> chosen;
  for (auto& s : model.linears()) {
    if (!std::regex_search(s.name, re)) continue;
    if (as_lowrank(s.impl.get()))
      fail("{}: layer '{}' is already {}; factor the original model instead", model.source().string(), s.name,
           s.impl->scheme());
    if (s.impl->packed() || !s.weight.defined() || s.weight.numel() == 0)
      fail("{}: layer '{}' is {} (packed); low-rank factors a dense layer: run lowrank before quantize",
           model.source().string(), s.name, s.impl->scheme());
    chosen.push_back(&s);
  }
  if (chosen.empty())
    fail("{}: --layers '{}' matches no Linear of the model; `shrink info` lists the layer names",
         model.source().string(), pattern);

  LowRankReport rep;
  for (LinearSlot* s : chosen) {
    Timer lt;
    LayerLowRank l;
    l.name = s->name;
    l.out = s->weight.dim(0);
    l.in = s->weight.dim(1);
    l.bytes_before = s->impl->weight_bytes();
    // Largest rank whose factors are smaller than the dense matrix: r (in + out) < in out.
    const int64_t max_rank = (l.in * l.out - 1) / (l.in + l.out);
    if (by_rank && opt.rank > max_rank) {
      l.note = fmt::format("skipped: rank {} factors would hold {} values, the dense layer {} (needs rank <= {})",
                           opt.rank, opt.rank * (l.in + l.out), l.in * l.out, max_rank);
    } else {
      SvdOptions so;
      so.rank = opt.rank;
      so.energy = by_rank ? 0 : opt.energy;
      so.max_rank = by_rank ? 0 : max_rank + 1;  // one past: tells "would not be smaller" from "fits"
      so.seed = opt.seed;
      TruncatedSvd svd = truncated_svd(s->weight, so);
      double kept = 0;
      for (int64_t i = 0; i < svd.rank && i < static_cast<int64_t>(svd.sigma.size()); ++i)
        kept += svd.sigma[i] * svd.sigma[i];
      l.energy_kept = svd.total_energy > 0 ? kept / svd.total_energy : 1.0;
      if (svd.rank > max_rank) {
        l.note = fmt::format(
            "skipped: energy {} needs rank {}{}, factors would not be smaller than the dense layer "
            "(rank <= {})",
            opt.energy, svd.rank, svd.randomized ? " or more" : "", max_rank);
      } else {
        l.rank = svd.rank;
        if (svd.randomized) l.note = "randomized SVD";
        const Tensor bias = s->bias.defined() && s->bias.numel() > 0 ? s->bias : Tensor();
        s->impl = std::make_unique<LowRankLinear>(svd.a, svd.b, bias);
        s->weight = Tensor();  // the slot is no longer dense: later passes must not read the old weight
      }
    }
    if (l.rank > 0)
      ++rep.factored;
    else
      ++rep.skipped;
    l.bytes_after = s->impl->weight_bytes();
    l.ms = lt.elapsed_ms();
    rep.bytes_before += l.bytes_before;
    rep.bytes_after += l.bytes_after;
    rep.layers.push_back(std::move(l));
  }
  rep.time_ms = timer.elapsed_ms();
  return rep;
}

}  // namespace shrink
