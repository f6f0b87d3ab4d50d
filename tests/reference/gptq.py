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

Usage: gptq.py W.f32 X.f32 OUT IN N GROUP(0 = W8 per row) ASYM ACT_ORDER STATIC_GROUPS DAMP
W: [OUT, IN] float32 raw, X: [N, IN] float32 raw (calibration rows). Prints, one per line: the codes of W
(row-major, original column order), then "scales" followed by one scale per (row, group) as float32 values,
then "zeros" and the zero points (W4 asym) .
"""
import sys

import numpy as np


def round_away(v):
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def w4_params(vals, asym):
    vals = vals.astype(np.float32)
    if asym:
        lo = min(np.float32(0), vals.min())
        hi = max(np.float32(0), vals.max())
        s = np.float32((hi - lo) / np.float32(15)) if hi > lo else np.float32(1)
        s = np.float32(np.float16(s))
        if s == 0:
            s = np.float32(1)
        z = np.float32(min(max(round_away(np.float32(-lo / s)), 0), 15))
    else:
        i = int(np.argmax(np.abs(vals)))  # first index of the largest magnitude
        m = vals[i]
        s = np.float32(m / np.float32(-8)) if abs(m) > 0 else np.float32(1)
        s = np.float32(np.float16(s))
        if s == 0:
            s = np.float32(1)
        z = np.float32(8)
    return s, z, 0, 15


def w8_params(vals):
    amax = np.float32(np.abs(vals.astype(np.float32)).max())
    s = np.float32(amax / np.float32(127)) if amax > 0 else np.float32(1)
    return s, np.float32(0), -127, 127


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
    W = np.fromfile(wpath, dtype=np.float32).reshape(out, inn).astype(np.float64)
    X = np.fromfile(xpath, dtype=np.float32).reshape(n, inn).astype(np.float64)

    H = 2.0 / n * X.T @ X
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0

    w4 = group > 0
    if w4 and act_order:
        static_groups = True  # shrink's format has no per-column group index
    ngroups = (inn + group - 1) // group if w4 else 1
    params = [[None] * ngroups for _ in range(out)]
    if not w4 or static_groups:
        for r in range(out):
            for g in range(ngroups):
                params[r][g] = w4_params(W[r, g * group:(g + 1) * group], asym) if w4 else w8_params(W[r])

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
                    cur = w4_params(w[j:j + group], asym)
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
