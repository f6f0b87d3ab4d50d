// Scaled dot-product attention on fp32: the per-ISA "attend" kernel (a few queries against one run of keys)
// and the threaded drivers for causal (decoder, KV cache, GQA) and masked (encoder) attention.
#pragma once

#include <shrink/core/cpu.h>

#include <cstdint>

namespace shrink::kernels {

// One work item: n_q queries attend to the same keys 0 .. n_keys-1 (the query heads of one GQA group at one
// position, or a block of query rows of one encoder head).
struct AttendArgs {
  const float* q;  // query i at q + i * q_stride, head_dim floats
  int64_t q_stride;
  int n_q;
  const float* k;  // key j at k + j * kv_stride (v likewise)
  const float* v;
  int64_t kv_stride;
  int64_t n_keys;
  const int32_t* mask;  // null: every key allowed; otherwise key j is ignored where mask[j] == 0
  int head_dim;
  float scale;  // applied to q.k before the softmax
  float* out;   // output i at out + i * out_stride, head_dim floats
  int64_t out_stride;
  float* row_max;  // null: out is normalised. Otherwise out = sum_j exp(s_j - m) v_j unnormalised, and
  float* row_sum;  // row_max[i] = m, row_sum[i] = sum_j exp(s_j - m) (for merging key splits).
  float* scratch;  // attend_scratch_floats(n_q, n_keys) floats
  bool stream;     // K/V probably not in cache (an old KV cache): prefetch rows ahead of use
  // INT8 KV cache (format KV8, kernels/quant.h), read by attend_kv8 only: key j's codes at k8 + j * kv_stride
  // (bytes), its scale at k_scale[j] (one head's scales are contiguous over positions); values likewise.
  const int8_t* k8 = nullptr;
  const int8_t* v8 = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
};

// Queries whose keys are all masked get zeros (row_max -inf, row_sum 0), never NaN.
using AttendFn = void (*)(const AttendArgs& a);

struct AttentionKernels {
  Isa isa;
  const char* name;  // e.g. "f32-attend-avx512"
  AttendFn attend;
  // Same contract over an INT8 KV cache (k8/v8 + scales; k and v unused): the keys and values of the call are
  // dequantized exactly as dequantize_row_s8_ref does (code * scale, in float) into an L1/L2 tile of the scratch,
  // then attended by `attend`. Needs attend_kv8_scratch_floats(n_q, n_keys, head_dim) floats of scratch.
  AttendFn attend_kv8;
  const char* kv8_name;  // e.g. "kv8-attend-avx512"
};

// Throws shrink::Error when this CPU cannot run `isa`.
const AttentionKernels& attention_kernels(Isa isa);

// Scratch an attend call needs: the n_q rows of scores, padded to whole 16-key blocks.
inline int64_t attend_scratch_floats(int n_q, int64_t n_keys) {
  return int64_t{n_q} * ((n_keys + 15) / 16 * 16);
}

// Scratch of an attend_kv8 call: the scores plus dequantized key and value tiles.
inline int64_t attend_kv8_scratch_floats(int n_q, int64_t n_keys, int head_dim) {
  return attend_scratch_floats(n_q, n_keys) + 2 * n_keys * int64_t{head_dim} + 16;
}

// ---- Threaded drivers; same contracts as shrink::ops::attention_causal / attention_masked (ops/ops.h). ----
// Prefill: work items are (query row, KV head), every query head of a GQA group handled together so each key/value
// row is read once per group. Decode (<= 4 new tokens, >= 128 keys): items are (query row, chunk of 32..256 keys)
// over every KV head, so the cache is walked row by row and all threads share a long context; the chunks are
// merged exactly (log-sum-exp) in double.
void attention_causal(Isa isa, const float* q, int64_t n_tokens, int64_t start_pos, const float* k_cache,
                      const float* v_cache, int64_t kv_stride, int n_heads, int n_kv_heads, int head_dim, float scale,
                      float* out);
// The same over an INT8 KV cache (ops::attention_causal_kv8): codes [pos][kv_stride] bytes, the scale of position p
// and KV head g at k_scales[g * scale_stride + p] (v likewise).
void attention_causal_kv8(Isa isa, const float* q, int64_t n_tokens, int64_t start_pos, const int8_t* k_cache,
                          const int8_t* v_cache, int64_t kv_stride, const float* k_scales, const float* v_scales,
                          int64_t scale_stride, int n_heads, int n_kv_heads, int head_dim, float scale, float* out);
// Work items are (head, block of query rows); keys after the last unmasked one are never read.
void attention_masked(Isa isa, const float* q, const float* k, const float* v, int64_t ld, int64_t T,
                      const int32_t* mask, int n_heads, int head_dim, float scale, float* out);

}  // namespace shrink::kernels
