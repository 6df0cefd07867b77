"""The bundled model's corpus: English text from Debian packages, cleaned, deduplicated, split.

Sources (installed with apt-get when missing, see PACKAGES):
- fortune cookie files of `fortunes` and `fortunes-min` (/usr/share/games/fortunes/*, entries
  separated by lines holding one '%'); the offensive set (`fortunes-off`) is not used, and
  neither are files that are not English prose (FORTUNE_SKIP);
- Ambrose Bierce's "The Devil's Dictionary" (`dict-devil`) and the Jargon File's lexicon
  (`dict-jargon`), dictd databases: `NAME.index` lines are `headword TAB offset TAB length`
  (base64 numbers) into the gzip-compressed `NAME.dict.dz`.

Every document is turned into one string without blank lines: hard-wrapped prose is unwrapped
into one line per paragraph (so a chat reply, which ends at the first newline, can hold a
whole fortune), verse and dialogue keep their line breaks, a fortune's "-- Author" attribution
becomes its last line. Documents are joined with a blank line ("\\n\\n") both in the training
stream and in the held-out text, so no special token is needed anywhere.

The split is by document and depends only on the document's text (sha256 of its normalised
form), so it does not change when files are read in another order or a package gains entries.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import re
import subprocess
import textwrap
import unicodedata
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ["fortunes", "fortunes-min", "dict-devil", "dict-jargon"]
FORTUNE_DIR = Path("/usr/share/games/fortunes")
DICT_DIR = Path("/usr/share/dictd")
# Not English prose: ASCII art, a translation exercise, Zippy's all-caps non sequiturs, IRC logs.
FORTUNE_SKIP = {"art", "ascii-art", "translate-me", "zippy", "knghtbrd"}
# Licenses as stated by each package's /usr/share/doc/PKG/copyright.
LICENSES = {
    "fortunes": "BSD-3-Clause (fortune-mod, University of California); cookie files as collected there",
    "fortunes-min": "BSD-3-Clause (same source package as fortunes)",
    "dict-devil": "public domain (Bierce, 1911; Internet Wiretap edition 1993)",
    "dict-jargon": "public domain (The Jargon File 4.4.7); Debian packaging GPL-2+",
}

HELDOUT_PER_MILLE = 30  # ~3% of documents: keeps models/bundled/heldout.txt under ~150 KB


@dataclass
class Doc:
    source: str  # "fortunes:computers", "devil", "jargon"
    text: str  # cleaned, no blank lines, no trailing newline
    body: str = ""  # fortunes: the text without the attribution; dicts: the definition alone
    attribution: str = ""  # fortunes: "Oscar Wilde"
    headword: str = ""  # dicts: "love", "benchmark"
    qa: tuple[str, str] | None = None  # fortunes of the form "Q: ...\nA: ..."


# ---------------------------------------------------------------- packages


def apt_install(packages: list[str]) -> None:
    """apt-get install (through sudo when not root); runs apt-get update first if that fails,
    as it does on a fresh image without package lists."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    cmd = sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(cmd, check=True, env=env)


def ensure_packages(log=print) -> dict[str, str]:
    """Installs missing PACKAGES with apt-get; returns {package: version} from dpkg-query."""

    def versions() -> dict[str, str]:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Status}\n", *PACKAGES],
                             capture_output=True, text=True).stdout
        v = {}
        for line in out.splitlines():
            name, ver, status = line.split("\t")
            if status.endswith(" installed"):
                v[name] = ver
        return v

    have = versions()
    missing = [p for p in PACKAGES if p not in have]
    if missing:
        log(f"installing {' '.join(missing)} with apt-get (needs root)")
        apt_install(missing)
        have = versions()
    missing = [p for p in PACKAGES if p not in have]
    if missing:
        raise SystemExit(f"corpus: packages not installed after apt-get: {' '.join(missing)}")
    return {p: have[p] for p in PACKAGES}


# ---------------------------------------------------------------- text clean-up

_TRANSLATE = str.maketrans({
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u00b4": "'",
    "\u2014": "--", "\u2013": "-", "\u2026": "...", "\u00a0": " ", "\u2122": "(TM)", "\u00ad": "",
})
_SPEAKER = re.compile(r"^(?:[A-Z][\w.'-]*(?: [A-Z][\w.'-]*){0,3}|Q|A)\s*:\s")  # "Kirk: ", "Q: "


def overstrike(line: str) -> str:
    """What a terminal shows for a line with backspaces: "____\\b\\b\\b\\bonly" and "_\\bo" are
    underlined text, "o\\bo" bold; an underscore never hides a letter."""
    buf: list[str] = []
    pos = 0
    for c in line:
        if c == "\b":
            pos = max(0, pos - 1)
            continue
        if pos < len(buf):
            if c != "_":
                buf[pos] = c
        else:
            buf.append(c)
        pos += 1
    return "".join(buf)


def normalise_chars(s: str) -> str:
    if "\b" in s:
        s = "\n".join(overstrike(l) for l in s.split("\n"))
    s = unicodedata.normalize("NFC", s).translate(_TRANSLATE)
    return "".join(c for c in s if c in "\n\t" or unicodedata.category(c)[0] != "C")


def unwrap(lines: list[str], wrap_min: int = 50) -> list[str]:
    """Joins hard-wrapped lines into one line per paragraph.

    A line continues the previous one when the previous line is long (>= wrap_min columns, so
    it was wrapped, not broken on purpose), it is not indented, and it does not start a speaker
    turn ("Name: ..."). Blank lines end paragraphs and are dropped. Indented lines (verse,
    quotations, dialogue layout) keep their own line. Runs of spaces become one space.
    """
    out: list[str] = []
    prev_len = 0
    for raw in lines:
        raw = raw.rstrip()
        if not raw.strip():
            prev_len = 0
            continue
        text = " ".join(raw.split())
        indented = raw[:1].isspace()
        if out and prev_len >= wrap_min and not indented and not _SPEAKER.match(text):
            # "well-\nknown" was split at a hyphen: join without a space
            out[-1] = out[-1] + ("" if out[-1].endswith("-") and text[:1].islower() else " ") + text
        else:
            out.append(text)
        prev_len = len(raw)
    return out


def looks_like_prose(text: str) -> bool:
    """Rejects ASCII art, tables, code and mostly non-letter text."""
    chars = [c for c in text if not c.isspace()]
    if len(chars) < 20:
        return False
    letters = sum(c.isalpha() for c in chars)
    if letters / len(chars) < 0.72:
        return False
    if re.search(r"([^\w\s])\1{4,}", text):  # "=====", "_____", "|||||"
        return False
    if sum(ord(c) > 127 for c in chars) > 0.02 * len(chars):
        return False
    return True


# ---------------------------------------------------------------- fortunes


def fortune_files() -> list[Path]:
    files = []
    for p in sorted(FORTUNE_DIR.iterdir()):
        if p.is_symlink() or not p.is_file() or p.suffix in (".dat", ".u8") or p.name in FORTUNE_SKIP:
            continue
        files.append(p)
    return files


def parse_fortune(entry: str, source: str) -> Doc | None:
    lines = normalise_chars(entry).expandtabs(8).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    # The attribution: an indented "-- Name" line near the end, maybe continued by more
    # indented lines ("-- Kirk, "The Menagerie",\n   stardate 3012.4").
    attribution = ""
    for i in range(len(lines) - 1, max(-1, len(lines) - 4), -1):
        s = lines[i].strip()
        if s.startswith("--") and lines[i][:1].isspace() and all(l[:1].isspace() for l in lines[i:]):
            attribution = " ".join(" ".join(l.split()) for l in lines[i:])[2:].strip()
            lines = lines[:i]
            break
    body_lines = unwrap(textwrap.dedent("\n".join(lines)).split("\n"))
    if not body_lines:
        return None
    body = "\n".join(body_lines)
    text = body + (f"\n-- {attribution}" if attribution else "")
    if not looks_like_prose(text):
        return None
    qa = None
    if len(body_lines) == 2 and body_lines[0].startswith("Q:") and body_lines[1].startswith("A:"):
        qa = (body_lines[0][2:].strip(), body_lines[1][2:].strip())
    return Doc(source=source, text=text, body=body, attribution=attribution, qa=qa)


def read_fortunes() -> list[Doc]:
    docs = []
    for path in fortune_files():
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for entry in re.split(r"(?m)^%\n", raw):
            if "\ufffd" in entry:
                continue
            d = parse_fortune(entry, f"fortunes:{path.name}")
            if d:
                docs.append(d)
    return docs


# ---------------------------------------------------------------- dictd databases

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def dict_entries(name: str) -> list[tuple[str, str]]:
    """(headword, raw entry text) for every entry of /usr/share/dictd/NAME, in index order."""
    data = gzip.decompress((DICT_DIR / f"{name}.dict.dz").read_bytes())
    entries, seen = [], set()
    for line in (DICT_DIR / f"{name}.index").read_text(encoding="utf-8").splitlines():
        head, off, length = line.split("\t")
        if head.startswith("00database") or head.startswith("00-database"):
            continue
        span = (_b64num(off), _b64num(length))
        if span in seen:  # one entry listed under several headwords
            continue
        seen.add(span)
        entries.append((head, data[span[0]:span[0] + span[1]].decode("utf-8", errors="replace")))
    return entries


_DEVIL_HEAD = re.compile(r"^([A-Z][A-Z' -]*[A-Z]),\s*(?:[a-z]+\.\s*(?:and\s+|or\s+|,\s*)?)+")  # "LOVE, n. "


def parse_devil(raw: str) -> Doc | None:
    # "LOVE, n.  A temporary insanity ..." then wrapped prose, indented verse, signatures.
    body_lines = unwrap(normalise_chars(raw).expandtabs(8).split("\n"))
    if not body_lines:
        return None
    text = "\n".join(body_lines)
    if not looks_like_prose(text):
        return None
    m = _DEVIL_HEAD.match(body_lines[0])
    headword = m.group(1).lower() if m else ""
    definition = body_lines[0][m.end():] if m else ""
    return Doc(source="devil", text=text, body=definition, headword=headword)



def parse_jargon(raw: str) -> Doc | None:
    # "headword\n /pron/, n.\n\n    [techspeak] An inaccurate measure ... See also {MIPS}."
    lines = normalise_chars(raw).expandtabs(8).split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if len(lines) < 3:
        return None
    headword = lines[0].strip()
    pos = re.sub(r"/[^/]*/,?\s*", "", lines[1]).strip().rstrip(",").strip()
    rest = "\n".join(lines[2:])
    rest = re.sub(r"\{\s*([^{}]*?)\s*\}", lambda m: " ".join(m.group(1).split()), rest)  # {cross refs}
    body_lines = unwrap(textwrap.dedent(rest).split("\n"))
    if not body_lines:
        return None
    lead = f"{headword}, {pos}" if pos else headword
    text = "\n".join([f"{lead} {body_lines[0]}"] + body_lines[1:])
    if not looks_like_prose(text):
        return None
    definition = re.sub(r"^\[[^\]]*\]\s*", "", body_lines[0])  # drop "[techspeak]" / etymology
    return Doc(source="jargon", text=text, body=definition, headword=headword)


def read_dicts() -> list[Doc]:
    docs = []
    for _, raw in dict_entries("devil"):
        d = parse_devil(raw)
        if d:
            docs.append(d)
    for _, raw in dict_entries("jargon"):
        d = parse_jargon(raw)
        if d:
            docs.append(d)
    return docs


# ---------------------------------------------------------------- dedup and split


def norm_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def dedup(docs: list[Doc]) -> list[Doc]:
    seen, out = set(), []
    for d in docs:
        k = norm_key(d.body or d.text)
        if k in seen:
            continue
        seen.add(k)
        out.append(d)
    return out


def is_heldout(d: Doc) -> bool:
    h = hashlib.sha256(norm_key(d.text).encode()).digest()
    return int.from_bytes(h[:8], "big") % 1000 < HELDOUT_PER_MILLE


def build() -> tuple[list[Doc], list[Doc], dict]:
    """All documents, split: (train, heldout, stats)."""
    fortunes = read_fortunes()
    dicts = read_dicts()
    all_docs = dedup(fortunes + dicts)
    train = [d for d in all_docs if not is_heldout(d)]
    held = [d for d in all_docs if is_heldout(d)]
    stats = {
        "fortune_files": [p.name for p in fortune_files()],
        "raw_docs": {"fortunes": len(fortunes), "dicts": len(dicts)},
        "docs_after_dedup": len(all_docs),
        "train_docs": len(train),
        "heldout_docs": len(held),
    }
    return train, held, stats


# ---------------------------------------------------------------- chat-formatted documents

GREETINGS = ["Hello!", "Hi!", "Hello.", "Hi there.", "Good morning!", "Good evening.", "Hey!"]
GREETING_REPLIES = [
    "Hello! What would you like to hear?",
    "Hi! Ask me anything, or let me tell you something.",
    "Hello there. How can I help you?",
    "Hi. I know a few jokes and a lot of strange words.",
]
GENERIC_ASKS = ["Tell me something.", "Tell me my fortune.", "Say something.", "What do you know?",
                "Tell me something interesting.", "Any thoughts?"]
TOPIC_ASKS = {  # fortune file -> typical user lines
    "computers": ["Tell me about computers.", "Say something about programming."],
    "linux": ["Tell me about Linux.", "Say something about computers."],
    "linuxcookie": ["Tell me about Linux."],
    "perl": ["Tell me about Perl.", "Say something about programming."],
    "debian": ["Tell me about Debian."],
    "love": ["What is love?", "Tell me about love."],
    "men-women": ["Tell me about men and women.", "What is love?"],
    "humorists": ["Tell me a joke.", "Say something funny."],
    "kids": ["Tell me a joke.", "Say something funny."],
    "riddles": ["Tell me a riddle.", "Tell me a joke."],
    "miscellaneous": ["Tell me a joke.", "Tell me something."],
    "cookie": ["Give me a quote.", "Tell me something."],
    "people": ["Give me a quote.", "Tell me about people."],
    "wisdom": ["Give me some advice.", "Tell me something wise."],
    "platitudes": ["Give me some advice.", "Tell me something wise."],
    "tao": ["Tell me something wise.", "What is the Tao?"],
    "science": ["Tell me about science.", "Say something about science."],
    "medicine": ["Tell me about medicine."],
    "politics": ["What do you think about politics?", "Tell me about politics."],
    "law": ["Tell me about the law."],
    "food": ["Tell me about food."],
    "work": ["Tell me about work.", "What do you think about work?"],
    "education": ["Tell me about school.", "Tell me about education."],
    "sports": ["Tell me about sports."],
    "startrek": ["Say something from Star Trek.", "Give me a quote."],
    "literature": ["Tell me about books.", "Give me a quote."],
    "songs-poems": ["Recite a poem.", "Tell me a poem."],
    "definitions": ["Give me a definition.", "Tell me a law of life."],
    "drugs": ["Tell me something."],
    "pets": ["Tell me about pets."],
    "magic": ["Tell me about magic."],
    "news": ["What is in the news?"],
}
DEFINE_ASKS = ["What is {w}?", "What does {w} mean?", "Define {w}.", "What is {w}?"]


def _one_line(s: str, limit: int = 320) -> str | None:
    s = " ".join(s.split("\n"))
    return s if 15 <= len(s) <= limit else None


def exchanges(docs: list[Doc]) -> list[tuple[str, str]]:
    """(user line, assistant reply) pairs built from training documents (one per document)."""
    rng = random.Random(4)
    pairs = []
    for d in docs:
        if d.qa:
            pairs.append(d.qa)
        elif d.source.startswith("fortunes:"):
            reply = _one_line(d.body + (f" -- {d.attribution}" if d.attribution else ""))
            if reply:
                asks = TOPIC_ASKS.get(d.source.split(":", 1)[1], []) + GENERIC_ASKS[:2]
                pairs.append((rng.choice(asks), reply))
        elif d.headword and d.body:
            reply = _one_line(d.body)
            if reply and re.fullmatch(r"[\w' -]{2,30}", d.headword):
                pairs.append((rng.choice(DEFINE_ASKS).format(w=d.headword), reply))
    return pairs


def chat_documents(docs: list[Doc], fraction: float, seed: int) -> list[str]:
    """Conversations "User: ...\\nAssistant: ...\\n..." (stac chat's template) with 1-4 turns.

    About `fraction` of the exchanges are used; a quarter of the conversations open with a
    greeting. Each document's exchange is used at most once.
    """
    rng = random.Random(seed)
    pairs = exchanges(docs)
    rng.shuffle(pairs)
    pairs = pairs[:int(len(pairs) * fraction)]
    convs, i = [], 0
    while i < len(pairs):
        n = rng.choice([1, 2, 2, 3, 3, 4])
        turns = []
        if rng.random() < 0.25:
            turns.append((rng.choice(GREETINGS), rng.choice(GREETING_REPLIES)))
        turns += pairs[i:i + n]
        i += n
        convs.append("\n".join(f"User: {u}\nAssistant: {a}" for u, a in turns))
    return convs
