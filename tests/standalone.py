"""A Spark standalone cluster on 127.0.0.1 for tests: a master and workers started from the pyspark installation as
child process groups (ports chosen free at run time), torn down whatever happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent
PYTHON = sys.executable
DELTA_CONF = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
              "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


class StandaloneCluster:
    """A master and workers as child process groups, logs under `work`; `stop` kills every process group."""

    def __init__(self, work: Path, gpu_script: Path) -> None:
        self.work, self.gpu_script = work, gpu_script
        self.port = free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
                    "PYSPARK_PYTHON": PYTHON, "SPARK_LOG_DIR": str(work), "SPARK_NO_DAEMONIZE": "1",
                    "SPARK_LOCAL_DIRS": str(work / "local")}  # fetched files stay under the test's folder

    def submit(self, app: Path, *args: str, conf: dict[str, str] | None = None, delta_jars: list[Path] | None = None,
               archives: str | None = None, python: str = PYTHON) -> list[str]:
        """The spark-submit command line of `app` on this cluster: the UI off, executors on `python` and the driver
        on this interpreter, Delta's jars with its extension and catalog when given, `archives`, then `conf`."""
        settings = {"spark.ui.enabled": "false", "spark.pyspark.python": python, "spark.pyspark.driver.python": PYTHON,
                    **(DELTA_CONF if delta_jars else {}), **(conf or {})}
        return [str(SPARK_HOME / "bin" / "spark-submit"), "--master", self.url,
                *(["--jars", ",".join(str(j) for j in delta_jars)] if delta_jars else []),
                *(["--archives", archives] if archives else []),
                *[x for key, value in settings.items() for x in ("--conf", f"{key}={value}")], str(app), *args]

    def _spawn(self, name: str, cls: str, *args: str, env: dict | None = None) -> None:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), cls, *args],
                                            env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start_master(self) -> None:
        self._spawn("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(free_port()))
        wait_for(lambda: "I have been elected leader" in self.log("master"), "the master")

    def start_worker(self, name: str, cores: int = 1) -> None:
        before = self.log("master").count("Registering worker")
        opts = (f"-Dspark.worker.resource.gpu.amount=1 "
                f"-Dspark.worker.resource.gpu.discoveryScript={self.gpu_script}")
        self._spawn(name, "org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1",
                    "--port", str(free_port()), "--webui-port", str(free_port()), "--cores", str(cores),
                    "--memory", "3g", "--work-dir", str(self.work / name),
                    env={**self.env, "SPARK_WORKER_OPTS": opts})
        wait_for(lambda: self.log("master").count("Registering worker") > before, f"worker {name}")

    def kill(self, name: str) -> None:
        """SIGKILL the worker's process group: the worker JVM, its executor and that executor's Python workers."""
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def log(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def fake_gpu(tmp_path: Path) -> Path:
    """A discovery script advertising one GPU: no real GPU is needed to check the scheduling."""
    gpu = tmp_path / "fake-gpu.sh"
    gpu.write_text('#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0"]}\'\n')
    gpu.chmod(0o755)
    return gpu


@contextmanager
def running(tmp_path: Path, cores: int, workers: int = 2) -> Iterator[StandaloneCluster]:
    """A master and `workers` workers (worker1, worker2, ...) of `cores` cores each."""
    c = StandaloneCluster(tmp_path, fake_gpu(tmp_path))
    try:
        c.start_master()
        for i in range(workers):
            c.start_worker(f"worker{i + 1}", cores)
        yield c
    finally:
        c.stop()  # even when the test fails
