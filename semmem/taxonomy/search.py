"""The "optimal partition" search of spec §4.4 (exhaustive, although upstream calls it greedy), over Spark tasks.

- `partition_candidates(split, *, search_features, search_quantiles)`: every ordered pair of (feature, quantile) with
  different features; 10 features x 3 quantiles give 30 x 27 = 810. A threshold is the quantile (linear
  interpolation, as pandas) of the unscaled feature over the memorized rows: those of the training split by default,
  all of them (upstream's memories dataset) under upstream_protocol. Features the split lacks are left out.
- `Partition.assign`: T1 if feature_1 >= threshold_1, else T2 if feature_2 >= threshold_2, else T3 (unscaled values).
- `CandidateEvaluator(split, ece_bins=...)(candidate)`: three per-partition LRs on the training rows (`fit_groups`,
  same protocol as the taxonomic model), each test row scored by its partition's model, aggregate test metrics at the
  point estimate; F1 selects. Skipped, with the reason, when a partition has no training rows or one class.
- `search_partitions(spark, split, candidates, *, ece_bins, search_tasks)`: the split (bounded by max_rows) and the
  candidates are broadcast once; Spark tasks take contiguous chunks of candidate ids (mapInPandas); the rows (one per
  candidate) are collected and ranked by F1, ties to the lower candidate_id. Deterministic for a seed: every fit is.
- `with_best_partition(result, search)`: the rank-1 partition as predictor `best_partition` of a TaxonomyResult
  (metrics per base category and aggregate, on the same resamples as the baseline); unchanged if none was evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from threadpoolctl import threadpool_limits

from semmem.catalog import table
from semmem.errors import ConfigError
from semmem.spark import default_parallelism
from semmem.taxonomy.frames import table_frame
from semmem.taxonomy.metrics import weighted_metrics
from semmem.taxonomy.model import Part, Split, TaxonomyResult, add_predictor, design, fit_groups, predict_groups

PARTITIONS = ("t1", "t2", "t3")
_SEARCH_METRICS = ("f1", "precision", "recall", "roc_auc", "pr_auc", "ece")


@dataclass(frozen=True)
class Partition:
    feature_1: str
    threshold_1: float
    feature_2: str
    threshold_2: float

    def assign(self, split: Split, part: Part) -> np.ndarray:
        """t1 / t2 / t3 of each row of `part` (spec §4.4 rule on unscaled values)."""
        first = part.raw[:, split.column(self.feature_1)] >= self.threshold_1
        second = part.raw[:, split.column(self.feature_2)] >= self.threshold_2
        return np.asarray(PARTITIONS, dtype=object)[np.where(first, 0, np.where(second, 1, 2))]

    @classmethod
    def of(cls, candidate: pd.Series | dict[str, Any]) -> Partition:
        return cls(str(candidate["feature_1"]), float(candidate["threshold_1"]), str(candidate["feature_2"]),
                   float(candidate["threshold_2"]))


def partition_candidates(split: Split, *, search_features: list[str], search_quantiles: list[float]) -> pd.DataFrame:
    """(candidate_id, feature_1, quantile_1, threshold_1, feature_2, quantile_2, threshold_2), in feature order."""
    unknown = sorted(set(search_features) - set(split.selection.features) - set(split.selection.missing))
    if unknown:
        raise ConfigError(f"taxonomy.search_features has {unknown}, not model features; expected names among "
                          f"{', '.join(split.selection.features + split.selection.missing)}")
    memorized = [p.raw[p.y] for p in ((split.train, split.test) if split.upstream_protocol else (split.train,))]
    raw = np.concatenate(memorized)
    pairs = [(f, q, float(np.quantile(raw[:, split.column(f)], q)) if len(raw) else np.nan)
             for f in search_features if f in split.features for q in search_quantiles]
    rows = [{"feature_1": f1, "quantile_1": q1, "threshold_1": t1, "feature_2": f2, "quantile_2": q2,
             "threshold_2": t2} for f1, q1, t1 in pairs for f2, q2, t2 in pairs if f2 != f1]
    return pd.DataFrame(rows, columns=["feature_1", "quantile_1", "threshold_1", "feature_2", "quantile_2",
                                       "threshold_2"]).rename_axis("candidate_id").reset_index()


class CandidateEvaluator:
    """Evaluates candidates on one split; holds the standardized matrices so a task computes them once."""

    def __init__(self, split: Split, *, ece_bins: int = 10) -> None:
        self.split, self.ece_bins = split, ece_bins
        self.x_train, self.x_test = design(split, split.train), design(split, split.test)

    def __call__(self, candidate: pd.Series | dict[str, Any]) -> dict[str, Any]:
        """One taxonomy_search row (rank left NULL)."""
        split, part = self.split, Partition.of(candidate)
        train_groups, test_groups = part.assign(split, split.train), part.assign(split, split.test)
        fits = fit_groups(self.x_train, split.train.y, train_groups, PARTITIONS, seed=split.seed,
                          upstream_protocol=split.upstream_protocol)
        row: dict[str, Any] = {
            "model": split.model, "revision": split.revision, "protocol": split.protocol,
            **{k: candidate[k] for k in ("candidate_id", "feature_1", "quantile_1", "threshold_1", "feature_2",
                                         "quantile_2", "threshold_2")},
            **{f"n_train_{i + 1}": int((train_groups == t).sum()) for i, t in enumerate(PARTITIONS)}}
        skipped = [f"{name}: {fit.reason}" for name, fit in fits.items() if fit.model is None]
        if skipped:
            return {**row, "status": "skipped", "reason": "; ".join(skipped)}
        p = predict_groups(fits, self.x_test, test_groups, np.full(len(test_groups), np.nan))
        got = weighted_metrics(split.test.y, p, np.ones((1, len(p))), ece_bins=self.ece_bins,
                               hard_label_auc=split.upstream_protocol)
        return {**row, "status": "evaluated", **{m: float(got[m][0]) for m in _SEARCH_METRICS}}


def ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """taxonomy_search rows with `rank`: 1 = best aggregate F1 among evaluated candidates, ties to the lower id."""
    out = rows.sort_values("candidate_id").reset_index(drop=True)
    done = out[out["status"] == "evaluated"].sort_values(["f1", "candidate_id"], ascending=[False, True])
    out["rank"] = pd.Series(np.arange(1, len(done) + 1), index=done.index, dtype="Int64")
    return table_frame("taxonomy_search", out)


def search_partitions(spark: SparkSession, split: Split, candidates: pd.DataFrame, *, ece_bins: int = 10,
                      search_tasks: int | None = None) -> pd.DataFrame:
    """Every candidate evaluated in Spark tasks on a broadcast copy of the split -> taxonomy_search rows, ranked."""
    n = len(candidates)
    if n == 0:
        return ranked(table_frame("taxonomy_search", []))
    tasks = max(1, min(n, search_tasks or 4 * default_parallelism(spark)))
    shared = spark.sparkContext.broadcast((split, candidates))
    schema = table("taxonomy_search").spark_schema

    def evaluate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # executor side: one BLAS thread per task, so tasks (not threads) use the cores
        task_split, task_candidates = shared.value
        with threadpool_limits(1):
            evaluator = CandidateEvaluator(task_split, ece_bins=ece_bins)
            for batch in batches:
                rows = [evaluator(task_candidates.iloc[int(i)]) for i in batch["id"]]
                yield table_frame("taxonomy_search", rows)

    try:
        out = spark.range(0, n, numPartitions=tasks).mapInPandas(evaluate, schema).toPandas()
    finally:
        shared.unpersist()
    return ranked(out)


def with_best_partition(result: TaxonomyResult, search: pd.DataFrame) -> TaxonomyResult:
    """`result` with predictor best_partition (the rank-1 candidate of `search`); unchanged if none was evaluated."""
    best = search[search["rank"] == 1]
    if best.empty:
        return result
    part, split = Partition.of(best.iloc[0]), result.split
    return add_predictor(result, "best_partition", part.assign(split, split.train), part.assign(split, split.test),
                         PARTITIONS)
