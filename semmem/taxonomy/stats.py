"""Feature correlations (spec §4.3), the duplicate-threshold KL curve (spec §3) and memorization forecasts between
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
- `duplicate_threshold_kl(combined, *, kl_max_duplicates, kl_bootstrap_rounds, kl_min_rows, seed, ci_level)`: for
  each duplicate count d <= kl_max_duplicates present, the generation perplexities of memorized and of non-memorized
  rows with exactly d duplicates; each round draws m rows with replacement from each group, m = the smaller group's
  size ("downsample both to equal size"), normalizes each vector to sum 1 and averages KL(P||Q) and KL(Q||P) of the
  two vectors element by element, as upstream's notebook. Mean, percentile band and maximum over rounds; m below
  kl_min_rows gives NaN (rounds = 0). Rows without a positive generation perplexity are left out. The elements are
  paired in random order, so the value grows with the spread inside each group, not only with their distance.
- `memorization_forecast(memorized)`: for every ordered pair (A, B) of distinct model@revision, on the sequences both
  scored: precision = |A and B| / |A|, recall = |A and B| / |B|, with the counts. It takes a Spark frame (it reads
  every scored sequence of every model) and returns pandas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy import stats

from semmem.taxonomy.vocabulary import CATEGORIES, DISPLAY_NAMES, LABEL, MODEL_FEATURES, one_model
from semmem.taxonomy.frames import table_frame
from semmem.taxonomy.metrics import summarize

_CELLS_PER_CHUNK = 4_000_000  # rounds x sample size held at once


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


def duplicate_threshold_kl(combined: pd.DataFrame, *, kl_max_duplicates: int = 999, kl_bootstrap_rounds: int = 1000,
                           kl_min_rows: int = 10, seed: int = 1024, ci_level: float = 0.95) -> pd.DataFrame:
    """duplicate_threshold_kl rows: the bootstrapped symmetric KL of spec §3 per duplicate count."""
    base = dict(zip(("model", "revision"), one_model(combined)))
    ppl = pd.to_numeric(combined["generation_perplexity"], errors="coerce")
    dups = pd.to_numeric(combined["sequence_duplicates"], errors="coerce")
    ok = (ppl > 0) & np.isfinite(ppl) & dups.between(1, kl_max_duplicates) & combined[LABEL].notna()
    df = pd.DataFrame({"d": dups[ok].astype(np.int64), "ppl": ppl[ok].astype(float),
                       "y": combined.loc[ok, LABEL].astype(bool)})
    rng = np.random.default_rng(seed)
    rows = []
    for d, group in df.groupby("d", sort=True):
        mem = group.loc[group["y"], "ppl"].to_numpy()
        non = group.loc[~group["y"], "ppl"].to_numpy()
        m = min(len(mem), len(non))
        row = {**base, "sequence_duplicates": int(d), "n_memorized": len(mem), "n_non_memorized": len(non),
               "sample_size": m, "rounds": 0}
        if m >= max(kl_min_rows, 1) and kl_bootstrap_rounds > 0:
            step = max(1, _CELLS_PER_CHUNK // m)
            kl = np.concatenate([
                symmetric_kl(mem[rng.integers(0, len(mem), (k, m))], non[rng.integers(0, len(non), (k, m))])
                for k in (min(step, kl_bootstrap_rounds - s) for s in range(0, kl_bootstrap_rounds, step))])
            mean, low, high, _ = summarize(kl, ci_level)
            row.update(rounds=kl_bootstrap_rounds, kl_mean=mean, kl_low=low, kl_high=high, kl_max=float(kl.max()))
        rows.append(row)
    return table_frame("duplicate_threshold_kl", rows)


def memorization_forecast(memorized: DataFrame) -> pd.DataFrame:
    """memorization_forecast rows from the long rows (model, revision, sequence_id, is_memorized) of a Spark frame,
    such as `combined`; a NULL is_memorized is "not scored", a repeated (model, revision, sequence_id) counts once.
    Empty with fewer than 2 models. In Spark, each sequence's state under every model@revision (not scored, 0, 1) is
    pivoted into one row; only the histogram of those states reaches the driver (at most 3^models rows)."""
    df = memorized.where(F.col(LABEL).isNotNull())
    keys = [(r["model"], r["revision"]) for r in
            df.select("model", "revision").distinct().orderBy("model", "revision").collect()]
    if len(keys) < 2:
        return table_frame("memorization_forecast", [])
    index = F.create_map(*[v for i, (m, r) in enumerate(keys) for v in (F.lit(f"{m}\x00{r}"), F.lit(i))])
    state = (df.select("sequence_id", index[F.concat_ws("\x00", "model", "revision")].alias("k"),
                       F.col(LABEL).cast("int").alias("y"))
             .groupBy("sequence_id").pivot("k", list(range(len(keys)))).agg(F.max("y")))
    columns = [str(i) for i in range(len(keys))]
    hist = state.groupBy(*columns).count().toPandas()
    counts = hist["count"].to_numpy(dtype=np.int64)
    y = hist[columns].astype("Float64").to_numpy(dtype=float, na_value=np.nan)  # [states, models]: NaN, 0 or 1
    scored, mem = (~np.isnan(y)).astype(np.int64), (y == 1).astype(np.int64)
    common = (scored * counts[:, None]).T @ scored  # [a, b]: scored by both
    n_a = (mem * counts[:, None]).T @ scored  # [a, b]: memorized by a, scored by b
    both = (mem * counts[:, None]).T @ mem
    rows = []
    for a, (model_a, revision_a) in enumerate(keys):
        for b, (model_b, revision_b) in enumerate(keys):
            if a != b:
                rows.append({"model_a": model_a, "revision_a": revision_a, "model_b": model_b,
                             "revision_b": revision_b, "n_sequences": int(common[a, b]),
                             "n_memorized_a": int(n_a[a, b]), "n_memorized_b": int(n_a[b, a]),
                             "n_memorized_both": int(both[a, b]),
                             "precision": both[a, b] / n_a[a, b] if n_a[a, b] else np.nan,
                             "recall": both[a, b] / n_a[b, a] if n_a[b, a] else np.nan})
    return table_frame("memorization_forecast", rows)
