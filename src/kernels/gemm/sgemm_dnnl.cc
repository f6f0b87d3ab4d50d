// oneDNN matmul backend for the dense fp32 Linear: weights reordered once, one primitive per m, user scratchpad
// so concurrent callers never share oneDNN's buffers.
#include <shrink/core/error.h>
#include <shrink/kernels/gemm.h>

#include <cstdlib>
#include <dnnl.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace shrink::kernels {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Grows per thread, so one buffer serves every primitive a thread runs.
void* thread_scratch(size_t bytes) {
  thread_local std::unique_ptr<void, decltype(&std::free)> buf(nullptr, &std::free);
  thread_local size_t size = 0;
  if (bytes > size) {
    const size_t rounded = (bytes + 4095) / 4096 * 4096;
    buf.reset(std::aligned_alloc(64, rounded));
    if (!buf) fail("oneDNN matmul: out of memory allocating a {} byte scratchpad", rounded);
    size = rounded;
  }
  return buf.get();
}

}  // namespace

struct DnnlMatmulF32::Impl {
  struct Plan {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
  };
  int64_t n = 0, k = 0;
  memory::desc weights_md;
  memory weights, bias;
  bool has_bias = false;
  mutable std::mutex mutex;
  mutable std::map<int64_t, std::shared_ptr<const Plan>> plans;

  dnnl::matmul::primitive_desc make_pd(int64_t m, const memory::desc& wmd) const {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const memory::desc src({m, k}, kF32, Tag::ab), dst({m, n}, kF32, Tag::ab);
    if (has_bias) {
      const memory::desc bmd({1, n}, kF32, Tag::ab);
      return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wmd, bmd, dst), attr, cpu_engine());
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wmd, dst), attr, cpu_engine());
  }

  std::shared_ptr<const Plan> plan(int64_t m) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(m);
    if (it != plans.end()) return it->second;
    auto p = std::make_shared<Plan>();
    try {
      p->pd = make_pd(m, weights_md);
      p->prim = dnnl::matmul(p->pd);
    } catch (const dnnl::error& e) {
      fail(
          "oneDNN matmul [m = {}, k = {}, n = {}]: no implementation for the reordered weights ({}); use the packed "
          "kernels (sgemm_packed)",
          m, k, n, e.what());
    }
    plans.emplace(m, p);
    return p;
  }
};

DnnlMatmulF32::DnnlMatmulF32(const float* w, int64_t n, int64_t k, int64_t ldw, const float* bias)
    : impl_(std::make_unique<Impl>()) {
  check(n > 0 && k > 0 && ldw >= k, "oneDNN matmul: weights [n = {}, k = {}] with row stride {} are invalid", n, k,
        ldw);
  Impl& s = *impl_;
  s.n = n;
  s.k = k;
  s.has_bias = bias != nullptr;
  try {
    // The layout is chosen for a typical batch; other m reuse it (a per-m layout would need a copy per m).
    const auto pd = s.make_pd(kDnnlPlanRows, memory::desc({k, n}, kF32, Tag::any));
    s.weights_md = pd.weights_desc();
    // W is [n][k] row-major, i.e. the logical [k][n] operand with strides (1, ldw).
    const memory::desc user_md({k, n}, kF32, memory::dims{1, ldw});
    memory user(user_md, cpu_engine(), const_cast<float*>(w));
    s.weights = memory(s.weights_md, cpu_engine());
    dnnl::stream stream(cpu_engine());
    dnnl::reorder(user, s.weights).execute(stream, user, s.weights);
    if (bias) {
      s.bias = memory(memory::desc({1, n}, kF32, Tag::ab), cpu_engine());
      std::memcpy(s.bias.get_data_handle(), bias, sizeof(float) * n);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    fail("oneDNN matmul [k = {}, n = {}]: could not prepare weights ({})", k, n, e.what());
  }
}

DnnlMatmulF32::~DnnlMatmulF32() = default;

void DnnlMatmulF32::run(const float* x, int64_t m, float* y) const {
  if (m <= 0) return;
  const auto plan = impl_->plan(m);
  try {
    dnnl::engine& eng = cpu_engine();
    thread_local dnnl::stream stream(eng);
    memory src(plan->pd.src_desc(), eng, const_cast<float*>(x));
    memory dst(plan->pd.dst_desc(), eng, y);
    const memory::desc scratch_md = plan->pd.scratchpad_desc();
    memory scratch(scratch_md, eng, thread_scratch(scratch_md.get_size()));
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, impl_->weights}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
    if (impl_->has_bias) args.emplace(DNNL_ARG_BIAS, impl_->bias);
    plan->prim.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    fail("oneDNN matmul [m = {}, k = {}, n = {}] failed: {}", m, impl_->k, impl_->n, e.what());
  }
}

std::string DnnlMatmulF32::impl_name(int64_t m) const {
  return impl_->plan(m)->pd.impl_info_str();
}

size_t DnnlMatmulF32::bytes() const {
  return impl_->weights_md.get_size() + (impl_->has_bias ? sizeof(float) * impl_->n : 0);
}

int64_t DnnlMatmulF32::n() const {
  return impl_->n;
}
int64_t DnnlMatmulF32::k() const {
  return impl_->k;
}

}  // namespace shrink::kernels
