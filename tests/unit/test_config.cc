// config.json parsing: each family from hand-written JSON (spellings of the published configs), the
// round trip through config_to_json, and every error.
#include <algorithm>
#include <gtest/gtest.h>
#include <shrink/core/error.h>
#include <shrink/formats/config.h>

#include <fstream>
#include <functional>

#include "unit/test_util.h"

namespace shrink {
namespace {

using nlohmann::json;

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected shrink::Error containing '" << parts.front() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// TinyLlama-1.1B's config.json, as published.
const char* kLlama = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 2048,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "tie_word_embeddings": false,
  "torch_dtype": "float32", "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000})";

// gpt2's config.json (abridged to the fields that matter, spelled as published).
const char* kGpt2 = R"({
  "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
  "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
  "n_inner": null, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257})";

const char* kBertSst2 = R"({
  "architectures": ["BertForSequenceClassification"], "attention_probs_dropout_prob": 0.1,
  "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
  "id2label": {"0": "negative", "1": "positive"}, "label2id": {"negative": 0, "positive": 1},
  "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
  "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2,
  "vocab_size": 30522})";

// distilbert-base-uncased-finetuned-sst-2-english's config.json.
const char* kDistilBert = R"({
  "activation": "gelu", "architectures": ["DistilBertForSequenceClassification"], "attention_dropout": 0.1,
  "dim": 768, "dropout": 0.1, "finetuning_task": "sst-2", "hidden_dim": 3072,
  "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "initializer_range": 0.02,
  "label2id": {"NEGATIVE": 0, "POSITIVE": 1}, "max_position_embeddings": 512, "model_type": "distilbert",
  "n_heads": 12, "n_layers": 6, "output_past": true, "pad_token_id": 0, "qa_dropout": 0.1,
  "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": false, "tie_weights_": true, "vocab_size": 30522})";

ModelConfig parse(const char* text) {
  return parse_config(json::parse(text), "test/config.json");
}

void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.type_vocab_size, b.type_vocab_size);
  EXPECT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.hidden_act, b.hidden_act);
  EXPECT_EQ(a.num_labels, b.num_labels);
  EXPECT_EQ(a.id2label, b.id2label);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
}

TEST(Config, Llama) {
  const ModelConfig c = parse(kLlama);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 5632);
  EXPECT_EQ(c.num_layers, 22);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_theta, 10000.f);
  EXPECT_FALSE(c.rope_interleaved);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.pad_token_id, -1);
  EXPECT_EQ(c.num_labels, 0);
  EXPECT_EQ(c.raw["pretraining_tp"], 1);
}

TEST(Config, LlamaExplicitHeadDimAndMistral) {
  json j = json::parse(kLlama);
  j["architectures"] = {"MistralForCausalLM"};
  j["hidden_size"] = 5120;
  j["head_dim"] = 128;  // Mistral-Nemo: heads * head_dim != hidden
  j["rope_theta"] = 1000000.0;
  j["eos_token_id"] = {2, 7};
  const ModelConfig c = parse_config(j, "mistral");
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(config_to_json(c)["model_type"], "mistral");
}

TEST(Config, Gpt2) {
  const ModelConfig c = parse(kGpt2);
  EXPECT_EQ(c.architecture, "GPT2LMHeadModel");
  EXPECT_EQ(c.model_type, "gpt2");
  EXPECT_EQ(c.vocab_size, 50257);
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.intermediate_size, 3072);  // n_inner null -> 4 * n_embd
  EXPECT_EQ(c.num_layers, 12);
  EXPECT_EQ(c.num_heads, 12);
  EXPECT_EQ(c.num_kv_heads, 12);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 1024);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.hidden_act, "gelu_new");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.type_vocab_size, 0);
  EXPECT_EQ(c.bos_token_id, 50256);

  json j = json::parse(kGpt2);
  j.erase("n_positions");
  j["n_inner"] = 1000;
  j["architectures"] = {"GPT2Model"};
  const ModelConfig d = parse_config(j, "gpt2-variant");
  EXPECT_EQ(d.max_position_embeddings, 1024);  // from n_ctx
  EXPECT_EQ(d.intermediate_size, 1000);
  EXPECT_EQ(d.architecture, "GPT2Model");
}

TEST(Config, Bert) {
  const ModelConfig c = parse(kBertSst2);
  EXPECT_EQ(c.architecture, "BertForSequenceClassification");
  EXPECT_EQ(c.model_type, "bert");
  EXPECT_EQ(c.vocab_size, 30522);
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.num_layers, 12);
  EXPECT_EQ(c.num_heads, 12);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.type_vocab_size, 2);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-12f);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.num_labels, 2);
  EXPECT_EQ(c.id2label, (std::vector<std::string>{"negative", "positive"}));
  EXPECT_EQ(c.pad_token_id, 0);

  // layer_norm_eps defaults to 1e-12; num_labels alone fills generic labels.
  json j = json::parse(kBertSst2);
  j.erase("layer_norm_eps");
  j.erase("id2label");
  j["num_labels"] = 3;
  const ModelConfig d = parse_config(j, "bert3");
  EXPECT_FLOAT_EQ(d.norm_eps, 1e-12f);
  EXPECT_EQ(d.num_labels, 3);
  EXPECT_EQ(d.id2label, (std::vector<std::string>{"LABEL_0", "LABEL_1", "LABEL_2"}));

  // A classifier config without any label information gets the Hugging Face default of 2.
  j.erase("num_labels");
  EXPECT_EQ(parse_config(j, "bert2").num_labels, 2);
  // id2label keys are strings "0".."n-1" in any order.
  j["id2label"] = {{"2", "c"}, {"0", "a"}, {"1", "b"}};
  EXPECT_EQ(parse_config(j, "bert-abc").id2label, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Config, DistilBert) {
  const ModelConfig c = parse(kDistilBert);
  EXPECT_EQ(c.architecture, "DistilBertForSequenceClassification");
  EXPECT_EQ(c.model_type, "distilbert");
  EXPECT_EQ(c.vocab_size, 30522);
  EXPECT_EQ(c.hidden_size, 768);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.num_layers, 6);
  EXPECT_EQ(c.num_heads, 12);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_EQ(c.type_vocab_size, 0);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-12f);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.num_labels, 2);
  EXPECT_EQ(c.id2label, (std::vector<std::string>{"NEGATIVE", "POSITIVE"}));
}

TEST(Config, ModelTypeWhenArchitecturesAbsent) {
  json j = json::parse(kBertSst2);
  j.erase("architectures");
  j.erase("id2label");
  j.erase("label2id");
  const ModelConfig c = parse_config(j, "bert-no-arch");
  EXPECT_EQ(c.architecture, "BertModel");
  EXPECT_EQ(c.num_labels, 0);
  json g = json::parse(kGpt2);
  g.erase("architectures");
  EXPECT_EQ(parse_config(g, "gpt2-no-arch").architecture, "GPT2LMHeadModel");
}

TEST(Config, RoundTripThroughJson) {
  for (const char* text : {kLlama, kGpt2, kBertSst2, kDistilBert}) {
    const ModelConfig a = parse(text);
    SCOPED_TRACE(a.architecture);
    const json written = config_to_json(a);
    expect_same(parse_config(written, "roundtrip"), a);
    // Fields are written in the family's own spelling, floats in their short form.
    EXPECT_EQ(written.dump().find("9.99999"), std::string::npos) << written.dump();
  }
  // A normalised config built in code (as the llama2.c loader does) writes a complete LLaMA config.
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 512, c.hidden_size = 64, c.intermediate_size = 172, c.num_layers = 5, c.num_heads = 8;
  c.num_kv_heads = 4, c.head_dim = 8, c.max_position_embeddings = 512, c.hidden_act = "silu";
  const json j = config_to_json(c);
  EXPECT_EQ(j["num_key_value_heads"], 4);
  EXPECT_EQ(j["rms_norm_eps"].get<double>(), 1e-5);
  EXPECT_FALSE(j.contains("head_dim"));
  expect_same(parse_config(j, "built"), c);

  // Extreme floats: FLT_MAX's short spelling 3.4028235e+38 reads back above FLT_MAX, so it must be
  // written exactly; the smallest subnormal must survive too.
  for (double eps : {3.4028234663852886e38, 1.401298464324817e-45, 0.1}) {
    json l = json::parse(kLlama);
    l["rms_norm_eps"] = eps;
    const ModelConfig a = parse_config(l, "eps");
    const ModelConfig b = parse_config(config_to_json(a), "eps-roundtrip");
    EXPECT_EQ(a.norm_eps, b.norm_eps) << eps;
    EXPECT_EQ(a.norm_eps, static_cast<float>(eps));
  }
}

TEST(Config, ReadsFileAndNamesItInErrors) {
  const auto dir = testing::temp_dir("config");
  std::ofstream(dir / "config.json") << kDistilBert;
  EXPECT_EQ(read_config(dir / "config.json").num_layers, 6);
  std::ofstream(dir / "broken.json") << R"({"architectures": ["BertModel"], "hidden_size": )";
  expect_error([&] { read_config(dir / "broken.json"); }, {(dir / "broken.json").string(), "not valid JSON"});
  expect_error([&] { read_config(dir / "absent.json"); }, {"absent.json"});
}

TEST(Config, MissingField) {
  json j = json::parse(kLlama);
  j.erase("hidden_size");
  expect_error([&] { parse_config(j, "m/config.json"); }, {"m/config.json", "'hidden_size'", "missing"});
  json g = json::parse(kGpt2);
  g.erase("n_positions");
  g.erase("n_ctx");
  expect_error([&] { parse_config(g, "g/config.json"); }, {"g/config.json", "'n_positions' or 'n_ctx'"});
  json d = json::parse(kDistilBert);
  d["n_layers"] = nullptr;
  expect_error([&] { parse_config(d, "d/config.json"); }, {"'n_layers'", "missing"});
}

TEST(Config, WrongType) {
  json j = json::parse(kBertSst2);
  j["hidden_size"] = "768";
  expect_error([&] { parse_config(j, "b/config.json"); }, {"b/config.json", "'hidden_size'", "integer", "string"});
  j = json::parse(kBertSst2);
  j["hidden_size"] = 768.5;
  expect_error([&] { parse_config(j, "b"); }, {"'hidden_size'", "integer"});
  j = json::parse(kBertSst2);
  j["layer_norm_eps"] = "tiny";
  expect_error([&] { parse_config(j, "b"); }, {"'layer_norm_eps'", "number"});
  j = json::parse(kLlama);
  j["tie_word_embeddings"] = 1;
  expect_error([&] { parse_config(j, "l"); }, {"'tie_word_embeddings'", "true or false"});
  j = json::parse(kLlama);
  j["vocab_size"] = 4294967296;
  expect_error([&] { parse_config(j, "l"); }, {"'vocab_size'", "32-bit"});
  j = json::parse(kLlama);
  j["architectures"] = "LlamaForCausalLM";
  expect_error([&] { parse_config(j, "l"); }, {"'architectures'", "list"});
  expect_error([&] { parse_config(json::array({1, 2}), "arr"); }, {"arr", "JSON object"});
}

TEST(Config, UnknownArchitectureListsSupported) {
  json j = json::parse(kBertSst2);
  j["architectures"] = {"BertForMaskedLM"};
  std::vector<std::string> parts = {"x/config.json", "'BertForMaskedLM'"};
  for (const auto& a : supported_architectures()) parts.push_back(a);
  expect_error([&] { parse_config(j, "x/config.json"); }, parts);
  // The families the engine-core and training issues name must all be listed.
  for (const char* name : {"LlamaForCausalLM", "GPT2LMHeadModel", "BertModel", "BertForSequenceClassification",
                           "DistilBertModel", "DistilBertForSequenceClassification", "ViTForImageClassification"}) {
    EXPECT_NE(std::find(supported_architectures().begin(), supported_architectures().end(), name),
              supported_architectures().end())
        << name;
  }

  j.erase("architectures");
  j["model_type"] = "t5";
  expect_error([&] { parse_config(j, "y"); }, {"'t5'", "LlamaForCausalLM", "DistilBertModel"});
  j.erase("model_type");
  expect_error([&] { parse_config(j, "z"); }, {"z", "architectures", "GPT2LMHeadModel"});
}

TEST(Config, InconsistentValues) {
  json j = json::parse(kLlama);
  j["num_attention_heads"] = 30;  // 2048 % 30 != 0
  expect_error([&] { parse_config(j, "l"); }, {"2048", "30"});
  j = json::parse(kLlama);
  j["num_key_value_heads"] = 5;  // 32 % 5 != 0
  expect_error([&] { parse_config(j, "l"); }, {"32", "5", "key/value"});
  j = json::parse(kLlama);
  j["num_hidden_layers"] = 0;
  expect_error([&] { parse_config(j, "l"); }, {"layers", "positive"});
  j = json::parse(kLlama);
  j["rms_norm_eps"] = -1e-5;
  expect_error([&] { parse_config(j, "l"); }, {"epsilon", "positive"});
  j = json::parse(kBertSst2);
  j["id2label"] = {{"0", "a"}, {"2", "b"}};
  expect_error([&] { parse_config(j, "b"); }, {"id2label", "'2'"});
  j = json::parse(kBertSst2);
  j["num_labels"] = 3;
  expect_error([&] { parse_config(j, "b"); }, {"num_labels", "id2label", "3", "2"});
}

TEST(Config, TextEntryPoint) {
  EXPECT_EQ(parse_config_text(kGpt2, "t").num_layers, 12);
  expect_error([&] { parse_config_text("{\"a\": 1,}", "t.json"); }, {"t.json", "not valid JSON"});
  expect_error([&] { parse_config_text(std::string(100000, '[') + std::string(100000, ']'), "deep.json"); },
               {"deep.json", "nested deeper"});
}

}  // namespace
}  // namespace shrink
