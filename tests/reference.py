"""Brute-force pure-Python references for the corpus features, written from the spec (§2.2, §2.3, §2.7, §2.8).

Slow on purpose: no hashing, no numpy, every value from first principles, so the vectorized Spark versions can be
checked column by column on small generated data.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Sequence

WINDOW = 32


# --------------------------------------------------------------------------------------------------------- §2.2
def duplicates(rows: Sequence[Sequence[int]], sequences: dict[int, Sequence[int]]) -> dict[int, int]:
    """Occurrences of tokens[32:64] of each sequence as a window at every offset 0..len-32 of every row."""
    windows: Counter[tuple[int, ...]] = Counter()
    for row in rows:
        for o in range(len(row) - WINDOW + 1):
            windows[tuple(row[o:o + WINDOW])] += 1
    return {sid: windows[tuple(toks[32:64])] for sid, toks in sequences.items()}


def occurrences(rows: dict[int, Sequence[int]], sequences: dict[int, Sequence[int]], cap: int
                ) -> dict[int, list[tuple[int, int]]]:
    """(row_id, offset) of every window equal to tokens[32:64] of each sequence, by row then offset, the first `cap`;
    sequences with no occurrence (or shorter than 64 tokens) are left out."""
    found: dict[int, list[tuple[int, int]]] = {}
    for sid, toks in sequences.items():
        if len(toks) < 64:
            continue
        cont = list(toks[32:64])
        at = [(r, o) for r in sorted(rows) for o in range(len(rows[r]) - WINDOW + 1)
              if list(rows[r][o:o + WINDOW]) == cont]
        if at[:cap]:
            found[sid] = at[:cap]
    return found


# --------------------------------------------------------------------------------------------------------- §2.3
def token_frequencies(rows: Sequence[Sequence[int]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for row in rows:
        for t in row:
            counts[t] = counts.get(t, 0) + 1
    return counts


def frequency_stats(tokens: Sequence[int], freq: dict[int, int]) -> dict[str, object]:
    """max/min/avg, interpolated median, nearest-rank p25/p75 (rank ceil(p*n), 1-based) over the window's tokens."""
    f = [freq.get(t, 0) for t in tokens]
    n = len(f)
    s = sorted(f)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {
        "max_frequency": max(f), "min_frequency": min(f), "avg_frequency": sum(f) / n,
        "median_frequency": float(median),
        "p25_frequency": s[math.ceil(0.25 * n) - 1], "p75_frequency": s[math.ceil(0.75 * n) - 1],
        "frequencies": f,
    }


# --------------------------------------------------------------------------------------------------------- §2.7
def split_words(text: str) -> list[int | str]:
    """The word list L of §2.7, steps 1-5."""
    text = re.sub(r"\s+", " ", text)
    recon = []
    for word in text.split(" "):
        try:
            recon.append(str(int(word, 0)))  # Python auto-base literal -> decimal
        except ValueError:
            recon.append(word)
    pieces: list[str] = []
    for word in repr(" ".join(recon).strip()).split(" "):
        for lit in ("\\n", "\\x", "\\", "'", '"'):
            word = word.replace(lit, "")
        pieces.extend(re.split("([0-9]+)", word))
    out: list[int | str] = []
    for piece in pieces:
        piece = piece.strip("'")
        if piece.strip(" ") == "":
            continue
        try:
            out.append(int(piece))
        except ValueError:
            out.append(piece)
    return out


def periodic(items: list, quirks: bool = True) -> tuple[bool, object]:
    """Test P of §2.7 in incrementing mode (the only mode upstream ever uses)."""
    if len(items) < 3:
        return False, 0
    if len(items) == 3:
        if not all(isinstance(x, int) for x in items):
            return False, 0
        second = items[2] - 2 * items[1] + items[0]
        return (second < 1e-5 if quirks else abs(second) < 1e-5), items[2] - items[1]
    if len(items) > 4:
        items = items[1:-1]
    n = len(items)
    step = None  # first nonzero chain difference; with quirks it survives from one period to the next
    for p in range(1, n // 2 + 1):
        if not quirks:
            step = None
        ok = True
        validated = False
        for r in range(p):
            d = None
            for i in range(r + p, n, p):
                a, b = items[i], items[i - p]
                if type(a) is not type(b):
                    ok = False
                    break
                if isinstance(a, int):
                    if d is None:
                        d = a - b
                    elif abs(a - b - d) < 1e-10:
                        validated = True
                    else:
                        ok = False
                        break
                elif a != b:
                    ok = False
                    break
            if not ok:
                break
            if step is None and d is not None and d != 0:
                step = d
        if ok:
            if step is not None and validated:
                return True, step
            if step is None:
                return True, None
    return False, 0


def templating(text: str | None, quirks: bool = True) -> tuple[bool | None, bool | None, bool | None]:
    """(is_incrementing, is_repeating, is_templating) of one text; NULL text -> NULLs."""
    if text is None:
        return None, None, None
    inc, step = periodic(split_words(text), quirks)
    if inc and step is not None and step != 0:
        return True, False, True
    rep, _ = periodic(list(text), quirks)  # characters, with the incrementing-mode length rules
    return False, bool(rep), bool(rep)


# --------------------------------------------------------------------------------------------------------- §2.8
def huffman(text: str | None) -> tuple[float | None, float | None]:
    """(Shannon length sum p*ceil(-log2 p), true Huffman bits per character); one distinct char = 1 bit/char."""
    if not text:
        return None, None
    n = len(text)
    counts = Counter(text)
    shannon = math.fsum((c / n) * math.ceil(-math.log2(c / n)) for c in counts.values())
    if len(counts) == 1:
        return shannon, 1.0
    # Build the tree explicitly and sum count * depth over the leaves.
    heap: list[tuple[int, int, list[str]]] = [(c, i, [ch]) for i, (ch, c) in enumerate(counts.items())]
    heapq.heapify(heap)
    depth: Counter[str] = Counter()
    tick = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for ch in s1 + s2:
            depth[ch] += 1
        heapq.heappush(heap, (c1 + c2, tick, s1 + s2))
        tick += 1
    return shannon, sum(counts[ch] * depth[ch] for ch in counts) / n


# ----------------------------------------------------------------------------------------------- generated data
def make_stream(seed: int = 0, n_rows: int = 40, length: int = 160, vocab: int = 50, eod: int = 0
                ) -> tuple[list[list[int]], dict[int, list[int]]]:
    """A small stream with planted duplicates, and evaluation sequences (first 64 tokens of some rows).

    Planted: continuations copied to offset 0, to the last offset (length-32) and across EOD tokens; two sequences
    sharing one continuation; runs of one token (overlapping matches); a short row and a row shorter than a window;
    one sequence whose continuation never occurs in the stream.
    """
    import random

    rnd = random.Random(seed)
    rows = [[rnd.randrange(1, vocab) for _ in range(length)] for _ in range(n_rows)]
    for row in rows:  # documents separated by EOD, so some windows cross a document boundary
        for _ in range(3):
            row[rnd.randrange(length)] = eod
    rows[3] = [7] * length  # one token repeated: the continuation matches at every offset
    rows[4][32:64] = rows[1][32:64]  # shared continuation
    for k in range(4):  # copies at the first offset, the last offset and in between
        src = rows[5 + k][32:64]
        dst = rows[20 + k]
        o = [0, length - WINDOW, 77, 101][k]
        dst[o:o + WINDOW] = src
    rows[6][40] = eod  # continuation containing EOD, copied elsewhere -> matches crossing EOD
    rows[25][10:42] = rows[6][32:64]
    rows[26][length - WINDOW:] = rows[6][32:64]
    rows.append([rnd.randrange(1, vocab) for _ in range(50)])  # a short row
    rows.append([1, 2, 3])  # shorter than one window
    sequences = {i: rows[i][:64] for i in range(0, 12)}
    sequences[1000] = [rnd.randrange(1, vocab) for _ in range(64)]  # continuation absent from the stream
    return rows, sequences


# ---------------------------------------------------------------------------------------------------- §2.4, §2.5
def cosine_matrix(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """All-pairs inner products in float64 (the vectors are unit norm: cosines), each pair summed the same way, so
    equal vectors give equal cosines (a BLAS matrix product sums tiles in an order that depends on where a pair sits
    in the matrix, and on the machine: its ties would not be ties)."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float64)
    return [(v * row).sum(axis=1).tolist() for row in v]


def semantic_counts(cos: list[list[float]], threshold: float) -> list[int]:
    """Per sequence: how many sequences (itself included) have cosine >= threshold."""
    return [sum(1 for c in row if c >= threshold) for row in cos]


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert, delete, substitute), the textbook dynamic programme."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def textual_counts(cos: list[list[float]], prompts: Sequence[str], threshold: float, lo: int = 1, hi: int = 19,
                   ascii_rule: bool = False) -> list[int]:
    """Per sequence: sequences with cosine >= threshold whose prompt is at edit distance lo..hi from its own
    (ascii_rule: 0 for a query prompt with non-ASCII characters). Distances are memoized per prompt pair only to
    keep thousands of identical pairs affordable."""
    memo: dict[tuple[str, str], int] = {}
    out = []
    for a, row in enumerate(cos):
        if ascii_rule and not prompts[a].isascii():
            out.append(0)
            continue
        n = 0
        for b, c in enumerate(row):
            if c >= threshold:
                key = (prompts[a], prompts[b])
                if key not in memo:
                    memo[key] = levenshtein(*key)
                n += lo <= memo[key] <= hi
        out.append(n)
    return out


def top_neighbors(cos: list[list[float]], ids: Sequence[int], threshold: float, cap: int
                  ) -> dict[int, list[tuple[int, float]]]:
    """Per sequence id: the other sequences with cosine >= threshold, highest cosine first, then smallest id, at most
    `cap` of them."""
    out = {}
    for a, row in enumerate(cos):
        pairs = sorted(((-c, ids[b]) for b, c in enumerate(row) if b != a and c >= threshold))
        out[ids[a]] = [(i, -c) for c, i in pairs[:cap]]
    return out
