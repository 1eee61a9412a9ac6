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
