"""Benchmark of the optimal-partition search (spec §4.4): does it scale with executor cores?

    python bench/bench_taxonomy_search.py           # 810 candidates on 20,000 synthetic rows (what `make bench` runs)
    python bench/bench_taxonomy_search.py --quick      # 90 candidates on 5,000 rows: a smoke run
    python bench/bench_taxonomy_search.py --rows 100000 --masters 1,2,4

Reports the wall time of `search_partitions` over all candidates (3 logistic regressions each) at local[1] and
local[2] (or `--masters`), each in a fresh SparkSession warmed up by a small search first (JVM and Python workers
started), the ratio local[1] / local[n], and a single-process loop over the same candidates without Spark
(`CandidateEvaluator`, one BLAS thread) to show Spark's overhead. The rows are `synthetic_combined` (labels from known
coefficients per category); the search results must be identical at every master.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.config import TaxonomyConfig, load_config  # noqa: E402
from semmem.taxonomy.model import taxonomy_model  # noqa: E402
from semmem.taxonomy.search import CandidateEvaluator, partition_candidates, search_partitions  # noqa: E402
from tests.synthetic import synthetic_combined  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="synthetic combined rows (80%% train, a quarter of it the "
                    "validation share)")
    ap.add_argument("--masters", default="1,2", help="local[n] masters to time, comma-separated")
    ap.add_argument("--candidates", type=int, default=0, help="first N candidates only (0: all 810)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the single-process loop")
    ap.add_argument("--quick", action="store_true", help="5,000 rows, 90 candidates")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.candidates = 5_000, 90

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from semmem.spark import build_session

    cfg = TaxonomyConfig()
    t0 = time.perf_counter()
    result = taxonomy_model(synthetic_combined(args.rows, seed=cfg.seed), seed=cfg.seed, bootstrap_rounds=0)
    split = result.split
    cands = partition_candidates(split, search_features=cfg.search_features, search_quantiles=cfg.search_quantiles)
    if args.candidates:
        cands = cands.head(args.candidates)
    print(f"{args.rows} synthetic rows ({len(split.train.y)} train, {len(split.test.y)} test, "
          f"{len(split.features)} features), {len(cands)} candidates; prepared in {time.perf_counter() - t0:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)

    walls: dict[int, float] = {}
    outputs = {}
    for cores in (int(c) for c in args.masters.split(",")):
        spark = build_session(load_config(None, [f"spark.master=local[{cores}]", "spark.conf.spark.ui.enabled=false",
                                                 "spark.conf.spark.driver.memory=4g"]))
        search_partitions(spark, split, cands.head(2 * cores), ece_bins=cfg.ece_bins)  # warm-up: workers started
        start = time.perf_counter()
        outputs[cores] = search_partitions(spark, split, cands, ece_bins=cfg.ece_bins)
        walls[cores] = time.perf_counter() - start
        tasks = max(1, min(len(cands), 4 * cores))
        print(f"local[{cores}]: {walls[cores]:7.1f} s wall, {len(cands) / walls[cores]:6.1f} candidates/s, "
              f"{tasks} tasks", flush=True)
        spark.stop()

    if not args.no_baseline:
        evaluator = CandidateEvaluator(split, ece_bins=cfg.ece_bins)
        start = time.perf_counter()
        with threadpool_limits(1):
            for i in range(len(cands)):
                evaluator(cands.iloc[i])
        loop = time.perf_counter() - start
        print(f"single process, no Spark: {loop:7.1f} s wall, {len(cands) / loop:6.1f} candidates/s")

    first = min(walls)
    for cores in sorted(walls):
        if cores != first:
            print(f"ratio local[{first}] / local[{cores}] = {walls[first] / walls[cores]:.2f} "
                  f"(ideal {cores / first:.0f})")
    ref = outputs[first]
    same = all(o.drop(columns="rank").equals(ref.drop(columns="rank")) and o["rank"].equals(ref["rank"])
               for o in outputs.values())
    best = ref[ref["rank"] == 1].iloc[0]
    print(f"results identical at every master: {same}; {int((ref.status == 'skipped').sum())} skipped; best: "
          f"{best.feature_1} >= {best.threshold_1:.4g}, then {best.feature_2} >= {best.threshold_2:.4g}, "
          f"validation F1 {best.validation_f1:.4f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
