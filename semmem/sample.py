"""The bundled sample corpus: a small, deterministic, Pile-format corpus written by semmem itself.

Every feature needs something to find, and every category of the taxonomy needs sequences (at least 40 each in the
embedded default, whose rows each give one sequence), so the generator mixes, by share of the text:
- natural language (a small synthetic English: sentences from a fixed grammar and word lists) and code (Python and C
  functions with random names, many opening with the same licence header): recollection;
- boilerplate (a licence, and three notices of ~600 characters two at a time, repeated verbatim): recitation;
- counting (a noun and a number counting up by one, the noun and the separator chosen per document, so that few
  documents share a 32-token stretch: sequence_duplicates stays at or below the recitation threshold):
  reconstruction, which a model can learn as a rule rather than as text;
- other templated text: numbered lists, hex tables, CSV rows with counters, repeated units.
All text is written here (no third-party text), so the corpus can be redistributed with the project.

    python -m semmem.sample --out semmem/data/sample      # regenerates the shipped files byte for byte
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

import zstandard

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"
SEED, N_DOCS, N_SHARDS = 2024, 2300, 3  # the shipped sample's arguments

LICENCE = (
    "Copyright (c) The Semmem Sample Authors. All rights reserved.\n"
    "Permission is granted to use, copy, modify and distribute this file for any purpose, provided that this\n"
    "notice appears in all copies. The file is provided as is, without warranty of any kind, express or implied,\n"
    "including but not limited to the warranties of merchantability and fitness for a particular purpose.\n"
)

NOTICES = (
    "Terms of use. By opening, reading or copying any page of this archive you agree to the following terms. The "
    "archive is offered for study and for no other purpose. You may quote short passages with a clear reference to "
    "the page they come from. You may not sell copies of the archive, in whole or in part, or present its pages as "
    "your own work. The keepers of the archive may change these terms at any time; the terms in force are those on "
    "the front page on the day you read it. Questions about these terms go to the keepers by letter, never by "
    "telephone. Nothing in these terms limits what the law of your country allows you to do without them.\n",
    "Notice on stored data. This site keeps a small record of each visit: the page asked for, the time of the "
    "request and a number chosen at random when the visit began. The record holds no name, no address and no "
    "message. It is kept for ninety days so that the keepers can count visits and find broken pages, and is then "
    "deleted. The record is never sold, lent or joined with any other record. You may ask for the record of your "
    "own visits by giving the number shown at the foot of each page; the keepers answer within thirty days. Closing "
    "the page ends the visit, and a later visit is given a new number.\n",
    "You are reading a letter from the monthly bulletin of the Semmem Sample Society. The bulletin goes to every "
    "member on the first day of the month and to anyone who asked for it at the front desk. To stop receiving it, "
    "answer this letter with the single word stop, and no further letter will be sent to this address. Back issues "
    "are kept at the society's library, where they may be read on any weekday between nine and five. The society "
    "thanks its members for their letters, their questions and their patience with the printing of this "
    "bulletin, which is done by hand.\n",
)
NOUNS = ("river city engine garden model teacher window market signal forest letter village machine harbor "
         "student mountain record language theory kitchen bridge doctor planet library question answer winter "
         "picture farmer network orchestra museum soldier journey island century").split()
VERBS = ("builds finds carries watches opens follows measures repairs describes crosses remembers studies "
         "changes holds writes reads moves joins explains protects").split()
ADJS = ("quiet large old bright narrow famous simple strange early careful distant heavy modern gentle "
        "public hidden ancient rapid").split()
ADVS = "slowly often rarely quickly carefully always sometimes suddenly".split()
PLACES = "Aldmoor Brevik Castella Dunmore Elsworth Farrow Galdin Hollis Ivorra Jentry".split()
SETS = ["Pile-CC", "Wikipedia (en)", "FreeLaw", "StackExchange", "PubMed Abstracts", "ArXiv"]


def _sentence(r: random.Random) -> str:
    subject = f"the {r.choice(ADJS)} {r.choice(NOUNS)}"
    obj = f"{r.choice(['a', 'the', 'every'])} {r.choice(NOUNS)}"
    tail = r.choice(["", f" near {r.choice(PLACES)}", f" in {r.randint(1700, 2020)}", f" {r.choice(ADVS)}",
                     f" because {r.choice(NOUNS)}s {r.choice(VERBS)[:-1]} {r.choice(NOUNS)}s"])
    s = f"{subject} {r.choice(VERBS)} {obj}{tail}."
    return s[0].upper() + s[1:]


def natural_language(r: random.Random) -> str:
    paragraphs = []
    for _ in range(r.randint(2, 6)):
        paragraphs.append(" ".join(_sentence(r) for _ in range(r.randint(3, 9))))
    return "\n\n".join(paragraphs)


def _ident(r: random.Random) -> str:
    return "_".join(r.choice(NOUNS) for _ in range(r.randint(1, 2)))


def code(r: random.Random) -> str:
    parts = [("# " + LICENCE.replace("\n", "\n# ")).rstrip("# ") if r.random() < 0.6 else ""]
    for _ in range(r.randint(1, 4)):
        name, arg, acc = _ident(r), _ident(r), _ident(r)
        if r.random() < 0.5:
            parts.append(f"def {name}({arg}, limit={r.randint(2, 64)}):\n"
                         f"    \"\"\"Return the {r.choice(ADJS)} {r.choice(NOUNS)} of {arg}.\"\"\"\n"
                         f"    {acc} = []\n"
                         f"    for index in range(limit):\n"
                         f"        if {arg}[index] % {r.randint(2, 9)} == 0:\n"
                         f"            {acc}.append({arg}[index] * {r.randint(2, 99)})\n"
                         f"    return {acc}\n")
        else:
            parts.append(f"static int {name}(const int *{arg}, int n) {{\n"
                         f"    int {acc} = {r.randint(0, 9)};\n"
                         f"    for (int i = 0; i < n; i++) {{\n"
                         f"        {acc} += {arg}[i] << {r.randint(1, 7)};\n"
                         f"    }}\n"
                         f"    return {acc};\n}}\n")
    return "\n".join(p for p in parts if p)


def templated(r: random.Random) -> str:
    kind = r.randrange(5)
    start, step, n = r.randint(0, 500), r.choice([1, 1, 2, 5, 10, -1, -3]), r.randint(40, 120)
    if kind == 0:
        return "\n".join(f"{start + i * step}. {r.choice(ADJS)} {r.choice(NOUNS)}" for i in range(n))
    if kind == 1:
        return ", ".join(f"{hex(start + i * abs(step))}" for i in range(n))
    if kind == 2:
        return "id,name,value\n" + "\n".join(f"{start + i},{r.choice(NOUNS)},{r.randint(0, 999)}" for i in range(n))
    if kind == 3:
        unit = r.choice(["ha ", "la la ", "-=", "na ", "0 1 "])
        return unit * n
    return " ".join(str(start + i * step) for i in range(n))


def counting(r: random.Random) -> str:
    """A labelled count up by one: "river 12, river 13, ...", 60 to 150 numbers below 300, one noun and one separator
    per document, so that few documents share a 32-token stretch while every count follows the same rule."""
    noun, sep, n = r.choice(NOUNS), r.choice([", ", "; ", " | "]), r.randint(60, 150)
    start = r.randint(0, 299 - n)
    return sep.join(f"{noun} {start + i}" for i in range(n))


def documents(seed: int, n_docs: int) -> Iterator[dict]:
    r = random.Random(seed)
    for _ in range(n_docs):
        x = r.random()
        if x < 0.30:
            yield {"text": natural_language(r), "meta": {"pile_set_name": r.choice(SETS)}}
        elif x < 0.47:
            yield {"text": code(r), "meta": {"pile_set_name": "Github"}}
        elif x < 0.55:
            yield {"text": LICENCE, "meta": {"pile_set_name": "Pile-CC"}}
        elif x < 0.72:
            i = r.randrange(len(NOTICES))  # two notices in a row: long enough to hold most 64-token windows
            yield {"text": NOTICES[i] + NOTICES[(i + 1) % len(NOTICES)], "meta": {"pile_set_name": "Pile-CC"}}
        elif x < 0.95:
            yield {"text": counting(r), "meta": {"pile_set_name": "DM Mathematics"}}
        else:
            yield {"text": templated(r), "meta": {"pile_set_name": "DM Mathematics"}}


def write_sample(out: Path, *, seed: int = SEED, n_docs: int = N_DOCS, n_shards: int = N_SHARDS) -> list[Path]:
    """Write `n_shards` zstd-compressed jsonl shards; the same arguments always give the same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    docs = list(documents(seed, n_docs))
    paths = []
    for s in range(n_shards):
        lines = "".join(json.dumps(d, sort_keys=True) + "\n" for d in docs[s::n_shards])
        path = out / f"{s:02d}.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor(level=19).compress(lines.encode()))
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=SAMPLE_DIR)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--docs", type=int, default=N_DOCS)
    p.add_argument("--shards", type=int, default=N_SHARDS)
    a = p.parse_args()
    for path in write_sample(a.out, seed=a.seed, n_docs=a.docs, n_shards=a.shards):
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
