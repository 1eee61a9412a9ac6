"""One SparkSession for the whole test session (builder settings stick within a process)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from semmem.config import Config, load_config
from semmem.spark import build_session

TEST_OVERRIDES = [
    "spark.master=local[2]",
    "spark.conf.spark.ui.enabled=false",
    "spark.conf.spark.sql.shuffle.partitions=4",
    "spark.conf.spark.default.parallelism=4",
    "spark.conf.spark.task.maxFailures=1",
    "spark.conf.spark.driver.memory=4g",
    # tests/test_delta_spark.py runs in its own pytest process whose session has the Delta jars
    *([f"spark.delta_jars={os.environ['SEMMEM_TEST_DELTA_JARS']}"] if os.environ.get("SEMMEM_TEST_DELTA_JARS") else []),
]


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = build_session(load_config(None, TEST_OVERRIDES))
    yield session
    session.stop()


@pytest.fixture
def base_cfg(tmp_path) -> Config:
    """Defaults plus the test Spark settings, with a fresh warehouse."""
    return load_config(None, [*TEST_OVERRIDES, f"warehouse={tmp_path / 'wh'}"])
