"""Build a labelled code-vs-natural-language jsonl from files already on this machine, for an offline code classifier.

    .venv/bin/python tools/build_code_labels.py --out /tmp/code_train.jsonl [--root DIR ...] [--per-class 20000]
    semmem train-code-classifier --config conf/local.yaml --set code_classifier.labels=/tmp/code_train.jsonl

On a Debian-like machine, `--root .venv/lib/python3.11/site-packages --root /usr/share/doc --root
/usr/share/common-licenses` adds licence and package prose (measured: F1 for code on the 500 human labels 0.860
instead of 0.825 with site-packages alone; about 40k windows, 5 minutes to build, 4 to train).

Code (label 1): windows of source files under the roots (Python, C/C++, Cython, Fortran, JavaScript/CSS/HTML, shell
and build files, JSON/XML/YAML/TOML), drawn evenly across these language families, as the Pile's Github set mixes
languages. Natural language (label 0): windows of English prose from the same roots: licence and notice texts,
package descriptions (dist-info METADATA), README / docs (.md, .rst, .txt) and Python docstrings, with code blocks
(fenced, indented, `>>>`) and paragraphs that are mostly not letters left out. Each window is 150-400 characters from a
random offset, about the size of a decoded 64-token Pile window. Identical files are used once. The default root is
the site-packages folder of the running Python. Never add the human-labelled evaluation texts as a root.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

CODE_FAMILIES = {
    "python": {".py", ".pyi", ".pyx", ".pxd", ".pxi"},
    "c": {".c", ".h", ".cc", ".cpp", ".hpp", ".cu", ".cuh", ".cxx"},
    "fortran": {".f", ".f90"},
    "web": {".js", ".css", ".html", ".htm", ".ts"},
    "build": {".sh", ".cmake", ".bat", ".cmd", ".mk"},
    "data": {".json", ".xml", ".yaml", ".yml", ".toml", ".cfg", ".ini"},
}
PROSE_SUFFIXES = {".md", ".rst", ".txt"}
PROSE_NAMES = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS|README|METADATA|copyright)", re.IGNORECASE)
MIN_CHARS, MAX_CHARS = 150, 400
MAX_FILE_BYTES = 2_000_000
WINDOWS_PER_FILE = 2


def read_text(path: Path) -> str | None:
    """The file as UTF-8 text (gzip-compressed docs such as README.gz unpacked); None for binary or huge files."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        raw = path.read_bytes()
        return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def windows(text: str, rng: random.Random, k: int) -> Iterator[str]:
    """Up to k windows of MIN_CHARS..MAX_CHARS characters at random offsets, skipping mostly-blank ones."""
    for _ in range(k):
        size = rng.randint(MIN_CHARS, MAX_CHARS)
        if len(text) < MIN_CHARS:
            return
        start = rng.randint(0, max(0, len(text) - size))
        w = text[start:start + size]
        if len(w.split()) >= 8:
            yield w


def is_prose(paragraph: str) -> bool:
    """English-looking text: mostly letters and spaces, several words, no code markers."""
    lines = paragraph.splitlines()
    if any(ln.lstrip().startswith((">>>", "...", "```", "$ ", "import ", "from ")) for ln in lines):
        return False
    if all(ln.startswith(("    ", "\t")) for ln in lines if ln.strip()):  # an indented (literal) block
        return False
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    return len(paragraph.split()) >= 12 and letters >= 0.8 * len(paragraph)


def prose_of(text: str) -> str:
    """The prose paragraphs of a document, fenced blocks removed, joined by blank lines."""
    text = re.sub(r"```.*?```", "\n\n", text, flags=re.DOTALL)
    return "\n\n".join(p.strip("\n") for p in re.split(r"\n\s*\n", text) if is_prose(p))


def docstrings(source: str) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                docs.append(prose_of(doc))
    return "\n\n".join(d for d in docs if d)


def collect(roots: list[Path]) -> tuple[dict[str, list[Path]], list[Path], list[Path]]:
    """(code files by family, prose documents, Python files for docstrings), sorted for determinism."""
    by_family: dict[str, list[Path]] = {f: [] for f in CODE_FAMILIES}
    prose, python = [], []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
            if PROSE_NAMES.match(path.name) or suffix in PROSE_SUFFIXES:
                prose.append(path)
                continue
            for family, suffixes in CODE_FAMILIES.items():
                if suffix in suffixes:
                    by_family[family].append(path)
            if suffix == ".py":
                python.append(path)
    return {f: ps for f, ps in by_family.items() if ps}, prose, python


def build(roots: list[Path], per_class: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    by_family, prose_files, python_files = collect(roots)
    seen: set[str] = set()

    def fresh(text: str) -> bool:
        digest = hashlib.sha1(text.encode()).hexdigest()
        if digest in seen:
            return False
        seen.add(digest)
        return True

    rows: list[dict] = []
    families = sorted(by_family)
    for files in by_family.values():
        rng.shuffle(files)
    cursors = dict.fromkeys(families, 0)
    n_code = 0
    while n_code < per_class and any(cursors[f] < len(by_family[f]) for f in families):
        family = rng.choice([f for f in families if cursors[f] < len(by_family[f])])
        path = by_family[family][cursors[family]]
        cursors[family] += 1
        text = read_text(path)
        if text and fresh(text):
            for w in windows(text, rng, WINDOWS_PER_FILE):
                rows.append({"text": w, "label_is_code": 1, "source": f"{family}:{path.name}"})
                n_code += 1
    # Prose: documents and docstrings interleaved, so neither kind fills the class alone.
    sources = [("doc", p) for p in prose_files] + [("docstring", p) for p in python_files]
    rng.shuffle(sources)
    n_nl = 0
    for kind, path in sources:
        if n_nl >= per_class:
            break
        raw = read_text(path)
        if not raw or not fresh(f"{kind}:{raw}"):
            continue
        text = docstrings(raw) if kind == "docstring" else prose_of(raw)
        for w in windows(text, rng, WINDOWS_PER_FILE):
            rows.append({"text": w, "label_is_code": 0, "source": f"{kind}:{path.name}"})
            n_nl += 1
    rng.shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--root", action="append", type=Path, help="folder to draw from (repeatable); default: "
                        "this Python's site-packages")
    parser.add_argument("--per-class", type=int, default=20000, help="windows of each class (at most)")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    roots = args.root or [Path(sysconfig.get_paths()["purelib"])]
    rows = build(roots, args.per_class, args.seed)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    n_code = sum(r["label_is_code"] for r in rows)
    print(f"{args.out}: {n_code} code and {len(rows) - n_code} natural-language windows from "
          f"{', '.join(map(str, roots))}")


if __name__ == "__main__":
    main()
