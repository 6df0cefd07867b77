"""Writes tests/fixtures/tokenizer/gpt2_tiktoken.json: GPT-2 token ids from OpenAI's tiktoken.

Run from the repository root (deterministic: same inputs, same bytes out):

    scripts/reference/setup_venv.sh            # once; makes .venv-ref with tiktoken==0.7.0
    .venv-ref/bin/python scripts/reference/make_tokenizer_fixtures.py

No network is needed: tiktoken's own gpt2() definition (tiktoken_ext.openai_public) is called
with its file reader pointed at models/gpt2-tokenizer/{merges.txt,vocab.json}, so the ranks
come from tiktoken's data_gym_to_mergeable_bpe_ranks, the pattern is tiktoken's gpt2 pat_str,
and tiktoken's sha256 check proves the local files are OpenAI's encoder.json and vocab.bpe.

The output holds:
- "cases": texts and their ids. {"text", "ids", "allow_special"}: allow_special true is
  enc.encode(text, allowed_special="all"), false is enc.encode(text, disallowed_special=()).
  Cases with "hex" instead of "text" are byte strings that are not valid UTF-8, which tiktoken
  cannot take; their ids follow stac's documented rule (each byte of an ill-formed sequence is
  one character of the "other" class, [^\\s\\p{L}\\p{N}]): the bytes are mapped to private-use
  placeholders (also "other"), split with the `regex` module running tiktoken's pat_str, mapped
  back, and each piece is BPE'd by tiktoken's own encode_single_piece. That emulation is first
  checked against tiktoken's encode on every valid case that has no special token and no
  unassigned code point (where the regex module's Unicode version could differ); the script
  fails if it ever differs.
- "char_classes": the class tiktoken's regex gives every code point (surrogates excluded), as
  runs [first_code_point, class] with class L (\\p{L}), N (\\p{N}), S (\\s) or O (the rest). Each
  class is measured on tiktoken itself, not taken from a Unicode table: "a"+c is one regex piece
  iff c is L, "1"+c iff N, "!"+c iff O; S is none of the three. Whether they are one piece is
  read from encode_with_unstable, whose "stable" tokens are those before the last piece: none
  iff prefix+c is a single piece.
"""

import codecs
import hashlib
import importlib.metadata
import json
import os
import random
import sys
import unicodedata
from pathlib import Path

os.environ["TIKTOKEN_CACHE_DIR"] = ""  # read through tiktoken.load.read_file, never a cache

import regex  # noqa: E402  (a tiktoken dependency)
import tiktoken  # noqa: E402
import tiktoken.load  # noqa: E402
from tiktoken_ext import openai_public  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "models" / "gpt2-tokenizer"
OUT = ROOT / "tests" / "fixtures" / "tokenizer" / "gpt2_tiktoken.json"
LOCAL = {"vocab.bpe": DATA / "merges.txt", "encoder.json": DATA / "vocab.json"}


def read_local(blobpath: str) -> bytes:
    return LOCAL[blobpath.rsplit("/", 1)[1]].read_bytes()


def make_encoding() -> tiktoken.Encoding:
    tiktoken.load.read_file = read_local  # gpt2() asks for OpenAI's URLs; answer from the repo
    params = openai_public.gpt2()  # raises if the sha256 of either file is not OpenAI's
    return tiktoken.Encoding(**params)


ENC = make_encoding()
PAT = regex.compile(openai_public.gpt2()["pat_str"])
EOT = "<|endoftext|>"


# ---------------------------------------------------------------- hand-written corpus

PROSE = """\
It was the best of times, it was the worst of times; the engine, fed a prompt of many
kilobytes, had to split it into pieces before a single matrix was multiplied. "Why," asked
the reviewer, "does 'll split from we'll but not from WE'LL?" Because the pattern is
case-sensitive, and nobody at the time thought it mattered.

Dr. Smith's 3rd-floor lab (room 42B) opened at 9:30 a.m. on Mon., Jan. 1st, 2024 -- or was
it 2023? Either way: costs rose 12.5%, from $1,299.99 to $1,461.24 (see Fig. 7, p. 113).
E-mail: someone@example.com; URL: https://example.org/path?q=tokens&lang=en#frag.

   Indented line with three spaces.
\tTabbed line.
Trailing spaces here...    
Last line without newline"""

CODE_PY = '''\
def bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Merge the lowest-ranked adjacent pair until none is left."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], 1 << 30))
        if parts[best] + parts[best + 1] not in ranks:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return [ranks[p] for p in parts]


if __name__ == "__main__":
    print(bpe(b"hello", {b"he": 0, b"ll": 1, b"hell": 2, b"hello": 3}))  # -> [3]
'''

CODE_CPP = """\
#include <vector>
template <typename T>
static inline T clamp(T x, T lo, T hi) noexcept { return x < lo ? lo : (x > hi ? hi : x); }

int main(int argc, char** argv) {
\tstd::vector<int32_t> ids{50256, 198, 628};
\tfor (auto& id : ids) { id = clamp(id, 0, 50256); }  // x->y, a::b, i++, j--, k <<= 2;
\treturn argc > 1 && argv[1][0] == '-' ? 1 : 0;
}
"""

CODE_JSON = """\
{
  "name": "gpt2",
  "n_vocab": 50257,
  "special": {"<|endoftext|>": 50256},
  "floats": [0.0, -1.5e-3, 3.14159, 1E10],
  "nested": {"a": [true, false, null], "emoji": "\\ud83d\\ude00", "s": "tab\\tnewline\\n"}
}"""

HAND = [
    ("empty", ""),
    ("prose", PROSE),
    ("prose_crlf", PROSE.replace("\n", "\r\n")),
    ("code_python", CODE_PY),
    ("code_cpp", CODE_CPP),
    ("code_json", CODE_JSON),
    ("hello", "Hello, world!"),
    ("single_space", " "),
    ("single_letter", "a"),
    # contractions, every suffix in both cases; only lower-case ones are split off
    ("contractions_lower", "he's she'd I'm don't we'll I've you're"),
    ("contractions_upper", "HE'S SHE'D I'M DON'T WE'LL I'VE YOU'RE"),
    ("contractions_mixed", "He'S we'Ll WE'll You'Re I'Ve it'T"),
    ("contractions_bare", "'s 'S 'd 'D 'm 'M 't 'T 'll 'LL 'Ll 've 'VE 're 'RE"),
    ("contractions_glued", "'s'S'll'LL've're'd'm't"),
    ("contractions_odd", "''s ' s '' 'x 'sam 'llama 'reed 'vex rock 'n' roll it\u2019s"),
    ("apostrophe_digits", "'123 '90s the '80s"),
    # numbers
    ("digits", "0 1 12 123 1234 12345 1234567890 00000000000000000000"),
    ("numbers_punct", "3.14159 -2.5e-10 1,000,000 0x1F 0b1010 1_000 #1 No.5 v1.2.3"),
    ("numbers_mixed", "abc123def 12abc abc12 1a2b3c 2nd 3rd 4th"),
    ("numbers_unicode", "\u0661\u0662\u0663 \u0967\u0968\u0969 \u00bd \u2153 \u216b \u00b2\u00b3 \u2460\u2461 \uff11\uff12"),
    ("number_space_number", " 1 2 3  4   5"),
    # whitespace
    ("ws_spaces", "a b  c   d    e"),
    ("ws_tabs", "a\tb\t\tc \td\t e"),
    ("ws_newlines", "a\nb\n\nc\n\n\nd \ne\n f"),
    ("ws_crlf", "line one\r\nline two\r\n\r\nline four\r\n"),
    ("ws_cr", "a\rb\r\rc"),
    ("ws_trailing", "trailing   "),
    ("ws_trailing_newlines", "end\n\n\n"),
    ("ws_leading", "   leading"),
    ("ws_only", "   \t\n  "),
    ("ws_before_punct", "a  !  ?   .\t,\n;"),
    ("ws_before_digits", "x  1   22\t333"),
    ("ws_vt_ff", "a\x0bb\x0cc\x0b\x0cd"),
    ("ws_nbsp", "a\u00a0b a\u00a0\u00a0b a \u00a0b a\u00a0 b \u00a0"),
    ("ws_ideographic", "\u65e5\u672c\u3000\u8a9e \u3000\u3000x"),
    ("ws_unicode_spaces", "".join("a" + chr(c) + "b " for c in
                                  [0x85, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F])),
    ("ws_unicode_runs", "x\u2003\u2003y \u2028\u2029z\u0085\u0085\u0085w"),
    ("not_ws", "a\x1cb a\x1db a\x1eb a\x1fb a\u200bb a\ufeffb a\u180eb a\u2060b a\u00adb"),
    ("indent_code", "if x:\n    if y:\n        return 1\n    return 2\n"),
    # scripts
    ("cjk_chinese", "\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u5427\uff01"),
    ("cjk_japanese", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u3072\u3089\u304c\u306a\u3068\u30ab\u30bf\u30ab\u30ca\u3002\uff8a\uff9d\uff76\uff78"),
    ("cjk_korean", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4. \u1100\u1161\u11a8 (conjoining jamo)"),
    ("arabic", "\u0627\u0644\u0644\u063a\u0629 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u062c\u0645\u064a\u0644\u0629\u060c \u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627!"),
    ("hebrew", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd, \u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd"),
    ("devanagari", "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u0938\u0941\u0902\u0926\u0930 \u0939\u0948\u0964"),
    ("thai", "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07"),
    ("cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0401\u0436\u0438\u043a \u0438 \u0451\u043b\u043a\u0430."),
    ("greek", "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5, \u03c6\u03c9\u03c4\u03cc\u03c2 \u1f00\u03b3\u03ac\u03c0\u03b7"),
    ("combining_nfc_nfd", "caf\u00e9 cafe\u0301 na\u00efve nai\u0308ve \u00c5ngstr\u00f6m A\u030angstro\u0308m"),
    ("combining_stacked", "Z\u0351\u036b\u0343a\u0310\u0313l\u0300\u0301g\u036ao\u0489\u0489 text"),
    ("vietnamese", "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u: \u0111\u01b0\u1eddng ph\u1ed1"),
    ("mixed_scripts", "English \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u4e2d\u6587 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac"),
    ("fullwidth", "\uff28\uff45\uff4c\uff4c\uff4f\uff0c\u3000\uff37\uff4f\uff52\uff4c\uff44\uff01"),
    ("math_symbols", "\u2200x\u2208\u211d: x\u00b2 \u2265 0 \u21d2 \u221ax \u2260 \u2212\u221e; \u2211\u1d62 a\u1d62 \u2248 \u222b f dx"),
    ("astral_letters", "\U0001d400\U0001d401\U0001d402 \U00010330\U00010331 \U00020000\U0002a6d6"),
    # emoji
    ("emoji_basic", "I \u2764\ufe0f tokens \U0001f600\U0001f602\U0001f44d!"),
    ("emoji_skin_tone", "\U0001f44d\U0001f3fd \U0001f44b\U0001f3ff\U0001f44b\U0001f3fb"),
    ("emoji_zwj", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f3f3\ufe0f\u200d\U0001f308 \U0001f9d1\U0001f3fd\u200d\U0001f4bb"),
    ("emoji_flags", "\U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5 \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"),
    ("emoji_keycap", "1\ufe0f\u20e3 #\ufe0f\u20e3 *\ufe0f\u20e3"),
    ("emoji_glued", "hi\U0001f600there\U0001f600 \U0001f600 123\U0001f600"),
    # odd characters
    ("controls", "a\x00b\x01c\x07d\x1be\x7ff\u0080g\u009fh"),
    ("private_use_unassigned", "a\ue000b\U000f0000c\U0010fffdd\u0378e\U000e0080f\U00030000g"),
    ("bom_zw", "\ufeffstart a\u200cb\u200dc\u200ed\u200ff\u2066g\u2069"),
    ("replacement_char", "bad \ufffd char \ufffd\ufffd"),
    ("noncharacters", "x\ufdd0y\ufffez\uffff\U0001fffe"),
    # special token
    ("eot_middle", "Hello world" + EOT + "Goodbye"),
    ("eot_spaces", "first " + EOT + " second"),
    ("eot_newlines", "doc one.\n\n" + EOT + "\n\ndoc two."),
    ("eot_repeat", EOT + EOT + "x" + EOT),
    ("eot_only", EOT),
    ("eot_partial", "<|endoftext| <|endoftext <endoftext|> <|ENDOFTEXT|> <| endoftext |>"),
    ("eot_nested", "<|endof<|endoftext|>text|>"),
    # long pieces (exercise the heap BPE path)
    ("long_letter_run", "a" * 700),
    ("long_word_run", "abracadabra" * 60),
    ("long_digit_run", "".join(str(i % 10) for i in range(1500))),
    ("long_spaces", " " * 300 + "x" + " " * 300),
    ("long_punct", "=-" * 200 + "!?" * 100),
    ("long_cjk", "\u4e00\u4e8c\u4e09\u56db\u4e94\u516d\u4e03\u516b\u4e5d\u5341" * 40),
]


# ---------------------------------------------------------------- seeded random strings

def codepoints_by_category():
    cats = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        cats.setdefault(unicodedata.category(chr(cp)), []).append(cp)
    return cats


WHITE_SPACE = [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
               0x2029, 0x202F, 0x205F, 0x3000]
NEAR_SPACE = [0x1C, 0x1D, 0x1E, 0x1F, 0x180E, 0x200B, 0x2060, 0xFEFF, 0xAD]
EMOJI = ["\U0001f600", "\u2764\ufe0f", "\U0001f44d\U0001f3fd", "\U0001f1fa\U0001f1f8",
         "\U0001f468\u200d\U0001f469\u200d\U0001f467", "1\ufe0f\u20e3", "\U0001f3f3\ufe0f\u200d\U0001f308"]
PIECES = ["'s", "'S", "'t", "'ll", "'LL", "'ve", "'re", "'d", "'m", "'", " ", "  ", "\n", "\r\n",
          "\t", "the", " the", "The", " and", "ing", "tion", "123", " 42", ".", ",", "!", "?!",
          "...", "(", ")", "{", "}", "==", "->", "//", "#", "$", EOT]


def random_text(rng: random.Random, cats: dict) -> str:
    def one() -> str:
        r = rng.random()
        if r < 0.25:
            return rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                              " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\t\n\r")
        if r < 0.45:
            return rng.choice(PIECES)
        if r < 0.55:
            return chr(rng.choice(WHITE_SPACE + NEAR_SPACE))
        if r < 0.60:
            return rng.choice(EMOJI)
        cat = rng.choice(["Lu", "Ll", "Lt", "Lm", "Lo", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No",
                          "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "So",
                          "Zs", "Cc", "Cf", "Co", "Cn"])
        return chr(rng.choice(cats[cat]))
    return "".join(one() for _ in range(rng.randint(1, 24)))


# ---------------------------------------------------------------- invalid UTF-8

INVALID = [
    ("lone_continuation", b"abc\x80def"),
    ("lone_ff_fe", b"\xff\xfe hello \xff"),
    ("truncated_2byte", b"caf\xc3"),
    ("truncated_3byte_mid", b"euro \xe2\x82 sign"),
    ("truncated_4byte_end", b"emoji \xf0\x9f\x98"),
    ("overlong_slash", b"path\xc0\xafetc \xe0\x80\xaf"),
    ("surrogate_encoded", b"x\xed\xa0\x80y \xed\xbf\xbfz"),
    ("above_max", b"big \xf4\x90\x80\x80 \xf5\x80\x80\x80"),
    ("invalid_between_letters", b"a\xffb a \xffb a\xff b 1\xff2"),
    ("invalid_with_space_runs", b"x  \xff   \xfe\t\xfd\n"),
    ("invalid_after_apostrophe", b"it'\xffs we'll\xff"),
    ("valid_multibyte_then_invalid", "\u4e2d\u6587".encode() + b"\x80\x80" + "\U0001f600".encode() + b"\xf0\x9f"),
    ("latin1_text", "na\u00efve caf\u00e9 \u00fcber".encode("latin-1")),
    ("cesu8_emoji", b"\xed\xa0\xbd\xed\xb8\x80 ok"),
    # the bad byte's class decides the ids here: as "other" it takes the apostrophe along
    ("truncated_before_contraction", b"\xc3'the na\xe4\xb8'the"),
    ("cut_quote_before_contraction", b" \n\xe2\x80'the \xf0\x9f'thex"),
]


OTHER_PLACEHOLDERS = 0xF0000   # U+F0000..U+F00FF: private use (Co), class "other"
LETTER_PLACEHOLDERS = 0x20000  # U+20000..U+200FF: CJK ideographs (Lo), class L; only to show
                               # that the fixture tells the chosen rule from another one


def emulate(raw: bytes, base: int = OTHER_PLACEHOLDERS) -> list:
    """tiktoken's split + BPE on bytes: each ill-formed byte b becomes the placeholder base+b."""
    def placeholder(err):
        return "".join(chr(base + b) for b in err.object[err.start:err.end]), err.end
    codecs.register_error(f"stac_placeholder_{base:x}", placeholder)
    text = raw.decode("utf-8", errors=f"stac_placeholder_{base:x}")
    assert not any(base <= ord(ch) < base + 256 for ch in raw.decode("utf-8", errors="ignore"))
    ids = []
    for piece in PAT.findall(text):
        b = bytearray()
        for ch in piece:
            cp = ord(ch)
            b += bytes([cp - base]) if base <= cp < base + 256 else ch.encode()
        ids += ENC._encode_single_piece(bytes(b))
    return ids


# ---------------------------------------------------------------- code point classes

def measure_classes() -> list:
    core = ENC._core_bpe

    def joins(prefix: str, c: str) -> bool:
        # tokens of pieces before the last one; [] means prefix and c share the last piece
        return core.encode_with_unstable(prefix + c, set())[0] == []

    runs = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        got = [k for k, p in (("L", "a"), ("N", "1"), ("O", "!")) if joins(p, c)]
        assert len(got) <= 1, (hex(cp), got)
        cls = got[0] if got else "S"
        if not runs or runs[-1][1] != cls or runs[-1][2] != cp - 1:
            runs.append([cp, cls, cp])
        else:
            runs[-1][2] = cp
    return runs


def main() -> None:
    cats = codepoints_by_category()
    rng = random.Random(20240611)
    cases = []

    def add(name, text, allow_special=True):
        ids = (ENC.encode(text, allowed_special="all") if allow_special
               else ENC.encode(text, disallowed_special=()))
        cases.append({"name": name, "text": text, "ids": ids, "allow_special": allow_special})
        if (not allow_special or EOT not in text) and not regex.search(r"\p{Cn}", text):
            assert emulate(text.encode()) == ids, name  # the invalid-UTF-8 emulation is tiktoken's

    for name, text in HAND:
        add(name, text)
        if EOT in text:
            add(name + "/ordinary", text, allow_special=False)
    for i in range(400):
        text = random_text(rng, cats)
        add(f"random_{i:03d}", text)
        if EOT in text or i % 4 == 0:
            add(f"random_{i:03d}/ordinary", text, allow_special=False)
    assert any(emulate(raw) != emulate(raw, LETTER_PLACEHOLDERS) for _, raw in INVALID)
    for name, raw in INVALID:
        try:
            raw.decode("utf-8")
            raise AssertionError(f"{name} is valid UTF-8")
        except UnicodeDecodeError:
            pass
        cases.append({"name": "invalid_utf8/" + name, "hex": raw.hex(), "ids": emulate(raw),
                      "allow_special": False})

    runs = measure_classes()
    doc = {
        "tiktoken_version": importlib.metadata.version("tiktoken"),
        "regex_version": regex.__version__,
        "generator": "scripts/reference/make_tokenizer_fixtures.py",
        "encoding": "tiktoken_ext.openai_public.gpt2() on models/gpt2-tokenizer",
        "files_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in LOCAL.values()},
        "cases": cases,
        "char_classes": [[first, cls] for first, cls, _ in runs],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    # one case per line keeps diffs readable
    text = text.replace(',{"name":', ',\n{"name":').replace('"char_classes":', '\n"char_classes":')
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"{OUT.relative_to(ROOT)}: {len(cases)} cases, {len(runs)} class runs, "
          f"{OUT.stat().st_size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
