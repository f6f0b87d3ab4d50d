// shrink bench's additions: the closed-loop batcher against a fake model whose forward sleeps a known time per batch
// (throughput, batch sizes and latencies follow by hand), RAPL wrap-around on a fake powercap tree, the energy
// estimate and the cost formula, and the CLI fields on a synthesized BERT.
#include <gtest/gtest.h>
#include <shrink/bench/batcher.h>
#include <shrink/bench/concurrency.h>
#include <shrink/bench/cost.h>
#include <shrink/bench/energy.h>
#include <shrink/bench/peak.h>
#include <shrink/core/error.h>
#include <shrink/core/tensor.h>
#include <shrink/core/timer.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <numeric>
#include <thread>

#include "unit/test_util.h"

namespace shrink {
namespace {

using testing::temp_dir;
using testing::write_bytes;

// A model whose forward sleeps fixed_ms + per_item_ms x n. It records each batch's size and how long the sleep really
// took: on a loaded machine a sleep overshoots, never undershoots.
struct FakeModel {
  FakeModel(double fixed, double per_item) : fixed_ms(fixed), per_item_ms(per_item) {}
  double fixed_ms, per_item_ms;
  std::vector<int64_t> sizes;
  std::vector<double> actual_ms;
  std::function<void(int64_t)> forward() {
    return [this](int64_t n) {
      Timer t;
      std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(fixed_ms + per_item_ms * n));
      sizes.push_back(n);
      actual_ms.push_back(t.elapsed_ms());
    };
  }
  double mean_actual_ms() const { return std::accumulate(actual_ms.begin(), actual_ms.end(), 0.0) / actual_ms.size(); }
  // Requests per second if the model never idled between batches (the measured forward times).
  double busy_throughput_per_s() const {
    return 1000.0 * std::accumulate(sizes.begin(), sizes.end(), 0.0) /
           std::accumulate(actual_ms.begin(), actual_ms.end(), 0.0);
  }
};

// The batcher waits up to 50 ms for a full batch, so batch sizes do not depend on how fast the clients requeue.
ClosedLoopResult closed_loop(int concurrency, int max_batch, FakeModel& m, double seconds = 0.8) {
  ClosedLoopOptions o;
  o.concurrency = concurrency;
  o.max_batch = max_batch;
  o.seconds = seconds;
  o.batch_wait_ms = 50;
  ClosedLoopResult r;
  run_closed_loop(o, m.forward(), r);
  return r;
}

// What holds however loaded the machine is: the hand-computed throughput is an upper bound and the hand-computed
// latency a lower bound (sleeps only overshoot); the batches are as computed; and the model is kept busy at least
// half of the time (throughput >= half of what the measured forward times allow) with latency within
// `batches_waited` measured forwards (+ 50%).
void expect_closed_loop(const ClosedLoopResult& r, const FakeModel& m, double batch, double throughput_per_s,
                        double p50_ms, double batches_waited) {
  EXPECT_EQ(r.requests, r.latency.count());
  EXPECT_GE(r.mean_batch(), batch - 0.2);
  EXPECT_LE(r.mean_batch(), batch);
  for (int64_t s : m.sizes) EXPECT_LE(s, batch);
  EXPECT_LE(r.throughput_per_s(), throughput_per_s * 1.02);
  EXPECT_GE(r.throughput_per_s(), 0.5 * m.busy_throughput_per_s());
  EXPECT_GE(r.latency.percentile(0.5), p50_ms * 0.98);
  EXPECT_LE(r.latency.percentile(0.5), 1.5 * batches_waited * m.mean_actual_ms() + 5);
}

TEST(ClosedLoop, FullBatchesAtConcurrencyFour) {
  // 20 ms per batch whatever its size; 4 clients, batches of up to 4: every batch holds all 4 requests, so
  // throughput = 4 / 20 ms = 200/s and each request waits exactly one batch (20 ms).
  FakeModel m{20, 0};
  ClosedLoopResult r = closed_loop(4, 0, m);
  EXPECT_EQ(r.concurrency, 4);
  expect_closed_loop(r, m, 4, 200, 20, 1);
}

TEST(ClosedLoop, BatchCapBelowConcurrencyQueues) {
  // 4 clients, batches of at most 2, 20 ms per batch: 2 requests per 20 ms = 100/s, and a request waits for the
  // batch ahead of it plus its own: 40 ms.
  FakeModel m{20, 0};
  expect_closed_loop(closed_loop(4, 2, m), m, 2, 100, 40, 2);
}

TEST(ClosedLoop, CostGrowingWithBatch) {
  // 10 ms + 5 ms per request. Concurrency 1: 15 ms per request, 66.7/s. Concurrency 4: batches of 4 take 30 ms,
  // 133.3/s, p50 30 ms.
  FakeModel one{10, 5};
  expect_closed_loop(closed_loop(1, 0, one), one, 1, 1000.0 / 15, 15, 1);
  FakeModel four{10, 5};
  expect_closed_loop(closed_loop(4, 0, four), four, 4, 4000.0 / 30, 30, 1);
}

TEST(ClosedLoop, MaxRequestsAndAccumulationOverRounds) {
  // Bounded by requests, not time: 3 full batches of 2 per run, two runs accumulate.
  ClosedLoopOptions o;
  o.concurrency = 2;
  o.seconds = 60;
  o.max_requests = 6;
  o.batch_wait_ms = 50;
  ClosedLoopResult r;
  FakeModel m{1, 0};
  run_closed_loop(o, m.forward(), r);
  run_closed_loop(o, m.forward(), r);
  EXPECT_EQ(r.requests, 12);
  EXPECT_EQ(r.batches, 6);
  EXPECT_EQ(r.latency.count(), 12);
  nlohmann::json j = r.to_json();
  EXPECT_EQ(j["concurrency"], 2);
  EXPECT_EQ(j["requests"], 12);
  EXPECT_DOUBLE_EQ(j["mean_batch"].get<double>(), 2.0);
}

TEST(ClosedLoop, ForwardErrorReachesTheCaller) {
  ClosedLoopOptions o;
  o.concurrency = 3;
  o.seconds = 5;
  ClosedLoopResult r;
  try {
    run_closed_loop(
        o, [](int64_t) { fail("model exploded"); }, r);
    FAIL() << "expected the forward's error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model exploded"), std::string::npos);
  }
}

TEST(Batcher, ResponsesGoBackToTheirRequests) {
  // 8 threads each submit 50 distinct numbers; the batch function doubles them. Every thread must get back exactly
  // twice what it sent, whatever batch its request landed in.
  Batcher<int, int> b({3, 1}, [](std::vector<int>& req) {
    std::vector<int> out;
    for (int v : req) out.push_back(2 * v);
    return out;
  });
  std::thread worker([&] { b.serve(); });
  std::vector<std::thread> clients;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t)
    clients.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i)
        if (b.submit(t * 1000 + i) != 2 * (t * 1000 + i)) ++wrong;
    });
  for (auto& c : clients) c.join();
  b.stop();
  worker.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(b.stats().requests, 400);
  EXPECT_GE(b.stats().batches, 400 / 3 + 1);  // never more than 3 per batch
  EXPECT_THROW(b.submit(1), Error);           // stopped
}

TEST(Energy, RaplDeltaWrapsAround) {
  EXPECT_EQ(rapl_delta_uj(1000, 4500, 262143328850ull), 3500u);
  // Wrapped: from 262143328000 up to the range (850 uJ), then 0 -> 500.
  EXPECT_EQ(rapl_delta_uj(262143328000ull, 500, 262143328850ull), 1350u);
  EXPECT_EQ(rapl_delta_uj(7, 7, 100), 0u);
}

// A powercap tree as the kernel lays it out: two packages, a core sub-domain inside package 0, and psys.
std::filesystem::path fake_powercap(uint64_t pkg0, uint64_t pkg1) {
  auto root = temp_dir("powercap");
  auto domain = [&](const std::string& dir, const std::string& name, uint64_t uj, uint64_t range) {
    std::filesystem::create_directories(root / dir);
    write_bytes(root / dir / "name", name + "\n");
    write_bytes(root / dir / "energy_uj", std::to_string(uj) + "\n");
    write_bytes(root / dir / "max_energy_range_uj", std::to_string(range) + "\n");
  };
  domain("intel-rapl:0", "package-0", pkg0, 262143328850ull);
  domain("intel-rapl:0:0", "core", 5, 262143328850ull);
  domain("intel-rapl:1", "package-1", pkg1, 65532610987ull);
  domain("intel-rapl:2", "psys", 9, 262143328850ull);
  return root;
}

TEST(Energy, RaplPackagesOnFakeSysfs) {
  auto root = fake_powercap(262143000000ull, 1000000);
  RaplCounters r = RaplCounters::open(root);
  ASSERT_TRUE(r.readable());
  EXPECT_EQ(r.names(), (std::vector<std::string>{"package-0", "package-1"}));
  const auto before = r.read();
  EXPECT_EQ(before, (std::vector<uint64_t>{262143000000ull, 1000000}));
  // Package 0 wraps: 328850 uJ to the top + 2000000 after it = 2.32885 J; package 1: 4.5 J -> 6.82885 J.
  write_bytes(root / "intel-rapl:0" / "energy_uj", "2000000\n");
  write_bytes(root / "intel-rapl:1" / "energy_uj", "5500000\n");
  EXPECT_NEAR(r.joules_between(before, r.read()), 6.82885, 1e-9);
}

TEST(Energy, MeterUsesRaplWhenReadable) {
  auto root = fake_powercap(100, 200);
  EnergyMeter m(10, root);
  m.start();
  write_bytes(root / "intel-rapl:0" / "energy_uj", "3000100\n");  // +3 J
  write_bytes(root / "intel-rapl:1" / "energy_uj", "1000200\n");  // +1 J
  nlohmann::json j = m.json(8);
  EXPECT_EQ(j["source"], "rapl");
  EXPECT_EQ(j["estimated"], false);
  EXPECT_NEAR(j["joules"].get<double>(), 4.0, 1e-12);
  EXPECT_NEAR(j["joules_per_inference"].get<double>(), 0.5, 1e-12);
}

TEST(Energy, UnreadablePackageMeansNoRapl) {
  auto root = fake_powercap(1, 2);
  std::filesystem::remove(root / "intel-rapl:1" / "energy_uj");  // e.g. root-only since the 2020 PLATYPUS fix
  EXPECT_FALSE(RaplCounters::open(root).readable());
  EXPECT_FALSE(RaplCounters::open(root / "missing").readable());
}

TEST(Energy, EstimateFromCpuTime) {
  // 2.5 CPU seconds at 10 W per core over 100 inferences: 25 J / 100 = 0.25 J each.
  EXPECT_DOUBLE_EQ(estimated_joules_per_inference(2.5, 10, 100), 0.25);
  EXPECT_DOUBLE_EQ(estimated_joules_per_inference(1, 7.5, 3), 2.5);
  EXPECT_THROW(estimated_joules_per_inference(1, 10, 0), Error);
  // Without RAPL the meter falls back to the estimate and labels it; the CPU time it reports is checked against
  // std::clock (process CPU time from another source) over a busy loop.
  EnergyMeter m(12, temp_dir("no-powercap") / "none");
  const std::clock_t c0 = std::clock();
  m.start();
  volatile double x = 0;
  while (std::clock() - c0 < CLOCKS_PER_SEC / 5) x = x + 1;
  nlohmann::json j = m.json(4);
  const double clock_s = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  EXPECT_EQ(j["source"], "estimate");
  EXPECT_EQ(j["estimated"], true);
  EXPECT_EQ(j["watts_per_core"], 12.0);
  EXPECT_NEAR(j["cpu_seconds"].get<double>(), clock_s, 0.05);
  EXPECT_NEAR(j["joules_per_inference"].get<double>(), j["cpu_seconds"].get<double>() * 12 / 4, 1e-12);
}

// The read loop both peaks time: on 1000.5 KiB of ones plus a tail (not a multiple of 64 floats) it returns the
// count, through the vector path of this CPU and the threaded split.
TEST(Peak, StreamReadSumCountsOnes) {
  constexpr int64_t n = 256 * 1000 + 37;
  Tensor ones = Tensor::empty(DType::F32, {n});  // 64-byte aligned, as stream_read_sum needs
  std::fill_n(ones.data<float>(), n, 1.0f);
  EXPECT_EQ(stream_read_sum(ones.data<float>(), n), static_cast<float>(n));
}

// Sustained (best 512 MiB pass) and burst (best 16 MiB pass) are both positive, and a whole-buffer pass cannot be
// much faster than the best of its parts (10% allowed for timer granularity). On a loaded machine every burst pass
// of one measurement can be preempted (seen under ctest -j2 beside two compiles: burst 4.6, sustained 17.0 GB/s), so
// the order is asked of up to three measurements; a measurement that inverts it every time fails.
TEST(Peak, SustainedReadIsAtMostTheBurst) {
  StreamRead r;
  for (int attempt = 0; attempt < 3; ++attempt) {
    r = measure_stream_read(2);
    if (r.sustained_gbps <= r.burst_gbps * 1.1) break;
  }
  EXPECT_GT(r.sustained_gbps, 0.1);
  EXPECT_GT(r.burst_gbps, 0.1);
  EXPECT_LE(r.sustained_gbps, r.burst_gbps * 1.1);
}

TEST(Cost, PerThousandInferences) {
  // 3.6 USD/h = 0.001 USD/s; 1,000 inferences at 1,000/s take 1 s.
  EXPECT_NEAR(usd_per_1k_inferences(3.6, 1000), 0.001, 1e-15);
  // Default t3.large 0.0832 USD/h at 100/s: 10 s per 1,000 -> 0.832 / 3600 USD.
  EXPECT_NEAR(usd_per_1k_inferences(0.0832, 100), 0.832 / 3600, 1e-15);
  EXPECT_THROW(usd_per_1k_inferences(0.0832, 0), Error);
  EXPECT_THROW(usd_per_1k_inferences(-1, 10), Error);
  nlohmann::json j = cost_json(3.6, 500, "test box");
  EXPECT_NEAR(j["usd_per_1k"].get<double>(), 0.002, 1e-15);
  EXPECT_EQ(j["instance"], "test box");
  EXPECT_EQ(j["throughput_per_s"], 500.0);
}

TEST(BenchCli, ConcurrencyEnergyAndCostFields) {
  const auto dir = temp_dir("bench-cli");
  const std::string model = (dir / "bert").string();
  auto s = testing::run_cli("synth --preset bert-tiny --out " + model + " --json");
  ASSERT_EQ(s.code, 0) << s.err;
  auto r = testing::run_cli("bench " + model +
                            " --batch 2 --seq 16 --iters 4 --concurrency 1,2,4 --price-per-hour 3.6 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json b = nlohmann::json::parse(r.out);
  ASSERT_EQ(b["concurrency"].size(), 3u);
  double best = b["throughput_per_s"].get<double>();
  int i = 0;
  for (int level : {1, 2, 4}) {
    const auto& lv = b["concurrency"][i++];
    EXPECT_EQ(lv["concurrency"], level);
    // --iters 4 bounds each level to 4 full batches per round, 2 rounds.
    EXPECT_EQ(lv["requests"].get<int64_t>(), 2 * 4 * level);
    EXPECT_GE(lv["mean_batch"].get<double>(), 1.0);
    EXPECT_LE(lv["mean_batch"].get<double>(), level);
    EXPECT_LE(lv["p50_ms"].get<double>(), lv["p99_ms"].get<double>());
    EXPECT_NEAR(lv["throughput_per_s"].get<double>(), lv["requests"].get<double>() / lv["seconds"].get<double>(),
                1e-6 * lv["throughput_per_s"].get<double>());
    best = std::max(best, lv["throughput_per_s"].get<double>());
  }
  // Cost at the best throughput: 3.6 USD/h = 0.001 USD/s, so 1,000 inferences cost 1 / best USD.
  EXPECT_NEAR(b["cost"]["usd_per_1k"].get<double>(), 1.0 / best, 1e-9 / best);
  EXPECT_EQ(b["cost"]["price_per_hour"], 3.6);
  const auto& e = b["energy"];
  ASSERT_TRUE(e["source"] == "rapl" || e["source"] == "estimate") << e.dump();
  EXPECT_EQ(e["estimated"].get<bool>(), e["source"] == "estimate");
  EXPECT_EQ(e["inferences"], 4 * 2);  // --iters 4 at --batch 2
  EXPECT_GE(e["joules_per_inference"].get<double>(), 0);
  if (e["estimated"].get<bool>()) {
    EXPECT_EQ(e["watts_per_core"], kDefaultWattsPerCore);
    EXPECT_NEAR(e["joules_per_inference"].get<double>(), e["cpu_seconds"].get<double>() * kDefaultWattsPerCore / 8,
                1e-12);
  }
}

// Decoders: each level generates C sequences at once (one batched forward per token). With --iters 2, 2 rounds, a
// prompt and --gen 6: every level runs 4 generations of C sequences; a generation has 5 timed decode steps (the
// first token comes from the prompts' forward), each giving C tokens.
TEST(BenchCli, DecoderConcurrencyGeneratesTogether) {
  const auto dir = temp_dir("bench-cli-dec");
  const std::string model = (dir / "llama").string();
  auto s = testing::run_cli("synth --preset llama-tiny --out " + model + " --json");
  ASSERT_EQ(s.code, 0) << s.err;
  auto r = testing::run_cli("bench " + model + " --prompt-len 7 --gen 6 --iters 2 --concurrency 1,3 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json b = nlohmann::json::parse(r.out);
  ASSERT_EQ(b["concurrency"].size(), 2u);
  int i = 0;
  for (int level : {1, 3}) {
    const auto& lv = b["concurrency"][i++];
    EXPECT_EQ(lv["concurrency"], level);
    EXPECT_EQ(lv["requests"].get<int64_t>(), 2 * 2 * level);
    EXPECT_EQ(lv["batches"].get<int64_t>(), 2 * 2);
    EXPECT_EQ(lv["mean_batch"].get<double>(), level);
    EXPECT_EQ(lv["tpot"]["count"].get<int64_t>(), 2 * 2 * 5);
    EXPECT_EQ(lv["ttft"]["count"].get<int64_t>(), 2 * 2);
    // tokens/s counts the decode steps' tokens: C per step, over the steps' time and the sampling between them.
    EXPECT_GT(lv["tokens_per_s"].get<double>(), 0);
    EXPECT_LE(lv["tokens_per_s"].get<double>(), 1000.0 * level / lv["tpot"]["min"].get<double>() * 1.0001);
    EXPECT_LE(lv["ttft_ms"].get<double>(), lv["p50_ms"].get<double>());
  }
}

}  // namespace
}  // namespace shrink
