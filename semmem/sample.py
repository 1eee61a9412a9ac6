"""The bundled sample corpus: a small, deterministic, Pile-format corpus written by semmem itself.

Every feature needs something to find, so the generator mixes:
- natural language (a small synthetic English: sentences from a fixed grammar and word lists),
- code (Python and C functions with random names, many opening with the same licence header),
- licence boilerplate repeated many times (recitation),
- templated and incrementing text: numbered lists, hex tables, CSV rows with counters (reconstruction).
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

LICENCE = (
    "Copyright (c) The Semmem Sample Authors. All rights reserved.\n"
    "Permission is granted to use, copy, modify and distribute this file for any purpose, provided that this\n"
    "notice appears in all copies. The file is provided as is, without warranty of any kind, express or implied,\n"
    "including but not limited to the warranties of merchantability and fitness for a particular purpose.\n"
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


def documents(seed: int, n_docs: int) -> Iterator[dict]:
    r = random.Random(seed)
    for _ in range(n_docs):
        x = r.random()
        if x < 0.45:
            yield {"text": natural_language(r), "meta": {"pile_set_name": r.choice(SETS)}}
        elif x < 0.75:
            yield {"text": code(r), "meta": {"pile_set_name": "Github"}}
        elif x < 0.85:
            yield {"text": LICENCE, "meta": {"pile_set_name": "Pile-CC"}}
        else:
            yield {"text": templated(r), "meta": {"pile_set_name": "DM Mathematics"}}


def write_sample(out: Path, *, seed: int = 2024, n_docs: int = 2400, n_shards: int = 3) -> list[Path]:
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
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--docs", type=int, default=2400)
    p.add_argument("--shards", type=int, default=3)
    a = p.parse_args()
    for path in write_sample(a.out, seed=a.seed, n_docs=a.docs, n_shards=a.shards):
        print(path, path.stat().st_size)


if __name__ == "__main__":
    main()
