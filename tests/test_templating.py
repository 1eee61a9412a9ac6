"""Templating flags against the reference re-statement of spec §2.7 (tests/reference.py), quirks on and off."""

from __future__ import annotations

import random

import pytest

from semmem.features.templating import classify, templating
from tests import reference as ref

INC, REP, NONE = (True, False, True), (False, True, True), (False, False, False)

CASES = [
    # (text, quirks result, corrected result)
    ("0x10 0x11 0x12 0x13 0x14 0x15", INC, INC),  # hex literals become decimals
    ("0o7 0o10 0o11 0o12 0o13", INC, INC),  # octal
    ("0b1 0b10 0b11 0b100 0b101 0b110", INC, INC),  # binary
    ("10 9 8 7 6 5", INC, INC),  # negative step
    ("item 1, item 2, item 3, item 4, item 5", INC, INC),
    ("1 2 3", INC, INC),  # |L| = 3, linear
    ("5 3 0", INC, NONE),  # |L| = 3, second difference -1 < 1e-5: the signed test passes (quirk)
    ("0 3 5", INC, NONE),  # |L| = 3, second difference -1: passes the signed test too
    ("0 2 5", NONE, NONE),  # |L| = 3, second difference +1: fails both ways
    ("a b c", NONE, NONE),  # |L| = 3, not numeric
    ("x 1 a 3 2 1 a 3 2 1 y", INC, REP),  # period 3 step leaks into period 4 (quirk); else character-periodic
    ("abcabcabcabc", REP, REP),
    ("aaaa", REP, REP),  # 4 characters: no trimming, period 1
    ("aaa", NONE, NONE),  # exactly 3 characters: never repeating
    ("ab", NONE, NONE),
    ("xabababy", REP, REP),  # first and last character dropped before the period search
    ("\u0661 \u0662 \u0663 \u0664 \u0665 \u0666", INC, INC),  # Arabic-Indic digits are ints too
    ("", NONE, NONE),
]


@pytest.mark.parametrize("text,quirky,corrected", CASES)
def test_cases(text, quirky, corrected):
    assert ref.templating(text, True) == quirky
    assert ref.templating(text, False) == corrected
    assert classify(text, True) == quirky
    assert classify(text, False) == corrected


def _random_texts(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    atoms = ["1", "2", "3", "10", "0x1f", "0o17", "0b11", "-", "a", "ab", " ", "  ", "\n", "\t", ".", ",", "'", '"',
             "\\", "\\x", "\u0663", "é", "<|endoftext|>", "0", "7"]
    texts = []
    for _ in range(n):
        if rnd.random() < 0.3:  # planted patterns: arithmetic runs and repeated chunks
            start, step, k = rnd.randrange(-5, 50), rnd.choice([-3, -1, 0, 1, 2, 7]), rnd.randrange(2, 9)
            sep = rnd.choice([" ", ", ", " x ", "\n"])
            fmt = rnd.choice(["{}", "0x{:x}", "0o{:o}", "v{}"])
            texts.append(sep.join(fmt.format(start + i * step) if start + i * step >= 0 else str(start + i * step)
                                  for i in range(k)))
        elif rnd.random() < 0.3:
            texts.append("".join(rnd.choice(atoms) for _ in range(rnd.randrange(1, 4))) * rnd.randrange(1, 6))
        else:
            texts.append("".join(rnd.choice(atoms) for _ in range(rnd.randrange(0, 14))))
    return texts


def test_random_texts_agree_with_reference():
    texts = _random_texts(4000, seed=0)
    for quirks in (True, False):
        flags = [classify(t, quirks) for t in texts]
        assert flags == [ref.templating(t, quirks) for t in texts]
        assert any(f == INC for f in flags) and any(f == REP for f in flags) and any(f == NONE for f in flags)
    assert sum(classify(t, True) != classify(t, False) for t in texts) > 0  # the quirks matter on this data


@pytest.mark.parametrize("quirks,partitions", [(True, 1), (True, 5), (False, 3)])
def test_spark_matches_reference(spark, quirks, partitions):
    texts = _random_texts(300, seed=1) + [c[0] for c in CASES] + [None]
    df = spark.createDataFrame(list(enumerate(texts)), "sequence_id BIGINT, text STRING").repartition(partitions)
    got = {r["sequence_id"]: (r["is_incrementing"], r["is_repeating"], r["is_templating"])
           for r in templating(df, upstream_quirks=quirks).collect()}
    assert got == {i: ref.templating(t, quirks) for i, t in enumerate(texts)}
