// GPTQ (include/shrink/compress/gptq.h): Hessian accumulation, the upper Cholesky factor of H^-1 in double, and the
// column-by-column quantization with blocked lazy updates, written into the packed W4 / W8 tensors.
#include <dnnl.h>
#include <shrink/compress/gptq.h>
#include <shrink/core/dtype.h>
#include <shrink/core/error.h>
#include <shrink/core/parallel.h>
#include <shrink/core/timer.h>
#include <shrink/kernels/quant.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace shrink {

namespace {

void sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
           int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0 || k == 0) return;
  const dnnl_status_t st = dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  check(st == dnnl_success, "GPTQ: oneDNN sgemm failed with status {} for M={} N={} K={}", static_cast<int>(st), m, n,
        k);
}

// Lower Cholesky of the n x n row-major matrix in `a` (lower triangle read and overwritten; the strict upper triangle
// is left as it was). Right-looking, blocked: the trailing update is dots of contiguous panel rows. Returns false when
// a pivot is not positive (matrix not positive definite).
bool cholesky_lower(double* a, int64_t n) {
  constexpr int64_t kNb = 64;
  for (int64_t k0 = 0; k0 < n; k0 += kNb) {
    const int64_t k1 = std::min(n, k0 + kNb);
    for (int64_t j = k0; j < k1; ++j) {
      double* rj = a + j * n;
      double d = rj[j];
      for (int64_t p = k0; p < j; ++p) d -= rj[p] * rj[p];
      if (!(d > 0) || !std::isfinite(d)) return false;
      rj[j] = std::sqrt(d);
      for (int64_t i = j + 1; i < k1; ++i) {
        double* ri = a + i * n;
        double s = ri[j];
        for (int64_t p = k0; p < j; ++p) s -= ri[p] * rj[p];
        ri[j] = s / rj[j];
      }
    }
    if (k1 == n) break;
    // Panel below the diagonal block: A21 <- A21 L11^-T, row by row.
    parallel_for(n - k1, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t i = k1 + r0; i < k1 + r1; ++i) {
        double* ri = a + i * n;
        for (int64_t j = k0; j < k1; ++j) {
          const double* rj = a + j * n;
          double s = ri[j];
          for (int64_t p = k0; p < j; ++p) s -= ri[p] * rj[p];
          ri[j] = s / rj[j];
        }
      }
    });
    // Trailing update A22 -= A21 A21^T (lower part): four rows at a time share the loads of row j.
    const int64_t rows = n - k1, w = k1 - k0;
    const int64_t quads = (rows + 3) / 4;
#pragma omp parallel for schedule(dynamic, 2) num_threads(num_threads())
    for (int64_t qd = 0; qd < quads; ++qd) {
      const int64_t i0 = k1 + (quads - 1 - qd) * 4;  // longest rows first
      const int64_t i_end = std::min(n, i0 + 4);
      for (int64_t j = k1; j < i_end; ++j) {
        const double* rj = a + j * n + k0;
        double s[4] = {0, 0, 0, 0};
        const double* r0 = a + i0 * n + k0;
        const double* r1 = i0 + 1 < i_end ? r0 + n : r0;
        const double* r2 = i0 + 2 < i_end ? r0 + 2 * n : r0;
        const double* r3 = i0 + 3 < i_end ? r0 + 3 * n : r0;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t p = 0; p < w; ++p) {
          s0 += r0[p] * rj[p];
          s1 += r1[p] * rj[p];
          s2 += r2[p] * rj[p];
          s3 += r3[p] * rj[p];
        }
        s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
        for (int64_t t = 0; t < 4 && i0 + t < i_end; ++t)
          if (j <= i0 + t) a[(i0 + t) * n + j] -= s[t];
      }
    }
  }
  return true;
}

// Inverse of the lower-triangular L (row-major, lower part) into m (lower part; upper part zeroed). Columns are
// independent: each chunk of columns runs the row recurrence M[i] = (e_i - sum_{p<i} L[i][p] M[p]) / L[i][i].
void invert_lower(const double* l, int64_t n, double* m) {
  std::fill(m, m + n * n, 0.0);
  constexpr int64_t kCols = 32;
  const int64_t chunks = (n + kCols - 1) / kCols;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads())
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t c0 = c * kCols, c1 = std::min(n, c0 + kCols), w = c1 - c0;
    double acc[kCols];
    for (int64_t i = c0; i < n; ++i) {
      const double* li = l + i * n;
      for (int64_t t = 0; t < w; ++t) acc[t] = (i == c0 + t) ? 1.0 : 0.0;
      for (int64_t p = c0; p < i; ++p) {
        const double f = li[p];
        const double* mp = m + p * n + c0;
#pragma omp simd
        for (int64_t t = 0; t < w; ++t) acc[t] -= f * mp[t];
      }
      double* mi = m + i * n + c0;
      const double inv = 1.0 / li[i];
      for (int64_t t = 0; t < w; ++t) mi[t] = acc[t] * inv;
    }
  }
}

// The upper factor U with U^T U = H^-1 (what GPTQ reads: torch cholesky -> cholesky_inverse -> cholesky(upper)),
// without forming H^-1: with J the reversal, H = V V^T for V = J chol(J H J) J upper, and U = V^-1 = J L^-1 J.
// Returns false when H is not positive definite.
bool upper_inverse_factor(const std::vector<double>& h, int64_t n, std::vector<float>* u) {
  std::vector<double> a(static_cast<size_t>(n * n));
  parallel_for(n, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t j = 0; j <= i; ++j) a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
  });
  if (!cholesky_lower(a.data(), n)) return false;
  std::vector<double> m(static_cast<size_t>(n * n));
  invert_lower(a.data(), n, m.data());
  u->assign(static_cast<size_t>(n * n), 0.f);
  parallel_for(n, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      for (int64_t j = i; j < n; ++j) (*u)[i * n + j] = static_cast<float>(m[(n - 1 - i) * n + (n - 1 - j)]);
  });
  return true;
}

// One quantization grid (a W4 group or a W8 row): exactly the arithmetic of the kernels/quant.h references, so a
// diagonal Hessian reproduces round-to-nearest code for code.
struct Grid {
  float s = 1.f, inv = 1.f, z = 0.f;
  int lo = -127, hi = 127;
  int code(float x) const {
    const float v = std::clamp(x * inv + z, -1e6f, 1e6f);
    return std::clamp(static_cast<int>(std::lround(v)), lo, hi);
  }
  float value(int q) const { return static_cast<float>(q - static_cast<int>(z)) * s; }
};

// W4 group parameters of quantize_row_w4_ref from the group's values (n <= group; missing values count as the
// zero padding), with the range shrunk by p (1: the reference's max scale).
Grid w4_grid(const float* v, int64_t n, bool asym, float p) {
  Grid g;
  g.lo = 0, g.hi = 15;
  float s;
  if (asym) {
    float lo = 0.f, hi = 0.f;
    for (int64_t i = 0; i < n; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
    lo *= p, hi *= p;
    s = hi > lo ? (hi - lo) / 15.f : 1.f;
    s = f16_to_f32(f32_to_f16(s));
    if (s == 0.f) s = 1.f;
    g.z = static_cast<float>(std::clamp(static_cast<int>(std::lround(-lo / s)), 0, 15));
  } else {
    float amax = 0.f, mx = 0.f;
    for (int64_t i = 0; i < n; ++i)
      if (std::fabs(v[i]) > amax) amax = std::fabs(v[i]), mx = v[i];
    s = amax > 0.f ? p * mx / -8.f : 1.f;
    s = f16_to_f32(f32_to_f16(s));
    if (s == 0.f) s = 1.f;
    g.z = 8.f;
  }
  g.s = s;
  g.inv = 1.f / s;
  return g;
}

Grid w8_grid(const float* v, int64_t n, float p) {
  float amax = 0.f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  Grid g;
  g.s = amax > 0.f ? p * amax / 127.f : 1.f;
  g.inv = 1.f / g.s;
  return g;
}

void check_scale_search(const ScaleSearchOptions& opt) {
  check(opt.grid >= 0 && opt.max_shrink > 0 && opt.max_shrink < 1 && opt.norm > 0,
        "scale search: grid {} must be >= 0 (100 is the usual value, 0 is off), max shrink {} in (0, 1), norm {} > 0",
        opt.grid, opt.max_shrink, opt.norm);
}

bool integer_weights(const QuantSpec& spec) {
  return spec.scheme == WeightScheme::W4A16 || spec.scheme == WeightScheme::W8A16 || spec.scheme == WeightScheme::W8A8;
}

// The grid of a W4 group / W8 row, by scale search when opt.grid > 0 (ScaleSearchOptions), else the max scale.
Grid choose_grid(const float* v, int64_t n, const QuantSpec& spec, const ScaleSearchOptions& opt,
                 const float* importance, GroupScaleChoice* choice = nullptr) {
  const bool w4 = spec.scheme == WeightScheme::W4A16;
  auto make = [&](float p) { return w4 ? w4_grid(v, n, spec.asym, p) : w8_grid(v, n, p); };
  auto error = [&](const Grid& g) {
    double e = 0;
    for (int64_t j = 0; j < n; ++j) {
      const double d = std::fabs(static_cast<double>(g.value(g.code(v[j]))) - v[j]);
      e += (importance ? static_cast<double>(importance[j]) : 1.0) * std::pow(d, opt.norm);
    }
    return e;
  };
  Grid best = make(1.f);
  if (opt.grid <= 0 && !choice) return best;
  double best_err = error(best);
  GroupScaleChoice c;
  c.error_max = best_err;
  const int steps = opt.grid > 0 ? static_cast<int>(opt.max_shrink * opt.grid) : 0;
  for (int i = 1; i < steps; ++i) {
    const float p = static_cast<float>(1.0 - static_cast<double>(i) / opt.grid);
    const Grid g = make(p);
    const double e = error(g);
    if (e < best_err) best_err = e, best = g, c.shrink = p;
  }
  if (choice) {
    c.error_best = best_err;
    c.scale = best.s;
    c.zero_point = static_cast<int>(best.z);
    *choice = c;
  }
  return best;
}

}  // namespace

GroupScaleChoice search_group_scale(const float* v, int64_t n, const QuantSpec& spec, const ScaleSearchOptions& opt,
                                    const float* importance) {
  check(integer_weights(spec), "scale search: scheme {} has no integer weights; expected w4a16-gN[-asym] or w8",
        spec.name());
  check_scale_search(opt);
  GroupScaleChoice c;
  choose_grid(v, n, spec, opt, importance, &c);
  return c;
}

HessianAccumulator::HessianAccumulator(int64_t in) : in_(in), sum_(static_cast<size_t>(in * in), 0.f) {
  check(in > 0, "GPTQ Hessian: {} input features; expected at least 1", in);
}

void HessianAccumulator::add(const float* x, int64_t rows) {
  if (rows <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  sgemm('T', 'N', in_, in_, rows, 1.f, x, in_, x, in_, 1.f, sum_.data(), in_);
  rows_ += rows;
}

Tensor HessianAccumulator::hessian() const {
  std::lock_guard<std::mutex> lock(mu_);
  Tensor h = Tensor::zeros(DType::F32, {in_, in_});
  if (rows_ == 0) return h;
  const float f = 2.f / static_cast<float>(rows_);
  float* d = h.data<float>();
  for (size_t i = 0; i < sum_.size(); ++i) d[i] = sum_[i] * f;
  return h;
}

PackedLinear gptq_quantize(const Tensor& weight, const Tensor* bias, const Tensor& hessian, const QuantSpec& spec,
                           const GptqOptions& opt, GptqStats* stats) {
  Timer timer;
  check(weight.rank() == 2, "GPTQ: weight has shape {}; expected [out_features, in_features]",
        shape_str(weight.shape()));
  const int64_t out = weight.dim(0), in = weight.dim(1);
  check(hessian.rank() == 2 && hessian.dim(0) == in && hessian.dim(1) == in && hessian.dtype() == DType::F32,
        "GPTQ: Hessian has shape {}; expected F32 [{}, {}] (in_features of weight {})", shape_str(hessian.shape()), in,
        in, shape_str(weight.shape()));
  const bool w4 = spec.scheme == WeightScheme::W4A16;
  check(integer_weights(spec),
        "GPTQ: scheme {} has no integer weights; GPTQ takes w4a16-gN[-asym], w8a16, w8a8 or w8a8-static", spec.name());
  check(opt.damp >= 0 && std::isfinite(opt.damp), "GPTQ: damp {} must be >= 0 (0.01 is the usual value)", opt.damp);
  check(opt.block >= 1, "GPTQ: block {} must be >= 1 (128 is the usual value)", opt.block);
  check_scale_search(opt.scale_search);
  const int group = w4 ? spec.group : 0;
  const bool static_groups = w4 && (opt.static_groups || opt.act_order);

  // Layout, bias and static input parameters come from the RTN packer; GPTQ then rewrites codes and scales.
  PackedLinear packed = quantize_linear_weights(weight, bias, spec);

  Tensor wt = weight.dtype() == DType::F32 ? weight.clone() : weight.to_f32();
  float* w = wt.data<float>();
  std::vector<double> h(static_cast<size_t>(in * in));
  const float* hs = hessian.data<float>();
  for (int64_t i = 0; i < in * in; ++i) h[i] = static_cast<double>(hs[i]);
  int64_t dead = 0;
  for (int64_t i = 0; i < in; ++i) {
    if (h[i * in + i] != 0.0) continue;
    h[i * in + i] = 1.0;
    for (int64_t r = 0; r < out; ++r) w[r * in + i] = 0.f;
    ++dead;
  }
  // Per-column importance of the scale search (weighted: the Hessian diagonal, original column order).
  std::vector<float> hdiag;
  if (opt.scale_search.weighted)
    for (int64_t i = 0; i < in; ++i) hdiag.push_back(static_cast<float>(h[i * in + i]));
  auto importance = [&](int64_t col) { return hdiag.empty() ? nullptr : hdiag.data() + col; };

  // Grids fixed before any update: W8 rows always (GPTQ's per-channel find_params on the whole W), W4 groups when
  // static. Dynamic W4 groups are set on entering each group, from the updated weights.
  const int64_t groups = w4 ? kernels::w4_groups(in, group) : 1;
  std::vector<Grid> grids(static_cast<size_t>(out * groups));
  if (!w4 || static_groups)
    parallel_for(out, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t g = 0; g < groups; ++g) {
          const float* row = w + r * in;
          grids[r * groups + g] = w4 ? choose_grid(row + g * group, std::min<int64_t>(group, in - g * group), spec,
                                                   opt.scale_search, importance(g * group))
                                     : choose_grid(row, in, spec, opt.scale_search, importance(0));
        }
    });

  std::vector<int64_t> perm(static_cast<size_t>(in));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  if (opt.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return h[a * in + a] > h[b * in + b]; });
    Tensor wp = Tensor::empty(DType::F32, {out, in});
    float* p = wp.data<float>();
    parallel_for(out, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t j = 0; j < in; ++j) p[r * in + j] = w[r * in + perm[j]];
    });
    wt = wp;
    w = p;
    std::vector<double> hp(h.size());
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < in; ++j) hp[i * in + j] = h[perm[i] * in + perm[j]];
    h.swap(hp);
  }

  double mean_diag = 0;
  for (int64_t i = 0; i < in; ++i) mean_diag += h[i * in + i];
  mean_diag /= static_cast<double>(in);
  std::vector<float> u;
  double damp = opt.damp;
  for (int attempt = 0;; ++attempt) {
    std::vector<double> hd = h;
    for (int64_t i = 0; i < in; ++i) hd[i * in + i] += damp * mean_diag;
    if (upper_inverse_factor(hd, in, &u)) break;
    // Not positive definite at this damping (too few calibration rows for the width): dampen more, as users of the
    // reference code do by hand.
    check(attempt < 6,
          "GPTQ: the Hessian of a [{}, {}] layer is not positive definite even with damp {} (mean diag {}); give "
          "more calibration tokens (--calib-samples/--calib-len) or a larger --damp",
          out, in, damp, mean_diag);
    damp = damp > 0 ? damp * 10 : 0.01;
  }

  // Column codes by original column; W4 grids written as groups are entered.
  std::vector<int8_t> codes(static_cast<size_t>(out * in));
  int64_t block = opt.block;
  if (w4 && !static_groups) block = (block + group - 1) / group * group;  // a group never straddles two blocks
  std::vector<float> err(static_cast<size_t>(out * block));
  for (int64_t i1 = 0; i1 < in; i1 += block) {
    const int64_t i2 = std::min(in, i1 + block), count = i2 - i1;
    parallel_for(out, 4, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* row = w + r * in;
        float* e = err.data() + r * block;
        Grid grid = grids[r * groups];
        for (int64_t j = i1; j < i2; ++j) {
          const int64_t col = perm[j];
          if (w4) {
            if (static_groups) {
              grid = grids[r * groups + col / group];
            } else if (j % group == 0) {
              // Dynamic groups exist only without act-order: column j is original column j.
              grid = choose_grid(row + j, std::min<int64_t>(group, in - j), spec, opt.scale_search, importance(j));
              grids[r * groups + j / group] = grid;
            }
          }
          const float x = row[j];
          const int q = grid.code(x);
          codes[r * in + col] = static_cast<int8_t>(q);
          const float* uj = u.data() + j * in;
          const float ej = (x - grid.value(q)) / uj[j];
          for (int64_t k = j + 1; k < i2; ++k) row[k] -= ej * uj[k];
          e[j - i1] = ej;
        }
      }
    });
    // Lazy update of every later column with this block's errors: W[:, i2:] -= E U[i1:i2, i2:].
    sgemm('N', 'N', out, in - i2, count, -1.f, err.data(), block, u.data() + i1 * in + i2, in, 1.f, w + i2, in);
  }

  for (auto& [name, t] : packed.tensors) {
    if (!w4 && name == "weight") {
      std::copy(codes.begin(), codes.end(), t.data<int8_t>());
    } else if (!w4 && name == "weight_scale") {
      for (int64_t r = 0; r < out; ++r) t.data<float>()[r] = grids[r].s;
    } else if (w4 && name == "weight_packed") {
      const int64_t rb = kernels::w4_row_bytes(in, group);
      uint8_t* p = t.data<uint8_t>();
      for (int64_t r = 0; r < out; ++r)
        for (int64_t c = 0; c < groups * group; ++c) {
          // Padding columns hold the group's code of zero.
          const int q = c < in ? codes[r * in + c] : static_cast<int>(grids[r * groups + c / group].z);
          uint8_t& b = p[r * rb + c / 2];
          b = (c & 1) ? static_cast<uint8_t>((b & 0x0F) | (q << 4)) : static_cast<uint8_t>((b & 0xF0) | q);
        }
    } else if (w4 && name == "weight_scale") {
      for (int64_t i = 0; i < out * groups; ++i) t.data<uint16_t>()[i] = f32_to_f16(grids[i].s);
    } else if (w4 && name == "weight_zero_point") {
      for (int64_t i = 0; i < out * groups; ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(grids[i].z);
    }
  }
  if (stats) {
    stats->dead_columns = dead;
    stats->damp_used = damp;
    stats->time_ms = timer.elapsed_ms();
  }
  return packed;
}

}  // namespace shrink
