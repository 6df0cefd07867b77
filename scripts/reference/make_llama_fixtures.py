#!/usr/bin/env python3
"""Writes the tiny Llama reference fixtures under tests/fixtures/llama/ from Hugging Face transformers.

    .venv-ref/bin/python scripts/reference/make_llama_fixtures.py [--out tests/fixtures/llama] [--seed 4321]

Deterministic (seeded; torch single-threaded). For each model it writes a directory holding a
checkpoint saved by LlamaForCausalLM.save_pretrained (so the layout is Hugging Face's own) plus
what transformers computes for it, in the same format as the GPT-2 fixtures:

    <model>/config.json, generation_config.json   as save_pretrained writes them
    <model>/model.safetensors                     or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    <model>/reference.safetensors                 case{k}.ids (I32 [T]), case{k}.logits (F32 [T, vocab])
    <model>/reference.json                        versions, seed, short config, per case ids + greedy continuation

Weights are random but far from HF's init (std 0.02 gives near-uniform logits): projections
N(0, 1.5/sqrt(fan_in)), embeddings / lm_head N(0, 2/sqrt(hidden)), RMSNorm weights U(0.7, 1.3).
Seeds whose greedy continuations collapse onto one token, or whose argmax has a top-2 gap under
1e-3, are skipped (the next seed is tried), as in make_gpt2_fixtures.py, whose helpers it uses.

Reference logits: float32, eager attention, on the model loaded back from the written directory
with torch_dtype=float32 (for a BF16 checkpoint: exactly the rounded weights upcast to f32).
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from make_gpt2_fixtures import (DTYPES, MAX_NEW_TOKENS, MIN_MARGIN, describe_safetensors,  # noqa: E402
                                dumps_compact, forward_logits, greedy, setup_torch, top2_margin)

GENERATOR = "scripts/reference/make_llama_fixtures.py"

# name -> settings; "shard": max_shard_size for save_pretrained (None: one model.safetensors).
MODELS = {
    # grouped-query attention (3 query heads per key/value head, like SmolLM2), tied head
    "tiny-gqa-tied-f32": dict(
        config=dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                    intermediate_size=128, max_position_embeddings=64, vocab_size=300,
                    rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
        dtype="f32", shard=None, lengths=[1, 7, 64, 30, 56]),
    # multi-head attention (G = H), untied head, positions into the hundreds (RoPE angles)
    "tiny-mha-untied-f32": dict(
        config=dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                    intermediate_size=80, max_position_embeddings=320, vocab_size=128,
                    rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
        dtype="f32", shard=None, lengths=[1, 7, 320, 150, 312]),
    # bf16 as published, sharded with an index, GQA 4:1, untied
    "tiny-gqa-bf16-sharded": dict(
        config=dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=8, num_key_value_heads=2,
                    intermediate_size=96, max_position_embeddings=48, vocab_size=256,
                    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
        dtype="bf16", shard="40KB", lengths=[1, 7, 48, 23, 40]),
}


def random_weights_(model, gen, gain=1.5, emb=2.0):
    params = dict(model.named_parameters())
    hidden = model.config.hidden_size
    for name in sorted(params):
        p = params[name]
        if name.endswith("norm.weight"):
            new = 1.0 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.3
        elif name.endswith(("embed_tokens.weight", "lm_head.weight")):
            new = torch.randn(p.shape, generator=gen) * (emb / math.sqrt(hidden))
        else:  # nn.Linear [out, in]
            new = torch.randn(p.shape, generator=gen) * (gain / math.sqrt(p.shape[1]))
        p.data.copy_(new.to(p.dtype))


def make_one(name, spec, out_root, seed):
    out_dir = os.path.join(out_root, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(**spec["config"], bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    random_weights_(model, torch.Generator().manual_seed(seed))
    m = copy.deepcopy(model).to(DTYPES[spec["dtype"]])
    kw = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
    m.save_pretrained(out_dir, safe_serialization=True, **kw)

    ref, info = LlamaForCausalLM.from_pretrained(out_dir, torch_dtype=torch.float32, attn_implementation="eager",
                                                 output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"] or info["error_msgs"] or info["unexpected_keys"]:
        raise RuntimeError(f"{out_dir}: loading info {info}")
    ref.eval()
    assert ref.config._attn_implementation == "eager"
    gen = torch.Generator().manual_seed(seed + 1)
    tensors, cases = {}, []
    P = cfg.max_position_embeddings
    for k, T in enumerate(spec["lengths"]):
        ids = torch.randint(0, cfg.vocab_size, (T,), generator=gen).tolist()
        logits = forward_logits(ref, ids)
        n = min(MAX_NEW_TOKENS, P - T)
        cont, margin = greedy(ref, ids, n)
        if cont:
            assert cont[0] == int(logits[-1].argmax())
        tensors[f"case{k}.ids"] = torch.tensor(ids, dtype=torch.int32)
        tensors[f"case{k}.logits"] = logits
        cases.append({"ids": ids, "max_new_tokens": n, "greedy": cont,
                      "argmax_min_margin": round(top2_margin(logits), 6),
                      "greedy_min_margin": round(margin, 6) if cont else None})
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "reference.safetensors"), metadata={"format": "pt"})
    c = spec["config"]
    meta = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "safetensors_version": safetensors.__version__,
        "generator": GENERATOR,
        "seed": seed,
        "config": dict(c, weights_dtype=spec["dtype"], shard=spec["shard"]),
        "attn_implementation": "eager",
        "compute_dtype": "f32",
        "cases": cases,
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        f.write(dumps_compact(meta) + "\n")
    return out_dir, cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "llama"))
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--only", nargs="*", help="model names to (re)make; default all")
    ap.add_argument("--quiet", action="store_true", help="do not print the tensor listings")
    args = ap.parse_args()
    setup_torch()
    os.makedirs(args.out, exist_ok=True)
    for i, (name, spec) in enumerate(MODELS.items()):
        if args.only and name not in args.only:
            continue
        for attempt in range(50):
            seed = args.seed + 100 * i + attempt
            out_dir, cases = make_one(name, spec, args.out, seed)
            why = [w for c in cases for w in (
                "too uniform greedy continuation" if len(c["greedy"]) >= 8 and len(set(c["greedy"])) < 4 else None,
                "near-tie argmax" if c["argmax_min_margin"] < MIN_MARGIN else None,
                "near-tie greedy step" if (c["greedy_min_margin"] or 1.0) < MIN_MARGIN else None) if w]
            if not why:
                break
            print(f"   ({name}: seed {seed}: {', '.join(sorted(set(why)))}; next seed)")
        else:
            raise SystemExit(f"{name}: no seed gave varied greedy continuations")
        print(f"== {name}  ({out_dir})  seed {seed}")
        for c in cases:
            print(f"  T={len(c['ids']):3d} greedy={c['greedy']}  min top-2 gap: all positions "
                  f"{c['argmax_min_margin']:.2e}, greedy steps {c['greedy_min_margin']}")
        for fn in sorted(os.listdir(out_dir)):
            p = os.path.join(out_dir, fn)
            print(f"  {fn:40s} {os.path.getsize(p):9d} bytes")
            if fn.endswith(".safetensors") and fn != "reference.safetensors" and not args.quiet:
                meta, rows = describe_safetensors(p)
                for k, dt, sh in rows:
                    print(f"    {k:48s} {dt:5s} {sh}")
    total = 0
    for dp, _, fns in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(dp, fn)) for fn in fns if not fn.endswith(".gguf"))
    print(f"total under {args.out} (without .gguf): {total} bytes ({total / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
