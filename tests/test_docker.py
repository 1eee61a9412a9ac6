"""docker/: both Dockerfiles pass hadolint, and the versions they install are the ones pyproject.toml pins (no Docker
engine runs here, so the images are not built)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from semmem.spark import hadoop_version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile.cpu", ROOT / "docker" / "Dockerfile.gpu"]


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    pins = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[\w,]+\])?==([^;\s]+)", d).groups() for d in deps)
    pins["python"] = re.fullmatch(r">=(\d+\.\d+)", project["requires-python"]).group(1)
    return pins


def _args(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), flags=re.M))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path):
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--no-color", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pinned_versions_agree_with_pyproject(path):
    pins, args = _pins(), _args(path)
    assert args["PYSPARK_VERSION"] == pins["pyspark"]
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["DELTA_VERSION"] == pins["delta-spark"]
    if "FAISS_VERSION" in args:
        assert args["FAISS_VERSION"] == pins["faiss-cpu"]
    base = re.search(r"^FROM (\S+)", path.read_text(), flags=re.M).group(1)
    python = args.get("PYTHON_VERSION") or re.fullmatch(r"python:(\d+\.\d+)[.\w-]*", base).group(1)
    assert python == pins["python"]
    assert "openjdk-17" in path.read_text()  # the JDK the CI machines run Spark with
    assert args["HADOOP_VERSION"] == hadoop_version()  # hadoop-aws must match pyspark's Hadoop client


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_s3_jars_are_hadoop_aws_and_its_runtime_dependencies(path):
    """The images carry the jars `make jars` fetches into .jars/s3: hadoop-aws and its runtime dependencies, at the
    versions Maven resolved for it."""
    fetched = sorted(p.name for p in (ROOT / ".jars" / "s3").glob("*.jar"))
    if not fetched:
        pytest.skip("no .jars/s3 (Maven Central unreachable at install?): nothing to compare the image's jars with")
    args = _args(path)
    named = {f"hadoop-aws-{args['HADOOP_VERSION']}.jar", f"bundle-{args['AWS_SDK_VERSION']}.jar",
             f"analyticsaccelerator-s3-{args['ANALYTICS_ACCELERATOR_VERSION']}.jar",
             f"wildfly-openssl-{args['WILDFLY_OPENSSL_VERSION']}.jar"}
    assert named == set(fetched)


def test_gpu_image_has_cuda_torch_and_faiss_gpu():
    text = DOCKERFILES[1].read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", text, flags=re.M)
    assert '"faiss-gpu==${FAISS_VERSION}"' in text and "pip uninstall -y faiss-cpu" in text
    assert "download.pytorch.org/whl/cpu" not in text  # PyPI's torch is the CUDA build
