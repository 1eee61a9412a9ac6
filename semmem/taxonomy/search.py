"""The "optimal partition" search of spec §4.4 (exhaustive, although upstream calls it greedy), over Spark tasks.

The test rows never choose: candidates are fitted on the training rows outside the split's validation share and
ranked by their F1 on that share (stratified on label + category, seeded: `Split.validation`); the winner is refitted
on all training rows and evaluated on the test rows once, as predictor best_partition. Ranking 810 candidates by their
test F1, as upstream did, reports the maximum of 810 noisy estimates, which is biased upward.

- `partition_candidates(split, *, search_features, search_quantiles)`: every ordered pair of (feature, quantile) with
  different features; 10 features x 3 quantiles give 30 x 27 = 810. A threshold is the quantile (linear
  interpolation, as pandas) of the unscaled feature over the memorized rows: those the search fits on by default,
  all of them (upstream's memories dataset, test rows included) under upstream_protocol. Features the split lacks
  are left out.
- `Partition.assign`: T1 if feature_1 >= threshold_1, else T2 if feature_2 >= threshold_2, else T3 (unscaled values).
- `CandidateEvaluator(split, ece_bins=...)(candidate)`: three per-partition LRs on the fitting rows (`fit_groups`,
  same protocol as the taxonomic model), each validation row scored by its partition's model, aggregate validation
  metrics; F1 ranks. Skipped, with the reason, when a partition has no fitting rows or one class.
- `search_partitions(spark, split, candidates, *, ece_bins, search_tasks, min_validation)`: the split (bounded by
  max_rows) and the candidates are broadcast once; Spark tasks take contiguous chunks of candidate ids
  (mapInPandas); the rows (one per candidate) are collected and ranked by validation F1, ties to the lower
  candidate_id. Deterministic for a seed: every fit is. A validation share with fewer than `min_validation`
  memorized or other rows cannot rank them: every candidate is skipped with the reason (VALIDATION_TOO_SMALL ...),
  said once in the log.
- `with_best_partition(result, search)`: the rank-1 partition as predictor `best_partition` of a TaxonomyResult,
  refitted on all training rows (test metrics per base category and aggregate, on the same resamples as the
  baseline); unchanged if none was evaluated.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("semmem.taxonomy")
PARTITIONS = ("t1", "t2", "t3")
VALIDATION_TOO_SMALL = "validation split too small to rank candidates"  # how a skipped search's reason starts
_SEARCH_METRICS = ("f1", "precision", "recall", "roc_auc", "pr_auc", "ece")  # as validation_<metric>


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
    if split.upstream_protocol:
        raw = np.concatenate([split.train.raw[split.train.y], split.test.raw[split.test.y]])
    else:
        fitting = split.train.subset(~split.validation)
        raw = fitting.raw[fitting.y]
    pairs = [(f, q, float(np.quantile(raw[:, split.column(f)], q)) if len(raw) else np.nan)
             for f in search_features if f in split.features for q in search_quantiles]
    rows = [{"feature_1": f1, "quantile_1": q1, "threshold_1": t1, "feature_2": f2, "quantile_2": q2,
             "threshold_2": t2} for f1, q1, t1 in pairs for f2, q2, t2 in pairs if f2 != f1]
    return pd.DataFrame(rows, columns=["feature_1", "quantile_1", "threshold_1", "feature_2", "quantile_2",
                                       "threshold_2"]).rename_axis("candidate_id").reset_index()


class CandidateEvaluator:
    """Evaluates candidates on one split: fitted on its fitting rows, scored on its validation rows. Holds the
    standardized matrices so a task computes them once."""

    def __init__(self, split: Split, *, ece_bins: int = 10) -> None:
        self.split, self.ece_bins = split, ece_bins
        x = design(split, split.train)
        self.fitting, self.validation = split.train.subset(~split.validation), split.train.subset(split.validation)
        self.x_fit, self.x_validation = x[~split.validation], x[split.validation]

    def __call__(self, candidate: pd.Series | dict[str, Any]) -> dict[str, Any]:
        """One taxonomy_search row (rank left NULL)."""
        split, part = self.split, Partition.of(candidate)
        fitting_groups, validation_groups = part.assign(split, self.fitting), part.assign(split, self.validation)
        fits = fit_groups(self.x_fit, self.fitting.y, fitting_groups, PARTITIONS, seed=split.seed,
                          upstream_protocol=split.upstream_protocol)
        row: dict[str, Any] = {
            **_identity(split, candidate), "n_validation": len(validation_groups),
            **{f"n_train_{i + 1}": int((fitting_groups == t).sum()) for i, t in enumerate(PARTITIONS)}}
        skipped = [f"{name}: {fit.reason}" for name, fit in fits.items() if fit.model is None]
        if skipped:
            return {**row, "status": "skipped", "reason": "; ".join(skipped)}
        p = predict_groups(fits, self.x_validation, validation_groups, np.full(len(validation_groups), np.nan))
        got = weighted_metrics(self.validation.y, p, np.ones((1, len(p))), ece_bins=self.ece_bins,
                               hard_label_auc=split.upstream_protocol)
        return {**row, "status": "evaluated", **{f"validation_{m}": float(got[m][0]) for m in _SEARCH_METRICS}}


def _identity(split: Split, candidate: pd.Series | dict[str, Any]) -> dict[str, Any]:
    return {"model": split.model, "revision": split.revision, "protocol": split.protocol,
            **{k: candidate[k] for k in ("candidate_id", "feature_1", "quantile_1", "threshold_1", "feature_2",
                                         "quantile_2", "threshold_2")}}


def _validation_problem(split: Split, min_rows: int) -> str | None:
    """Why the validation share cannot rank candidates, or None."""
    y = split.train.y[split.validation]
    memorized, other = int(y.sum()), int((~y).sum())
    if min(memorized, other) < max(min_rows, 1):
        return (f"{VALIDATION_TOO_SMALL}: {memorized} memorized and {other} other rows, "
                f"fewer than taxonomy.search_min_validation = {min_rows} of each (raise "
                "taxonomy.validation_fraction or score more sequences); the search is skipped, never run on the "
                "test rows instead")
    return None


def ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """taxonomy_search rows with `rank`: 1 = best validation F1 among evaluated candidates, ties to the lower id."""
    out = rows.sort_values("candidate_id").reset_index(drop=True)
    done = out[out["status"] == "evaluated"].sort_values(["validation_f1", "candidate_id"], ascending=[False, True])
    out["rank"] = pd.Series(np.arange(1, len(done) + 1), index=done.index, dtype="Int64")
    return table_frame("taxonomy_search", out)


def search_partitions(spark: SparkSession, split: Split, candidates: pd.DataFrame, *, ece_bins: int = 10,
                      search_tasks: int | None = None, min_validation: int = 5) -> pd.DataFrame:
    """Every candidate evaluated in Spark tasks on a broadcast copy of the split -> taxonomy_search rows, ranked;
    every candidate skipped with the reason when the validation share is too small to rank them."""
    n = len(candidates)
    if n == 0:
        return ranked(table_frame("taxonomy_search", []))
    problem = _validation_problem(split, min_validation)
    if problem:
        log.warning("taxonomy: %s@%s: %s", split.model, split.revision, problem)
        return ranked(table_frame("taxonomy_search", [
            {**_identity(split, c), "status": "skipped", "reason": problem,
             "n_validation": int(split.validation.sum())} for _, c in candidates.iterrows()]))
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
