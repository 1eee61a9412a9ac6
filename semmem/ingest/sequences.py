"""Evaluation sequences: a reproducible sample of stream rows, cut to their first 64 tokens and decoded."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from semmem.catalog import table
from semmem.config import SampleConfig
from semmem.ingest.tokenizer import decode_batch, from_json

PROMPT_LENGTH = 32  # prompt = tokens[0:32]
WINDOW_LENGTH = 64  # continuation = tokens[32:64]


KEY_BITS = 53  # the sample key: the top 53 bits of xxhash64(row_id, seed)


def sample_key_bits(seed: int) -> Column:
    """The sample key of each row_id as an integer in [0, 2^53): exact arithmetic for the `sample.size` cut."""
    return F.shiftrightunsigned(F.xxhash64(F.col("row_id"), F.lit(seed).cast("long")), 64 - KEY_BITS)


def sample_key(seed: int) -> Column:
    """A uniform key in [0, 1) per row_id: the same rows are sampled whatever the partitioning or executor count."""
    return sample_key_bits(seed).cast("double") / F.lit(float(1 << KEY_BITS))


def size_cut(row_ids: DataFrame, size: int, seed: int, *, bins: int = 4096,
             collect_rows: int = 1_000_000) -> tuple[int, int] | None:
    """The (key, row_id) of the size-th smallest row by (key bits, row_id), or None when there are at most `size`.

    No global sort and no single task that sees every row: each pass counts the keys of [lo, hi) in `bins` equal
    bins (one small aggregate, the driver holds `bins` counts) and narrows the range to the bin holding the wanted
    rank, until that bin has at most `collect_rows` rows, which are collected and sorted. Passes read only `row_id`;
    with uniform keys the first bin already holds about rows / bins, so two passes are the rule.
    """
    if size < 1:
        raise ValueError(f"sample.size must be >= 1, got {size}")
    keyed = row_ids.select("row_id", sample_key_bits(seed).alias("k"))
    lo, hi, rank, first = 0, 1 << KEY_BITS, size, True  # rank: 1-based, among the rows with lo <= k < hi
    while True:
        width = -(-(hi - lo) // bins)
        in_range = keyed.where((F.col("k") >= lo) & (F.col("k") < hi))
        counts = sorted((r["b"], r["n"]) for r in in_range.groupBy(F.expr(f"(k - {lo}) div {width}").alias("b"))
                        .agg(F.count(F.lit(1)).alias("n")).collect())  # at most `bins` rows
        if first and sum(n for _, n in counts) <= size:
            return None
        first = False
        before = 0
        for b, n in counts:
            if before + n >= rank:
                break
            before += n
        lo, hi, rank = lo + b * width, min(hi, lo + (b + 1) * width), rank - before
        if n <= collect_rows or width == 1:
            rows = sorted((r["k"], r["row_id"]) for r in keyed.where((F.col("k") >= lo) & (F.col("k") < hi))
                          .collect())  # at most collect_rows pairs
            return rows[rank - 1]


def sample_predicate(row_ids: DataFrame, cfg: SampleConfig) -> Column | None:
    """A filter on `row_id` keeping the sampled rows: `sample.fraction` (Bernoulli on the key) or `sample.size` (the
    rows with the smallest keys, ties by row_id); None keeps every row. `row_ids` (one column, row_id) is read only
    for `sample.size`, to find the cut; the filter then applies to any frame with a row_id column."""
    if cfg.fraction is not None:
        return sample_key(cfg.seed) < F.lit(cfg.fraction)
    if cfg.size is None:
        return None
    cut = size_cut(row_ids, cfg.size, cfg.seed)
    if cut is None:
        return None
    key, row_id = cut
    bits = sample_key_bits(cfg.seed)
    return (bits < F.lit(key)) | ((bits == F.lit(key)) & (F.col("row_id") <= F.lit(row_id)))


def decode_windows(batches: Iterator[pa.RecordBatch], tokenizer_json: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: add `text` (all 64 tokens) and `prompt_text` (first 32), one batched decode each."""
    tok = from_json(tokenizer_json)
    for batch in batches:
        ids = batch.column("tokens").to_pylist()
        text = decode_batch(tok, ids)
        prompt = decode_batch(tok, [x[:PROMPT_LENGTH] for x in ids])
        yield pa.RecordBatch.from_arrays(
            [batch.column("sequence_id"), batch.column("tokens"), pa.array(text, pa.string()),
             pa.array(prompt, pa.string()), batch.column("pile_set_name")],
            schema=table("sequences").schema)


def to_sequences(rows: DataFrame, tokenizer_json: str) -> DataFrame:
    """(row_id, tokens, pile_set_name) rows -> the `sequences` table: sequence_id = row_id, first 64 tokens."""
    windows = rows.select(F.col("row_id").alias("sequence_id"),
                          F.slice("tokens", 1, WINDOW_LENGTH).alias("tokens"),
                          F.col("pile_set_name").cast("string"))
    return windows.mapInArrow(lambda b: decode_windows(b, tokenizer_json), table("sequences").spark_schema)
