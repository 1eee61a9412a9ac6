"""The training stream, wherever it lives: as a DataFrame (row_id BIGINT, tokens ARRAY<INT>), or as shards that a
Python task reads itself.

`read_stream` goes through Spark (the JVM reads the Parquet files or the .bin ranges, then hands the rows to Python
as Arrow). `stream_shards` + `iter_stream_batches` skip that hop for numpy kernels (the duplicate scan, the token
counts): a small DataFrame of shard descriptors, one Spark task per shard, and a reader that turns one descriptor
into Arrow batches inside the task (pyarrow for the Parquet files of the `token_rows` snapshot, a memory map or range
requests for a megatron .bin, on a filesystem or S3). The two give exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from semmem import storage
from semmem.catalog import table
from semmem.config import Config
from semmem.ingest.megatron import MegatronIndex, documents_of_rows, read_items, recorded_index
from semmem.spark import one_task_each
from semmem.tables import Warehouse

SHARD_SCHEMA = "kind STRING, path STRING, start BIGINT, end BIGINT, seq_length INT, dtype STRING, offset BIGINT"
BATCH_ROWS = 1024  # stream rows per Arrow batch from iter_stream_batches (2,049-token rows: 8 MiB of int32)


def read_stream(warehouse: Warehouse, cfg: Config, first_rows: int | None = None) -> DataFrame:
    """token_rows, or the megatron .bin recorded in stream_sources, read in place; only rows with row_id <
    `first_rows` when given: a .bin is then cut to them before it is split into tasks (a filter above the reader
    would read the whole file, ~600 GB for the Pile, to keep the first 20M tokens), token_rows filtered by row_id,
    which Parquet statistics turn into skipped row groups."""
    if warehouse.exists("stream_sources"):
        index = recorded_index(warehouse)
        if first_rows is not None:
            index = replace(index, num_rows=min(index.num_rows, first_rows))
        return megatron_stream(warehouse.spark, index, cfg.ingest.megatron_rows_per_task)
    rows = warehouse.read("token_rows")
    return rows if first_rows is None else rows.where(F.col("row_id") < first_rows)


@dataclass(frozen=True)
class StreamShard:
    """A piece of the stream one task reads. kind "parquet": the row groups of `path` whose first row is in
    [start, end) (row positions in the file); kind "megatron": rows [start, end) of the .bin at `path`, `seq_length`
    tokens of `dtype` each, row 0 at byte `offset`."""

    kind: str
    path: str
    start: int
    end: int
    seq_length: int = 0
    dtype: str = ""
    offset: int = 0


@dataclass(frozen=True)
class StreamShards:
    """The stream as shard descriptors: `df` has one row per shard (SHARD_SCHEMA), one partition per shard."""

    df: DataFrame
    num_shards: int


def stream_shards(warehouse: Warehouse, cfg: Config, rows_per_task: int | None = None) -> StreamShards:
    """The stream of `read_stream`, as descriptors for `iter_stream_batches` (about `rows_per_task` rows each;
    default `ingest.megatron_rows_per_task`). Only the Delta log (or the .idx header) is read on the driver."""
    rows_per_task = max(1, rows_per_task or cfg.ingest.megatron_rows_per_task)
    shards: list[StreamShard] = []
    if warehouse.exists("stream_sources"):
        shards = megatron_shards(recorded_index(warehouse), rows_per_task)
    else:
        for f in warehouse.snapshot_files("token_rows"):
            if f.num_rows is None:  # no count in the log: one task reads the whole file
                shards.append(StreamShard("parquet", f.path, 0, 1 << 62))
                continue
            for lo in range(0, max(1, f.num_rows), rows_per_task):
                shards.append(StreamShard("parquet", f.path, lo, lo + rows_per_task))
    return StreamShards(_shards_frame(warehouse.spark, shards), len(shards))


def megatron_shards(index: MegatronIndex, rows_per_task: int) -> list[StreamShard]:
    """Row ranges of about `rows_per_task` rows of a megatron .bin."""
    dtype = np.dtype(index.dtype).str
    return [StreamShard("megatron", index.bin_path, lo, min(index.num_rows, lo + rows_per_task), index.seq_length,
                        dtype, index.first_pointer) for lo in range(0, index.num_rows, rows_per_task)]


def megatron_stream(spark: SparkSession, index: MegatronIndex, rows_per_task: int) -> DataFrame:
    """The .bin as a DataFrame (row_id, tokens) through Spark, one task per row range, read by memory map."""
    shards = _shards_frame(spark, megatron_shards(index, rows_per_task))
    return shards.mapInArrow(shard_batches, table("token_rows").spark_schema)


def megatron_row_ids(spark: SparkSession, index: MegatronIndex, rows_per_task: int) -> DataFrame:
    """The row ids of a megatron .bin (row_id BIGINT), one partition per row range: no token is read."""
    parts = max(1, -(-index.num_rows // max(1, rows_per_task)))
    return spark.range(0, index.num_rows, numPartitions=parts).withColumnRenamed("id", "row_id")


def megatron_heads(row_ids: DataFrame, index: MegatronIndex, length: int) -> DataFrame:
    """(row_id, tokens): the first `length` tokens of the given rows of a megatron .bin, read in the tasks that hold
    the row ids: by memory map on a filesystem (only those rows' pages are touched), by one range request per row on
    an object store."""
    dtype, n, offset, path = np.dtype(index.dtype), index.seq_length, index.first_pointer, index.bin_path
    width = min(length, n)

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        if storage.is_remote(path):  # one range request per row, on one open file
            f = storage.open_input_file(path)
            size = width * dtype.itemsize

            def heads(rows: np.ndarray) -> np.ndarray:
                return np.concatenate([np.frombuffer(f.read_at(size, offset + int(r) * n * dtype.itemsize), dtype)
                                       for r in rows]) if len(rows) else np.empty(0, dtype)
        else:
            mm = read_items(path, dtype, offset, index.num_rows * n)

            def heads(rows: np.ndarray) -> np.ndarray:
                return mm[(rows[:, None] * n + np.arange(width)).ravel()]
        for batch in batches:
            rows = batch.column("row_id").to_numpy()
            tokens = np.asarray(heads(rows), dtype=np.int32)
            offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int32) * width)
            yield pa.RecordBatch.from_arrays([batch.column("row_id"), pa.ListArray.from_arrays(offsets, tokens)],
                                             names=["row_id", "tokens"])

    return row_ids.select("row_id").mapInArrow(read, table("token_rows").spark_schema)


def megatron_documents(occurrences: DataFrame, index: MegatronIndex) -> DataFrame:
    """occurrences (..., row_id, ...) + `document` ("<.idx file name>:<document index>") and `source` (NULL: a .bin
    names no Pile subset), the document read from the .idx in the tasks that hold the rows."""
    name = index.idx_path.rsplit("/", 1)[-1]
    schema = StructType([*occurrences.schema.fields, StructField("document", StringType()),
                         StructField("source", StringType())])  # a new type: schema.add would alter the frame's

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            docs = documents_of_rows(index.idx_path, batch.column("row_id").to_numpy())
            yield (batch.append_column("document", pa.array([f"{name}:{d}" for d in docs], pa.string()))
                   .append_column("source", pa.nulls(batch.num_rows, pa.string())))

    return occurrences.mapInArrow(read, schema)


def _shards_frame(spark: SparkSession, shards: list[StreamShard]) -> DataFrame:
    """Shard descriptors as a DataFrame (SHARD_SCHEMA), one partition per shard."""
    rows = [(s.kind, s.path, s.start, s.end, s.seq_length, s.dtype, s.offset) for s in shards]
    return one_task_each(spark, rows, SHARD_SCHEMA)


def iter_stream_batches(shard: StreamShard, columns: Sequence[str] = ("row_id", "tokens"),
                        batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The rows of one shard as Arrow batches with `columns` (of row_id BIGINT, tokens LIST<INT32>), read here."""
    if shard.kind == "megatron":
        yield from _megatron_batches(shard, columns, batch_rows)
    elif shard.kind == "parquet":
        yield from _parquet_batches(shard, columns, batch_rows)
    else:
        raise ValueError(f"unknown stream shard kind {shard.kind!r}")


def shard_batches(descriptors: Iterator[pa.RecordBatch], columns: Sequence[str] = ("row_id", "tokens"),
                  batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """mapInArrow helper: batches of shard descriptors (SHARD_SCHEMA) -> the stream batches of every shard."""
    for batch in descriptors:
        for row in batch.to_pylist():
            yield from iter_stream_batches(StreamShard(**row), columns, batch_rows)


def _parquet_batches(shard: StreamShard, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    pf = storage.parquet_file(shard.path)
    meta = pf.metadata
    groups, first = [], 0
    for g in range(meta.num_row_groups):
        if shard.start <= first < shard.end and meta.row_group(g).num_rows:
            groups.append(g)
        first += meta.row_group(g).num_rows
    if not groups:
        return
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=list(columns), use_threads=False):
        yield batch.select(list(columns))


def _megatron_batches(shard: StreamShard, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    dtype = np.dtype(shard.dtype)
    n = shard.seq_length
    for lo in range(shard.start, shard.end, batch_rows):
        hi = min(shard.end, lo + batch_rows)
        mm = read_items(shard.path, dtype, shard.offset + lo * n * dtype.itemsize, (hi - lo) * n)
        arrays = {}
        if "row_id" in columns:
            arrays["row_id"] = pa.array(np.arange(lo, hi, dtype=np.int64))
        if "tokens" in columns:
            offsets = pa.array(np.arange(hi - lo + 1, dtype=np.int32) * n)
            arrays["tokens"] = pa.ListArray.from_arrays(offsets, pa.array(np.asarray(mm, dtype=np.int32)))
        del mm
        yield pa.RecordBatch.from_arrays([arrays[c] for c in columns], names=list(columns))
