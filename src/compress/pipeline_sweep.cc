// Sweeps: each configuration is a recipe run into DIR/configs/<id>/ with only its final model measured; its row is
// appended as soon as it finishes (anytime), ids already written are skipped (resume), ranks split the list.
#include <shrink/compress/pipeline.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>

#include <cstdio>
#include <functional>
#include <map>
#include <set>

namespace shrink {

namespace fs = std::filesystem;

namespace {

// The key each name's row must carry to be reused: the baseline's and every configuration's.
std::map<std::string, std::string> expected_keys(const std::vector<SweepConfig>& configs, const PipelineOptions& p) {
  std::map<std::string, std::string> keys;
  if (configs.empty()) return keys;
  keys["baseline"] = sweep_row_key(configs.front().recipe, p, true);
  for (const auto& c : configs) keys[c.id] = sweep_row_key(c.recipe, p, false);
  return keys;
}

// A row of a name this sweep measures, made from another model or with other settings.
bool stale(const nlohmann::json& row, const std::map<std::string, std::string>& keys) {
  const auto k = keys.find(row["name"].get<std::string>());
  return k != keys.end() && row.value("key", std::string()) != k->second;
}

std::vector<fs::path> rank_files(const fs::path& out) {
  std::vector<fs::path> files;
  if (fs::is_directory(out))
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string n = e.path().filename().string();
      if (n.rfind("results-rank-", 0) == 0 && e.path().extension() == ".jsonl") files.push_back(e.path());
    }
  return files;
}

// Names already measured, with the current key, in the results file or any rank file of an earlier run.
std::set<std::string> done_names(const fs::path& out, const std::map<std::string, std::string>& keys) {
  std::set<std::string> done;
  auto add = [&](const fs::path& f) {
    for (const auto& row : read_jsonl(f))
      if (!stale(row, keys)) done.insert(row["name"].get<std::string>());
  };
  add(out / "results.jsonl");
  for (const auto& f : rank_files(out)) add(f);
  return done;
}

void write_rows(const fs::path& file, const std::vector<nlohmann::json>& rows) {
  AtomicFileWriter w(file);
  for (const auto& row : rows) {
    const std::string line = row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    w.write(line.data(), line.size());
  }
  w.commit();
}

// Rank 0 drops the stale rows of DIR/results.jsonl before measuring (other ranks only read it, and filter the same
// way), so the report never shows a row of another model.
void drop_stale_rows(const fs::path& out, const std::map<std::string, std::string>& keys,
                     const std::function<void(const std::string&)>& say) {
  const fs::path file = out / "results.jsonl";
  std::vector<nlohmann::json> rows = read_jsonl(file), kept;
  std::vector<std::string> dropped;
  for (auto& row : rows) {
    if (stale(row, keys))
      dropped.push_back(row["name"].get<std::string>());
    else
      kept.push_back(std::move(row));
  }
  if (dropped.empty()) return;
  write_rows(file, kept);
  say(fmt::format("{} row(s) of {} ({}{}) came from another model or other settings: measuring them again",
                  dropped.size(), file.string(), dropped.front(), dropped.size() > 1 ? ", ..." : ""));
}

}  // namespace

fs::path sweep_results_file(const fs::path& out, int rank, int ranks) {
  return ranks <= 1 ? out / "results.jsonl" : out / fmt::format("results-rank-{}.jsonl", rank);
}

std::vector<std::string> run_sweep_rank(const std::vector<SweepConfig>& configs, const SweepOptions& opt) {
  const fs::path out = opt.pipeline.out;
  fs::create_directories(out / "configs");
  const fs::path results = sweep_results_file(out, opt.rank, opt.ranks);
  auto say = [&](const std::string& s) {
    if (!opt.pipeline.quiet)
      std::fprintf(stderr, "[shrink sweep%s] %s\n", opt.ranks > 1 ? fmt::format(" rank {}", opt.rank).c_str() : "",
                   s.c_str());
  };
  const std::map<std::string, std::string> keys = expected_keys(configs, opt.pipeline);
  if (opt.rank == 0) drop_stale_rows(out, keys, say);
  const std::set<std::string> done = done_names(out, keys);
  std::vector<std::string> ran;
  if (opt.rank == 0 && !done.count("baseline") && !configs.empty()) {
    say("baseline: measuring");
    nlohmann::json rec = measure_baseline(configs.front().recipe, opt.pipeline);
    rec["key"] = keys.at("baseline");
    append_jsonl(results, rec);
    ran.push_back("baseline");
  }
  for (size_t i = 0; i < configs.size(); ++i) {
    if (static_cast<int>(i % static_cast<size_t>(opt.ranks)) != opt.rank) continue;
    const SweepConfig& c = configs[i];
    if (done.count(c.id)) {
      say(fmt::format("{} ({}/{}): skipped, already in the results", c.id, i + 1, configs.size()));
      continue;
    }
    say(fmt::format("{} ({}/{}): running", c.id, i + 1, configs.size()));
    PipelineOptions p = opt.pipeline;
    p.out = out / "configs" / c.id;
    p.measure_baseline = false;
    p.measure_every_stage = false;
    p.final_name = c.id;
    p.run_report = false;
    nlohmann::json rec;
    try {
      const PipelineResult pr = run_pipeline(c.recipe, p);
      rec = pr.records.back();
    } catch (const Error& e) {
      say(fmt::format("{}: failed: {}", c.id, e.what()));
      nlohmann::json stages = nlohmann::json::array();
      for (const auto& st : c.recipe.stages) stages.push_back({{"kind", st.kind}, {"params", st.params}});
      rec = {{"schema", "shrink.result/1"},
             {"name", c.id},
             {"baseline", false},
             {"model", (p.out / "final").string()},
             {"stages", stages},
             {"task", c.recipe.in.task},
             {"error", e.what()}};
    }
    rec["key"] = keys.at(c.id);
    append_jsonl(results, rec);
    ran.push_back(c.id);
  }
  return ran;
}

size_t merge_sweep_results(const std::vector<SweepConfig>& configs, const SweepOptions& opt) {
  const fs::path& out = opt.pipeline.out;
  const int ranks = opt.ranks;
  const std::map<std::string, std::string> keys = expected_keys(configs, opt.pipeline);
  std::map<std::string, size_t> order;  // baseline first, then the space's order
  order["baseline"] = 0;
  for (size_t i = 0; i < configs.size(); ++i) order[configs[i].id] = i + 1;
  std::vector<nlohmann::json> rows = read_jsonl(out / "results.jsonl");
  std::vector<fs::path> files;
  for (int r = 0; r < ranks; ++r) {
    const fs::path f = sweep_results_file(out, r, ranks);
    if (f == out / "results.jsonl" || !fs::exists(f)) continue;
    for (auto& row : read_jsonl(f)) rows.push_back(std::move(row));
    files.push_back(f);
  }
  std::vector<nlohmann::json> merged;
  std::set<std::string> seen;
  for (auto& row : rows)
    if (!stale(row, keys) && seen.insert(row["name"].get<std::string>()).second) merged.push_back(std::move(row));
  std::stable_sort(merged.begin(), merged.end(), [&](const nlohmann::json& a, const nlohmann::json& b) {
    const auto ia = order.find(a["name"].get<std::string>()), ib = order.find(b["name"].get<std::string>());
    const size_t ka = ia == order.end() ? order.size() : ia->second, kb = ib == order.end() ? order.size() : ib->second;
    return ka < kb;
  });
  write_rows(out / "results.jsonl", merged);
  for (const auto& f : files) fs::remove(f);
  return merged.size();
}

}  // namespace shrink
