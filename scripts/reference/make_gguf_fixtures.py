#!/usr/bin/env python3
"""Writes GGUF test files under tests/fixtures/gguf/ with the PyPI `gguf` package (llama.cpp's own writer).

    .venv-ref/bin/python scripts/reference/make_gguf_fixtures.py [--out tests/fixtures/gguf]

From the tiny Llama fixtures of make_llama_fixtures.py (run that first), laid out as llama.cpp's
converter (convert_hf_to_gguf.py) lays out a Hugging Face Llama: tensor names token_embd,
blk.N.attn_q/attn_k/attn_v/attn_output/attn_norm/ffn_gate/ffn_up/ffn_down/ffn_norm, output_norm,
output (only when untied), and the q/k rows of every head interleaved for llama.cpp's rope
(the converter's `permute`, written out here independently of stac's inverse):

    llama-f32.gguf     tiny-gqa-tied-f32 in F32: its logits must match that fixture's transformers
                       reference (reference.safetensors there)
    llama-mixed.gguf   tiny-gqa-bf16-sharded with token_embd Q8_0, attention Q4_1, gate Q4_0, up
                       F16, down BF16, output Q8_0, norms F32 (quantized by gguf.quants.quantize)
    llama-mixed.expected.safetensors
                       what gguf.quants.dequantize gives for every tensor of llama-mixed.gguf, under
                       the GGUF names (ggml order reversed = PyTorch shapes), plus the q/k weights
                       under Hugging Face names with their rows put back (hf.<name>)
    llama-mixed.json   the metadata written, and one value of every GGUF value type (test.*), for
                       the reader's tests
"""
import argparse
import json
import os

import numpy as np
import gguf
import safetensors.numpy
import safetensors.torch
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
Q = gguf.GGMLQuantizationType


def hf_tensors(model_dir):
    """name -> float32 numpy array of a Hugging Face checkpoint directory (single or sharded)."""
    out = {}
    for fn in sorted(os.listdir(model_dir)):
        if fn.endswith(".safetensors") and not fn.startswith("reference"):
            for k, v in safetensors.torch.load_file(os.path.join(model_dir, fn)).items():
                out[k] = v.float().numpy()
    return out


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute: rotate_half order -> interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_names(cfg, tensors):
    """HF name -> (GGUF name, array as llama.cpp stores it)."""
    H, G = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    layer = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
             "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
             "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight"}
    out = {}
    for name, t in tensors.items():
        if name == "model.embed_tokens.weight":
            out[name] = ("token_embd.weight", t)
        elif name == "model.norm.weight":
            out[name] = ("output_norm.weight", t)
        elif name == "lm_head.weight":
            out[name] = ("output.weight", t)
        else:
            _, _, n, rest = name.split(".", 3)
            if rest == "self_attn.q_proj.weight":
                t = permute(t, H)
            elif rest == "self_attn.k_proj.weight":
                t = permute(t, G)
            out[name] = (f"blk.{n}.{layer[rest]}", t)
    return out


def write_llama(path, cfg, tensors, qtype_of, extra_kv=None):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(os.path.basename(path))
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(1)
    for k, (fn, v) in (extra_kv or {}).items():
        getattr(w, fn)(k, v)
    stored = {}
    for hf, (name, t) in sorted(gguf_names(cfg, tensors).items(), key=lambda x: x[1][0]):
        qt = qtype_of(name, t)
        if qt == Q.F32:
            data = t.astype(np.float32)
        elif qt == Q.F16:
            data = t.astype(np.float16)
        else:
            data = gguf.quants.quantize(t.astype(np.float32), qt)
        w.add_tensor(name, data, raw_dtype=qt)
        stored[name] = (hf, qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "gguf"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    llama = os.path.join(ROOT, "tests", "fixtures", "llama")

    # 1. F32, tied: parity with transformers through the fixture's reference logits.
    d = os.path.join(llama, "tiny-gqa-tied-f32")
    cfg = json.load(open(os.path.join(d, "config.json")))
    write_llama(os.path.join(args.out, "llama-f32.gguf"), cfg, hf_tensors(d), lambda n, t: Q.F32)

    # 2. Every supported type in one file, and every metadata value type.
    d = os.path.join(llama, "tiny-gqa-bf16-sharded")
    cfg = json.load(open(os.path.join(d, "config.json")))

    def qtype_of(name, t):
        if t.ndim == 1:
            return Q.F32
        if name in ("token_embd.weight", "output.weight"):
            return Q.Q8_0
        if ".attn_" in name:
            return Q.Q4_1
        if "ffn_gate" in name:
            return Q.Q4_0
        if "ffn_up" in name:
            return Q.F16
        return Q.BF16

    extra = {"test.u8": ("add_uint8", 200), "test.i8": ("add_int8", -100), "test.u16": ("add_uint16", 60000),
             "test.i16": ("add_int16", -30000), "test.u32": ("add_uint32", 4000000000),
             "test.i32": ("add_int32", -2000000000), "test.u64": ("add_uint64", 2**40 + 7),
             "test.i64": ("add_int64", -(2**40) - 7), "test.f32": ("add_float32", 0.25),
             "test.f64": ("add_float64", -1.0e-300), "test.bool": ("add_bool", True),
             "test.string": ("add_string", "héllo <|im_start|>"),
             "test.strings": ("add_array", ["a", "", "ü", "<|im_end|>"]), "test.ints": ("add_array", [3, -1, 7])}
    path = os.path.join(args.out, "llama-mixed.gguf")
    tensors = hf_tensors(d)
    stored = write_llama(path, cfg, tensors, qtype_of, extra)

    # What the gguf package reads back and dequantizes: the expected values for stac's reader.
    r = gguf.GGUFReader(path)
    expected = {}
    for t in r.tensors:
        deq = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape.tolist())]
        deq = deq.reshape(shape)
        expected[t.name] = np.ascontiguousarray(deq)
        hf, qt = stored[t.name]
        assert qt == t.tensor_type, t.name
        un = deq
        if t.name.endswith("attn_q.weight") or t.name.endswith("attn_k.weight"):
            heads = cfg["num_attention_heads"] if t.name.endswith("attn_q.weight") else cfg["num_key_value_heads"]
            # the inverse of permute(): interleaved pairs -> rotate_half halves
            un = deq.reshape(heads, deq.shape[0] // heads // 2, 2, *deq.shape[1:]).swapaxes(1, 2).reshape(deq.shape)
            assert np.array_equal(permute(un, heads), deq)
            expected["hf." + hf] = np.ascontiguousarray(un)
    safetensors.numpy.save_file(expected, os.path.join(args.out, "llama-mixed.expected.safetensors"))
    meta = {"hf_names": {n: hf for n, (hf, qt) in sorted(stored.items())},
            "types": {n: Q(qt).name for n, (hf, qt) in sorted(stored.items())},
            "values": {k: v for k, (fn, v) in extra.items()},
            "gguf_version": r.fields["GGUF.version"].parts[-1].tolist(),
            "gguf_package": "gguf==0.10.0"}
    with open(os.path.join(args.out, "llama-mixed.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for fn in sorted(os.listdir(args.out)):
        print(f"  {fn:40s} {os.path.getsize(os.path.join(args.out, fn)):9d} bytes")


if __name__ == "__main__":
    main()
