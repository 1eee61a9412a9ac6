"""Config loading: YAML + overrides into frozen dataclasses; every mistake names its key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import semmem
from semmem.config import load_config, with_overrides
from semmem.errors import ConfigError


def test_local_yaml_loads():
    cfg = load_config("conf/local.yaml")
    assert cfg.input.format == "pile-jsonl" and cfg.stream.seq_length == 2049
    assert cfg.tokenizer.offline_fallback == "train-bpe"
    assert load_config("conf/cluster.yaml").input.format == "megatron"
    assert cfg.taxonomy.taxonomies == ["paper", "guess_recall"] and cfg.taxonomy.trees is True


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["sample.size=10", "input.path=[a, b]", "templating.upstream_quirks=false",
                             "spark.conf.spark.sql.shuffle.partitions=3", "sample.fraction=0.5"])
    assert cfg.sample.size == 10 and cfg.sample.fraction == 0.5
    assert cfg.input.path == ["a", "b"]
    assert cfg.templating.upstream_quirks is False
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": "3"}
    assert with_overrides(cfg, ["input.path=c,d"]).input.path == ["c", "d"]


@pytest.mark.parametrize("override, message", [
    ("sample.sise=3", r"unknown config key sample\.sise \(known keys here: fraction, seed, size\)"),
    ("sample.size=many", r"config key sample\.size must be an integer, found 'many'"),
    ("input.format=csv", r"config key input\.format = 'csv'; expected one of 'pile-jsonl'"),
    ("ingest.on_bad_record=ignore", r"expected one of 'fail', 'skip'"),
    ("templating.upstream_quirks=maybe", r"must be true or false"),
    ("nonsense", r"not of the form key\.sub=value"),
    ("sample.size=-5", r"config key sample\.size = -5; expected a positive number of rows"),
    ("semantic.thresholds=[1.5]", r"config key semantic\.thresholds = \[1\.5\]; expected one or more distinct cosines"),
    ("stream.seq_length=32", r"config key stream\.seq_length = 32; expected at least 64 tokens"),
    ("texts.stride=0", r"config key texts\.stride = 0; expected 1\.\.32 tokens"),
    ("taxonomy.taxonomies=[paper,topic]",
     r"^config key taxonomy\.taxonomies\[1\] = 'topic'; expected one of 'paper', 'guess_recall'$"),
    ("taxonomy.taxonomies=[]", r"^config key taxonomy\.taxonomies = \[\]; expected one or more distinct of paper, "
                               r"guess_recall$"),
    ("taxonomy.taxonomies=[paper,paper]", r"expected one or more distinct of paper, guess_recall$"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_a_bad_value_is_one_line_and_exit_2_before_spark_starts(capsys):
    from semmem.cli import main

    assert main(["run", "--set", "sample.size=-5"]) == 2
    err = capsys.readouterr().err
    assert "semmem: error: config key sample.size = -5; expected a positive number of rows" in err


def test_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)  # anywhere but the checkout
    cfg = load_config(root / "conf" / "local.yaml")
    sample = Path(cfg.input.path[0])
    assert sample.is_absolute() and sorted(p.name for p in sample.glob("*.jsonl.zst"))  # the bundled sample
    assert sample == Path(semmem.__file__).resolve().parent / "data" / "sample"
    assert cfg.warehouse == str(root / "warehouse") and cfg.storage.s3_jars == str(root / ".jars" / "s3")
    assert Path(cfg.code_classifier.eval_labels).is_file()  # the bundled human labels (a default)

    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "tok").mkdir()
    (tmp_path / "exp" / "my.yaml").write_text(
        "warehouse: wh\ninput: {path: [corpus, 'shards/*.jsonl']}\ntokenizer: {name: tok}\n"
        "embed: {model: sentence-transformers/all-MiniLM-L6-v2}\ncode_classifier: {labels: pile_set_name}\n")
    mine = load_config("exp/my.yaml", ["texts.path=[mine.jsonl]"])
    exp = tmp_path / "exp"
    assert mine.warehouse == str(exp / "wh") and mine.input.path == [str(exp / "corpus"), str(exp / "shards/*.jsonl")]
    assert mine.tokenizer.name == str(exp / "tok")  # a folder that exists there
    assert mine.embed.model == "sentence-transformers/all-MiniLM-L6-v2"  # a hub id stays one
    assert mine.code_classifier.labels == "pile_set_name"
    assert mine.texts.path == ["mine.jsonl"]  # --set: relative to the working directory, as typed
    assert with_overrides(mine, ["warehouse=/abs/wh"]).input.path == mine.input.path


def test_spark_submit_works_from_a_fresh_shell(tmp_path):
    # the README's `bin/spark-submit jobs/<stage>.py ...`, with nothing on PATH but the system's and no venv active
    root = Path(__file__).resolve().parents[1]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "SEMMEM_VENV": str(Path(sys.executable).parents[1])}
    out = subprocess.run([str(root / "bin" / "spark-submit"), str(root / "jobs" / "run.py"), "--help"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "--stages STAGES" in out.stdout
