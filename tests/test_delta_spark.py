"""The two Delta backends on the same data: delta-spark (format("delta") through the Delta jar) and delta-rs (Spark
writes Parquet, delta-rs commits). Same tables, each reads what the other wrote (history included), partition
overwrite by (model, revision), SQL over delta.`path`.

These need a SparkSession with the Delta jars, so they run in their own pytest process: `make test-delta` (a line of
.ci/run) starts it with SEMMEM_TEST_DELTA_JARS=.jars; `make test` deselects them (marker delta_spark).
"""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from semmem.catalog import table
from semmem.config import with_overrides
from semmem.spark import delta_jar_available
from semmem.sql import run_sql
from semmem.stages import StageContext, run_stages
from semmem.tables import Warehouse
from tests import reference as ref

pytestmark = pytest.mark.delta_spark
BACKENDS = ("delta-spark", "delta-rs")
STAGES = ["duplicates", "frequencies"]
CORPUS_TABLES = ["token_rows", "sequences", "sequence_duplicates", "token_frequencies", "token_frequency_stats"]


def _rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


def _memorization(spark, model: str, revision: str, ids: range, score: float):
    rows = [(model, revision, i, score, score == 1.0, 32 if score == 1.0 else 0, 1.5, 2.5, 2.0, 10.0, 0.5, -1.0, -0.5,
             {32: score == 1.0}, 0.01) for i in ids]
    return spark.createDataFrame(rows, table("memorization").spark_schema)


@pytest.fixture(scope="module")
def warehouses(spark, tmp_path_factory):
    """The corpus stages run on the same stream and sequences with each backend (one warehouse each)."""
    assert delta_jar_available(spark), "this session should have the Delta jars (SEMMEM_TEST_DELTA_JARS)"
    rows, sequences = ref.make_stream(seed=21)
    out = {}
    for backend in BACKENDS:
        root = tmp_path_factory.mktemp(backend)
        cfg = with_overrides(_base_cfg(root), ["duplicates.hash_modulus=97"])
        wh = Warehouse(spark, root, backend=backend)
        wh.write(spark.createDataFrame(list(enumerate(rows)), "row_id BIGINT, tokens ARRAY<INT>"), "token_rows")
        seqs = [(sid, toks, f"text {sid}", f"t{sid}", "Pile-CC") for sid, toks in sequences.items()]
        wh.write(spark.createDataFrame(seqs, "sequence_id BIGINT, tokens ARRAY<INT>, text STRING, prompt_text STRING, "
                                             "pile_set_name STRING"), "sequences", metadata={"written_by": backend})
        assert run_stages(StageContext(spark, cfg, wh), STAGES) == STAGES
        out[backend] = wh
    return out


def _base_cfg(root):
    from semmem.config import load_config
    from tests.conftest import TEST_OVERRIDES

    return load_config(None, [*TEST_OVERRIDES, f"warehouse={root}"])


def test_both_backends_write_the_same_tables(warehouses):
    spark_wh, rs_wh = warehouses["delta-spark"], warehouses["delta-rs"]
    for name in CORPUS_TABLES:
        assert _rows(spark_wh.read(name)) == _rows(rs_wh.read(name)), name
        a, b = DeltaTable(str(spark_wh.path(name))), DeltaTable(str(rs_wh.path(name)))
        assert a.schema().to_arrow() == b.schema().to_arrow(), name
        assert a.metadata().partition_columns == b.metadata().partition_columns, name


def test_each_backend_reads_what_the_other_wrote(spark, warehouses):
    for writer in BACKENDS:
        written = warehouses[writer]
        for reader in BACKENDS:
            wh = Warehouse(spark, written.root, backend=reader)
            for name in ["sequences", "token_frequency_stats"]:
                assert _rows(wh.read(name)) == _rows(written.read(name)), (writer, reader, name)
            assert wh.commit_metadata("sequences") == {"written_by": writer}
            assert wh.version("sequences") == written.version("sequences") == 0
        # history: the Delta log each wrote is the one Spark's DESCRIBE HISTORY and delta-rs both read
        path = written.path("sequences")
        spark_history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "userMetadata").collect()
        rs_history = DeltaTable(str(path)).history()
        assert [r["version"] for r in spark_history] == [h["version"] for h in rs_history] == [0]
        assert spark_history[0]["userMetadata"] == '{"written_by": "' + writer + '"}'
        # the direct-read path (numpy tasks) sees the same rows in either's files
        assert sum(f.num_rows for f in written.snapshot_files("token_rows")) == written.read("token_rows").count()


@pytest.mark.parametrize("backend", BACKENDS)
def test_partition_overwrite_replaces_one_model_revision(spark, tmp_path, backend):
    wh = Warehouse(spark, tmp_path / "wh", backend=backend)
    wh.write(_memorization(spark, "m", "step1", range(5), 0.5), "memorization")
    wh.write(_memorization(spark, "m", "step2", range(5), 0.25), "memorization", mode="append")
    wh.write(_memorization(spark, "m", "step1", range(3), 1.0), "memorization", mode="overwrite",
             partition={"model": "m", "revision": "step1"})
    got = {(r["revision"], r["sequence_id"]): r["memorization_score"] for r in wh.read("memorization").collect()}
    assert got == {**{("step1", i): 1.0 for i in range(3)}, **{("step2", i): 0.25 for i in range(5)}}
    other = Warehouse(spark, wh.root, backend=[b for b in BACKENDS if b != backend][0])
    assert _rows(other.read("memorization")) == _rows(wh.read("memorization"))
    assert DeltaTable(str(wh.path("memorization"))).version() == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_sql_queries_the_tables(spark, warehouses, backend):
    wh = warehouses[backend]
    want = wh.read("sequence_duplicates").count()
    got = spark.sql(f"SELECT count(*) AS n FROM delta.`{wh.path('sequence_duplicates')}`").first()["n"]
    assert got == want
    joined = run_sql(wh.root, "SELECT count(*) AS n FROM sequences JOIN sequence_duplicates USING (sequence_id)",
                     engine="spark")
    assert joined.to_pydict() == {"n": [want]}
    total = "SELECT sum(frequency) AS n FROM token_frequencies"
    assert int(run_sql(wh.root, total, engine="datafusion")["n"][0].as_py()) == \
        int(run_sql(wh.root, total, engine="spark")["n"][0].as_py()) > 0
