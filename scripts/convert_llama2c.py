#!/usr/bin/env python3
"""Convert a llama2.c checkpoint (legacy format) into a Hugging Face Llama folder.

Input (llama2.c `export.py --version 0` / the original run.c format): 7 little-endian int32
(dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
means a separate classifier follows), then float32 arrays:
  token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
  wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
  w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
  freq_cis_real [seq_len, head_dim/2], freq_cis_imag [seq_len, head_dim/2] (skipped),
  wcls [vocab, dim] (only when not shared).

Output: model.safetensors (F32, Hugging Face names, wq/wk rows permuted per head from the
interleaved-pair RoPE layout to rotate-half), config.json, generation_config.json,
tokenizer_config.json and, with --tokenizer, tokenizer.model.

Pure Python 3 standard library. Usage:
  scripts/convert_llama2c.py stories260K.bin out_dir --tokenizer tok512.model
"""

import argparse
import array
import json
import os
import shutil
import struct
import sys

HEADER_INTS = 7
LLAMA2C_V1_MAGIC = 0x616B3432  # "ak42": llama2.c's newer export versions, not handled here


class ConvertError(Exception):
    pass


def read_checkpoint(path):
    """Returns (header dict, shared classifier flag, {name: (shape, array('f'))})."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConvertError(f"cannot read {path}: {e.strerror}")
    if len(raw) < 4 * HEADER_INTS:
        raise ConvertError(f"{path}: {len(raw)} bytes is too short for the 28-byte header")
    if struct.unpack_from("<I", raw, 0)[0] == LLAMA2C_V1_MAGIC:
        raise ConvertError(f"{path}: this is a llama2.c version 1/2 export ('ak42' magic); "
                           "re-export it with --version 0 (legacy format)")
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack_from("<7i", raw, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    for name, v in [("dim", dim), ("hidden_dim", hidden), ("n_layers", n_layers),
                    ("n_heads", n_heads), ("n_kv_heads", n_kv_heads), ("vocab_size", vocab),
                    ("seq_len", seq_len)]:
        if v <= 0:
            raise ConvertError(f"{path}: header field {name} = {v} must be positive")
    if dim % n_heads != 0:
        raise ConvertError(f"{path}: dim {dim} is not a multiple of n_heads {n_heads}")
    if n_heads % n_kv_heads != 0:
        raise ConvertError(f"{path}: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")
    head_dim = dim // n_heads
    if head_dim % 2 != 0:
        raise ConvertError(f"{path}: head_dim {head_dim} must be even for RoPE")
    kv_dim = n_kv_heads * head_dim
    L = n_layers

    # (name, shape) in file order; shapes are row-major [out, in].
    layout = [("token_embedding", [vocab, dim]), ("rms_att", [L, dim]), ("wq", [L, dim, dim]),
              ("wk", [L, kv_dim, dim]), ("wv", [L, kv_dim, dim]), ("wo", [L, dim, dim]),
              ("rms_ffn", [L, dim]), ("w1", [L, hidden, dim]), ("w2", [L, dim, hidden]),
              ("w3", [L, hidden, dim]), ("rms_final", [dim]),
              ("freq_cis", [2, seq_len, head_dim // 2])]
    if not shared:
        layout.append(("wcls", [vocab, dim]))
    total = sum(prod(shape) for _, shape in layout)
    expected = 4 * HEADER_INTS + 4 * total
    if len(raw) != expected:
        raise ConvertError(f"{path}: {len(raw)} bytes, but the header "
                           f"(dim {dim}, hidden {hidden}, layers {L}, heads {n_heads}/{n_kv_heads}, "
                           f"vocab {vocab}, seq_len {seq_len}, shared classifier {shared}) "
                           f"implies {expected}: truncated or not a llama2.c checkpoint")
    floats = array.array("f")
    floats.frombytes(raw[4 * HEADER_INTS:])
    if sys.byteorder != "little":
        floats.byteswap()
    arrays = {}
    pos = 0
    for name, shape in layout:
        n = prod(shape)
        arrays[name] = (shape, floats[pos:pos + n])
        pos += n
    header = dict(dim=dim, hidden=hidden, n_layers=L, n_heads=n_heads, n_kv_heads=n_kv_heads,
                  vocab=vocab, seq_len=seq_len, head_dim=head_dim, kv_dim=kv_dim)
    return header, shared, arrays


def prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def layer_slice(arrays, name, layer):
    """Layer `layer` of a stacked [L, ...] array: (shape, data)."""
    shape, data = arrays[name]
    n = prod(shape[1:])
    return shape[1:], data[layer * n:(layer + 1) * n]


def interleaved_to_rotate_half(data, rows, cols, n_heads):
    """Permute the rows of a [n_heads * hd, cols] matrix per head: HF row h*hd + i takes
    interleaved row h*hd + 2i, HF row h*hd + hd/2 + i takes row h*hd + 2i + 1 (i < hd/2).
    The inverse of llama.cpp's HF -> GGUF permute."""
    hd = rows // n_heads
    out = array.array("f", bytes(4 * rows * cols))
    for h in range(n_heads):
        for i in range(hd // 2):
            for s in range(2):
                src = (h * hd + 2 * i + s) * cols
                dst = (h * hd + s * (hd // 2) + i) * cols
                out[dst:dst + cols] = data[src:src + cols]
    return out


def hf_tensors(header, shared, arrays):
    """[(HF name, shape, array('f'))] in a natural order."""
    out = [("model.embed_tokens.weight", *arrays["token_embedding"])]
    for l in range(header["n_layers"]):
        p = f"model.layers.{l}."
        wq_shape, wq = layer_slice(arrays, "wq", l)
        wk_shape, wk = layer_slice(arrays, "wk", l)
        out += [
            (p + "input_layernorm.weight", *layer_slice(arrays, "rms_att", l)),
            (p + "self_attn.q_proj.weight", wq_shape,
             interleaved_to_rotate_half(wq, wq_shape[0], wq_shape[1], header["n_heads"])),
            (p + "self_attn.k_proj.weight", wk_shape,
             interleaved_to_rotate_half(wk, wk_shape[0], wk_shape[1], header["n_kv_heads"])),
            (p + "self_attn.v_proj.weight", *layer_slice(arrays, "wv", l)),
            (p + "self_attn.o_proj.weight", *layer_slice(arrays, "wo", l)),
            (p + "post_attention_layernorm.weight", *layer_slice(arrays, "rms_ffn", l)),
            (p + "mlp.gate_proj.weight", *layer_slice(arrays, "w1", l)),
            (p + "mlp.down_proj.weight", *layer_slice(arrays, "w2", l)),
            (p + "mlp.up_proj.weight", *layer_slice(arrays, "w3", l)),
        ]
    out.append(("model.norm.weight", *arrays["rms_final"]))
    if not shared:
        out.append(("lm_head.weight", *arrays["wcls"]))
    return out


def write_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, data in tensors:
        n = 4 * len(data)
        assert len(data) == prod(shape), name
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, _, data in tensors:
            if sys.byteorder != "little":
                data = array.array("f", data)
                data.byteswap()
            f.write(data.tobytes())


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", help="llama2.c checkpoint (.bin, legacy format)")
    ap.add_argument("output_dir", help="folder to write the Hugging Face model into")
    ap.add_argument("--tokenizer", help="SentencePiece model to copy to tokenizer.model")
    ap.add_argument("--rms-norm-eps", type=float, default=1e-5, help="llama2.c uses 1e-5")
    ap.add_argument("--rope-theta", type=float, default=10000.0, help="llama2.c uses 10000")
    args = ap.parse_args(argv)
    try:
        if args.tokenizer and not os.path.isfile(args.tokenizer):
            raise ConvertError(f"tokenizer {args.tokenizer} does not exist")
        header, shared, arrays = read_checkpoint(args.input)
        os.makedirs(args.output_dir, exist_ok=True)
        write_safetensors(os.path.join(args.output_dir, "model.safetensors"),
                          hf_tensors(header, shared, arrays))
        bos, eos = 1, 2
        write_json(os.path.join(args.output_dir, "config.json"), {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": header["vocab"],
            "hidden_size": header["dim"],
            "intermediate_size": header["hidden"],
            "num_hidden_layers": header["n_layers"],
            "num_attention_heads": header["n_heads"],
            "num_key_value_heads": header["n_kv_heads"],
            "head_dim": header["head_dim"],
            "max_position_embeddings": header["seq_len"],
            "rms_norm_eps": args.rms_norm_eps,
            "rope_theta": args.rope_theta,
            "rope_scaling": None,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": shared,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": "float32",
            "use_cache": True,
        })
        write_json(os.path.join(args.output_dir, "generation_config.json"),
                   {"bos_token_id": bos, "eos_token_id": eos})
        write_json(os.path.join(args.output_dir, "tokenizer_config.json"), {
            "tokenizer_class": "LlamaTokenizer",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": header["seq_len"],
            "clean_up_tokenization_spaces": False,
        })
        if args.tokenizer:
            dst = os.path.join(args.output_dir, "tokenizer.model")
            if not (os.path.exists(dst) and os.path.samefile(args.tokenizer, dst)):
                shutil.copyfile(args.tokenizer, dst)
    except ConvertError as e:
        print(f"convert_llama2c: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"convert_llama2c: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output_dir}: {header['n_layers']} layers, dim {header['dim']}, "
          f"vocab {header['vocab']}, tied {shared}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
