#!/usr/bin/python3
"""Self-validation of the LLaMA reference against llama2.c run.c (stories260K fixture): logits at the
recorded positions, the 64-token greedy continuation and the tinyshakespeare perplexity, first with
llama2.c's interleaved RoPE, then after converting q/k to HF's rotate_half layout and round-tripping
the checkpoint through safetensors_np + models_np.load. Exits non-zero on any mismatch."""
import argparse
import json
import os
import struct
import sys
import tempfile
import time

sys.dont_write_bytecode = True
import numpy as np  # noqa: E402

import models_np  # noqa: E402
import safetensors_np as st  # noqa: E402

FIXTURES = os.environ.get("SHRINK_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "..", "..", "..", "shared", "fixtures"))
if not os.path.isdir(FIXTURES):
    FIXTURES = "/work/shared/fixtures"
TOLERANCE = 1e-4


def read_llama2c(path):
    """(config dict in HF field names with interleaved_rope, {HF name: float32 array}) of a legacy
    llama2.c checkpoint: 7 int32 header fields, then float32 arrays, all matrices [out][in]."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", data, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    floats = np.frombuffer(data, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        if pos + n > floats.size:
            raise SystemExit(f"{path}: truncated, needs more than {floats.size} floats")
        arr = floats[pos:pos + n].reshape(shape)
        pos += n
        return arr

    emb = take(vocab, dim)
    rms_att = take(n_layers, dim)
    wq = take(n_layers, n_heads * hs, dim)
    wk = take(n_layers, n_kv * hs, dim)
    wv = take(n_layers, n_kv * hs, dim)
    wo = take(n_layers, dim, n_heads * hs)
    rms_ffn = take(n_layers, dim)
    w1 = take(n_layers, hidden, dim)
    w2 = take(n_layers, dim, hidden)
    w3 = take(n_layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, hs // 2)  # freq_cis_real, unused by run.c
    take(seq_len, hs // 2)  # freq_cis_imag
    wcls = emb if shared else take(vocab, dim)
    if pos != floats.size:
        raise SystemExit(f"{path}: {floats.size - pos} trailing floats; not a legacy llama2.c checkpoint")

    t = {"model.embed_tokens.weight": emb, "model.norm.weight": rms_final}
    if not shared:
        t["lm_head.weight"] = wcls
    for i in range(n_layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = rms_att[i]
        t[p + "self_attn.q_proj.weight"] = wq[i]
        t[p + "self_attn.k_proj.weight"] = wk[i]
        t[p + "self_attn.v_proj.weight"] = wv[i]
        t[p + "self_attn.o_proj.weight"] = wo[i]
        t[p + "post_attention_layernorm.weight"] = rms_ffn[i]
        t[p + "mlp.gate_proj.weight"] = w1[i]  # run.c: silu(w1 x) * (w3 x), then w2
        t[p + "mlp.up_proj.weight"] = w3[i]
        t[p + "mlp.down_proj.weight"] = w2[i]
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": dim,
        "intermediate_size": hidden, "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv, "max_position_embeddings": seq_len, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": shared, "interleaved_rope": True,
    }
    return cfg, t


def to_hf_layout(cfg, tensors):
    """Permute q/k rows from interleaved pairs to halves, as convert_llama_weights_to_hf.py does."""
    cfg = dict(cfg, interleaved_rope=False)
    out = dict(tensors)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        out[p + "q_proj.weight"] = models_np.permute_for_rotate_half(tensors[p + "q_proj.weight"],
                                                                     cfg["num_attention_heads"])
        out[p + "k_proj.weight"] = models_np.permute_for_rotate_half(tensors[p + "k_proj.weight"],
                                                                     cfg["num_key_value_heads"])
    del cfg["interleaved_rope"]
    return cfg, out


def logits_of(model, ids):
    ids = np.asarray(ids, dtype=np.int64)[None]
    return model.forward(ids, np.ones_like(ids))["logits"][0]


def greedy(model, prompt, n_new):
    """Token-by-token greedy decoding (first maximum wins), re-running the causal prefix each step."""
    ids = list(prompt)
    for _ in range(n_new):
        ids.append(int(np.argmax(logits_of(model, ids)[-1])))
    return ids[len(prompt):]


def check(label, model, ref, full_ppl):
    failures = []
    all_ids = ref["greedy"]["all_token_ids"]
    t0 = time.time()
    logits = logits_of(model, all_ids[:-1])  # one causal pass over every fed token
    max_err = 0.0
    for key, entry in ref["logits"].items():
        if not key.startswith("pos_") and key != "last":
            continue
        p = entry["pos"]
        if all_ids[p] != entry["input_token"]:
            failures.append(f"{label}: reference.json logits {key} input token mismatch")
        err = float(np.max(np.abs(logits[p] - np.asarray(entry["values"], dtype=np.float64))))
        max_err = max(max_err, err)
        print(f"  [{label}] logits at pos {p:2d}: max abs error {err:.3g}")
    if max_err > TOLERANCE:
        failures.append(f"{label}: logits max abs error {max_err:.3g} > {TOLERANCE}")

    prompt = ref["prompt_token_ids"]
    want = ref["greedy"]["generated_token_ids"]
    got = greedy(model, prompt, len(want))
    agree = sum(a == b for a, b in zip(got, want))
    first_diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    print(f"  [{label}] greedy: {agree}/{len(want)} tokens equal"
          + ("" if first_diff is None else f", first difference at generated token {first_diff}"))
    if got != want:
        failures.append(f"{label}: greedy continuation differs at generated token {first_diff}")
    # Teacher-forced argmax over the single pass must agree too (same causal model, no cache).
    forced = [int(np.argmax(logits[p])) for p in range(len(prompt) - 1, len(all_ids) - 1)]
    if forced != want:
        failures.append(f"{label}: argmax of the single causal pass disagrees with the greedy ids")

    pp = ref["perplexity"]
    X = pp["token_ids"]
    win = pp["window"]
    n_windows = len(X) // win if full_ppl else 1
    nll = []
    for w in range(n_windows):
        W = X[w * win:(w + 1) * win]
        lg = logits_of(model, W)[:-1]
        m = lg.max(axis=-1)
        lse = m + np.log(np.exp(lg - m[:, None]).sum(axis=-1))
        nll.extend(lse - lg[np.arange(len(W) - 1), W[1:]])
    nll = np.asarray(nll)
    ref_nll = np.asarray(pp["per_token_nll_nats"][:len(nll)])
    nll_err = float(np.max(np.abs(nll - ref_nll)))
    mean_ref = pp["mean_nll_nats"] if full_ppl else pp["window0_mean_nll_nats"]
    ppl = float(np.exp(nll.mean()))
    print(f"  [{label}] tinyshakespeare {n_windows} window(s): mean NLL {nll.mean():.8f} (llama2.c "
          f"{mean_ref:.8f}), ppl {ppl:.7f}, per-token NLL max abs error {nll_err:.3g}")
    if nll_err > TOLERANCE or abs(nll.mean() - mean_ref) > 1e-6:
        failures.append(f"{label}: perplexity protocol off (per-token NLL err {nll_err:.3g}, "
                        f"mean {nll.mean():.8f} vs {mean_ref:.8f})")
    print(f"  [{label}] {time.time() - t0:.2f} s")
    return max_err, failures


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fixtures", default=FIXTURES, help="the shared fixtures folder")
    ap.add_argument("--quick", action="store_true", help="perplexity on the first window only")
    a = ap.parse_args(argv)
    folder = os.path.join(a.fixtures, "stories260K")
    bin_path, ref_path = os.path.join(folder, "stories260K.bin"), os.path.join(folder, "reference.json")
    for path in (bin_path, ref_path):
        if not os.path.exists(path):
            print(f"error: fixture {path} is missing; pass --fixtures DIR or set SHRINK_FIXTURES", file=sys.stderr)
            return 2
    with open(ref_path) as f:
        ref = json.load(f)
    cfg, tensors = read_llama2c(bin_path)
    for k in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
        hf = {"dim": "hidden_size", "hidden_dim": "intermediate_size", "n_layers": "num_hidden_layers",
              "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads",
              "seq_len": "max_position_embeddings"}.get(k, k)
        if cfg[hf] != ref["config"][k]:
            print(f"error: header field {k} = {cfg[hf]}, reference.json says {ref['config'][k]}", file=sys.stderr)
            return 1

    print("stories260K, llama2.c layout (interleaved RoPE):")
    err_a, fail = check("interleaved", models_np.build(cfg, tensors, bin_path), ref, not a.quick)

    print("stories260K, HF layout (q/k rows permuted, rotate_half), via safetensors_np + models_np.load:")
    hf_cfg, hf_tensors = to_hf_layout(cfg, tensors)
    with tempfile.TemporaryDirectory(prefix="shrink-ref-") as d:
        st.save_file(hf_tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(hf_cfg, f)
        hf_model = models_np.load(d)
    err_b, fail_b = check("rotate_half", hf_model, ref, not a.quick)
    fail += fail_b
    ids = ref["greedy"]["all_token_ids"][:-1]
    diff = float(np.max(np.abs(logits_of(hf_model, ids) - logits_of(models_np.build(cfg, tensors), ids))))
    print(f"  interleaved vs rotate_half logits over {len(ids)} positions: max abs difference {diff:.3g}")
    if diff > 1e-9:
        fail.append(f"layouts disagree by {diff:.3g}")

    print(f"max abs logit error vs llama2.c: interleaved {err_a:.3g}, rotate_half {err_b:.3g} "
          f"(tolerance {TOLERANCE})")
    for msg in fail:
        print("FAIL: " + msg, file=sys.stderr)
    print("OK" if not fail else f"{len(fail)} failure(s)")
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
