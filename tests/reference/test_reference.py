#!/usr/bin/python3
"""Checks of the numpy reference itself: building blocks against hand-computed values, the vectorised
models against a second, loop-by-loop pure-Python implementation, padding/causality invariants,
safetensors bytes, and the two CLIs end to end. Run: /usr/bin/python3 tests/reference/test_reference.py"""
import contextlib
import io
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
import numpy as np  # noqa: E402

import make_random_model  # noqa: E402
import models_np as M  # noqa: E402
import safetensors_np as st  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


class BuildingBlocks(unittest.TestCase):
    def test_gelu_erf(self):
        # x * Phi(x): Phi(1) = 0.841344746068543, Phi(-1) = 0.158655253931457 (normal tables)
        np.testing.assert_allclose(M.gelu_erf(np.array([1.0, -1.0, 0.0, 2.0])),
                                   [0.8413447460685429, -0.15865525393145707, 0.0, 2 * 0.9772498680518208],
                                   rtol=0, atol=1e-15)

    def test_gelu_tanh(self):
        # 0.5 (1 + tanh(0.7978845608 * 1.044715)) = 0.5 (1 + tanh(0.8335565)) = 0.841191990...
        self.assertAlmostEqual(float(M.gelu_tanh(np.array(1.0))), 0.8411919906082768, places=13)
        self.assertAlmostEqual(float(M.gelu_tanh(np.array(-1.0))), -0.15880800939172324, places=13)
        self.assertEqual(float(M.gelu_tanh(np.array(0.0))), 0.0)

    def test_silu_relu(self):
        with np.errstate(over="raise", invalid="raise"):  # no overflow for large negative inputs
            np.testing.assert_allclose(M.silu(np.array([1.0, 0.0, -1.0, -800.0])),
                                       [0.7310585786300049, 0.0, -0.2689414213699951, 0.0], atol=1e-15)
        np.testing.assert_array_equal(M.relu(np.array([-2.0, 0.0, 3.0])), [0.0, 0.0, 3.0])

    def test_layer_norm(self):
        # mean 2.5, biased variance 1.25 -> (x - 2.5) / 1.1180339887
        x = np.array([1.0, 2.0, 3.0, 4.0])
        np.testing.assert_allclose(M.layer_norm(x, np.ones(4), np.zeros(4), 0.0),
                                   [-1.3416407864998738, -0.4472135954999579, 0.4472135954999579,
                                    1.3416407864998738], atol=1e-15)
        np.testing.assert_allclose(M.layer_norm(x, np.array([2.0, 1, 1, 0.5]), np.array([1.0, 0, 0, -1]), 0.0),
                                   [-1.6832815729997476, -0.4472135954999579, 0.4472135954999579,
                                    -0.3291796067500631], atol=1e-15)
        # eps inside the square root: var 1.25 + eps 0.75 = 2 -> (x - 2.5) / sqrt 2
        np.testing.assert_allclose(M.layer_norm(x, np.ones(4), np.zeros(4), 0.75),
                                   [-1.0606601717798212, -0.35355339059327373, 0.35355339059327373,
                                    1.0606601717798212], atol=1e-15)

    def test_rms_norm(self):
        # mean of squares 7.5 (+ eps 0.5 = 8) -> x / sqrt 8
        x = np.array([1.0, 2.0, 3.0, 4.0])
        np.testing.assert_allclose(M.rms_norm(x, np.ones(4), 0.5), x / 2.8284271247461903, atol=1e-15)
        np.testing.assert_allclose(M.rms_norm(x, np.array([1.0, 2, 1, 1]), 0.0),
                                   [0.3651483716701107, 1.4605934866804429, 1.0954451150103321,
                                    1.4605934866804429], atol=1e-15)

    def test_softmax_and_mask(self):
        np.testing.assert_allclose(M.softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75], atol=1e-15)
        # one query, keys [1, 2, 3] with the third masked out: softmax([1, 2]) = [1/(1+e), e/(1+e)]
        q = np.array([[[[1.0]]]])
        k = np.array([[[[1.0], [2.0], [3.0]]]])
        v = np.eye(3)[None, None]
        p = M.attend(q, k, v, np.array([True, True, False])[None, None, None], 1.0)
        np.testing.assert_allclose(p[0, 0, 0], [0.2689414213699951, 0.7310585786300049, 0.0], atol=1e-15)

    def test_attention_by_hand(self):
        # q = [1, 0], keys [1, 0] and [0, 1], scale 1: weights softmax([1, 0]) = [0.7310585786, 0.2689414214]
        q = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
        k = np.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
        v = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
        out = M.attend(q, k, v, np.ones((1, 1, 1, 2), bool), 1.0)
        np.testing.assert_allclose(out.ravel(), [1.5378828427399903, 2.5378828427399903], atol=1e-15)
        # scale 1/sqrt(d) with d = 4: score 2 * 0.5 = 1 vs 0
        q4 = np.array([1.0, 1, 1, 1]).reshape(1, 1, 1, 4)
        k4 = np.array([[0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0]]).reshape(1, 1, 2, 4)
        out = M.attend(q4, k4, v, np.ones((1, 1, 1, 2), bool), 0.5)
        np.testing.assert_allclose(out.ravel(), [1.5378828427399903, 2.5378828427399903], atol=1e-15)

    def test_rope_hand_values(self):
        cos1, sin1 = 0.5403023058681398, 0.8414709848078965  # angle 1 rad
        cos2, sin2 = 0.9999500004166653, 0.009999833334166664  # angle 0.01 rad = 1 / 10000^(2/4)
        c, s = M.rope_cos_sin([1], 4, 10000.0)
        np.testing.assert_allclose(c, [[cos1, cos2]], atol=1e-15)
        np.testing.assert_allclose(s, [[sin1, sin2]], atol=1e-15)
        # HF half layout pairs (x0, x2) and (x1, x3)
        np.testing.assert_allclose(M.apply_rope_half(np.array([[1.0, 0, 0, 0]]), c, s), [[cos1, 0, sin1, 0]],
                                   atol=1e-15)
        np.testing.assert_allclose(M.apply_rope_half(np.array([[0.0, 1, 0, 0]]), c, s), [[0, cos2, 0, sin2]],
                                   atol=1e-15)
        np.testing.assert_allclose(M.apply_rope_half(np.array([[0.0, 0, 1, 0]]), c, s), [[-sin1, 0, cos1, 0]],
                                   atol=1e-15)
        # llama2.c interleaved pairs (x0, x1) and (x2, x3)
        np.testing.assert_allclose(M.apply_rope_interleaved(np.array([[1.0, 0, 0, 0]]), c, s),
                                   [[cos1, sin1, 0, 0]], atol=1e-15)
        np.testing.assert_allclose(M.apply_rope_interleaved(np.array([[0.0, 0, 0, 1]]), c, s),
                                   [[0, 0, -sin2, cos2]], atol=1e-15)
        # position 0 is the identity; theta changes only the second frequency: 1 / 500000^(1/2)
        c0, s0 = M.rope_cos_sin([0], 4, 10000.0)
        x = np.array([[0.3, -1.2, 2.0, 0.7]])
        np.testing.assert_allclose(M.apply_rope_half(x, c0, s0), x, atol=0)
        np.testing.assert_allclose(M.rope_inv_freq(4, 500000.0), [1.0, 1.0 / math.sqrt(500000.0)], rtol=1e-15)

    def test_rope_relative_and_layouts(self):
        rng = np.random.default_rng(1)
        d = 8
        q, k = rng.standard_normal(d), rng.standard_normal(d)
        for rope in (M.apply_rope_half, M.apply_rope_interleaved):
            def rot(x, p):
                c, s = M.rope_cos_sin([p], d, 10000.0)
                return rope(x[None], c, s)[0]
            # <R(m) q, R(n) k> depends only on m - n; rotations keep the norm
            self.assertAlmostEqual(rot(q, 7) @ rot(k, 3), rot(q, 5) @ rot(k, 1), places=12)
            self.assertAlmostEqual(np.linalg.norm(rot(q, 9)), np.linalg.norm(q), places=12)
        # HF's permutation maps interleaved rows to half-rotation rows: same scores for any positions
        n_heads, dim = 2, 6
        wq = rng.standard_normal((n_heads * d, dim))
        wk = rng.standard_normal((n_heads * d, dim))
        x = rng.standard_normal((5, dim))
        c, s = M.rope_cos_sin(np.arange(5), d, 10000.0)

        def scores(w_q, w_k, rope):
            qh = rope(M.split_heads((x @ w_q.T)[None], n_heads)[0], c, s)
            kh = rope(M.split_heads((x @ w_k.T)[None], n_heads)[0], c, s)
            return qh @ kh.transpose(0, 2, 1)
        np.testing.assert_allclose(scores(M.permute_for_rotate_half(wq, n_heads),
                                          M.permute_for_rotate_half(wk, n_heads), M.apply_rope_half),
                                   scores(wq, wk, M.apply_rope_interleaved), atol=1e-12)
        # for one head of size 4 the permutation is rows [0, 2, 1, 3]
        w = np.arange(8.0).reshape(4, 2)
        np.testing.assert_array_equal(M.permute_for_rotate_half(w, 1), w[[0, 2, 1, 3]])


class Safetensors(unittest.TestCase):
    def test_hand_built_bytes(self):
        header = b'{"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]},' \
                 b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
        data = struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, -2.5) + struct.pack("<q", -7)
        tensors, meta = st.decode(data)
        self.assertEqual(meta, {"format": "pt"})
        np.testing.assert_array_equal(tensors["a"].to_numpy(), [1.0, -2.5])
        self.assertEqual(tensors["b"].to_numpy().tolist(), [-7])
        # writer: header padded to 8 bytes, u64 length prefix, buffer in name order
        out = st.encode({"x": np.array([[1, 2]], np.int32)}, {"k": "v"})
        (n,) = struct.unpack_from("<Q", out)
        self.assertEqual(n % 8, 0)
        self.assertEqual(json.loads(out[8:8 + n]), {"__metadata__": {"k": "v"},
                                                   "x": {"dtype": "I32", "shape": [1, 2], "data_offsets": [0, 8]}})
        self.assertEqual(out[8 + n:], struct.pack("<2i", 1, 2))

    def test_round_trip_all_dtypes(self):
        rng = np.random.default_rng(0)
        tensors = {f"t_{d}": rng.standard_normal((3, 5)).astype(d) for d in ("float64", "float32", "float16")}
        for d in ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64"):
            tensors["t_" + d] = rng.integers(0, 100, size=(2, 3, 1)).astype(d)
        tensors["bool"] = np.array([True, False, True])
        tensors["empty"] = np.zeros((0, 4), np.float32)
        tensors["scalar"] = np.array(3.5, np.float32)
        tensors["bf16"] = st.Tensor("BF16", st.f32_to_bf16_bits(np.array([1.0, -3.0, 0.5], np.float32)))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.safetensors")
            st.save_file(tensors, path, {"a": "b"})
            self.assertEqual(os.listdir(d), ["m.safetensors"])  # no temporary left behind
            back, meta = st.read(path)
        self.assertEqual(meta, {"a": "b"})
        for name, t in tensors.items():
            want = t.to_numpy() if isinstance(t, st.Tensor) else t
            got = back[name].to_numpy()
            self.assertEqual(got.dtype, want.dtype, name)
            np.testing.assert_array_equal(got, want, name)

    def test_bf16_rounding(self):
        vals = np.array([1.0, 1.0 / 3.0, -2.0, 1.00390625, 1.01171875, 3.0e38, 1e-40], np.float32)
        # 1/3 = 0x3EAAAAAB rounds up; 1.00390625 = 0x3F808000 is a tie -> even 0x3F80;
        # 1.01171875 = 0x3F818000 is a tie -> even 0x3F82; 1e-40 is subnormal 0x000116C2 -> 0x0001
        self.assertEqual(st.f32_to_bf16_bits(vals).tolist(),
                         [0x3F80, 0x3EAB, 0xC000, 0x3F80, 0x3F82, 0x7F62, 0x0001])
        np.testing.assert_array_equal(st.bf16_bits_to_f32(np.array([0x3F80, 0xC040], np.uint16)), [1.0, -3.0])
        self.assertTrue(np.isnan(st.bf16_bits_to_f32(st.f32_to_bf16_bits(np.array([np.nan], np.float32))))[0])
        self.assertEqual(np.array([1.0], np.float16).view(np.uint16)[0], 0x3C00)

    def test_corrupt_inputs_are_rejected(self):
        good = st.encode({"a": np.arange(4, dtype=np.float32), "b": np.arange(2, dtype=np.int64)})
        (n,) = struct.unpack_from("<Q", good)
        header = json.loads(good[8:8 + n])
        cases = {"truncated": good[:-1], "tiny": good[:5],
                 "huge header length": struct.pack("<Q", 1 << 40) + good[8:]}

        def with_header(h):
            text = json.dumps(h).encode()
            return struct.pack("<Q", len(text)) + text + good[8 + n:]
        bad = json.loads(json.dumps(header))
        bad["a"]["data_offsets"] = [0, 12]
        cases["size mismatch"] = with_header(bad)
        bad = json.loads(json.dumps(header))
        bad["a"]["dtype"] = "F8"
        cases["unknown dtype"] = with_header(bad)
        bad = json.loads(json.dumps(header))
        bad["b"]["data_offsets"] = [8, 24]
        bad["a"]["data_offsets"] = [0, 16]
        cases["overlap"] = with_header(bad)
        cases["not json"] = struct.pack("<Q", 4) + b"{abc" + good[8 + n:]
        for what, data in cases.items():
            with self.assertRaises(st.SafetensorsError, msg=what):
                st.decode(data, what)


# ---------------------------------------------------------------------------------------------
# A second implementation: plain Python loops over tokens, heads and features, no numpy, written
# directly from the per-element equations. It shares nothing with models_np but the tensor dict.

def vec_linear(W, b, x):  # W [out][in]
    return [sum(W[o][i] * x[i] for i in range(len(x))) + (b[o] if b is not None else 0.0) for o in range(len(W))]


def vec_conv1d(W, b, x):  # W [in][out]
    return [sum(W[i][o] * x[i] for i in range(len(x))) + b[o] for o in range(len(W[0]))]


def vec_ln(x, w, b, eps):
    mu = sum(x) / len(x)
    var = sum((v - mu) ** 2 for v in x) / len(x)
    return [(v - mu) / math.sqrt(var + eps) * w[i] + b[i] for i, v in enumerate(x)]


def vec_rms(x, w, eps):
    r = math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v / r * w[i] for i, v in enumerate(x)]


def loop_attention(qs, ks, vs, n_heads, n_kv, visible, scale):
    """qs[t], ks[s], vs[s] are flat head-major vectors; visible(t, s) -> bool."""
    d = len(qs[0]) // n_heads
    out = []
    for t in range(len(qs)):
        row = []
        for h in range(n_heads):
            kh = h // (n_heads // n_kv)
            sc = []
            for s in range(len(ks)):
                dot = sum(qs[t][h * d + j] * ks[s][kh * d + j] for j in range(d)) * scale
                sc.append(dot if visible(t, s) else dot + M.MASK_VALUE)
            m = max(sc)
            e = [math.exp(v - m) for v in sc]
            z = sum(e)
            row.extend(sum(e[s] / z * vs[s][kh * d + j] for s in range(len(ks))) for j in range(d))
        out.append(row)
    return out


def gelu_loop(x):
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


def gelu_new_loop(x):
    return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def loop_gpt2(cfg, T, ids, mask):
    E, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    g = lambda n: T["transformer." + n].tolist()  # noqa: E731
    wte, wpe = g("wte.weight"), g("wpe.weight")
    eps = cfg["layer_norm_epsilon"]
    h = [[wte[tok][j] + wpe[t][j] for j in range(E)] for t, tok in enumerate(ids)]
    for i in range(L):
        p = f"h.{i}."
        a = [vec_ln(x, g(p + "ln_1.weight"), g(p + "ln_1.bias"), eps) for x in h]
        qkv = [vec_conv1d(g(p + "attn.c_attn.weight"), g(p + "attn.c_attn.bias"), x) for x in a]
        o = loop_attention([r[:E] for r in qkv], [r[E:2 * E] for r in qkv], [r[2 * E:] for r in qkv], H, H,
                           lambda t, s: s <= t and mask[s] == 1, 1 / math.sqrt(E // H))
        h = [[h[t][j] + y for j, y in enumerate(vec_conv1d(g(p + "attn.c_proj.weight"), g(p + "attn.c_proj.bias"),
                                                           o[t]))] for t in range(len(h))]
        m = [vec_ln(x, g(p + "ln_2.weight"), g(p + "ln_2.bias"), eps) for x in h]
        f = [[gelu_new_loop(v) for v in vec_conv1d(g(p + "mlp.c_fc.weight"), g(p + "mlp.c_fc.bias"), x)] for x in m]
        h = [[h[t][j] + y for j, y in enumerate(vec_conv1d(g(p + "mlp.c_proj.weight"), g(p + "mlp.c_proj.bias"),
                                                           f[t]))] for t in range(len(h))]
    h = [vec_ln(x, g("ln_f.weight"), g("ln_f.bias"), eps) for x in h]
    head = T["lm_head.weight"].tolist() if "lm_head.weight" in T else wte
    return [vec_linear(head, None, x) for x in h]


def loop_bert(cfg, T, ids, mask, types, prefix, classify):
    E, H = cfg["hidden_size"], cfg["num_attention_heads"]
    g = lambda n: T[prefix + n].tolist()  # noqa: E731
    eps = cfg["layer_norm_eps"]
    wd, pd, td = g("embeddings.word_embeddings.weight"), g("embeddings.position_embeddings.weight"), \
        g("embeddings.token_type_embeddings.weight")
    h = [vec_ln([wd[tok][j] + pd[t][j] + td[types[t]][j] for j in range(E)], g("embeddings.LayerNorm.weight"),
                g("embeddings.LayerNorm.bias"), eps) for t, tok in enumerate(ids)]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda n, x: vec_linear(g(p + n + ".weight"), g(p + n + ".bias"), x)  # noqa: E731
        qs = [lin("attention.self.query", x) for x in h]
        ks = [lin("attention.self.key", x) for x in h]
        vs = [lin("attention.self.value", x) for x in h]
        ctx = loop_attention(qs, ks, vs, H, H, lambda t, s: mask[s] == 1, 1 / math.sqrt(E // H))
        a = [vec_ln([u + v for u, v in zip(lin("attention.output.dense", ctx[t]), h[t])],
                    g(p + "attention.output.LayerNorm.weight"), g(p + "attention.output.LayerNorm.bias"), eps)
             for t in range(len(h))]
        f = [[gelu_loop(v) for v in lin("intermediate.dense", x)] for x in a]
        h = [vec_ln([u + v for u, v in zip(lin("output.dense", f[t]), a[t])], g(p + "output.LayerNorm.weight"),
                    g(p + "output.LayerNorm.bias"), eps) for t in range(len(h))]
    pooled = [math.tanh(v) for v in vec_linear(g("pooler.dense.weight"), g("pooler.dense.bias"), h[0])]
    logits = vec_linear(T["classifier.weight"].tolist(), T["classifier.bias"].tolist(), pooled) if classify else None
    return h, pooled, logits


def loop_distilbert(cfg, T, ids, mask, prefix, classify):
    D, H = cfg["dim"], cfg["n_heads"]
    g = lambda n: T[prefix + n].tolist()  # noqa: E731
    eps = 1e-12
    wd, pd = g("embeddings.word_embeddings.weight"), g("embeddings.position_embeddings.weight")
    h = [vec_ln([wd[tok][j] + pd[t][j] for j in range(D)], g("embeddings.LayerNorm.weight"),
                g("embeddings.LayerNorm.bias"), eps) for t, tok in enumerate(ids)]
    for i in range(cfg["n_layers"]):
        p = f"transformer.layer.{i}."
        lin = lambda n, x: vec_linear(g(p + n + ".weight"), g(p + n + ".bias"), x)  # noqa: E731
        # HF divides q by sqrt(dim_per_head) before the product: same value as scaling the scores
        qs = [[v / math.sqrt(D // H) for v in lin("attention.q_lin", x)] for x in h]
        ks = [lin("attention.k_lin", x) for x in h]
        vs = [lin("attention.v_lin", x) for x in h]
        ctx = loop_attention(qs, ks, vs, H, H, lambda t, s: mask[s] == 1, 1.0)
        a = [vec_ln([u + v for u, v in zip(lin("attention.out_lin", ctx[t]), h[t])], g(p + "sa_layer_norm.weight"),
                    g(p + "sa_layer_norm.bias"), eps) for t in range(len(h))]
        f = [lin("ffn.lin2", [gelu_loop(v) for v in lin("ffn.lin1", x)]) for x in a]
        h = [vec_ln([u + v for u, v in zip(f[t], a[t])], g(p + "output_layer_norm.weight"),
                    g(p + "output_layer_norm.bias"), eps) for t in range(len(h))]
    logits = None
    if classify:
        pre = [max(v, 0.0) for v in vec_linear(T["pre_classifier.weight"].tolist(), T["pre_classifier.bias"].tolist(),
                                              h[0])]
        logits = vec_linear(T["classifier.weight"].tolist(), T["classifier.bias"].tolist(), pre)
    return h, logits


def loop_llama(cfg, T, ids):
    E, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = E // H
    g = lambda n: T["model." + n].tolist()  # noqa: E731
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]

    def rope(vec, n_heads, pos):  # HF halves: element j pairs with j + d/2, angle pos / theta^(2j/d)
        out = list(vec)
        for hh in range(n_heads):
            for j in range(d // 2):
                ang = pos / theta ** (2 * j / d)
                a, b = vec[hh * d + j], vec[hh * d + j + d // 2]
                out[hh * d + j] = a * math.cos(ang) - b * math.sin(ang)
                out[hh * d + j + d // 2] = b * math.cos(ang) + a * math.sin(ang)
        return out
    emb = g("embed_tokens.weight")
    h = [list(emb[tok]) for tok in ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        x = [vec_rms(v, g(p + "input_layernorm.weight"), eps) for v in h]
        qs = [rope(vec_linear(g(p + "self_attn.q_proj.weight"), None, v), H, t) for t, v in enumerate(x)]
        ks = [rope(vec_linear(g(p + "self_attn.k_proj.weight"), None, v), KV, t) for t, v in enumerate(x)]
        vs = [vec_linear(g(p + "self_attn.v_proj.weight"), None, v) for v in x]
        o = loop_attention(qs, ks, vs, H, KV, lambda t, s: s <= t, 1 / math.sqrt(d))
        h = [[a + b for a, b in zip(h[t], vec_linear(g(p + "self_attn.o_proj.weight"), None, o[t]))]
             for t in range(len(h))]
        x = [vec_rms(v, g(p + "post_attention_layernorm.weight"), eps) for v in h]
        ff = []
        for v in x:
            gate = vec_linear(g(p + "mlp.gate_proj.weight"), None, v)
            up = vec_linear(g(p + "mlp.up_proj.weight"), None, v)
            ff.append(vec_linear(g(p + "mlp.down_proj.weight"), None,
                                 [gg / (1 + math.exp(-gg)) * u for gg, u in zip(gate, up)]))
        h = [[a + b for a, b in zip(h[t], ff[t])] for t in range(len(h))]
    h = [vec_rms(v, g("norm.weight"), eps) for v in h]
    head = T["lm_head.weight"].tolist() if "lm_head.weight" in T else emb
    return [vec_linear(head, None, v) for v in h]


def make_model(tmp, arch, *extra):
    out = os.path.join(tmp, arch + "-".join(extra).replace("-", "_"))
    with contextlib.redirect_stdout(io.StringIO()):  # in-process: the CLI itself is tested in CommandLine
        make_random_model.main(["--arch", arch, "--out", out, "--seed", "3", *extra])
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    tensors = {k: v.astype(np.float64) for k, v in st.load_file(os.path.join(out, "model.safetensors")).items()}
    return out, cfg, tensors


TINY = ["--layers", "2", "--hidden", "8", "--heads", "2", "--intermediate", "12", "--vocab", "11", "--max-pos", "9"]


class LoopImplementationAgrees(unittest.TestCase):
    """The vectorised reference equals the loop implementation to ~1e-12 on tiny random models,
    including padded rows (compared at every position for encoders, valid positions for decoders)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ids = np.array([[3, 7, 1, 10, 4, 2], [5, 9, 0, 0, 0, 0]])
        cls.mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
        cls.types = np.array([[0, 0, 0, 1, 1, 1], [0, 1, 0, 0, 0, 0]])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_gpt2(self):
        for extra in ([], ["--no-tie"]):
            d, cfg, T = make_model(self.tmp.name, "gpt2", *TINY, *extra)
            out = M.load(d).forward(self.ids, self.mask)["logits"]
            for b in range(2):
                n = int(self.mask[b].sum())
                ref = loop_gpt2(cfg, T, self.ids[b].tolist(), self.mask[b].tolist())
                np.testing.assert_allclose(out[b, :n], np.array(ref)[:n], atol=1e-12, rtol=0)

    def test_bert(self):
        for arch in ("bert", "bert-cls"):
            d, cfg, T = make_model(self.tmp.name, arch, *TINY, "--labels", "3")
            out = M.load(d).forward(self.ids, self.mask, self.types)
            prefix = "bert." if arch == "bert-cls" else ""
            for b in range(2):
                h, pooled, logits = loop_bert(cfg, T, self.ids[b].tolist(), self.mask[b].tolist(),
                                              self.types[b].tolist(), prefix, arch == "bert-cls")
                np.testing.assert_allclose(out["last_hidden_state"][b], h, atol=1e-12, rtol=0)
                np.testing.assert_allclose(out["pooler_output"][b], pooled, atol=1e-12, rtol=0)
                if logits is not None:
                    np.testing.assert_allclose(out["logits"][b], logits, atol=1e-12, rtol=0)

    def test_distilbert(self):
        for arch in ("distilbert", "distilbert-cls"):
            d, cfg, T = make_model(self.tmp.name, arch, *TINY)
            out = M.load(d).forward(self.ids, self.mask)
            prefix = "distilbert." if arch == "distilbert-cls" else ""
            for b in range(2):
                h, logits = loop_distilbert(cfg, T, self.ids[b].tolist(), self.mask[b].tolist(), prefix,
                                            arch == "distilbert-cls")
                np.testing.assert_allclose(out["last_hidden_state"][b], h, atol=1e-12, rtol=0)
                if logits is not None:
                    np.testing.assert_allclose(out["logits"][b], logits, atol=1e-12, rtol=0)

    def test_llama(self):
        for extra in ([], ["--no-tie", "--heads", "4", "--kv-heads", "2", "--hidden", "16", "--rope-theta", "500000"]):
            d, cfg, T = make_model(self.tmp.name, "llama", *TINY, *extra)
            out = M.load(d).forward(self.ids, self.mask)["logits"]
            for b in range(2):
                n = int(self.mask[b].sum())
                ref = loop_llama(cfg, T, self.ids[b, :n].tolist())
                np.testing.assert_allclose(out[b, :n], ref, atol=1e-12, rtol=0)


class Invariants(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_padding_and_causality(self):
        rng = np.random.default_rng(5)
        ids = rng.integers(0, 101, size=(1, 10))
        for arch in ("gpt2", "llama", "bert-cls", "distilbert-cls"):
            d, _, _ = make_model(self.tmp.name, arch)
            model = M.load(d)
            full = model.forward(ids[:, :6], np.ones((1, 6), np.int64))
            padded_ids = ids.copy()
            mask = np.array([[1] * 6 + [0] * 4])
            padded = model.forward(padded_ids, mask)
            key = "logits" if model.kind == "decoder" else "last_hidden_state"
            np.testing.assert_allclose(padded[key][:, :6], full[key], atol=1e-12, err_msg=arch)
            if model.kind == "encoder":
                np.testing.assert_allclose(padded["logits"], full["logits"], atol=1e-12, err_msg=arch)
            else:  # causal: changing later tokens leaves earlier logits alone
                other = ids.copy()
                other[0, 4:] = (other[0, 4:] + 1) % 101
                a = model.forward(ids, np.ones_like(ids))["logits"]
                b = model.forward(other, np.ones_like(ids))["logits"]
                np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-12, err_msg=arch)
                self.assertGreater(np.abs(a[:, 4:] - b[:, 4:]).max(), 1e-3, arch)

    def test_gqa_equals_mha_with_repeated_heads(self):
        d, cfg, T = make_model(self.tmp.name, "llama", "--kv-heads", "2")
        gqa = M.load(d)
        mha_cfg = dict(cfg, num_key_value_heads=cfg["num_attention_heads"])
        mha_T = dict(T)
        hd = cfg["head_dim"]
        for i in range(cfg["num_hidden_layers"]):
            for n in ("k_proj", "v_proj"):
                w = T[f"model.layers.{i}.self_attn.{n}.weight"].reshape(2, hd, -1)
                mha_T[f"model.layers.{i}.self_attn.{n}.weight"] = np.repeat(w, 2, axis=0).reshape(4 * hd, -1)
        mha = M.build(mha_cfg, mha_T)
        ids = np.array([[1, 5, 9, 33, 70]])
        np.testing.assert_allclose(gqa.forward(ids, np.ones_like(ids))["logits"],
                                   mha.forward(ids, np.ones_like(ids))["logits"], atol=1e-12)

    def test_half_precision_weights_are_the_rounded_f32_ones(self):
        _, _, f32 = make_model(self.tmp.name, "gpt2")
        _, cfg16, f16 = make_model(self.tmp.name, "gpt2", "--dtype", "f16")
        _, cfgb, bf16 = make_model(self.tmp.name, "gpt2", "--dtype", "bf16")
        self.assertEqual((cfg16["torch_dtype"], cfgb["torch_dtype"]), ("float16", "bfloat16"))
        for name, w in f32.items():
            np.testing.assert_array_equal(f16[name], w.astype(np.float32).astype(np.float16))
            np.testing.assert_array_equal(bf16[name], st.bf16_bits_to_f32(st.f32_to_bf16_bits(w.astype(np.float32))))
            self.assertGreater(np.abs(bf16[name] - w).max(), 0, name)


class CommandLine(unittest.TestCase):
    EXPECTED_FIELDS = {
        "gpt2": ["n_embd", "n_layer", "n_head", "n_positions", "n_inner", "layer_norm_epsilon", "activation_function"],
        "bert": ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "layer_norm_eps",
                 "type_vocab_size", "hidden_act", "max_position_embeddings"],
        "distilbert": ["dim", "n_layers", "n_heads", "hidden_dim", "activation", "max_position_embeddings"],
        "llama": ["hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                  "rope_theta", "tie_word_embeddings", "hidden_act"],
    }

    def test_end_to_end(self):
        inp = {"input_ids": [[5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 0, 0, 0, 0], [100, 50, 3, 4, 5, 6, 7]],
               "attention_mask": [[1] * 7, [1, 1, 1, 0, 0, 0, 0], [1] * 7],
               "token_type_ids": [[0, 0, 0, 1, 1, 1, 1], [0] * 7, [0] * 7]}
        cases = [("gpt2", []), ("gpt2", ["--dtype", "bf16", "--no-tie"]), ("bert", []), ("bert-cls", []),
                 ("distilbert", []), ("distilbert-cls", ["--labels", "3"]), ("llama", []),
                 ("llama", ["--no-tie", "--kv-heads", "2", "--rope-theta", "500000"]), ("llama", ["--dtype", "f16"])]
        with tempfile.TemporaryDirectory() as tmp:
            in_path = os.path.join(tmp, "in.json")
            with open(in_path, "w") as f:
                json.dump(inp, f)
            for arch, extra in cases:
                label = arch + " " + " ".join(extra)
                model = os.path.join(tmp, "m")
                t0 = time.time()
                subprocess.run([PY, os.path.join(HERE, "make_random_model.py"), "--arch", arch, "--out", model,
                                "--seed", "7", *extra], check=True, stdout=subprocess.DEVNULL)
                out_path = os.path.join(tmp, "out.json")
                subprocess.run([PY, os.path.join(HERE, "run_reference.py"), "--model", model, "--input", in_path,
                                "--out", out_path], check=True, stderr=subprocess.DEVNULL)
                self.assertLess(time.time() - t0, 5.0, label)
                with open(os.path.join(model, "config.json")) as f:
                    cfg = json.load(f)
                family = arch.split("-")[0]
                for field in self.EXPECTED_FIELDS[family]:
                    self.assertIn(field, cfg, label)
                self.assertEqual(cfg["model_type"], family)
                with open(out_path) as f:
                    out = json.load(f)
                if family in ("gpt2", "llama"):
                    logits = np.array(out["logits"])
                    self.assertEqual(logits.shape, (3, 7, 101), label)
                    self.assertEqual(out["valid"], [7, 3, 7])
                    self.assertGreater(logits.std(axis=-1).min(), 0.5, label)  # logits differ meaningfully
                else:
                    self.assertEqual(np.array(out["last_hidden_state"]).shape, (3, 7, 64), label)
                    if arch.endswith("cls"):
                        n = 3 if "--labels" in extra else 2
                        logits = np.array(out["logits"])
                        self.assertEqual(logits.shape, (3, n), label)
                        self.assertGreater(np.abs(logits).max(), 0.05, label)
                    self.assertEqual("pooler_output" in out, family == "bert", label)
                os.remove(out_path)
                subprocess.run(["rm", "-r", model], check=True)

    def test_errors_name_the_problem_and_leave_no_output(self):
        with tempfile.TemporaryDirectory() as tmp:
            model = os.path.join(tmp, "m")
            subprocess.run([PY, os.path.join(HERE, "make_random_model.py"), "--arch", "llama", "--out", model],
                           check=True, stdout=subprocess.DEVNULL)
            in_path, out_path = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
            with open(in_path, "w") as f:
                json.dump({"input_ids": [[1, 2, 500]]}, f)
            r = subprocess.run([PY, os.path.join(HERE, "run_reference.py"), "--model", model, "--input", in_path,
                                "--out", out_path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("input_ids must be in [0, 101)", r.stderr)
            self.assertFalse(os.path.exists(out_path))
            os.remove(os.path.join(model, "model.safetensors"))
            with open(in_path, "w") as f:
                json.dump({"input_ids": [[1, 2]]}, f)
            r = subprocess.run([PY, os.path.join(HERE, "run_reference.py"), "--model", model, "--input", in_path,
                                "--out", out_path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("no model.safetensors", r.stderr)
            r = subprocess.run([PY, os.path.join(HERE, "make_random_model.py"), "--arch", "llama", "--out", model,
                                "--heads", "3"], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("--hidden 64 must be a multiple of --heads 3", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
