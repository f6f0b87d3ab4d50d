// Truncated SVD of a weight matrix: the eigendecomposition (LAPACK dsyevd) of the smaller Gram matrix for exact
// factors, a randomized range finder with power iterations for big matrices; products run on the fp32 sgemm.
#include <shrink/compress/lowrank.h>
#include <shrink/core/error.h>
#include <shrink/train/autograd.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

extern "C" void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                        double* work, const int* lwork, int* iwork, const int* liwork, int* info, size_t jobz_len,
                        size_t uplo_len);

namespace shrink {

namespace {

using train::gemm;

// Eigenvalues (ascending) of the symmetric n x n matrix `a`; on return eigenvector j is a[j * n .. j * n + n).
std::vector<double> eig_sym(std::vector<double>& a, int64_t n) {
  check(n > 0 && n <= (int64_t{1} << 30) / n, "svd: Gram matrix of side {} is too large for dsyevd", n);
  const int ni = static_cast<int>(n);
  std::vector<double> w(n);
  int info = 0, lwork = -1, liwork = -1, iwq = 0;
  double wq = 0;
  dsyevd_("V", "L", &ni, a.data(), &ni, w.data(), &wq, &lwork, &iwq, &liwork, &info, 1, 1);
  lwork = static_cast<int>(wq) + 1;
  liwork = iwq + 1;
  std::vector<double> work(lwork);
  std::vector<int> iwork(liwork);
  dsyevd_("V", "L", &ni, a.data(), &ni, w.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  if (info != 0)
    fail("svd: LAPACK dsyevd failed on a {}x{} Gram matrix (info {}); the weights may hold NaN or Inf", n, n, info);
  return w;
}

// G = X X^T (X [rows, cols] row-major), in double.
std::vector<double> gram_rows(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> g(static_cast<size_t>(rows * rows));
  gemm(false, true, rows, rows, cols, 1.f, x, cols, x, cols, 0.f, g.data(), rows);
  std::vector<double> d(g.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < rows; ++j)  // symmetrize what float summation left uneven
      d[i * rows + j] = 0.5 * (static_cast<double>(g[i * rows + j]) + g[j * rows + i]);
  return d;
}

Tensor transpose(const float* x, int64_t rows, int64_t cols) {
  Tensor t = Tensor::empty(DType::F32, {cols, rows});
  float* o = t.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) o[c * rows + r] = x[r * cols + c];
  return t;
}

// Orthonormal columns spanning Y [n, l] (row-major): Y V L^(-1/2) from the eigendecomposition of Y^T Y, twice for
// orthogonality to working precision; directions with negligible energy are dropped (fewer columns).
std::vector<float> orthonormalize(std::vector<float> y, int64_t n, int64_t& l) {
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<float> yt(static_cast<size_t>(l * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < l; ++j) yt[j * n + i] = y[i * l + j];
    std::vector<double> c = gram_rows(yt.data(), l, n);
    const std::vector<double> lam = eig_sym(c, l);
    const double top = std::max(lam.back(), 0.0);
    std::vector<float> m;  // [l, k]: columns V_j / sqrt(lam_j) of the kept directions, largest first
    int64_t k = 0;
    std::vector<int64_t> keep;
    for (int64_t j = l - 1; j >= 0; --j)
      if (lam[j] > top * 1e-10 && lam[j] > 0) keep.push_back(j);
    k = static_cast<int64_t>(keep.size());
    check(k > 0, "svd: the sketch of the matrix is zero (all-zero weight?)");
    m.assign(static_cast<size_t>(l * k), 0.f);
    for (int64_t c2 = 0; c2 < k; ++c2) {
      const int64_t j = keep[c2];
      const double s = 1.0 / std::sqrt(lam[j]);
      for (int64_t i = 0; i < l; ++i) m[i * k + c2] = static_cast<float>(c[j * l + i] * s);
    }
    std::vector<float> q(static_cast<size_t>(n * k));
    gemm(false, false, n, k, l, 1.f, y.data(), l, m.data(), k, 0.f, q.data(), k);
    y = std::move(q);
    l = k;
  }
  return y;
}

// Factors from the left basis U = Q Z (Q [out, l] orthonormal or identity when null, Z eigenvectors of a Gram
// matrix, columns in `z`): b = U_r sqrt(S), a = S^(-1/2) U_r^T W, where U_r^T W = Z_r^T (Q^T W) = Z_r^T bm.
void factors_from_left(const std::vector<double>& z, const std::vector<double>& lam, int64_t l, const float* q,
                       const float* bm, int64_t out, int64_t in, TruncatedSvd& r) {
  const int64_t rank = r.rank;
  std::vector<float> zr(static_cast<size_t>(l * rank));  // [l, rank]: column c = eigenvector of the c-th largest
  std::vector<float> sq(rank);
  for (int64_t c = 0; c < rank; ++c) {
    const int64_t j = l - 1 - c;
    const double s = std::sqrt(std::max(lam[j], 0.0));
    sq[c] = static_cast<float>(std::sqrt(s));
    for (int64_t i = 0; i < l; ++i) zr[i * rank + c] = static_cast<float>(z[j * l + i]);
  }
  r.b = Tensor::empty(DType::F32, {out, rank});
  float* b = r.b.data<float>();
  if (q)
    gemm(false, false, out, rank, l, 1.f, q, l, zr.data(), rank, 0.f, b, rank);
  else
    std::copy(zr.begin(), zr.end(), b);
  r.a = Tensor::empty(DType::F32, {rank, in});
  float* a = r.a.data<float>();
  gemm(true, false, rank, in, l, 1.f, zr.data(), rank, bm, in, 0.f, a, in);
  for (int64_t c = 0; c < rank; ++c) {
    const float s = sq[c];
    const float inv = s > 0.f ? 1.f / s : 0.f;
    for (int64_t i = 0; i < out; ++i) b[i * rank + c] *= s;
    for (int64_t i = 0; i < in; ++i) a[c * in + i] = s > 0.f ? a[c * in + i] * inv : 0.f;
  }
}

int64_t choose_rank(const TruncatedSvd& r, const SvdOptions& opt, int64_t available) {
  int64_t rank = opt.rank > 0 ? opt.rank : rank_for_energy(r.sigma, r.total_energy, opt.energy);
  rank = std::min(rank, available);
  if (opt.max_rank > 0) rank = std::min(rank, opt.max_rank);
  return std::max<int64_t>(rank, 1);
}

}  // namespace

int64_t rank_for_energy(const std::vector<double>& sigma, double total_energy, double energy) {
  check(energy > 0 && energy <= 1, "energy {} is outside (0, 1]; pass e.g. --energy 0.9", energy);
  const double target = energy * total_energy;
  double acc = 0;
  for (size_t i = 0; i < sigma.size(); ++i) {
    acc += sigma[i] * sigma[i];
    // A relative slack keeps energy 1.0 reachable despite rounding in the sum.
    if (acc >= target * (1 - 1e-12)) return static_cast<int64_t>(i + 1);
  }
  return static_cast<int64_t>(sigma.size());
}

TruncatedSvd truncated_svd(const Tensor& w_in, const SvdOptions& opt) {
  check(w_in.rank() == 2 && w_in.numel() > 0, "svd: weight shape {}; expected a non-empty [out, in] matrix",
        shape_str(w_in.shape()));
  check(opt.rank > 0 || (opt.energy > 0 && opt.energy <= 1),
        "low-rank: give a rank > 0 or an energy in (0, 1] (got rank {}, energy {})", opt.rank, opt.energy);
  const Tensor w = w_in.dtype() == DType::F32 ? w_in : w_in.to_f32();
  const int64_t out = w.dim(0), in = w.dim(1), small = std::min(out, in);
  const float* wp = w.data<float>();
  TruncatedSvd r;
  for (int64_t i = 0; i < w.numel(); ++i) r.total_energy += static_cast<double>(wp[i]) * wp[i];
  check(std::isfinite(r.total_energy), "svd: the weight holds NaN or Inf");

  // Work on the side with fewer rows: W^T when in < out, then swap the factors back.
  const bool flip = in < out;
  Tensor wt;
  const float* m = wp;
  int64_t rows = out, cols = in;
  if (flip) {
    wt = transpose(wp, out, in);
    m = wt.data<float>();
    rows = in, cols = out;
  }

  if (small <= opt.exact_limit) {
    std::vector<double> g = gram_rows(m, rows, cols);
    const std::vector<double> lam = eig_sym(g, rows);
    for (int64_t j = rows - 1; j >= 0; --j) r.sigma.push_back(std::sqrt(std::max(lam[j], 0.0)));
    r.rank = choose_rank(r, opt, rows);
    factors_from_left(g, lam, rows, nullptr, m, rows, cols, r);
  } else {
    // Randomized range finder (Halko, Martinsson, Tropp 2011): Y = (M M^T)^q M Omega, orthonormalized each step.
    // With an energy target the sketch grows until its energy reaches the target (or the cap).
    const int64_t cap = opt.max_rank > 0 ? std::min(opt.max_rank, small) : small;
    int64_t want = opt.rank > 0 ? std::min(opt.rank, cap) : std::min<int64_t>(256, cap);
    std::mt19937_64 gen(opt.seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (;;) {
      int64_t l = std::min(want + 16, small);
      std::vector<float> omega(static_cast<size_t>(cols * l));
      for (auto& v : omega) v = nd(gen);
      std::vector<float> y(static_cast<size_t>(rows * l));
      gemm(false, false, rows, l, cols, 1.f, m, cols, omega.data(), l, 0.f, y.data(), l);
      y = orthonormalize(std::move(y), rows, l);
      for (int it = 0; it < opt.power_iterations; ++it) {
        std::vector<float> z(static_cast<size_t>(cols * l));
        gemm(true, false, cols, l, rows, 1.f, m, cols, y.data(), l, 0.f, z.data(), l);
        z = orthonormalize(std::move(z), cols, l);
        y.assign(static_cast<size_t>(rows * l), 0.f);
        gemm(false, false, rows, l, cols, 1.f, m, cols, z.data(), l, 0.f, y.data(), l);
        y = orthonormalize(std::move(y), rows, l);
      }
      std::vector<float> bm(static_cast<size_t>(l * cols));  // Q^T M [l, cols]
      gemm(true, false, l, cols, rows, 1.f, y.data(), l, m, cols, 0.f, bm.data(), cols);
      std::vector<double> g = gram_rows(bm.data(), l, cols);
      const std::vector<double> lam = eig_sym(g, l);
      r.sigma.clear();
      double captured = 0;
      for (int64_t j = l - 1; j >= 0; --j) {
        r.sigma.push_back(std::sqrt(std::max(lam[j], 0.0)));
        captured += std::max(lam[j], 0.0);
      }
      const bool enough = opt.rank > 0 || captured >= opt.energy * r.total_energy * (1 - 1e-9) || want >= cap;
      if (!enough) {
        want = std::min(want * 2, cap);
        continue;
      }
      r.rank = choose_rank(r, opt, l);
      // An energy target the sketch did not reach within the cap: the cap is the answer.
      if (opt.rank == 0 && captured < opt.energy * r.total_energy) r.rank = std::min(cap, l);
      factors_from_left(g, lam, l, y.data(), bm.data(), rows, cols, r);
      r.randomized = true;
      break;
    }
  }
  if (flip) {  // M = W^T = b a  =>  W = a^T b^T
    Tensor na = transpose(r.b.data<float>(), r.b.dim(0), r.b.dim(1));
    Tensor nb = transpose(r.a.data<float>(), r.a.dim(0), r.a.dim(1));
    r.a = std::move(na);
    r.b = std::move(nb);
  }
  return r;
}

}  // namespace shrink
