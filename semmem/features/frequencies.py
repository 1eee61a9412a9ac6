"""Token-frequency features (spec §2.3): corpus counts of every token id, and statistics over each sequence's 64 tokens.

- `token_frequencies`: each Spark task keeps one dense `np.bincount` accumulator (vocabulary-sized) over all its
  stream batches and emits (token_id, count) pairs once; a groupBy sums the tasks. Memory: the vocabulary, not the
  stream. Ids at or above 2^24 fall back to `np.unique` counts per batch.
- `token_frequency_stats`: the frequency table (one row per distinct token id, bounded by the vocabulary) is
  collected once and broadcast as sorted arrays; a `mapInArrow` looks up the 64 frequencies of each sequence and
  computes the statistics on a (rows, 64) matrix.

Statistics rule (n = number of tokens, 64 for a sequence; s = the frequencies sorted ascending, 1-based ranks):
- `median_frequency`: exact, interpolated: s[(n+1)/2] for odd n, (s[n/2] + s[n/2+1]) / 2 for even n.
- `p25_frequency` / `p75_frequency`: nearest rank, an observed value: s[ceil(p·n)], i.e. the smallest value with at
  least p·n values <= it. For n = 64 that is s[16] and s[48]. This is what Spark's `percentile_approx` (used upstream)
  returns when its summary is exact, which it is for 64 values.
- `avg_frequency`: the exact integer sum divided by n; `frequencies`: the 64 counts in token order.
A token absent from the stream counts 0; a sequence without tokens gets NULL statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.compat import to_arrow

DENSE_LIMIT = 1 << 24  # ids below this are counted with a dense bincount accumulator
_FREQ_SCHEMA = "token_id INT, frequency BIGINT"
_STATS_SCHEMA = ("sequence_id BIGINT, max_frequency BIGINT, min_frequency BIGINT, avg_frequency DOUBLE, "
                 "median_frequency DOUBLE, p25_frequency BIGINT, p75_frequency BIGINT, frequencies ARRAY<BIGINT>")


def count_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: stream batches -> (token_id, count) of this task, accumulated over all its batches."""
    acc = np.zeros(0, np.int64)
    for batch in batches:
        col = batch.column("tokens")
        values = col.flatten().to_numpy(zero_copy_only=False)
        if values.size == 0:
            continue
        values = values.astype(np.int64, copy=False)
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi < DENSE_LIMIT:
            counts = np.bincount(values, minlength=len(acc))
            if len(counts) > len(acc):
                counts[:len(acc)] += acc
                acc = counts
            else:
                acc += counts
        else:
            ids, counts = np.unique(values, return_counts=True)
            yield _freq_batch(ids, counts)
    ids = np.flatnonzero(acc)
    if len(ids):
        yield _freq_batch(ids, acc[ids])


def _freq_batch(ids: np.ndarray, counts: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(ids.astype(np.int32), pa.int32()),
                                       pa.array(counts.astype(np.int64), pa.int64())],
                                      names=["token_id", "frequency"])


def token_frequencies(stream: DataFrame) -> DataFrame:
    """(token_id, frequency) over every token of every stream row."""
    partial = stream.select("tokens").mapInArrow(count_batches, _FREQ_SCHEMA)
    return partial.groupBy("token_id").agg(F.sum("frequency").cast("bigint").alias("frequency"))


def stats_matrix(freqs: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of each row of a (rows, n) int64 frequency matrix, n >= 1 (rules in the module docstring)."""
    n = freqs.shape[1]
    s = np.sort(freqs, axis=1)
    if n % 2:
        median = s[:, n // 2].astype(np.float64)
    else:
        median = (s[:, n // 2 - 1].astype(np.float64) + s[:, n // 2].astype(np.float64)) / 2
    return {
        "max_frequency": s[:, -1], "min_frequency": s[:, 0],
        "avg_frequency": freqs.sum(axis=1).astype(np.float64) / n,
        "median_frequency": median,
        "p25_frequency": s[:, math.ceil(0.25 * n) - 1], "p75_frequency": s[:, math.ceil(0.75 * n) - 1],
    }


def lookup(ids: np.ndarray, counts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Frequencies of `tokens` given the sorted table (ids, counts); ids not in the table count 0."""
    if len(ids) == 0:
        return np.zeros(tokens.shape, np.int64)
    pos = np.searchsorted(ids, tokens)
    pos[pos == len(ids)] = 0
    return np.where(ids[pos] == tokens, counts[pos], 0).astype(np.int64)


def stats_batches(batches: Iterator[pa.RecordBatch], ids: np.ndarray, counts: np.ndarray
                  ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: sequences (sequence_id, tokens) -> token_frequency_stats rows."""
    names = ["max_frequency", "min_frequency", "avg_frequency", "median_frequency", "p25_frequency",
             "p75_frequency"]
    for batch in batches:
        col = batch.column("tokens")
        sid = batch.column("sequence_id").to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
        valid = np.asarray(col.is_valid()) & (lengths > 0)
        values = col.values.to_numpy(zero_copy_only=False).astype(np.int64)
        freq_all = lookup(ids, counts, values)
        out = {k: np.zeros(len(sid), np.float64 if k in ("avg_frequency", "median_frequency") else np.int64)
               for k in names}
        for length in np.unique(lengths[valid]):  # one (rows, length) matrix per distinct length (usually 64)
            rows = np.flatnonzero(valid & (lengths == length))
            f = freq_all[offsets[rows][:, None] + np.arange(length)]
            for k, v in stats_matrix(f).items():
                out[k][rows] = v
        freq_list = pa.ListArray.from_arrays(pa.array(offsets - offsets[0], pa.int32()),
                                             pa.array(freq_all[offsets[0]:offsets[-1]], pa.int64()),
                                             mask=pa.array(~np.asarray(col.is_valid())))
        mask = ~valid
        arrays = [pa.array(sid, pa.int64())]
        arrays += [pa.array(out[k], mask=mask) for k in names]
        arrays.append(freq_list)
        yield pa.RecordBatch.from_arrays(arrays, names=["sequence_id", *names, "frequencies"])


def token_frequency_stats(sequences: DataFrame, frequencies: DataFrame) -> DataFrame:
    """token_frequency_stats for every sequence; collects `frequencies` (one row per distinct token id)."""
    table = to_arrow(frequencies.select("token_id", "frequency").orderBy("token_id"))
    ids = table.column("token_id").to_numpy().astype(np.int64)
    counts = table.column("frequency").to_numpy().astype(np.int64)
    bc = sequences.sparkSession.sparkContext.broadcast((ids, counts))

    def fn(it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        i, c = bc.value
        return stats_batches(it, i, c)

    return sequences.select("sequence_id", "tokens").mapInArrow(fn, _STATS_SCHEMA)
