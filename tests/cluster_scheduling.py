"""Submitted by tests/test_cluster.py to a standalone cluster whose executors have two cores and advertise one GPU
each: a CPU stage runs on every core, a stage under semmem's GPU profile one task per GPU. Prints one JSON line."""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
from pyspark import TaskContext  # noqa: E402

from semmem.config import load_config  # noqa: E402
from semmem.spark import build_session, gpu_slots, gpu_task_profile, model_tasks  # noqa: E402

SCHEMA = "executor BIGINT, start DOUBLE, end DOUBLE, gpus STRING"


def record(batches):
    """Each task: which executor (its Python daemon), when, and the GPU addresses Spark gave it."""
    start = time.time()
    for _ in batches:
        pass
    time.sleep(1.5)
    gpu = TaskContext.get().resources().get("gpu")
    yield pa.RecordBatch.from_pydict({"executor": [os.getppid()], "start": [start], "end": [time.time()],
                                      "gpus": [",".join(gpu.addresses) if gpu else ""]})


def peak_per_executor(rows) -> int:
    """The most tasks one executor ran at the same time."""
    best = 0
    for r in rows:
        best = max(best, sum(1 for o in rows if o.executor == r.executor and o.start <= r.start < o.end))
    return best


if __name__ == "__main__":
    spark = build_session(load_config(None, []))
    df = spark.range(0, 8, numPartitions=8)
    cpu = df.mapInArrow(record, SCHEMA).collect()
    gpu = df.mapInArrow(record, SCHEMA, profile=gpu_task_profile(spark)).collect()
    laid_out = model_tasks(df, "id")
    model = laid_out.mapInArrow(record, SCHEMA).collect()
    print("SCHEDULING " + json.dumps({
        "cpu_peak": peak_per_executor(cpu), "cpu_gpus": sorted({r.gpus for r in cpu}),
        "gpu_peak": peak_per_executor(gpu), "gpu_gpus": sorted({r.gpus for r in gpu}), "gpu_tasks": len(gpu),
        "slots": gpu_slots(spark), "model_partitions": laid_out.rdd.getNumPartitions(),
        "model_gpus": sorted({r.gpus for r in model}), "model_executors": len({r.executor for r in model})}))
    spark.stop()
