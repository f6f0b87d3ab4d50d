// shrink distill --teacher DIR --student-layers N --data FILE | --images [DIR] --out DIR2: knowledge distillation of a
// BERT / DistilBERT classifier (TSV data), a ViT image classifier (Fashion-MNIST IDX images) or a LLaMA language model
// (text) into a student with fewer / narrower layers.
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/core/timer.h>
#include <shrink/train/data.h>
#include <shrink/train/distill.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <tuple>
#include <type_traits>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/train_flags.h"

namespace shrink::cli {

namespace {

struct Flags {
  std::string teacher, out, baseline_out, tokenizer, layer_map;
  DataFlags data;    // --data (TSV for classifiers, text for LMs) or --images; --limit, --max-length, --val-fraction
  TrainFlags train;  // --lr 0 and an empty --decay mean the task's default (schedule())
  int student_layers = 0, student_hidden = 0, student_ff = 0;
  float temperature = 4.f, alpha = 0.4f, hidden_weight = 0.f;
  int ctx = 128;
  double dropout = 0.1;
  bool baseline = false;
  CommonFlags common;
};

Flags& F() {
  static Flags f;
  return f;
}

bool quiet() {
  return F().common.quiet || F().common.json;
}

void note(const std::string& s) {
  if (!quiet()) std::fprintf(stderr, "%s\n", s.c_str());
}

train::KdOptions kd_options(int teacher_layers) {
  const Flags& f = F();
  train::KdOptions kd;
  kd.temperature = f.temperature;
  kd.alpha = f.alpha;
  kd.hidden_weight = f.hidden_weight;
  kd.layer_map = f.layer_map.empty() ? train::default_layer_map(teacher_layers, f.student_layers)
                                     : train::parse_layer_map(f.layer_map, teacher_layers, f.student_layers);
  return kd;
}

// Fewer layers of the same width start from the mapped teacher layers; a narrower student starts fresh.
bool init_from_teacher() {
  return F().student_hidden <= 0 && F().student_ff <= 0;
}

std::string map_str(const std::vector<int>& m) {
  std::string s;
  for (int v : m) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

int64_t count_params(const std::vector<train::NamedParam>& ps) {
  int64_t n = 0;
  for (auto& p : ps) n += p.var.numel();
  return n;
}

// The training flags with the task's learning rate and decay where --lr / --decay were not given.
train::TrainSchedule schedule(float default_lr, const char* default_decay) {
  TrainFlags t = F().train;
  if (t.lr <= 0) t.lr = default_lr;
  if (t.decay.empty()) t.decay = default_decay;
  return t.schedule();
}

// The report fields of both tasks: the student, how it was distilled, the time and the training report.
nlohmann::json report_json(const ModelConfig& sc, const train::KdOptions& kd, int64_t teacher_params,
                           int64_t student_params, double seconds, nlohmann::json train) {
  const Flags& f = F();
  return {{"out", f.out},
          {"teacher", f.teacher},
          {"teacher_parameters", teacher_params},
          {"student_parameters", student_params},
          {"student_layers", sc.num_layers},
          {"student_hidden", sc.hidden_size},
          {"layer_map", kd.layer_map},
          {"init", init_from_teacher() ? "teacher_layers" : "fresh"},
          {"temperature", kd.temperature},
          {"alpha", kd.alpha},
          {"hidden_weight", kd.hidden_weight},
          {"seconds", seconds},
          {"train", std::move(train)}};
}

// One run: a fresh make_student() trained by distill(student, kd, progress label) and saved to `out` (unless empty);
// returns the student, its training report and the seconds the training took.
template <class MakeStudent, class Distill>
auto run_student(const MakeStudent& make_student, const Distill& distill, const train::KdOptions& kd, const char* label,
                 const std::string& out, const std::filesystem::path& tok_file) {
  Timer timer;
  auto student = make_student();
  auto rep = distill(*student, kd, label);
  const double seconds = timer.elapsed_ms() * 1e-3;
  if (!out.empty()) student->save(out, tok_file);
  return std::tuple(std::move(student), std::move(rep), seconds);
}

// --baseline: the same student trained without the teacher (alpha 1, no hidden matching), saved to --baseline-out;
// adds its time and training report to `j` and returns the report.
template <class MakeStudent, class Distill>
auto train_baseline(nlohmann::json& j, const train::KdOptions& kd, const std::filesystem::path& tok_file,
                    const MakeStudent& make_student, const Distill& distill) {
  note("baseline: the same student without the teacher");
  train::KdOptions plain = kd;
  plain.alpha = 1.f;
  plain.hidden_weight = 0.f;
  auto [base, brep, seconds] = run_student(make_student, distill, plain, "baseline", F().baseline_out, tok_file);
  j["baseline_seconds"] = seconds;
  j["baseline_train"] = brep.to_json();
  return brep;
}

void distill_classifier(Model& tm) {
  Flags& f = F();
  // Images carry no tokenizer; text students get the teacher's.
  const std::filesystem::path tok_file =
      tm.config().image_size > 0 ? std::filesystem::path() : train::tokenizer_file_of(f.teacher, f.tokenizer);
  const auto tok = tok_file.empty() ? nullptr : load_tokenizer(tok_file);
  const train::TrainableEncoder teacher(tm.config(), tm.tensors(), f.train.seed);
  const ModelConfig& tc = teacher.config();
  const ClassifySplit data = load_classify_sources(f.data, tc, f.teacher, tok.get(), f.train.seed);
  const train::ClassifySource &tr = *data.train, &va = *data.val;
  const train::KdOptions kd = kd_options(tc.num_layers);
  const ModelConfig sc = train::student_config(tc, f.student_layers, f.student_hidden, f.student_ff);
  auto make_student = [&] {
    auto s = init_from_teacher() ? std::make_unique<train::TrainableEncoder>(
                                       sc, train::select_layers(teacher.state(), kd.layer_map), f.train.seed)
                                 : std::make_unique<train::TrainableEncoder>(sc, f.train.seed);
    s->dropout = static_cast<float>(f.dropout);
    return s;
  };
  const train::TrainOptions o(schedule(5e-4f, "linear"));
  auto distill = [&](train::TrainableEncoder& s, const train::KdOptions& k, const char* what) {
    return train::distill_classifier(s, teacher, tr, va, o, k, progress_line(quiet(), what));
  };

  const double teacher_acc = train::accuracy(teacher, va);
  note(
      fmt::format("teacher {} ({} layers, hidden {}): val accuracy {:.2f}% on {} examples; student {} layers, "
                  "hidden {}, ff {} {}",
                  f.teacher, tc.num_layers, tc.hidden_size, 100 * teacher_acc, va.size(), sc.num_layers, sc.hidden_size,
                  sc.intermediate_size,
                  init_from_teacher() ? "from teacher layers " + map_str(kd.layer_map) : std::string("fresh")));
  const auto [student, rep, kd_seconds] = run_student(make_student, distill, kd, "distill", f.out, tok_file);
  nlohmann::json j = report_json(sc, kd, count_params(teacher.parameters()), count_params(student->parameters()),
                                 kd_seconds, rep.to_json());
  j.update({{"task", "classify"},
            {"teacher_accuracy", teacher_acc},
            {"student_accuracy", rep.best_val_accuracy},
            {"train_examples", tr.size()},
            {"val_examples", va.size()}});
  if (f.baseline) j["baseline_accuracy"] = train_baseline(j, kd, tok_file, make_student, distill).best_val_accuracy;
  if (f.common.json) return print_json(j);
  if (f.common.quiet) return;
  std::printf("%s: student accuracy %.2f%% (teacher %.2f%%%s), %lld -> %lld parameters, %.1f s\n", f.out.c_str(),
              100 * rep.best_val_accuracy, 100 * teacher_acc,
              f.baseline
                  ? fmt::format(", without the teacher {:.2f}%", 100 * j["baseline_accuracy"].get<double>()).c_str()
                  : "",
              static_cast<long long>(j["teacher_parameters"].get<int64_t>()),
              static_cast<long long>(j["student_parameters"].get<int64_t>()), kd_seconds);
}

void distill_lm(Model& tm) {
  Flags& f = F();
  check(!f.data.images_given,
        "{}: {} is a language model; --images feeds ViT image classifiers; pass --data FILE.txt (plain text)",
        f.teacher, tm.config().architecture);
  check(!f.data.data.empty(), "distill: a language-model teacher needs --data FILE.txt (plain text)");
  std::string text = read_text_file(f.data.data);
  check(!text.empty(), "{}: the text file is empty; distillation needs text", f.data.data);
  if (f.data.limit > 0 && static_cast<size_t>(f.data.limit) < text.size()) text.resize(f.data.limit);
  const std::filesystem::path tok_file = train::tokenizer_file_of(f.teacher, f.tokenizer);
  const train::TrainableDecoder teacher(tm.config(), tm.tensors());
  const ModelConfig& tc = teacher.config();
  const std::vector<int32_t> ids = tm.require_tokenizer().encode(text, false);
  auto [tr, va] = train::split_lm_data(ids, f.ctx, f.data.val_fraction);
  const train::KdOptions kd = kd_options(tc.num_layers);
  const ModelConfig sc = train::student_config(tc, f.student_layers, f.student_hidden, f.student_ff);
  auto make_student = [&] {
    return init_from_teacher()
               ? std::make_unique<train::TrainableDecoder>(sc, train::select_layers(teacher.state(), kd.layer_map))
               : std::make_unique<train::TrainableDecoder>(sc, f.train.seed);
  };
  const train::LmTrainOptions o(schedule(1e-3f, "cosine"));
  auto distill = [&](train::TrainableDecoder& s, const train::KdOptions& k, const char* what) {
    return train::distill_lm(s, teacher, tr, va, o, k, lm_progress_line(quiet(), what));
  };

  const double teacher_ppl = std::exp(train::lm_nll(teacher, va));
  note(
      fmt::format("teacher {} ({} layers, hidden {}): val ppl {:.3f} on {} chunks of {}; student {} layers, hidden "
                  "{}, ff {} {}",
                  f.teacher, tc.num_layers, tc.hidden_size, teacher_ppl, va.size(), f.ctx, sc.num_layers,
                  sc.hidden_size, sc.intermediate_size,
                  init_from_teacher() ? "from teacher layers " + map_str(kd.layer_map) : std::string("fresh")));
  const auto [student, rep, kd_seconds] = run_student(make_student, distill, kd, "distill", f.out, tok_file);
  nlohmann::json j =
      report_json(sc, kd, teacher.parameter_count(), student->parameter_count(), kd_seconds, rep.to_json());
  j.update({{"task", "lm"},
            {"teacher_ppl", teacher_ppl},
            {"student_ppl", rep.best_val_ppl},
            {"student_initial_ppl", rep.initial_val_ppl},
            {"ctx", f.ctx},
            {"train_chunks", tr.size()},
            {"val_chunks", va.size()}});
  if (f.baseline) j["baseline_ppl"] = train_baseline(j, kd, tok_file, make_student, distill).best_val_ppl;
  if (f.common.json) return print_json(j);
  if (f.common.quiet) return;
  std::printf("%s: student val ppl %.3f (teacher %.3f, student at start %.3f%s), %lld -> %lld parameters, %.1f s\n",
              f.out.c_str(), rep.best_val_ppl, teacher_ppl, rep.initial_val_ppl,
              f.baseline ? fmt::format(", without the teacher {:.3f}", j["baseline_ppl"].get<double>()).c_str() : "",
              static_cast<long long>(teacher.parameter_count()), static_cast<long long>(student->parameter_count()),
              kd_seconds);
}

}  // namespace

void register_distill(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "distill",
      "knowledge distillation of a classifier (BERT/DistilBERT on TSV, ViT on --images) or a LLaMA LM (text) into a "
      "student with fewer and/or narrower layers");
  Flags& f = F();
  f.train.lr = 0.f;  // the task's default
  f.train.decay.clear();
  sub->add_option("--teacher", f.teacher, "teacher model (directory, or llama2.c .bin with --tokenizer)")->required();
  f.data.add_to(sub, true, "classifier: TSV sentence<TAB>label with a header; LM: plain text");
  sub->add_option("--out", f.out, "student output directory")->required();
  sub->add_option("--student-layers", f.student_layers, "layers of the student")
      ->required()
      ->check(CLI::PositiveNumber);
  sub->add_option("--layer-map", f.layer_map,
                  "teacher layers the student's start from / are matched to, e.g. 0,2,4 (default: evenly spaced "
                  "including the first and last)");
  sub->add_option("--student-hidden", f.student_hidden, "narrower hidden size (fresh initialisation)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--student-ff", f.student_ff, "narrower feed-forward size (fresh initialisation)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--temperature", f.temperature, "softmax temperature T of the soft targets (default 4)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--alpha", f.alpha, "weight of the hard-label loss; the soft loss gets 1 - alpha (default 0.4)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--hidden-weight", f.hidden_weight,
                  "weight of hidden-state MSE along the layer map (learned projection when widths differ; 0: off)")
      ->check(CLI::Range(0.0, 1e6));
  sub->add_flag("--baseline", f.baseline, "also train the same student without the teacher, for comparison");
  sub->add_option("--baseline-out", f.baseline_out, "save the --baseline student here");
  sub->add_option("--tokenizer", f.tokenizer, "tokenizer file (needed for a llama2.c .bin teacher)");
  sub->add_option("--ctx", f.ctx, "LM: tokens per training sequence")->check(CLI::Range(2, 8192));
  sub->add_option("--epochs", f.train.epochs)->check(CLI::PositiveNumber);
  sub->add_option("--batch", f.train.batch)->check(CLI::PositiveNumber);
  sub->add_option("--accumulate", f.train.accumulate)->check(CLI::PositiveNumber);
  sub->add_option("--lr", f.train.lr, "peak learning rate (default 5e-4 classifier, 1e-3 LM)");
  sub->add_option("--warmup", f.train.warmup, "warmup fraction")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--decay", f.train.decay, "constant | linear | cosine (default linear classifier, cosine LM)");
  sub->add_option("--weight-decay", f.train.weight_decay);
  sub->add_option("--clip", f.train.clip, "max gradient norm (0: off)");
  sub->add_option("--dropout", f.dropout, "classifier student dropout")->check(CLI::Range(0.0, 0.9));
  sub->add_option("--max-minutes", f.train.max_minutes, "time budget per trained student (0: none)");
  sub->add_option("--eval-every", f.train.eval_every, "updates between validation runs (0: each epoch)");
  sub->add_option("--patience", f.train.patience, "validation runs without improvement before stopping (0: never)");
  sub->add_option("--seed", f.train.seed);
  add_common_flags(sub, f.common);
  sub->callback([] {
    apply(F().common);
    auto tm = open_model(F().teacher, F().tokenizer);
    if (tm->kind() == ModelKind::Decoder)
      distill_lm(*tm);
    else
      distill_classifier(*tm);
  });
}

}  // namespace shrink::cli
