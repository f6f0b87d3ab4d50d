// Quantization schemes by name, the packed-tensor contract of a quantized layer, round-to-nearest packing, the
// dispatch to the fast per-format Linear, and the scalar reference Linear that the fast ones are tested against.
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/kernels/quant.h>
#include <shrink/ops/qlinear.h>

#include <charconv>
#include <cmath>

#include "ops/qlinear_impl.h"

namespace shrink {

namespace {

constexpr const char* kValidSchemes =
    "f32, bf16, w8a16, w8a8, w8a8-static, w4a16, w4a16-g32, w4a16-g64, w4a16-g128 (W4 also with -asym)";

Tensor f32_tensor(const std::vector<float>& v, Shape shape) { return Tensor::from_f32(v, std::move(shape)); }

}  // namespace

std::string QuantSpec::name() const {
  switch (scheme) {
    case WeightScheme::F32: return "f32";
    case WeightScheme::BF16: return "bf16";
    case WeightScheme::W8A16: return "w8a16";
    case WeightScheme::W8A8: return static_act ? "w8a8-static" : "w8a8";
    case WeightScheme::W4A16: return "w4a16-g" + std::to_string(group) + (asym ? "-asym" : "");
  }
  return "?";
}

QuantSpec parse_quant_spec(std::string_view text) {
  QuantSpec s;
  if (text == "f32" || text == "fp32") return s;
  if (text == "bf16") return s.scheme = WeightScheme::BF16, s;
  if (text == "w8a16") return s.scheme = WeightScheme::W8A16, s;
  if (text == "w8a8") return s.scheme = WeightScheme::W8A8, s;
  if (text == "w8a8-static") return s.scheme = WeightScheme::W8A8, s.static_act = true, s;
  std::string_view rest = text;
  if (rest.substr(0, 5) == "w4a16") {
    s.scheme = WeightScheme::W4A16;
    s.group = 32;
    rest.remove_prefix(5);
    if (rest.size() >= 2 && rest.substr(0, 2) == "-g") {
      rest.remove_prefix(2);
      int g = 0;
      auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), g);
      if (ec != std::errc() || (g != 32 && g != 64 && g != 128))
        fail("quantization scheme '{}': group must be 32, 64 or 128; valid schemes: {}", text, kValidSchemes);
      s.group = g;
      rest.remove_prefix(static_cast<size_t>(p - rest.data()));
    }
    if (rest == "-asym") return s.asym = true, s;
    if (rest.empty()) return s;
  }
  fail("unknown quantization scheme '{}'; valid schemes: {}", text, kValidSchemes);
}

const Tensor* PackedLinear::find(std::string_view name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

size_t PackedLinear::bytes() const {
  size_t b = 0;
  for (auto& [n, t] : tensors) b += t.nbytes();
  return b;
}

void PackedLinear::validate(const std::string& what) const {
  auto need = [&](const char* name, DType dt, const Shape& shape) {
    const Tensor* t = find(name);
    if (!t)
      fail("{}: tensor '{}' is missing; a {} layer needs it. The file is incomplete; re-run shrink quantize", what,
           name, spec.name());
    if (t->dtype() != dt || t->shape() != shape)
      fail("{}: tensor '{}' is {} {}; expected {} {} for a {} layer with {} -> {} features", what, name,
           dtype_name(t->dtype()), shape_str(t->shape()), dtype_name(dt), shape_str(shape), spec.name(), in, out);
  };
  check(out > 0 && in > 0, "{}: a {} layer with {} -> {} features; expected positive sizes", what, spec.name(), in,
        out);
  switch (spec.scheme) {
    case WeightScheme::F32: need("weight", DType::F32, {out, in}); break;
    case WeightScheme::BF16: need("weight", DType::BF16, {out, in}); break;
    case WeightScheme::W8A16:
    case WeightScheme::W8A8:
      need("weight", DType::I8, {out, in});
      need("weight_scale", DType::F32, {out, 1});
      if (spec.static_act) {
        need("input_scale", DType::F32, {1});
        need("input_zero_point", DType::I32, {1});
      }
      break;
    case WeightScheme::W4A16: {
      check(spec.group == 32 || spec.group == 64 || spec.group == 128, "{}: W4 group {}; expected 32, 64 or 128",
            what, spec.group);
      const int64_t groups = kernels::w4_groups(in, spec.group);
      need("weight_packed", DType::U8, {out, kernels::w4_row_bytes(in, spec.group)});
      need("weight_scale", DType::F16, {out, groups});
      if (spec.asym) need("weight_zero_point", DType::U8, {out, groups});
      need("weight_shape", DType::I64, {2});
      const int64_t* ws = find("weight_shape")->data<int64_t>();
      if (ws[0] != out || ws[1] != in)
        fail("{}: tensor 'weight_shape' says [{}, {}]; expected [{}, {}]", what, ws[0], ws[1], out, in);
      break;
    }
  }
  if (const Tensor* b = find("bias"))
    if (b->dtype() != DType::F32 || b->shape() != Shape{out})
      fail("{}: tensor 'bias' is {} {}; expected F32 [{}]", what, dtype_name(b->dtype()), shape_str(b->shape()), out);
}

PackedLinear quantize_linear_weights(const Tensor& weight, const Tensor* bias, const QuantSpec& spec) {
  check(weight.rank() == 2, "quantize: weight has shape {}; expected [out_features, in_features]",
        shape_str(weight.shape()));
  PackedLinear p;
  p.spec = spec;
  p.out = weight.dim(0);
  p.in = weight.dim(1);
  const Tensor w = weight.dtype() == DType::F32 ? weight : weight.to_f32();
  const float* wf = w.data<float>();
  const int64_t out = p.out, in = p.in;
  switch (spec.scheme) {
    case WeightScheme::F32: p.tensors.emplace_back("weight", w.clone()); break;
    case WeightScheme::BF16: {
      Tensor q = Tensor::empty(DType::BF16, {out, in});
      parallel_for(out, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) kernels::quantize_row_bf16_ref(wf + r * in, in, q.data<uint16_t>() + r * in);
      });
      p.tensors.emplace_back("weight", q);
      break;
    }
    case WeightScheme::W8A16:
    case WeightScheme::W8A8: {
      Tensor q = Tensor::empty(DType::I8, {out, in});
      Tensor s = Tensor::empty(DType::F32, {out, 1});
      parallel_for(out, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          kernels::quantize_row_s8_ref(wf + r * in, in, q.data<int8_t>() + r * in, s.data<float>() + r);
      });
      p.tensors.emplace_back("weight", q);
      p.tensors.emplace_back("weight_scale", s);
      if (spec.static_act) {
        check(spec.act_scale > 0.f && std::isfinite(spec.act_scale),
              "quantize w8a8-static: activation scale {} is not positive; calibrate first (--calib FILE)",
              spec.act_scale);
        p.tensors.emplace_back("input_scale", f32_tensor({spec.act_scale}, {1}));
        Tensor zp = Tensor::empty(DType::I32, {1});
        zp.data<int32_t>()[0] = spec.act_zero_point;
        p.tensors.emplace_back("input_zero_point", zp);
      }
      break;
    }
    case WeightScheme::W4A16: {
      const int g = spec.group;
      const int64_t groups = kernels::w4_groups(in, g), rb = kernels::w4_row_bytes(in, g);
      Tensor q = Tensor::zeros(DType::U8, {out, rb});
      Tensor s = Tensor::empty(DType::F16, {out, groups});
      Tensor z = spec.asym ? Tensor::empty(DType::U8, {out, groups}) : Tensor();
      parallel_for(out, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          kernels::quantize_row_w4_ref(wf + r * in, in, g, spec.asym, q.data<uint8_t>() + r * rb,
                                       s.data<uint16_t>() + r * groups,
                                       spec.asym ? z.data<uint8_t>() + r * groups : nullptr);
      });
      p.tensors.emplace_back("weight_packed", q);
      p.tensors.emplace_back("weight_scale", s);
      if (spec.asym) p.tensors.emplace_back("weight_zero_point", z);
      Tensor shape = Tensor::empty(DType::I64, {2});
      shape.data<int64_t>()[0] = out;
      shape.data<int64_t>()[1] = in;
      p.tensors.emplace_back("weight_shape", shape);
      break;
    }
  }
  if (bias && bias->defined() && bias->numel() > 0) {
    check(bias->numel() == out, "quantize: bias has {} values; expected {} (out_features)", bias->numel(), out);
    p.tensors.emplace_back("bias", bias->to_f32().reshape({out}));
  }
  return p;
}

std::unique_ptr<Linear> make_packed_linear(PackedLinear packed) {
  packed.validate("quantized layer");
  switch (packed.spec.scheme) {
    case WeightScheme::F32: {
      const Tensor* b = packed.find("bias");
      return make_dense_linear(*packed.find("weight"), b);
    }
    case WeightScheme::BF16: return detail::make_bf16_linear(std::move(packed));
    case WeightScheme::W8A16:
    case WeightScheme::W8A8: return detail::make_w8_linear(std::move(packed));
    case WeightScheme::W4A16: return detail::make_w4_linear(std::move(packed));
  }
  fail("quantized layer: unknown scheme");
}

std::unique_ptr<Linear> make_quantized_linear(const Tensor& weight, const Tensor* bias, const QuantSpec& spec) {
  return make_packed_linear(quantize_linear_weights(weight, bias, spec));
}

namespace detail {

namespace {

class ReferencePackedLinear final : public Linear {
 public:
  explicit ReferencePackedLinear(PackedLinear p) : p_(std::move(p)) {
    p_.validate("reference " + p_.spec.name() + " layer");
    in_ = p_.in;
    out_ = p_.out;
  }

  void forward(const float* x, int64_t m, float* y) const override {
    const Tensor* bt = p_.find("bias");
    const float* bias = bt ? bt->data<float>() : nullptr;
    std::vector<float> wrow(static_cast<size_t>(in_));
    std::vector<uint8_t> xq(static_cast<size_t>(in_));
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * in_;
      float a_scale = 0.f;
      int32_t a_zp = 0;
      if (p_.spec.scheme == WeightScheme::W8A8) {
        if (p_.spec.static_act) {
          a_scale = p_.find("input_scale")->data<float>()[0];
          a_zp = p_.find("input_zero_point")->data<int32_t>()[0];
          kernels::quantize_row_u8_ref(xi, in_, a_scale, a_zp, xq.data());
        } else {
          kernels::quantize_row_a8_dynamic_ref(xi, in_, xq.data(), &a_scale, &a_zp);
        }
      }
      for (int64_t o = 0; o < out_; ++o) {
        float v = 0.f;
        switch (p_.spec.scheme) {
          case WeightScheme::F32: {
            const float* w = p_.find("weight")->data<float>() + o * in_;
            double acc = 0;
            for (int64_t k = 0; k < in_; ++k) acc += static_cast<double>(w[k]) * xi[k];
            v = static_cast<float>(acc);
            break;
          }
          case WeightScheme::BF16: v = kernels::dot_bf16_f32_ref(p_.find("weight")->data<uint16_t>() + o * in_, xi, in_); break;
          case WeightScheme::W8A16:
            v = kernels::dot_w8_f32_ref(p_.find("weight")->data<int8_t>() + o * in_,
                                        p_.find("weight_scale")->data<float>()[o], xi, in_);
            break;
          case WeightScheme::W8A8: {
            const int8_t* w = p_.find("weight")->data<int8_t>() + o * in_;
            int64_t wsum = 0;
            for (int64_t k = 0; k < in_; ++k) wsum += w[k];
            const int64_t acc = kernels::dot_u8s8_ref(xq.data(), w, in_) - int64_t{a_zp} * wsum;
            v = static_cast<float>(static_cast<double>(acc) * a_scale * p_.find("weight_scale")->data<float>()[o]);
            break;
          }
          case WeightScheme::W4A16: {
            const int g = p_.spec.group;
            const int64_t rb = kernels::w4_row_bytes(in_, g), groups = kernels::w4_groups(in_, g);
            const Tensor* z = p_.find("weight_zero_point");
            v = kernels::dot_w4_f32_ref(p_.find("weight_packed")->data<uint8_t>() + o * rb,
                                        p_.find("weight_scale")->data<uint16_t>() + o * groups,
                                        z ? z->data<uint8_t>() + o * groups : nullptr, in_, g, xi);
            break;
          }
        }
        y[i * out_ + o] = v + (bias ? bias[o] : 0.f);
      }
    }
  }

  std::string scheme() const override { return p_.spec.name(); }
  size_t weight_bytes() const override { return p_.bytes(); }
  const PackedLinear* packed() const override { return &p_; }

 private:
  PackedLinear p_;
};

}  // namespace

std::unique_ptr<Linear> make_reference_packed_linear(PackedLinear p) {
  return std::make_unique<ReferencePackedLinear>(std::move(p));
}

}  // namespace detail

}  // namespace shrink
