"""Progress lines: tasks, rows/s and ETA are logged while Spark work runs."""

from __future__ import annotations

import logging
import time

from semmem.progress import progress


def test_progress_logs_tasks_and_rate(spark, caplog):
    counter = spark.sparkContext.accumulator(0)

    def slow(batches):
        for b in batches:
            time.sleep(0.3)
            counter.add(b.num_rows)
            yield b

    with caplog.at_level(logging.INFO, logger="semmem"):
        with progress(spark, "demo", rows=counter, unit="rows", every=0.2):
            assert spark.range(0, 400, numPartitions=8).mapInArrow(slow, "id long").count() == 400
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo:")]
    assert any("tasks" in x and "/8" in x for x in lines[:-1])
    assert lines[-1].startswith("demo: finished in") and "400 rows" in lines[-1] and "rows/s" in lines[-1]
