"""The command line: `semmem sql` (DataFusion and Spark agree), `semmem tables`, job entry points, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from semmem.cli import job_main, main
from semmem.sql import run_sql
from tests.corpus import small_corpus, small_tokenizer


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory):
    """A warehouse ingested through the spark-submit entry point (jobs/ingest.py's main), in-process."""
    root = tmp_path_factory.mktemp("cli")
    small_corpus(root / "corpus")
    tok = small_tokenizer(root / "tokenizer.json")
    wh = root / "wh"
    rc = job_main("ingest", ["--config", "conf/local.yaml", "--set", f"input.path=[{root / 'corpus'}]",
                             "--set", f"tokenizer.name={tok}", "--set", "stream.seq_length=100",
                             "--set", f"warehouse={wh}"])
    assert rc == 0
    return wh


QUERIES = [
    "SELECT count(*) AS n FROM sequences",
    "SELECT sequence_id, pile_set_name, prompt_text FROM sequences ORDER BY sequence_id LIMIT 5",
    "SELECT s.sequence_id, size(t.tokens) AS n FROM sequences s JOIN token_rows t ON s.sequence_id = t.row_id "
    "ORDER BY s.sequence_id LIMIT 3",
]


@pytest.mark.parametrize("query", QUERIES)
def test_datafusion_and_spark_agree(spark, warehouse, query):
    df_query = query.replace("size(", "cardinality(")  # the one dialect difference these queries touch
    a = run_sql(warehouse, df_query, engine="datafusion")
    b = run_sql(warehouse, query, engine="spark")
    assert a.to_pylist() == b.to_pylist()
    assert a.to_pylist()  # non-empty


def test_sql_formats(warehouse, capsys):
    assert main(["sql", "--warehouse", str(warehouse), "--format", "csv", "SELECT count(*) AS n FROM sequences"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == '"n"' and int(out[1]) > 0
    main(["sql", "--warehouse", str(warehouse), "--format", "json",
          "SELECT sequence_id, tokens FROM sequences ORDER BY sequence_id LIMIT 2"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["sequence_id"] for r in rows] == [0, 1] and len(rows[0]["tokens"]) == 64
    main(["sql", "--warehouse", str(warehouse), "SELECT 1 AS one"])
    assert "| one |" in capsys.readouterr().out


def test_sql_and_tables_errors(warehouse, tmp_path, capsys):
    assert main(["sql", "--warehouse", str(warehouse), "SELECT nope FROM sequences"]) == 2
    assert "SQL failed" in capsys.readouterr().err
    assert main(["tables", "--warehouse", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["datafusion", "spark"])
@pytest.mark.parametrize("query, refused", [
    ("COPY (SELECT * FROM sequences) TO '{out}/copy.csv' STORED AS CSV", "COPY statements are refused"),
    ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/hostname'", "CREATE statements are refused"),
    ("CREATE TABLE x AS SELECT * FROM sequences", "CREATE statements are refused"),
    ("INSERT INTO sequences SELECT * FROM sequences", "INSERT statements are refused"),
    ("DROP TABLE sequences", "DROP statements are refused"),
    ("SELECT * INTO copied FROM sequences", "SELECT ... INTO statements are refused"),
    ("SELECT * FROM read_csv('/etc/hostname')", "is not one of them"),
    ("SELECT * FROM elsewhere", "'elsewhere' is not one of them"),
    ("SELECT 1; SELECT 2", "one query at a time; found 2 statements"),
])
def test_sql_runs_read_only_queries_over_the_warehouse_only(warehouse, tmp_path, capsys, engine, query, refused):
    """Each kind of statement that writes, or reads outside the warehouse, is refused before an engine sees it."""
    assert main(["sql", "--warehouse", str(warehouse), "--engine", engine, query.format(out=tmp_path)]) == 2
    assert refused in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_spark_path_tables_are_refused(warehouse, capsys):
    assert main(["sql", "--warehouse", str(warehouse), "--engine", "spark", "SELECT * FROM parquet.`/etc`"]) == 2
    assert "is not one of them" in capsys.readouterr().err
    assert main(["sql", "--warehouse", str(warehouse), "WITH s AS (SELECT sequence_id FROM sequences) "
                 "SELECT count(*) AS n FROM s"]) == 0  # a CTE is a query over the warehouse


def test_tables_lists_versions_and_rows(warehouse, capsys):
    assert main(["tables", "--warehouse", str(warehouse)]) == 0
    out = capsys.readouterr().out
    assert "sequences" in out and "token_rows" in out and "ingest_rejects" in out


def test_unknown_stage_and_bad_config_exit_2(tmp_path, capsys):
    assert main(["run", "--stages", "ingest,nope", "--set", f"warehouse={tmp_path}"]) == 2
    assert "unknown stage 'nope'" in capsys.readouterr().err
    assert main(["run", "--set", "sample.size=x"]) == 2
    assert "sample.size must be an integer" in capsys.readouterr().err


def test_stages_command_lists_the_registry(capsys):
    assert main(["stages"]) == 0
    assert capsys.readouterr().out.startswith("ingest")


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "semmem.cli", "--help"], capture_output=True, text=True, check=True)
    assert "sql" in out.stdout and "tables" in out.stdout and "run" in out.stdout
