"""Benchmark of `sample.size`: the histogram cut (a filter on row_id) against a sort by key with a limit.

    python bench/bench_sample.py                          # 20M row ids, 1M sampled (what `make bench` runs)
    python bench/bench_sample.py --rows 100000000 --size 5000000

Both pick the `size` row ids with the smallest keys. The baseline is what ingest did before: `orderBy(key,
row_id).limit(size)`, which Spark plans as TakeOrderedAndProject (each task keeps a heap of `size` rows and one task
merges them all). The cut counts keys in 4,096 bins, then collects the one bin holding the size-th key; the sample
is then a filter every task applies on its own. Prints wall times, the ratio, and checks the two samples are equal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from semmem.config import SampleConfig, load_config  # noqa: E402
from semmem.ingest.sequences import sample_key_bits, sample_predicate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=16)
    args = ap.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from semmem.spark import build_session

    spark = build_session(load_config(None, ["spark.conf.spark.ui.enabled=false", "spark.conf.spark.driver.memory=4g"]))
    ids = spark.range(0, args.rows, numPartitions=args.partitions).withColumnRenamed("id", "row_id")
    checksum = [F.count(F.lit(1)).alias("n"), F.sum("row_id").alias("s"),
                F.sum(F.pmod(F.xxhash64("row_id"), F.lit(1_000_003))).alias("h")]
    print(f"{args.rows:,} row ids in {args.partitions} partitions, sample.size {args.size:,}; "
          f"{os.cpu_count()} CPUs", flush=True)

    warm = spark.range(0, 10_000, numPartitions=args.partitions).withColumnRenamed("id", "row_id")
    warm.where(sample_predicate(warm, SampleConfig(size=100, seed=1))).agg(*checksum).collect()  # JIT, workers
    warm.withColumn("_k", sample_key_bits(1)).orderBy("_k", "row_id").limit(100).agg(*checksum).collect()

    start = time.perf_counter()
    keep = sample_predicate(ids, SampleConfig(size=args.size, seed=1234))
    cut = time.perf_counter() - start
    new = ids.where(keep).agg(*checksum).collect()[0]
    new_wall = time.perf_counter() - start
    print(f"histogram cut: {new_wall:6.1f} s ({cut:.1f} s finding the cut), {new['n']:,} rows", flush=True)

    start = time.perf_counter()
    top = ids.withColumn("_k", sample_key_bits(1234)).orderBy("_k", "row_id").limit(args.size).drop("_k")
    old = top.agg(*checksum).collect()[0]
    old_wall = time.perf_counter() - start
    print(f"orderBy().limit(): {old_wall:6.1f} s, {old['n']:,} rows", flush=True)
    same = tuple(new) == tuple(old)
    print(f"ratio orderBy().limit() / histogram cut: {old_wall / new_wall:.2f}x; same rows: {same}")
    spark.stop()
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
