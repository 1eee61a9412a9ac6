"""Feature correlations (spec §4.3), the duplicate-threshold divergence (spec §3) and memorization forecasts between
models (Biderman et al. 2023, spec §6.1). Pure functions, pandas in, catalog-shaped pandas out.

- `chatterjee_xi(x, y, rng)`: Chatterjee's (2020) xi_n and its one-sided p-value under independence, vectorized over
  rows: sort by x with ties broken at random (as the definition asks; seeded), r_i = #{j: y_j <= y_(i)},
  l_i = #{j: y_j >= y_(i)}, xi = 1 - n sum |r_{i+1} - r_i| / (2 sum l_i (n - l_i)); the variance allows ties in y
  (Chatterjee's Theorem 2.2, as R's XICOR). xicorpy 0.6, which upstream used, differs in three ways: by default it
  returns Lin and Han's *modified* xi whenever no (x, y) pair repeats, which is the usual case for a continuous
  feature against a 0/1 label, so upstream's xi of continuous features is that other coefficient; its standard xi
  has l_i - 1 in place of l_i (1 - xi scaled by sum l(n-l) / sum (l-1)(n-l+1), about 1 + n / n_positive^2 for a
  0/1 label); it breaks ties in x by row order.
- `feature_correlations(combined, *, nl_threshold, code_threshold, seed)`: Pearson and Spearman (scipy, two-sided
  p-values) and xi of every model feature vs is_memorized on 12 subsets: {all, each category} x {all, nl, code},
  nl: nl_score >= nl_threshold, code: nl_score <= code_threshold (spec §2.6). Each feature uses its non-NULL rows; a
  subset with fewer than 3 rows, or a constant feature or label, gives NaN.
- `duplicate_threshold_kl(combined, *, duplicate_threshold, kl_max_duplicates, kl_bootstrap_rounds, kl_min_rows,
  js_bins, upstream_protocol, seed, ci_level)`: do memorized and other rows differ more in log(generation_perplexity)
  above the recitation threshold (duplicates > duplicate_threshold) than at or below it? Rows with a positive
  generation perplexity, a label and 1..kl_max_duplicates duplicates are used; their log-perplexities are cut into
  js_bins equal-width bins over their whole range (one binning per model@revision, [e_i, e_i+1), the maximum in the
  last bin). For each duplicate count present, and pooled over 1..duplicate_threshold and over
  duplicate_threshold+1..kl_max_duplicates (a span of one count is that count's row), the Jensen-Shannon divergence
  (natural log, in [0, ln 2]) of the memorized and the non-memorized histogram, each smoothed by JS_PSEUDO_COUNT =
  0.5 per bin before normalizing, bias-corrected by the bootstrap (`_js_row`: the plug-in JS grows as groups shrink,
  which would fake a rise at the high counts): kl_bootstrap_rounds seeded rounds resample each group with
  replacement at its own size (drawn as Multinomial(n, the group's bin shares), the same distribution of bin counts
  in rounds x bins of memory); value 2 JS - mean(JS*), basic bootstrap band at ci_level. A group below kl_min_rows
  gives NaN (rounds = 0).
  Under upstream_protocol, upstream's statistic instead (statistic 'upstream_paired_kl', per count only): each round
  draws m rows with replacement from each group, m = the smaller group's size ("downsample both to equal size"),
  normalizes each perplexity vector to sum 1 and averages KL(P||Q) and KL(Q||P) of the two vectors element by
  element, as upstream's notebook; value = mean over rounds, band and maximum (kl_max). The elements are paired in
  random order, so it grows with the spread inside each group, not only with their distance: it does not test the
  threshold.
- `memorization_forecast(memorized, *, ci_level)`: for every ordered pair (A, B) of distinct model@revision, on the
  sequences both scored: precision = |A and B| / |A|, recall = |A and B| / |B|, with the counts and Wilson intervals
  at ci_level. It takes a Spark frame (it reads every scored sequence of every model) and returns pandas; for any
  number K of model@revisions: Spark partitions the rows by sequence, each task sums its sequences' K x K pair counts
  (dense sequences x K 0/1 matrices, S'S, M'S, M'M) and only the K keys and at most K^2 summed counts reach the driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy import special, stats

from semmem.errors import ConfigError
from semmem.spark import spread_partitions
from semmem.taxonomy.vocabulary import CATEGORIES, DISPLAY_NAMES, LABEL, MODEL_FEATURES, one_model
from semmem.taxonomy.frames import table_frame
from semmem.taxonomy.metrics import summarize, wilson

_CELLS_PER_CHUNK = 4_000_000  # rounds x sample size held at once
JS_PSEUDO_COUNT = 0.5  # added to every bin of both histograms of the JS divergence, so no bin is empty
_FORECAST_CELLS = 1 << 22  # sequences x models per float32 block: fast BLAS, exact as every sum stays below 2^24


def chatterjee_xi(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """(xi_n(x -> y), one-sided p-value); NaN for fewer than 3 rows or a constant y."""
    n = len(y)
    if n < 3 or np.all(y == y[0]):
        return np.nan, np.nan
    ys = np.asarray(y, dtype=float)[np.lexsort((rng.random(n), x))]
    r = stats.rankdata(ys, method="max")  # #{j: y_j <= y_i}
    l_ = stats.rankdata(-ys, method="max")  # #{j: y_j >= y_i}
    xi = 1.0 - n * np.abs(np.diff(r)).sum() / (2.0 * (l_ * (n - l_)).sum())
    fr, gr = np.sort(r / n), l_ / n
    ind = np.arange(1, n + 1)
    ind2 = 2 * n - 2 * ind + 1
    a = np.mean(ind2 * fr * fr) / n
    c = np.mean(ind2 * fr) / n
    b = np.mean(((np.cumsum(fr) + (n - ind) * fr) / n) ** 2)
    v = (a - 2 * b + c * c) / np.mean(gr * (1 - gr)) ** 2
    return float(xi), float(stats.norm.sf(np.sqrt(n) * xi / np.sqrt(v))) if v > 0 else np.nan


def _correlations(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    if len(y) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return {s: (np.nan, np.nan) for s in ("pearson", "spearman", "xi")}
    pearson = stats.pearsonr(x, y)
    spearman = stats.spearmanr(x, y)
    return {"pearson": (float(pearson.statistic), float(pearson.pvalue)),
            "spearman": (float(spearman.statistic), float(spearman.pvalue)), "xi": chatterjee_xi(x, y, rng)}


def feature_correlations(combined: pd.DataFrame, *, nl_threshold: float = 0.525, code_threshold: float = 0.4,
                         seed: int = 1024) -> pd.DataFrame:
    """feature_correlations rows: each model feature vs is_memorized on the 12 category x text subsets."""
    base = dict(zip(("model", "revision"), one_model(combined)))
    df = combined[combined[LABEL].notna()]
    y_all = df[LABEL].to_numpy(dtype=float)
    nl = pd.to_numeric(df["nl_score"], errors="coerce") if "nl_score" in df else pd.Series(np.nan, index=df.index)
    texts = {"all": np.ones(len(df), dtype=bool), "nl": (nl >= nl_threshold).to_numpy(),
             "code": (nl <= code_threshold).to_numpy()}
    cats = {"all": np.ones(len(df), dtype=bool), **{c: (df["category"] == c).to_numpy() for c in CATEGORIES}}
    rng = np.random.default_rng(seed)
    rows = []
    for feature in MODEL_FEATURES:
        values = pd.to_numeric(df[feature], errors="coerce").to_numpy(dtype=float) if feature in df \
            else np.full(len(df), np.nan)
        for cname, cmask in cats.items():
            for tname, tmask in texts.items():
                mask = cmask & tmask & np.isfinite(values)  # NULL, NaN and +-inf are missing values
                x, y = values[mask], y_all[mask]
                common = {**base, "category": cname, "text_type": tname, "feature": feature,
                          "display_name": DISPLAY_NAMES[feature], "n_rows": len(y), "n_positive": int(y.sum())}
                rows += [{**common, "statistic": s, "value": v, "p_value": p}
                         for s, (v, p) in _correlations(x, y, rng).items()]
    return table_frame("feature_correlations", rows)


def symmetric_kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of two (rounds x m) positive arrays, each normalized to sum 1: (KL(P||Q) + KL(Q||P)) / 2."""
    p = a / a.sum(axis=1, keepdims=True)
    q = b / b.sum(axis=1, keepdims=True)
    return 0.5 * ((p - q) * np.log(p / q)).sum(axis=1)


def jensen_shannon(p_counts: np.ndarray, q_counts: np.ndarray, pseudo_count: float = JS_PSEUDO_COUNT) -> np.ndarray:
    """JS divergence (nats, in [0, ln 2]) of two histograms along the last axis: each gets `pseudo_count` added per
    bin and is normalized, then (KL(P||M) + KL(Q||M)) / 2 with M = (P + Q) / 2."""
    p = np.asarray(p_counts, dtype=float) + pseudo_count
    q = np.asarray(q_counts, dtype=float) + pseudo_count
    p, q = p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True)
    m = 0.5 * (p + q)
    return 0.5 * (special.rel_entr(p, m) + special.rel_entr(q, m)).sum(axis=-1)


def _js_row(mem: np.ndarray, non: np.ndarray, bins: int, rng: np.random.Generator, rounds: int, min_rows: int,
            ci_level: float) -> dict[str, object]:
    """Counts, bias-corrected JS and its band, from each group's bin indices.

    The plug-in JS of two samples of one distribution is above 0 by about (bins - 1) / 8 (1/n_1 + 1/n_2), so small
    groups look more different than large ones: comparing counts with fewer rows (usually the high ones) against
    count 1 would find a rise that is not there. The bootstrap estimates that bias: value = 2 JS - mean(JS*), band
    = [2 JS - q_high(JS*), 2 JS - q_low(JS*)] (the basic bootstrap interval, Efron & Tibshirani §10, §13.4), so
    equal distributions give about 0 at any group size. Without rounds: the plug-in JS, no band."""
    row: dict[str, object] = {"n_memorized": len(mem), "n_non_memorized": len(non), "rounds": 0}
    if min(len(mem), len(non)) < max(min_rows, 1):
        return row
    cm, cn = np.bincount(mem, minlength=bins), np.bincount(non, minlength=bins)
    plug_in = float(jensen_shannon(cm, cn))
    row["value"] = plug_in
    if rounds > 0:  # the bin counts of n rows drawn with replacement are Multinomial(n, the group's bin shares)
        boot = jensen_shannon(rng.multinomial(len(mem), cm / len(mem), size=rounds),
                              rng.multinomial(len(non), cn / len(non), size=rounds))
        mean, low, high, _ = summarize(boot, ci_level)
        row.update(rounds=rounds, value=2 * plug_in - mean, ci_low=2 * plug_in - high, ci_high=2 * plug_in - low)
    return row


def _upstream_paired_kl(df: pd.DataFrame, rng: np.random.Generator, rounds: int, min_rows: int,
                        ci_level: float) -> list[dict[str, object]]:
    """Upstream's per-count rows: bootstrap mean, band and maximum of `symmetric_kl` of randomly paired vectors."""
    rows = []
    for d, group in df.groupby("d", sort=True):
        mem = group.loc[group["y"], "ppl"].to_numpy()
        non = group.loc[~group["y"], "ppl"].to_numpy()
        m = min(len(mem), len(non))
        row = {"statistic": "upstream_paired_kl", "duplicates_from": int(d), "duplicates_to": int(d),
               "n_memorized": len(mem), "n_non_memorized": len(non), "sample_size": m, "rounds": 0}
        if m >= max(min_rows, 1) and rounds > 0:
            step = max(1, _CELLS_PER_CHUNK // m)
            kl = np.concatenate([
                symmetric_kl(mem[rng.integers(0, len(mem), (k, m))], non[rng.integers(0, len(non), (k, m))])
                for k in (min(step, rounds - s) for s in range(0, rounds, step))])
            mean, low, high, _ = summarize(kl, ci_level)
            row.update(rounds=rounds, value=mean, ci_low=low, ci_high=high, kl_max=float(kl.max()))
        rows.append(row)
    return rows


def duplicate_threshold_kl(combined: pd.DataFrame, *, duplicate_threshold: int = 5, kl_max_duplicates: int = 999,
                           kl_bootstrap_rounds: int = 1000, kl_min_rows: int = 10, js_bins: int = 20,
                           upstream_protocol: bool = False, seed: int = 1024,
                           ci_level: float = 0.95) -> pd.DataFrame:
    """duplicate_threshold_kl rows: whether memorized and other rows' log-perplexities differ more above the
    recitation threshold than at or below it (spec §3). Jensen-Shannon rows per duplicate count and pooled over
    1..duplicate_threshold and duplicate_threshold+1..kl_max_duplicates; under `upstream_protocol`, upstream's
    per-count paired KL rows instead (statistic 'upstream_paired_kl')."""
    if js_bins < 1:
        raise ConfigError(f"taxonomy.js_bins must be at least 1, got {js_bins}")
    base = dict(zip(("model", "revision"), one_model(combined)))
    ppl = pd.to_numeric(combined["generation_perplexity"], errors="coerce")
    dups = pd.to_numeric(combined["sequence_duplicates"], errors="coerce")
    ok = (ppl > 0) & np.isfinite(ppl) & dups.between(1, kl_max_duplicates) & combined[LABEL].notna()
    df = pd.DataFrame({"d": dups[ok].astype(np.int64), "ppl": ppl[ok].astype(float),
                       "y": combined.loc[ok, LABEL].astype(bool)})
    rng = np.random.default_rng(seed)
    if upstream_protocol:
        rows = _upstream_paired_kl(df, rng, kl_bootstrap_rounds, kl_min_rows, ci_level)
        return table_frame("duplicate_threshold_kl", [{**base, **r} for r in rows])
    x, d, y = np.log(df["ppl"].to_numpy()), df["d"].to_numpy(), df["y"].to_numpy()
    edges = np.linspace(x.min(), x.max(), js_bins + 1) if len(x) else np.zeros(js_bins + 1)
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, js_bins - 1)  # [e_i, e_i+1), the maximum in the last
    # a pooled span of one count is that count's row; an empty span (threshold >= kl_max_duplicates) has none
    pools = ((1, min(duplicate_threshold, kl_max_duplicates)), (duplicate_threshold + 1, kl_max_duplicates))
    spans = [(int(v), int(v)) for v in np.unique(d)] + [(lo, hi) for lo, hi in pools if lo < hi]
    rows = []
    for lo, hi in spans:
        sel = (d >= lo) & (d <= hi)
        rows.append({**base, "statistic": "jensen_shannon", "duplicates_from": lo, "duplicates_to": hi,
                     **_js_row(b[sel & y], b[sel & ~y], js_bins, rng, kl_bootstrap_rounds, kl_min_rows, ci_level)})
    return table_frame("duplicate_threshold_kl", rows)


def _pair_counts(batches: Iterator[pd.DataFrame], models: int) -> Iterator[pd.DataFrame]:
    """One task's partial counts over its sequences, as long rows (a, b, restricted, both_scored, mem_a_scored_b,
    both_mem) for a != b with a common sequence; restricted: only the sequences each model had seen by its
    checkpoint (`seen`). Every row of a sequence is in this task, so each sequence's dense row of states is whole
    here and no per-sequence state leaves the task."""
    frames = [b for b in batches if len(b)]
    if not frames:
        return
    df = pd.concat(frames, ignore_index=True)
    seq, _ = pd.factorize(df["sequence_id"])
    k = df["k"].to_numpy()
    scored, mem, seen = (np.zeros((seq.max() + 1, models), dtype=np.int8) for _ in range(3))
    np.maximum.at(scored, (seq, k), 1)  # a repeated (sequence, model) counts once, memorized if any row says so
    np.maximum.at(mem, (seq, k), df["y"].to_numpy(dtype=np.int8))
    np.maximum.at(seen, (seq, k), df["seen"].to_numpy(dtype=np.int8))
    for restricted in (False, True):
        s_all, m_all = (scored * seen, mem * seen) if restricted else (scored, mem)
        both_scored, mem_scored, both_mem = (np.zeros((models, models), dtype=np.int64) for _ in range(3))
        step = max(1, _FORECAST_CELLS // models)
        for start in range(0, len(s_all), step):
            s, m = s_all[start:start + step].astype(np.float32), m_all[start:start + step].astype(np.float32)
            both_scored += (s.T @ s).astype(np.int64)
            mem_scored += (m.T @ s).astype(np.int64)
            both_mem += (m.T @ m).astype(np.int64)
        a, b = np.nonzero((both_scored > 0) & ~np.eye(models, dtype=bool))
        yield pd.DataFrame({"a": a.astype(np.int32), "b": b.astype(np.int32), "restricted": restricted,
                            "both_scored": both_scored[a, b], "mem_a_scored_b": mem_scored[a, b],
                            "both_mem": both_mem[a, b]})


def memorization_forecast(memorized: DataFrame, *, ci_level: float = 0.95) -> pd.DataFrame:
    """memorization_forecast rows from the long rows (model, revision, sequence_id, is_memorized[,
    seen_by_checkpoint]) of a Spark frame, such as `combined`; a NULL is_memorized is "not scored", a repeated
    (model, revision, sequence_id) counts once (memorized if any row says so). Empty with fewer than 2 models.
    Unrestricted rows use every sequence both scored; restricted rows (Biderman et al. 2023) only those both had
    trained on by their checkpoints (seen_by_checkpoint true for both; a pair with none gets no restricted row).
    Precision and recall get Wilson intervals at `ci_level`. Only the K model@revision keys reach the driver, then
    at most 2 K^2 summed pair counts: each task holds all rows of its sequences (partitioned by sequence_id) and sums
    its K x K counts, so any K fits."""
    df = memorized.where(F.col(LABEL).isNotNull())
    keys = [(r["model"], r["revision"]) for r in
            df.select("model", "revision").distinct().orderBy("model", "revision").collect()]
    if len(keys) < 2:
        return table_frame("memorization_forecast", [])
    spark, n = memorized.sparkSession, len(keys)
    index = spark.createDataFrame([(m, r, i) for i, (m, r) in enumerate(keys)], "model string, revision string, k int")
    tasks = spread_partitions(spark)
    seen = (F.coalesce(F.col("seen_by_checkpoint"), F.lit(False)) if "seen_by_checkpoint" in df.columns
            else F.lit(False))
    sums = (df.join(F.broadcast(index), ["model", "revision"])
            .select("sequence_id", "k", F.col(LABEL).cast("byte").alias("y"), seen.cast("byte").alias("seen"))
            .repartition(tasks, "sequence_id")
            .mapInPandas(partial(_pair_counts, models=n),
                         "a int, b int, restricted boolean, both_scored long, mem_a_scored_b long, both_mem long")
            .groupBy("a", "b", "restricted")
            .agg(*[F.sum(c).alias(c) for c in ("both_scored", "mem_a_scored_b", "both_mem")])
            .toPandas())  # at most 2 K^2 rows
    z = float(stats.norm.ppf(0.5 + ci_level / 2.0))
    models, revisions = np.array([m for m, _ in keys], dtype=object), np.array([r for _, r in keys], dtype=object)
    parts = []
    for restricted in (False, True):
        part = sums[sums["restricted"] == restricted]
        counts = {c: np.zeros((n, n), dtype=np.int64) for c in ("both_scored", "mem_a_scored_b", "both_mem")}
        for c, matrix in counts.items():
            matrix[part["a"].to_numpy(), part["b"].to_numpy()] = part[c].to_numpy(dtype=np.int64)
        a, b = np.nonzero(~np.eye(n, dtype=bool) & ((counts["both_scored"] > 0) | (not restricted)))
        n_a, n_b = counts["mem_a_scored_b"][a, b], counts["mem_a_scored_b"][b, a]
        both = counts["both_mem"][a, b]
        (p_low, p_high), (r_low, r_high) = wilson(both, n_a, z), wilson(both, n_b, z)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision, recall = both / n_a, both / n_b  # NaN where A (or B) memorized none of the common sequences
        parts.append(pd.DataFrame({
            "model_a": models[a], "revision_a": revisions[a], "model_b": models[b], "revision_b": revisions[b],
            "restricted": restricted, "n_sequences": counts["both_scored"][a, b], "n_memorized_a": n_a,
            "n_memorized_b": n_b, "n_memorized_both": both, "precision": precision, "precision_ci_low": p_low,
            "precision_ci_high": p_high, "recall": recall, "recall_ci_low": r_low, "recall_ci_high": r_high}))
    return table_frame("memorization_forecast", pd.concat(parts, ignore_index=True))