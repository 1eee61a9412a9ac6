"""Reliability: a stage's tables become visible together or not at all, lineage decides what reruns, model stages
resume after a failure (also a SIGKILLed driver), and two writers of one stage cannot both win."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from semmem import tables
from semmem.cli import main as cli_main
from semmem.cli import run_pipeline
from semmem.config import Config, load_config, with_overrides
from semmem.ingest.tokenizer import saved_tokenizer_json, train_bpe
from semmem.lineage import status_rows
from semmem.stages import REGISTRY
from semmem.tables import Warehouse, latest_version
from semmem.warehouse import publications
from semmem.warehouse.backends import DeltaBackend
from tests.corpus import documents, small_corpus
from tests.test_scoring import tiny_model
from tests.warehouses import assert_same_warehouse, table_rows


class InjectedFailure(Exception):
    pass


def _snapshot(spark, root: str) -> dict:
    """Every published table: its version and rows, and the tokenizer its lineage pairs it with."""
    wh = Warehouse(spark, root)
    out = {i.name: (i.version, table_rows(root, i.name)) for i in tables.list_tables(root) if i.name != tables.RUNS}
    out["tokenizer"] = saved_tokenizer_json(root, wh.side_file("sequences", "tokenizer"))
    return out


def _fail_after(monkeypatch, commits: int) -> None:
    """Let `commits` Delta commits through, then fail the next write (or, past the stage's last write, its
    publication)."""
    real_commit, real_publish = DeltaBackend.commit, publications.append_publications
    count = {"n": 0}

    def commit(self, *args, **kwargs):
        if count["n"] == commits:
            raise InjectedFailure(f"after {commits} commit(s)")
        count["n"] += 1
        return real_commit(self, *args, **kwargs)

    def publish(warehouse, rows):
        if count["n"] == commits and any(r["stage"] not in (tables.ADOPTED, tables.DIRECT) for r in rows):
            raise InjectedFailure(f"publishing after {commits} commit(s)")
        return real_publish(warehouse, rows)

    monkeypatch.setattr(DeltaBackend, "commit", commit)
    monkeypatch.setattr(publications, "append_publications", publish)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple[Path, Path]:
    """Two tokenizers of the same texts with different vocabularies (600 and 420 tokens)."""
    folder = tmp_path_factory.mktemp("toks")
    texts = [d["text"] for d in documents(11, 300)]
    paths = folder / "a.json", folder / "b.json"
    for path, vocab in zip(paths, (600, 420)):
        train_bpe(texts, vocab).save(str(path))
    return paths


def _ingest_cfg(base_cfg: Config, corpus: Path, tokenizer: Path) -> Config:
    return with_overrides(base_cfg, [f"input.path=[{corpus}]", f"tokenizer.name={tokenizer}", "stream.seq_length=64"])


def test_a_failure_between_any_two_writes_leaves_the_published_tables(spark, base_cfg, tmp_path, tokenizers,
                                                                       monkeypatch):
    """Inject a failure before each write (and the publication) of the multi-output stages ingest (ingest_rejects,
    token_rows, sequences, the tokenizer) and frequencies: every table stays at its published version, with its
    rows, and sequences stay paired with the tokenizer that made them."""
    small_corpus(tmp_path / "corpus", n_docs=30)
    old, new = (_ingest_cfg(base_cfg, tmp_path / "corpus", t) for t in tokenizers)
    root = old.warehouse
    run_pipeline(old, ["ingest", "frequencies"])
    before = _snapshot(spark, root)
    assert Tokenizer.from_str(before["tokenizer"]).get_vocab_size() == 600
    for stage, writes in (("ingest", 3), ("frequencies", 2)):
        for commits in range(writes + 1):
            with monkeypatch.context() as m:
                _fail_after(m, commits)
                with pytest.raises(InjectedFailure):
                    run_pipeline(new, [stage], force=[stage])
            assert _snapshot(spark, root) == before, (stage, commits)
    run_pipeline(new, ["ingest", "frequencies"])  # the re-run takes back the failed runs' commits and publishes
    after = _snapshot(spark, root)
    tok = Tokenizer.from_str(after["tokenizer"])
    assert tok.get_vocab_size() == 420
    wh = Warehouse(spark, root)
    row = wh.read("sequences").orderBy("sequence_id").first()
    assert tok.decode(row["tokens"]) == row["text"]
    fresh = with_overrides(new, [f"warehouse={tmp_path / 'fresh'}"])
    run_pipeline(fresh, ["ingest", "frequencies"])
    assert_same_warehouse(fresh.warehouse, root)


def test_lineage_skips_current_stages_and_status_says_what_is_stale(spark, base_cfg, tmp_path, tokenizers, capsys):
    small_corpus(tmp_path / "corpus", n_docs=30)
    cfg = _ingest_cfg(base_cfg, tmp_path / "corpus", tokenizers[0])
    root = cfg.warehouse
    assert run_pipeline(cfg, ["ingest", "templating", "huffman"]) == ["ingest", "templating", "huffman"]
    wh = Warehouse(spark, root)
    lineage = wh.commit_metadata("templating")["lineage"]
    assert lineage["stage"] == "templating" and lineage["inputs"] == {"sequences": wh.version("sequences")}
    assert lineage["semmem_version"] == tables.semmem_version() != "unknown"
    [pub] = wh.pubs.last_run("templating")
    assert pub.config == {"templating": {"upstream_quirks": True}} and pub.config_hash == lineage["config_hash"]

    assert run_pipeline(cfg, ["ingest", "templating", "huffman"]) == []  # everything current
    changed = with_overrides(cfg, ["templating.upstream_quirks=false"])
    assert run_pipeline(changed, ["ingest", "templating", "huffman"]) == ["templating"]
    assert run_pipeline(changed, ["ingest", "templating", "huffman"], force=["huffman"]) == ["huffman"]

    (tmp_path / "corpus" / "shard1.jsonl").write_text(
        (tmp_path / "corpus" / "shard1.jsonl").read_text() + '{"text": "one more document", "meta": {"pile_set_name": "Pile-CC"}}\n')
    assert run_pipeline(changed, ["ingest"]) == ["ingest"]  # an input file changed
    state = {r.table: r.state for r in status_rows(root)}
    assert state["sequences"] == "current"
    assert state["templating"].startswith("stale: sequences is at version")
    assert "stale: the config of stage templating changed" in {r.table: r.state for r in status_rows(root, cfg)}[
        "templating"]
    assert cli_main(["status", "--warehouse", root]) == 0
    out = capsys.readouterr().out
    assert "huffman" in out and "stale: sequences is at version" in out
    assert run_pipeline(changed, ["ingest", "templating", "huffman"]) == ["templating", "huffman"]
    assert all(r.state == "current" for r in status_rows(root, changed))


def test_config_lineage_is_per_key():
    # a stage reruns for a key it reads, not for any key of a section it reads a key of
    cfg = load_config(None, [])

    def rerun_by(*overrides: str) -> set[str]:
        changed = with_overrides(cfg, list(overrides))
        return {s.name for s in REGISTRY.values() if s.config_of(cfg) != s.config_of(changed)}

    assert rerun_by("taxonomy.bootstrap_rounds=7") == {"taxonomy", "evidence", "report"}  # not combine
    assert rerun_by("taxonomy.duplicate_threshold=3") == {"combine", "taxonomy", "report"}
    assert rerun_by("report.examples_per_category=5") == {"evidence", "report"}  # the cards are among the examples
    # not frequencies; train_model scans the trained rows for family_exposures (its members stay as they are)
    assert rerun_by("duplicates.rows_per_batch=7") == {"duplicates", "texts", "train_model"}


def test_replaced_weights_make_only_that_models_scores_stale(spark, base_cfg, tmp_path, scored, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(scored[0], a)
    tiny_model(seed=2).save_pretrained(b)
    cfg = with_overrides(_score_setup(spark, base_cfg, tmp_path, a, 80), [f"model.names=[{a}, {b}]"])
    assert run_pipeline(cfg, ["score"]) == ["score"]
    assert run_pipeline(cfg, ["score"]) == []  # current

    def scores() -> dict[str, list[tuple]]:
        rows = table_rows(cfg.warehouse, "memorization").to_pylist()
        return {m: [(r["sequence_id"], r["memorization_score"], r["prompt_perplexity"]) for r in rows
                    if r["model"] == m] for m in (str(a), str(b))}

    before = scores()
    tiny_model(seed=3).save_pretrained(b)  # other weights in the same folder
    state = {r.table: r for r in status_rows(cfg.warehouse, cfg)}["memorization"]
    assert state.state.startswith(f"stale: model {b}@") and str(a) not in state.state
    assert set(state.artifacts) == {f"model {a}@local", f"model {b}@local"}
    with caplog.at_level("INFO"):
        assert run_pipeline(cfg, ["score"]) == ["score"]
    assert f"score: {a}@local is current" in caplog.text and f"score: {b}@local is current" not in caplog.text
    after = scores()
    assert after[str(a)] == before[str(a)] and after[str(b)] != before[str(b)]
    assert len(after[str(b)]) == 80
    assert {r.table: r.state for r in status_rows(cfg.warehouse, cfg)}["memorization"] == "current"


def _score_setup(spark, base_cfg: Config, folder: Path, model: Path, rows_per_commit: int) -> Config:
    """80 random sequences (written directly) in warehouse folder/wh, to score with `model` in 80 / rows_per_commit
    chunks."""
    import numpy as np

    rng = np.random.default_rng(3)
    cfg = with_overrides(base_cfg, [f"model.names=[{model}]", "score.batch_size=8",
                                    f"score.rows_per_commit={rows_per_commit}", f"warehouse={folder / 'wh'}"])
    rows = [(i * 5 + 1, rng.integers(2, 64, 64).tolist(), f"text {i}", f"prompt {i}", None) for i in range(80)]
    Warehouse(spark, cfg.warehouse).write(spark.createDataFrame(
        rows, "sequence_id long, tokens array<int>, text string, prompt_text string, pile_set_name string"),
        "sequences")
    return cfg


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory) -> tuple[Path, str]:
    """(a tiny model's folder, a warehouse where one uninterrupted score run scored the 80 sequences with it)."""
    from semmem.config import load_config
    from tests.conftest import TEST_OVERRIDES

    folder = tmp_path_factory.mktemp("reference")
    tiny_model(seed=1).save_pretrained(folder / "model")
    cfg = _score_setup(spark, load_config(None, TEST_OVERRIDES), folder, folder / "model", 80)
    run_pipeline(cfg, ["score"])
    return folder / "model", cfg.warehouse


def test_score_resumes_after_a_failure_without_duplicates_or_gaps(spark, base_cfg, tmp_path, monkeypatch, caplog,
                                                                   scored):
    cfg = _score_setup(spark, base_cfg, tmp_path, scored[0], rows_per_commit=20)

    with monkeypatch.context() as m:
        _fail_after(m, 2)  # two of the four chunks committed
        with pytest.raises(InjectedFailure):
            run_pipeline(cfg, ["score"])
    wh = Warehouse(spark, cfg.warehouse)
    assert not wh.exists("memorization")  # nothing published
    done = latest_version(wh.path("memorization"))
    with caplog.at_level("INFO", logger="semmem"):
        assert run_pipeline(cfg, ["score"]) == ["score"]
    assert "2 of 4 chunk(s) committed by an interrupted run" in caplog.text
    assert latest_version(wh.path("memorization")) == done + 2  # only the two missing chunks were scored
    assert_same_warehouse(scored[1], cfg.warehouse)

    # an interrupted run of another config is taken back, not resumed
    flag = with_overrides(cfg, ["score.mode=flag"])
    with monkeypatch.context() as m:
        _fail_after(m, 1)
        with pytest.raises(InjectedFailure):
            run_pipeline(flag, ["score"])
    run_pipeline(cfg, ["score"], force=["score"])
    assert_same_warehouse(scored[1], cfg.warehouse)


def _semmem(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.Popen([sys.executable, "-m", "semmem.cli", "run", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def _config_file(cfg: Config, path: Path) -> Path:
    import yaml

    d = cfg.to_dict()
    path.write_text(yaml.safe_dump({"warehouse": d["warehouse"], "spark": d["spark"], "model": d["model"],
                                    "score": d["score"]}))
    return path


def _wait_for_chunks(wh: Warehouse, proc: subprocess.Popen, chunks: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = latest_version(wh.path("memorization"))
        if latest is not None and sum(bool(tables.user_metadata(wh.path("memorization"), v).get("lineage", {})
                                           .get("part")) for v in range(latest + 1)) >= chunks:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no chunk committed in time")


def test_a_sigkilled_driver_resumes_where_it_stopped(spark, base_cfg, tmp_path, scored):
    cfg = _score_setup(spark, base_cfg, tmp_path, scored[0], rows_per_commit=10)
    wh = Warehouse(spark, cfg.warehouse)
    proc = _semmem(_config_file(cfg, tmp_path / "run.yaml"), "--stages", "score")
    try:
        _wait_for_chunks(wh, proc, 2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM and Python workers, mid-stage
        proc.wait()
    wh.refresh()
    assert not wh.exists("memorization")
    committed = latest_version(wh.path("memorization"))
    assert run_pipeline(cfg, ["score"]) == ["score"]
    assert latest_version(wh.path("memorization")) <= committed + 8 - 2  # committed chunks were not scored again
    assert_same_warehouse(scored[1], cfg.warehouse)


def test_two_writers_of_one_stage_one_wins_the_other_fails_clearly(spark, base_cfg, tmp_path, scored):
    cfg = _score_setup(spark, base_cfg, tmp_path, scored[0], rows_per_commit=20)
    wh = Warehouse(spark, cfg.warehouse)
    config = _config_file(cfg, tmp_path / "run.yaml")
    first = _semmem(config, "--stages", "score")
    try:
        _wait_for_chunks(wh, first, 1)
        os.killpg(first.pid, signal.SIGSTOP)  # the first writer holds still mid-stage ...
        assert run_pipeline(cfg, ["score"]) == ["score"]  # ... while a second (this process) runs it to the end
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("semmem: error:")]
    assert len(errors) == 1 and "changed under this run" in errors[0] and "Another semmem run" in errors[0], err
    assert_same_warehouse(scored[1], cfg.warehouse)
