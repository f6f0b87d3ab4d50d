"""Float64 numpy forward passes with the semantics of Hugging Face transformers' GPT2LMHeadModel,
BertModel/BertForSequenceClassification, DistilBertModel/...ForSequenceClassification and LlamaForCausalLM.

Written from the published equations and the documented HF behaviour, independently of shrink's
C++ engine. Weights are upcast from their stored dtype (F32/F16/BF16) to float64 and every
intermediate is float64, so the result is the exact-arithmetic value up to ~1e-12.
"""
import json
import math
import os

import numpy as np

import safetensors_np as st

# HF masks attention with the most negative float32, added to the scores before the softmax.
MASK_VALUE = float(np.finfo(np.float32).min)


class ModelError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Building blocks

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_erf(x):
    """BERT's "gelu": x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def gelu_tanh(x):
    """GPT-2's "gelu_new" (= "gelu_pytorch_tanh"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def silu(x):
    return np.asarray(x, dtype=np.float64) * sigmoid(x)


def relu(x):
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu,
    "silu": silu,
    "swish": silu,
}


def activation(name, field):
    if name not in ACTIVATIONS:
        raise ModelError(f"config.json field {field!r} is {name!r}; the reference knows {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def layer_norm(x, weight, bias, eps):
    """torch.nn.LayerNorm: biased variance over the last axis, eps inside the square root."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def rms_norm(x, weight, eps):
    """LlamaRMSNorm: x / sqrt(mean(x^2) + eps), then times weight."""
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight


def softmax(s, axis=-1):
    s = s - s.max(axis=axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=axis, keepdims=True)


def attend(q, k, v, allowed, scale):
    """Scaled dot-product attention. q [B,H,T,d], k/v [B,H,S,d], allowed bool broadcastable to [B,H,T,S].
    Disallowed pairs get MASK_VALUE added to their score, as HF does."""
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    scores = scores + np.where(allowed, 0.0, MASK_VALUE)
    return softmax(scores) @ v


def split_heads(x, n_heads):
    """[B,T,n*d] -> [B,n,T,d] (head h owns columns h*d..(h+1)*d-1, as HF's view(B,T,n,d))."""
    b, t, c = x.shape
    return x.reshape(b, t, n_heads, c // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def rope_inv_freq(head_dim, theta):
    """1 / theta^(2i/d), i = 0..d/2-1 (HF _compute_default_rope_parameters; llama2.c run.c)."""
    return 1.0 / (float(theta) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def rope_cos_sin(positions, head_dim, theta):
    """cos, sin of shape [T, d/2] for angles pos * inv_freq."""
    ang = np.asarray(positions, dtype=np.float64)[:, None] * rope_inv_freq(head_dim, theta)[None, :]
    return np.cos(ang), np.sin(ang)


def rotate_half(x):
    """HF: cat(-x2, x1) of the two halves of the last axis."""
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope_half(x, cos, sin):
    """HF layout: pairs (x[i], x[i + d/2]) rotate by angle i. x [..., T, d], cos/sin [T, d/2]."""
    c = np.concatenate([cos, cos], axis=-1)
    s = np.concatenate([sin, sin], axis=-1)
    return x * c + rotate_half(x) * s


def apply_rope_interleaved(x, cos, sin):
    """llama2.c / Meta layout: pairs (x[2i], x[2i+1]) rotate by angle i."""
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def permute_for_rotate_half(w, n_heads):
    """Rows of a q/k projection [n_heads*d, in] from interleaved to half-rotation order, exactly as
    transformers' convert_llama_weights_to_hf.py: w.view(n, d/2, 2, in).transpose(1, 2).reshape(n*d, in)."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


# ---------------------------------------------------------------------------------------------
# Checkpoint access


class Weights:
    """Named float64 tensors with a name prefix and shape checks that name the tensor."""

    def __init__(self, tensors, source, prefix=""):
        self.tensors = tensors
        self.source = source
        self.prefix = prefix
        self.used = set()

    def has(self, name):
        return self.prefix + name in self.tensors

    def get(self, name, shape, prefixed=True):
        full = (self.prefix + name) if prefixed else name
        if full not in self.tensors:
            raise ModelError(f"{self.source}: tensor {full!r} is missing (expected shape {list(shape)}); "
                             "the checkpoint does not match its config.json architecture")
        arr = self.tensors[full]
        if tuple(arr.shape) != tuple(shape):
            raise ModelError(f"{self.source}: tensor {full!r} has shape {list(arr.shape)}, expected "
                             f"{list(shape)} from config.json")
        self.used.add(full)
        return np.asarray(arr, dtype=np.float64)


def load_tensors(model_dir):
    """All tensors of DIR/model.safetensors or of the shards named by DIR/model.safetensors.index.json."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return st.load_file(single), single
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map", {})
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(st.load_file(os.path.join(model_dir, shard)))
        return tensors, index
    raise ModelError(f"{model_dir}: no model.safetensors or model.safetensors.index.json; "
                     "point --model at a Hugging Face model directory")


def cfg_int(cfg, key, default=None):
    v = cfg.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, int):
        raise ModelError(f"config.json field {key!r}: expected an integer, found {v!r}")
    return v


# ---------------------------------------------------------------------------------------------
# Models. Each forward takes int arrays ids/mask/types of shape [B, T] and returns a dict of outputs.


class Gpt2:
    """GPT2LMHeadModel. Conv1D layers compute x @ W + b with W stored [in, out]."""

    kind = "decoder"

    def __init__(self, cfg, tensors, source):
        self.vocab = cfg_int(cfg, "vocab_size")
        self.hidden = cfg_int(cfg, "n_embd")
        self.layers = cfg_int(cfg, "n_layer")
        self.heads = cfg_int(cfg, "n_head")
        self.max_pos = cfg_int(cfg, "n_positions")
        inner = cfg.get("n_inner")
        self.inner = 4 * self.hidden if inner is None else cfg_int(cfg, "n_inner")
        self.eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        self.act = activation(cfg.get("activation_function", "gelu_new"), "activation_function")
        self.scale_attn = bool(cfg.get("scale_attn_weights", True))
        self.scale_by_layer = bool(cfg.get("scale_attn_by_inverse_layer_idx", False))
        if self.hidden % self.heads:
            raise ModelError(f"config.json: n_embd {self.hidden} is not a multiple of n_head {self.heads}")
        prefix = "transformer." if "transformer.wte.weight" in tensors else ""
        w = Weights(tensors, source, prefix)
        E, I = self.hidden, self.inner
        self.wte = w.get("wte.weight", (self.vocab, E))
        self.wpe = w.get("wpe.weight", (self.max_pos, E))
        self.blocks = []
        for i in range(self.layers):
            p = f"h.{i}."
            self.blocks.append({
                "ln_1": (w.get(p + "ln_1.weight", (E,)), w.get(p + "ln_1.bias", (E,))),
                "c_attn": (w.get(p + "attn.c_attn.weight", (E, 3 * E)), w.get(p + "attn.c_attn.bias", (3 * E,))),
                "c_proj": (w.get(p + "attn.c_proj.weight", (E, E)), w.get(p + "attn.c_proj.bias", (E,))),
                "ln_2": (w.get(p + "ln_2.weight", (E,)), w.get(p + "ln_2.bias", (E,))),
                "c_fc": (w.get(p + "mlp.c_fc.weight", (E, I)), w.get(p + "mlp.c_fc.bias", (I,))),
                "mlp_proj": (w.get(p + "mlp.c_proj.weight", (I, E)), w.get(p + "mlp.c_proj.bias", (E,))),
            })
        self.ln_f = (w.get("ln_f.weight", (E,)), w.get("ln_f.bias", (E,)))
        tie = bool(cfg.get("tie_word_embeddings", True))
        self.lm_head = self.wte if tie else w.get("lm_head.weight", (self.vocab, E), prefixed=False)

    def forward(self, ids, mask, types=None):
        B, T = ids.shape
        if T > self.max_pos:
            raise ModelError(f"input has {T} positions, the model's n_positions is {self.max_pos}")
        h = self.wte[ids] + self.wpe[np.arange(T)][None]
        causal = np.tril(np.ones((T, T), dtype=bool))
        allowed = causal[None, None] & (mask[:, None, None, :] != 0)
        d = self.hidden // self.heads
        for i, blk in enumerate(self.blocks):
            a = layer_norm(h, *blk["ln_1"], self.eps)
            qkv = a @ blk["c_attn"][0] + blk["c_attn"][1]
            q, k, v = (split_heads(x, self.heads) for x in np.split(qkv, 3, axis=-1))
            scale = 1.0 / math.sqrt(d) if self.scale_attn else 1.0
            if self.scale_by_layer:
                scale /= i + 1
            o = merge_heads(attend(q, k, v, allowed, scale))
            h = h + (o @ blk["c_proj"][0] + blk["c_proj"][1])
            m = layer_norm(h, *blk["ln_2"], self.eps)
            m = self.act(m @ blk["c_fc"][0] + blk["c_fc"][1])
            h = h + (m @ blk["mlp_proj"][0] + blk["mlp_proj"][1])
        h = layer_norm(h, *self.ln_f, self.eps)
        return {"logits": h @ self.lm_head.T}


class Llama:
    """LlamaForCausalLM: RMSNorm, RoPE (HF rotate_half layout, or llama2.c interleaved pairs when
    config.json has "interleaved_rope": true), grouped-query attention (repeat_kv), SwiGLU MLP."""

    kind = "decoder"

    def __init__(self, cfg, tensors, source):
        self.vocab = cfg_int(cfg, "vocab_size")
        self.hidden = cfg_int(cfg, "hidden_size")
        self.inter = cfg_int(cfg, "intermediate_size")
        self.layers = cfg_int(cfg, "num_hidden_layers")
        self.heads = cfg_int(cfg, "num_attention_heads")
        kv = cfg.get("num_key_value_heads")
        self.kv_heads = self.heads if kv is None else cfg_int(cfg, "num_key_value_heads")
        hd = cfg.get("head_dim")
        self.head_dim = self.hidden // self.heads if hd is None else cfg_int(cfg, "head_dim")
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self.max_pos = cfg_int(cfg, "max_position_embeddings", 2048)
        self.act = activation(cfg.get("hidden_act", "silu"), "hidden_act")
        self.interleaved = bool(cfg.get("interleaved_rope", False))
        if cfg.get("rope_scaling") not in (None, {}):
            raise ModelError(f"config.json rope_scaling {cfg['rope_scaling']!r}: the reference implements only "
                             "unscaled RoPE (rope_scaling null)")
        if self.heads % self.kv_heads:
            raise ModelError(f"config.json: num_attention_heads {self.heads} is not a multiple of "
                             f"num_key_value_heads {self.kv_heads}")
        if self.head_dim % 2:
            raise ModelError(f"config.json: head_dim {self.head_dim} is odd; RoPE needs an even head size")
        attn_bias = bool(cfg.get("attention_bias", False))
        mlp_bias = bool(cfg.get("mlp_bias", False))
        w = Weights(tensors, source, "model.")
        H, I, qd, kvd = self.hidden, self.inter, self.heads * self.head_dim, self.kv_heads * self.head_dim

        def linear(name, out_f, in_f, bias):
            return (w.get(name + ".weight", (out_f, in_f)), w.get(name + ".bias", (out_f,)) if bias else 0.0)

        self.embed = w.get("embed_tokens.weight", (self.vocab, H))
        self.blocks = []
        for i in range(self.layers):
            p = f"layers.{i}."
            self.blocks.append({
                "in_norm": w.get(p + "input_layernorm.weight", (H,)),
                "q": linear(p + "self_attn.q_proj", qd, H, attn_bias),
                "k": linear(p + "self_attn.k_proj", kvd, H, attn_bias),
                "v": linear(p + "self_attn.v_proj", kvd, H, attn_bias),
                "o": linear(p + "self_attn.o_proj", H, qd, attn_bias),
                "post_norm": w.get(p + "post_attention_layernorm.weight", (H,)),
                "gate": linear(p + "mlp.gate_proj", I, H, mlp_bias),
                "up": linear(p + "mlp.up_proj", I, H, mlp_bias),
                "down": linear(p + "mlp.down_proj", H, I, mlp_bias),
            })
        self.norm = w.get("norm.weight", (H,))
        tie = bool(cfg.get("tie_word_embeddings", False))  # LlamaConfig's default is untied
        self.lm_head = self.embed if tie else w.get("lm_head.weight", (self.vocab, H), prefixed=False)

    def forward(self, ids, mask, types=None):
        B, T = ids.shape
        h = self.embed[ids]
        cos, sin = rope_cos_sin(np.arange(T), self.head_dim, self.theta)
        rope = apply_rope_interleaved if self.interleaved else apply_rope_half
        causal = np.tril(np.ones((T, T), dtype=bool))
        allowed = causal[None, None] & (mask[:, None, None, :] != 0)
        n_rep = self.heads // self.kv_heads
        for blk in self.blocks:
            x = rms_norm(h, blk["in_norm"], self.eps)
            q = split_heads(x @ blk["q"][0].T + blk["q"][1], self.heads)
            k = split_heads(x @ blk["k"][0].T + blk["k"][1], self.kv_heads)
            v = split_heads(x @ blk["v"][0].T + blk["v"][1], self.kv_heads)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            # repeat_kv: query head j reads kv head j // n_rep
            k, v = np.repeat(k, n_rep, axis=1), np.repeat(v, n_rep, axis=1)
            o = merge_heads(attend(q, k, v, allowed, 1.0 / math.sqrt(self.head_dim)))
            h = h + (o @ blk["o"][0].T + blk["o"][1])
            x = rms_norm(h, blk["post_norm"], self.eps)
            g = self.act(x @ blk["gate"][0].T + blk["gate"][1])
            u = x @ blk["up"][0].T + blk["up"][1]
            h = h + ((g * u) @ blk["down"][0].T + blk["down"][1])
        h = rms_norm(h, self.norm, self.eps)
        return {"logits": h @ self.lm_head.T}


class Bert:
    """BertModel (+ pooler) and BertForSequenceClassification (classifier on the pooled output)."""

    kind = "encoder"

    def __init__(self, cfg, tensors, source, classify):
        self.vocab = cfg_int(cfg, "vocab_size")
        self.hidden = cfg_int(cfg, "hidden_size")
        self.layers = cfg_int(cfg, "num_hidden_layers")
        self.heads = cfg_int(cfg, "num_attention_heads")
        self.inter = cfg_int(cfg, "intermediate_size")
        self.max_pos = cfg_int(cfg, "max_position_embeddings")
        self.type_vocab = cfg_int(cfg, "type_vocab_size", 2)
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.act = activation(cfg.get("hidden_act", "gelu"), "hidden_act")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ModelError(f"config.json position_embedding_type {cfg['position_embedding_type']!r}: "
                             "the reference implements only 'absolute'")
        if self.hidden % self.heads:
            raise ModelError(f"config.json: hidden_size {self.hidden} is not a multiple of "
                             f"num_attention_heads {self.heads}")
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""
        w = Weights(tensors, source, prefix)
        H, I = self.hidden, self.inter

        def dense(name, out_f, in_f):
            return w.get(name + ".weight", (out_f, in_f)), w.get(name + ".bias", (out_f,))

        def ln(name):
            return w.get(name + ".weight", (H,)), w.get(name + ".bias", (H,))

        self.word = w.get("embeddings.word_embeddings.weight", (self.vocab, H))
        self.pos = w.get("embeddings.position_embeddings.weight", (self.max_pos, H))
        self.type = w.get("embeddings.token_type_embeddings.weight", (self.type_vocab, H))
        self.emb_ln = ln("embeddings.LayerNorm")
        self.blocks = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            self.blocks.append({
                "q": dense(p + "attention.self.query", H, H),
                "k": dense(p + "attention.self.key", H, H),
                "v": dense(p + "attention.self.value", H, H),
                "attn_out": dense(p + "attention.output.dense", H, H),
                "attn_ln": ln(p + "attention.output.LayerNorm"),
                "inter": dense(p + "intermediate.dense", I, H),
                "out": dense(p + "output.dense", H, I),
                "out_ln": ln(p + "output.LayerNorm"),
            })
        has_pooler = w.has("pooler.dense.weight")
        if classify and not has_pooler:
            raise ModelError(f"{source}: tensor {prefix + 'pooler.dense.weight'!r} is missing; "
                             "BertForSequenceClassification classifies the pooled output")
        self.pooler = dense("pooler.dense", H, H) if has_pooler else None
        self.classifier = None
        if classify:
            n = _num_labels(cfg, tensors, source)
            self.classifier = (w.get("classifier.weight", (n, H), prefixed=False),
                               w.get("classifier.bias", (n,), prefixed=False))

    def forward(self, ids, mask, types=None):
        B, T = ids.shape
        if T > self.max_pos:
            raise ModelError(f"input has {T} positions, the model's max_position_embeddings is {self.max_pos}")
        types = np.zeros_like(ids) if types is None else types
        if types.min() < 0 or types.max() >= self.type_vocab:
            raise ModelError(f"token_type_ids must be in [0, {self.type_vocab}), found {types.min()}..{types.max()}")
        h = self.word[ids] + self.type[types] + self.pos[np.arange(T)][None]
        h = layer_norm(h, *self.emb_ln, self.eps)
        allowed = (mask[:, None, None, :] != 0)
        d = self.hidden // self.heads
        for blk in self.blocks:
            q, k, v = (split_heads(h @ blk[n][0].T + blk[n][1], self.heads) for n in ("q", "k", "v"))
            ctx = merge_heads(attend(q, k, v, allowed, 1.0 / math.sqrt(d)))
            a = layer_norm(ctx @ blk["attn_out"][0].T + blk["attn_out"][1] + h, *blk["attn_ln"], self.eps)
            m = self.act(a @ blk["inter"][0].T + blk["inter"][1])
            h = layer_norm(m @ blk["out"][0].T + blk["out"][1] + a, *blk["out_ln"], self.eps)
        out = {"last_hidden_state": h}
        if self.pooler is not None:
            out["pooler_output"] = np.tanh(h[:, 0] @ self.pooler[0].T + self.pooler[1])
        if self.classifier is not None:
            out["logits"] = out["pooler_output"] @ self.classifier[0].T + self.classifier[1]
        return out


class DistilBert:
    """DistilBertModel and DistilBertForSequenceClassification (hidden[:,0] -> pre_classifier -> ReLU ->
    classifier). Post-norm blocks; LayerNorm eps is fixed at 1e-12 in HF's code."""

    kind = "encoder"
    eps = 1e-12

    def __init__(self, cfg, tensors, source, classify):
        self.vocab = cfg_int(cfg, "vocab_size")
        self.dim = cfg_int(cfg, "dim")
        self.layers = cfg_int(cfg, "n_layers")
        self.heads = cfg_int(cfg, "n_heads")
        self.hidden_dim = cfg_int(cfg, "hidden_dim")
        self.max_pos = cfg_int(cfg, "max_position_embeddings")
        self.act = activation(cfg.get("activation", "gelu"), "activation")
        if self.dim % self.heads:
            raise ModelError(f"config.json: dim {self.dim} is not a multiple of n_heads {self.heads}")
        prefix = "distilbert." if "distilbert.embeddings.word_embeddings.weight" in tensors else ""
        w = Weights(tensors, source, prefix)
        D, F = self.dim, self.hidden_dim

        def lin(name, out_f, in_f, prefixed=True):
            return (w.get(name + ".weight", (out_f, in_f), prefixed), w.get(name + ".bias", (out_f,), prefixed))

        def ln(name):
            return w.get(name + ".weight", (D,)), w.get(name + ".bias", (D,))

        # sinusoidal_pos_embds only changes how the table is initialised; it is stored either way.
        self.word = w.get("embeddings.word_embeddings.weight", (self.vocab, D))
        self.pos = w.get("embeddings.position_embeddings.weight", (self.max_pos, D))
        self.emb_ln = ln("embeddings.LayerNorm")
        self.blocks = []
        for i in range(self.layers):
            p = f"transformer.layer.{i}."
            self.blocks.append({
                "q": lin(p + "attention.q_lin", D, D), "k": lin(p + "attention.k_lin", D, D),
                "v": lin(p + "attention.v_lin", D, D), "o": lin(p + "attention.out_lin", D, D),
                "sa_ln": ln(p + "sa_layer_norm"),
                "lin1": lin(p + "ffn.lin1", F, D), "lin2": lin(p + "ffn.lin2", D, F),
                "out_ln": ln(p + "output_layer_norm"),
            })
        self.pre_classifier = self.classifier = None
        if classify:
            n = _num_labels(cfg, tensors, source)
            self.pre_classifier = lin("pre_classifier", D, D, prefixed=False)
            self.classifier = lin("classifier", n, D, prefixed=False)

    def forward(self, ids, mask, types=None):
        B, T = ids.shape
        if T > self.max_pos:
            raise ModelError(f"input has {T} positions, the model's max_position_embeddings is {self.max_pos}")
        h = layer_norm(self.word[ids] + self.pos[np.arange(T)][None], *self.emb_ln, self.eps)
        allowed = (mask[:, None, None, :] != 0)
        d = self.dim // self.heads
        for blk in self.blocks:
            q, k, v = (split_heads(h @ blk[n][0].T + blk[n][1], self.heads) for n in ("q", "k", "v"))
            ctx = merge_heads(attend(q, k, v, allowed, 1.0 / math.sqrt(d)))
            a = layer_norm(ctx @ blk["o"][0].T + blk["o"][1] + h, *blk["sa_ln"], self.eps)
            f = self.act(a @ blk["lin1"][0].T + blk["lin1"][1]) @ blk["lin2"][0].T + blk["lin2"][1]
            h = layer_norm(f + a, *blk["out_ln"], self.eps)
        out = {"last_hidden_state": h}
        if self.classifier is not None:
            pooled = relu(h[:, 0] @ self.pre_classifier[0].T + self.pre_classifier[1])
            out["logits"] = pooled @ self.classifier[0].T + self.classifier[1]
        return out


def _num_labels(cfg, tensors, source):
    if "classifier.weight" not in tensors:
        raise ModelError(f"{source}: tensor 'classifier.weight' is missing; a ...ForSequenceClassification "
                         "checkpoint stores its classifier head")
    n = int(tensors["classifier.weight"].shape[0])
    declared = len(cfg["id2label"]) if isinstance(cfg.get("id2label"), dict) else cfg.get("num_labels", n)
    if declared != n:
        raise ModelError(f"config.json declares {declared} labels (id2label/num_labels) but "
                         f"'classifier.weight' has {n} rows")
    return n


ARCHITECTURES = {
    "GPT2LMHeadModel": lambda c, t, s: Gpt2(c, t, s),
    "LlamaForCausalLM": lambda c, t, s: Llama(c, t, s),
    "BertModel": lambda c, t, s: Bert(c, t, s, classify=False),
    "BertForSequenceClassification": lambda c, t, s: Bert(c, t, s, classify=True),
    "DistilBertModel": lambda c, t, s: DistilBert(c, t, s, classify=False),
    "DistilBertForSequenceClassification": lambda c, t, s: DistilBert(c, t, s, classify=True),
}
DEFAULT_FOR_MODEL_TYPE = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "bert": "BertModel",
                          "distilbert": "DistilBertModel"}


def architecture_of(cfg):
    archs = cfg.get("architectures") or []
    for a in archs:
        if a in ARCHITECTURES:
            return a
    if not archs and cfg.get("model_type") in DEFAULT_FOR_MODEL_TYPE:
        return DEFAULT_FOR_MODEL_TYPE[cfg["model_type"]]
    raise ModelError(f"config.json architectures {archs!r} / model_type {cfg.get('model_type')!r}: the reference "
                     f"implements {sorted(ARCHITECTURES)}")


def build(cfg, tensors, source="<memory>"):
    """A model object from a config dict and {name: array}."""
    arch = architecture_of(cfg)
    model = ARCHITECTURES[arch](cfg, tensors, source)
    model.architecture = arch
    return model


def load(model_dir):
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise ModelError(f"{model_dir}: config.json is missing; point --model at a Hugging Face model directory")
    with open(path) as f:
        try:
            cfg = json.load(f)
        except ValueError as e:
            raise ModelError(f"{path}: not valid JSON ({e})") from None
    tensors, source = load_tensors(model_dir)
    return build(cfg, tensors, source)
