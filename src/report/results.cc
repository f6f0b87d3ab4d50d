// Reading and validating result records; the field rules are those of docs/results.md.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/report/pareto.h>
#include <shrink/report/results.h>

#include <map>

namespace shrink {

namespace {

struct Where {
  const std::string& file;
  int line;
};

const char* type_name(const nlohmann::json& v) {
  return v.type_name();
}

// The member `key` of `obj` (path names it in messages), which must exist and satisfy `ok`.
template <typename Ok>
const nlohmann::json& field(const Where& w, const nlohmann::json& obj, const char* key, const std::string& path,
                            const char* expected, Ok ok) {
  auto it = obj.find(key);
  if (it == obj.end())
    fail("{}:{}: field `{}` is missing (expected {}); every record needs it, see docs/results.md", w.file, w.line, path,
         expected);
  if (!ok(*it))
    fail("{}:{}: field `{}`: expected {}, found {} {}; fix the record (docs/results.md)", w.file, w.line, path,
         expected, type_name(*it), it->dump().substr(0, 60));
  return *it;
}

bool is_number(const nlohmann::json& v) {
  return v.is_number();
}
bool is_string(const nlohmann::json& v) {
  return v.is_string();
}
bool is_bool(const nlohmann::json& v) {
  return v.is_boolean();
}
bool is_object(const nlohmann::json& v) {
  return v.is_object();
}
bool is_size(const nlohmann::json& v) {
  return v.is_number_integer() && v.get<int64_t>() >= 0;
}

}  // namespace

ResultRow parse_result_line(std::string_view line, const std::string& file, int line_no) {
  const Where w{file, line_no};
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded())
    fail("{}:{}: not valid JSON (expected one result object per line); fix or delete the line", file, line_no);
  if (!j.is_object())
    fail("{}:{}: expected a JSON object, found {}; each line is one result record (docs/results.md)", file, line_no,
         j.type_name());
  ResultRow r;
  r.line = line_no;
  const std::string schema = field(w, j, "schema", "schema", "a string", is_string).get<std::string>();
  if (schema != kResultSchema)
    fail("{}:{}: field `schema`: expected \"{}\", found \"{}\"; this shrink reads only that version", file, line_no,
         kResultSchema, schema);
  r.name = field(w, j, "name", "name", "a string", is_string).get<std::string>();
  if (r.name.empty()) fail("{}:{}: field `name`: expected a non-empty string, found \"\"", file, line_no);
  if (auto e = j.find("error"); e != j.end()) {
    if (!e->is_string()) field(w, j, "error", "error", "a string", is_string);
    r.error = e->get<std::string>();
    if (r.error.empty()) r.error = "(failed, no message)";
  }
  // Optional for error rows (a configuration that failed may have been neither evaluated nor benchmarked).
  auto opt = [&](const char* key) { return r.error.empty() || j.contains(key); };
  if (opt("baseline")) r.baseline = field(w, j, "baseline", "baseline", "true or false", is_bool).get<bool>();
  if (opt("model")) r.model = field(w, j, "model", "model", "a string (model path)", is_string).get<std::string>();
  if (opt("task"))
    r.task = field(w, j, "task", "task", "a string (classify, image or lm)", is_string).get<std::string>();
  if (opt("stages")) field(w, j, "stages", "stages", "an array", [](const nlohmann::json& v) { return v.is_array(); });
  if (r.error.empty()) {
    const auto& q = field(w, j, "quality", "quality", "an object {name, value, higher_is_better}", is_object);
    r.quality_name = field(w, q, "name", "quality.name", "a string", is_string).get<std::string>();
    r.quality = field(w, q, "value", "quality.value", "a number", is_number).get<double>();
    r.higher_is_better =
        field(w, q, "higher_is_better", "quality.higher_is_better", "true or false", is_bool).get<bool>();
    const auto& b = field(w, j, "bench", "bench", "an object (shrink bench --json)", is_object);
    const auto& l = field(w, b, "latency_ms", "bench.latency_ms", "an object {p50, ..., p99}", is_object);
    r.p99_ms = field(w, l, "p99", "bench.latency_ms.p99", "a number (ms)", is_number).get<double>();
    r.size_bytes = field(w, j, "size_bytes", "size_bytes", "a non-negative integer", is_size).get<int64_t>();
  }
  r.record = std::move(j);
  return r;
}

std::vector<ResultRow> read_results(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    fail("{}: no such file; `shrink compress`, `sweep` or `demo` write it into their --out directory", path.string());
  const std::string text = read_text_file(path);
  std::vector<ResultRow> rows;
  std::map<std::string, int> names;
  int baseline_line = 0;
  size_t pos = 0;
  for (int line_no = 1; pos < text.size(); ++line_no) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    ResultRow r = parse_result_line(line, path.string(), line_no);
    if (auto [it, fresh] = names.emplace(r.name, line_no); !fresh)
      fail("{}:{}: field `name`: \"{}\" is already used on line {}; names must be unique within the file",
           path.string(), line_no, r.name, it->second);
    if (r.baseline) {
      if (baseline_line)
        fail("{}:{}: field `baseline`: a second baseline (the first is on line {}); one row per file is the baseline",
             path.string(), line_no, baseline_line);
      baseline_line = line_no;
    }
    rows.push_back(std::move(r));
  }
  if (rows.empty()) fail("{}: no result records (the file is empty); run compress, sweep or demo first", path.string());
  return rows;
}

void mark_pareto(std::vector<ResultRow>& rows) {
  std::vector<ParetoPoint> pts;
  for (const ResultRow& r : rows)
    pts.push_back({r.quality, r.higher_is_better, r.p99_ms, static_cast<double>(r.size_bytes), !r.error.empty()});
  const std::vector<bool> on = pareto_frontier(pts);
  for (size_t i = 0; i < rows.size(); ++i) {
    rows[i].pareto = on[i];
    rows[i].record["pareto"] = on[i];
  }
}

}  // namespace shrink
