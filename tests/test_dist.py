"""`make dist` holds what a cluster without semmem needs: spark-submit of dist/jobs/run.py on a standalone cluster on
127.0.0.1, from a folder outside the checkout, with executors running the packed venv shipped by --archives, gives
the tables of a local run.

Slow (it unpacks a multi-GB venv): marker `dist`, run by `make dist-test` (a line of .ci/run) after `make dist`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.standalone import PYTHON, ROOT, running
from tests.warehouses import assert_same_warehouse

pytestmark = pytest.mark.dist
DIST = ROOT / "dist"
STAGES = "ingest,duplicates"


def test_the_wheel_carries_the_package_and_its_data():
    wheels = sorted(DIST.glob("semmem-*.whl"))
    if not wheels:
        pytest.skip("no wheel in dist/: `make dist` builds it")
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert {"semmem/storage.py", "semmem/stages/ingest.py", "semmem/stages/texts.py", "semmem/data/sample/00.jsonl.zst",
            "semmem/data/eval/code_labels.jsonl"} <= names
    assert (DIST / "jobs" / "run.py").is_file() and (DIST / "conf" / "cluster.yaml").is_file()


def test_jobs_run_on_a_cluster_from_the_packed_venv(tmp_path):
    archive = DIST / "semmem-venv.tar.gz"
    if not archive.is_file():
        pytest.skip("no dist/semmem-venv.tar.gz: `make dist` builds it")
    # The driver and the executor each copy the archive and unpack it (a level-0 archive unpacks to about its own
    # size): 4x the archive, all under tmp_path. Without the room an executor fails to unpack, is relaunched and
    # fails again until the time-out (a CI run lost 25 minutes so), so say so at once instead.
    need, free = 4.2 * archive.stat().st_size, shutil.disk_usage(tmp_path).free
    if free < need:
        pytest.skip(f"the cluster run needs {need / 2**30:.0f} GiB free under {tmp_path.parent}, only "
                    f"{free / 2**30:.0f} GiB are: nothing was run")
    sample = ROOT / "semmem" / "data" / "sample"
    common = ["--config", str(DIST / "conf" / "local.yaml"), "--stages", STAGES, "--set", f"input.path=[{sample}]"]
    local_wh, cluster_wh = tmp_path / "wh_local", tmp_path / "wh_cluster"
    local = subprocess.run([str(Path(PYTHON).parent / "semmem"), "run", *common, "--set", f"warehouse={local_wh}",
                            "--set", "spark.master=local[2]"], cwd=ROOT, capture_output=True, text=True)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]

    work = tmp_path / "cluster"
    (work / "tmp").mkdir(parents=True)
    tmpdir = f"-Djava.io.tmpdir={work / 'tmp'}"  # the JVMs' copies of the archive: removed below even on a time-out
    with running(work, cores=1, workers=1) as c:
        env = {k: v for k, v in c.env.items() if k != "PYTHONPATH"}  # executors see only the archive's packages
        cmd = c.submit(DIST / "jobs" / "run.py", *common, "--set", f"warehouse={cluster_wh}",
                       archives=f"{archive}#environment",
                       python="./environment/bin/python",  # in each executor's folder
                       conf={"spark.executor.memory": "2g", "spark.driver.memory": "2g",
                             "spark.files.useFetchCache": "false",  # no third copy of the archive in the fetch cache
                             "spark.driver.extraJavaOptions": tmpdir, "spark.executor.extraJavaOptions": tmpdir})
        try:
            proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            executors = "".join(p.read_text(errors="replace")[-2000:] for p in work.glob("worker*/app-*/*/stderr"))
            pytest.fail(f"spark-submit still running after 900 s; worker log:\n{c.log('worker1')[-3000:]}\n"
                        f"executor logs:\n{executors}")
        finally:  # the copies and unpacked venvs (~6 GB each with PyPI's CUDA torch) never stay in pytest's temp
            unpacked = sorted((work / "worker1").glob("app-*/*/environment/bin/python"))
            for folder in [*work.glob("worker*/app-*"), work / "local", work / "tmp"]:
                shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert unpacked, "the executor did not unpack the venv archive"
    names = assert_same_warehouse(str(local_wh), str(cluster_wh))
    assert {"token_rows", "sequences", "sequence_duplicates"} <= set(names)
    assert os.path.isdir(cluster_wh / "_semmem" / "tokenizer")
