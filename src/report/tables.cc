// The report's fixed columns and its text outputs (Markdown, CSV, JSON); report.html is in html.cc.
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/report/report.h>
#include <shrink/report/svg.h>

#include <algorithm>
#include <functional>

#include "tokenizers/unicode.h"

namespace shrink {

namespace {

// record[k0][k1]... or nullptr when a step is missing or not an object.
const nlohmann::json* path(const nlohmann::json& j, const std::vector<const char*>& keys) {
  const nlohmann::json* p = &j;
  for (const char* k : keys) {
    if (!p->is_object()) return nullptr;
    auto it = p->find(k);
    if (it == p->end()) return nullptr;
    p = &*it;
  }
  return p;
}

nlohmann::json number_at(const nlohmann::json& j, const std::vector<const char*>& keys) {
  const nlohmann::json* p = path(j, keys);
  return p && p->is_number() ? *p : nlohmann::json();
}

nlohmann::json best_throughput(const nlohmann::json& rec) {
  nlohmann::json best = number_at(rec, {"bench", "throughput_per_s"});
  if (const nlohmann::json* c = path(rec, {"bench", "concurrency"}); c && c->is_array())
    for (const auto& lv : *c) {
      nlohmann::json t = number_at(lv, {"throughput_per_s"});
      if (t.is_number() && (best.is_null() || t.get<double>() > best.get<double>())) best = t;
    }
  return best;
}

const nlohmann::json& stages_of(const nlohmann::json& rec) {
  static const nlohmann::json none = nlohmann::json::array();
  const nlohmann::json* s = path(rec, {"stages"});
  return s && s->is_array() ? *s : none;
}

struct Column {
  const char* key;
  const char* title;
  std::function<nlohmann::json(const ResultRow&)> value;
  std::function<std::string(const nlohmann::json&, const ResultRow&)> show;  // value is never null here
};

std::string num(const nlohmann::json& v, const char* spec) {
  return fmt::format(fmt::runtime(spec), v.get<double>());
}

// A column showing the number at `keys` of the record with the fmt `spec`.
Column number_column(const char* key, const char* title, std::vector<const char*> keys, const char* spec) {
  return {key, title, [keys](const ResultRow& r) { return number_at(r.record, keys); },
          [spec](const nlohmann::json& v, const ResultRow&) { return num(v, spec); }};
}

// fold(acc, x) over the numbers stages[].`key`; null when no stage has one.
nlohmann::json fold_stages(const nlohmann::json& rec, const char* key, double (*fold)(double, double)) {
  nlohmann::json acc;
  for (const auto& st : stages_of(rec))
    if (auto x = number_at(st, {key}); x.is_number())
      acc = acc.is_null() ? x.get<double>() : fold(acc.get<double>(), x.get<double>());
  return acc;
}

const std::vector<Column>& columns() {
  static const std::vector<Column> cols = {
      {"name", "variant", [](const ResultRow& r) { return nlohmann::json(r.name); },
       [](const nlohmann::json& v, const ResultRow&) { return v.get<std::string>(); }},
      {"pareto", "frontier", [](const ResultRow& r) { return nlohmann::json(r.pareto); },
       [](const nlohmann::json& v, const ResultRow&) { return std::string(v.get<bool>() ? "\u2605" : ""); }},
      {"baseline", "baseline", [](const ResultRow& r) { return nlohmann::json(r.baseline); },
       [](const nlohmann::json& v, const ResultRow&) { return std::string(v.get<bool>() ? "yes" : ""); }},
      {"task", "task", [](const ResultRow& r) { return nlohmann::json(r.task); },
       [](const nlohmann::json& v, const ResultRow&) { return v.get<std::string>(); }},
      {"stages", "stages",
       [](const ResultRow& r) {
         std::string s;
         for (const auto& st : stages_of(r.record)) {
           const nlohmann::json* k = path(st, {"kind"});
           if (!s.empty()) s += '+';
           s += k && k->is_string() ? k->get<std::string>() : std::string("?");
         }
         return nlohmann::json(s);
       },
       [](const nlohmann::json& v, const ResultRow&) { return v.get<std::string>(); }},
      {"quality_name", "metric", [](const ResultRow& r) { return nlohmann::json(r.quality_name); },
       [](const nlohmann::json& v, const ResultRow&) { return v.get<std::string>(); }},
      {"quality", "quality",
       [](const ResultRow& r) { return r.error.empty() ? nlohmann::json(r.quality) : nlohmann::json(); },
       [](const nlohmann::json& v, const ResultRow& r) { return format_quality(r.quality_name, v.get<double>()); }},
      number_column("kld", "KLD", {"eval", "kld"}, "{:.4g}"),
      {"top1_agreement", "agreement",
       [](const ResultRow& r) {
         return number_at(r.record, {"eval", "top1_agreement"});
       },
       [](const nlohmann::json& v, const ResultRow&) { return format_quality("top1_agreement", v.get<double>()); }},
      number_column("p50_ms", "p50 ms", {"bench", "latency_ms", "p50"}, "{:.2f}"),
      number_column("p99_ms", "p99 ms", {"bench", "latency_ms", "p99"}, "{:.2f}"),
      {"throughput_per_s", "throughput /s", [](const ResultRow& r) { return best_throughput(r.record); },
       [](const nlohmann::json& v, const ResultRow&) { return num(v, "{:.1f}"); }},
      {"size_bytes", "size MB",
       [](const ResultRow& r) { return r.error.empty() ? nlohmann::json(r.size_bytes) : nlohmann::json(); },
       [](const nlohmann::json& v, const ResultRow&) { return fmt::format("{:.2f}", v.get<double>() / 1e6); }},
      {"joules_per_inference", "energy J/inf",
       [](const ResultRow& r) {
         return number_at(r.record, {"bench", "energy", "joules_per_inference"});
       },
       [](const nlohmann::json& v, const ResultRow& r) {
         const nlohmann::json* e = path(r.record, {"bench", "energy", "estimated"});
         return num(v, "{:.3g}") + (e && e->is_boolean() && e->get<bool>() ? " (est.)" : "");
       }},
      {"energy_estimated", "energy estimated",
       [](const ResultRow& r) {
         const nlohmann::json* e = path(r.record, {"bench", "energy", "estimated"});
         return e && e->is_boolean() ? *e : nlohmann::json();
       },
       [](const nlohmann::json& v, const ResultRow&) { return std::string(v.get<bool>() ? "yes" : "no"); }},
      number_column("usd_per_1k", "USD / 1k", {"bench", "cost", "usd_per_1k"}, "{:.6f}"),
      {"compress_seconds", "compress s",
       [](const ResultRow& r) { return fold_stages(r.record, "seconds", [](double a, double b) { return a + b; }); },
       [](const nlohmann::json& v, const ResultRow&) { return num(v, "{:.1f}"); }},
      {"compress_peak_rss_bytes", "compress peak MB",
       [](const ResultRow& r) {
         const nlohmann::json v =
             fold_stages(r.record, "peak_rss_bytes", [](double a, double b) { return std::max(a, b); });
         return v.is_null() ? v : nlohmann::json(static_cast<int64_t>(v.get<double>()));  // bytes stay an integer
       },
       [](const nlohmann::json& v, const ResultRow&) { return fmt::format("{:.0f}", v.get<double>() / 1e6); }},
      {"error", "error",
       [](const ResultRow& r) { return r.error.empty() ? nlohmann::json() : nlohmann::json(r.error); },
       [](const nlohmann::json& v, const ResultRow&) { return v.get<std::string>(); }},
  };
  return cols;
}

// RFC 4180: quoted when the field holds a comma, quote or line break; quotes doubled.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_value(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return csv_field(v.get<std::string>());
  return v.dump();
}

// A Markdown table cell: HTML-escaped (Markdown renders inline HTML), pipes and line breaks neutralised.
std::string md_cell(const std::string& s) {
  std::string out;
  for (char c : html_escape(s)) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n' || c == '\r')
      out += ' ';
    else
      out += c;
  }
  return out;
}

}  // namespace

std::string machine_line(const ReportInput& in) {
  const nlohmann::json& m = in.machine;
  auto str = [&](const char* k) {
    const nlohmann::json* v = path(m, {k});
    return v ? (v->is_string() ? v->get<std::string>() : v->dump()) : std::string("?");
  };
  if (!m.is_object()) return "machine not recorded";
  return fmt::format("{} ({}, {} threads of {} cores)", str("cpu"), str("isa"), str("threads"), str("cores"));
}

bool any_estimated_energy(const ReportInput& in) {
  for (const ResultRow& r : in.rows)
    if (const nlohmann::json* e = path(r.record, {"bench", "energy", "estimated"}); e && *e == true) return true;
  return false;
}

std::vector<std::vector<std::string>> stage_cost_rows(const ReportInput& in) {
  std::vector<std::vector<std::string>> rows;
  for (const ResultRow& r : in.rows)
    for (const auto& st : stages_of(r.record)) {
      const nlohmann::json* k = path(st, {"kind"});
      const nlohmann::json s = number_at(st, {"seconds"}), b = number_at(st, {"peak_rss_bytes"});
      rows.push_back({r.name, k && k->is_string() ? k->get<std::string>() : "?",
                      s.is_number() ? fmt::format("{:.1f}", s.get<double>()) : "\u2014",
                      b.is_number() ? fmt::format("{:.0f}", b.get<double>() / 1e6) : "\u2014"});
    }
  return rows;
}

bool is_fraction_metric(const std::string& name) {
  return name == "accuracy" || name == "macro_f1" || name == "top1_agreement";
}

std::string format_quality(const std::string& name, double value) {
  return is_fraction_metric(name) ? fmt::format("{:.2f}%", 100 * value) : fmt::format("{:.4f}", value);
}

std::vector<std::string> report_columns() {
  std::vector<std::string> k;
  for (const Column& c : columns()) k.push_back(c.key);
  return k;
}

std::vector<std::string> report_column_titles() {
  std::vector<std::string> k;
  for (const Column& c : columns()) k.push_back(c.title);
  return k;
}

nlohmann::json column_values(const ResultRow& row) {
  nlohmann::json v = nlohmann::json::array();
  for (const Column& c : columns()) v.push_back(c.value(row));
  return v;
}

std::vector<std::string> display_values(const ResultRow& row) {
  std::vector<std::string> out;
  for (const Column& c : columns()) {
    const nlohmann::json v = c.value(row);
    out.push_back(v.is_null() ? "\u2014" : c.show(v, row));
  }
  return out;
}

ReportInput load_report_input(const std::filesystem::path& results_jsonl) {
  ReportInput in;
  in.source = results_jsonl;
  in.rows = read_results(results_jsonl);
  mark_pareto(in.rows);
  std::vector<const ResultRow*> order;
  for (const ResultRow& r : in.rows)
    if (r.baseline) order.push_back(&r);
  for (const ResultRow& r : in.rows) order.push_back(&r);
  for (const ResultRow* r : order) {
    const nlohmann::json* m = path(r->record, {"bench", "machine"});
    if (!m || !m->is_object()) continue;
    in.machine = *m;
    if (const nlohmann::json* c = path(r->record, {"bench", "commit"}); c && c->is_string()) in.commit = *c;
    break;
  }
  return in;
}

std::string render_text_table(const std::vector<std::vector<std::string>>& cells) {
  std::vector<size_t> width;
  for (const auto& r : cells) {
    width.resize(std::max(width.size(), r.size()), 0);
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], unicode::count_cps(r[c]));
  }
  std::string out;
  for (size_t r = 0; r < cells.size(); ++r) {
    std::string line;
    for (size_t c = 0; c < cells[r].size(); ++c) {
      const std::string& s = cells[r][c];
      const std::string pad(width[c] - unicode::count_cps(s), ' ');
      line += c == 0 ? s + pad : "  " + pad + s;
    }
    out += line + "\n";
    if (r == 0) out += std::string(unicode::count_cps(line), '-') + "\n";
  }
  return out;
}

std::string render_console_table(const ReportInput& in, const std::vector<std::string>& columns) {
  const std::vector<std::string> keys = report_columns(), titles = report_column_titles();
  std::vector<size_t> idx;
  for (const std::string& w : columns) {
    const auto it = std::find(keys.begin(), keys.end(), w);
    if (it == keys.end()) fail("report: no column `{}` (the columns are those of report.csv)", w);
    idx.push_back(static_cast<size_t>(it - keys.begin()));
  }
  std::vector<std::vector<std::string>> cells(1);
  for (size_t c : idx) cells[0].push_back(titles[c]);
  for (const ResultRow& row : in.rows) {
    const std::vector<std::string> v = display_values(row);
    cells.emplace_back();
    for (size_t c : idx) cells.back().push_back(v[c]);
    if (row.pareto && !idx.empty() && keys[idx[0]] == "name") cells.back()[0] += " *";
  }
  return render_text_table(cells);
}

std::string render_csv(const ReportInput& in) {
  std::string out;
  for (const std::string& k : report_columns()) {
    if (!out.empty()) out += ',';
    out += k;
  }
  out += "\n";
  for (const ResultRow& r : in.rows) {
    const nlohmann::json v = column_values(r);
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out += ',';
      out += csv_value(v[i]);
    }
    out += "\n";
  }
  return out;
}

nlohmann::json render_json(const ReportInput& in) {
  nlohmann::json table = nlohmann::json::array(), rows = nlohmann::json::array(), frontier = nlohmann::json::array(),
                 errors = nlohmann::json::array();
  const std::vector<std::string> keys = report_columns();
  for (const ResultRow& r : in.rows) {
    const nlohmann::json v = column_values(r);
    nlohmann::json t = nlohmann::json::object();
    for (size_t i = 0; i < keys.size(); ++i) t[keys[i]] = v[i];
    table.push_back(t);
    rows.push_back(r.record);
    if (r.pareto) frontier.push_back(r.name);
    if (!r.error.empty()) errors.push_back({{"name", r.name}, {"line", r.line}, {"error", r.error}});
  }
  return {{"schema", "shrink.report/1"},
          {"source", in.source.string()},
          {"machine", in.machine},
          {"commit", in.commit},
          {"columns", keys},
          {"table", table},
          {"frontier", frontier},
          {"errors", errors},
          {"rows", rows}};
}

std::string render_markdown(const ReportInput& in) {
  std::string out = "# shrink report\n\n";
  size_t n_front = 0, n_err = 0;
  for (const ResultRow& r : in.rows) n_front += r.pareto, n_err += !r.error.empty();
  out += fmt::format("{} variants from `{}`: {} on the Pareto frontier (quality, p99 latency, size), {} failed.  \n",
                     in.rows.size(), md_cell(in.source.string()), n_front, n_err);
  out += fmt::format("Machine: {}; commit `{}`.\n\n", md_cell(machine_line(in)), md_cell(in.commit));
  out += "## Pareto frontier\n\n";
  for (const ResultRow& r : in.rows)
    if (r.pareto)
      out += fmt::format("- **{}**: {} {}, p99 {:.2f} ms, {:.2f} MB\n", md_cell(r.name), md_cell(r.quality_name),
                         format_quality(r.quality_name, r.quality), r.p99_ms, r.size_bytes / 1e6);
  out += "\n## All variants\n\n|";
  for (const std::string& t : report_column_titles()) out += fmt::format(" {} |", md_cell(t));
  out += "\n|";
  for (size_t i = 0; i < report_columns().size(); ++i) out += i < 1 ? " --- |" : " ---: |";
  out += "\n";
  for (const ResultRow& r : in.rows) {
    out += "|";
    for (const std::string& c : display_values(r)) out += fmt::format(" {} |", md_cell(c));
    out += "\n";
  }
  if (any_estimated_energy(in))
    out +=
        "\nEnergy marked (est.) is an estimate: process CPU time x watts per core (RAPL was not readable); "
        "see docs/benchmarks.md.\n";
  std::string stages;
  for (const auto& row : stage_cost_rows(in)) {
    stages += "|";
    for (const std::string& c : row) stages += fmt::format(" {} |", md_cell(c));
    stages += "\n";
  }
  if (!stages.empty()) {
    out +=
        "\n## Compression cost per stage\n\n| variant | stage | seconds | peak RSS MB |\n| --- | --- | ---: | ---: |\n";
    out += stages;
  }
  if (n_err) {
    out += "\n## Failed configurations\n\n";
    for (const ResultRow& r : in.rows)
      if (!r.error.empty()) out += fmt::format("- **{}** (line {}): {}\n", md_cell(r.name), r.line, md_cell(r.error));
  }
  return out;
}

namespace {
void write_text(const std::filesystem::path& p, const std::string& text) {
  AtomicFileWriter w(p);
  w.write(text.data(), text.size());
  w.commit();
}
}  // namespace

ReportPaths write_report(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir))
    fail("{}: not a directory; pass the --out directory of `shrink compress`, `sweep` or `demo`", dir.string());
  return write_report(dir, load_report_input(dir / "results.jsonl"));
}

ReportPaths write_report(const std::filesystem::path& dir, const ReportInput& in) {
  // Render everything first: an error leaves no file half-written or out of step with the others.
  const std::string md = render_markdown(in), csv = render_csv(in),
                    json = render_json(in).dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                    html = render_html(in);
  ReportPaths p{dir / "report.md", dir / "report.json", dir / "report.csv", dir / "report.html"};
  write_text(p.markdown, md);
  write_text(p.json, json);
  write_text(p.csv, csv);
  write_text(p.html, html);
  return p;
}

}  // namespace shrink
