#!/usr/bin/python3
"""Runs the float64 numpy reference (models_np.py) on a Hugging Face model directory and a JSON batch;
writes float32-rounded outputs as JSON."""
import argparse
import json
import os
import sys

sys.dont_write_bytecode = True
import numpy as np  # noqa: E402

import models_np  # noqa: E402
from safetensors_np import SafetensorsError  # noqa: E402


class InputError(Exception):
    pass


def int_matrix(inp, key, path, shape=None):
    rows = inp[key]
    if (not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows)
            or len({len(r) for r in rows}) != 1 or not rows[0]
            or not all(isinstance(x, int) and not isinstance(x, bool) for r in rows for x in r)):
        raise InputError(f"{path}: {key!r} must be a non-empty rectangular list of lists of ints")
    arr = np.array(rows, dtype=np.int64)
    if shape is not None and arr.shape != shape:
        raise InputError(f"{path}: {key!r} has shape {list(arr.shape)}, input_ids has {list(shape)}")
    return arr


def read_input(path, vocab):
    try:
        with open(path) as f:
            inp = json.load(f)
    except OSError as e:
        raise InputError(f"{path}: cannot read input ({e.strerror})") from None
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(inp, dict) or "input_ids" not in inp:
        raise InputError(f"{path}: expected an object with 'input_ids' [[...], ...]")
    ids = int_matrix(inp, "input_ids", path)
    if ids.min() < 0 or ids.max() >= vocab:
        raise InputError(f"{path}: input_ids must be in [0, {vocab}) (vocab_size), found {ids.min()}..{ids.max()}")
    mask = int_matrix(inp, "attention_mask", path, ids.shape) if "attention_mask" in inp else np.ones_like(ids)
    if not np.isin(mask, (0, 1)).all():
        raise InputError(f"{path}: attention_mask must hold only 0 and 1")
    types = int_matrix(inp, "token_type_ids", path, ids.shape) if "token_type_ids" in inp else None
    return ids, mask, types


def fmt(x):
    """JSON text of a float64 array rounded to float32; %.9g round-trips every float32."""
    if x.ndim == 0:
        v = float(np.float32(x))
        if not np.isfinite(v):
            raise models_np.ModelError(f"reference produced a non-finite value {v}")
        return "%.9g" % v
    return "[" + ",".join(fmt(r) for r in x) + "]"


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="directory with config.json and model.safetensors")
    p.add_argument("--input", required=True, help='JSON {"input_ids": [[...]], "attention_mask"?, "token_type_ids"?}')
    p.add_argument("--out", required=True, help="output JSON")
    a = p.parse_args(argv)
    try:
        model = models_np.load(a.model)
        ids, mask, types = read_input(a.input, model.vocab)
        if types is not None and not isinstance(model, models_np.Bert):
            if types.any():
                print(f"note: {type(model).__name__} has no token type embeddings; token_type_ids ignored",
                      file=sys.stderr)
            types = None
        out = model.forward(ids, mask, types)
    except (models_np.ModelError, SafetensorsError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    parts = ['"architecture":' + json.dumps(model.architecture)]
    if model.kind == "decoder":
        valid = mask.sum(axis=1)
        for row, n in zip(mask, valid):
            if not (row[:n] == 1).all():
                print("note: attention_mask is not right-padded; 'valid' counts ones, positions are 0..T-1",
                      file=sys.stderr)
                break
        parts.append('"valid":' + json.dumps([int(n) for n in valid]))
    for key in ("logits", "last_hidden_state", "pooler_output"):
        if key in out:
            parts.append(f'"{key}":' + fmt(out[key]))
    text = "{" + ",\n".join(parts) + "}\n"
    tmp = f"{a.out}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
