// The decoders' KV cache: allocation per type (fp32 or INT8 KV8), writes (quantizing for INT8) and the causal
// attention over it.
#include <shrink/core/error.h>
#include <shrink/models/model.h>
#include <shrink/ops/ops.h>

#include <algorithm>
#include <cstring>

namespace shrink {

const char* kv_cache_type_name(KvCacheType t) {
  return t == KvCacheType::Int8 ? "int8" : "f32";
}

KvCacheType parse_kv_cache_type(const std::string& name) {
  if (name == "f32" || name == "fp32") return KvCacheType::F32;
  if (name == "int8") return KvCacheType::Int8;
  fail("KV cache type '{}' is not known; expected f32 or int8", name);
}

KvCache DecoderModel::new_cache(int64_t max_seq, KvCacheType type) const {
  KvCache c;
  c.type = type;
  c.max_seq = max_seq > 0 ? std::min<int64_t>(max_seq, max_context()) : max_context();
  c.n_kv_heads = config_.num_kv_heads;
  c.head_dim = config_.head_dim;
  c.kv_dim = static_cast<int64_t>(config_.num_kv_heads) * config_.head_dim;
  const size_t n = static_cast<size_t>(config_.num_layers) * c.max_seq * c.kv_dim;
  if (type == KvCacheType::Int8) {
    c.k8.assign(n, 0);
    c.v8.assign(n, 0);
    const size_t scales = static_cast<size_t>(config_.num_layers) * config_.num_kv_heads * c.max_seq;
    c.k_scale.assign(scales, 0.f);
    c.v_scale.assign(scales, 0.f);
  } else {
    c.k.assign(n, 0.f);
    c.v.assign(n, 0.f);
  }
  return c;
}

size_t DecoderModel::kv_cache_bytes(int64_t max_seq, KvCacheType type) const {
  const int64_t seq = max_seq > 0 ? std::min<int64_t>(max_seq, max_context()) : max_context();
  const size_t rows = static_cast<size_t>(config_.num_layers) * seq;  // per K and per V
  const size_t dim = static_cast<size_t>(config_.num_kv_heads) * config_.head_dim;
  if (type == KvCacheType::Int8) return 2 * rows * (dim + sizeof(float) * config_.num_kv_heads);
  return 2 * rows * dim * sizeof(float);
}

size_t KvCache::kv_bytes() const {
  return (k.size() + v.size() + k_scale.size() + v_scale.size()) * sizeof(float) + k8.size() + v8.size();
}

void KvCache::store(int layer, int64_t p, int64_t n, const float* k_rows, const float* v_rows, int64_t ld) {
  check(p >= 0 && n >= 0 && p + n <= max_seq, "KV cache: positions [{}, {}) do not fit its {} positions", p, p + n,
        max_seq);
  if (type == KvCacheType::F32) {
    for (int64_t t = 0; t < n; ++t) {
      std::memcpy(k_layer(layer) + (p + t) * kv_dim, k_rows + t * ld, sizeof(float) * kv_dim);
      std::memcpy(v_layer(layer) + (p + t) * kv_dim, v_rows + t * ld, sizeof(float) * kv_dim);
    }
    return;
  }
  const size_t codes = static_cast<size_t>(layer) * max_seq * kv_dim;
  const size_t scales = static_cast<size_t>(layer) * n_kv_heads * max_seq;
  ops::quantize_kv8(k_rows, ld, n, n_kv_heads, head_dim, p, k8.data() + codes, kv_dim, k_scale.data() + scales,
                    max_seq);
  ops::quantize_kv8(v_rows, ld, n, n_kv_heads, head_dim, p, v8.data() + codes, kv_dim, v_scale.data() + scales,
                    max_seq);
}

void KvCache::attend(int layer, const float* q, int64_t n, int64_t p, int n_heads, float scale, float* out) const {
  if (type == KvCacheType::F32) {
    const size_t off = static_cast<size_t>(layer) * max_seq * kv_dim;
    ops::attention_causal(q, n, p, k.data() + off, v.data() + off, kv_dim, n_heads, n_kv_heads, head_dim, scale, out);
    return;
  }
  const size_t codes = static_cast<size_t>(layer) * max_seq * kv_dim;
  const size_t scales = static_cast<size_t>(layer) * n_kv_heads * max_seq;
  ops::attention_causal_kv8(q, n, p, k8.data() + codes, v8.data() + codes, kv_dim, k_scale.data() + scales,
                            v_scale.data() + scales, max_seq, n_heads, n_kv_heads, head_dim, scale, out);
}

}  // namespace shrink
