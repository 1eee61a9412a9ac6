"""semmem.compat, the one place where Spark 3.5 and 4.x differ: both spellings of each call give the same result
(the 3.5 one is run here on 4.x by switching the flag; `make spark3.5-test` runs the pipeline on 3.5 itself)."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from semmem import compat


@pytest.mark.parametrize("spark4", [True, False])
def test_to_arrow_is_the_rows_and_types_of_collect(spark, monkeypatch, spark4):
    monkeypatch.setattr(compat, "SPARK4", spark4)
    df = spark.createDataFrame([(1, "a", [1, 2]), (2, None, [])], "id BIGINT, s STRING, t ARRAY<INT>")
    got = compat.to_arrow(df)
    assert got.schema == pa.schema([("id", pa.int64()), ("s", pa.string()), ("t", pa.list_(pa.int32()))])
    assert got.to_pylist() == [r.asDict() for r in df.collect()]
    assert compat.to_arrow(df.where("id > 5")).num_rows == 0


def test_a_profile_on_spark35_is_said_once_and_the_stage_still_runs(spark, monkeypatch, caplog):
    monkeypatch.setattr(compat, "SPARK4", False)
    monkeypatch.setattr(compat, "_said", set())
    df = spark.range(4)

    def plus_one(frames):
        for f in frames:
            yield f + 1

    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            out = compat.map_batches(df, plus_one, "id BIGINT", profile=object())
            assert sorted(r.id for r in out.collect()) == [1, 2, 3, 4]
    assert caplog.text.count("stage-level scheduling of DataFrames needs Spark 4") == 1
    assert compat.map_batches(df, plus_one, "id BIGINT").count() == 4
