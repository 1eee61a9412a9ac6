"""A warehouse and a corpus on S3: `semmem run` against an S3-compatible server on 127.0.0.1 (moto's), with the
hadoop-aws jars, must produce exactly the tables of the same run on local disk, with both Delta backends.

Spark reaches S3 through S3A, delta-rs and the numpy readers (the direct duplicate scan, the megatron .bin, the
scratch files) through their own clients, the side files (tokenizer, trained models, report) through pyarrow's
filesystem layer. Slow (several full runs): marker `s3`, run by `make s3-test` or, with the cluster test (whose local
run of the small pipeline it shares), `make integration-test` (a line of .ci/run). Skips, saying why, without the
hadoop-aws jars.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from semmem import storage
from semmem.sql import run_sql
from semmem.tables import read_publications
from tests.corpus import small_tokenizer, write_megatron
from tests.s3server import CREDENTIALS, moto_server
from tests.small_run import semmem_run
from tests.warehouses import WALL_CLOCK, assert_same_warehouse

pytestmark = pytest.mark.s3
ROOT = Path(__file__).resolve().parents[1]
SEMMEM = str(Path(sys.executable).parent / "semmem")
BUCKET = "semmem-test"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    env: dict[str, str]  # what a process needs to reach it (credentials and endpoint)

    def upload(self, local: Path, key: str) -> str:
        storage.write_bytes(f"s3://{BUCKET}/{key}", local.read_bytes())
        return f"s3://{BUCKET}/{key}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3Server]:
    if not any((ROOT / ".jars" / "s3").glob("hadoop-aws-*.jar")):
        pytest.skip("no hadoop-aws jar in .jars/s3 (Maven Central unreachable at install?): Spark cannot reach S3; "
                    "`make jars` fetches it")
    with moto_server(tmp_path_factory.mktemp("moto") / "server.log", BUCKET) as endpoint:
        yield S3Server(endpoint, {**CREDENTIALS, storage.ENDPOINT_ENV: endpoint})


def _without_endpoint() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != storage.ENDPOINT_ENV}


def _run(env: dict[str, str], *args: str) -> str:
    """`semmem run` in its own process, with `env` added to this one's (less the endpoint variable)."""
    return semmem_run(list(args), {**_without_endpoint(), **env})


def test_pipeline_with_warehouse_and_corpus_on_s3_equals_local(s3, small_local_run):
    for p in sorted(small_local_run.corpus.iterdir()):
        s3.upload(p, f"corpus/{p.name}")
    local_wh, s3_wh = str(small_local_run.warehouse), f"s3://{BUCKET}/wh"
    out = _run(CREDENTIALS, *small_local_run.settings(s3_wh, corpus=f"s3a://{BUCKET}/corpus"),
               f"storage.endpoint_url={s3.endpoint}")
    assert f"warehouse {s3_wh} (delta-rs backend)" in out

    where_the_corpus_is = {("stream_documents", "path"), ("sequence_occurrences", "document")}  # file:line
    names = assert_same_warehouse(local_wh, s3_wh, ignore=WALL_CLOCK | where_the_corpus_is)
    assert {"token_rows", "sequences", "sequence_duplicates", "memorization", "embeddings", "combined",
            "taxonomy_metrics", "model_family"} <= set(names)
    # the side files are on S3 too: the tokenizer, every checkpoint, the report, the run's config
    published = read_publications(s3_wh).newest  # the side files each table's lineage names
    saved = Tokenizer.from_str(storage.read_text(published["sequences"].side_files["tokenizer"]))
    assert saved.to_str() == Tokenizer.from_file(str(small_local_run.tokenizer)).to_str()
    saved = storage.list_dir(published["model_family"].side_files["model:trained-l"])
    assert "semmem_family.json" in saved and sum(n.startswith("step") for n in saved) == 2
    assert storage.is_file(f"{s3_wh}/report/index.html") and storage.is_file(f"{s3_wh}/report/family.png")
    assert len(storage.list_dir(f"{s3_wh}/_semmem/runs")) == 1
    assert not storage.list_dir(f"{s3_wh}/_semmem/scratch")  # removed when each stage ended
    # and SQL answers from it (DataFusion through delta-rs, with the endpoint from the environment)
    query = "SELECT count(*) AS n, sum(sequence_duplicates) AS d FROM sequence_duplicates"
    assert run_sql(s3_wh, query).to_pylist() == run_sql(local_wh, query).to_pylist()
    tables = subprocess.run([SEMMEM, "tables", "--warehouse", s3_wh], env={**os.environ, **s3.env},
                            capture_output=True, text=True)
    assert tables.returncode == 0 and "sequence_duplicates" in tables.stdout, tables.stderr[-2000:]


def test_megatron_stream_on_s3_with_delta_spark(s3, tmp_path):
    """The .bin/.idx pair read in place from S3 (range requests), tables written by delta-spark through S3A."""
    if not (ROOT / ".jars" / "delta-spark_2.13-4.4.0.jar").is_file():
        pytest.skip("no Delta jar in .jars/: the delta-spark backend on S3 needs it; `make jars` fetches it")
    rng = np.random.default_rng(5)
    rows = rng.integers(2, 600, size=(300, 128))
    rows[100:140] = rows[7]  # duplicated rows: non-trivial counts
    write_megatron(tmp_path / "document", rows)
    for ext in (".bin", ".idx"):
        s3.upload(tmp_path / f"document{ext}", f"megatron/document{ext}")
    tok = small_tokenizer(tmp_path / "tokenizer.json")
    common = ["input.format=megatron", f"tokenizer.name={tok}", "stream.seq_length=128", "sample.size=120",
              "ingest.megatron_rows_per_task=64", "stages=[ingest, duplicates, frequencies]"]
    local_wh, s3_wh = str(tmp_path / "wh"), f"s3://{BUCKET}/megatron-wh"
    _run({}, f"input.path=[{tmp_path / 'document'}]", f"warehouse={local_wh}", *common)
    out = _run(s3.env, f"input.path=[s3://{BUCKET}/megatron/document]", f"warehouse={s3_wh}",
               f"spark.delta_jars={ROOT / '.jars'}", *common)
    assert f"warehouse {s3_wh} (delta-spark backend)" in out
    names = assert_same_warehouse(local_wh, s3_wh, ignore={("stream_sources", "path")})  # where the .bin is
    assert {"stream_sources", "sequences", "sequence_duplicates", "token_frequencies"} <= set(names)
    assert run_sql(s3_wh, "SELECT max(sequence_duplicates) AS m FROM sequence_duplicates").to_pylist()[0]["m"] >= 41
