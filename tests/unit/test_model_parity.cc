// GPT-2, BERT, DistilBERT and LLaMA (HF layout) against the independent numpy implementation in
// tests/reference/: random checkpoints written by its own safetensors writer, logits within 1e-4.
#include <gtest/gtest.h>
#include <shrink/core/mmap.h>
#include <shrink/models/model.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "unit/test_util.h"

namespace shrink {
namespace {

const std::string kPython = "/usr/bin/python3";
const std::string kRef = std::string(SHRINK_SOURCE_DIR) + "/tests/reference/";

void run(const std::string& cmd) {
  const int rc = std::system((cmd + " 2>&1").c_str());
  ASSERT_EQ(rc, 0) << "command failed: " << cmd;
}

struct Case {
  std::string arch, extra;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.arch << c.extra;
}

class Parity : public ::testing::TestWithParam<Case> {};

// Rows of different lengths, right-padded; decoders compare only the unpadded positions.
nlohmann::json make_input(int vocab, bool pairs, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<int> lengths = {7, 3, 12};
  const int T = 12;
  nlohmann::json in;
  for (int len : lengths) {
    std::vector<int> ids(T, 0), mask(T, 0), types(T, 0);
    for (int t = 0; t < len; ++t) {
      ids[t] = static_cast<int>(rng() % vocab);
      mask[t] = 1;
      types[t] = pairs && t >= len / 2 ? 1 : 0;
    }
    in["input_ids"].push_back(ids);
    in["attention_mask"].push_back(mask);
    in["token_type_ids"].push_back(types);
  }
  return in;
}

TEST_P(Parity, LogitsMatchNumpyReference) {
  const Case& c = GetParam();
  const auto dir = testing::temp_dir("parity-" + c.arch);
  const auto model_dir = dir / "model";
  run(kPython + " " + kRef + "make_random_model.py --arch " + c.arch + " --out " + model_dir.string() + " --seed 7 " +
      c.extra);
  auto model = load_model(model_dir);
  const ModelConfig& cfg = model->config();
  const bool encoder = model->kind() == ModelKind::Encoder;
  nlohmann::json in = make_input(cfg.vocab_size, cfg.type_vocab_size > 1, 11);
  {
    std::ofstream f(dir / "in.json");
    f << in.dump();
  }
  run(kPython + " " + kRef + "run_reference.py --model " + model_dir.string() + " --input " +
      (dir / "in.json").string() + " --out " + (dir / "out.json").string());
  const auto ref = nlohmann::json::parse(read_text_file(dir / "out.json"));
  const int B = static_cast<int>(in["input_ids"].size());
  const int T = static_cast<int>(in["input_ids"][0].size());
  double max_err = 0;
  if (encoder) {
    auto& enc = dynamic_cast<EncoderModel&>(*model);
    BatchEncoding b;
    b.batch = B;
    b.seq = T;
    for (int i = 0; i < B; ++i)
      for (int t = 0; t < T; ++t) {
        b.ids.push_back(in["input_ids"][i][t].get<int>());
        b.attention_mask.push_back(in["attention_mask"][i][t].get<int>());
        b.type_ids.push_back(in["token_type_ids"][i][t].get<int>());
      }
    EncoderOutput out = enc.forward(b);
    const int H = cfg.hidden_size;
    const auto& hs = ref.at("last_hidden_state");
    for (int i = 0; i < B; ++i)
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h)
          max_err =
              std::max(max_err, std::fabs(hs[i][t][h].get<double>() - out.hidden.data<float>()[(i * T + t) * H + h]));
    if (ref.contains("logits")) {
      ASSERT_TRUE(out.logits.defined() && out.logits.numel() == int64_t{B} * cfg.num_labels);
      for (int i = 0; i < B; ++i)
        for (int l = 0; l < cfg.num_labels; ++l)
          max_err = std::max(
              max_err, std::fabs(ref["logits"][i][l].get<double>() - out.logits.data<float>()[i * cfg.num_labels + l]));
    }
    if (ref.contains("pooler_output") && out.pooled.numel() > 0)
      for (int i = 0; i < B; ++i)
        for (int h = 0; h < H; ++h)
          max_err = std::max(max_err,
                             std::fabs(ref["pooler_output"][i][h].get<double>() - out.pooled.data<float>()[i * H + h]));
  } else {
    auto& dec = dynamic_cast<DecoderModel&>(*model);
    const int V = cfg.vocab_size;
    for (int i = 0; i < B; ++i) {
      std::vector<int32_t> ids;
      for (int t = 0; t < T; ++t)
        if (in["attention_mask"][i][t].get<int>()) ids.push_back(in["input_ids"][i][t].get<int>());
      std::vector<float> logits(ids.size() * V);
      KvCache cache = dec.new_cache();
      // First half as prefill, the rest token by token: exercises both paths against one reference.
      const int64_t half = static_cast<int64_t>(ids.size()) / 2 + 1;
      dec.forward(cache, ids.data(), half, logits.data(), true);
      for (size_t t = half; t < ids.size(); ++t) dec.forward(cache, &ids[t], 1, &logits[t * V], false);
      for (size_t t = 0; t < ids.size(); ++t)
        for (int v = 0; v < V; ++v)
          max_err = std::max(max_err, std::fabs(ref["logits"][i][t][v].get<double>() - logits[t * V + v]));
    }
    // The same sequences batched as a server runs them (DecoderModel::forward_batch): sequence i joins at step i
    // with its first half as one prompt while the earlier ones decode a token each, and leaves when its tokens run
    // out. Every row of every step is the next-token logits at that sequence's position in the reference.
    std::vector<std::vector<int32_t>> seq_ids(B);
    for (int i = 0; i < B; ++i)
      for (int t = 0; t < T; ++t)
        if (in["attention_mask"][i][t].get<int>()) seq_ids[i].push_back(in["input_ids"][i][t].get<int>());
    std::vector<KvCache> caches;
    for (int i = 0; i < B; ++i) caches.push_back(dec.new_cache());
    std::vector<float> scratch, logits;
    double batch_err = 0;
    int rows_checked = 0, max_rows = 0;
    for (int step = 0;; ++step) {
      std::vector<SeqTokens> seqs;
      std::vector<int> who;
      for (int i = 0; i < B && i <= step; ++i) {
        KvCache& c = caches[i];
        const int64_t len = static_cast<int64_t>(seq_ids[i].size());
        const int64_t n = c.pos == 0 ? len / 2 + 1 : 1;
        if (c.pos + n > len) continue;
        seqs.push_back({&c, seq_ids[i].data() + c.pos, n});
        who.push_back(i);
      }
      if (seqs.empty() && step >= B) break;
      if (seqs.empty()) continue;
      max_rows = std::max(max_rows, static_cast<int>(seqs.size()));
      logits.assign(seqs.size() * V, 0.f);
      dec.forward_batch(seqs, logits.data(), scratch);
      for (size_t j = 0; j < seqs.size(); ++j) {
        const int64_t t = caches[who[j]].pos - 1;
        for (int v = 0; v < V; ++v)
          batch_err = std::max(batch_err, std::fabs(ref["logits"][who[j]][t][v].get<double>() - logits[j * V + v]));
        ++rows_checked;
      }
    }
    std::printf("%s%s: forward_batch, %d rows in batches of up to %d: max abs error %.3g\n", c.arch.c_str(),
                c.extra.c_str(), rows_checked, max_rows, batch_err);
    int expect_rows = 0;  // one row for the prompt, one per later token
    for (const auto& ids : seq_ids) expect_rows += static_cast<int>(ids.size() - ids.size() / 2);
    EXPECT_EQ(rows_checked, expect_rows);
    EXPECT_GE(max_rows, 2);
    EXPECT_LE(batch_err, 1e-4);
  }
  std::printf("%s%s: max abs error vs numpy reference %.3g\n", c.arch.c_str(), c.extra.c_str(), max_err);
  EXPECT_LE(max_err, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Models, Parity,
                         ::testing::Values(Case{"gpt2", ""}, Case{"gpt2", " --dtype bf16"}, Case{"bert", ""},
                                           Case{"bert-cls", ""}, Case{"distilbert", ""},
                                           Case{"distilbert-cls", " --labels 3"}, Case{"llama", ""},
                                           Case{"llama", " --no-tie --kv-heads 2 --rope-theta 500000"},
                                           Case{"llama", " --dtype f16"}),
                         [](const auto& info) {
                           std::string n = info.param.arch + info.param.extra;
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace shrink
