// The language-model training loop, chunking, evaluation and the byte-level tokenizer (train/lm_trainer.h).
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/tokenizers/tokenizer.h>
#include <shrink/train/lm_trainer.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace shrink::train {

std::pair<LmData, LmData> split_lm_data(const std::vector<int32_t>& tokens, int64_t ctx, double val_fraction) {
  check(ctx > 0, "language-model data: context {}; expected > 0", ctx);
  check(val_fraction >= 0 && val_fraction < 1, "validation fraction {}; expected 0 <= f < 1", val_fraction);
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t chunks = n > ctx ? (n - 1) / ctx : 0;
  check(chunks > 0, "language-model data: {} tokens do not fill one chunk of {} + 1; use more text or a smaller --ctx",
        n, ctx);
  int64_t nval = static_cast<int64_t>(std::llround(val_fraction * static_cast<double>(chunks)));
  if (val_fraction > 0 && chunks > 1) nval = std::clamp<int64_t>(nval, 1, chunks - 1);
  LmData tr, va;
  tr.tokens = va.tokens = tokens;
  tr.ctx = va.ctx = ctx;
  for (int64_t c = 0; c < chunks; ++c) (c < chunks - nval ? tr : va).starts.push_back(c * ctx);
  return {std::move(tr), std::move(va)};
}

LmBatch make_lm_batch(const LmData& d, const std::vector<int64_t>& idx) {
  LmBatch b;
  b.batch = static_cast<int64_t>(idx.size());
  b.seq = d.ctx;
  b.ids.reserve(static_cast<size_t>(b.batch * b.seq));
  b.targets.reserve(b.ids.capacity());
  for (int64_t i : idx) {
    const int64_t s = d.starts.at(static_cast<size_t>(i));
    b.ids.insert(b.ids.end(), d.tokens.begin() + s, d.tokens.begin() + s + d.ctx);
    b.targets.insert(b.targets.end(), d.tokens.begin() + s + 1, d.tokens.begin() + s + d.ctx + 1);
  }
  return b;
}

double lm_nll(const TrainableDecoder& model, const LmData& d, int batch) {
  NoGradGuard ng;
  double total = 0;
  int64_t n = 0;
  for (size_t s = 0; s < d.size(); s += batch) {
    std::vector<int64_t> idx;
    for (size_t i = s; i < std::min(d.size(), s + batch); ++i) idx.push_back(static_cast<int64_t>(i));
    const LmBatch b = make_lm_batch(d, idx);
    const double l = cross_entropy(model.forward(b.ids, b.batch, b.seq).logits, b.targets).item();
    total += l * static_cast<double>(b.targets.size());
    n += static_cast<int64_t>(b.targets.size());
  }
  return n ? total / static_cast<double>(n) : 0.0;
}

nlohmann::json LmReport::to_json() const {
  nlohmann::json curve = nlohmann::json::array();
  for (auto& [s, p] : val_curve) curve.push_back({{"step", s}, {"val_ppl", p}});
  return {{"steps", steps},
          {"seconds", seconds},
          {"tokens_per_s", tokens_per_s},
          {"gemm_share", gemm_share},
          {"best_val_ppl", best_val_ppl},
          {"initial_val_ppl", initial_val_ppl},
          {"final_train_loss", final_train_loss},
          {"early_stopped", early_stopped},
          {"time_budget_hit", time_budget_hit},
          {"val_curve", curve}};
}

LmReport train_lm(TrainableDecoder& model, const LmData& train, const LmData& val, const LmTrainOptions& opt,
                  const std::function<void(const LmProgress&)>& progress) {
  check(train.size() > 0, "training: no training chunks (text shorter than one --ctx window?)");
  check(opt.batch > 0 && opt.accumulate > 0 && opt.epochs > 0, "training: batch, accumulate and epochs must be > 0");
  const int V = model.config().vocab_size;
  for (int32_t t : train.tokens)
    check(t >= 0 && t < V, "training: token id {} is outside the model's vocabulary of {}", t, V);
  const int64_t per_update = int64_t{opt.batch} * opt.accumulate;
  const int64_t updates_per_epoch =
      std::max<int64_t>(1, (static_cast<int64_t>(train.size()) + per_update - 1) / per_update);
  int64_t total = updates_per_epoch * opt.epochs;
  AdamW adam(model.parameters(), AdamWOptions{0.9f, 0.95f, 1e-8f, opt.weight_decay});
  LrSchedule sched{opt.lr, static_cast<int64_t>(opt.warmup_fraction * static_cast<double>(total)), total, opt.decay};
  TimeBudget budget{opt.max_minutes};
  std::mt19937_64 shuf(opt.seed);
  std::vector<int64_t> order(train.size());
  std::iota(order.begin(), order.end(), 0);

  LmReport rep;
  if (val.size() > 0) {
    rep.initial_val_ppl = std::exp(lm_nll(model, val));
    rep.best_val_ppl = rep.initial_val_ppl;
  }
  // Starting weights count as a candidate: a run that never beats them gives them back.
  ParamSnapshot best = val.size() > 0 ? snapshot(adam.params()) : ParamSnapshot{};
  int since_best = 0;
  double loss_ema = 0;
  const double gemm0 = gemm_seconds();
  Timer timer;
  int64_t step = 0, tokens = 0;
  const int64_t eval_every = opt.eval_every > 0 ? opt.eval_every : updates_per_epoch;
  bool stop = false;
  auto validate = [&] {
    const double ppl = std::exp(lm_nll(model, val));
    rep.val_curve.push_back({step, ppl});
    if (ppl < rep.best_val_ppl) {
      rep.best_val_ppl = ppl;
      best = snapshot(adam.params());
      since_best = 0;
      return false;
    }
    return opt.patience > 0 && ++since_best >= opt.patience;
  };
  for (int epoch = 0; epoch < opt.epochs && !stop; ++epoch) {
    std::shuffle(order.begin(), order.end(), shuf);
    for (int64_t u = 0; u < updates_per_epoch && !stop; ++u) {
      adam.zero_grad();
      double loss_sum = 0;
      int parts = 0;
      for (int a = 0; a < opt.accumulate; ++a) {
        const int64_t base = (u * opt.accumulate + a) * opt.batch;
        if (base >= static_cast<int64_t>(order.size())) break;
        std::vector<int64_t> idx(order.begin() + base,
                                 order.begin() + std::min<int64_t>(base + opt.batch, order.size()));
        const LmBatch b = make_lm_batch(train, idx);
        const DecoderForward out = model.forward(b.ids, b.batch, b.seq);
        Var loss = opt.loss ? opt.loss(out, b, idx) : cross_entropy(out.logits, b.targets);
        loss_sum += loss.item();
        ++parts;
        backward(opt.accumulate > 1 ? scale(loss, 1.f / static_cast<float>(opt.accumulate)) : loss);
        tokens += static_cast<int64_t>(b.targets.size());
      }
      if (opt.clip > 0) clip_grad_norm(adam.params(), opt.clip);
      adam.step(sched.at(step));
      ++step;
      if (opt.after_update) opt.after_update(step);
      const double l = loss_sum / std::max(1, parts);
      loss_ema = step == 1 ? l : 0.95 * loss_ema + 0.05 * l;
      if ((step % eval_every == 0 || step == total) && val.size() > 0 && validate()) {
        rep.early_stopped = true;
        stop = true;
      }
      const double el = timer.elapsed_ms() * 1e-3;
      if (budget.after_update(step, el, eval_every, total, sched)) {
        rep.time_budget_hit = true;
        stop = true;
      }
      if (step >= total) stop = true;
      if (progress) {
        LmProgress p;
        p.step = step;
        p.total_steps = total;
        p.loss = loss_ema;
        p.val_ppl = rep.val_curve.empty() ? -1 : rep.val_curve.back().second;
        p.elapsed_s = el;
        p.eta_s = budget.eta_s(step, total, el);
        progress(p);
      }
    }
  }
  if (val.size() > 0 && (rep.val_curve.empty() || rep.val_curve.back().first != step)) validate();
  if (!best.empty()) restore(adam.params(), best);
  rep.steps = step;
  rep.seconds = timer.elapsed_ms() * 1e-3;
  rep.tokens_per_s = rep.seconds > 0 ? static_cast<double>(tokens) / rep.seconds : 0;
  rep.gemm_share = rep.seconds > 0 ? (gemm_seconds() - gemm0) / rep.seconds : 0;
  rep.final_train_loss = loss_ema;
  return rep;
}

std::filesystem::path tokenizer_file_of(const std::filesystem::path& model,
                                        const std::filesystem::path& explicit_file) {
  if (!explicit_file.empty()) return explicit_file;
  const bool dir = std::filesystem::is_directory(model);
  const std::filesystem::path base = dir ? model : model.parent_path();
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer.bin"}) {
    if (!dir && std::string(name) != "tokenizer.bin") continue;
    if (std::filesystem::is_regular_file(base / name)) return base / name;
  }
  fail("{}: no tokenizer file to carry into the trained model (looked for {}); pass --tokenizer FILE", model.string(),
       dir ? "tokenizer.json, tokenizer.model, tokenizer.bin" : "tokenizer.bin beside it");
}

nlohmann::json byte_level_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_to_unicode(static_cast<uint8_t>(b))] = b;
  vocab["<|endoftext|>"] = 256;
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {{{"id", 256},
         {"content", "<|endoftext|>"},
         {"single_word", false},
         {"lstrip", false},
         {"rstrip", false},
         {"normalized", false},
         {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"post_processor",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", nlohmann::json::array()}}}};
}

}  // namespace shrink::train
