"""One SparkSession for the whole test session (builder settings stick within a process)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from pyspark.sql import SparkSession

from semmem.config import Config, load_config
from semmem.spark import build_session
from tests import small_run
from tests.small_run import SmallRun

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


@pytest.fixture(scope="session")
def small_local_run(tmp_path_factory) -> SmallRun:
    """The small pipeline's local run, once per pytest process: the reference of the S3 and the cluster runs. Its
    process sees no S3 endpoint, so it reads and writes local disk only."""
    from semmem import storage

    env = {k: v for k, v in os.environ.items() if k != storage.ENDPOINT_ENV}
    return small_run.small_local_run(tmp_path_factory.mktemp("small_run"), env)
