"""Model stages commit their output in chunks, so a run that dies part-way (a lost driver, a preempted GPU) resumes
where it stopped: each chunk is one Delta commit tagged with the stage run's key, and a re-run with the same key
(same config, same input versions) skips the chunks already committed. Nothing is visible before the stage
publishes, so readers never see a partly scored table.

The input is split once: its rows are written to scratch Parquet files in one folder per chunk, so each chunk reads
only its own rows (a filter on a hash of the input could not be pushed into any reader: every chunk would rescan the
whole input, 292 scans per model at 146M sequences and 500K rows per commit)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import cached_property

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.errors import ConfigError
from semmem.stages.registry import StageContext
from semmem.warehouse.scratch import Scratch

log = logging.getLogger("semmem")

CHUNK = "_chunk"  # the scratch files' partition column: chunk i's rows are the files under _chunk=i


class Chunks:
    """A stage's input in chunks of about `rows_per_commit` rows by a hash of one column. The count (a Spark job) and
    the scratch files are made on first use, so a stage with nothing to compute (every scored model current) pays
    for neither."""

    def __init__(self, rows: DataFrame, rows_per_commit: int, split: Callable[[int], Scratch]) -> None:
        self._rows, self._rows_per_commit, self._split = rows, rows_per_commit, split
        self._scratch: Scratch | None = None

    @cached_property
    def count(self) -> int:
        return max(1, math.ceil(self._rows.count() / self._rows_per_commit))

    def rows(self, i: int) -> DataFrame:
        """Chunk i's rows, read from its own scratch folder (partition pruning), or the input when it is one chunk."""
        if self.count == 1:
            return self._rows
        if self._scratch is None:
            self._scratch = self._split(self.count)
        return self._scratch.df.where(F.col(CHUNK) == i).drop(CHUNK)


@contextmanager
def chunks_of(ctx: StageContext, rows: DataFrame, *, rows_per_commit: int, by: str = "sequence_id") -> Iterator[Chunks]:
    """`rows` in chunks of about rows_per_commit by a hash of column `by` (rows sharing a value share a chunk: by text,
    a text repeated across the input is in one chunk and so is embedded once). The scratch files, written at most
    once however many tables the chunks feed (one per scored model), are removed when the block ends."""
    if rows_per_commit < 1:
        raise ConfigError(f"rows_per_commit = {rows_per_commit}: give a positive number of sequences per commit")

    with ExitStack() as stack:
        def split(count: int) -> Scratch:  # one task writes each chunk (a shuffle by chunk): a few files per chunk
            labelled = rows.withColumn(CHUNK, F.pmod(F.xxhash64(by), F.lit(count)))
            return stack.enter_context(ctx.warehouse.scratch(labelled.repartition(CHUNK), partition_by=CHUNK))

        yield Chunks(rows, rows_per_commit, split)


def write_in_chunks(ctx: StageContext, chunks: Chunks, name: str, compute: Callable[[DataFrame], DataFrame], *,
                    label: str, partition: dict[str, str] | None = None, metadata: dict | None = None) -> None:
    """Commit compute(chunk) to table `name` for each chunk: the first replaces the table (or `partition`), the
    others append. Chunks an interrupted run of the same key committed are skipped."""
    wh = ctx.warehouse
    done = wh.resumable_parts(name)
    parts = [f"{label}#{i + 1}/{chunks.count}" for i in range(chunks.count)]
    if done & set(parts):
        log.info("%s: resuming %s: %d of %d chunk(s) committed by an interrupted run", name, label,
                 len(done & set(parts)), chunks.count)
    for i, part in enumerate(parts):
        if part in done:
            continue
        first = i == 0
        wh.write(compute(chunks.rows(i)), name, mode="overwrite" if first else "append",
                 partition=partition if first else None, metadata=metadata, part=part)
        log.info("%s: %s chunk %d/%d committed", name, label, i + 1, chunks.count)
