// The quantize pass on stories260K: accuracy floors per scheme on tiny Shakespeare (top-1 agreement with the fp32
// model), slot selection (default skips, --skip, overrides, padding notes), the packed weights against the scalar
// reference quantizer, error cases, and `shrink quantize` / `shrink info` / every command on a written directory.
#include <gtest/gtest.h>
#include <shrink/compress/quantize.h>
#include <shrink/core/build_info.h>
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/eval/compare.h>
#include <shrink/formats/model_dir.h>
#include <shrink/kernels/quant.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::fixture;
using testing::run_cli;
using testing::temp_dir;
namespace fs = std::filesystem;

std::unique_ptr<Model> load_stories() {
  LoadOptions o;
  o.tokenizer = fixture("stories260K/tok512.bin");
  return load_model(fixture("stories260K/stories260K.bin"), o);
}

// 512 tokens from the second half of tiny Shakespeare (the evaluation half of docs/quantization.md).
const std::vector<int32_t>& eval_ids() {
  static const std::vector<int32_t> ids = [] {
    const std::string text = read_text_file(fixture("text/tinyshakespeare.txt"));
    auto m = load_stories();
    auto v = m->require_tokenizer().encode(text.substr(text.size() / 2, 4096), true);
    v.resize(512);
    return v;
  }();
  return ids;
}

struct Floor {
  const char* scheme;
  double min_agreement;  // top-1 agreement with the fp32 model
  double max_kld;        // mean KL(fp32 || quantized), nats
};

class SchemeAccuracy : public ::testing::TestWithParam<Floor> {};

TEST_P(SchemeAccuracy, AgreesWithFp32OnTinyShakespeare) {
  const Floor f = GetParam();
  auto base = load_stories();
  auto cand = load_stories();
  QuantizeOptions o;
  o.scheme = parse_quant_spec(f.scheme);
  QuantizeReport rep = quantize_model(*cand, o);
  EXPECT_LT(rep.bytes_after, rep.bytes_before);
  const auto r =
      compare_decoders(dynamic_cast<DecoderModel&>(*base), dynamic_cast<DecoderModel&>(*cand), eval_ids(), 256);
  std::printf("%-16s agreement %.4f  kld %.6f  ppl %.4f -> %.4f\n", f.scheme, r.top1_agreement, r.kld, r.base.ppl,
              r.candidate.ppl);
  EXPECT_EQ(r.positions, 510);
  EXPECT_GE(r.top1_agreement, f.min_agreement) << f.scheme;
  EXPECT_LE(r.kld, f.max_kld) << f.scheme;
}

// Floors are the values measured on these 510 positions (docs/quantization.md) less about a third of the
// disagreement, and 1.5x the measured KLD. The W8A16 >= 99.5% / W8A8 >= 99% are NOT reachable by
// round-to-nearest on this model and text: 5% of the positions have a top-2 logit gap below 0.05, and even bf16
// weights agree on only 99.2% (measured: w8a16 96.3%, w8a8 96.1%, bf16 99.2%, w4 g32 66%).
INSTANTIATE_TEST_SUITE_P(Stories260K, SchemeAccuracy,
                         ::testing::Values(Floor{"w8a16", 0.95, 0.002}, Floor{"w8a8", 0.95, 0.005},
                                           Floor{"bf16", 0.985, 2e-4}, Floor{"w4a16-g32", 0.60, 0.30},
                                           Floor{"w4a16-g32-asym", 0.62, 0.30}, Floor{"w4a16-g64", 0.57, 0.37},
                                           Floor{"w4a16-g128", 0.58, 0.38}),
                         [](const auto& info) {
                           std::string n = info.param.scheme;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// The first half of tiny Shakespeare (cut at a line end): the calibration half of docs/quantization.md.
fs::path calib_half() {
  static const fs::path p = [] {
    const std::string text = read_text_file(fixture("text/tinyshakespeare.txt"));
    const fs::path f = temp_dir("calib_half") / "first_half.txt";
    testing::write_bytes(f, text.substr(0, text.find('\n', text.size() / 2) + 1));
    return f;
  }();
  return p;
}

TEST(QuantizePass, StaticW8A8CalibratedOnTheFirstHalfRoundTrips) {
  auto base = load_stories();
  // From a Hugging Face directory (q/k rows in HF order), so that the saved model computes in the same order; from
  // the .bin the reordered attention sums flip a few static u8 codes and the round trip is close, not identical.
  const fs::path hf = temp_dir("static_src") / "stories";
  SaveOptions so;
  so.tokenizer = fixture("stories260K/tok512.bin");
  save_model(*base, hf, so);
  auto cand = load_model(hf);
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a8");
  o.method = QuantMethod::Static;
  o.calib = calib_half();
  o.calib_samples = 16;
  QuantizeReport rep = quantize_model(*cand, o);
  EXPECT_GT(rep.calib_ms, 0);
  for (const auto& l : rep.layers) {
    if (l.name == "lm_head") continue;
    EXPECT_EQ(l.scheme, "w8a8-static") << l.name;
    EXPECT_NE(l.note.find("minmax input range"), std::string::npos) << l.note;
  }
  // The u8 scale covers what calibration saw: positive, and layer 0's q_proj input (an RMS-normed embedding) spans
  // well under 200.
  const PackedLinear* q0 = cand->find_linear("model.layers.0.self_attn.q_proj")->impl->packed();
  ASSERT_NE(q0, nullptr);
  const float scale = q0->find("input_scale")->data<float>()[0];
  EXPECT_GT(scale, 0.f);
  EXPECT_LT(scale * 255, 200.f);
  const auto r =
      compare_decoders(dynamic_cast<DecoderModel&>(*base), dynamic_cast<DecoderModel&>(*cand), eval_ids(), 256);
  std::printf("w8a8-static      agreement %.4f  kld %.6f  ppl %.4f -> %.4f\n", r.top1_agreement, r.kld, r.base.ppl,
              r.candidate.ppl);
  EXPECT_GE(r.top1_agreement, 0.85);  // measured 0.89 over 4088 positions with 64 windows (docs/quantization.md)
  // Saved and loaded: the same scales, the same logits.
  const fs::path out = temp_dir("static_rt") / "q";
  save_model(*cand, out);
  auto back = load_model(out);
  const LinearSlot* q0b = back->find_linear("model.layers.0.self_attn.q_proj");
  EXPECT_EQ(q0b->impl->scheme(), "w8a8-static");
  EXPECT_EQ(q0b->impl->packed()->spec.act_scale, scale);
  const auto again =
      compare_decoders(dynamic_cast<DecoderModel&>(*cand), dynamic_cast<DecoderModel&>(*back), eval_ids(), 256);
  EXPECT_EQ(again.kld, 0.0);
  EXPECT_EQ(again.top1_agreement, 1.0);
  auto cfg = nlohmann::json::parse(read_text_file(out / "config.json"));
  const auto& g = cfg["quantization_config"]["config_groups"]["group_0"];
  EXPECT_EQ(g["input_activations"]["dynamic"], false);
  EXPECT_EQ(g["input_activations"]["strategy"], "tensor");
}

TEST(QuantizePass, DefaultSkipsTheLmHeadOfDecoders) {
  auto m = load_stories();
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a16");
  QuantizeReport rep = quantize_model(*m, o);
  ASSERT_EQ(rep.layers.size(), 36u);  // 5 layers x 7 + lm_head
  for (const auto& s : m->linears()) EXPECT_EQ(s.impl->scheme(), s.name == "lm_head" ? "f32" : "w8a16") << s.name;
  EXPECT_NE(rep.layers.back().note.find("skipped"), std::string::npos);
  auto m2 = load_stories();
  o.quantize_lm_head = true;
  quantize_model(*m2, o);
  EXPECT_EQ(m2->find_linear("lm_head")->impl->scheme(), "w8a16");
}

TEST(QuantizePass, SkipsOverridesAndPaddingNotes) {
  auto m = load_stories();
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w4a16-g128");
  o.skip = {"layers\\.0\\."};
  o.overrides = {{"mlp\\.down_proj", parse_quant_spec("w8a8")}, {"mlp\\.", parse_quant_spec("w4a16-g32")}};
  QuantizeReport rep = quantize_model(*m, o);
  for (const auto& s : m->linears()) {
    std::string want = "w4a16-g128";
    if (s.name == "lm_head" || s.name.starts_with("model.layers.0."))
      want = "f32";
    else if (s.name.ends_with("down_proj"))
      want = "w8a8";  // first matching override wins
    else if (s.name.find(".mlp.") != std::string::npos)
      want = "w4a16-g32";
    EXPECT_EQ(s.impl->scheme(), want) << s.name;
  }
  // in = 64 is half a group of 128 (attention at g128 is padded), whole groups of 32 (gate/up at g32 are not).
  for (const auto& l : rep.layers) {
    const bool padded = l.scheme == "w4a16-g128";
    EXPECT_EQ(l.note.find("padded 64 -> 128 columns (group 128)") != std::string::npos, padded)
        << l.name << ": " << l.note;
  }
  EXPECT_EQ(quant_shape_note(parse_quant_spec("w4a16-g32"), 172), "padded 172 -> 192 columns (group 32)");
  EXPECT_EQ(quant_shape_note(parse_quant_spec("w4a16-g128"), 172), "padded 172 -> 256 columns (group 128)");
  EXPECT_EQ(quant_shape_note(parse_quant_spec("w8a8"), 172), "");

  auto m2 = load_stories();
  QuantizeOptions o2;
  o2.scheme = parse_quant_spec("w4a16-g32");
  QuantizeReport rep2 = quantize_model(*m2, o2);
  for (const auto& l : rep2.layers)
    if (l.name.ends_with("down_proj")) {
      EXPECT_NE(l.note.find("padded 172 -> 192"), std::string::npos) << l.name;
    }
}

TEST(QuantizePass, PackedWeightsAreTheReferenceQuantizationOfTheCheckpoint) {
  auto m = load_stories();
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a16");
  quantize_model(*m, o);
  // wq of layer 3 straight from the checkpoint file: header 7 int32, embedding 512x64, rms_att 5x64, wq[0..2].
  auto file = MappedFile::open(fixture("stories260K/stories260K.bin"));
  const float* wq3 = reinterpret_cast<const float*>(file->data() + 28) + 512 * 64 + 5 * 64 + 3 * 64 * 64;
  const PackedLinear* p = m->find_linear("model.layers.3.self_attn.q_proj")->impl->packed();
  ASSERT_NE(p, nullptr);
  std::vector<int8_t> q(64);
  for (int r = 0; r < 64; ++r) {
    float scale = 0;
    kernels::quantize_row_s8_ref(wq3 + r * 64, 64, q.data(), &scale);
    EXPECT_EQ(std::memcmp(p->find("weight")->data<int8_t>() + r * 64, q.data(), 64), 0) << "row " << r;
    EXPECT_EQ(p->find("weight_scale")->data<float>()[r], scale) << "row " << r;
  }
}

using testing::error_of;

TEST(QuantizePassErrors, ClearMessagesAndModelUnchanged) {
  auto m = load_stories();
  QuantizeOptions o;
  o.scheme = parse_quant_spec("w8a8");
  o.overrides = {{"mlp\\.", parse_quant_spec("w8a16")}, {"(unclosed", parse_quant_spec("w8a16")}};
  std::string msg = error_of([&] { quantize_model(*m, o); });
  EXPECT_NE(msg.find("(unclosed"), std::string::npos) << msg;
  for (const auto& s : m->linears()) EXPECT_EQ(s.impl->scheme(), "f32") << "changed before failing: " << s.name;

  msg = error_of([] { parse_quant_spec("w3a16"); });
  EXPECT_NE(msg.find("w3a16"), std::string::npos) << msg;
  for (const char* valid : {"w8a16", "w8a8", "w4a16-g32", "bf16"}) EXPECT_NE(msg.find(valid), std::string::npos) << msg;

  QuantizeOptions st;
  st.scheme = parse_quant_spec("w8a8-static");
  msg = error_of([&] { quantize_model(*m, st); });
  EXPECT_NE(msg.find("--calib"), std::string::npos) << msg;
  st.calib = temp_dir("calib_err") / "missing.txt";
  msg = error_of([&] { quantize_model(*m, st); });
  EXPECT_NE(msg.find("missing.txt"), std::string::npos) << msg;
  st.observer.observer = "median";
  msg = error_of([&] { quantize_model(*m, st); });
  EXPECT_NE(msg.find("median"), std::string::npos) << msg;
  QuantizeOptions st_w4;
  st_w4.scheme = parse_quant_spec("w4a16-g32");
  st_w4.method = QuantMethod::Static;
  msg = error_of([&] { quantize_model(*m, st_w4); });
  EXPECT_NE(msg.find("no layer is w8a8"), std::string::npos) << msg;
  for (const auto& s : m->linears()) EXPECT_EQ(s.impl->scheme(), "f32") << "changed before failing: " << s.name;

  msg = error_of([] { parse_quant_method("gptq2"); });
  EXPECT_NE(msg.find("rtn"), std::string::npos) << msg;

  // A model loaded already quantized has no dense source to quantize from.
  QuantizeOptions w8;
  w8.scheme = parse_quant_spec("w8a16");
  quantize_model(*m, w8);
  const fs::path out = temp_dir("requant") / "q";
  SaveOptions so;
  so.tokenizer = fixture("stories260K/tok512.bin");
  save_model(*m, out, so);
  auto q = load_model(out);
  msg = error_of([&] { quantize_model(*q, w8); });
  EXPECT_NE(msg.find("already w8a16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("original model"), std::string::npos) << msg;
}

nlohmann::json json_of(const testing::RunResult& r) {
  EXPECT_EQ(r.code, 0) << r.err;
  return r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
}

std::string stories_args() {
  return fixture("stories260K/stories260K.bin").string() + " --tokenizer " + fixture("stories260K/tok512.bin").string();
}

TEST(QuantizeCli, WritesADirectoryThatEveryCommandRuns) {
  const fs::path out = temp_dir("cli_q") / "stories-w4";
  auto q = json_of(run_cli("quantize " + stories_args() + " --scheme w4a16-g32 --out " + out.string() + " --json"));
  EXPECT_EQ(q["scheme"], "w4a16-g32");
  EXPECT_GT(q["quantize_ms"].get<double>(), 0);
  EXPECT_GT(q["peak_rss_bytes"].get<double>(), 0);
  EXPECT_EQ(q["size_bytes"].get<size_t>(), path_size_bytes(out.string()));

  auto info = json_of(run_cli("info " + out.string() + " --json"));
  EXPECT_EQ(info["architecture"], "LlamaForCausalLM");
  size_t on_disk = 0;
  for (const auto& e : fs::directory_iterator(out)) on_disk += fs::file_size(e.path());
  EXPECT_EQ(info["size_bytes"].get<size_t>(), on_disk);
  ASSERT_EQ(info["layers"].size(), 36u);
  for (const auto& l : info["layers"]) {
    ASSERT_TRUE(l.contains("name") && l.contains("scheme") && l.contains("bytes"));
    const std::string name = l["name"];
    EXPECT_EQ(l["scheme"], name == "lm_head" ? "f32" : "w4a16-g32") << name;
    EXPECT_GT(l["bytes"].get<size_t>(), 0u);
    if (name.ends_with("down_proj")) {
      EXPECT_NE(l["note"].get<std::string>().find("padded 172 -> 192"), std::string::npos);
    }
    if (name.ends_with("q_proj")) {
      // 64x64 W4 g32: 64 rows x 32 bytes of codes + 64 x 2 fp16 scales + the shape; 64x64x4 bytes in fp32.
      EXPECT_EQ(l["file_bytes"].get<size_t>(), 64u * 32 + 64 * 2 * 2 + 16);
      EXPECT_EQ(l["original_bytes"].get<size_t>(), 64u * 64 * 4);
    }
  }
  // The unquantized original is the stories260K.bin arrays (without its header and RoPE tables) + our metadata.
  EXPECT_GT(info["original_size_bytes"].get<size_t>(), info["size_bytes"].get<size_t>());
  EXPECT_EQ(info["parameters"].get<int64_t>(), json_of(run_cli("info " + stories_args() + " --json"))["parameters"]);

  const std::string d = out.string();
  auto gen = json_of(run_cli("generate " + d + " --prompt 'Once upon a time' -n 8 --json"));
  EXPECT_EQ(gen["ids"].size(), 8u);
  auto ppl = json_of(run_cli("ppl " + d + " --text " + fixture("text/tinyshakespeare.txt").string() +
                             " --max-bytes 4096 --max-tokens 256 --ctx 128 --json"));
  EXPECT_GT(ppl["ppl"].get<double>(), 1.0);
  auto bench = json_of(run_cli("bench " + d + " --prompt-len 8 --gen 4 --iters 2 --warmup 0 --json"));
  EXPECT_GT(bench["size_bytes"].get<size_t>(), 0u);
  // reference.json: "Once upon a time" is [1, 403, 407, 261, 378] with run.c's tokenizer.
  auto tok = json_of(run_cli("tokenize " + d + " --text 'Once upon a time' --json"));
  EXPECT_EQ(tok["ids"], nlohmann::json::array({1, 403, 407, 261, 378}));
  auto cmp = json_of(run_cli("compare " + stories_args() + " " + d + " --text " +
                             fixture("text/tinyshakespeare.txt").string() + " --max-tokens 256 --ctx 128 --json"));
  EXPECT_GE(cmp["top1_agreement"].get<double>(), 0.6);  // W4 g32 measured 0.66-0.71
  EXPECT_LE(cmp["top1_agreement"].get<double>(), 1.0);
  EXPECT_GT(cmp["kld"].get<double>(), 0.0);
  EXPECT_TRUE(cmp["base"].contains("ppl") && cmp["candidate"].contains("ppl"));
}

TEST(QuantizeCli, ClassifierDirectoryRunsClassifyAndCompare) {
  const fs::path root = temp_dir("cli_bert");
  ASSERT_EQ(run_cli("synth --preset bert-tiny --out " + (root / "bert").string()).code, 0);
  auto q = json_of(
      run_cli("quantize " + (root / "bert").string() + " --scheme w8a8 --out " + (root / "q").string() + " --json"));
  bool classifier_skipped = false;
  for (const auto& l : q["layers"])
    if (l["name"] == "classifier") classifier_skipped = l["scheme"] == "f32";
  EXPECT_TRUE(classifier_skipped);
  const fs::path tsv = root / "data.tsv";
  testing::write_bytes(tsv, "sentence\tlabel\ngood movie \t1\nbad film \t0\nit was fine \t1\n");
  auto cls = json_of(run_cli("classify " + (root / "q").string() + " --data " + tsv.string() + " --json"));
  EXPECT_EQ(cls["n"], 3);
  auto cmp = json_of(run_cli("compare " + (root / "bert").string() + " " + (root / "q").string() + " --data " +
                             tsv.string() + " --json"));
  EXPECT_TRUE(cmp["base"].contains("accuracy") && cmp["candidate"].contains("accuracy"));
  EXPECT_GE(cmp["top1_agreement"].get<double>(), 0.0);
}

TEST(QuantizeCli, BadRequestsFailClearly) {
  const fs::path out = temp_dir("cli_bad") / "q";
  auto r = run_cli("quantize " + stories_args() + " --scheme w5a16 --out " + out.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("w4a16-g32"), std::string::npos) << r.err;  // lists the valid schemes
  EXPECT_FALSE(fs::exists(out));
  r = run_cli("quantize " + stories_args() + " --scheme w8a8 --layer 'nonsense' --out " + out.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("REGEX=SCHEME"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  r = run_cli("quantize " + stories_args() + " --scheme w8a8-static --out " + out.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--calib"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  const fs::path empty = temp_dir("cli_bad_calib") / "empty.txt";
  testing::write_bytes(empty, "");
  r = run_cli("quantize " + stories_args() + " --scheme w8a8-static --calib " + empty.string() + " --out " +
              out.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("empty.txt"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace shrink
