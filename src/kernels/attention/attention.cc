// Threaded drivers of attention: work items over (position, KV head) or (head, query rows), per-thread scratch,
// and key splits for long decodes merged exactly with log-sum-exp.
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/elementwise/kernel_tables.h"

namespace shrink::kernels {

namespace {

// A split below this many keys is not worth its merge.
constexpr int64_t kMinKeysPerSplit = 256;
// Encoder query rows per work item: they share each key block while it is in L1.
constexpr int kEncoderQueryRows = 8;
constexpr int64_t kMaxSplits = 64;

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

void attention_causal(Isa isa, const float* q, int64_t n_tokens, int64_t start_pos, const float* k_cache,
                      const float* v_cache, int64_t kv_stride, int n_heads, int n_kv_heads, int head_dim, float scale,
                      float* out) {
  check(n_tokens >= 0 && start_pos >= 0,
        "ops::attention_causal: expected n_tokens >= 0 and start_pos >= 0, got {} and {}", n_tokens, start_pos);
  check(head_dim > 0 && n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0,
        "ops::attention_causal: {} query heads of dim {} cannot share {} KV heads; n_heads must be a positive multiple "
        "of n_kv_heads (check num_attention_heads / num_key_value_heads in config.json)",
        n_heads, head_dim, n_kv_heads);
  check(kv_stride >= int64_t{n_kv_heads} * head_dim,
        "ops::attention_causal: KV cache row stride {} is shorter than n_kv_heads * head_dim = {}", kv_stride,
        int64_t{n_kv_heads} * head_dim);
  if (n_tokens == 0) return;
  const AttendFn attend = attention_kernels(isa).attend;
  const int group = n_heads / n_kv_heads;
  const int64_t q_row = int64_t{n_heads} * head_dim;
  const int64_t items = n_tokens * n_kv_heads;
  const int64_t threads = num_threads();
  int64_t splits = 1;
  if (items < threads) {
    splits = (threads + items - 1) / items;
    const int64_t by_keys = (start_pos + n_tokens) / kMinKeysPerSplit;
    splits = splits < by_keys ? splits : by_keys;
    splits = splits < kMaxSplits ? splits : kMaxSplits;
    splits = splits < 1 ? 1 : splits;
  }

  // Item u: query row t (balanced order), KV head g, keys [k0, k1) of that row's start_pos + t + 1.
  auto make_args = [&](int64_t u, int64_t split, AttendArgs& a) {
    const int64_t t = balanced_row(u / n_kv_heads, n_tokens);
    const int64_t g = u % n_kv_heads;
    const int64_t keys = start_pos + t + 1;
    const int64_t k0 = keys * split / splits, k1 = keys * (split + 1) / splits;
    a = AttendArgs{};
    a.q = q + t * q_row + g * group * head_dim;
    a.q_stride = head_dim;
    a.n_q = group;
    a.k = k_cache + k0 * kv_stride + g * head_dim;
    a.v = v_cache + k0 * kv_stride + g * head_dim;
    a.kv_stride = kv_stride;
    a.n_keys = k1 - k0;
    a.head_dim = head_dim;
    a.scale = scale;
    a.out = out + t * q_row + g * group * head_dim;
    a.out_stride = head_dim;
    a.scratch = thread_scratch(attend_scratch_floats(group, a.n_keys));
  };

  if (splits == 1) {
    parallel_for(items, 1, [&](int64_t b, int64_t e) {
      AttendArgs a;
      for (int64_t u = b; u < e; ++u) {
        make_args(u, 0, a);
        attend(a);
      }
    });
    return;
  }

  // Each split writes its unnormalised output, max and sum; the merge rescales by exp(m_s - m).
  const int64_t part = int64_t{group} * (head_dim + 2);
  thread_local std::vector<float> parts;
  if (static_cast<int64_t>(parts.size()) < items * splits * part) parts.resize(items * splits * part);
  float* parts_data = parts.data();
  parallel_for(items * splits, 1, [&](int64_t b, int64_t e) {
    AttendArgs a;
    for (int64_t w = b; w < e; ++w) {
      make_args(w / splits, w % splits, a);
      float* p = parts_data + w * part;
      a.out = p;
      a.row_max = p + int64_t{group} * head_dim;
      a.row_sum = a.row_max + group;
      if (a.n_keys == 0) {
        for (int64_t i = 0; i < int64_t{group} * head_dim; ++i) p[i] = 0.0f;
        for (int h = 0; h < group; ++h) {
          a.row_max[h] = -std::numeric_limits<float>::infinity();
          a.row_sum[h] = 0.0f;
        }
        continue;
      }
      attend(a);
    }
  });
  for (int64_t u = 0; u < items; ++u) {
    AttendArgs a;
    make_args(u, 0, a);
    for (int h = 0; h < group; ++h) {
      const float* first = parts_data + u * splits * part;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < splits; ++s) {
        const float ms = first[s * part + int64_t{group} * head_dim + h];
        m = ms > m ? ms : m;
      }
      double weight[kMaxSplits];
      double sum = 0;
      for (int64_t s = 0; s < splits; ++s) {
        const float* p = first + s * part;
        const float ms = p[int64_t{group} * head_dim + h];
        weight[s] = ms == -std::numeric_limits<float>::infinity() ? 0.0 : std::exp(static_cast<double>(ms) - m);
        sum += weight[s] * p[int64_t{group} * head_dim + group + h];
      }
      float* o = a.out + h * a.out_stride;
      const double inv = sum > 0 ? 1.0 / sum : 0.0;
      for (int d = 0; d < head_dim; ++d) {
        double acc = 0;
        for (int64_t s = 0; s < splits; ++s) acc += weight[s] * first[s * part + int64_t{h} * head_dim + d];
        o[d] = static_cast<float>(acc * inv);
      }
    }
  }
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
  parallel_for(n_heads * blocks, 1, [&](int64_t b, int64_t e) {
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
