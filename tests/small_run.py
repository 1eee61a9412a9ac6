"""The default pipeline on a small corpus with a small family (every stage, minutes), run by the `semmem` command:
the S3 and cluster tests each run it somewhere else and compare with one local run of it (conftest's session fixture
`small_local_run`, made once when both suites run in one pytest process, as `make integration-test` does)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.corpus import small_corpus, small_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SEMMEM = str(Path(sys.executable).parent / "semmem")
FAMILY = ("train_model.sizes=[{name: s, hidden_size: 16, num_layers: 1, num_heads: 2}, "
          "{name: l, hidden_size: 32, num_layers: 1, num_heads: 2}]")


@dataclass(frozen=True)
class SmallRun:
    corpus: Path  # a folder of jsonl shards
    tokenizer: Path
    warehouse: Path  # the local run's

    def settings(self, warehouse: str, corpus: str | None = None) -> list[str]:
        """`--set` values of this run's pipeline writing to `warehouse` (reading `corpus`, by default the local one)."""
        return [f"input.path=[{corpus or self.corpus}]", f"tokenizer.name={self.tokenizer}", "stream.seq_length=128",
                FAMILY, "train_model.checkpoints=[0.5, 1.0]", "score.batch_size=16", "taxonomy.min_memorized=1",
                f"warehouse={warehouse}"]


def semmem_run(settings: list[str], env: dict[str, str] | None = None) -> str:
    """`semmem run` of conf/local.yaml on local[2] in its own process (`env` replaces this one's); its output."""
    proc = subprocess.run([SEMMEM, "run", "--config", str(ROOT / "conf" / "local.yaml"),
                           "--set", "spark.master=local[2]", "--set", "spark.conf.spark.sql.shuffle.partitions=4",
                           *[x for s in settings for x in ("--set", s)]],
                          cwd=ROOT, env=env if env is not None else dict(os.environ), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def small_local_run(folder: Path, env: dict[str, str]) -> SmallRun:
    """The small corpus and tokenizer written under `folder`, and the pipeline run on them locally."""
    corpus = folder / "corpus"
    small_corpus(corpus, n_docs=90)
    run = SmallRun(corpus, small_tokenizer(folder / "tokenizer.json"), folder / "wh_local")
    semmem_run(run.settings(str(run.warehouse)), env)
    return run
