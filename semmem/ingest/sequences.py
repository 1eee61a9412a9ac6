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


def sample_key(seed: int) -> Column:
    """A uniform key in [0, 1) per row_id: the same rows are sampled whatever the partitioning or executor count."""
    h = F.xxhash64(F.col("row_id"), F.lit(seed).cast("long"))
    return (F.shiftrightunsigned(h, 11).cast("double") / F.lit(float(1 << 53)))


def sample_rows(rows: DataFrame, cfg: SampleConfig) -> DataFrame:
    """Rows kept by `sample.fraction` (Bernoulli on the key) or `sample.size` (smallest keys); all rows otherwise."""
    if cfg.fraction is not None:
        return rows.where(sample_key(cfg.seed) < F.lit(cfg.fraction))
    if cfg.size is not None:
        return rows.withColumn("_key", sample_key(cfg.seed)).orderBy("_key", "row_id").limit(cfg.size).drop("_key")
    return rows


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
