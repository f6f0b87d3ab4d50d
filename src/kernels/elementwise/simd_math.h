// exp, GELU (erf and tanh forms) and SiLU on SIMD vectors, templated over a vec_*.h traits struct V.
// Accuracy target: a few ulp relative over the whole range where the result is a normal float (see README.md).
#pragma once

namespace shrink::kernels {
namespace {

// exp(hi + lo) for a float pair whose sum carries more bits than one float (lo tiny against hi). Cephes
// expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split so n * kLn2Hi is exact), degree-7 polynomial, * 2^n.
// Results below the smallest denormal are 0, above FLT_MAX inf; NaN stays NaN.
template <class V>
typename V::F exp_hilo(typename V::F hi, typename V::F lo) {
  using F = typename V::F;
  const F x = V::min(V::set1(89.0f), V::max(V::set1(-110.0f), hi));
  const F n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  F r = V::fnma(n, V::set1(0.693359375f), x);
  r = V::fnma(n, V::set1(-2.12194440e-4f), r);
  r = V::add(r, lo);
  F p = V::set1(1.9875691500e-4f);
  p = V::fma(p, r, V::set1(1.3981999507e-3f));
  p = V::fma(p, r, V::set1(8.3334519073e-3f));
  p = V::fma(p, r, V::set1(4.1665795894e-2f));
  p = V::fma(p, r, V::set1(1.6666665459e-1f));
  p = V::fma(p, r, V::set1(5.0000001201e-1f));
  p = V::add(V::fma(p, V::mul(r, r), r), V::set1(1.0f));
  return V::ldexp(p, n);
}

template <class V>
typename V::F vexp(typename V::F x) {
  return exp_hilo<V>(x, V::zero());
}

// x / (1 + exp(-x)): exp's argument is exact, so this is a few ulp everywhere.
template <class V>
typename V::F vsilu(typename V::F x) {
  return V::div(x, V::add(V::set1(1.0f), vexp<V>(V::sub(V::zero(), x))));
}

// x Phi(x), Phi(x) = 0.5 erfc(-x / sqrt 2). For |x| / sqrt 2 < 0.75, Phi = 0.5 + 0.5 erf(w), w = x / sqrt 2, with
// erf(w) = w P(w^2) (degree-5 minimax, rel. error 1.4e-9). Beyond, 0.5 erfc(z) = 0.5 exp(-x^2/2) G(t), z = |x|/sqrt 2,
// t = 1 / (1 + z/2), G degree-8 minimax of erfc(z) exp(z^2) on [0.75, 9.4] (rel. error 1.4e-8). x^2/2 is carried
// as hi + lo (an FMA gives the exact product residual), so the negative tail stays relative-accurate down to the
// denormals. Coefficients: Lawson-weighted least squares in double, rounded to float.
template <class V>
typename V::F vgelu_erf(typename V::F x) {
  using F = typename V::F;
  const F half = V::set1(0.5f);
  const F w = V::mul(x, V::set1(0.70710678118654752f));
  const F w2 = V::mul(w, w);
  F p = V::set1(-6.749540917e-04f);
  p = V::fma(p, w2, V::set1(5.114350002e-03f));
  p = V::fma(p, w2, V::set1(-2.683462761e-02f));
  p = V::fma(p, w2, V::set1(1.128337681e-01f));
  p = V::fma(p, w2, V::set1(-3.761262000e-01f));
  p = V::fma(p, w2, V::set1(1.128379107e+00f));
  const F phi_small = V::fma(V::mul(half, w), p, half);

  const F xc = V::min(V::set1(16.0f), V::max(V::set1(-16.0f), x));
  const F sq = V::mul(xc, xc);
  const F sq_lo = V::fms(xc, xc, sq);
  const F e = exp_hilo<V>(V::mul(sq, V::set1(-0.5f)), V::mul(sq_lo, V::set1(-0.5f)));
  const F z = V::mul(V::abs(xc), V::set1(0.70710678118654752f));
  const F t = V::div(V::set1(1.0f), V::fma(z, half, V::set1(1.0f)));
  F g = V::set1(5.989722908e-02f);
  g = V::fma(g, t, V::set1(-1.167879179e-01f));
  g = V::fma(g, t, V::set1(-6.945789605e-02f));
  g = V::fma(g, t, V::set1(1.780526042e-01f));
  g = V::fma(g, t, V::set1(1.241042167e-01f));
  g = V::fma(g, t, V::set1(2.627978921e-01f));
  g = V::fma(g, t, V::set1(2.792662382e-01f));
  g = V::fma(g, t, V::set1(2.823668718e-01f));
  g = V::fma(g, t, V::set1(-1.099659494e-05f));
  const F q = V::mul(V::mul(half, e), g);  // 0.5 erfc(z)
  const F phi_large = V::select(V::lt(x, V::zero()), q, V::sub(V::set1(1.0f), q));
  const F phi = V::select(V::lt(z, V::set1(0.75f)), phi_small, phi_large);
  return V::mul(x, phi);
}

// 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3). -2u is formed in double and
// passed to exp as hi + lo: its rounding would otherwise cost |2u| * 2^-24 relative in the negative tail.
template <class V>
typename V::F vgelu_tanh(typename V::F x) {
  using F = typename V::F;
  constexpr double kTwoSqrt2OverPi = 1.5957691216057307117597842397375;  // 2 sqrt(2/pi)
  const F xc = V::min(V::set1(32.0f), V::max(V::set1(-32.0f), x));
  F hi, lo;
  V::neg_odd_cubic_hilo(xc, kTwoSqrt2OverPi, kTwoSqrt2OverPi * 0.044715, hi, lo);
  return V::div(x, V::add(V::set1(1.0f), exp_hilo<V>(hi, lo)));
}

}  // namespace
}  // namespace shrink::kernels
