"""Clean errors everywhere: every bad input, broken environment or failure inside a Spark task reaches the user as one
`semmem: error: ...` line (plus the path of the log file holding the full trace), a non-zero exit status, and the
tables already in the warehouse unchanged (same Delta version, same rows)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from semmem import failures
from semmem.catalog import table
from semmem.cli import main
from semmem.errors import InputError, ModelError
from semmem.scoring.memorization import check_batch, fixed_length_tokens, score_sequences
from semmem.scoring.models import check_local_files, check_model_available, parse_model_spec
from semmem.tables import Warehouse
from semmem.taxonomy import taxonomy_model
from tests.synthetic import synthetic_combined
from tests.conftest import TEST_OVERRIDES
from tests.corpus import small_tokenizer
from tests.test_scoring import VOCAB, tiny_model

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "logs"
    monkeypatch.setenv(failures.LOG_DIR_ENV, str(folder))
    return folder


def one_error(err: str) -> tuple[str, Path]:
    """The message of the one `semmem: error:` line of `err`, and the log file the next line names (it exists and
    holds the traceback); no traceback on the console."""
    lines = err.splitlines()
    errors = [x for x in lines if x.startswith("semmem: error:")]
    assert len(errors) == 1, err
    traces = [x for x in lines if x.startswith("semmem: full trace: ")]
    assert len(traces) == 1, err
    assert "Traceback (most recent call last)" not in err and "\tat org.apache" not in err, err
    log = Path(traces[0].removeprefix("semmem: full trace: "))
    assert log.is_file() and "Traceback (most recent call last)" in log.read_text(), log
    return errors[0].removeprefix("semmem: error: "), log


def run_cli(capsys, *argv: str) -> tuple[int, str, Path]:
    rc = main(list(argv))
    message, log = one_error(capsys.readouterr().err)
    return rc, message, log


def settings(wh: Path, *extra: str) -> list[str]:
    return [x for o in [*TEST_OVERRIDES, f"warehouse={wh}", *extra] for x in ("--set", o)]


def snapshot(root: Path, skip: str | None = None) -> dict[str, tuple[int, list[str]]]:
    """Each Delta table of a warehouse (but `skip`): (version, its rows) read by delta-rs."""
    out = {}
    for d in sorted(p for p in root.iterdir() if (p / "_delta_log").is_dir() and p.name != skip):
        dt = DeltaTable(str(d))
        out[d.name] = (dt.version(), sorted(map(repr, dt.to_pyarrow_table().to_pylist())))
    return out


def write_table(spark, wh: Path, name: str, rows: list[tuple], schema: str) -> None:
    Warehouse(spark, wh).write(spark.createDataFrame(rows, schema), name, mode="overwrite")


SEQ_SCHEMA = "sequence_id long, tokens array<int>, text string, prompt_text string, pile_set_name string"
MEM_SCHEMA = ("model string, revision string, sequence_id long, memorization_score double, is_memorized boolean, "
              "matched_prefix int, prompt_perplexity double, generation_perplexity double, "
              "sequence_perplexity double, continuation_nll_bits double, loss double, min_k_prob double, "
              "min_k_plus_plus double, memorized_at map<int,boolean>, zlib_ratio double")


def sequence_rows(n: int = 12, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    return [(i, [int(t) for t in rng.integers(2, VOCAB, 64)], "", "", "x") for i in range(n)]


def scored_warehouse(spark, wh: Path, rows: list[tuple]) -> Path:
    """sequences = `rows`, and a memorization table of another model already there."""
    write_table(spark, wh, "sequences", rows, SEQ_SCHEMA)
    write_table(spark, wh, "memorization", [("other", "main", r[0], 0.5, False, 3, 2.0, 3.0, 4.0, 5.0, 1.0, -2.0, -1.0,
                                          {32: False}, 0.01) for r in rows],
                MEM_SCHEMA)
    return wh


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny"
    tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def weightless_model(model_dir) -> Path:
    """A folder with the model's config.json and no weights: the driver's check passes, executors cannot load it."""
    folder = model_dir.parent / "config-only"
    folder.mkdir()
    shutil.copy(model_dir / "config.json", folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    return small_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mountpoint` (skip when mounting is not permitted), unmounted at the end."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


# --------------------------------------------------------------------------------------- the translator and logs
def test_log_file_location_rule(monkeypatch, tmp_path):
    monkeypatch.delenv(failures.LOG_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert failures.log_dir() == tmp_path / "xdg" / "semmem" / "logs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert failures.log_dir() == tmp_path / "home" / ".cache" / "semmem" / "logs"
    monkeypatch.setenv(failures.LOG_DIR_ENV, str(tmp_path / "mine"))
    path = failures.start_log()
    assert path.parent == tmp_path / "mine" and path.name.startswith("semmem-")
    assert path.name.endswith(f"-{os.getpid()}.log")


def test_unexpected_error_and_interrupt_are_one_line(log_dir):
    def fail(exc: BaseException) -> tuple[int, str]:
        try:
            raise exc
        except BaseException as e:  # noqa: BLE001
            out = io.StringIO()
            return failures.report(e, stream=out), out.getvalue()

    rc, err = fail(ZeroDivisionError("division by zero"))
    message, log = one_error(err)
    assert rc == 1 and message == "unexpected ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in log.read_text() and log.parent == log_dir
    rc, err = fail(KeyboardInterrupt())
    assert rc == 130 and one_error(err)[0] == "interrupted"
    rc, err = fail(InputError("bad\ninput"))
    assert rc == 2 and one_error(err)[0] == "bad input"


class FakeSparkError(Exception):
    """Stands for a Py4JJavaError / CapturedException: the worker's and the JVM's traces are only text."""


WORKER = ("org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 3.0 failed 1 times\n"
          "Caused by: org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n"
          '  File "/x/worker.py", line 5, in f\n    raise {raise_}\n{last}\n SQLSTATE: 38000\n'
          "\tat org.apache.spark.api.python.BasePythonRunner.handlePythonException(PythonRunner.scala:665)\n")


@pytest.mark.parametrize("text, kind, want", [
    (WORKER.format(raise_="InputError(...)", last="semmem.errors.InputError: sequence 3 is bad"), "worker",
     "sequence 3 is bad"),
    (WORKER.format(raise_="ValueError(...)", last="ValueError: cannot reshape array of size 40"), "unexpected",
     "unexpected ValueError in a Spark task: cannot reshape array of size 40"),
    (("org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to "
     "file:/data/wh/sequences/_semmem_write_1.\nCaused by: java.io.IOException: No space left on device\n"
     "\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)"), "disk",
     ("no space left on device writing /data/wh/sequences/_semmem_write_1 (warehouse /data/wh): free space on the "
     "filesystem of /data/wh, or set warehouse to a folder with room.")),
    ("java.io.FileNotFoundException: /tmp/blockmgr-1/0a/shuffle_0_1_0.data (No space left on device)", "disk",
     ("no space left on device writing /tmp/blockmgr-1/0a/shuffle_0_1_0.data: free space on the filesystem of "
     "/tmp/blockmgr-1/0a/shuffle_0_1_0.data (Spark's scratch space: point spark.conf.spark.local.dir to a bigger "
     "disk).")),
    (("org.apache.spark.sql.delta.DeltaAnalysisException: [DELTA_INVALID_LOG] cannot read "
     "file:/data/wh/combined/_delta_log/00000000000000000003.json"), "delta_log",
     "table 'combined' (/data/wh/combined): its Delta log (/data/wh/combined/_delta_log) is corrupt or unreadable"),
    ("An error occurred while calling o57.collectToPython.\n: java.lang.OutOfMemoryError: Java heap space",
     "unexpected", "unexpected FakeSparkError: java.lang.OutOfMemoryError: Java heap space"),
], ids=["worker-semmem-error", "worker-other-error", "java-enospc-in-warehouse", "enospc-in-spark-scratch",
        "delta-spark-log", "java-oom"])
def test_translate_spark_texts(text, kind, want):
    f = failures.translate(FakeSparkError(text), warehouse="/data/wh")
    assert f.kind == kind and f.message.startswith(want), f.message
    assert f.exit_code == (1 if kind == "unexpected" else 2)


def test_python_permission_error_names_the_path(tmp_path):
    e = PermissionError(13, "Permission denied", str(tmp_path / "wh" / "_semmem" / "runs" / "x.json"))
    f = failures.translate(e, warehouse=str(tmp_path / "wh"))
    assert f.message.startswith(f"permission denied on {tmp_path}/wh/_semmem/runs/x.json (warehouse {tmp_path}/wh): "
                                f"give this user access to {tmp_path}/wh, or set warehouse to a folder you can write")


def test_success_prints_nothing_extra_and_logs_the_run(capsys, log_dir):
    assert main(["stages"]) == 0
    captured = capsys.readouterr()
    assert "semmem:" not in captured.err and "full trace" not in captured.out
    assert len(list(log_dir.glob("semmem-*.log"))) == 1


# ------------------------------------------------------------------------------------- errors raised in executors
def test_executor_error_through_the_command_line(spark, tmp_path, log_dir, model_dir):
    """`semmem run` as a user runs it (its own process and JVM), with an error raised in the Spark tasks (a token id
    outside the model's vocabulary, found by the scoring task): one line on the console, the Java and Python-worker
    traces only in the log file, the warehouse's tables unchanged."""
    rows = sequence_rows(5)
    rows[2] = (2, [*rows[2][1][:9], 500, *rows[2][1][10:]], "", "", "x")
    wh = scored_warehouse(spark, tmp_path / "wh", rows)
    before = snapshot(wh)
    env = {**os.environ, failures.LOG_DIR_ENV: str(log_dir), "PYSPARK_PYTHON": sys.executable}
    env.pop("SPARK_SUBMIT_OPTS", None)
    done = subprocess.run([sys.executable, "-m", "semmem.cli", "run", "--stages", "score",
                           *settings(wh, f"model.names=[{model_dir}]", "spark.master=local[1]")],
                          check=False, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 2, done.stderr
    message, log = one_error(done.stderr)
    assert message.startswith("sequence 2 has token id 500 at position 9, outside the vocabulary"), message
    text = log.read_text()
    assert "semmem.errors.InputError" in text and "org.apache.spark" in text  # worker and JVM traces
    assert "JVM ERROR" in text  # the JVM's own log4j lines went to the file, not the console
    assert "stage score: starting" in text  # the run's log
    assert snapshot(wh) == before


def test_model_folder_without_weights(weightless_model):
    with pytest.raises(ModelError, match=f"^cannot load model from local folder {weightless_model}: it has no "
                                         r"weights \(model.safetensors or pytorch_model.bin\)"):
        check_local_files(parse_model_spec(str(weightless_model)))
    check_model_available(parse_model_spec(str(weightless_model)))  # the driver's check reads config.json only


def test_token_id_outside_the_vocabulary(spark, capsys, tmp_path, model_dir):
    """In the scoring tasks, before the model sees it: a token id the model has no embedding for."""
    rows = sequence_rows()
    rows[5] = (17, [*rows[5][1][:40], 500, *rows[5][1][41:]], "", "", "x")
    want = f"sequence 17 has token id 500 at position 40, outside the vocabulary of model {model_dir}@local " \
           f"({VOCAB} ids, 0..{VOCAB - 1})"
    wh = scored_warehouse(spark, tmp_path / "wh", rows)
    before = snapshot(wh)
    rc, message, _ = run_cli(capsys, "run", "--stages", "score",
                             *settings(wh, f"model.names=[{model_dir}]", "score.batch_size=8"))
    assert rc == 2 and message.startswith(want), message
    assert snapshot(wh) == before


def test_short_and_null_sequences_reach_the_check_with_their_length(spark):
    """Spark hands the scoring UDF every row as exactly 64 ids plus its real length (-1: NULL), so check_batch can
    name a short or NULL sequence (numpy's reshape inside pyspark would fail first on the raw rows)."""
    df = spark.createDataFrame([(1, list(range(64))), (2, [7] * 40), (3, None), (4, list(range(70)))],
                               "sequence_id long, tokens array<int>")
    got = {r.sequence_id: (r.n, r.t) for r in df.select("sequence_id", *(
        c.alias(a) for c, a in zip(fixed_length_tokens(), ("n", "t")))).collect()}
    assert got == {1: (64, list(range(64))), 2: (40, [7] * 40 + [-1] * 24), 3: (-1, [-1] * 64),
                   4: (70, list(range(64)))}


def test_check_batch_short_null_and_negative_ids():
    tokens = np.full((3, 64), 5)
    with pytest.raises(InputError, match=r"^sequence 8 has 40 tokens; scoring needs exactly 64 .*\(1 such sequence"):
        check_batch(np.array([7, 8, 9]), np.array([64, 40, 64]), tokens, VOCAB, "m@main")
    with pytest.raises(InputError, match=r"^sequence 9 has NULL tokens; scoring needs exactly 64"):
        check_batch(np.array([7, 8, 9]), np.array([64, 64, -1]), tokens, VOCAB, "m@main")
    tokens[2, 3] = -1
    with pytest.raises(InputError, match=r"^sequence 9 has token id -1 at position 3, outside the vocabulary of "
                                         r"model m@main \(128 ids, 0..127\); 1 sequence\(s\)"):
        check_batch(np.array([7, 8, 9]), np.array([64, 64, 64]), tokens, VOCAB, "m@main")
    check_batch(np.array([7]), np.array([64]), np.full((1, 64), VOCAB - 1), VOCAB, "m@main")


def test_vocabulary_mismatch(spark, tmp_path, model_dir):
    """A tokenizer larger than the model's embedding: on the driver (config) and in the tasks (the loaded model)."""
    spec = parse_model_spec(str(model_dir))
    with pytest.raises(ModelError, match=f"has 600 tokens but model {model_dir}@local embeds only {VOCAB} ids"):
        check_model_available(spec, tokenizer_vocab=600)
    check_model_available(spec, tokenizer_vocab=VOCAB)
    df = spark.createDataFrame(sequence_rows(4), SEQ_SCHEMA)
    with pytest.raises(Exception) as caught:
        score_sequences(df, spec, tokenizer_vocab=600, batch_size=8).collect()
    f = failures.translate(caught.value)
    assert (f.kind, f.exit_code) == ("worker", 2)
    assert f.message.startswith("vocabulary mismatch: the tokenizer the sequences were made with has 600 tokens but "
                                f"model {model_dir}@local embeds only {VOCAB} ids on host ")


def test_model_path_missing_on_an_executor(spark, tmp_path, model_dir):
    """The folder exists on the driver when the plan is made, not when the tasks load it (as on a node without the
    shared filesystem): the tasks say so, naming their host; the same for the embedding model."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    spec = parse_model_spec(str(folder))
    df = spark.createDataFrame(sequence_rows(4), SEQ_SCHEMA)
    plan = score_sequences(df, spec, batch_size=8)
    shutil.rmtree(folder)
    with pytest.raises(Exception) as caught:
        plan.collect()
    out = io.StringIO()
    assert failures.report(caught.value, stream=out) == 2
    message, log = one_error(out.getvalue())
    assert message.startswith(f"model folder {folder} does not exist on host ")
    assert "every node that runs tasks needs the model at that same path" in message
    assert "semmem.errors.ModelError" in log.read_text()

    from semmem.features.embeddings import embed_sequences

    with pytest.raises(Exception) as caught:
        embed_sequences(df, str(tmp_path / "no-embedder"), partitions=1).collect()
    f = failures.translate(caught.value)
    assert f.kind == "worker" and f.message.startswith(f"embedding model folder {tmp_path / 'no-embedder'} does "
                                                       "not exist on host ")


# ------------------------------------------------------------------------------------------------------ bad input
def test_sequences_shorter_than_64_tokens(spark, capsys, tmp_path, tokenizer):
    path = tmp_path / "seqs.parquet"
    pq.write_table(pa.table({"sequence_id": [4, 5, 6], "tokens": [[3] * 64, [3] * 40, [3] * 64]}), path)
    wh = tmp_path / "wh"
    write_table(spark, wh, "sequences", sequence_rows(3), SEQ_SCHEMA)
    before = snapshot(wh)
    rc, message, _ = run_cli(capsys, "run", "--stages", "ingest",
                             *settings(wh, "input.format=sequences-parquet", f"input.path=[{path}]",
                                       f"tokenizer.name={tokenizer}"))
    assert rc == 2 and message == "sequence 5 has 40 tokens; sequences need 64"
    assert snapshot(wh) == before


def test_nan_and_infinite_features_are_dropped_counted_and_logged(caplog):
    rows = synthetic_combined(600, seed=3)
    rows.loc[rows.index[:7], "prompt_perplexity"] = np.nan
    rows.loc[rows.index[7:10], "generation_perplexity"] = np.inf
    rows.loc[rows.index[10:12], "huffman_coding_length"] = None
    with caplog.at_level(logging.WARNING, logger="semmem"):
        result = taxonomy_model(rows, bootstrap_rounds=5)
    sel = result.split.selection
    assert sel.dropped_rows == {"generation_perplexity": 3, "prompt_perplexity": 7, "huffman_coding_length": 2}
    assert len(result.split.train.y) + len(result.split.test.y) == 600 - 12
    assert "12 of 600 rows dropped before fitting for a NULL, NaN or infinite value" in caplog.text
    assert np.isfinite(result.split.train.raw).all()


def test_no_complete_row_stops_the_taxonomy_stage(spark, capsys, tmp_path):
    """Every row NaN or infinite in some feature: a clear error naming the columns, no table written."""
    rows = synthetic_combined(300, seed=5)
    rows.loc[rows.index[::2], "prompt_perplexity"] = np.nan
    rows.loc[rows.index[1::2], "sequence_perplexity"] = np.inf
    wh = tmp_path / "wh"
    combined = table("combined")
    frame = pd.DataFrame({c: rows.get(c) for c in combined.columns})
    Warehouse(spark, wh).write(spark.createDataFrame(frame, combined.spark_schema), "combined")
    before = snapshot(wh)
    rc, message, _ = run_cli(capsys, "run", "--stages", "taxonomy",
                             *settings(wh, "taxonomy.kl_bootstrap_rounds=5", "taxonomy.bootstrap_rounds=5"))
    assert rc == 2
    assert message.startswith("taxonomy synthetic@main: none of the 300 rows of combined can be fitted")
    assert "prompt_perplexity 150, sequence_perplexity 150" in message
    assert snapshot(wh) == before


# -------------------------------------------------------------------------------------------------- the warehouse
def test_read_only_warehouse(spark, capsys, tmp_path, model_dir):
    with tmpfs(tmp_path / "ro", "64m") as mnt:
        wh = scored_warehouse(spark, mnt / "wh", sequence_rows())
        before = snapshot(wh)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        rc, message, _ = run_cli(capsys, "run", "--stages", "score", *settings(wh, f"model.names=[{model_dir}]"))
        assert rc == 2
        assert message.startswith(f"read-only file system writing {wh}/"), message
        assert f"remount {wh} read-write, or set warehouse to a writable folder" in message
        assert snapshot(wh) == before


def test_full_warehouse(spark, capsys, tmp_path, tokenizer):
    """A filesystem with about 300 KB free: the Spark tasks writing a 1 MB table fail; the earlier table stays."""
    rng = np.random.default_rng(0)
    big = tmp_path / "big.parquet"
    pq.write_table(pa.table({"sequence_id": np.arange(8000), "tokens": list(rng.integers(2, 600, (8000, 64)))}), big)
    with tmpfs(tmp_path / "full", "8m") as mnt:
        wh = mnt / "wh"
        write_table(spark, wh, "sequences", sequence_rows(), SEQ_SCHEMA)
        before = snapshot(wh)
        st = os.statvfs(mnt)
        with (mnt / "filler").open("wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 300_000))
        rc, message, _ = run_cli(capsys, "run", "--stages", "ingest",
                                 *settings(wh, "input.format=sequences-parquet", f"input.path=[{big}]",
                                           f"tokenizer.name={tokenizer}"))
        assert rc == 2
        assert message.startswith(f"no space left on device writing {wh}/"), message
        assert f"free space on the filesystem of {wh}, or set warehouse to a folder with room" in message
        (mnt / "filler").unlink()
        assert snapshot(wh) == before


def test_corrupt_delta_log(spark, capsys, tmp_path, model_dir):
    wh = scored_warehouse(spark, tmp_path / "wh", sequence_rows())
    write_table(spark, wh, "sequences", sequence_rows(seed=1), SEQ_SCHEMA)  # version 1
    newest = max((wh / "sequences" / "_delta_log").glob("*.json"))
    newest.write_bytes(b'{"commitInfo": garbage\nnot json at all\n')
    damaged = {p: p.read_bytes() for p in (wh / "sequences").rglob("*") if p.is_file()}
    others = snapshot(wh, skip="sequences")
    for argv in (["tables", "--warehouse", str(wh)],
                 ["run", "--stages", "score", *settings(wh, f"model.names=[{model_dir}]")]):
        rc, message, _ = run_cli(capsys, *argv)
        assert rc == 2
        assert message.startswith(f"table 'sequences' ({wh / 'sequences'}): its Delta log "
                                  f"({wh / 'sequences'}/_delta_log) is corrupt or unreadable"), message
        assert "re-run stage 'ingest'" in message
    assert {p: p.read_bytes() for p in (wh / "sequences").rglob("*") if p.is_file()} == damaged
    assert snapshot(wh, skip="sequences") == others

