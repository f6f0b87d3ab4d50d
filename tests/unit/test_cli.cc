// The `shrink` CLI end to end: --json fields of DESIGN.md, stories260K through the binary, synth
// presets, and the error contract (one clear message, non-zero exit, no crash).
#include <gtest/gtest.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/safetensors.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;
using testing::run_cli;
using testing::temp_dir;

nlohmann::json parse_json(const testing::RunResult& r) {
  EXPECT_EQ(r.code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

std::string stories() {
  return fixture("stories260K/stories260K.bin").string() + " --tokenizer " +
         fixture("stories260K/tok512.bin").string();
}

TEST(Cli, GenerateStoriesGreedyMatchesLlama2c) {
  const auto ref = nlohmann::json::parse(read_text_file(fixture("stories260K/reference.json")));
  auto j = parse_json(run_cli("generate " + stories() + " --prompt 'Once upon a time' -n 64 --no-stop --json"));
  EXPECT_EQ(j["text"], ref["greedy"]["generated_text"]);
  EXPECT_EQ(j["ids"], ref["greedy"]["generated_token_ids"]);
  for (const char* k : {"ttft_ms", "tpot_ms", "tokens_per_s"}) EXPECT_GT(j[k].get<double>(), 0) << k;
}

TEST(Cli, PplStoriesByProtocol) {
  // 8192 bytes -> 4974 tokens; first 1024 in two windows of 512 (REFERENCE.md).
  auto j = parse_json(run_cli("ppl " + stories() + " --text " + fixture("text/tinyshakespeare.txt").string() +
                              " --max-bytes 8192 --max-tokens 1024 --ctx 512 --json"));
  EXPECT_NEAR(j["ppl"].get<double>(), 54.9098756, 54.9098756 * 5e-4);
  EXPECT_NEAR(j["nll"].get<double>(), 4.00569322, 1e-4);
  EXPECT_EQ(j["tokens"].get<int>(), 1022);
}

TEST(Cli, TokenizeJson) {
  auto j = parse_json(run_cli("tokenize " + fixture("stories260K/tok512.bin").string() +
                              " --vocab-size 512 --text 'Once upon a time' --json"));
  EXPECT_EQ(j["ids"], nlohmann::json({1, 403, 407, 261, 378}));
  EXPECT_EQ(j["tokens"].size(), 5u);
}

TEST(Cli, InfoJson) {
  auto j = parse_json(run_cli("info " + stories() + " --json"));
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  // 264,128 floats in the file minus the unused freq_cis tables (2 x 512 x 4).
  EXPECT_EQ(j["parameters"].get<int64_t>(), 264128 - 2 * 512 * 4);
  EXPECT_EQ(j["size_bytes"].get<int64_t>(), 1056540);
  EXPECT_EQ(j["layers"].size(), 5u * 7 + 1);
  EXPECT_TRUE(j["layers"][0].contains("scheme"));
}

TEST(Cli, SynthThenEveryCommand) {
  const auto dir = temp_dir("synth");
  for (const char* preset : {"llama-tiny", "gpt2-tiny", "bert-tiny"}) {
    const std::string out = (dir / preset).string();
    auto s = run_cli(std::string("synth --preset ") + preset + " --out " + out + " --json");
    ASSERT_EQ(s.code, 0) << s.err;
    auto info = parse_json(run_cli("info " + out + " --json"));
    EXPECT_GT(info["parameters"].get<int64_t>(), 0);
    if (std::string(preset) == "bert-tiny") {
      auto c = parse_json(run_cli("classify " + out + " --text 'a fine movie' --json"));
      EXPECT_EQ(c["probabilities"].size(), 2u);
      auto b = parse_json(run_cli("bench " + out + " --batch 2 --seq 16 --iters 3 --json"));
      for (const char* k : {"p50", "p90", "p95", "p99", "max", "mean"}) EXPECT_GT(b["latency_ms"][k].get<double>(), 0);
      EXPECT_GT(b["throughput_per_s"].get<double>(), 0);
      EXPECT_GT(b["peak_rss_bytes"].get<double>(), 0);
      EXPECT_TRUE(b["machine"].contains("cpu") && b["machine"].contains("isa"));
      EXPECT_TRUE(b.contains("commit"));
    } else {
      auto g = parse_json(run_cli("generate " + out + " --prompt 'the tea' -n 5 --no-stop --json"));
      EXPECT_EQ(g["ids"].size(), 5u);
      auto b = parse_json(run_cli("bench " + out + " --prompt-len 8 --gen 4 --iters 2 --json"));
      for (const char* k : {"ttft_ms", "tpot_ms", "tokens_per_s", "size_bytes", "threads"})
        EXPECT_GT(b[k].get<double>(), 0) << k;
    }
  }
}

TEST(Cli, SampledGenerationIsSeeded) {
  auto a = parse_json(run_cli("generate " + stories() +
                              " --prompt 'Once' -n 20 --temperature 0.9 --top-k 40 --top-p 0.9 --seed 5 --json"));
  auto b = parse_json(run_cli("generate " + stories() +
                              " --prompt 'Once' -n 20 --temperature 0.9 --top-k 40 --top-p 0.9 --seed 5 --json"));
  EXPECT_EQ(a["ids"], b["ids"]);
}

// --- error contract ---

void expect_error(const std::string& args, const std::vector<std::string>& needles) {
  auto r = run_cli(args);
  EXPECT_NE(r.code, 0) << args;
  EXPECT_LT(r.code, 128) << "crashed: " << args;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "'" << n << "' not in: " << r.err;
}

TEST(CliErrors, MissingModel) { expect_error("info /nonexistent/model", {"/nonexistent/model"}); }

TEST(CliErrors, EmptyPrompt) { expect_error("generate " + stories() + " --prompt ''", {"prompt", "empty"}); }

TEST(CliErrors, PromptLongerThanContext) {
  std::string long_prompt(3000, 'a');
  for (size_t i = 1; i < long_prompt.size(); i += 2) long_prompt[i] = ' ';
  expect_error("generate " + stories() + " --prompt '" + long_prompt + "' -n 4", {"context", "512"});
}

TEST(CliErrors, MissingTokenizer) {
  expect_error("generate " + fixture("stories260K/stories260K.bin").string() + " --prompt hi", {"tokenizer"});
}

class BrokenModel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir("broken");
    auto s = run_cli("synth --preset llama-tiny --out " + dir_.string() + " --json");
    ASSERT_EQ(s.code, 0) << s.err;
  }
  void edit_config(const std::function<void(nlohmann::json&)>& fn) {
    auto j = nlohmann::json::parse(read_text_file(dir_ / "config.json"));
    fn(j);
    std::ofstream(dir_ / "config.json") << j.dump();
  }
  void edit_tensors(const std::function<void(TensorMap&)>& fn) {
    SafetensorsFile f = read_safetensors(dir_ / "model.safetensors");
    TensorMap t;
    for (auto& [n, v] : f.tensors) t[n] = v.clone();
    f = {};
    fn(t);
    write_safetensors(dir_ / "model.safetensors", t);
  }
  std::filesystem::path dir_;
};

TEST_F(BrokenModel, UnknownArchitectureListsSupported) {
  edit_config([](auto& j) { j["architectures"] = {"FalconForCausalLM"}; j["model_type"] = "falcon"; });
  expect_error("info " + dir_.string(), {"FalconForCausalLM", "LlamaForCausalLM", "BertForSequenceClassification"});
}

TEST_F(BrokenModel, MissingTensorIsNamed) {
  edit_tensors([](TensorMap& t) { t.erase("model.layers.1.mlp.up_proj.weight"); });
  expect_error("info " + dir_.string(), {"model.layers.1.mlp.up_proj.weight", "missing"});
}

TEST_F(BrokenModel, WrongShapeIsNamed) {
  edit_tensors([](TensorMap& t) { t["model.norm.weight"] = Tensor::zeros(DType::F32, {63}); });
  expect_error("info " + dir_.string(), {"model.norm.weight", "[63]", "[64]"});
}

TEST_F(BrokenModel, WrongDtypeIsNamed) {
  edit_tensors([](TensorMap& t) { t["model.norm.weight"] = Tensor::zeros(DType::I32, {64}); });
  expect_error("info " + dir_.string(), {"model.norm.weight", "I32"});
}

TEST_F(BrokenModel, BadConfigJson) {
  std::ofstream(dir_ / "config.json") << "{\"architectures\": [\"LlamaForCausalLM\",";
  expect_error("info " + dir_.string(), {"config.json"});
}

TEST_F(BrokenModel, TruncatedWeights) {
  const auto p = dir_ / "model.safetensors";
  std::filesystem::resize_file(p, std::filesystem::file_size(p) / 2);
  expect_error("info " + dir_.string(), {"model.safetensors"});
}

}  // namespace
}  // namespace shrink
