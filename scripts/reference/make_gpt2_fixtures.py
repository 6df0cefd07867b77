#!/usr/bin/env python3
"""Writes the tiny GPT-2 reference fixtures under tests/fixtures/gpt2/ from Hugging Face transformers.

Run it from anywhere, in the reference virtual environment:

    scripts/reference/setup_venv.sh                        # once: makes .venv-ref (torch 1.13, transformers 4.40.2)
    .venv-ref/bin/python scripts/reference/make_gpt2_fixtures.py [--out tests/fixtures/gpt2] [--seed 1234]

It is deterministic: the same seed and the same torch/transformers versions give the same files.

For each model it writes a directory holding a checkpoint plus what transformers computes for it:

    <model>/config.json              GPT2Config as transformers writes it
    <model>/generation_config.json   as save_pretrained writes it (absent for the "published" layout)
    <model>/model.safetensors        the weights (layout and dtype depend on the model, see MODELS)
    <model>/reference.safetensors    case{k}.ids (I32 [T]), case{k}.logits (F32 [T, vocab])
    <model>/reference.json           versions, seed, short config, and per case the ids and the
                                     greedy continuation from model.generate(do_sample=False)

Weights are random but deliberately far from HF's init (std 0.02), which would give tiny,
near-uniform logits: linear weights are redrawn with std 1.5/sqrt(fan_in), embeddings with
std 2/sqrt(n_embd), LayerNorm weights 1 +- 0.3, every bias nonzero (see random_weights_);
attention is sharp and the greedy continuations vary (checked: seeds whose continuations
collapse onto one token, or whose argmax has a near-tie, are skipped).

Reference logits are always computed in float32 by transformers' eager ("plain math")
attention, on a model loaded back from the written directory with torch_dtype=float32, i.e. on
exactly the f16/bf16-rounded weights that a loader upcasting the file to f32 sees.

check_parity.py imports the helpers here (random_weights_, reference_model, ...).
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys

import torch

os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

GENERATOR = "scripts/reference/make_gpt2_fixtures.py"
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

# name -> settings. "layout": "hf" = save_pretrained (names prefixed "transformer.", lm_head only
# when untied); "published" = the layout of OpenAI gpt2 / distilgpt2 model.safetensors on the Hub
# (no prefix, no lm_head, legacy h.N.attn.bias / h.N.attn.masked_bias buffers), written directly.
MODELS = {
    "tiny-gelu-f32": dict(
        config=dict(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=1000,
                    activation_function="gelu_new"),
        dtype="f32", layout="hf", lengths=[1, 7, 64, 30, 56]),
    "tiny-relu-f16": dict(
        config=dict(n_layer=3, n_embd=48, n_head=6, n_positions=32, vocab_size=512,
                    activation_function="relu", layer_norm_epsilon=1e-6, n_inner=96),
        dtype="f16", layout="hf", lengths=[1, 7, 32, 19, 24]),
    "tiny-gelu-bf16-published": dict(
        config=dict(n_layer=2, n_embd=32, n_head=2, n_positions=48, vocab_size=300,
                    activation_function="gelu"),
        dtype="bf16", layout="published", lengths=[1, 7, 48, 23, 40]),
    "tiny-untied-f32": dict(
        config=dict(n_layer=1, n_embd=32, n_head=4, n_positions=32, vocab_size=200,
                    activation_function="gelu_new", tie_word_embeddings=False),
        dtype="f32", layout="hf", lengths=[1, 7, 32, 15, 24]),
}
MAX_NEW_TOKENS = 8
MIN_MARGIN = 1e-3  # smallest accepted top-2 logit gap (10x the parity tolerance)


def setup_torch():
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # bit-reproducible reductions
    transformers.logging.set_verbosity_error()


def make_config(**kw):
    """GPT2Config (defaults otherwise; dropout is off in eval()) with eager attention."""
    cfg = GPT2Config(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def random_weights_(model, gen, gain=1.5, emb=2.0):
    """Redraws every parameter of a GPT2LMHeadModel in place from torch.Generator `gen`:
    Conv1D / lm_head weights N(0, gain/sqrt(fan_in)), wte/wpe N(0, emb/sqrt(n_embd)) (so tied
    logits have std ~emb whatever the width), biases N(0, 0.1), LayerNorm weights U(0.7, 1.3).
    The scales are a compromise: sharp attention (score std ~gain^2) and varied greedy
    continuations, yet float32 rounding in transformers stays ~1e-5 from exact (float64) up to
    n_layer 4, n_embd 256, n_positions 128, vocab 5000, well inside the 1e-4 parity tolerance."""
    params = dict(model.named_parameters())
    n_embd = model.config.n_embd
    for name in sorted(params):
        p = params[name]
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            new = 1.0 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.3
        elif name.endswith(".bias"):
            new = torch.randn(p.shape, generator=gen) * 0.1
        elif name.endswith(("wte.weight", "wpe.weight")):
            new = torch.randn(p.shape, generator=gen) * (emb / math.sqrt(n_embd))
        elif name == "lm_head.weight":  # nn.Linear [vocab, n_embd] (only here when untied)
            new = torch.randn(p.shape, generator=gen) * (emb / math.sqrt(p.shape[1]))
        else:  # Conv1D weight [in, out]
            new = torch.randn(p.shape, generator=gen) * (gain / math.sqrt(p.shape[0]))
        p.data.copy_(new.to(p.dtype))


def build_model(config_kw, seed):
    """A random GPT2LMHeadModel (f32, eval) with non-trivial weights, deterministic in `seed`."""
    torch.manual_seed(seed)
    cfg = make_config(**config_kw)
    model = GPT2LMHeadModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    random_weights_(model, gen)
    return model


def save_hf(model, out_dir, dtype):
    """save_pretrained(safe_serialization=True) with the weights cast to `dtype` ("f32"/"f16"/"bf16")."""
    m = copy.deepcopy(model).to(DTYPES[dtype])
    m.save_pretrained(out_dir, safe_serialization=True)


def save_published(model, out_dir, dtype):
    """The layout OpenAI gpt2 / distilgpt2 have on the Hub: no "transformer." prefix, no lm_head
    (tied), legacy per-block causal-mask buffers h.N.attn.bias (F32 [1,1,P,P], lower-triangular
    ones) and h.N.attn.masked_bias (F32 scalar, -1e4). Weights in `dtype`, buffers stay F32 as in
    the published files. Written with the safetensors package, metadata {"format": "pt"}."""
    cfg = model.config
    assert cfg.tie_word_embeddings
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for name, t in model.transformer.state_dict().items():
        tensors[name] = t.detach().to(DTYPES[dtype]).contiguous().clone()
    P = cfg.n_positions
    for i in range(cfg.n_layer):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(P, P, dtype=torch.float32)).view(1, 1, P, P).contiguous()
        tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4, dtype=torch.float32)
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    # config.json shaped like the published ones: architectures, model_type, n_ctx (legacy alias of
    # n_positions) and no torch_dtype (gpt2's config.json has none: the dtype is in the file).
    d = cfg.to_diff_dict()
    d.pop("torch_dtype", None)
    d.pop("_attn_implementation", None)
    d["architectures"] = ["GPT2LMHeadModel"]
    d["n_ctx"] = cfg.n_positions
    d.pop("transformers_version", None)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dict(sorted(d.items())), f, indent=2)
        f.write("\n")


def reference_model(model_dir):
    """Loads `model_dir` back with transformers in float32, eager attention, eval mode; checks
    that every weight came from the file."""
    model, info = GPT2LMHeadModel.from_pretrained(
        model_dir, torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"] or info["error_msgs"]:
        raise RuntimeError(f"{model_dir}: loading info {info}")
    model.eval()
    assert model.config._attn_implementation == "eager"
    return model, info


def forward_logits(model, ids):
    """Logits [T, vocab] (f32) at every position of one batched forward."""
    out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float().contiguous()


def top2_margin(logits):
    """Smallest gap between the largest and second largest logit over the rows of [T, vocab]."""
    top = logits.topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def greedy(model, ids, n):
    """N greedy next ids from model.generate(do_sample=False), cross-checked against a plain
    argmax loop over full forwards (no KV cache). Returns (ids, smallest top-2 logit gap seen
    along the way; inf when n == 0)."""
    if n <= 0:
        return [], float("inf")
    x = torch.tensor([ids], dtype=torch.long)
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, num_beams=1,
                         max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
    new = out[0, len(ids):].tolist()
    seq, margin = list(ids), float("inf")
    for _ in range(n):
        last = forward_logits(model, seq)[-1]
        margin = min(margin, top2_margin(last))
        seq.append(int(last.argmax()))
    if seq[len(ids):] != new:
        print(f"  note: generate {new} != full-forward argmax {seq[len(ids):]}", file=sys.stderr)
    assert len(new) == n, new
    return new, margin


def short_config(cfg, dtype, layout):
    return {
        "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
        "n_positions": cfg.n_positions, "vocab_size": cfg.vocab_size,
        "n_inner": cfg.n_inner, "activation_function": cfg.activation_function,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "weights_dtype": dtype, "layout": layout,
    }


def make_one(name, spec, out_root, seed):
    out_dir = os.path.join(out_root, name)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    model = build_model(spec["config"], seed)
    if spec["layout"] == "hf":
        save_hf(model, out_dir, spec["dtype"])
    else:
        save_published(model, out_dir, spec["dtype"])

    ref, info = reference_model(out_dir)
    # transformers 4.40 keeps its own causal mask (a bool, non-persistent buffer) and never loads
    # h.N.attn.bias / masked_bias from a file: they are dropped from the unexpected keys by name.
    assert ref.transformer.h[0].attn.bias.dtype == torch.bool
    # The reloaded weights must be exactly the in-memory ones rounded to the file dtype.
    want = model.state_dict()
    for k, v in ref.state_dict().items():
        if k in want and v.is_floating_point() and k.endswith(("weight", "bias")) and ".attn.bias" not in k:
            exp = want[k].to(DTYPES[spec["dtype"]]).float()
            assert torch.equal(v, exp), k

    cfg = ref.config
    gen = torch.Generator().manual_seed(seed + 1)
    tensors, cases = {}, []
    for k, T in enumerate(spec["lengths"]):
        ids = torch.randint(0, cfg.vocab_size, (T,), generator=gen).tolist()
        logits = forward_logits(ref, ids)
        n = min(MAX_NEW_TOKENS, cfg.n_positions - T)
        cont, margin = greedy(ref, ids, n)
        # the first greedy token is the argmax of the last-position logits
        if cont:
            assert cont[0] == int(logits[-1].argmax())
        tensors[f"case{k}.ids"] = torch.tensor(ids, dtype=torch.int32)
        tensors[f"case{k}.logits"] = logits
        cases.append({"ids": ids, "max_new_tokens": n, "greedy": cont,
                      "argmax_min_margin": round(top2_margin(logits), 6),
                      "greedy_min_margin": round(margin, 6) if cont else None})
    safetensors.torch.save_file(tensors, os.path.join(out_dir, "reference.safetensors"),
                                metadata={"format": "pt"})
    meta = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "safetensors_version": safetensors.__version__,
        "generator": GENERATOR,
        "seed": seed,
        "config": short_config(cfg, spec["dtype"], spec["layout"]),
        "attn_implementation": "eager",
        "compute_dtype": "f32",
        "unused_keys_on_load": sorted(info["unexpected_keys"]),
        "cases": cases,
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        f.write(dumps_compact(meta) + "\n")
    return out_dir, cases


def dumps_compact(obj, indent=1, level=0):
    """json.dumps with indentation, but lists of scalars kept on one line."""
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps_compact(v, indent, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [inner + dumps_compact(v, indent, level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj)


def describe_safetensors(path):
    with safetensors.safe_open(path, framework="pt") as f:
        meta = f.metadata()
        rows = []
        for k in f.keys():
            sl = f.get_slice(k)
            rows.append((k, sl.get_dtype(), sl.get_shape()))
    return meta, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "gpt2"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--only", nargs="*", help="model names to (re)make; default all")
    ap.add_argument("--quiet", action="store_true", help="do not print the tensor listings")
    args = ap.parse_args()
    setup_torch()
    os.makedirs(args.out, exist_ok=True)
    for i, (name, spec) in enumerate(MODELS.items()):
        if args.only and name not in args.only:
            continue
        # Models whose greedy continuations collapse onto one repeated token make a weak test, and
        # near-ties make greedy/argmax comparisons flaky: try the next seed (deterministically)
        # until every continuation has >= 4 distinct ids and every argmax (at every position and
        # every greedy step) beats the runner-up by >= MIN_MARGIN.
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
            print(f"  {fn:24s} {os.path.getsize(p):9d} bytes")
            if fn.endswith(".safetensors") and not args.quiet:
                meta, rows = describe_safetensors(p)
                print(f"    metadata {meta}")
                for k, dt, sh in rows:
                    print(f"    {k:36s} {dt:5s} {sh}")
    total = 0
    for dp, _, fns in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(dp, fn)) for fn in fns)
    print(f"total under {args.out}: {total} bytes ({total / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
