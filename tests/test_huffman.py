"""Huffman / Shannon code lengths against the reference of spec §2.8 (tests/reference.py)."""

from __future__ import annotations

import math
import random

import pytest

from semmem.features.huffman import code_lengths, huffman
from tests import reference as ref


def _texts(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    alphabet = "aaaabbbcdde  \n\u00e9\u4e2d\U0001f600<|endoftext|>"
    return [
        "".join(rnd.choice(alphabet[:rnd.randrange(1, len(alphabet))]) for _ in range(rnd.randrange(1, 300)))
        for _ in range(n)
    ]


def test_known_values():
    assert code_lengths("") == (None, None)
    assert code_lengths(None) == (None, None)
    assert code_lengths("aaaa") == (0.0, 1.0)  # one distinct character: Shannon 0 bits, Huffman 1 bit by definition
    assert code_lengths("aabb") == (1.0, 1.0)
    # counts 4,2,1,1 (n=8): dyadic, Shannon = Huffman = 1.75 bits per character
    assert code_lengths("aaaabbcd") == (1.75, 1.75)
    # counts 1,1,1 (n=3): Shannon ceil(log2 3) = 2 bits; Huffman (1+2+2)/3
    sh, hu = code_lengths("abc")
    assert sh == pytest.approx(2.0, abs=1e-15) and hu == 5 / 3


def test_random_texts_agree_with_reference():
    for text in _texts(2000, seed=0):
        sh, hu = code_lengths(text)
        want_sh, want_hu = ref.huffman(text)
        assert sh == pytest.approx(want_sh, rel=1e-12, abs=1e-15)
        assert hu == want_hu  # exact: an integer number of bits over len(text)
        entropy = -sum(c / len(text) * math.log2(c / len(text)) for c in __import__("collections").Counter(text).values())
        assert hu >= entropy - 1e-12 and (hu <= entropy + 1 or len(set(text)) == 1)


@pytest.mark.parametrize("partitions", [1, 4])
def test_spark_matches_reference(spark, partitions):
    texts = _texts(200, seed=1) + ["", None, "z"]
    df = spark.createDataFrame(list(enumerate(texts)), "sequence_id BIGINT, text STRING").repartition(partitions)
    got = {r["sequence_id"]: (r["huffman_coding_length"], r["huffman_code_length_true"])
           for r in huffman(df).collect()}
    assert set(got) == set(range(len(texts)))
    for i, t in enumerate(texts):
        want = ref.huffman(t)
        if want[0] is None:
            assert got[i] == (None, None)  # NULL, not NaN
        else:
            assert got[i][0] == pytest.approx(want[0], rel=1e-12, abs=1e-15) and got[i][1] == want[1]
