"""Config loading: YAML + overrides into frozen dataclasses; every mistake names its key."""

from __future__ import annotations

import pytest

from semmem.config import load_config, with_overrides
from semmem.errors import ConfigError


def test_local_yaml_loads():
    cfg = load_config("conf/local.yaml")
    assert cfg.input.format == "pile-jsonl" and cfg.stream.seq_length == 2049
    assert cfg.tokenizer.offline_fallback == "train-bpe"
    assert load_config("conf/cluster.yaml").input.format == "megatron"


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
