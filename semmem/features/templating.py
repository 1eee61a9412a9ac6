"""Templating flags (spec §2.7): `is_incrementing`, `is_repeating`, `is_templating` = their OR.

With `upstream_quirks=True` (the default) this reproduces upstream `filters/pattern.py` exactly, quirks included,
because the published features were computed that way:
- for a 3-element word list the second difference test is signed (L2 - 2·L1 + L0 < 1e-5), so any concave triple of
  numbers counts as incrementing;
- the step found in one period is never reset, so it leaks into the next period tried;
- repetition is tested on the characters of the whole text with the incrementing-mode length rules (fewer than 4
  characters never repeat; beyond 4, the first and last character are dropped before the period search).
With `upstream_quirks=False` the first two are corrected (|L2 - 2·L1 + L0| < 1e-5; the step restarts at each period).

Text parsing has no vector form, so the functions run row by row *inside* Arrow batches (`mapInArrow`) over the
evaluation sequences only, never over the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame

_SCHEMA = "sequence_id BIGINT, is_incrementing BOOLEAN, is_repeating BOOLEAN, is_templating BOOLEAN"
_WS = re.compile(r"\s+")
_DIGITS = re.compile("([0-9]+)")
_ESCAPES = ("\\n", "\\x", "\\", "'", '"')


def word_list(text: str) -> list[int | str]:
    """L: auto-base integer literals to decimal, repr, escapes and quotes stripped, split on ASCII digit runs."""
    words = []
    for word in _WS.sub(" ", text).split(" "):
        try:
            words.append(str(int(word, 0)))
        except ValueError:
            words.append(word)
    out: list[int | str] = []
    for word in repr(" ".join(words).strip()).split(" "):
        for lit in _ESCAPES:
            word = word.replace(lit, "")
        for piece in _DIGITS.split(word):
            piece = piece.strip("'")
            if not piece.strip(" "):
                continue
            try:
                out.append(int(piece))  # also accepts non-ASCII decimal digits, as upstream
            except ValueError:
                out.append(piece)
    return out


def _is_num(x: Any) -> bool:
    return type(x) in (int, float)


def periodicity(items: list[Any], upstream_quirks: bool = True) -> tuple[bool, Any]:
    """Test P: (True, step) for an arithmetic/periodic list, (True, None) for a periodic one without step."""
    if len(items) < 3:
        return False, 0
    if len(items) == 3:
        if not all(_is_num(x) for x in items):
            return False, 0
        curvature = items[2] - 2 * items[1] + items[0]
        passed = curvature < 1e-5 if upstream_quirks else abs(curvature) < 1e-5
        return passed, items[2] - items[1]
    if len(items) > 4:  # first and last words may be cut off
        items = items[1:-1]
    n = len(items)
    step = None
    for p in range(1, n // 2 + 1):
        if not upstream_quirks:
            step = None
        passed, validated = True, False
        for r in range(p):
            d = None
            for i in range(r + p, n, p):
                a, b = items[i], items[i - p]
                if type(a) is not type(b):
                    passed = False
                    break
                if _is_num(a):
                    if d is None:
                        d = a - b
                    elif abs(a - b - d) < 1e-10:
                        validated = True
                    else:
                        passed = False
                        break
                elif a != b:
                    passed = False
                    break
            if not passed:
                break
            if step is None and d is not None and d != 0:
                step = d
        if passed:
            if step is not None and validated:
                return True, step
            if step is None:
                return True, None
    return False, 0


def classify(text: str | None, upstream_quirks: bool = True) -> tuple[bool | None, bool | None, bool | None]:
    """(is_incrementing, is_repeating, is_templating); the two flags are exclusive; NULL text -> NULLs."""
    if text is None:
        return None, None, None
    found, step = periodicity(word_list(text), upstream_quirks)
    if found and step is not None and step != 0:
        return True, False, True
    repeating, _ = periodicity(list(text), upstream_quirks)
    return False, repeating, repeating


def templating_batches(batches: Iterator[pa.RecordBatch], upstream_quirks: bool) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (sequence_id, text) -> templating rows."""
    for batch in batches:
        flags = [classify(t, upstream_quirks) for t in batch.column("text").to_pylist()]
        cols = list(zip(*flags)) if flags else [(), (), ()]
        yield pa.RecordBatch.from_arrays(
            [batch.column("sequence_id").cast(pa.int64())] + [pa.array(list(c), pa.bool_()) for c in cols],
            names=["sequence_id", "is_incrementing", "is_repeating", "is_templating"])


def templating(sequences: DataFrame, upstream_quirks: bool = True) -> DataFrame:
    """(sequence_id, is_incrementing, is_repeating, is_templating) from `text`."""
    return sequences.select("sequence_id", "text").mapInArrow(
        lambda it: templating_batches(it, upstream_quirks), _SCHEMA)
