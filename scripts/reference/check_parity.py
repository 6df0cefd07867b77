#!/usr/bin/env python3
"""Forward-parity check of the stac binary against Hugging Face transformers on GPT-2-shaped
checkpoints of sizes and seeds the unit tests never saw.

    scripts/reference/setup_venv.sh                      # once
    .venv-ref/bin/python scripts/reference/check_parity.py --stac build/stac [--seeds 3]
        [--base-seed S] [--dtype f32|f16|bf16|random] [--keep DIR] [--tol 1e-4] [--fixtures]
    .venv-ref/bin/python scripts/reference/check_parity.py --dry-run   # no stac: transformers vs numpy

For each of --seeds random configs (n_layer 1-4, n_embd 32-256 with n_head dividing it,
n_positions 16-128, vocab 100-5000, activation gelu_new/gelu/relu, epsilon, n_inner, tied or
untied lm_head, and for tied models sometimes the "published" layout of OpenAI gpt2 on the Hub:
no "transformer." prefix plus legacy h.N.attn.bias/masked_bias buffers) it writes a random
checkpoint (save_pretrained, weights in --dtype), picks id sequences (length 1, a mid length,
n_positions - N and n_positions), and compares

    STAC logits --model DIR --ids 1,2,3                  -> {"logits": [[...]...], "greedy": [...], ...}
    STAC logits --model DIR --ids 1,2,3 --incremental    -> same JSON, computed through the KV cache
    STAC generate --model DIR --ids 1,2,3 --max-new-tokens N --json   -> {"new_ids": [...], ...}

with transformers (float32, eager attention, on the weights as rounded to the file dtype):
max |logit difference| over every position, the per-position argmax ("greedy"), and the greedy
continuation from model.generate(do_sample=False). Exits 1 if any max abs diff > --tol or any
continuation (or clear-cut argmax) differs, 2 on a stac error (crash, bad JSON, wrong shape).

Prompts whose greedy continuation in transformers passes a near-tie (top-2 logit gap < 1e-3)
are redrawn, so that a continuation mismatch always means a real difference; argmax mismatches
at positions with a gap < 2*tol are reported but not counted.

--dry-run runs no stac: it checks the transformers half instead against an independent float64
numpy forward that reads model.safetensors itself (the loading rules a C++ loader needs: strip
"transformer.", skip h.N.attn.bias / h.N.attn.masked_bias by name, lm_head.weight or tied wte,
Conv1D weights stored [in, out], F16/BF16 upcast). --fixtures also checks the committed
tests/fixtures/gpt2/* models against their reference.safetensors / reference.json.
The seeds used are printed so a failure can be rerun with --base-seed.
"""
import argparse
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_gpt2_fixtures as mk  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NEAR_TIE = 1e-3


# ---------------------------------------------------------------- random configs and models

def random_spec(seed, dtype):
    rng = random.Random(seed)
    n_embd = rng.randrange(32, 257, 8)
    heads = [h for h in range(2, 17) if n_embd % h == 0 and 4 <= n_embd // h <= 64]
    n_head = rng.choice(heads) if heads and rng.random() < 0.9 else 1  # one head: an edge case
    cfg = dict(
        n_layer=rng.randint(1, 4), n_embd=n_embd, n_head=n_head,
        n_positions=rng.randint(16, 128), vocab_size=rng.randint(100, 5000),
        activation_function=rng.choice(["gelu_new", "gelu", "relu"]),
        layer_norm_epsilon=rng.choice([1e-5, 1e-5, 1e-6]),
    )
    if rng.random() < 0.3:
        cfg["n_inner"] = rng.choice([2 * n_embd, 3 * n_embd + 8, n_embd])
    if rng.random() < 0.25:
        cfg["tie_word_embeddings"] = False
    if dtype == "random":
        dtype = rng.choice(["f32", "f16", "bf16"])
    layout = "published" if cfg.get("tie_word_embeddings", True) and rng.random() < 0.25 else "hf"
    return {"config": cfg, "dtype": dtype, "layout": layout}


def write_model(spec, seed, out_dir):
    model = mk.build_model(spec["config"], seed)
    if spec["layout"] == "hf":
        mk.save_hf(model, out_dir, spec["dtype"])
    else:
        mk.save_published(model, out_dir, spec["dtype"])
    ref, _ = mk.reference_model(out_dir)
    return ref


def pick_cases(ref, seed, n_new):
    """[(ids, n_new_or_0)], redrawing prompts whose greedy path passes a near-tie."""
    P, V = ref.config.n_positions, ref.config.vocab_size
    rng = torch.Generator().manual_seed(seed + 17)
    mid = int(torch.randint(2, max(3, P - n_new), (1,), generator=rng))
    plan = [(1, n_new), (mid, n_new), (P - n_new, n_new), (P, 0)]
    cases = []
    for T, n in plan:
        for attempt in range(10):
            ids = torch.randint(0, V, (T,), generator=rng).tolist()
            cont, margin = mk.greedy(ref, ids, n)
            if margin >= NEAR_TIE:
                break
        cases.append({"ids": ids, "n": n, "greedy": cont, "margin": margin, "redraws": attempt})
    return cases


# ---------------------------------------------------------------- independent numpy forward

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32,
             "I64": np.int64, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16}
LEGACY_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def read_safetensors(path):
    """{name: float64 array} from the raw file: 8-byte LE header size, JSON header, data."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=ST_DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = (info["dtype"], arr.astype(np.float64))
    return out


def load_numpy_gpt2(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    raw = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    w = {}
    for name, (dt, arr) in raw.items():
        if name.startswith("transformer."):
            name = name[len("transformer."):]
        if LEGACY_BUFFER.fullmatch(name):  # legacy causal-mask buffers: skipped by name
            continue
        w[name] = arr
    if "lm_head.weight" not in w:
        assert cfg.get("tie_word_embeddings", True)
        w["lm_head.weight"] = w["wte.weight"]
    return cfg, w


def np_forward(cfg, w, ids):
    E, H = cfg["n_embd"], cfg["n_head"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = cfg.get("activation_function", "gelu_new")
    erf = np.vectorize(math.erf)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def f(x):
        if act == "gelu_new":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        if act == "gelu":
            return 0.5 * x * (1 + erf(x / math.sqrt(2)))
        if act == "relu":
            return np.maximum(x, 0)
        raise ValueError(act)

    T = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    mask = np.tril(np.ones((T, T), dtype=bool))
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        qkv = ln(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D: [in, out]
        q, k, v = (qkv[:, j * E:(j + 1) * E].reshape(T, H, E // H).transpose(1, 0, 2) for j in range(3))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(E // H)
        s = np.where(mask, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(T, E)
        x = x + a @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        hdn = f(ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + hdn @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    return ln(x, "ln_f") @ w["lm_head.weight"].T


# ---------------------------------------------------------------- running stac

class StacError(Exception):
    pass


def run_stac(stac, args, timeout):
    cmd = [stac] + args
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StacError(f"timeout after {timeout}s: {' '.join(cmd)}")
    if p.returncode != 0:
        raise StacError(f"exit {p.returncode}: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    out = p.stdout.strip()
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        # tolerate log lines before the JSON object
        i = out.find("\n{")
        try:
            return json.loads(out[i + 1:] if i >= 0 else out)
        except json.JSONDecodeError:
            raise StacError(f"no JSON on stdout of: {' '.join(cmd)}\n{out[:500]}")


def stac_logits(stac, model_dir, ids, incremental, timeout):
    args = ["logits", "--model", model_dir, "--ids", ",".join(map(str, ids))]
    if incremental:
        args.append("--incremental")
    j = run_stac(stac, args, timeout)
    if "logits" not in j:
        raise StacError(f"no 'logits' key in stac output (keys {sorted(j)})")
    logits = np.asarray(j["logits"], dtype=np.float64)
    return logits, j.get("greedy")


def stac_generate(stac, model_dir, ids, n, timeout):
    j = run_stac(stac, ["generate", "--model", model_dir, "--ids", ",".join(map(str, ids)),
                        "--max-new-tokens", str(n), "--json"], timeout)
    if "new_ids" not in j:
        raise StacError(f"no 'new_ids' key in stac generate output (keys {sorted(j)})")
    return [int(t) for t in j["new_ids"]]


# ---------------------------------------------------------------- comparison

def compare_logits(ref, got, label, tol):
    """-> (max abs diff, #clear-cut argmax mismatches, #near-tie argmax mismatches, note)"""
    if got.shape != ref.shape:
        raise StacError(f"{label}: logits shape {list(got.shape)} != expected {list(ref.shape)}")
    if not np.all(np.isfinite(got)):
        return float("inf"), 0, 0, "non-finite"
    d = float(np.max(np.abs(got - ref)))
    top = np.sort(ref, axis=-1)[:, -2:]
    gap = top[:, 1] - top[:, 0]
    mism = np.argmax(got, -1) != np.argmax(ref, -1)
    return d, int(np.sum(mism & (gap >= 2 * tol))), int(np.sum(mism & (gap < 2 * tol))), ""


def check_greedy_field(greedy, ref_logits, tol):
    """stac's "greedy" list must be the argmax of its own logits; compared to the reference
    argmax, counting only clear-cut positions. -> (#clear mismatches, note)"""
    if greedy is None:
        return 0, "no greedy key"
    greedy = np.asarray(greedy)
    if greedy.shape != (ref_logits.shape[0],):
        return 1, f"greedy has {greedy.shape[0] if greedy.ndim else '?'} ids, want {ref_logits.shape[0]}"
    top = np.sort(ref_logits, axis=-1)[:, -2:]
    gap = top[:, 1] - top[:, 0]
    mism = greedy != np.argmax(ref_logits, -1)
    return int(np.sum(mism & (gap >= 2 * tol))), ""


def fmt(d):
    return "-" if d is None else f"{d:.2e}"


def describe(spec, seed):
    c = spec["config"]
    s = (f"seed={seed} L={c['n_layer']} E={c['n_embd']} H={c['n_head']} P={c['n_positions']} "
         f"V={c['vocab_size']} {c['activation_function']} eps={c.get('layer_norm_epsilon', 1e-5):g} "
         f"{spec['dtype']} {spec['layout']}")
    if c.get("n_inner"):
        s += f" inner={c['n_inner']}"
    if c.get("tie_word_embeddings") is False:
        s += " untied"
    return s


def check_model(args, model_dir, ref, cases, rows, title):
    """Runs stac (or numpy in --dry-run) on `cases` of the model in `model_dir`; appends rows."""
    print(f"\n## {title}\n   {model_dir}")
    print(f"   {'T':>4} {'N':>2}  {'full':>9} {'incr':>9} {'argmax':>7} {'generate':>9}  note")
    np_model = load_numpy_gpt2(model_dir) if args.dry_run else None
    for c in cases:
        ids, n = c["ids"], c["n"]
        ref_logits = c["logits"].double().numpy()
        row = {"model": title, "T": len(ids), "n": n, "full": None, "incr": None,
               "argmax_bad": 0, "gen_ok": None, "note": [], "error": None}
        if c.get("redraws"):
            row["note"].append(f"prompt redrawn {c['redraws']}x (near-tie)")
        try:
            if args.dry_run:
                got = np_forward(np_model[0], np_model[1], ids)
                row["full"], bad, tie, _ = compare_logits(ref_logits, got, "numpy", args.tol)
                row["argmax_bad"] += bad
                if tie:
                    row["note"].append(f"{tie} near-tie argmax")
                row["note"].append("numpy f64 vs transformers f32")
            else:
                t0 = time.time()
                for mode in ("full", "incr"):
                    got, greedy = stac_logits(args.stac, model_dir, ids, mode == "incr", args.timeout)
                    row[mode], bad, tie, note = compare_logits(ref_logits, got, mode, args.tol)
                    gbad, gnote = check_greedy_field(greedy, ref_logits, args.tol)
                    row["argmax_bad"] += bad + gbad
                    for s in (note, gnote, f"{tie} near-tie argmax ({mode})" if tie else ""):
                        if s:
                            row["note"].append(s)
                if n > 0:
                    new = stac_generate(args.stac, model_dir, ids, n, args.timeout)
                    row["gen_ok"] = new == c["greedy"]
                    if not row["gen_ok"]:
                        row["note"].append(f"generate {new} != transformers {c['greedy']}")
                row["note"].append(f"{time.time() - t0:.1f}s")
        except StacError as e:
            row["error"] = str(e)
            row["note"].append("STAC ERROR")
        rows.append(row)
        gen = "-" if row["gen_ok"] is None else ("same" if row["gen_ok"] else "DIFF")
        print(f"   {row['T']:>4} {n:>2}  {fmt(row['full']):>9} {fmt(row['incr']):>9} "
              f"{row['argmax_bad']:>7} {gen:>9}  {'; '.join(row['note'])}")
        if row["error"]:
            print("      " + row["error"].replace("\n", "\n      "))
        if args.keep and not args.dry_run and row["error"] is None and (
                (row["full"] or 0) > args.tol or row["gen_ok"] is False):
            with open(os.path.join(model_dir, f"failed_T{len(ids)}.json"), "w") as f:
                json.dump({"ids": ids, "greedy": c["greedy"]}, f)


def fixture_cases(model_dir):
    import safetensors.torch
    t = safetensors.torch.load_file(os.path.join(model_dir, "reference.safetensors"))
    with open(os.path.join(model_dir, "reference.json")) as f:
        meta = json.load(f)
    cases = []
    for k, c in enumerate(meta["cases"]):
        assert t[f"case{k}.ids"].tolist() == c["ids"]
        cases.append({"ids": c["ids"], "n": c["max_new_tokens"], "greedy": c["greedy"],
                      "logits": t[f"case{k}.logits"]})
    return cases, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stac", default=os.path.join(ROOT, "build", "stac"), help="stac binary")
    ap.add_argument("--seeds", type=int, default=3, help="number of random models")
    ap.add_argument("--base-seed", type=int, default=None,
                    help="first model seed (default: random, printed); model i uses base+i")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16", "random"],
                    help="dtype the weights are stored in (compute is always f32)")
    ap.add_argument("--keep", metavar="DIR", help="write the models here and keep them")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs logit difference allowed")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per stac call")
    ap.add_argument("--fixtures", action="store_true",
                    help="also check tests/fixtures/gpt2/* against their stored references")
    ap.add_argument("--dry-run", action="store_true",
                    help="run no stac; check transformers against an independent numpy forward")
    args = ap.parse_args()
    mk.setup_torch()
    if not args.dry_run:
        args.stac = os.path.abspath(args.stac)
        if not os.access(args.stac, os.X_OK):
            sys.exit(f"no executable stac at {args.stac} (build it, or use --dry-run)")
    if args.base_seed is None:
        args.base_seed = random.SystemRandom().randrange(10_000, 1_000_000)
    print(f"check_parity: seeds {args.base_seed}..{args.base_seed + args.seeds - 1}, dtype {args.dtype}, "
          f"tol {args.tol:g}, transformers {mk.transformers.__version__}, torch {torch.__version__}"
          + (", DRY RUN (numpy instead of stac)" if args.dry_run else f", stac {args.stac}"))

    rows = []
    tmp = None
    root = args.keep
    if root:
        os.makedirs(root, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="stac-parity-")
        root = tmp.name
    try:
        if args.fixtures:
            fx_root = os.path.join(ROOT, "tests", "fixtures", "gpt2")
            for name in sorted(os.listdir(fx_root)):
                d = os.path.join(fx_root, name)
                if os.path.isfile(os.path.join(d, "reference.json")):
                    cases, meta = fixture_cases(d)
                    check_model(args, d, None, cases, rows, f"fixture {name}")
        for i in range(args.seeds):
            seed = args.base_seed + i
            spec = random_spec(seed, args.dtype)
            model_dir = os.path.join(root, f"gpt2-seed{seed}")
            ref = write_model(spec, seed, model_dir)
            cases = pick_cases(ref, seed, args.max_new_tokens)
            for c in cases:
                c["logits"] = mk.forward_logits(ref, c["ids"])
            if args.keep:
                with open(os.path.join(model_dir, "parity_cases.json"), "w") as f:
                    json.dump({"seed": seed, "spec": spec, "cases": [
                        {"ids": c["ids"], "max_new_tokens": c["n"], "greedy": c["greedy"]} for c in cases]}, f)
            check_model(args, model_dir, ref, cases, rows, describe(spec, seed))
    finally:
        if tmp:
            tmp.cleanup()

    errors = [r for r in rows if r["error"]]
    over = [r for r in rows if any(r[m] is not None and not r[m] <= args.tol for m in ("full", "incr"))]
    gen_bad = [r for r in rows if r["gen_ok"] is False]
    arg_bad = [r for r in rows if r["argmax_bad"]]
    worst = max([r[m] for r in rows for m in ("full", "incr") if r[m] is not None] or [float("nan")])
    print(f"\n{len(rows)} cases; worst max abs diff {worst:.3e} (tol {args.tol:g}); "
          f"{len(over)} over tol, {len(gen_bad)} continuation mismatches, "
          f"{len(arg_bad)} with clear-cut argmax mismatches, {len(errors)} stac errors")
    if errors:
        sys.exit(2)
    if over or gen_bad or arg_bad:
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
