// The recipe runner: stages as child processes with their cost, completion markers for resume, one result record
// per measured model (eval + bench + info children), DIR/final and the report.
#include <fcntl.h>
#include <shrink/compress/pipeline.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/subprocess.h>
#include <shrink/formats/model_dir.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace shrink {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSchema = "shrink.result/1";

std::string hash_of(const nlohmann::json& j) {
  const std::string s = j.dump();
  return sha256_hex(s.data(), s.size());
}

void write_json_atomic(const fs::path& path, const nlohmann::json& j) {
  AtomicFileWriter w(path);
  const std::string s = j.dump(2) + "\n";
  w.write(s.data(), s.size());
  w.commit();
}

nlohmann::json read_json_or_null(const fs::path& path) {
  if (!fs::is_regular_file(path)) return nullptr;
  try {
    return nlohmann::json::parse(read_text_file(path));
  } catch (const std::exception&) {
    return nullptr;  // a damaged marker means "not done": the stage is redone
  }
}

void say(const PipelineOptions& opt, const std::string& line) {
  if (opt.quiet) return;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

bool has_flag(const PipelineOptions& opt, const std::string& command, const std::string& flag) {
  const auto it = opt.commands.find(command);
  return it != opt.commands.end() && it->second.flags.count(flag) > 0;
}

// Flags every child gets when its command takes them: the tokenizer (llama2.c models; not for `train`, whose
// --tokenizer is the vocabulary to train with) and the thread count.
void add_common_args(const Recipe& r, const PipelineOptions& opt, const std::string& command,
                     std::vector<std::string>& args) {
  if (!r.in.tokenizer.empty() && command != "train" && has_flag(opt, command, "tokenizer")) {
    args.push_back("--tokenizer");
    args.push_back(r.in.tokenizer);
  }
  if (opt.threads > 0 && has_flag(opt, command, "threads")) {
    args.push_back("--threads");
    args.push_back(std::to_string(opt.threads));
  }
}

// Runs `shrink ARGS --json` and returns its stdout object; a failure names what was being done and the log.
nlohmann::json run_json(const PipelineOptions& opt, std::vector<std::string> args, const fs::path& log,
                        const std::string& what, ProcessResult* cost = nullptr) {
  args.push_back("--json");
  ProcessOptions po;
  po.exe = opt.exe;
  po.args = args;
  po.log_file = log;
  po.pass_stderr = !opt.quiet;
  const ProcessResult r = run_process(po);
  if (!r.ok())
    fail("{} failed: `{}` {}\n(full log: {})", what, format_command("shrink", args), r.describe_failure(),
         log.string());
  if (cost) *cost = r;
  // The object is the last non-empty stdout line (a command may print more before it).
  size_t end = r.out.find_last_not_of("\n ");
  if (end == std::string::npos) return nlohmann::json::object();
  const size_t start = r.out.rfind('\n', end);
  const std::string line = r.out.substr(start == std::string::npos ? 0 : start + 1, end + 1 - (start + 1));
  try {
    return nlohmann::json::parse(line);
  } catch (const std::exception& e) {
    fail("{}: `{}` printed no JSON object ({}); see {}", what, format_command("shrink", args), e.what(), log.string());
  }
}

// eval + bench + info of `model` -> one result record (docs/results.md).
nlohmann::json measure(const Recipe& r, const PipelineOptions& opt, const std::string& model, const std::string& name,
                       bool is_baseline, const nlohmann::json& stages, const fs::path& log) {
  const std::string& task = r.in.task;
  std::vector<std::string> eval_args{"eval", model};
  if (task == "lm") {
    eval_args.insert(eval_args.end(), {"--text", r.in.text});
  } else if (task == "image" && has_flag(opt, "eval", "images")) {
    eval_args.insert(eval_args.end(), {"--images", r.in.images});
  } else {
    eval_args.insert(eval_args.end(), {"--data", recipe_eval_input(r.in)});
  }
  if (!is_baseline) eval_args.insert(eval_args.end(), {"--baseline", opt.model});
  for (const auto& a : flag_args(r.eval)) eval_args.push_back(a);
  add_common_args(r, opt, "eval", eval_args);
  const nlohmann::json ev = run_json(opt, eval_args, log, "evaluating " + name);

  std::vector<std::string> bench_args{"bench", model};
  for (const auto& a : flag_args(r.bench)) bench_args.push_back(a);
  add_common_args(r, opt, "bench", bench_args);
  const nlohmann::json bench = run_json(opt, bench_args, log, "benchmarking " + name);

  std::vector<std::string> info_args{"info", model};
  add_common_args(r, opt, "info", info_args);
  const nlohmann::json info = run_json(opt, info_args, log, "inspecting " + name);

  nlohmann::json quality;
  if (task == "lm") {
    quality = {{"name", "ppl"}, {"value", ev.value("ppl", 0.0)}, {"higher_is_better", false}};
  } else {
    quality = {{"name", "accuracy"}, {"value", ev.value("accuracy", 0.0)}, {"higher_is_better", true}};
  }
  nlohmann::json breakdown = nlohmann::json::object();
  if (info.contains("layers"))
    for (const auto& l : info["layers"]) {
      const std::string scheme = l.value("scheme", std::string("fp32"));
      breakdown[scheme] = breakdown.value(scheme, int64_t{0}) + l.value("bytes", int64_t{0});
    }
  nlohmann::json rec = {{"schema", kSchema},
                        {"name", name},
                        {"baseline", is_baseline},
                        {"model", model},
                        {"stages", stages},
                        {"task", task},
                        {"quality", quality},
                        {"eval", ev},
                        {"bench", bench},
                        {"size_bytes", bench.value("size_bytes", info.value("size_bytes", int64_t{0}))},
                        {"size_breakdown", breakdown}};
  if (info.contains("parameters")) rec["parameters"] = info["parameters"];
  return rec;
}

// The recipe parts that change a measurement but not a model.
nlohmann::json measure_key(const Recipe& r, const PipelineOptions& opt) {
  return {{"baseline_files", model_fingerprint(opt.model)},
          {"eval", r.eval},
          {"bench", r.bench},
          {"task", r.in.task},
          {"input", recipe_eval_input(r.in)},
          {"tokenizer", r.in.tokenizer},
          {"threads", opt.threads},
          {"baseline", opt.model}};
}

// The record for `model`, reused from `marker_file` when it was measured with the same settings.
nlohmann::json measured(const Recipe& r, const PipelineOptions& opt, const fs::path& marker_file, nlohmann::json marker,
                        const std::string& model, const std::string& name, bool is_baseline,
                        const nlohmann::json& stages, const fs::path& log) {
  const std::string key = hash_of(measure_key(r, opt));
  if (marker.is_object() && marker.value("measure_hash", std::string()) == key && marker.contains("record")) {
    nlohmann::json rec = marker["record"];
    rec["name"] = name;  // a sweep configuration reuses a stage under its own id
    rec["stages"] = stages;
    return rec;
  }
  say(opt, fmt::format("[shrink] measuring {} (eval, bench)", name));
  nlohmann::json rec = measure(r, opt, model, name, is_baseline, stages, log);
  if (!marker.is_object()) marker = nlohmann::json::object();
  marker["measure_hash"] = key;
  marker["record"] = rec;
  write_json_atomic(marker_file, marker);
  return rec;
}

// The arguments that make `kind` read `input` and write `output`.
std::vector<std::string> stage_io_args(const Recipe& r, const std::string& kind, const std::string& input,
                                       const std::string& output) {
  if (kind == "distill") return {kind, "--teacher", input, "--out", output};
  if (kind == "train") return {kind, "--init", input, "--task", r.in.task, "--out", output};
  return {kind, input, "--out", output};
}

void link_final(const fs::path& out, const fs::path& target) {
  const fs::path link = out / "final", tmp = out / "final.tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_directory_symlink(fs::relative(target, out), tmp);
  fs::rename(tmp, link);  // atomic replacement of an older link
}

}  // namespace

std::string command_cache_key(const std::string& prefix, int version, const std::vector<std::string>& args) {
  nlohmann::json j = nlohmann::json::object();
  j["args"] = args;
  j["version"] = version;
  return prefix + "-" + hash_of(j).substr(0, 16);
}

std::string model_fingerprint(const std::string& model) {
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory(model, ec)) {
    for (const auto& e : fs::directory_iterator(model, ec))
      if (e.is_regular_file(ec)) files.push_back(e.path());
  } else if (fs::exists(model, ec)) {
    files.push_back(model);
  }
  std::sort(files.begin(), files.end());
  nlohmann::json j = nlohmann::json::array();
  for (const auto& f : files) {
    const auto size = fs::file_size(f, ec);
    const auto mtime = fs::last_write_time(f, ec).time_since_epoch().count();
    j.push_back({f.filename().string(), ec ? -1 : static_cast<int64_t>(size), static_cast<int64_t>(mtime)});
  }
  return hash_of(j).substr(0, 16);
}

std::string sweep_row_key(const Recipe& r, const PipelineOptions& opt, bool baseline) {
  nlohmann::json stages = nlohmann::json::array();
  if (!baseline)
    for (const auto& st : r.stages)
      stages.push_back({{"kind", st.kind}, {"params", resolved_stage_params(r, st, opt.commands.at(st.kind))}});
  return hash_of({{"measure", measure_key(r, opt)}, {"stages", stages}}).substr(0, 16);
}

std::string stage_dir_name(size_t index, const std::string& kind) {
  return fmt::format("{:02d}-{}", index + 1, kind);
}

void append_jsonl(const fs::path& file, const nlohmann::json& row) {
  const std::string line = row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail("{}: cannot open for appending: {}", file.string(), std::strerror(errno));
  const ssize_t n = ::write(fd, line.data(), line.size());
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size()))
    fail("{}: could not append a result row: {}; check the disk space", file.string(), std::strerror(err));
}

std::vector<nlohmann::json> read_jsonl(const fs::path& file) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(file);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      rows.push_back(nlohmann::json::parse(line));
    } catch (const std::exception& e) {
      fail("{}:{}: not a JSON object ({}); remove or repair that line", file.string(), n, e.what());
    }
    if (!rows.back().is_object() || !rows.back().contains("name") || !rows.back()["name"].is_string())
      fail("{}:{}: a result row needs a string `name`; remove or repair that line", file.string(), n);
  }
  return rows;
}

nlohmann::json measure_baseline(const Recipe& r, const PipelineOptions& opt) {
  fs::create_directories(opt.out / "baseline");
  const fs::path marker = opt.out / "baseline" / "measure.json";
  return measured(r, opt, marker, read_json_or_null(marker), opt.model, "baseline", true, nlohmann::json::array(),
                  opt.out / "baseline" / "measure.log");
}

PipelineResult run_pipeline(const Recipe& r, const PipelineOptions& opt) {
  fs::create_directories(opt.out / "stages");
  const fs::path results = opt.results.empty() ? opt.out / "results.jsonl" : opt.results;
  if (opt.measure_baseline || opt.measure_every_stage) {
    AtomicFileWriter w(results);  // rows are rebuilt from the markers on every run, then appended
    w.commit();
  }
  PipelineResult res;
  auto emit = [&](const nlohmann::json& rec) {
    append_jsonl(results, rec);
    res.records.push_back(rec);
  };

  if (opt.measure_baseline) emit(measure_baseline(r, opt));

  std::string input = opt.model, chain;
  nlohmann::json stages = nlohmann::json::array();
  std::string prev_hash = hash_of({{"model", fs::absolute(opt.model).lexically_normal().string()},
                                   {"files", model_fingerprint(opt.model)},
                                   {"tokenizer", r.in.tokenizer}});
  for (size_t i = 0; i < r.stages.size(); ++i) {
    const RecipeStage& st = r.stages[i];
    const nlohmann::json params = resolved_stage_params(r, st, opt.commands.at(st.kind));
    const std::string hash = hash_of({{"input", prev_hash}, {"kind", st.kind}, {"params", params}});
    const fs::path dir = opt.out / "stages" / stage_dir_name(i, st.kind);
    const fs::path model = dir / "model", marker_file = dir / "stage.json", log = dir / "stage.log";
    const std::string label = fmt::format("stage {}/{} {}", i + 1, r.stages.size(), stage_dir_name(i, st.kind));
    chain += (chain.empty() ? "" : "+") + st.kind;
    nlohmann::json marker = read_json_or_null(marker_file);
    if (marker.is_object() && marker.value("hash", std::string()) == hash && fs::exists(model)) {
      say(opt,
          fmt::format("[shrink] {}: skipped (done earlier with the same parameters; {})", label, marker_file.string()));
      ++res.stages_skipped;
    } else {
      fs::remove_all(dir);
      fs::create_directories(dir);
      say(opt, fmt::format("[shrink] {}: running", label));
      std::vector<std::string> args = stage_io_args(r, st.kind, input, model.string());
      for (const auto& a : flag_args(params)) args.push_back(a);
      add_common_args(r, opt, st.kind, args);
      ProcessResult cost;
      const nlohmann::json output = run_json(opt, args, log, label, &cost);
      if (!fs::exists(model))
        fail("{}: `{}` succeeded but wrote no model at {}; see {}", label, format_command("shrink", args),
             model.string(), log.string());
      marker = {{"hash", hash},
                {"kind", st.kind},
                {"params", params},
                {"command", format_command("shrink", args)},
                {"seconds", cost.wall_s},
                {"cpu_seconds", cost.cpu_s},
                {"peak_rss_bytes", cost.peak_rss_bytes},
                {"output", output}};
      write_json_atomic(marker_file, marker);  // written last: its presence means the stage is complete
      say(opt, fmt::format("[shrink] {}: done in {:.1f} s ({:.1f} s CPU), peak RSS {:.1f} MiB", label, cost.wall_s,
                           cost.cpu_s, static_cast<double>(cost.peak_rss_bytes) / (1 << 20)));
      ++res.stages_run;
    }
    stages.push_back({{"kind", st.kind},
                      {"params", st.params},
                      {"seconds", marker["seconds"]},
                      {"cpu_seconds", marker["cpu_seconds"]},
                      {"peak_rss_bytes", marker["peak_rss_bytes"]}});
    const bool last = i + 1 == r.stages.size();
    if (opt.measure_every_stage || last) {
      const std::string name = last && !opt.final_name.empty() ? opt.final_name : chain;
      const nlohmann::json rec = measured(r, opt, marker_file, marker, model.string(), name, false, stages, log);
      if (opt.measure_baseline || opt.measure_every_stage) {
        emit(rec);
      } else {
        res.records.push_back(rec);
      }
    }
    input = model.string();
    prev_hash = hash;
  }
  res.final_model = opt.out / "stages" / stage_dir_name(r.stages.size() - 1, r.stages.back().kind) / "model";
  link_final(opt.out, res.final_model);
  if (opt.run_report) run_report(opt);
  return res;
}

void run_report(const PipelineOptions& opt) {
  if (!opt.commands.count("report")) {
    say(opt, fmt::format("[shrink] note: this build has no `shrink report`; the results are in {}",
                         (opt.out / "results.jsonl").string()));
    return;
  }
  ProcessOptions po;
  po.exe = opt.exe;
  po.args = {"report", opt.out.string()};
  po.log_file = opt.out / "report.log";
  po.pass_stderr = !opt.quiet;
  const ProcessResult r = run_process(po);
  if (!r.ok()) {
    std::fprintf(stderr, "[shrink] warning: `shrink report %s` %s\n", opt.out.c_str(), r.describe_failure().c_str());
    return;
  }
  if (!opt.quiet) std::fwrite(r.out.data(), 1, r.out.size(), stderr);
}

}  // namespace shrink
