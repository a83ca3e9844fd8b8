"""Build the tokenizer parity corpus and its golden ids.

    python tools/gen_tokenizer_corpus.py testdata/tokenizer

Writes corpus.txt (one text per line, seeded and deterministic) and ids.jsonl.gz: for each line,
open_clip's `SimpleTokenizer().encode(line)` (no start/end tokens) — see testdata/PROVENANCE.md.
"""
import gzip
import json
import random
import sys
import unicodedata

rng = random.Random(20210226)

NOUNS = "dog cat car tree house bicycle pizza mountain river child woman man bird horse boat plane train " \
        "flower cake phone laptop guitar elephant giraffe zebra banana umbrella kite surfboard clock vase".split()
ADJS = "red green blue small large old new shiny wet fluffy wooden broken striped ancient tiny huge " \
       "beautiful ugly blurry dark bright".split()
TEMPLATES = ["a photo of a {}.", "a bad photo of the {}.", "a close-up photo of my {}!", "itap of a {}",
             "a sculpture of the {}.", "A PHOTO OF A {}?", "there's a {} in the picture", "the {} isn't here",
             "we'll see the {} tomorrow", "they've got {} {}s", "I'm looking at a {} (again)",
             "{}: the best of {}", "\"{}\" said the {}", "{}—{}…{}"]
SCRIPTS = [(0x0410, 0x044F), (0x0391, 0x03C9), (0x0621, 0x064A), (0x05D0, 0x05EA), (0x0905, 0x0939),
           (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x0E01, 0x0E2E), (0x3041, 0x3096), (0x30A1, 0x30FA)]
EMOJI = ["🙂", "😂", "👍🏽", "🇫🇷", "👩‍💻", "❤️", "🐶", "🍕", "🚀", "✨", "🧑🏿‍🤝‍🧑🏻", "☕", "🏳️‍🌈", "🤖"]
ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x27;", "&eacute;", "&nbsp;", "&copy;", "&hellip;",
            "&mdash;", "&amp;amp;", "&#8217;", "&EACUTE;", "&euro;", "&#128512;"]
ACCENTED = ["café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "Zürich", "crème brûlée", "São Paulo",
            "déjà vu", "piñata", "Øresund", "coöperate", "Dvořák"]
SPACES = [" ", "  ", "\t", "\u00a0", "\u3000", " \u2009 "]
PUNCT = list("!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`'\"")


def word():
    r = rng.random()
    if r < 0.5:
        return rng.choice(NOUNS)
    if r < 0.7:
        return rng.choice(ADJS)
    if r < 0.8:
        return rng.choice(ACCENTED)
    if r < 0.9:
        lo, hi = rng.choice(SCRIPTS)
        return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6)))
    return str(rng.choice([rng.randint(0, 99), rng.randint(100, 10**6), round(rng.uniform(0, 100), 2)]))


def caption():
    t = rng.choice(TEMPLATES)
    return t.format(*[word() for _ in range(t.count("{}"))])


def mojibake(s):
    enc = rng.choice(["cp1252", "latin-1"])
    try:
        return s.encode("utf-8").decode(enc)
    except UnicodeDecodeError:
        return s


def line(kind):
    if kind == 0:
        return caption()
    if kind == 1:  # punctuation and numbers
        parts = [word() for _ in range(rng.randint(1, 6))]
        seps = [rng.choice(PUNCT) * rng.randint(1, 3) for _ in parts]
        return "".join(p + s for p, s in zip(parts, seps)) + " " + rng.choice(
            ["3.14", "1,000,000", "2021-03-26", "$5.99", "50%", "#1", "v2.0.1", "10am", "1/2", "½", "²", "٣"])
    if kind == 2:  # non-Latin scripts
        return " ".join(word() if rng.random() < 0.3 else
                        "".join(chr(rng.randint(*rng.choice(SCRIPTS))) for _ in range(rng.randint(2, 8)))
                        for _ in range(rng.randint(1, 5)))
    if kind == 3:  # emoji
        return caption() + " " + "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4)))
    if kind == 4:  # HTML entities
        return rng.choice(ENTITIES).join(caption() for _ in range(2)) + rng.choice(ENTITIES)
    if kind == 5:  # mojibake
        return mojibake(" ".join(rng.choice(ACCENTED) for _ in range(rng.randint(1, 3))) + " " + caption())
    if kind == 6:  # whitespace and typography
        text = rng.choice(SPACES).join(caption().split(" "))
        return rng.choice(["“", "‘", "«", ""]) + text + rng.choice(["”", "’", "»", ""]) + rng.choice(
            ["", " ﬁne ﬂowers", " ＦＵＬＬ ｗｉｄｔｈ", " \u200bzero\u200bwidth"])
    if kind == 7:  # very long
        return " ".join(caption() for _ in range(rng.randint(8, 30)))
    if kind == 8:  # unicode names of random characters
        cp = rng.randint(0x20, 0x2FFF)
        ch = chr(cp)
        return f"{ch} is {unicodedata.name(ch, 'unnamed').lower()}"
    # mixed case and contractions
    return rng.choice(["DON'T", "It'S", "they'D", "You'LL", "I'M", "we'Ve", "rock'n'roll", "o'clock"]) + " " + caption().upper()


def main(out):
    import os
    from open_clip.tokenizer import SimpleTokenizer
    tok = SimpleTokenizer()
    os.makedirs(out, exist_ok=True)
    lines = []
    for i in range(5200):
        text = line(i % 10)
        text = text.replace("\n", " ").replace("\r", " ")
        if text.strip():
            lines.append(text)
    with open(os.path.join(out, "corpus.txt"), "w", encoding="utf-8", newline="\n") as f:
        for text in lines:
            f.write(text + "\n")
    with gzip.open(os.path.join(out, "ids.jsonl.gz"), "wt", encoding="utf-8") as f:
        for text in lines:
            f.write(json.dumps(tok.encode(text)) + "\n")
    print(f"wrote {len(lines)} lines")


if __name__ == "__main__":
    main(sys.argv[1])
