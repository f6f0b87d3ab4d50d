#!/usr/bin/env python3
"""Independent GPTQ reference (numpy, float64) written from the paper's algorithm (Frantar et al. 2022, Alg. 1),
without the lazy block batching: after each column is quantized, its scaled error is subtracted from *every*
remaining column at once (mathematically what the blocked code computes). H^-1 is formed with np.linalg.inv and its
upper Cholesky factor taken with np.linalg.cholesky (the C++ code never forms H^-1).

Quantization grids follow shrink's packed formats (include/shrink/kernels/quant.h):
  W4 symmetric: s = f16(m / -8) with m the value of largest magnitude in the group; w = (q - 8) * s, q in [0, 15]
  W4 asymmetric: s = f16((hi - lo) / 15) over [min(lo,0), max(hi,0)], z = round(-lo / s); w = (q - z) * s
  W8 per row: s = max|w| / 127; w = q * s, q in [-127, 127]
Rounding is half away from zero; the grid arithmetic is done in float32 like the kernels' references.

Scale search (MSE_GRID > 0; IST-DASLab/gptq Quantizer.find_params with mse=True): the group's range (W8: the row's)
is shrunk by p = 1 - i/MSE_GRID for i = 0 .. int(0.8 * MSE_GRID) - 1 and the first p with the lowest
sum w_j |Q(v_j) - v_j|^2.4 is kept (w_j = 1, or diag(H)_j when WEIGHTED is 1).

Usage: gptq.py W.f32 X.f32 OUT IN N GROUP(0 = W8 per row) ASYM ACT_ORDER STATIC_GROUPS DAMP [MSE_GRID WEIGHTED]
W: [OUT, IN] float32 raw, X: [N, IN] float32 raw (calibration rows). Prints, one per line: the codes of W
(row-major, original column order), then "scales" followed by one scale per (row, group) as float32 values,
then "zeros" and the zero points (W4 asym) .
"""
import sys

import numpy as np


def round_away(v):
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def w4_params(vals, asym, p=np.float32(1)):
    vals = vals.astype(np.float32)
    if asym:
        lo = np.float32(min(np.float32(0), vals.min()) * p)
        hi = np.float32(max(np.float32(0), vals.max()) * p)
        s = np.float32((hi - lo) / np.float32(15)) if hi > lo else np.float32(1)
        s = np.float32(np.float16(s))
        if s == 0:
            s = np.float32(1)
        z = np.float32(min(max(round_away(np.float32(-lo / s)), 0), 15))
    else:
        i = int(np.argmax(np.abs(vals)))  # first index of the largest magnitude
        m = vals[i]
        s = np.float32(np.float32(p * m) / np.float32(-8)) if abs(m) > 0 else np.float32(1)
        s = np.float32(np.float16(s))
        if s == 0:
            s = np.float32(1)
        z = np.float32(8)
    return s, z, 0, 15


def w8_params(vals, p=np.float32(1)):
    amax = np.float32(np.abs(vals.astype(np.float32)).max())
    s = np.float32(np.float32(p * amax) / np.float32(127)) if amax > 0 else np.float32(1)
    return s, np.float32(0), -127, 127


def quant_vec(x, params):
    """Dequantized values of a vector under one grid (the same float32 arithmetic as quant)."""
    s, z, lo, hi = params
    inv = np.float32(1) / s
    v = (x.astype(np.float32) * inv).astype(np.float32) + z
    q = np.clip(round_away(v), lo, hi)
    return ((q - z).astype(np.float32) * s).astype(np.float32)


def search_params(vals, make, grid, imp):
    """The scale search: shrink the range by p on a grid, keep the first p with the lowest weighted |err|^2.4."""
    best = make(np.float32(1))
    if grid <= 0:
        return best
    vals = vals.astype(np.float32)
    w = np.ones(len(vals)) if imp is None else imp

    def err(params):
        return float(np.sum(w * np.abs(quant_vec(vals, params).astype(np.float64) - vals) ** 2.4))

    best_err = err(best)
    for i in range(1, int(0.8 * grid)):
        cand = make(np.float32(1 - i / grid))
        e = err(cand)
        if e < best_err:
            best, best_err = cand, e
    return best


def quant(x, params):
    s, z, lo, hi = params
    inv = np.float32(1) / s
    v = np.float32(np.float32(x) * inv) + z
    q = int(min(max(round_away(v), lo), hi))
    return q, float(np.float32(np.float32(q - z) * s))


def main():
    wpath, xpath = sys.argv[1], sys.argv[2]
    out, inn, n, group = (int(a) for a in sys.argv[3:7])
    asym, act_order, static_groups = (sys.argv[i] == "1" for i in (7, 8, 9))
    damp = float(sys.argv[10])
    grid = int(sys.argv[11]) if len(sys.argv) > 11 else 0
    weighted = len(sys.argv) > 12 and sys.argv[12] == "1"
    W = np.fromfile(wpath, dtype=np.float32).reshape(out, inn).astype(np.float64)
    X = np.fromfile(xpath, dtype=np.float32).reshape(n, inn).astype(np.float64)

    H = 2.0 / n * X.T @ X
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    hdiag = np.diag(H).copy() if weighted else None

    def imp(c0, c1):
        return None if hdiag is None else hdiag[c0:c1]

    def w4p(vals, c0):
        return search_params(vals, lambda p: w4_params(vals, asym, p), grid, imp(c0, c0 + len(vals)))

    w4 = group > 0
    if w4 and act_order:
        static_groups = True  # shrink's format has no per-column group index
    ngroups = (inn + group - 1) // group if w4 else 1
    params = [[None] * ngroups for _ in range(out)]
    if not w4 or static_groups:
        for r in range(out):
            for g in range(ngroups):
                if w4:
                    params[r][g] = w4p(W[r, g * group:(g + 1) * group], g * group)
                else:
                    params[r][g] = search_params(W[r], lambda p, v=W[r]: w8_params(v, p), grid, imp(0, inn))

    perm = np.arange(inn)
    if act_order:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]

    H = H + damp * np.mean(np.diag(H)) * np.eye(inn)
    Hinv = np.linalg.inv(H)
    U = np.linalg.cholesky(Hinv).T  # upper, U^T U = H^-1

    codes = np.zeros((out, inn), dtype=np.int64)
    for r in range(out):
        w = W[r].copy()
        cur = params[r][0]
        for j in range(inn):
            col = perm[j]
            if w4:
                if static_groups:
                    cur = params[r][col // group]
                elif j % group == 0:
                    cur = w4p(w[j:j + group], j)  # no act-order here: position j is column j
                    params[r][j // group] = cur
            q, deq = quant(w[j], cur)
            codes[r, col] = q
            e = (w[j] - deq) / U[j, j]
            w[j + 1:] -= e * U[j, j + 1:]

    lines = [str(int(c)) for c in codes.reshape(-1)]
    lines.append("scales")
    lines += [repr(float(params[r][g][0])) for r in range(out) for g in range(ngroups)]
    lines.append("zeros")
    lines += [str(int(params[r][g][1])) for r in range(out) for g in range(ngroups)]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
