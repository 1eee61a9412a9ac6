"""The prompt/continuation ROUGE feature against the rouge-score package (what Dentan et al. use, on token ids
written as space-separated strings), and the Guess / Recall category against its definition (beyond.md §4)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from rouge_score import rouge_scorer

from semmem.features.rouge import lcs_lengths, prefix_suffix_rouge, rouge, trigram_overlaps
from semmem.taxonomy.vocabulary import GUESS_RECALL, guess_recall_column

SCORER = rouge_scorer.RougeScorer(["rougeL", "rouge3"], use_stemmer=False)


def _package(row: np.ndarray) -> tuple[float, float, int, int]:
    """rouge-score's (ROUGE-L F1, ROUGE-3 F1, LCS, trigram overlap) of prefix vs suffix, as Dentan et al. call it."""
    prefix, suffix = " ".join(map(str, row[:32])), " ".join(map(str, row[32:64]))
    s = SCORER.score(prefix, suffix)
    return (s["rougeL"].fmeasure, s["rouge3"].fmeasure, round(s["rougeL"].precision * 32),
            round(s["rouge3"].precision * 30))


def _rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    made = [np.arange(64), np.tile(np.arange(32), 2), np.tile([5, 6, 7], 22)[:64], np.full(64, 9),
            np.concatenate([np.arange(32), np.arange(32)[::-1]]),
            np.concatenate([np.tile([1, 2, 3], 11)[:32], np.tile([1, 2, 3, 1, 2, 3, 4], 5)[:32]]),
            np.concatenate([np.arange(32), np.arange(100, 132)]), (np.arange(64) * 7919) % 2_000_003]
    rows = [*made, *rng.integers(0, 4, size=(40, 64)), *rng.integers(0, 50, size=(40, 64)),
            *rng.integers(0, 50_000, size=(20, 64))]
    return np.stack(rows).astype(np.int64)


def test_rouge_equals_the_rouge_score_package():
    rows = _rows()
    rouge_l, rouge_3 = prefix_suffix_rouge(rows)
    lcs, overlap = lcs_lengths(rows[:, :32], rows[:, 32:]), trigram_overlaps(rows[:, :32], rows[:, 32:])
    for i, row in enumerate(rows):
        want_l, want_3, want_lcs, want_overlap = _package(row)
        assert (lcs[i], overlap[i]) == (want_lcs, want_overlap), i  # the counts exactly
        assert rouge_l[i] == pytest.approx(want_l, rel=1e-12, abs=1e-15), i  # F1: 2PR/(P+R) rounds differently
        assert rouge_3[i] == pytest.approx(want_3, rel=1e-12, abs=1e-15), i
    assert set(rouge_l[:2]) == {0.0, 1.0} and rouge_3[1] == 1.0  # disjoint halves; the prompt repeated


def test_rouge_stage_rows_and_short_sequences(spark):
    rows = _rows()[:12]
    df = spark.createDataFrame([(i, row.tolist()) for i, row in enumerate(rows)] + [(99, list(range(40))), (98, None)],
                               "sequence_id BIGINT, tokens ARRAY<INT>")
    got = {r["sequence_id"]: (r["prefix_suffix_rouge_l"], r["prefix_suffix_rouge_3"])
           for r in rouge(df.repartition(3)).collect()}
    assert got[99] == (None, None) and got[98] == (None, None)
    for i, row in enumerate(rows):
        want_l, want_3, _, _ = _package(row)
        assert got[i][0] == pytest.approx(want_l, rel=1e-12, abs=1e-15)
        assert got[i][1] == pytest.approx(want_3, rel=1e-12, abs=1e-15)


def _definition(memorized, repeating, incrementing, rouge_l, rouge_3, rho):
    """beyond.md §4: not memorized; guess (memorized and repeating, incrementing, ROUGE-L or ROUGE-3 >= rho); recall
    for the other memorized; unknown (None) where a missing value could decide it."""
    if memorized is None:
        return None
    if not memorized:
        return "not_memorized"
    signs = [repeating, incrementing, None if rouge_l is None else rouge_l >= rho,
             None if rouge_3 is None else rouge_3 >= rho]
    if any(s is True for s in signs):
        return "guess"
    return None if any(s is None for s in signs) else "recall"


def test_guess_recall_category_follows_its_definition(spark):
    flags, scores = [None, False, True], [None, 0.2, 0.5, 0.9]
    rows = list(itertools.product(flags, flags, flags, scores, scores))
    df = spark.createDataFrame(rows, "is_memorized BOOLEAN, is_repeating BOOLEAN, is_incrementing BOOLEAN, "
                                     "prefix_suffix_rouge_l DOUBLE, prefix_suffix_rouge_3 DOUBLE")
    for rho in (0.5, 0.95):
        got = df.select("*", guess_recall_column(rho).alias("c")).collect()
        assert len(got) == len(rows)
        for r in got:
            assert r["c"] == _definition(*r[:5], rho), (tuple(r), rho)
    assert set(GUESS_RECALL) == {_definition(*r, 0.5) for r in rows} - {None}
