// The classifier training loop, batching, evaluation, and the WordPiece vocabulary builder
// (include/shrink/train/trainer.h).
#include <shrink/core/error.h>
#include <shrink/core/timer.h>
#include <shrink/train/trainer.h>

#include <algorithm>
#include <cctype>
#include <numeric>
#include <unordered_map>

namespace shrink::train {

ClassifyData tokenize_classify(const LabeledText& data, const Tokenizer& tok, int max_length) {
  ClassifyData d;
  d.pad_id = tok.pad_id() >= 0 ? tok.pad_id() : 0;
  EncodeOptions eo;
  eo.max_length = max_length;
  for (size_t i = 0; i < data.texts.size(); ++i) {
    auto e = tok.encode_full(data.texts[i], {}, eo);
    if (e.ids.empty()) continue;
    d.ids.push_back(std::move(e.ids));
    d.labels.push_back(data.labels[i]);
  }
  return d;
}

std::pair<ClassifyData, ClassifyData> split_data(const ClassifyData& all, double val_fraction, uint64_t seed) {
  check(val_fraction >= 0 && val_fraction < 1, "validation fraction {}; expected 0 <= f < 1", val_fraction);
  std::vector<int64_t> idx(all.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 gen(seed);
  std::shuffle(idx.begin(), idx.end(), gen);
  const size_t nval = static_cast<size_t>(val_fraction * static_cast<double>(all.size()));
  ClassifyData tr, va;
  tr.pad_id = va.pad_id = all.pad_id;
  for (size_t k = 0; k < idx.size(); ++k) {
    ClassifyData& dst = k < nval ? va : tr;
    dst.ids.push_back(all.ids[idx[k]]);
    dst.labels.push_back(all.labels[idx[k]]);
  }
  return {std::move(tr), std::move(va)};
}

EncoderBatch ClassifyData::batch(const std::vector<int64_t>& idx) const {
  return make_batch(*this, idx);
}

EncoderBatch ImageData::batch(const std::vector<int64_t>& idx) const {
  EncoderBatch b;
  b.batch = static_cast<int64_t>(idx.size());
  const int64_t per = set->rows * set->cols;  // one channel
  b.patches.resize(static_cast<size_t>(b.batch * per));
  for (int64_t r = 0; r < b.batch; ++r)
    image_patches(*set, rows.empty() ? idx[r] : rows[idx[r]], patch, b.patches.data() + r * per);
  b.seq = per / (int64_t{patch} * patch) + 1;
  return b;
}

std::pair<ImageData, ImageData> split_images(const ImageSet& s, int patch, double val_fraction, uint64_t seed) {
  check(val_fraction >= 0 && val_fraction < 1, "validation fraction {}; expected 0 <= f < 1", val_fraction);
  std::vector<int64_t> idx(s.n);
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 gen(seed);
  std::shuffle(idx.begin(), idx.end(), gen);
  const size_t nval = static_cast<size_t>(val_fraction * static_cast<double>(s.n));
  ImageData tr, va;
  tr.set = va.set = &s;
  tr.patch = va.patch = patch;
  va.rows.assign(idx.begin(), idx.begin() + nval);
  tr.rows.assign(idx.begin() + nval, idx.end());
  return {std::move(tr), std::move(va)};
}

EncoderBatch make_batch(const ClassifyData& d, const std::vector<int64_t>& idx) {
  EncoderBatch b;
  b.batch = static_cast<int64_t>(idx.size());
  for (int64_t i : idx) b.seq = std::max<int64_t>(b.seq, static_cast<int64_t>(d.ids[i].size()));
  b.ids.assign(b.batch * b.seq, d.pad_id);
  b.mask.assign(b.batch * b.seq, 0);
  b.type_ids.assign(b.batch * b.seq, 0);
  for (int64_t r = 0; r < b.batch; ++r) {
    const auto& s = d.ids[idx[r]];
    for (size_t t = 0; t < s.size(); ++t) {
      b.ids[r * b.seq + t] = s[t];
      b.mask[r * b.seq + t] = 1;
    }
  }
  return b;
}

std::vector<int> predict(const TrainableEncoder& model, const ClassifySource& d, int batch) {
  NoGradGuard ng;
  std::mt19937 rng(0);
  std::vector<int> out;
  const int labels = model.config().num_labels;
  for (size_t s = 0; s < d.size(); s += batch) {
    std::vector<int64_t> idx;
    for (size_t i = s; i < std::min(d.size(), s + batch); ++i) idx.push_back(static_cast<int64_t>(i));
    Var logits = model.forward(d.batch(idx), false, rng).logits;
    for (size_t r = 0; r < idx.size(); ++r) {
      const float* l = logits.data() + r * labels;
      out.push_back(static_cast<int>(std::max_element(l, l + labels) - l));
    }
  }
  return out;
}

double accuracy(const TrainableEncoder& m, const ClassifySource& d, int batch) {
  const auto p = predict(m, d, batch);
  int64_t ok = 0;
  for (size_t i = 0; i < p.size(); ++i) ok += p[i] == d.label(i);
  return d.size() ? static_cast<double>(ok) / static_cast<double>(d.size()) : 0.0;
}

nlohmann::json TrainReport::to_json() const {
  nlohmann::json curve = nlohmann::json::array();
  for (auto& [s, a] : val_curve) curve.push_back({{"step", s}, {"val_accuracy", a}});
  return {{"steps", steps},
          {"seconds", seconds},
          {"samples_per_s", samples_per_s},
          {"gemm_share", gemm_share},
          {"best_val_accuracy", best_val_accuracy},
          {"final_train_loss", final_train_loss},
          {"early_stopped", early_stopped},
          {"time_budget_hit", time_budget_hit},
          {"val_curve", curve}};
}

TrainReport train_classifier(TrainableEncoder& model, const ClassifySource& train, const ClassifySource& val,
                             const TrainOptions& opt, const std::function<void(const TrainProgress&)>& progress) {
  check(train.size() > 0, "training: no training examples (empty data file?)");
  check(opt.batch > 0 && opt.accumulate > 0 && opt.epochs > 0, "training: batch, accumulate and epochs must be > 0");
  const int labels = model.config().num_labels;
  for (size_t i = 0; i < train.size(); ++i)
    check(train.label(i) >= 0 && train.label(i) < labels,
          "training: example {} has label {}; the model has {} labels (0..{})", i, train.label(i), labels, labels - 1);
  const int64_t per_update = int64_t{opt.batch} * opt.accumulate;
  const int64_t updates_per_epoch = std::max<int64_t>(1, static_cast<int64_t>(train.size()) / per_update);
  int64_t total = updates_per_epoch * opt.epochs;
  AdamW adam(model.parameters(), AdamWOptions{0.9f, 0.999f, 1e-8f, opt.weight_decay});
  LrSchedule sched{opt.lr, static_cast<int64_t>(opt.warmup_fraction * static_cast<double>(total)), total, opt.decay};
  TimeBudget budget{opt.max_minutes};
  std::mt19937_64 shuf(opt.seed);
  std::mt19937 drop_rng(static_cast<uint32_t>(opt.seed + 1));
  std::vector<int64_t> order(train.size());
  std::iota(order.begin(), order.end(), 0);

  TrainReport rep;
  ParamSnapshot best;
  int since_best = 0;
  double loss_ema = 0;
  const double gemm0 = gemm_seconds();
  Timer timer;
  int64_t step = 0, samples = 0;
  const int64_t eval_every = opt.eval_every > 0 ? opt.eval_every : updates_per_epoch;
  bool stop = false;
  for (int epoch = 0; epoch < opt.epochs && !stop; ++epoch) {
    std::shuffle(order.begin(), order.end(), shuf);
    for (int64_t u = 0; u < updates_per_epoch && !stop; ++u) {
      adam.zero_grad();
      double loss_sum = 0;
      for (int a = 0; a < opt.accumulate; ++a) {
        const int64_t base = (u * opt.accumulate + a) * opt.batch;
        std::vector<int64_t> idx(order.begin() + base,
                                 order.begin() + std::min<int64_t>(base + opt.batch, order.size()));
        const EncoderBatch b = train.batch(idx);
        std::vector<int32_t> y;
        for (int64_t i : idx) y.push_back(train.label(i));
        Var loss = opt.loss ? opt.loss(model.forward(b, true, drop_rng), b, idx, y)
                            : cross_entropy(model.forward(b, true, drop_rng).logits, y);
        loss_sum += loss.item();
        backward(opt.accumulate > 1 ? scale(loss, 1.f / static_cast<float>(opt.accumulate)) : loss);
        samples += static_cast<int64_t>(idx.size());
      }
      if (opt.clip > 0) clip_grad_norm(adam.params(), opt.clip);
      adam.step(sched.at(step));
      ++step;
      if (opt.after_update) opt.after_update(step);
      const double l = loss_sum / opt.accumulate;
      loss_ema = step == 1 ? l : 0.95 * loss_ema + 0.05 * l;
      double el = (timer.elapsed_ms() * 1e-3);
      if ((step % eval_every == 0 || step == total) && val.size() > 0) {
        const double acc = accuracy(model, val);
        rep.val_curve.push_back({step, acc});
        if (acc > rep.best_val_accuracy) {
          rep.best_val_accuracy = acc;
          best = snapshot(adam.params());
          since_best = 0;
        } else if (opt.patience > 0 && ++since_best >= opt.patience) {
          rep.early_stopped = true;
          stop = true;
        }
      }
      el = timer.elapsed_ms() * 1e-3;
      if (budget.after_update(step, el, eval_every, total, sched)) {
        rep.time_budget_hit = true;
        stop = true;
      }
      if (step >= total) stop = true;
      if (progress) {
        TrainProgress p;
        p.step = step;
        p.total_steps = total;
        p.loss = loss_ema;
        p.val_accuracy = rep.val_curve.empty() ? -1 : rep.val_curve.back().second;
        p.elapsed_s = el;
        p.eta_s = budget.eta_s(step, total, el);
        progress(p);
      }
    }
  }
  // A budget or early stop between evaluations: score the final weights too.
  if (val.size() > 0 && (rep.val_curve.empty() || rep.val_curve.back().first != step)) {
    const double acc = accuracy(model, val);
    rep.val_curve.push_back({step, acc});
    if (acc > rep.best_val_accuracy) {
      rep.best_val_accuracy = acc;
      best = snapshot(adam.params());
    }
  }
  if (!best.empty()) restore(adam.params(), best);
  rep.steps = step;
  rep.seconds = (timer.elapsed_ms() * 1e-3);
  rep.samples_per_s = rep.seconds > 0 ? static_cast<double>(samples) / rep.seconds : 0;
  rep.gemm_share = rep.seconds > 0 ? (gemm_seconds() - gemm0) / rep.seconds : 0;
  rep.final_train_loss = loss_ema;
  return rep;
}

nlohmann::json build_wordpiece_tokenizer(const std::vector<std::string>& texts, int vocab_size) {
  const std::vector<std::string> specials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  check(vocab_size > static_cast<int>(specials.size()) + 64,
        "WordPiece vocabulary of {} entries is too small; use at least 128", vocab_size);
  std::unordered_map<std::string, int64_t> words;
  std::unordered_map<std::string, int64_t> chars;
  // Split like BertPreTokenizer (whitespace, then every punctuation char alone) on lowercased ASCII; other bytes
  // are kept within UTF-8 code points.
  for (const auto& t : texts) {
    std::string cur;
    auto flush = [&] {
      if (!cur.empty()) ++words[cur];
      cur.clear();
    };
    for (size_t i = 0; i < t.size();) {
      const unsigned char c = static_cast<unsigned char>(t[i]);
      const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
      std::string cp = t.substr(i, len);
      i += len;
      if (len == 1) {
        if (std::isspace(c)) {
          flush();
          continue;
        }
        cp[0] = static_cast<char>(std::tolower(c));
        if (std::ispunct(c)) {
          flush();
          ++words[cp];
          ++chars[cp];
          continue;
        }
      }
      ++chars[cp];
      cur += cp;
    }
    flush();
  }
  std::vector<std::string> vocab = specials;
  std::unordered_map<std::string, int> seen;
  for (auto& s : vocab) seen[s] = 1;
  std::vector<std::pair<std::string, int64_t>> cs(chars.begin(), chars.end());
  std::sort(cs.begin(), cs.end(),
            [](auto& a, auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  for (auto& [c, n] : cs) {
    if (static_cast<int>(vocab.size()) + 2 > vocab_size) break;
    if (seen.emplace(c, 1).second) vocab.push_back(c);
    if (seen.emplace("##" + c, 1).second) vocab.push_back("##" + c);
  }
  std::vector<std::pair<std::string, int64_t>> ws(words.begin(), words.end());
  std::sort(ws.begin(), ws.end(),
            [](auto& a, auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  for (auto& [w, n] : ws) {
    if (static_cast<int>(vocab.size()) >= vocab_size) break;
    if (w.size() > 100) continue;
    if (seen.emplace(w, 1).second) vocab.push_back(w);
  }
  nlohmann::json v = nlohmann::json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = static_cast<int>(i);
  nlohmann::json added = nlohmann::json::array();
  for (size_t i = 0; i < specials.size(); ++i)
    added.push_back({{"id", static_cast<int>(i)},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  auto special = [](const char* s, int id) { return nlohmann::json{{"id", s}, {"ids", {id}}, {"tokens", {s}}}; };
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "BertNormalizer"},
            {"clean_text", true},
            {"handle_chinese_chars", true},
            {"strip_accents", nullptr},
            {"lowercase", true}}},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "[CLS]"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
              {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}}}},
            {"pair",
             {{{"SpecialToken", {{"id", "[CLS]"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
              {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}},
              {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 1}}}}}},
            {"special_tokens", {{"[CLS]", special("[CLS]", 2)}, {"[SEP]", special("[SEP]", 3)}}}}},
          {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
          {"model",
           {{"type", "WordPiece"},
            {"unk_token", "[UNK]"},
            {"continuing_subword_prefix", "##"},
            {"max_input_chars_per_word", 100},
            {"vocab", v}}}};
}

}  // namespace shrink::train
