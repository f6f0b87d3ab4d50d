// INT8 kernels against their baselines in the same run, alternating call by call (best call of each kept):
//  gemm/*  BERT-base GEMMs (m = 128): own u8s8s32 vs oneDNN u8s8s32 matmul vs own fp32 GEMM, and W8A16 vs fp32;
//          share of the int8 peak = the best oneDNN u8s8s32 rate of the run (1024^3 and the cases).
//  gemv/*  TinyLlama decode GEMVs (m = 1): W8A8 (x quantized per call) and W8A16 GB/s of weights streamed vs a paired
//          streaming read and vs the fp32 GEMV (rates relative to the best streaming read of the run).
//  bert/*  BERT-base 1x128 end to end (out/models/bert-base, or SHRINK_BERT_DIR): fp32 vs every encoder Linear W8A8.
#include <shrink/kernels/gemm.h>
#include <shrink/kernels/int8.h>
#include <shrink/models/model.h>
#include <shrink/ops/qlinear.h>

#include <dnnl.hpp>
#include <filesystem>
#include <map>
#include <memory>

#include "micro/bench_common.h"

namespace shrink::bench {
namespace {

using kernels::Int8Isa;

Int8Isa g_isa = Int8Isa::Scalar;
double g_int8_peak = 0;    // GOP/s, best oneDNN u8s8s32 of the run
double g_stream_gbps = 0;  // best streaming read of the run

struct Line {
  std::string name;
  double rate = 0, ms = 1e30, base_rate = 0;  // base: the paired baseline's best
  std::string unit, base_name;
};
std::vector<Line> g_lines;

void keep(const Line& l) {
  for (Line& o : g_lines)
    if (o.name == l.name) {
      if (l.rate > o.rate) o = l;
      return;
    }
  g_lines.push_back(l);
}

std::vector<int8_t> random_s8(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(gen));
  return v;
}

// ---- oneDNN u8s8s32 matmul, weights reordered once into its preferred layout ----
struct DnnlInt8 {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{eng};
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  dnnl::memory w, a, c;
  std::string impl;

  DnnlInt8(const int8_t* wq, int64_t m, int64_t n, int64_t k, const uint8_t* aq, int32_t* cq) {
    using dnnl::memory;
    const memory::desc src({m, k}, memory::data_type::u8, memory::format_tag::ab);
    const memory::desc wany({k, n}, memory::data_type::s8, memory::format_tag::any);
    const memory::desc dst({m, n}, memory::data_type::s32, memory::format_tag::ab);
    pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wany, dst), eng);
    prim = dnnl::matmul(pd);
    const memory::desc user({k, n}, memory::data_type::s8, memory::dims{1, k});  // W [n][k] = logical [k][n]
    memory wu(user, eng, const_cast<int8_t*>(wq));
    w = memory(pd.weights_desc(), eng);
    dnnl::reorder(wu, w).execute(stream, wu, w);
    stream.wait();
    a = memory(src, eng, const_cast<uint8_t*>(aq));
    c = memory(dst, eng, cq);
    impl = pd.impl_info_str();
  }
  void run() {
    prim.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, c}});
    stream.wait();
  }
};

struct GemmShape {
  const char* what;
  int64_t m, k, n;
};
// BERT-base rows of 128 tokens, and the demo's ViT (hidden 64, FFN 128) at batch 32: 544 rows of 17 patches, a
// 64-column projection is one panel.
const GemmShape kGemmShapes[] = {{"attn_qkv_out", 128, 768, 768}, {"ffn_up", 128, 768, 3072},
                                 {"ffn_down", 128, 3072, 768},    {"vit_attn", 544, 64, 64},
                                 {"vit_ffn_up", 544, 64, 128},    {"vit_ffn_down", 544, 128, 64}};

struct GemmOperands {
  std::vector<int8_t> wq;
  std::vector<float> scale, w32, x, bias, y;
  std::vector<uint8_t> a;
  std::vector<int32_t> c, c_dnnl;
  kernels::PackedWeightsS8 packed;
  kernels::PackedWeightsF32 packed32;
  std::unique_ptr<DnnlInt8> dnnl;
};

GemmOperands& gemm_operands(const GemmShape& s) {
  static std::map<std::string, GemmOperands> cache;
  GemmOperands& o = cache[s.what];
  if (o.wq.empty()) {
    o.wq = random_s8(s.n * s.k, 1);
    o.scale.assign(s.n, 0.01f);
    o.w32.resize(s.n * s.k);
    for (size_t i = 0; i < o.w32.size(); ++i) o.w32[i] = o.wq[i] * 0.01f;
    o.x = random_floats(s.m * s.k, 3);
    o.bias = random_floats(s.n, 4);
    o.y.assign(s.m * s.n, 0.f);
    o.a.resize(s.m * s.k);
    for (size_t i = 0; i < o.a.size(); ++i) o.a[i] = static_cast<uint8_t>(i * 7919 % 256);
    o.c.assign(s.m * s.n, 0);
    o.c_dnnl.assign(s.m * s.n, 0);
    o.packed = kernels::PackedWeightsS8::pack(o.wq.data(), o.scale.data(), s.n, s.k, s.k);
    o.packed32 = kernels::PackedWeightsF32::pack(o.w32.data(), DType::F32, s.n, s.k, s.k, active_isa());
    o.dnnl = std::make_unique<DnnlInt8>(o.wq.data(), s.m, s.n, s.k, o.a.data(), o.c_dnnl.data());
  }
  return o;
}

double gops(const GemmShape& s, double ms) {
  return 2.0 * s.m * s.n * s.k / (ms * 1e6);
}

// Own u8s8s32, oneDNN u8s8s32, own W8A8 with quantization and epilogue (fp32 in, fp32 out), W8A16 and fp32.
void bench_gemm(benchmark::State& state, GemmShape s) {
  GemmOperands& o = gemm_operands(s);
  state.SetLabel(o.dnnl->impl);
  double own = 1e30, dnnl = 1e30, full = 1e30, w8a16 = 1e30, f32 = 1e30;
  std::vector<uint8_t> q(s.m * s.k);
  std::vector<float> scales(s.m);
  for (auto _ : state) {
    Timer t0;
    kernels::gemm_u8s8s32(g_isa, o.packed, o.a.data(), s.m, s.k, o.c.data(), s.n);
    own = std::min(own, t0.elapsed_ms());
    Timer t1;
    o.dnnl->run();
    dnnl = std::min(dnnl, t1.elapsed_ms());
    Timer t2;
    parallel_for(s.m, 8, [&](int64_t r0, int64_t r1) {
      kernels::quantize_a8_dynamic(g_isa, o.x.data() + r0 * s.k, r1 - r0, s.k, s.k, q.data() + r0 * s.k, s.k,
                                   scales.data() + r0);
    });
    kernels::gemm_u8s8_f32(g_isa, o.packed, {q.data(), s.k, scales.data(), 1, 128}, s.m, o.bias.data(), o.y.data(),
                           s.n);
    full = std::min(full, t2.elapsed_ms());
    Timer t3;
    kernels::gemm_w8a16(g_isa, o.packed, o.x.data(), s.m, s.k, o.bias.data(), o.y.data(), s.n);
    w8a16 = std::min(w8a16, t3.elapsed_ms());
    Timer t4;
    kernels::sgemm_packed(o.packed32, o.x.data(), s.m, s.k, o.bias.data(), o.y.data(), s.n);
    f32 = std::min(f32, t4.elapsed_ms());
  }
  if (o.c != o.c_dnnl) state.SkipWithError("own u8s8s32 differs from oneDNN's");
  g_int8_peak = std::max(g_int8_peak, gops(s, dnnl));
  const std::string base = fmt::format("gemm {} m{} k{} n{}", s.what, s.m, s.k, s.n);
  keep({base + " own u8s8s32", gops(s, own), own, gops(s, dnnl), "GOP/s", "oneDNN u8s8s32"});
  keep({base + " oneDNN u8s8s32", gops(s, dnnl), dnnl, 0, "GOP/s", ""});
  keep({base + " own w8a8 (quant+epilogue)", gops(s, full), full, gops(s, dnnl), "GOP/s", "oneDNN u8s8s32"});
  keep({base + " own w8a16", gops(s, w8a16), w8a16, gops(s, f32), "GOP/s", "own fp32"});
  keep({base + " own fp32", gops(s, f32), f32, 0, "GOP/s", ""});
  state.counters["own_GOPs"] = gops(s, own);
  state.counters["dnnl_GOPs"] = gops(s, dnnl);
}

// oneDNN u8s8s32 on a large square shape: the int8 peak of the run.
void bench_int8_peak(benchmark::State& state) {
  const int64_t n = 1024;
  static std::vector<int8_t> w = random_s8(n * n, 5);
  static std::vector<uint8_t> a(n * n, 77);
  static std::vector<int32_t> c(n * n);
  static DnnlInt8 d(w.data(), n, n, n, a.data(), c.data());
  double best = 1e30;
  for (auto _ : state) {
    Timer t;
    d.run();
    best = std::min(best, t.elapsed_ms());
  }
  const double r = 2.0 * n * n * n / (best * 1e6);
  g_int8_peak = std::max(g_int8_peak, r);
  keep({"peak oneDNN u8s8s32 1024^3", r, best, 0, "GOP/s", ""});
}

// ---- GEMV ----
struct GemvShape {
  const char* what;
  int64_t k, n;
};
const GemvShape kGemvShapes[] = {{"q_proj", 2048, 2048},
                                 {"k_proj", 2048, 256},
                                 {"gate_proj", 2048, 5632},
                                 {"down_proj", 5632, 2048},
                                 {"lm_head", 2048, 32000}};
constexpr size_t kMinBytes = size_t{384} << 20;  // rotate over enough copies that weights come from DRAM

struct GemvCopies {
  std::vector<kernels::PackedWeightsS8> w8;
  std::vector<kernels::PackedWeightsF32> w32;
  std::vector<float> x, y;
};

GemvCopies& gemv_copies(const GemvShape& s) {
  static std::map<std::string, GemvCopies> cache;
  GemvCopies& c = cache[s.what];
  if (c.w8.empty()) {
    const auto q = random_s8(s.n * s.k, 1);
    const std::vector<float> scale(s.n, 0.01f);
    const size_t n8 = std::max<size_t>(4, kMinBytes / (s.n * s.k) + 1);
    for (size_t i = 0; i < n8; ++i)
      c.w8.push_back(kernels::PackedWeightsS8::pack(q.data(), scale.data(), s.n, s.k, s.k));
    const auto w = random_floats(s.n * s.k, 2);
    const size_t n32 = std::max<size_t>(3, kMinBytes / (s.n * s.k * 4) + 1);
    for (size_t i = 0; i < n32; ++i)
      c.w32.push_back(kernels::PackedWeightsF32::pack(w.data(), DType::F32, s.n, s.k, s.k, active_isa()));
    c.x = random_floats(s.k, 3);
    c.y.assign(s.n, 0.f);
  }
  return c;
}

// W8A8 GEMV (quantize x, integer dot), W8A16 GEMV, a streaming read of another int8 copy, and the fp32 GEMV.
void bench_gemv(benchmark::State& state, GemvShape s) {
  GemvCopies& c = gemv_copies(s);
  const size_t count = c.w8.size();
  size_t i = 0, j = 0;
  double w8a8 = 1e30, w8a16 = 1e30, read = 1e30, f32 = 1e30, read_gbps = 0;
  std::vector<uint8_t> q(c.w8[0].kpad());
  float scale = 0;
  volatile float sink = 0;
  for (auto _ : state) {
    Timer t0;
    kernels::quantize_a8_dynamic(g_isa, c.x.data(), 1, s.k, s.k, q.data(), c.w8[0].kpad(), &scale);
    kernels::gemm_u8s8_f32(g_isa, c.w8[i], {q.data(), c.w8[0].kpad(), &scale, 1, 128}, 1, nullptr, c.y.data(), s.n);
    w8a8 = std::min(w8a8, t0.elapsed_ms());
    i = (i + 1) % count;
    Timer t1;
    kernels::gemm_w8a16(g_isa, c.w8[i], c.x.data(), 1, s.k, nullptr, c.y.data(), s.n);
    w8a16 = std::min(w8a16, t1.elapsed_ms());
    const auto& other = c.w8[(i + count / 2) % count];
    Timer t2;
    sink = stream_read_sum(reinterpret_cast<const float*>(other.data()), other.panels() * other.kpad() * 64 / 4);
    read = std::min(read, t2.elapsed_ms());
    i = (i + 1) % count;
    Timer t3;
    kernels::sgemv_packed(c.w32[j], c.x.data(), 1, s.k, nullptr, c.y.data(), s.n);
    f32 = std::min(f32, t3.elapsed_ms());
    j = (j + 1) % c.w32.size();
  }
  (void)sink;
  const double bytes8 = static_cast<double>(c.w8[0].panels() * c.w8[0].kpad() * 64);
  const double bytes32 = static_cast<double>(c.w32[0].bytes());
  read_gbps = bytes8 / (read * 1e6);
  g_stream_gbps = std::max(g_stream_gbps, read_gbps);
  const std::string base = fmt::format("gemv {} k{} n{}", s.what, s.k, s.n);
  keep({base + " w8a8", bytes8 / (w8a8 * 1e6), w8a8, read_gbps, "GB/s", "paired read"});
  keep({base + " w8a16", bytes8 / (w8a16 * 1e6), w8a16, read_gbps, "GB/s", "paired read"});
  keep({base + " fp32", bytes32 / (f32 * 1e6), f32, 0, "GB/s", ""});
  keep({base + " w8a16 time vs fp32", f32 / w8a16, w8a16, 0, "x", ""});
}

// ---- BERT-base 1x128 end to end ----
std::filesystem::path bert_dir() {
  const char* env = std::getenv("SHRINK_BERT_DIR");
  return env ? env : "out/models/bert-base";
}

void bench_bert(benchmark::State& state) {
  static std::unique_ptr<Model> f32, w8;
  if (!f32) {
    f32 = load_model(bert_dir());
    w8 = load_model(bert_dir());
    for (LinearSlot& s : w8->linears())
      if (s.name.find("encoder.layer.") != std::string::npos)  // every encoder Linear
        s.impl = make_quantized_linear(s.weight, &s.bias, parse_quant_spec("w8a8"));
  }
  const auto& e32 = dynamic_cast<const EncoderModel&>(*f32);
  const auto& e8 = dynamic_cast<const EncoderModel&>(*w8);
  BatchEncoding b;
  b.batch = 1;
  b.seq = 128;
  for (int i = 0; i < 128; ++i) {
    b.ids.push_back(i == 0 ? 101 : 1000 + (i * 37) % 20000);
    b.type_ids.push_back(0);
    b.attention_mask.push_back(1);
  }
  b.lengths = {128};
  double t32 = 1e30, t8 = 1e30;
  for (auto _ : state) {
    Timer a;
    benchmark::DoNotOptimize(e32.forward(b));
    t32 = std::min(t32, a.elapsed_ms());
    Timer c;
    benchmark::DoNotOptimize(e8.forward(b));
    t8 = std::min(t8, c.elapsed_ms());
  }
  state.counters["fp32_ms"] = t32;
  state.counters["w8a8_ms"] = t8;
  keep({"bert-base 1x128 fp32 (ms)", t32, t32, 0, "ms", ""});
  keep({"bert-base 1x128 w8a8 encoder (ms)", t8, t8, 0, "ms", ""});
  keep({"bert-base 1x128 speed-up w8a8 vs fp32", t32 / t8, t8, 0, "x", ""});
}

}  // namespace
}  // namespace shrink::bench

int main(int argc, char** argv) {
  using namespace shrink::bench;
  benchmark::Initialize(&argc, argv);
  const int threads = bench_threads();
  print_machine(threads);
  g_isa = shrink::kernels::int8_isa_for(shrink::active_isa());
  const auto names = shrink::kernels::int8_kernel_names(g_isa);
  fmt::print("int8 kernels: {} | {} | {}\n", names.gemm, names.w8a16_gemv, names.w8a16_gemm);
  g_stream_gbps = shrink::measure_stream_read_gbps(threads);
  fmt::print("streaming read: {:.1f} GB/s\n", g_stream_gbps);
  benchmark::RegisterBenchmark("peak/onednn_u8s8s32_1024", bench_int8_peak)->Iterations(30)->UseRealTime();
  for (const GemmShape& s : kGemmShapes)
    benchmark::RegisterBenchmark(fmt::format("gemm/{}", s.what).c_str(), bench_gemm, s)->Iterations(150)->UseRealTime();
  for (const GemvShape& s : kGemvShapes)
    benchmark::RegisterBenchmark(fmt::format("gemv/{}", s.what).c_str(), bench_gemv, s)
        ->Iterations(s.n * s.k > (1 << 24) ? 40 : 200)
        ->UseRealTime();
  if (std::filesystem::exists(bert_dir() / "config.json"))
    benchmark::RegisterBenchmark("bert/base_1x128", bench_bert)->Iterations(30)->UseRealTime();
  else
    fmt::print("bert/*: {} not found (build/shrink synth --preset bert-base --out out/models/bert-base)\n",
               bert_dir().string());
  benchmark::RunSpecifiedBenchmarks();
  g_stream_gbps = std::max(g_stream_gbps, shrink::measure_stream_read_gbps(threads));
  fmt::print(
      "\nint8 peak (best oneDNN u8s8s32 of the run): {:.1f} GOP/s; streaming read (best of the run): {:.1f} GB/s\n",
      g_int8_peak, g_stream_gbps);
  fmt::print("{:<58} {:>9} {:>6} {:>9} {:>8}  {}\n", "case", "rate", "unit", "best ms", "of peak", "vs baseline");
  for (const Line& l : g_lines) {
    const double peak = l.unit == "GOP/s" ? g_int8_peak : l.unit == "GB/s" ? g_stream_gbps : 0;
    fmt::print("{:<58} {:>9.2f} {:>6} {:>9.3f} ", l.name, l.rate, l.unit, l.ms);
    if (peak > 0)
      fmt::print("{:>7.1f}%", 100 * l.rate / peak);
    else
      fmt::print("{:>8}", "-");
    if (l.base_rate > 0) fmt::print("  {:.1f}% of {}", 100 * l.rate / l.base_rate, l.base_name);
    fmt::print("\n");
  }
  benchmark::Shutdown();
  return 0;
}
