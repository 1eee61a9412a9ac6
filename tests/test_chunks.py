"""Chunked commits read each chunk's rows only: the input is split once into scratch folders, one per chunk, and a
chunk's scan is pruned to its folder (the old filter on a hash of sequence_id rescanned the whole input per chunk)."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from semmem.config import load_config
from semmem.errors import ConfigError
from semmem.stages.chunks import chunks_of
from semmem.stages.registry import StageContext
from semmem.tables import Warehouse
from tests.conftest import TEST_OVERRIDES


def _ctx(spark, tmp_path) -> StageContext:
    cfg = load_config(None, [*TEST_OVERRIDES, f"warehouse={tmp_path / 'wh'}"])
    return StageContext(spark, cfg, Warehouse(spark, cfg.warehouse))


def _plan(df) -> str:
    return df._jdf.queryExecution().executedPlan().toString()  # noqa: SLF001 - the physical plan Spark runs


def test_each_chunk_reads_only_its_own_rows_and_the_input_is_split_once(spark, tmp_path, monkeypatch):
    ctx = _ctx(spark, tmp_path)
    source = tmp_path / "input"
    spark.createDataFrame([(i * 7 + 3, f"text {i % 25}") for i in range(100)], "sequence_id long, text string") \
        .write.parquet(str(source))
    rows = spark.read.parquet(str(source))
    splits = []
    real_scratch = Warehouse.scratch
    monkeypatch.setattr(Warehouse, "scratch", lambda self, df, **kw: splits.append(1) or real_scratch(self, df, **kw))
    for by in ("sequence_id", "text"):
        want = {r["sequence_id"]: r["c"] for r in rows.select(
            "sequence_id", F.pmod(F.xxhash64(by), F.lit(4)).alias("c")).collect()}  # the definition of a chunk
        with chunks_of(ctx, rows, rows_per_commit=30, by=by) as chunks:
            assert chunks.count == 4  # ceil(100 / 30)
            for _model in range(2):  # two tables fed from the same chunks (two scored models): one split
                for i in range(chunks.count):
                    chunk = chunks.rows(i)
                    plan = _plan(chunk)
                    assert all("/_semmem/scratch/" in f for f in chunk.inputFiles())  # not the input's files
                    assert "PartitionFilters: [isnotnull(_chunk" in plan and f"= {i})]" in plan, plan
                    got = [r["sequence_id"] for r in chunk.collect()]
                    assert sorted(got) == sorted(k for k, c in want.items() if c == i)
                    assert chunk.columns == ["sequence_id", "text"]
        assert not list((tmp_path / "wh").glob("_semmem/scratch/*"))  # removed when the block ends
    assert splits == [1, 1]
    # chunks by text: a text's copies are all in one chunk
    with chunks_of(ctx, rows, rows_per_commit=30, by="text") as chunks:
        texts = [{r["text"] for r in chunks.rows(i).collect()} for i in range(chunks.count)]
    assert sum(len(t) for t in texts) == len(set().union(*texts)) == 25


def test_one_chunk_reads_the_input_and_writes_no_scratch(spark, tmp_path):
    ctx = _ctx(spark, tmp_path)
    rows = spark.createDataFrame([(i, "x") for i in range(10)], "sequence_id long, text string")
    with chunks_of(ctx, rows, rows_per_commit=10) as chunks:
        assert chunks.count == 1 and chunks.rows(0) is rows
    assert not (tmp_path / "wh" / "_semmem").exists()
    with pytest.raises(ConfigError, match="^rows_per_commit = 0: give a positive number"):
        with chunks_of(ctx, rows, rows_per_commit=0):
            pass
