"""Spark 3.5 LTS beside 4.x: the embedded default by spark-submit on a standalone cluster of the Spark 3.5 venv, its
tables written by delta-spark 3.3.2 (Scala 2.12), equals a local run of the default venv's Spark 4.x written by
delta-rs, table by table. Both versions and both Delta backends, on the same bundled sample: the end-to-end run of
every default stage on 3.5, its values checked against 4.x's (whose own values the end-to-end test checks).

Runs in the Spark 3.5 venv (`make spark3.5-test`: .venv-spark3.5 against .venv, a line of .ci/run); marker `spark35`,
deselected by `make test`. Skips, saying why, elsewhere or without the venvs or jars it compares.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from semmem.compat import SPARK4
from tests.standalone import ROOT, running
from tests.warehouses import assert_same_warehouse

pytestmark = pytest.mark.spark35
DEFAULT_VENV = ROOT / ".venv"
JARS = sorted((ROOT / ".jars-spark3.5").glob("delta-*.jar"))


def test_the_embedded_default_on_a_spark35_cluster_equals_spark4(tmp_path):
    if SPARK4:
        pytest.skip("runs in the Spark 3.5 venv: make spark3.5-test")
    if not (DEFAULT_VENV / "bin" / "semmem").is_file():
        pytest.skip("no default venv (.venv) to compare with: make venv")
    if not any(j.name.startswith("delta-spark_2.12-") for j in JARS):
        pytest.skip("no Delta jar for Scala 2.12 in .jars-spark3.5 (Maven Central unreachable at install?)")
    four = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
    four.update(PYSPARK_PYTHON=str(DEFAULT_VENV / "bin" / "python"),
                PYSPARK_DRIVER_PYTHON=str(DEFAULT_VENV / "bin" / "python"))
    proc = subprocess.run([str(DEFAULT_VENV / "bin" / "semmem"), "run", "--config", str(ROOT / "conf" / "local.yaml"),
                           "--set", f"warehouse={tmp_path / 'wh4'}", "--set", "spark.master=local[2]"],
                          cwd=ROOT, env=four, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "(delta-rs backend), Spark 4." in proc.stdout + proc.stderr
    (tmp_path / "cluster").mkdir()
    with running(tmp_path / "cluster", cores=2, workers=1) as cluster:
        cmd = cluster.submit(ROOT / "jobs" / "run.py", "--config", str(ROOT / "conf" / "local.yaml"),
                             "--set", f"warehouse={tmp_path / 'wh35'}", delta_jars=JARS,
                             conf={"spark.executor.memory": "2g", "spark.driver.memory": "3g"})
        three = subprocess.run(cmd, cwd=ROOT, env=cluster.env, capture_output=True, text=True)
    out = three.stdout + three.stderr
    assert three.returncode == 0, out[-6000:]
    assert "(delta-spark backend), Spark 3.5." in out
    names = assert_same_warehouse(str(tmp_path / "wh4"), str(tmp_path / "wh35"))
    assert {"sequences", "memorization", "embeddings", "combined", "taxonomy_metrics", "localization"} <= set(names)
