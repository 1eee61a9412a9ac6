"""How much a sequence's continuation repeats its prompt, in tokens (beyond.md §4, the Guess / Recall taxonomy of
Dentan et al. 2025): ROUGE-L and ROUGE-3 F1 between the prefix (tokens [0, 32)) and the suffix ([32, 64)).

Dentan et al. compute ROUGE with the `rouge-score` package on the token ids written as space-separated strings,
without stemming; on such strings every id is one token, so both scores are exact functions of the two id arrays:
- ROUGE-L F1 = 2·LCS / (|prefix| + |suffix|), LCS the longest common subsequence of the two id sequences;
- ROUGE-3 F1 = 2·overlap / (#trigrams(prefix) + #trigrams(suffix)), overlap the size of the multiset intersection
  of their token trigrams (each trigram counted min(count in prefix, count in suffix) times).
(F1 = 2PR/(P+R) with P = m/|b|, R = m/|a| is 2m/(|a|+|b|).) Both are computed on whole Arrow batches with numpy:
one dynamic-programming pass over the 32x32 grid for all rows at once, and one comparison of sorted trigrams.
Sequences shorter than 64 tokens give NULL.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

PROMPT = 32
SEQUENCE = 64
_SCHEMA = "sequence_id BIGINT, prefix_suffix_rouge_l DOUBLE, prefix_suffix_rouge_3 DOUBLE"


def lcs_lengths(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Length of the longest common subsequence of each row of `a` (n, p) with the same row of `b` (n, q)."""
    n, q = b.shape
    previous = np.zeros((n, q + 1), dtype=np.int32)
    for i in range(a.shape[1]):
        current = np.zeros_like(previous)
        same = a[:, i, None] == b  # (n, q)
        for j in range(q):
            current[:, j + 1] = np.where(same[:, j], previous[:, j] + 1,
                                         np.maximum(previous[:, j + 1], current[:, j]))
        previous = current
    return previous[:, q]


def _trigram_ids(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The token trigrams of each row of `a` and of `b`, each trigram as one integer (equal trigrams, equal integers,
    across both), sorted within each row."""
    def grams(x: np.ndarray) -> np.ndarray:
        return np.stack([x[:, :-2], x[:, 1:-1], x[:, 2:]], axis=-1).reshape(-1, 3)

    ids = np.unique(np.concatenate([grams(a), grams(b)]), axis=0, return_inverse=True)[1].ravel()
    n, split = a.shape[0], a.shape[0] * (a.shape[1] - 2)
    return (np.sort(ids[:split].reshape(n, -1), axis=1), np.sort(ids[split:].reshape(n, -1), axis=1))


def _copy_numbers(sorted_rows: np.ndarray) -> np.ndarray:
    """For each element of a row sorted ascending, how many equal elements precede it (0 for the first copy)."""
    n, m = sorted_rows.shape
    position = np.broadcast_to(np.arange(m), (n, m))
    starts = np.ones((n, m), dtype=bool)
    starts[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    return position - run_start


def trigram_overlaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Size of the multiset intersection of the token trigrams of each row of `a` with those of the same row of `b`:
    the k-th copy of a trigram in `a` matches the k-th copy in `b` if there is one."""
    ta, tb = _trigram_ids(a, b)
    ka, kb = _copy_numbers(ta), _copy_numbers(tb)
    same = (ta[:, :, None] == tb[:, None, :]) & (ka[:, :, None] == kb[:, None, :])
    return same.any(axis=2).sum(axis=1)


def prefix_suffix_rouge(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ROUGE-L F1, ROUGE-3 F1) between tokens[:, :32] and tokens[:, 32:64] of each row of `tokens` (n, >= 64)."""
    prefix, suffix = tokens[:, :PROMPT], tokens[:, PROMPT:SEQUENCE]
    p, s = prefix.shape[1], suffix.shape[1]
    rouge_l = 2.0 * lcs_lengths(prefix, suffix) / (p + s)
    rouge_3 = 2.0 * trigram_overlaps(prefix, suffix) / ((p - 2) + (s - 2))
    return rouge_l, rouge_3


def rouge_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (sequence_id, tokens) -> prefix_suffix_rouge rows (NULL for sequences under 64 tokens)."""
    for batch in batches:
        tokens = batch.column("tokens")
        lengths = pc.list_value_length(tokens).fill_null(0).to_numpy(zero_copy_only=False)
        full = lengths >= SEQUENCE
        rouge_l, rouge_3 = np.full(len(batch), np.nan), np.full(len(batch), np.nan)
        if full.any():
            first = pc.list_slice(tokens.filter(pa.array(full)), 0, SEQUENCE)
            ids = first.flatten().to_numpy(zero_copy_only=False).reshape(-1, SEQUENCE)
            rouge_l[full], rouge_3[full] = prefix_suffix_rouge(ids)
        yield pa.RecordBatch.from_arrays(
            [batch.column("sequence_id").cast(pa.int64()), pa.array(rouge_l, mask=~full),
             pa.array(rouge_3, mask=~full)],
            names=["sequence_id", "prefix_suffix_rouge_l", "prefix_suffix_rouge_3"])


def rouge(sequences: DataFrame) -> DataFrame:
    """(sequence_id, prefix_suffix_rouge_l, prefix_suffix_rouge_3) from `tokens`."""
    return sequences.select("sequence_id", "tokens").mapInArrow(rouge_batches, _SCHEMA)
