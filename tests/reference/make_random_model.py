#!/usr/bin/python3
"""Writes a small random-weight checkpoint (config.json + model.safetensors) with Hugging Face tensor
names, layouts and config fields, for parity tests of shrink against run_reference.py."""
import argparse
import json
import math
import os
import sys

sys.dont_write_bytecode = True
import numpy as np  # noqa: E402

import safetensors_np as st  # noqa: E402

ARCHS = ["gpt2", "bert", "bert-cls", "distilbert", "distilbert-cls", "llama"]
TORCH_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


class Gen:
    """Random tensors in a fixed order from one seed. Scales keep activations O(1): linear weights
    N(0, 1/fan_in) clipped to std 0.02..0.2, norm weights 1 +- 0.1, norm biases 0 +- 0.1."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}

    def normal(self, name, shape, std, mean=0.0):
        self.tensors[name] = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)

    def linear(self, name, out_f, in_f, bias=True, conv1d=False):
        std = min(0.2, max(0.02, 1.0 / math.sqrt(in_f)))
        self.normal(name + ".weight", (in_f, out_f) if conv1d else (out_f, in_f), std)
        if bias:
            self.normal(name + ".bias", (out_f,), 0.05)

    def layer_norm(self, name, n, bias=True):
        self.normal(name + ".weight", (n,), 0.1, mean=1.0)
        if bias:
            self.normal(name + ".bias", (n,), 0.1)


def gpt2(a, g):
    E, I, V, P = a.hidden, a.intermediate, a.vocab, a.max_pos
    g.normal("transformer.wte.weight", (V, E), 0.2)
    g.normal("transformer.wpe.weight", (P, E), 0.1)
    for i in range(a.layers):
        p = f"transformer.h.{i}."
        g.layer_norm(p + "ln_1", E)
        g.linear(p + "attn.c_attn", 3 * E, E, conv1d=True)
        g.linear(p + "attn.c_proj", E, E, conv1d=True)
        g.layer_norm(p + "ln_2", E)
        g.linear(p + "mlp.c_fc", I, E, conv1d=True)
        g.linear(p + "mlp.c_proj", E, I, conv1d=True)
    g.layer_norm("transformer.ln_f", E)
    if not a.tie:
        g.normal("lm_head.weight", (V, E), 0.2)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": V,
        "n_positions": P,
        "n_embd": E,
        "n_layer": a.layers,
        "n_head": a.heads,
        "n_inner": I,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "layer_norm_epsilon": 1e-05,
        "initializer_range": 0.02,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": V - 1,
        "eos_token_id": V - 1,
        "tie_word_embeddings": a.tie,
    }


def labels_fields(n):
    return {"id2label": {str(i): f"LABEL_{i}" for i in range(n)},
            "label2id": {f"LABEL_{i}": i for i in range(n)}}


def bert(a, g, classify):
    H, I, V, P = a.hidden, a.intermediate, a.vocab, a.max_pos
    p0 = "bert." if classify else ""
    g.normal(p0 + "embeddings.word_embeddings.weight", (V, H), 0.2)
    g.normal(p0 + "embeddings.position_embeddings.weight", (P, H), 0.1)
    g.normal(p0 + "embeddings.token_type_embeddings.weight", (2, H), 0.1)
    g.layer_norm(p0 + "embeddings.LayerNorm", H)
    for i in range(a.layers):
        p = f"{p0}encoder.layer.{i}."
        for n in ("query", "key", "value"):
            g.linear(p + "attention.self." + n, H, H)
        g.linear(p + "attention.output.dense", H, H)
        g.layer_norm(p + "attention.output.LayerNorm", H)
        g.linear(p + "intermediate.dense", I, H)
        g.linear(p + "output.dense", H, I)
        g.layer_norm(p + "output.LayerNorm", H)
    g.linear(p0 + "pooler.dense", H, H)
    if classify:
        g.linear("classifier", a.labels, H)
    cfg = {
        "architectures": ["BertForSequenceClassification" if classify else "BertModel"],
        "model_type": "bert",
        "vocab_size": V,
        "hidden_size": H,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "intermediate_size": I,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": P,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "use_cache": True,
        "classifier_dropout": None,
    }
    if classify:
        cfg.update(labels_fields(a.labels))
    return cfg


def distilbert(a, g, classify):
    D, F, V, P = a.hidden, a.intermediate, a.vocab, a.max_pos
    p0 = "distilbert." if classify else ""
    g.normal(p0 + "embeddings.word_embeddings.weight", (V, D), 0.2)
    g.normal(p0 + "embeddings.position_embeddings.weight", (P, D), 0.1)
    g.layer_norm(p0 + "embeddings.LayerNorm", D)
    for i in range(a.layers):
        p = f"{p0}transformer.layer.{i}."
        for n in ("q_lin", "k_lin", "v_lin", "out_lin"):
            g.linear(p + "attention." + n, D, D)
        g.layer_norm(p + "sa_layer_norm", D)
        g.linear(p + "ffn.lin1", F, D)
        g.linear(p + "ffn.lin2", D, F)
        g.layer_norm(p + "output_layer_norm", D)
    if classify:
        g.linear("pre_classifier", D, D)
        g.linear("classifier", a.labels, D)
    cfg = {
        "architectures": ["DistilBertForSequenceClassification" if classify else "DistilBertModel"],
        "model_type": "distilbert",
        "vocab_size": V,
        "dim": D,
        "n_layers": a.layers,
        "n_heads": a.heads,
        "hidden_dim": F,
        "activation": "gelu",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "max_position_embeddings": P,
        "initializer_range": 0.02,
        "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2,
        "sinusoidal_pos_embds": False,
        "tie_weights_": True,
        "pad_token_id": 0,
    }
    if classify:
        cfg.update(labels_fields(a.labels))
    return cfg


def llama(a, g):
    H, I, V = a.hidden, a.intermediate, a.vocab
    hd = H // a.heads
    g.normal("model.embed_tokens.weight", (V, H), 0.2)
    for i in range(a.layers):
        p = f"model.layers.{i}."
        g.layer_norm(p + "input_layernorm", H, bias=False)
        g.linear(p + "self_attn.q_proj", a.heads * hd, H, bias=False)
        g.linear(p + "self_attn.k_proj", a.kv_heads * hd, H, bias=False)
        g.linear(p + "self_attn.v_proj", a.kv_heads * hd, H, bias=False)
        g.linear(p + "self_attn.o_proj", H, a.heads * hd, bias=False)
        g.layer_norm(p + "post_attention_layernorm", H, bias=False)
        g.linear(p + "mlp.gate_proj", I, H, bias=False)
        g.linear(p + "mlp.up_proj", I, H, bias=False)
        g.linear(p + "mlp.down_proj", H, I, bias=False)
    g.layer_norm("model.norm", H, bias=False)
    if not a.tie:
        g.normal("lm_head.weight", (V, H), 0.2)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": V,
        "hidden_size": H,
        "intermediate_size": I,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": a.max_pos,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-05,
        "use_cache": True,
        "pretraining_tp": 1,
        "tie_word_embeddings": a.tie,
        "rope_theta": a.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if a.interleaved_rope:
        cfg["interleaved_rope"] = True  # not an HF field: shrink's marker for llama2.c-layout q/k rows
    return cfg


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", required=True, choices=ARCHS)
    p.add_argument("--out", required=True, help="output directory (created; config.json and model.safetensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="LLaMA only; default = --heads")
    p.add_argument("--intermediate", type=int, default=172)
    p.add_argument("--vocab", type=int, default=101)
    p.add_argument("--max-pos", type=int, default=64)
    p.add_argument("--labels", type=int, default=2, help="number of classes for the -cls variants")
    p.add_argument("--tie", action=argparse.BooleanOptionalAction, default=True,
                   help="GPT-2/LLaMA: share lm_head with the token embedding (default: tied)")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--interleaved-rope", action="store_true",
                   help="LLaMA: mark q/k rows as llama2.c interleaved-pair layout in config.json")
    p.add_argument("--dtype", choices=sorted(TORCH_DTYPE), default="f32", help="stored weight dtype")
    a = p.parse_args(argv)
    if a.kv_heads is None:
        a.kv_heads = a.heads
    problems = []
    for name in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab", "max_pos", "labels"):
        if getattr(a, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if not problems:
        if a.hidden % a.heads:
            problems.append(f"--hidden {a.hidden} must be a multiple of --heads {a.heads}")
        if a.arch != "llama" and a.kv_heads != a.heads:
            problems.append("--kv-heads applies only to --arch llama")
        if a.arch != "llama" and a.interleaved_rope:
            problems.append("--interleaved-rope applies only to --arch llama")
        if a.arch == "llama" and a.heads % a.kv_heads:
            problems.append(f"--heads {a.heads} must be a multiple of --kv-heads {a.kv_heads}")
        if a.arch == "llama" and (a.hidden // a.heads) % 2:
            problems.append(f"head size {a.hidden // a.heads} must be even for RoPE")
        if a.rope_theta <= 0:
            problems.append(f"--rope-theta must be > 0, got {a.rope_theta}")
    if problems:
        p.error("; ".join(problems))
    if a.rope_theta == int(a.rope_theta):
        a.rope_theta = float(a.rope_theta)
    return a


def main(argv):
    a = parse_args(argv)
    g = Gen(a.seed)
    if a.arch == "gpt2":
        cfg = gpt2(a, g)
    elif a.arch in ("bert", "bert-cls"):
        cfg = bert(a, g, a.arch == "bert-cls")
    elif a.arch in ("distilbert", "distilbert-cls"):
        cfg = distilbert(a, g, a.arch == "distilbert-cls")
    else:
        cfg = llama(a, g)
    cfg["torch_dtype"] = TORCH_DTYPE[a.dtype]

    tensors = {}
    for name, arr in g.tensors.items():
        if a.dtype == "f16":
            tensors[name] = arr.astype(np.float16)  # numpy rounds to nearest even
        elif a.dtype == "bf16":
            tensors[name] = st.Tensor("BF16", st.f32_to_bf16_bits(arr))
        else:
            tensors[name] = arr

    os.makedirs(a.out, exist_ok=True)
    st.save_file(tensors, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    path = os.path.join(a.out, "config.json")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    n = sum(int(np.prod(t.shape)) for t in g.tensors.values())
    print(f"wrote {a.out}: {cfg['architectures'][0]}, {len(tensors)} tensors, {n} parameters, {a.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
