// The per-variant scheduler: dynamic batches for encoders, continuous (token-boundary) batching for decoders.
#include <fmt/format.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/ops/ops.h>
#include <shrink/serve/worker.h>

#include <algorithm>

namespace shrink::serve {

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

ApiError not_started_in_time(const std::string& variant) {
  return api_error(504,
                   fmt::format("the request was not started before its deadline (variant {} is busy); retry later, "
                               "or raise timeout_ms",
                               variant));
}

}  // namespace

struct ModelWorker::Sequence {
  std::shared_ptr<Model> model;  // keeps the model this sequence started on alive across a reload
  std::unique_ptr<TokenStream> stream;
  GenerateJob job;
  Clock::time_point submitted, first_token, last_token;
  size_t kv_bytes = 0;
};

ModelWorker::ModelWorker(std::string variant, std::shared_ptr<Model> model, WorkerOptions options, std::mutex& engine,
                         Metrics& metrics)
    : variant_(std::move(variant)), options_(options), engine_(engine), metrics_(metrics), model_(std::move(model)) {
  check(model_ != nullptr, "variant {}: no model", variant_);
  thread_ = std::thread([this] { run(); });
}

ModelWorker::~ModelWorker() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool ModelWorker::submit(ClassifyJob job) {
  std::lock_guard lock(mu_);
  check(model_->kind() == ModelKind::Encoder, "variant {} is not an encoder", variant_);
  if (classify_queue_.size() >= static_cast<size_t>(options_.max_queue)) return false;
  classify_queue_.push_back({std::move(job), Clock::now()});
  metrics_.set("shrink_queue_depth", {{"variant", variant_}}, static_cast<double>(classify_queue_.size()));
  cv_.notify_all();
  return true;
}

bool ModelWorker::submit(GenerateJob job) {
  std::lock_guard lock(mu_);
  check(model_->kind() == ModelKind::Decoder, "variant {} is not a decoder", variant_);
  if (generate_queue_.size() >= static_cast<size_t>(options_.max_queue)) return false;
  generate_queue_.push_back({std::move(job), Clock::now()});
  metrics_.set("shrink_queue_depth", {{"variant", variant_}}, static_cast<double>(generate_queue_.size()));
  cv_.notify_all();
  return true;
}

size_t ModelWorker::kv_bytes_needed(size_t prompt_tokens, int max_new_tokens) const {
  auto m = model();
  const auto& dec = dynamic_cast<const DecoderModel&>(*m);
  return dec.kv_cache_bytes(static_cast<int64_t>(prompt_tokens) + max_new_tokens, dec.kv_cache_type());
}

void ModelWorker::swap_model(std::shared_ptr<Model> model) {
  std::lock_guard lock(mu_);
  check(model && model->kind() == model_->kind(), "variant {}: a reload must keep the model kind ({})", variant_,
        model_->kind() == ModelKind::Encoder ? "encoder" : "decoder");
  model_ = std::move(model);
}

std::shared_ptr<Model> ModelWorker::model() const {
  std::lock_guard lock(mu_);
  return model_;
}

size_t ModelWorker::queue_depth() const {
  std::lock_guard lock(mu_);
  return classify_queue_.size() + generate_queue_.size();
}

void ModelWorker::update_gauges() {
  const Labels v{{"variant", variant_}};
  metrics_.set("shrink_queue_depth", v, static_cast<double>(classify_queue_.size() + generate_queue_.size()));
  metrics_.set("shrink_running_sequences", v, static_cast<double>(running_.size()));
  metrics_.set("shrink_kv_cache_reserved_bytes", v, static_cast<double>(kv_in_use_));
}

void ModelWorker::run() {
  set_num_threads(num_threads());  // OpenMP's thread count is per thread: give this one the process's
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !classify_queue_.empty() || !generate_queue_.empty() || !running_.empty(); });
    const bool idle = classify_queue_.empty() && generate_queue_.empty() && running_.empty();
    if (idle && stop_) return;
    if (options_.step_hook) {
      lock.unlock();
      options_.step_hook();
      lock.lock();
    }
    if (!classify_queue_.empty()) run_encoder_batch(lock);
    if (!generate_queue_.empty() || !running_.empty()) run_decoder_step(lock);
  }
}

void ModelWorker::run_encoder_batch(std::unique_lock<std::mutex>& lock) {
  const size_t max_batch = static_cast<size_t>(std::max(1, options_.max_batch));
  if (options_.batch_wait_ms > 0) {
    const auto until =
        classify_queue_.front().submitted +
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(options_.batch_wait_ms));
    cv_.wait_until(lock, until, [&] { return stop_ || classify_queue_.size() >= max_batch; });
  }
  std::vector<ClassifyJob> batch, expired;
  const auto now = Clock::now();
  while (!classify_queue_.empty() && batch.size() < max_batch) {
    ClassifyJob job = std::move(classify_queue_.front().job);
    classify_queue_.pop_front();
    (now > job.deadline ? expired : batch).push_back(std::move(job));
  }
  std::shared_ptr<Model> model = model_;
  update_gauges();
  lock.unlock();
  for (auto& job : expired) {
    ClassifyOutcome o;
    o.error = not_started_in_time(variant_);
    job.done(std::move(o));
  }
  if (!batch.empty()) {
    std::vector<ClassifyOutcome> outcomes(batch.size());
    try {
      const auto& enc = dynamic_cast<const EncoderModel&>(*model);
      const ModelConfig& c = enc.config();
      std::vector<std::string> texts;
      for (const auto& job : batch) texts.insert(texts.end(), job.texts.begin(), job.texts.end());
      EncodeOptions eo;
      eo.max_length = std::min(options_.max_length, c.max_position_embeddings);
      const BatchEncoding b = enc.require_tokenizer().encode_batch(texts, eo);
      EncoderOutput out;
      {
        std::lock_guard engine(engine_);
        out = enc.forward(b);
      }
      const float* logits = out.logits.data<float>();
      size_t row = 0;
      for (size_t j = 0; j < batch.size(); ++j) {
        for (size_t t = 0; t < batch[j].texts.size(); ++t, ++row) {
          std::vector<float> p(logits + row * c.num_labels, logits + (row + 1) * c.num_labels);
          ops::softmax(p.data(), c.num_labels);
          outcomes[j].labels.push_back(static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin()));
          outcomes[j].probabilities.push_back(std::move(p));
          outcomes[j].tokens.push_back(b.lengths[row]);
        }
      }
      metrics_.observe("shrink_batch_size", {{"variant", variant_}}, static_cast<double>(batch.size()));
    } catch (const std::exception& e) {
      for (auto& o : outcomes) o.error = api_error(500, fmt::format("variant {}: {}", variant_, e.what()));
    }
    for (size_t j = 0; j < batch.size(); ++j) batch[j].done(std::move(outcomes[j]));
  }
  lock.lock();
}

void ModelWorker::run_decoder_step(std::unique_lock<std::mutex>& lock) {
  // Admission at the token boundary: in arrival order while the worst-case KV cache fits (a sequence alone is
  // always admitted; the server refuses requests larger than the whole budget).
  std::vector<QueuedGeneration> admitted, expired;
  std::vector<size_t> admitted_kv;
  const auto now = Clock::now();
  while (!generate_queue_.empty()) {
    QueuedGeneration& q = generate_queue_.front();
    const bool cancelled = q.job.cancelled && q.job.cancelled->load();
    if (now > q.job.deadline || cancelled) {
      expired.push_back(std::move(q));
      generate_queue_.pop_front();
      continue;
    }
    size_t need = 0;
    {
      const auto& dec = dynamic_cast<const DecoderModel&>(*model_);
      need = dec.kv_cache_bytes(static_cast<int64_t>(q.job.prompt.size()) + q.job.options.max_new_tokens,
                                dec.kv_cache_type());
    }
    if (kv_in_use_ + need > options_.kv_budget_bytes && !(running_.empty() && admitted.empty())) break;
    kv_in_use_ += need;
    admitted_kv.push_back(need);
    admitted.push_back(std::move(q));
    generate_queue_.pop_front();
  }
  std::shared_ptr<Model> model = model_;
  update_gauges();
  lock.unlock();

  for (auto& q : expired) {
    GenerateOutcome o;
    o.error = q.job.cancelled && q.job.cancelled->load()
                  ? api_error(499, "the client closed the connection before the request started")
                  : not_started_in_time(variant_);
    q.job.done(std::move(o));
  }
  auto finish = [&](Sequence& s, std::optional<ApiError> error) {
    GenerateOutcome o;
    o.error = std::move(error);
    if (s.stream) {
      o.ids = s.stream->ids();
      o.text = s.stream->text();
      o.prompt_tokens = s.stream->prompt_tokens();
      o.finish_reason = s.stream->stopped_at_eos() ? "stop" : "length";
    }
    if (!o.error && !o.ids.empty()) {
      o.ttft_ms = ms_between(s.submitted, s.first_token);
      o.tpot_ms = o.ids.size() > 1 ? ms_between(s.first_token, s.last_token) / (o.ids.size() - 1) : 0;
      const Labels v{{"variant", variant_}};
      metrics_.observe("shrink_time_to_first_token_seconds", v, o.ttft_ms / 1000);
      if (o.ids.size() > 1) metrics_.observe("shrink_time_per_output_token_seconds", v, o.tpot_ms / 1000);
    }
    s.job.done(std::move(o));
    kv_in_use_ -= s.kv_bytes;
  };

  // New sequences: the TokenStream checks the prompt against the context; the prompt runs in this round's forward.
  std::vector<std::unique_ptr<Sequence>> joining;
  for (size_t i = 0; i < admitted.size(); ++i) {
    auto s = std::make_unique<Sequence>();
    s->model = model;
    s->job = std::move(admitted[i].job);
    s->submitted = admitted[i].submitted;
    s->kv_bytes = admitted_kv[i];
    try {
      s->stream =
          std::make_unique<TokenStream>(dynamic_cast<const DecoderModel&>(*model), s->job.prompt, s->job.options);
    } catch (const std::exception& e) {
      s->stream.reset();
      finish(*s, api_error(400, fmt::format("variant {}: {}", variant_, e.what()), "prompt"));
      continue;
    }
    joining.push_back(std::move(s));
  }

  // Every running sequence takes its next token from the logits it has; then one forward (per model: a reload
  // leaves older sequences on the model they started on) feeds those tokens and the joining prompts together, so
  // the weights are read once per step whatever the number of sequences. Sequences that end are answered after the
  // metrics are updated, so a client that reads /metrics after its answer sees its tokens counted.
  const auto round_start = Clock::now();
  size_t tokens = 0;
  Ended ended;
  size_t fed = 0;  // sequences this step's forwards ran
  {
    std::lock_guard engine(engine_);
    std::vector<std::unique_ptr<Sequence>*> step;
    for (auto& s : running_) {
      if (s->job.cancelled && s->job.cancelled->load()) {
        ended.emplace_back(std::move(s), api_error(499, "the client closed the connection"));
        continue;
      }
      try {
        int32_t token = 0;
        std::string piece;
        if (s->stream->next(token, piece)) {
          s->last_token = Clock::now();
          if (s->stream->ids().size() == 1) s->first_token = s->last_token;
          if (s->job.on_token) s->job.on_token(token, piece);
          ++tokens;
        }
        if (s->stream->finished()) {
          ended.emplace_back(std::move(s), std::nullopt);
        } else {
          step.push_back(&s);
        }
      } catch (const std::exception& e) {
        ended.emplace_back(std::move(s), api_error(500, fmt::format("variant {}: {}", variant_, e.what())));
      }
    }
    for (auto& s : joining) step.push_back(&s);
    fed = advance_sequences(step, ended);
  }
  for (auto& s : joining)
    if (s) running_.push_back(std::move(s));
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  const double round_s = std::chrono::duration<double>(Clock::now() - round_start).count();
  const Labels v{{"variant", variant_}};
  metrics_.inc("shrink_generated_tokens_total", v, static_cast<double>(tokens));
  if (fed > 0) {
    metrics_.observe("shrink_batch_size", v, static_cast<double>(fed));
    metrics_.inc("shrink_decoder_steps_total", v, 1);
  }
  if (tokens > 0 && round_s > 0) metrics_.set("shrink_tokens_per_second", v, static_cast<double>(tokens) / round_s);
  for (auto& [s, error] : ended) finish(*s, std::move(error));
  lock.lock();
  update_gauges();
}

size_t ModelWorker::advance_sequences(std::vector<std::unique_ptr<Sequence>*>& step, Ended& ended) {
  size_t fed = 0;
  // Groups by model, in order; a failed batch is retried one sequence at a time, so an error is charged to the
  // sequence that caused it (forward_batch checks every sequence before it touches a cache).
  while (!step.empty()) {
    const Model* m = (*step.front())->model.get();
    std::vector<std::unique_ptr<Sequence>*> group, rest;
    for (auto* s : step) ((*s)->model.get() == m ? group : rest).push_back(s);
    step = std::move(rest);
    auto run = [&](const std::vector<std::unique_ptr<Sequence>*>& seqs) {
      std::vector<TokenStream*> streams;
      for (auto* s : seqs) streams.push_back((*s)->stream.get());
      fed += TokenStream::advance(streams, scratch_);
    };
    try {
      run(group);
    } catch (const std::exception&) {
      for (auto* s : group) {
        try {
          run({s});
        } catch (const std::exception& e) {
          const bool prompt = !(*s)->stream->prefilled();
          ended.emplace_back(
              std::move(*s),
              api_error(prompt ? 400 : 500, fmt::format("variant {}: {}", variant_, e.what()), prompt ? "prompt" : ""));
        }
      }
    }
    for (auto* s : group)
      if (*s && (*s)->stream->finished()) ended.emplace_back(std::move(*s), std::nullopt);
  }
  return fed;
}

}  // namespace shrink::serve
