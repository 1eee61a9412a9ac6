"""The table catalog: every Delta table semmem writes, declared once.

Each table has one Arrow schema; the Spark StructType is derived from it, so the two can never disagree. Names and
columns are exactly those the issues and the reference spec use, because users query them by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pyarrow as pa
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from semmem.errors import TableError

TOKENS = pa.list_(pa.int32())


@dataclass(frozen=True)
class TableDef:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    description: str
    partition_by: tuple[str, ...] = ()

    @cached_property
    def spark_schema(self) -> StructType:
        return from_arrow_schema(self.schema)

    @property
    def columns(self) -> list[str]:
        return self.schema.names


def _table(name: str, fields: list[tuple[str, pa.DataType]], key: tuple[str, ...], description: str,
           partition_by: tuple[str, ...] = ()) -> TableDef:
    return TableDef(name, pa.schema([pa.field(n, t) for n, t in fields]), key, description, partition_by)


TABLES: dict[str, TableDef] = {
    t.name: t
    for t in [
        # ingest
        _table("token_rows", [("row_id", pa.int64()), ("tokens", TOKENS)], ("row_id",),
               "The training stream: rows of stream.seq_length tokens, documents separated by EOD."),
        _table("sequences", [("sequence_id", pa.int64()), ("tokens", TOKENS), ("text", pa.string()),
                             ("prompt_text", pa.string()), ("pile_set_name", pa.string())], ("sequence_id",),
               "Evaluation sequences: the first 64 tokens of each sampled row; prompt = tokens[0:32]."),
        _table("ingest_rejects", [("path", pa.string()), ("line", pa.int64()), ("reason", pa.string()),
                                  ("detail", pa.string())], ("path", "line"),
               "Input records skipped under ingest.on_bad_record=skip, with the reason."),
        _table("stream_sources", [("path", pa.string()), ("num_rows", pa.int64()), ("seq_length", pa.int32())],
               ("path",), "For megatron input: the .bin file used in place as the training stream."),
        _table("published_memorization", [("model", pa.string()), ("sequence_id", pa.int64()),
                                          ("memorization_score", pa.float64())], ("model", "sequence_id"),
               "Memorization scores that came with a sequences-parquet input (one column per model upstream)."),
        # corpus statistics
        _table("sequence_duplicates", [("sequence_id", pa.int64()), ("sequence_duplicates", pa.int64())],
               ("sequence_id",), "Occurrences of each continuation 32-gram anywhere in the stream (>= 1)."),
        _table("token_frequencies", [("token_id", pa.int32()), ("frequency", pa.int64())], ("token_id",),
               "Corpus count of every token id over the whole stream."),
        _table("token_frequency_stats", [
            ("sequence_id", pa.int64()), ("max_frequency", pa.int64()), ("min_frequency", pa.int64()),
            ("avg_frequency", pa.float64()), ("median_frequency", pa.float64()), ("p25_frequency", pa.int64()),
            ("p75_frequency", pa.int64()), ("frequencies", pa.list_(pa.int64()))], ("sequence_id",),
            "Corpus-frequency statistics over the 64 tokens of each sequence."),
        _table("templating", [("sequence_id", pa.int64()), ("is_incrementing", pa.bool_()),
                              ("is_repeating", pa.bool_()), ("is_templating", pa.bool_())], ("sequence_id",),
               "Incrementing / repeating text (spec §2.7)."),
        _table("huffman", [("sequence_id", pa.int64()), ("huffman_coding_length", pa.float64()),
                           ("huffman_code_length_true", pa.float64())], ("sequence_id",),
               "Shannon code length per character as upstream, and a true Huffman code length (spec §2.8)."),
        # model scoring
        _table("memorization", [
            ("model", pa.string()), ("revision", pa.string()), ("sequence_id", pa.int64()),
            ("memorization_score", pa.float64()), ("is_memorized", pa.bool_()), ("matched_prefix", pa.int32()),
            ("prompt_perplexity", pa.float64()), ("generation_perplexity", pa.float64()),
            ("sequence_perplexity", pa.float64())], ("model", "revision", "sequence_id"),
            "k-extractable memorization and perplexities per model@revision (spec §1.2, §2.9).",
            partition_by=("model", "revision")),
    ]
}


def table(name: str) -> TableDef:
    """The catalog entry for `name`, or a TableError listing the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise TableError(f"unknown table {name!r}; the catalog has: {', '.join(sorted(TABLES))}") from None
