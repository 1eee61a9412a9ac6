"""The evidence behind the answer (issue 22 §4): how memorization varies with the prompt's length, with exposure
and recency, and how well each membership score separates memorized from other sequences.

Everything that grows with the corpus is aggregated in Spark; only bounded rows reach pandas:
- `context_shares`: per model@revision x category x context length k, the sequences scored at k and those memorized
  at k (memorized_at), with the Wilson interval of the share (taxonomy.ci_level);
- `exposure_shares`: the same per power-of-two bin of exposures_before ([0], [1], [2, 3], [4, 7], ...) and of
  steps_since_last_exposure ([1], [2, 3], ...; sequences never seen have no recency and no row there);
- `exposure_medians`: per model@revision x category x label, the exact median of each exposure measure with the
  distribution-free order-statistic interval [x(j), x(n-j+1)], j the largest rank with
  P(Binomial(n, 1/2) <= j - 1) <= (1 - ci_level) / 2 (none when n is too small for one): the ranks are found on
  each group's histogram of distinct values in Spark (a cumulative count), never by sorting rows on the driver;
- `score_separation` (pandas, the bounded sample the taxonomy draws: taxonomy.max_rows): the ROC-AUC of each score
  of SCORES, oriented so that a higher value goes with memorized (ties count one half, as sklearn's roc_auc_score),
  per category and on all rows, with seeded bootstrap intervals from the taxonomy's one resampling loop
  (model.resampled_metrics).
Category "all" holds every row of a model@revision (a NULL category included); the three categories their rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from scipy import stats

from semmem.taxonomy.frames import table_frame
from semmem.taxonomy.metrics import bootstrap_weights, summarize, wilson
from semmem.taxonomy.model import resampled_metrics
from semmem.taxonomy.vocabulary import CATEGORIES, EXPOSURE_FEATURES, LABEL

ALL = "all"
# each membership score and its sign: +1 where a higher value goes with memorized, -1 where a lower one does
SCORES: dict[str, int] = {"loss": -1, "zlib_ratio": -1, "min_k_prob": 1, "min_k_plus_plus": 1, "memorized_bits": 1}
KEY = ["model", "revision", "sequence_id"]


def z_of(ci_level: float) -> float:
    """The normal quantile of a two-sided interval at `ci_level` (1.96 at 0.95)."""
    return float(stats.norm.ppf(0.5 + ci_level / 2.0))


def with_all_category(df: DataFrame) -> DataFrame:
    """`df` (with a category column) with each row once more under category "all"; NULL categories only there."""
    return df.where(F.col("category").isNotNull()).unionByName(df.withColumn("category", F.lit(ALL)))


def _shares(counts: pd.DataFrame, ci_level: float) -> pd.DataFrame:
    """counts (sequences, memorized) + share and its Wilson interval (NaN where no sequences), widened by the
    rounding of its formula (1.7e-18 at a share of 0) so that it always holds the share and stays in [0, 1]."""
    n, k = counts["sequences"].to_numpy(float), counts["memorized"].to_numpy(float)
    lo, hi = wilson(k, n, z_of(ci_level))
    share = np.divide(k, n, out=np.full(len(n), np.nan), where=n > 0)
    return counts.assign(share=share, ci_low=np.clip(np.fmin(lo, share), 0.0, 1.0),
                         ci_high=np.clip(np.fmax(hi, share), 0.0, 1.0))


def context_shares(labels: DataFrame, combined: DataFrame, ci_level: float) -> pd.DataFrame:
    """memorization_by_context rows: memorized_at (from `labels`, the memorization table) per context length,
    category (from `combined`) and model@revision."""
    graded = labels.select(*KEY, F.explode("memorized_at").alias("context_length", "memorized_k"))
    rows = with_all_category(graded.join(combined.select(*KEY, "category"), KEY))
    counts = (rows.groupBy("model", "revision", "category", "context_length")
              .agg(F.count("memorized_k").alias("sequences"),
                   F.coalesce(F.sum(F.col("memorized_k").cast("long")), F.lit(0)).alias("memorized"))
              .toPandas())  # models x 4 categories x lengths
    return table_frame("memorization_by_context", _shares(counts, ci_level))


def _bin_low(value: F.Column) -> F.Column:
    """0 for 0, else the largest power of two <= value (exact: from the binary digits, not a logarithm)."""
    return F.when(value == 0, F.lit(0).cast("long")).otherwise(
        F.pow(F.lit(2.0), F.length(F.bin(value)) - 1).cast("long"))  # 2^k: exact in a double for k < 53


def exposure_shares(combined: DataFrame, ci_level: float) -> pd.DataFrame:
    """memorization_exposure rows: sequences and memorized per power-of-two bin of each exposure measure."""
    parts = []
    for measure in EXPOSURE_FEATURES:
        value = F.col(measure).cast("long")
        parts.append(combined.where(value.isNotNull() & F.col(LABEL).isNotNull())
                     .select("model", "revision", "category", LABEL, F.lit(measure).alias("measure"),
                             _bin_low(value).alias("bin_low")))
    rows = with_all_category(parts[0].unionByName(parts[1]))
    counts = (rows.groupBy("model", "revision", "category", "measure", "bin_low")
              .agg(F.count(F.lit(1)).alias("sequences"), F.sum(F.col(LABEL).cast("long")).alias("memorized"))
              .toPandas())  # models x 4 categories x 2 measures x ~log2(steps) bins
    counts["bin_high"] = np.where(counts["bin_low"] == 0, 0, 2 * counts["bin_low"] - 1)
    return table_frame("memorization_exposure", _shares(counts, ci_level))


def order_statistic_ranks(n: int, ci_level: float) -> tuple[int, int, int | None]:
    """(lower middle rank, upper middle rank, j): the median is the mean of the two middle order statistics (1-based
    ranks; equal for odd n) and its interval [x(j), x(n - j + 1)]; j None when even [x(1), x(n)] covers less than
    ci_level."""
    alpha = (1.0 - ci_level) / 2.0
    below = int(stats.binom.ppf(alpha, n, 0.5))  # smallest i with P(B <= i) >= alpha
    if stats.binom.cdf(below, n, 0.5) > alpha:
        below -= 1
    j = below + 1  # the largest j with P(B <= j - 1) <= alpha
    return (n + 1) // 2, n // 2 + 1, j if j >= 1 else None


def exposure_medians(combined: DataFrame, ci_level: float) -> pd.DataFrame:
    """exposure_medians rows: per model@revision, category, label and exposure measure, the sequences with a value,
    their median and its order-statistic interval. Spark counts each distinct value; the driver sees only the group
    sizes and the three order statistics of each group."""
    group = ["model", "revision", "category", "memorized", "measure"]
    parts = [combined.where(F.col(m).isNotNull() & F.col(LABEL).isNotNull())
             .select("model", "revision", "category", F.col(LABEL).alias("memorized"), F.lit(m).alias("measure"),
                     F.col(m).cast("long").alias("value")) for m in EXPOSURE_FEATURES]
    hist = with_all_category(parts[0].unionByName(parts[1])).groupBy(*group, "value").count()
    upto = hist.withColumn("upto", F.sum("count").over(
        Window.partitionBy(*group).orderBy("value").rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    sizes = hist.groupBy(*group).agg(F.sum("count").alias("sequences")).toPandas()
    wanted = []
    for r in sizes.to_dict("records"):
        low, high, j = order_statistic_ranks(int(r["sequences"]), ci_level)
        ranks = {"mid_low": low, "mid_high": high, **({"ci_low": j, "ci_high": int(r["sequences"]) - j + 1}
                                                      if j is not None else {})}
        wanted += [{**{g: r[g] for g in group}, "statistic": s, "rank": k} for s, k in ranks.items()]
    if not wanted:
        return table_frame("exposure_medians", [])
    spark = combined.sparkSession
    ranks = spark.createDataFrame(pd.DataFrame(wanted), "model STRING, revision STRING, category STRING, "
                                                       "memorized BOOLEAN, measure STRING, statistic STRING, rank LONG")
    picked = (upto.join(ranks, group).where((F.col("upto") - F.col("count") < F.col("rank")) &
                                            (F.col("rank") <= F.col("upto")))
              .select(*group, "statistic", "value").toPandas())
    out = picked.pivot_table(index=group, columns="statistic", values="value", aggfunc="first").reset_index()
    for c in ("mid_low", "mid_high", "ci_low", "ci_high"):
        if c not in out:
            out[c] = np.nan
    out = out.merge(sizes, on=group)
    out["median"] = (out["mid_low"].astype(float) + out["mid_high"].astype(float)) / 2.0
    return table_frame("exposure_medians", out.astype({"ci_low": float, "ci_high": float}))


def score_separation(rows: pd.DataFrame, *, bootstrap_rounds: int, ci_level: float, seed: int) -> pd.DataFrame:
    """score_separation rows of one model@revision's sample (`rows`: model, revision, category, is_memorized and
    the SCORES columns): per score and category, the ROC-AUC on the rows where label and score are known, and its
    percentile interval over `bootstrap_rounds` seeded bootstrap resamples of those rows (all categories of a score
    resampled together, so its category AUCs come from the same rounds)."""
    out = []
    model, revision = (str(rows["model"].iloc[0]), str(rows["revision"].iloc[0])) if len(rows) else ("", "")
    for score, sign in SCORES.items():
        if score not in rows:
            continue
        values = pd.to_numeric(rows[score], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        known = np.isfinite(values) & rows[LABEL].notna().to_numpy(dtype=bool)
        if not known.any():
            continue
        y = rows[LABEL].to_numpy()[known].astype(bool)
        p = sign * values[known]
        category = rows["category"].to_numpy(dtype=object)[known]
        subsets = {ALL: np.ones(len(y), dtype=bool), **{c: category == c for c in CATEGORIES}}
        point = resampled_metrics(y, {score: p}, subsets, [np.ones((1, len(y)))])
        resampled = resampled_metrics(y, {score: p}, subsets, bootstrap_weights(len(y), bootstrap_rounds, seed))
        for name, mask in subsets.items():
            _, low, high, _ = summarize(resampled[score, name]["roc_auc"], ci_level)
            out.append({"model": model, "revision": revision, "category": name, "score": score,
                        "memorized_when": "higher" if sign > 0 else "lower",
                        "roc_auc": float(point[score, name]["roc_auc"][0]), "ci_low": low, "ci_high": high,
                        "n_rows": int(mask.sum()), "n_memorized": int(y[mask].sum())})
    return table_frame("score_separation", out)
