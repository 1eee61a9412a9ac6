"""The Delta table layer: one commit per write, modes, partitions, failures, and readers other than Spark."""

from __future__ import annotations

from pathlib import Path

import duckdb
import duckdb_extension_delta
import polars as pl
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from semmem.catalog import TABLES, table
from semmem.errors import TableError
from semmem.tables import Warehouse, list_tables

MEM_COLS = ("model string, revision string, sequence_id long, memorization_score double, is_memorized boolean, "
            "matched_prefix int, prompt_perplexity double, generation_perplexity double, sequence_perplexity double, "
            "continuation_nll_bits double, loss double, min_k_prob double, min_k_plus_plus double, "
            "memorized_at map<int,boolean>, zlib_ratio double")


def _rows(spark, n: int, start: int = 0):
    return spark.createDataFrame([(i, [i, i + 1, 0]) for i in range(start, start + n)], "row_id long, tokens array<int>")


def _mem(spark, model: str, revision: str, n: int, score: float):
    return spark.createDataFrame([(model, revision, i, score, score == 1.0, 32, 1.5, 2.5, 3.5, 40.0, 1.25, -3.0, -1.5,
                                   {8: False, 32: score == 1.0}, 0.02) for i in range(n)], MEM_COLS)


def test_catalog_schemas_agree():
    for t in TABLES.values():
        assert [f.name for f in t.spark_schema.fields] == t.schema.names
        assert set(t.key) <= set(t.columns) and set(t.partition_by) <= set(t.columns)
    with pytest.raises(TableError, match="unknown table 'nope'"):
        table("nope")


def test_write_modes_and_versions(spark, tmp_path):
    wh = Warehouse(spark, tmp_path)
    assert wh.backend.name == "delta-rs"  # no Delta jar in tests
    assert wh.write(_rows(spark, 10), "token_rows") == 0
    with pytest.raises(TableError, match="already exists"):
        wh.write(_rows(spark, 10), "token_rows")
    assert wh.write(_rows(spark, 5, start=10), "token_rows", mode="append") == 1
    assert sorted(r[0] for r in wh.read("token_rows").select("row_id").collect()) == list(range(15))
    assert wh.write(_rows(spark, 3), "token_rows", mode="overwrite") == 2
    assert wh.read("token_rows").count() == 3
    # Time travel: the earlier versions are still in the log.
    assert DeltaTable(str(wh.path("token_rows")), version=1).to_pyarrow_table().num_rows == 15


def test_read_missing_table_says_which_stage(spark, tmp_path):
    wh = Warehouse(spark, tmp_path)
    with pytest.raises(TableError, match="table 'sequences' does not exist"):
        wh.read("sequences")


def test_columns_conformed_and_checked(spark, tmp_path):
    wh = Warehouse(spark, tmp_path)
    df = spark.createDataFrame([([1, 2], 7, "extra")], "tokens array<int>, row_id int, junk string")
    wh.write(df, "token_rows")
    got = wh.read("token_rows")
    assert got.schema == table("token_rows").spark_schema
    assert got.collect()[0].asDict() == {"row_id": 7, "tokens": [1, 2]}
    with pytest.raises(TableError, match=r"needs columns \['tokens'\]"):
        wh.write(spark.createDataFrame([(1,)], "row_id long"), "token_rows", mode="overwrite")


def test_partition_overwrite_touches_only_its_partition(spark, tmp_path):
    wh = Warehouse(spark, tmp_path)
    a = {"model": "EleutherAI/pythia-70m", "revision": "step143000"}
    b = {"model": "EleutherAI/pythia-70m", "revision": "step1000"}
    wh.write(_mem(spark, a["model"], a["revision"], 4, 1.0), "memorization", mode="overwrite", partition=a)
    wh.write(_mem(spark, b["model"], b["revision"], 3, 0.5), "memorization", mode="overwrite", partition=b)
    wh.write(_mem(spark, b["model"], b["revision"], 2, 0.25), "memorization", mode="overwrite", partition=b)
    got = {(r["revision"], r["sequence_id"]): r["memorization_score"] for r in wh.read("memorization").collect()}
    assert got == {**{("step143000", i): 1.0 for i in range(4)}, **{("step1000", i): 0.25 for i in range(2)}}
    with pytest.raises(TableError, match="partition keys"):
        wh.write(_mem(spark, "m", "r", 1, 0.0), "memorization", mode="overwrite", partition={"model": "m"})


def test_failed_write_keeps_previous_version(spark, tmp_path):
    wh = Warehouse(spark, tmp_path)
    wh.write(_rows(spark, 6), "token_rows")
    boom = _rows(spark, 6).withColumn("row_id", F.expr("if(row_id = 3, raise_error('boom'), row_id)"))
    with pytest.raises(Exception, match="boom"):
        wh.write(boom, "token_rows", mode="overwrite")
    assert wh.version("token_rows") == 0
    assert wh.read("token_rows").count() == 6
    leftovers = [p for p in Path(wh.path("token_rows")).iterdir() if p.name.startswith("_semmem_write_")]
    assert len(leftovers) == 1  # only the committed write's folder remains


def test_other_readers_see_the_same_tables(spark, tmp_path):
    """delta-rs, polars and DuckDB read what the Spark + delta-rs writer committed."""
    wh = Warehouse(spark, tmp_path)
    wh.write(_rows(spark, 8), "token_rows")
    a = {"model": "org/m-1", "revision": "main"}
    wh.write(_mem(spark, a["model"], a["revision"], 5, 0.75), "memorization", mode="overwrite", partition=a)
    expected = sorted((r["row_id"], tuple(r["tokens"])) for r in wh.read("token_rows").collect())
    dt = DeltaTable(str(wh.path("token_rows"))).to_pyarrow_table().to_pylist()
    assert sorted((r["row_id"], tuple(r["tokens"])) for r in dt) == expected
    pl_rows = pl.read_delta(str(wh.path("token_rows"))).rows()
    assert sorted((r[0], tuple(r[1])) for r in pl_rows) == expected
    mem = pl.read_delta(str(wh.path("memorization")))
    assert mem.select("model", "revision").unique().rows() == [("org/m-1", "main")]
    con = duckdb.connect()
    con.execute(f"LOAD '{next(Path(duckdb_extension_delta.__file__).parent.rglob('*.duckdb_extension'))}'")
    n = con.execute(f"SELECT count(*) FROM delta_scan('{wh.path('memorization')}')").fetchone()[0]
    assert n == 5


def test_list_tables(spark, tmp_path):
    wh = Warehouse(spark, tmp_path)
    wh.write(_rows(spark, 8), "token_rows")
    wh.write(_rows(spark, 2), "token_rows", mode="append")
    infos = {i.name: i for i in list_tables(tmp_path)}
    assert set(infos) == {"token_rows", "stage_runs"}  # writes outside a stage run are published at once
    info = infos["token_rows"]
    assert (info.version, info.num_rows, info.num_files >= 2) == (1, 10, True)


def test_delta_spark_backend_without_the_jar_is_a_clear_error(spark, tmp_path):
    # the main test session has no Delta jar: asking for the delta-spark writer says what to do, writes nothing
    with pytest.raises(TableError, match="no Delta jar and extension: set spark.delta_jars"):
        Warehouse(spark, tmp_path / "wh", backend="delta-spark")
    assert not list((tmp_path / "wh").glob("*/_delta_log"))


def test_delta_jars_folder_without_the_jar_is_a_config_error(tmp_path):
    from semmem.compat import SCALA
    from semmem.errors import ConfigError
    from semmem.spark import delta_conf

    (tmp_path / "delta-storage-4.4.0.jar").write_bytes(b"")
    with pytest.raises(ConfigError, match="no delta-spark jar there; run `make jars`"):
        delta_conf(str(tmp_path))
    other = "2.12" if SCALA == "2.13" else "2.13"
    (tmp_path / f"delta-spark_{other}-4.4.0.jar").write_bytes(b"")  # the other Spark line's build
    with pytest.raises(ConfigError, match=f"delta-spark_{other}-4.4.0.jar is built for another Scala than this "
                                          f"pyspark .* \\(Scala {SCALA}\\)"):
        delta_conf(str(tmp_path))
    (tmp_path / f"delta-spark_{other}-4.4.0.jar").unlink()
    (tmp_path / f"delta-spark_{SCALA}-4.4.0.jar").write_bytes(b"")
    conf = delta_conf(str(tmp_path))
    assert conf["spark.jars"].split(",") == [str(tmp_path / f"delta-spark_{SCALA}-4.4.0.jar"),
                                             str(tmp_path / "delta-storage-4.4.0.jar")]
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"


def test_a_warehouse_from_before_the_publication_log_is_adopted(spark, tmp_path):
    """Tables of a warehouse without the log are read at their newest version; the first stage run adopts them."""
    import shutil

    wh = Warehouse(spark, tmp_path)
    wh.write(_rows(spark, 8), "token_rows")
    wh.write(_rows(spark, 3), "token_rows", mode="append")
    shutil.rmtree(tmp_path / "stage_runs")  # as made before the log existed
    old = Warehouse(spark, tmp_path)
    assert old.pubs is None and old.version("token_rows") == 1 and old.read("token_rows").count() == 11
    old.begin_stage("huffman", ["huffman"], {}, {})
    old.abort()
    adopted = Warehouse(spark, tmp_path)
    [row] = adopted.pubs.rows
    assert (row.stage, row.table_name, row.version) == ("(adopted)", "token_rows", 1)


def test_a_stage_run_publishes_its_tables_together(spark, tmp_path):
    wh = Warehouse(spark, tmp_path)
    wh.begin_stage("frequencies", ["token_frequencies", "huffman"], {"x": 1}, {"sequences": 3})
    wh.write(_rows(spark, 4).select(F.col("row_id").cast("int").alias("token_id"),
                                    F.col("row_id").alias("frequency")), "token_frequencies", mode="overwrite")
    assert wh.exists("token_frequencies")  # the running stage reads its own commits
    other = Warehouse(spark, tmp_path)
    assert not other.exists("token_frequencies")  # nobody else sees them yet
    assert [i.name for i in list_tables(tmp_path)] == ["stage_runs"]
    wh.publish()
    other.refresh()
    assert other.version("token_frequencies") == 0
    assert other.commit_metadata("token_frequencies")["lineage"]["inputs"] == {"sequences": 3}
    assert other.is_current("frequencies", {"x": 1}, {"sequences": 3})
    assert not other.is_current("frequencies", {"x": 2}, {"sequences": 3})
    assert not other.is_current("frequencies", {"x": 1}, {"sequences": 4})
