"""Model stages commit their output in chunks, so a run that dies part-way (a lost driver, a preempted GPU) resumes
where it stopped: each chunk is one Delta commit tagged with the stage run's key, and a re-run with the same key
(same config, same input versions) skips the chunks already committed. Nothing is visible before the stage
publishes, so readers never see a partly scored table."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.errors import ConfigError
from semmem.stages.registry import StageContext

log = logging.getLogger("semmem")


def write_in_chunks(ctx: StageContext, rows: DataFrame, name: str, compute: Callable[[DataFrame], DataFrame], *,
                    rows_per_commit: int, label: str, partition: dict[str, str] | None = None,
                    metadata: dict | None = None) -> None:
    """Commit compute(chunk) to table `name` for the chunks of `rows` (by a hash of sequence_id, about
    rows_per_commit each): the first replaces the table (or `partition`), the others append. Chunks an interrupted
    run of the same key committed are skipped."""
    if rows_per_commit < 1:
        raise ConfigError(f"rows_per_commit = {rows_per_commit}: give a positive number of sequences per commit")
    wh = ctx.warehouse
    chunks = max(1, math.ceil(rows.count() / rows_per_commit))
    done = wh.resumable_parts(name)
    parts = [f"{label}#{i + 1}/{chunks}" for i in range(chunks)]
    if done & set(parts):
        log.info("%s: resuming %s: %d of %d chunk(s) committed by an interrupted run", name, label,
                 len(done & set(parts)), chunks)
    for i, part in enumerate(parts):
        if part in done:
            continue
        chunk = rows if chunks == 1 else rows.where(F.pmod(F.xxhash64("sequence_id"), F.lit(chunks)) == i)
        first = i == 0
        wh.write(compute(chunk), name, mode="overwrite" if first else "append", partition=partition if first else None,
                 metadata=metadata, part=part)
        log.info("%s: %s chunk %d/%d committed", name, label, i + 1, chunks)
