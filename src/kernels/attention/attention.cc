// Threaded drivers of attention: work items over (position, KV head) or (head, query rows), per-thread scratch,
// and key splits for long decodes merged exactly with log-sum-exp.
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/elementwise/kernel_tables.h"

namespace shrink::kernels {

namespace {

// Decode-like calls (few new tokens) walk the cache in chunks of keys, every KV head per chunk: one head alone
// would touch each K/V row (often a whole 4 KiB page or more) for a few hundred bytes, so a long context costs a
// page walk per row per head. Chunks also give every thread work when there are fewer heads than threads.
constexpr int64_t kMaxChunkedTokens = 4;
constexpr int64_t kMinChunkedKeys = 128;
constexpr int64_t kMinChunk = 32, kMaxChunk = 256;
constexpr int64_t kStreamMinBytes = 1 << 20;
// Encoder query rows per work item: they share each key block while it is in L1.
constexpr int kEncoderQueryRows = 8;
// Below this many multiply-adds a call runs on the calling thread: waking the pool costs more (and
// far more when the cores are shared with other processes).
constexpr int64_t kSerialMacs = 1 << 16;
int64_t grain_for(int64_t items, int64_t macs) {
  return macs < kSerialMacs ? items : 1;
}

// Grows once per thread to the largest request; the pool's threads live as long as the process.
float* thread_scratch(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

// Prefill rows in the order 0, n-1, 1, n-2, ...: row t attends to start_pos + t + 1 keys, so contiguous chunks of
// this order carry about the same work.
int64_t balanced_row(int64_t rank, int64_t n) {
  return rank % 2 == 0 ? rank / 2 : n - 1 - rank / 2;
}

}  // namespace

const AttentionKernels& attention_kernels(Isa isa) {
  detail::check_isa_usable(isa, "attention");
  switch (isa) {
    case Isa::Avx512: return detail::kAttentionAvx512;
    case Isa::Avx2: return detail::kAttentionAvx2;
    case Isa::Scalar: break;
  }
  return detail::kAttentionScalar;
}

namespace {

// The cache a causal call reads: fp32 rows, or INT8 codes with per (position, KV head) scales.
struct CausalKv {
  const float* k = nullptr;
  const float* v = nullptr;
  const int8_t* k8 = nullptr;
  const int8_t* v8 = nullptr;
  const float* k_scales = nullptr;
  const float* v_scales = nullptr;
  int64_t scale_stride = 0;
  int64_t kv_stride = 0;  // elements per position row
};

void check_causal(int64_t n_tokens, int64_t start_pos, int64_t kv_stride, int n_heads, int n_kv_heads, int head_dim) {
  check(n_tokens >= 0 && start_pos >= 0,
        "ops::attention_causal: expected n_tokens >= 0 and start_pos >= 0, got {} and {}", n_tokens, start_pos);
  check(head_dim > 0 && n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0,
        "ops::attention_causal: {} query heads of dim {} cannot share {} KV heads; n_heads must be a positive multiple "
        "of n_kv_heads (check num_attention_heads / num_key_value_heads in config.json)",
        n_heads, head_dim, n_kv_heads);
  check(kv_stride >= int64_t{n_kv_heads} * head_dim,
        "ops::attention_causal: KV cache row stride {} is shorter than n_kv_heads * head_dim = {}", kv_stride,
        int64_t{n_kv_heads} * head_dim);
}

void causal(Isa isa, const float* q, int64_t n_tokens, int64_t start_pos, const CausalKv& kv, int n_heads,
            int n_kv_heads, int head_dim, float scale, float* out) {
  const int64_t kv_stride = kv.kv_stride;
  const bool int8 = kv.k8 != nullptr;
  const float* k_cache = kv.k;
  const float* v_cache = kv.v;
  if (n_tokens == 0) return;
  const AttendFn attend = int8 ? attention_kernels(isa).attend_kv8 : attention_kernels(isa).attend;
  const int64_t elem_bytes = int8 ? 1 : static_cast<int64_t>(sizeof(float));
  const int group = n_heads / n_kv_heads;
  const int64_t q_row = int64_t{n_heads} * head_dim;
  const int64_t max_keys = start_pos + n_tokens;
  const int64_t threads = num_threads();

  // Query row t, KV head g, keys [k0, k1) of that row's start_pos + t + 1.
  auto make_args = [&](int64_t t, int64_t g, int64_t k0, int64_t k1, AttendArgs& a) {
    a = AttendArgs{};
    a.q = q + t * q_row + g * group * head_dim;
    a.q_stride = head_dim;
    a.n_q = group;
    if (int8) {
      a.k8 = kv.k8 + k0 * kv_stride + g * head_dim;
      a.v8 = kv.v8 + k0 * kv_stride + g * head_dim;
      a.k_scale = kv.k_scales + g * kv.scale_stride + k0;
      a.v_scale = kv.v_scales + g * kv.scale_stride + k0;
    } else {
      a.k = k_cache + k0 * kv_stride + g * head_dim;
      a.v = v_cache + k0 * kv_stride + g * head_dim;
    }
    a.kv_stride = kv_stride;
    a.n_keys = k1 - k0;
    a.head_dim = head_dim;
    a.scale = scale;
    a.out = out + t * q_row + g * group * head_dim;
    a.out_stride = head_dim;
    a.scratch = thread_scratch(int8 ? attend_kv8_scratch_floats(group, a.n_keys, head_dim)
                                    : attend_scratch_floats(group, a.n_keys));
    // A KV cache beyond L2 was written tokens (and layers) ago: stream it with prefetches.
    a.stream = max_keys * kv_stride * elem_bytes > kStreamMinBytes;
  };

  if (n_tokens > kMaxChunkedTokens || max_keys < kMinChunkedKeys) {
    // Prefill: items (row, KV head) over the row's whole key range; rows in balanced order.
    const int64_t macs = 2 * n_tokens * max_keys * n_heads * int64_t{head_dim};
    parallel_for(n_tokens * n_kv_heads, grain_for(n_tokens * n_kv_heads, macs), [&](int64_t b, int64_t e) {
      AttendArgs a;
      for (int64_t u = b; u < e; ++u) {
        const int64_t t = balanced_row(u / n_kv_heads, n_tokens);
        make_args(t, u % n_kv_heads, 0, start_pos + t + 1, a);
        attend(a);
      }
    });
    return;
  }

  // Decode: items (row, chunk of keys) over every KV head. Each writes unnormalised outputs with their max and
  // sum; the merge rescales chunk s by exp(m_s - m) and divides by the merged sum.
  int64_t chunk = (max_keys + threads - 1) / threads;
  chunk = chunk < kMinChunk ? kMinChunk : (chunk > kMaxChunk ? kMaxChunk : chunk);
  chunk = (chunk + 15) / 16 * 16;
  const int64_t n_chunks = (max_keys + chunk - 1) / chunk;
  const int64_t part = q_row + 2 * int64_t{n_heads};  // outputs, then max and sum per head
  thread_local std::vector<float> parts;
  if (static_cast<int64_t>(parts.size()) < n_tokens * n_chunks * part) parts.resize(n_tokens * n_chunks * part);
  float* parts_data = parts.data();
  const int64_t macs = 2 * n_tokens * max_keys * n_heads * int64_t{head_dim};
  parallel_for(n_tokens * n_chunks, grain_for(n_tokens * n_chunks, macs), [&](int64_t b, int64_t e) {
    AttendArgs a;
    for (int64_t w = b; w < e; ++w) {
      const int64_t t = w / n_chunks, k0 = (w % n_chunks) * chunk;
      const int64_t keys = start_pos + t + 1, k1 = k0 + chunk < keys ? k0 + chunk : keys;
      float* p = parts_data + w * part;
      if (k0 >= k1) {
        for (int64_t h = 0; h < n_heads; ++h) {
          p[q_row + h] = -std::numeric_limits<float>::infinity();
          p[q_row + n_heads + h] = 0.0f;
        }
        continue;
      }
      for (int64_t g = 0; g < n_kv_heads; ++g) {
        make_args(t, g, k0, k1, a);
        a.out = p + g * group * head_dim;
        a.row_max = p + q_row + g * group;
        a.row_sum = p + q_row + n_heads + g * group;
        attend(a);
      }
    }
  });
  std::vector<double> acc(head_dim);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* first = parts_data + t * n_chunks * part;
    for (int64_t h = 0; h < n_heads; ++h) {
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t c = 0; c < n_chunks; ++c) m = std::max(m, first[c * part + q_row + h]);
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t c = 0; c < n_chunks; ++c) {
        const float* p = first + c * part;
        const float mc = p[q_row + h];
        // Empty chunks (and chunks whose keys were all masked) carry no outputs: skip, never multiply junk by 0.
        if (mc == -std::numeric_limits<float>::infinity()) continue;
        const double w = std::exp(static_cast<double>(mc) - m);
        sum += w * p[q_row + n_heads + h];
        for (int64_t d = 0; d < head_dim; ++d) acc[d] += w * p[h * head_dim + d];
      }
      const double inv = sum > 0 ? 1.0 / sum : 0.0;
      float* o = out + t * q_row + h * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) o[d] = static_cast<float>(acc[d] * inv);
    }
  }
}

}  // namespace

void attention_causal(Isa isa, const float* q, int64_t n_tokens, int64_t start_pos, const float* k_cache,
                      const float* v_cache, int64_t kv_stride, int n_heads, int n_kv_heads, int head_dim, float scale,
                      float* out) {
  check_causal(n_tokens, start_pos, kv_stride, n_heads, n_kv_heads, head_dim);
  CausalKv kv;
  kv.k = k_cache;
  kv.v = v_cache;
  kv.kv_stride = kv_stride;
  causal(isa, q, n_tokens, start_pos, kv, n_heads, n_kv_heads, head_dim, scale, out);
}

void attention_causal_kv8(Isa isa, const float* q, int64_t n_tokens, int64_t start_pos, const int8_t* k_cache,
                          const int8_t* v_cache, int64_t kv_stride, const float* k_scales, const float* v_scales,
                          int64_t scale_stride, int n_heads, int n_kv_heads, int head_dim, float scale, float* out) {
  check_causal(n_tokens, start_pos, kv_stride, n_heads, n_kv_heads, head_dim);
  check(scale_stride >= start_pos + n_tokens,
        "ops::attention_causal_kv8: scale stride {} is shorter than the {} positions attended", scale_stride,
        start_pos + n_tokens);
  CausalKv kv;
  kv.k8 = k_cache;
  kv.v8 = v_cache;
  kv.k_scales = k_scales;
  kv.v_scales = v_scales;
  kv.scale_stride = scale_stride;
  kv.kv_stride = kv_stride;
  causal(isa, q, n_tokens, start_pos, kv, n_heads, n_kv_heads, head_dim, scale, out);
}

void attention_masked(Isa isa, const float* q, const float* k, const float* v, int64_t ld, int64_t T,
                      const int32_t* mask, int n_heads, int head_dim, float scale, float* out) {
  check(T >= 0 && n_heads > 0 && head_dim > 0,
        "ops::attention_masked: expected T >= 0, n_heads > 0, head_dim > 0, got {}, {}, {}", T, n_heads, head_dim);
  const int64_t row = int64_t{n_heads} * head_dim;
  check(ld >= row, "ops::attention_masked: row stride ld {} is shorter than n_heads * head_dim = {}", ld, row);
  if (T == 0) return;
  const AttendFn attend = attention_kernels(isa).attend;
  // Keys after the last unmasked one are never read (right padding costs nothing).
  int64_t n_keys = T;
  if (mask) {
    n_keys = 0;
    for (int64_t j = 0; j < T; ++j)
      if (mask[j] != 0) n_keys = j + 1;
  }
  if (n_keys == 0) {
    for (int64_t t = 0; t < T; ++t) std::memset(out + t * row, 0, sizeof(float) * row);
    return;
  }
  const int64_t blocks = (T + kEncoderQueryRows - 1) / kEncoderQueryRows;
  const int64_t macs = 2 * T * n_keys * n_heads * int64_t{head_dim};
  parallel_for(n_heads * blocks, grain_for(n_heads * blocks, macs), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t h = u / blocks, r0 = (u % blocks) * kEncoderQueryRows;
      AttendArgs a{};
      a.q = q + r0 * ld + h * head_dim;
      a.q_stride = ld;
      a.n_q = static_cast<int>(T - r0 < kEncoderQueryRows ? T - r0 : kEncoderQueryRows);
      a.k = k + h * head_dim;
      a.v = v + h * head_dim;
      a.kv_stride = ld;
      a.n_keys = n_keys;
      a.mask = mask;
      a.head_dim = head_dim;
      a.scale = scale;
      a.out = out + r0 * row + h * head_dim;
      a.out_stride = row;
      a.scratch = thread_scratch(attend_scratch_floats(a.n_q, n_keys));
      attend(a);
    }
  });
}

}  // namespace shrink::kernels
