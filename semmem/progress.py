"""Progress lines on the driver's console for long Spark work: tasks done, rows/s and ETA."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark import Accumulator
from pyspark.sql import SparkSession

log = logging.getLogger("semmem")


@contextmanager
def progress(spark: SparkSession, label: str, *, rows: Accumulator | None = None, unit: str = "rows",
             every: float = 10.0) -> Iterator[None]:
    """Log a line every `every` seconds while the block runs Spark jobs.

    Task counts come from the status tracker; `rows` is an accumulator executors add their processed rows to
    (updated as tasks finish). The ETA extrapolates from the fraction of tasks done in the active stages.
    """
    tracker = spark.sparkContext.statusTracker()
    stop = threading.Event()
    start = time.monotonic()

    def report() -> None:
        while not stop.wait(every):
            done = total = 0
            for sid in tracker.getActiveStageIds():
                info = tracker.getStageInfo(sid)
                if info is not None:
                    done += info.numCompletedTasks
                    total += info.numTasks
            elapsed = time.monotonic() - start
            parts = [f"{label}: {elapsed:.0f} s"]
            if total:
                parts.append(f"tasks {done}/{total}")
                if done:
                    parts.append(f"ETA {elapsed * (total - done) / done:.0f} s (this stage)")
            if rows is not None and rows.value:
                parts.append(f"{rows.value:,} {unit}, {rows.value / elapsed:,.0f} {unit}/s")
            log.info(", ".join(parts))

    thread = threading.Thread(target=report, name=f"progress-{label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=1)
        elapsed = time.monotonic() - start
        tail = f", {rows.value:,} {unit} ({rows.value / max(elapsed, 1e-9):,.0f} {unit}/s)" if rows is not None else ""
        log.info("%s: finished in %.1f s%s", label, elapsed, tail)
