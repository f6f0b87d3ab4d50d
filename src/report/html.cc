// report.html: one self-contained page (inline CSS, inline SVG, no scripts, no network) with the Pareto scatter,
// latency histograms, per-segment bars, the size breakdown and the table. Every string from a record is escaped.
#include <fmt/format.h>
#include <shrink/report/report.h>
#include <shrink/report/svg.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace shrink {

namespace {

const char* const kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2",
                                "#edc948", "#ff9da7", "#9c755f", "#bab0ac", "#e15759"};
constexpr const char* kFrontier = "#d1495b";

const char* color(size_t i) {
  return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))];
}

const nlohmann::json* find(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

double number_or(const nlohmann::json* j, double fallback) {
  return j && j->is_number() ? j->get<double>() : fallback;
}

std::string fnum(double v) {
  return fmt::format("{:.1f}", v);
}

// A linear map from [a.lo, a.hi] to pixels [p0, p1].
struct Scale {
  double lo, hi, p0, p1;
  bool log = false;
  double operator()(double v) const {
    if (log) return p0 + (std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo)) * (p1 - p0);
    return p0 + (v - lo) / (hi - lo) * (p1 - p0);
  }
};

std::string label_of(double v) {
  return fmt::format("{:g}", v);
}

// Grid lines and tick labels for an x axis (bottom) and a y axis (left).
std::string x_axis(const Scale& x, const std::vector<double>& ticks, int decimals, double y_top, double y_bottom,
                   bool use_g = false) {
  std::string s = "<g class=\"axis x\">";
  for (double t : ticks) {
    const double px = x(t);
    s += fmt::format("<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\"/>", fnum(px), fnum(y_top), fnum(y_bottom));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", fnum(px), fnum(y_bottom + 16),
                     use_g ? label_of(t) : tick_label(t, decimals));
  }
  return s + "</g>";
}

std::string y_axis(const Scale& y, const NiceAxis& a, double x_left, double x_right, bool percent = false) {
  std::string s = "<g class=\"axis y\">";
  for (double t : a.ticks) {
    const double py = y(t);
    s += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\"/>", fnum(x_left), fnum(x_right), fnum(py));
    const std::string l = percent ? tick_label(100 * t, std::max(0, a.decimals - 2)) + "%" : tick_label(t, a.decimals);
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", fnum(x_left - 6), fnum(py + 4), l);
  }
  return s + "</g>";
}

std::vector<const ResultRow*> plotted(const ReportInput& in) {
  std::vector<const ResultRow*> v;
  for (const ResultRow& r : in.rows)
    if (r.error.empty()) v.push_back(&r);
  return v;
}

// Colour of a row: its index among all rows, so one variant has one colour on the whole page.
std::map<const ResultRow*, const char*> row_colors(const ReportInput& in) {
  std::map<const ResultRow*, const char*> c;
  for (size_t i = 0; i < in.rows.size(); ++i) c[&in.rows[i]] = color(i);
  return c;
}

std::string scatter(const ReportInput& in) {
  const auto pts = plotted(in);
  if (pts.empty()) return "<p class=\"note\">No measured variant to plot.</p>";
  constexpr double W = 760, H = 470, ml = 70, mr = 150, mt = 24, mb = 56;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300, smax = 1;
  for (const ResultRow* r : pts) {
    x0 = std::min(x0, r->p99_ms), x1 = std::max(x1, r->p99_ms);
    y0 = std::min(y0, r->quality), y1 = std::max(y1, r->quality);
    smax = std::max(smax, static_cast<double>(r->size_bytes));
  }
  const NiceAxis ax = nice_axis(x0, x1, 6), ay = nice_axis(y0, y1, 6);
  const Scale sx{ax.lo, ax.hi, ml, W - mr}, sy{ay.lo, ay.hi, H - mb, mt};
  std::string s = fmt::format(
      "<svg id=\"pareto-scatter\" class=\"plot\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"Pareto scatter: "
      "quality against p99 latency, point area by size\">",
      W, H);
  s += x_axis(sx, ax.ticks, ax.decimals, mt, H - mb) +
       y_axis(sy, ay, ml, W - mr, is_fraction_metric(pts.front()->quality_name));
  const bool up = pts.front()->higher_is_better;
  s += fmt::format(
      "<text class=\"title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">p99 latency (ms), lower is better "
      "\u2190</text>",
      fnum((ml + W - mr) / 2), fnum(H - 12));
  s += fmt::format(
      "<text class=\"title\" transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{} ({} is "
      "better)</text>",
      fnum((mt + H - mb) / 2), html_escape(pts.front()->quality_name), up ? "higher" : "lower");
  // The frontier, connected in latency order.
  std::vector<const ResultRow*> front;
  for (const ResultRow* r : pts)
    if (r->pareto) front.push_back(r);
  std::sort(front.begin(), front.end(), [](auto* a, auto* b) { return a->p99_ms < b->p99_ms; });
  if (front.size() > 1) {
    s += "<polyline class=\"frontier-line\" points=\"";
    for (const ResultRow* r : front) s += fmt::format("{},{} ", fnum(sx(r->p99_ms)), fnum(sy(r->quality)));
    s += fmt::format("\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>", kFrontier);
  }
  // Larger points first so small ones stay visible on top.
  std::vector<const ResultRow*> order = pts;
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->size_bytes > b->size_bytes; });
  for (const ResultRow* r : order) {
    const double cx = sx(r->p99_ms), cy = sy(r->quality);
    const double rad = std::max(3.5, 20 * std::sqrt(static_cast<double>(r->size_bytes) / smax));
    s += fmt::format(
        "<circle class=\"point{}\" cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{}\" fill-opacity=\"{}\" stroke=\"#fff\">"
        "<title>{}: {} {}, p99 {:.2f} ms, {:.2f} MB{}</title></circle>",
        r->pareto ? " frontier" : "", fnum(cx), fnum(cy), fnum(rad), r->pareto ? kFrontier : "#6b7b8c",
        r->pareto ? "0.85" : "0.45", html_escape(r->name), html_escape(r->quality_name),
        format_quality(r->quality_name, r->quality), r->p99_ms, r->size_bytes / 1e6,
        r->pareto ? " (Pareto frontier)" : "");
  }
  for (const ResultRow* r : pts) {
    const double rad = std::max(3.5, 20 * std::sqrt(static_cast<double>(r->size_bytes) / smax));
    s += fmt::format("<text class=\"label{}\" x=\"{}\" y=\"{}\">{}</text>", r->pareto ? " frontier" : "",
                     fnum(sx(r->p99_ms) + rad + 4), fnum(sy(r->quality) + 4), html_escape(r->name));
  }
  return s + "</svg>";
}

struct Hist {
  const ResultRow* row;
  std::vector<std::pair<double, double>> buckets;  // (upper edge ms, count)
  double total = 0;
};

std::string histograms(const ReportInput& in) {
  std::vector<Hist> hs;
  double lo = 1e300, hi = 0;
  for (const ResultRow* r : plotted(in)) {
    const nlohmann::json* b = find(*find(r->record, "bench"), "latency_histogram");
    if (!b || !b->is_array()) continue;
    Hist h{r, {}, 0};
    for (const auto& e : *b)
      if (e.is_array() && e.size() == 2 && e[0].is_number() && e[1].is_number() && e[0].get<double>() > 0 &&
          e[1].get<double>() > 0) {
        h.buckets.emplace_back(e[0].get<double>(), e[1].get<double>());
        h.total += e[1].get<double>();
        lo = std::min(lo, e[0].get<double>() / 1.02);
        hi = std::max(hi, e[0].get<double>());
      }
    if (h.total > 0) hs.push_back(std::move(h));
  }
  if (hs.empty()) return "<p class=\"note\">No latency histograms in the records.</p>";
  if (hi / lo < 1.5) lo = hi / 1.5;
  // One shared log axis and 40 bins, so the shapes of all variants compare directly.
  constexpr int kBins = 40;
  constexpr double W = 340, H = 150, ml = 12, mr = 12, mt = 26, mb = 30;
  const Scale sx{lo, hi, ml, W - mr, true};
  std::vector<std::vector<double>> share(hs.size(), std::vector<double>(kBins, 0));
  double top = 0;
  for (size_t i = 0; i < hs.size(); ++i) {
    for (auto [edge, count] : hs[i].buckets) {
      const double center = edge / std::sqrt(1.02);
      int b = static_cast<int>((std::log(center) - std::log(lo)) / (std::log(hi) - std::log(lo)) * kBins);
      b = std::clamp(b, 0, kBins - 1);
      share[i][b] += count / hs[i].total;
    }
    top = std::max(top, *std::max_element(share[i].begin(), share[i].end()));
  }
  std::vector<double> ticks = log_ticks(lo, hi);
  if (ticks.size() > 6) {  // keep 1-2-5 readable: only the powers of ten and 5s
    std::vector<double> t;
    for (double v : ticks)
      if (std::abs(std::log10(v) - std::round(std::log10(v))) < 1e-9 ||
          std::round(v / std::pow(10, std::floor(std::log10(v)))) == 5)
        t.push_back(v);
    ticks = t;
  }
  const auto colors = row_colors(in);
  std::string s = "<div class=\"cards\">";
  for (size_t i = 0; i < hs.size(); ++i) {
    const ResultRow& r = *hs[i].row;
    s += fmt::format(
        "<svg class=\"plot latency-hist\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"latency "
        "histogram of {}\">",
        W, H, html_escape(r.name));
    s += fmt::format("<text class=\"title\" x=\"{}\" y=\"16\">{}</text>", ml, html_escape(r.name));
    s += x_axis(sx, ticks, 0, mt, H - mb, true);
    const double bw = (W - ml - mr) / kBins;
    for (int b = 0; b < kBins; ++b) {
      if (share[i][b] <= 0) continue;
      const double h = share[i][b] / top * (H - mt - mb);
      s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>", fnum(ml + b * bw + 0.5),
                       fnum(H - mb - h), fnum(bw - 1), fnum(h), colors.at(&r));
    }
    const nlohmann::json* lat = find(*find(r.record, "bench"), "latency_ms");
    for (const char* q : {"p50", "p99"}) {
      const double v = number_or(lat ? find(*lat, q) : nullptr, 0);
      if (v < lo || v > hi) continue;
      const bool left = sx(v) > W - 70;  // near the right edge: label on the left of the line
      s += fmt::format(
          "<line class=\"marker\" x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\"/><text class=\"marker\" x=\"{3}\" "
          "y=\"{4}\" text-anchor=\"{7}\">{5} {6:.2f}</text>",
          fnum(sx(v)), fnum(mt - 2), fnum(H - mb), fnum(sx(v) + (left ? -3 : 3)), fnum(q[1] == '5' ? mt + 8 : mt + 20),
          q, v, left ? "end" : "start");
    }
    s += fmt::format("<text class=\"unit\" x=\"{}\" y=\"{}\" text-anchor=\"end\">ms</text></svg>", W - mr, H - 2);
  }
  return s + "</div>";
}

std::string segments(const ReportInput& in) {
  // by -> segment names in first-seen order; per row: by -> segment -> value.
  std::vector<std::string> dims;
  std::map<std::string, std::vector<std::string>> names;
  std::map<std::pair<const ResultRow*, std::string>, std::map<std::string, double>> value;
  std::string metric;
  for (const ResultRow* r : plotted(in)) {
    const nlohmann::json* ev = find(r->record, "eval");
    const nlohmann::json* seg = ev ? find(*ev, "segments") : nullptr;
    if (!seg || !seg->is_object()) continue;
    for (const auto& [by, list] : seg->items()) {
      if (!list.is_array()) continue;
      if (!names.count(by)) dims.push_back(by);
      auto& order = names[by];
      for (const auto& e : list) {
        const nlohmann::json* n = find(e, "segment");
        const char* m = find(e, "accuracy") ? "accuracy" : "top1_agreement";
        const nlohmann::json* v = find(e, m);
        if (!n || !n->is_string() || !v || !v->is_number()) continue;
        if (metric.empty()) metric = m;
        const std::string name = n->get<std::string>();
        if (std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
        value[{r, by}][name] = v->get<double>();
      }
    }
  }
  if (dims.empty()) return "<p class=\"note\">No per-segment results in the records (eval.segments).</p>";
  const auto colors = row_colors(in);
  std::string s;
  for (const std::string& by : dims) {
    std::vector<const ResultRow*> rows;
    double top = 0;
    for (const ResultRow* r : plotted(in))
      if (auto it = value.find({r, by}); it != value.end()) {
        rows.push_back(r);
        for (auto& [_, v] : it->second) top = std::max(top, v);
      }
    const auto& segs = names[by];
    constexpr double H = 300, ml = 60, mr = 16, mt = 30, mb = 46;
    const double W = std::max(760.0, ml + mr + segs.size() * (rows.size() * 14.0 + 24));
    const NiceAxis ay = nice_axis(0, std::max(top, 1e-9), 5);
    const Scale sy{ay.lo, ay.hi, H - mb, mt};
    s += fmt::format("<svg class=\"plot segment-bars\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{} by {}\">",
                     fnum(W), H, html_escape(metric), html_escape(by));
    s += fmt::format("<text class=\"title\" x=\"{}\" y=\"18\">{} by {}</text>", ml, html_escape(metric),
                     html_escape(by));
    s += y_axis(sy, ay, ml, W - mr, is_fraction_metric(metric));
    const double group = (W - ml - mr) / segs.size();
    const double bw = std::min(22.0, (group - 12) / std::max<size_t>(1, rows.size()));
    for (size_t g = 0; g < segs.size(); ++g) {
      const double gx = ml + g * group + (group - bw * rows.size()) / 2;
      for (size_t k = 0; k < rows.size(); ++k) {
        const auto& vals = value[{rows[k], by}];
        auto it = vals.find(segs[g]);
        if (it == vals.end()) continue;
        const double y = sy(it->second);
        s += fmt::format(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{} \u00b7 {}: {:.4f}</title></rect>",
            fnum(gx + k * bw), fnum(y), fnum(bw - 1), fnum(H - mb - y), colors.at(rows[k]), html_escape(rows[k]->name),
            html_escape(segs[g]), it->second);
      }
      s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", fnum(ml + (g + 0.5) * group),
                       fnum(H - mb + 18), html_escape(segs[g]));
    }
    s += "</svg><p class=\"legend\">";
    for (const ResultRow* r : rows)
      s += fmt::format("<span><i style=\"background:{}\"></i>{}</span>", colors.at(r), html_escape(r->name));
    s += "</p>";
  }
  return s;
}

std::string size_breakdown(const ReportInput& in) {
  const auto pts = plotted(in);
  if (pts.empty()) return "";
  std::vector<std::string> schemes;
  std::vector<std::vector<std::pair<std::string, double>>> parts;
  double top = 0;
  for (const ResultRow* r : pts) {
    std::vector<std::pair<std::string, double>> p;
    if (const nlohmann::json* b = find(r->record, "size_breakdown"); b && b->is_object())
      for (const auto& [k, v] : b->items())
        if (v.is_number() && v.get<double>() > 0) p.emplace_back(k, v.get<double>());
    if (p.empty()) p.emplace_back("total", static_cast<double>(r->size_bytes));
    double sum = 0;
    for (auto& [k, v] : p) {
      sum += v;
      if (std::find(schemes.begin(), schemes.end(), k) == schemes.end()) schemes.push_back(k);
    }
    top = std::max(top, sum);
    parts.push_back(std::move(p));
  }
  constexpr double W = 760, ml = 190, mr = 20, mt = 10, row_h = 26, mb = 40;
  const double H = mt + row_h * pts.size() + mb;
  const NiceAxis ax = nice_axis(0, std::max(top / 1e6, 1e-6), 6);
  const Scale sx{ax.lo, ax.hi, ml, W - mr};
  std::string s = fmt::format(
      "<svg id=\"size-breakdown\" class=\"plot\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"size by scheme\">", W,
      fnum(H));
  s += x_axis(sx, ax.ticks, ax.decimals, mt, H - mb);
  s += fmt::format("<text class=\"title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">size on disk (MB)</text>",
                   fnum((ml + W - mr) / 2), fnum(H - 4));
  for (size_t i = 0; i < pts.size(); ++i) {
    const double y = mt + i * row_h + 4;
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", ml - 8, fnum(y + 14),
                     html_escape(pts[i]->name));
    double x = 0;
    for (auto& [k, v] : parts[i]) {
      const size_t c = std::find(schemes.begin(), schemes.end(), k) - schemes.begin();
      const double x0 = sx(x / 1e6), x1 = sx((x + v) / 1e6);
      s += fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{} \u00b7 {}: {:.2f} "
          "MB</title></rect>",
          fnum(x0), fnum(y), fnum(std::max(0.5, x1 - x0)), row_h - 8, color(c + 3), html_escape(pts[i]->name),
          html_escape(k), v / 1e6);
      x += v;
    }
  }
  s += "</svg><p class=\"legend\">";
  for (size_t c = 0; c < schemes.size(); ++c)
    s += fmt::format("<span><i style=\"background:{}\"></i>{}</span>", color(c + 3), html_escape(schemes[c]));
  return s + "</p>";
}

std::string table(const ReportInput& in) {
  std::string s = "<div class=\"scroll\"><table><thead><tr>";
  for (const std::string& t : report_column_titles()) s += fmt::format("<th>{}</th>", html_escape(t));
  s += "</tr></thead><tbody>";
  for (const ResultRow& r : in.rows) {
    const char* cls = !r.error.empty() ? " class=\"error\"" : r.pareto ? " class=\"frontier\"" : "";
    s += fmt::format("<tr{}>", cls);
    for (const std::string& c : display_values(r)) s += fmt::format("<td>{}</td>", html_escape(c));
    s += "</tr>";
  }
  return s + "</tbody></table></div>";
}

constexpr const char* kCss = R"(
:root{--fg:#1f2328;--muted:#656d76;--grid:#e8eaed;--accent:#d1495b}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1120px;padding:2rem 1.5rem 4rem;color:var(--fg);background:#fff;
 font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:1.9rem;margin:0 0 .2rem;letter-spacing:-.01em}
h2{font-size:1.2rem;margin:2.4rem 0 .7rem;padding-bottom:.3rem;border-bottom:1px solid var(--grid)}
.meta,.note,.caption{color:var(--muted);font-size:.9rem}
.caption{margin:.2rem 0 0}
svg.plot{width:100%;height:auto;display:block}
svg text{font-size:12px;fill:#3d444d}
svg text.title{font-size:13px;font-weight:600;fill:var(--fg)}
svg text.label{font-size:11.5px}
svg text.label.frontier{font-weight:600;fill:var(--accent)}
svg text.unit,svg text.marker{font-size:10.5px;fill:var(--muted)}
svg .axis line{stroke:var(--grid);stroke-width:1}
svg line.marker{stroke:#333;stroke-dasharray:3 3;stroke-width:1}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem 1.5rem}
.legend{font-size:.85rem;color:var(--muted);margin:.3rem 0 1.2rem}
.legend span{margin-right:1.1rem;white-space:nowrap}
.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.35em;border-radius:2px;vertical-align:-.05em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.83rem;font-variant-numeric:tabular-nums}
th,td{padding:.38rem .55rem;text-align:right;white-space:nowrap;border-bottom:1px solid var(--grid)}
th{font-weight:600;color:var(--muted);border-bottom:2px solid #d0d7de}
th:first-child,td:first-child{text-align:left}
tr.frontier td{font-weight:600}
tr.frontier td:first-child{color:var(--accent)}
tr.error td{color:#8c959f}
ul.errors li{margin:.2rem 0}
code{font-size:.85em}
)";

}  // namespace

std::string render_html(const ReportInput& in) {
  size_t n_front = 0, n_err = 0;
  for (const ResultRow& r : in.rows) n_front += r.pareto, n_err += !r.error.empty();
  std::string s =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
      "<title>shrink report</title><style>";
  s += kCss;
  s += "</style></head><body>\n<h1>shrink report</h1>\n";
  s += fmt::format(
      "<p class=\"meta\">{} variants from <code>{}</code> \u00b7 {} on the Pareto frontier \u00b7 {} failed<br>{} "
      "\u00b7 commit <code>{}</code></p>\n",
      in.rows.size(), html_escape(in.source.string()), n_front, n_err, html_escape(machine_line(in)),
      html_escape(in.commit));
  s += fmt::format("<h2>Quality against p99 latency</h2>\n{}", scatter(in));
  s += "<p class=\"caption\">Point area is proportional to size on disk. <span style=\"color:#d1495b\">Red</span> "
       "points are on the Pareto frontier over quality, p99 latency and size (no other variant is at least as good "
       "in all three and better in one); the dashed line joins them in latency order.</p>\n";
  s += fmt::format("<h2>Latency distribution</h2>\n{}", histograms(in));
  s += "<p class=\"caption\">Share of requests per latency bin (log scale, one shared axis and height); dashed: p50 "
       "and p99.</p>\n";
  s += fmt::format("<h2>Quality per segment</h2>\n{}", segments(in));
  s += fmt::format("<h2>Size by scheme</h2>\n{}", size_breakdown(in));
  s += fmt::format("<h2>All variants</h2>\n{}", table(in));
  if (any_estimated_energy(in))
    s += "<p class=\"caption\">Energy marked (est.) is an estimate: process CPU time \u00d7 watts per core, because "
         "RAPL counters were not readable. Cost per 1,000 inferences is at the best measured throughput.</p>\n";
  const auto stages = stage_cost_rows(in);
  if (!stages.empty()) {
    s += "<h2>Compression cost per stage</h2>\n<div class=\"scroll\"><table><thead><tr><th>variant</th><th>stage</th>"
         "<th>seconds</th><th>peak RSS MB</th></tr></thead><tbody>";
    for (const auto& row : stages) {
      s += "<tr>";
      for (const std::string& c : row) s += fmt::format("<td>{}</td>", html_escape(c));
      s += "</tr>";
    }
    s += "</tbody></table></div>\n";
  }
  if (n_err) {
    s += "<h2>Failed configurations</h2>\n<ul class=\"errors\">";
    for (const ResultRow& r : in.rows)
      if (!r.error.empty())
        s += fmt::format("<li><strong>{}</strong> (line {}): {}</li>", html_escape(r.name), r.line,
                         html_escape(r.error));
    s += "</ul>\n";
  }
  return s + "</body></html>\n";
}

}  // namespace shrink
