#!/usr/bin/env python3
"""PyTorch eager on the same shapes as `stac bench`, for the side-by-side in docs/PERFORMANCE.md.

Runs transformers' GPT2LMHeadModel (random weights, f32, eager attention) with torch's threads set
to each count asked, and measures what `stac bench` measures, named the same way:
  ppN: N random token ids in one forward from an empty cache, logits for the last position only
       (the LM head is applied to the last hidden state, as stac does);
  tgN: N single-token forwards from an empty cache through past_key_values, logits every step.
Warm-up runs, then timed repeats; median, min and max tokens/s. JSON on stdout (or --json FILE).

Usage: python3 scripts/bench/bench_pytorch.py [--shape gpt2|distilgpt2] [--threads-list 1,2]
           [--tests pp128,pp512,tg128] [--repeats 5] [--warmup 1] [--json FILE]
It re-runs itself in the reference venv (scripts/reference/setup_venv.sh: Debian's python3-torch
1.13 + transformers 4.40.2) with OpenBLAS first on LD_LIBRARY_PATH (Debian's torch calls
libblas.so.3; the default reference BLAS is not what anyone would benchmark), as the bundled
model's training script does.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = ROOT / ".venv-ref" / "bin" / "python"
OPENBLAS_DIRS = ["/usr/lib/x86_64-linux-gnu/openblas-openmp", "/usr/lib/x86_64-linux-gnu/openblas-pthread"]


def _reexec() -> None:
    if os.environ.get("STAC_BENCH_CHILD") == "1":
        return
    env = dict(os.environ, STAC_BENCH_CHILD="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    if not VENV_PY.exists():
        subprocess.run([str(ROOT / "scripts/reference/setup_venv.sh")], check=True, stdout=subprocess.DEVNULL)
    blas = next((d for d in OPENBLAS_DIRS if Path(d, "libblas.so.3").exists()), None)
    if blas is None and Path("/usr/bin/apt-get").exists():
        subprocess.run(["apt-get", "install", "-y", "-qq", "libopenblas0-openmp"], check=True, stdout=subprocess.DEVNULL)
        blas = next((d for d in OPENBLAS_DIRS if Path(d, "libblas.so.3").exists()), None)
    if blas:
        env["LD_LIBRARY_PATH"] = blas + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["STAC_BENCH_BLAS"] = blas
    os.execvpe(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]], env)


if __name__ == "__main__":
    _reexec()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="gpt2", choices=["gpt2", "distilgpt2"])
    ap.add_argument("--threads-list", default="1,2")
    ap.add_argument("--tests", default="pp128,pp512,tg128")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    cfg = GPT2Config(n_layer=12 if a.shape == "gpt2" else 6, attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    gen = torch.Generator().manual_seed(a.seed)
    results = []
    for threads in [int(t) for t in a.threads_list.split(",")]:
        torch.set_num_threads(threads)
        for test in a.tests.split(","):
            kind, n = test[:2], int(test[2:])
            ids = torch.randint(0, cfg.vocab_size, (1, n), generator=gen)

            def once() -> None:
                with torch.inference_mode():
                    if kind == "pp":
                        h = model.transformer(ids, use_cache=True).last_hidden_state
                        model.lm_head(h[:, -1:, :])
                    else:
                        past = None
                        for i in range(n):
                            out = model(ids[:, i:i + 1], past_key_values=past, use_cache=True)
                            past = out.past_key_values

            for _ in range(a.warmup):
                once()
            secs = []
            while len(secs) < a.repeats and (not secs or sum(secs) < a.max_seconds):
                t0 = time.perf_counter()
                once()
                secs.append(time.perf_counter() - t0)
            med = statistics.median(secs)
            r = {"run": "pytorch-f32", "threads": threads, "test": test, "n_tokens": n, "repeats": len(secs),
                 "warmup": a.warmup,
                 "tokens_per_s": {"median": n / med, "min": n / max(secs), "max": n / min(secs)},
                 "seconds": {"median": med, "min": min(secs), "max": max(secs)}}
            results.append(r)
            print(f"pytorch-f32 {threads} {test:>6} {n / med:10.2f} t/s (min {n / max(secs):.2f}, max {n / min(secs):.2f}, "
                  f"{len(secs)} runs)", file=sys.stderr)
    out = {"bench": "scripts/bench/bench_pytorch.py", "shape": a.shape, "parameters": sum(p.numel() for p in model.parameters()),
           "torch": torch.__version__, "transformers": transformers.__version__,
           "blas": os.environ.get("STAC_BENCH_BLAS", "libblas.so.3 as installed"), "machine": platform.processor(),
           "results": results}
    text = json.dumps(out, indent=2)
    if a.json:
        Path(a.json).write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
