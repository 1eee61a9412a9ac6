"""Baseline and taxonomic logistic regressions of memorization (spec §4.1, §4.2), leak-free by default, and
gradient-boosted trees on the same features (how predictable memorization is at all, issue 23 §3).

Pure functions over the `combined` rows of ONE model@revision (pandas in, catalog-shaped pandas out; no Spark):
- `prepare_split(combined, ...)` -> Split: the usable rows (`select_rows`), a seeded stratified cap of `max_rows`, a
  train/test split stratified on label + category, the validation share of the training rows (the partition
  search ranks on it) and the scaler statistics.
- `taxonomy_model(combined, ...)` -> TaxonomyResult: the baseline (one LR on all training rows) and, as asked, the
  taxonomic model (taxonomies "paper": one LR per category; each test row is scored by its category's model),
  guess_recall (taxonomies "guess_recall": one LR for the guessable sequences, one for the others, memorized or not;
  `guess_recall_groups`) and trees (one HistGradientBoostingClassifier on the baseline's training rows; `fit_trees`),
  with `.metrics` (taxonomy_metrics rows), `.comparison` (taxonomy_comparison rows) and `.weights`
  (taxonomy_weights rows, with each feature's variance inflation factor on the rows its model was fitted on: the
  weights of correlated features are associations, not causes, and a large VIF says the split between them is
  unstable).
- `comparison(split, predictors, ...)`: each predictor minus the baseline, paired on the same bootstrap resamples of
  the test rows (taxonomy_comparison). It replaces a likelihood-ratio test, whose chi-squared reference (Wilks)
  does not hold for penalized, class-weighted fits scored on held-out rows; that LRT is kept under upstream_protocol.
- `add_predictor(result, name, train_groups, test_groups, names)`: one more grouped predictor (the best partition of
  semmem.taxonomy.search), metrics and weights recomputed on the same resamples. Every predictor is compared with
  the baseline in taxonomy_comparison; trees have no coefficients, so no taxonomy_weights rows.
- `fit_groups`, `predict_groups`, `design`: one LR per group and its probabilities; the partition search reuses them.

Default protocol vs `upstream_protocol=True` (for comparison with the published numbers, spec §4.1, §4.2, §7.3):
| step | default | upstream_protocol |
|---|---|---|
| scaler | fit on the training rows | fit on all rows before the split (test statistics leak) |
| LR fit rows | all training rows of the group | 80% of them (stratified by label); the 20% "validation" is unused |
| roc_auc, pr_auc | from probabilities | from hard 0/1 predictions (the ROC AUC is then the balanced accuracy) |
| value, CI, std | full test set; seeded bootstrap | mean, percentiles, std over KFold(100, shuffle)'s 99% folds |
| vs baseline | paired bootstrap differences (taxonomy_comparison) | the same, plus upstream's LRT (hard labels, df 1) |
| Wald test | training rows, the fit's class weights, sandwich SEs | test rows, unweighted inverse information |
Both use the same split (`seed`), LogisticRegression(L2, C=1, balanced class weights, max_iter=10000,
random_state=seed) on continuous features z-scored and is_templating as 0/1, precision/recall/F1 at P > 0.5 and an ECE
with `ece_bins` bins (upstream's comparison file: 5). Upstream also puts every row of its separate memories dataset
into training only; `combined` is one sample, so there is nothing to add. Coefficients are on the standardized scale.

Degenerate data never raises: a group (category) with no training rows or one class gets no model (weights status
`not_fitted` with the reason) and its test rows are scored by the baseline, so the aggregate stays comparable; a
subset with no test rows or one class has NaN AUCs. Only bad arguments raise ConfigError, and combined rows of which
none is complete (every row has a NULL, NaN or infinite label, category or used feature) an InputError; incomplete
rows are otherwise dropped (never imputed), counted in `split.selection` and logged.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from semmem.config import Taxonomy
from semmem.errors import ConfigError, InputError
from semmem.taxonomy.vocabulary import (
    BINARY_FEATURES, CATEGORIES, DISPLAY_NAMES, GUESS_RECALL, GUESSABLE, LABEL, MODEL_FEATURES, RowSelection,
    one_model, select_rows)
from semmem.taxonomy.frames import table_frame
from semmem.taxonomy.metrics import (
    PROBABILITY_EPS, METRICS, bootstrap_p_value, bootstrap_weights, kfold_weights, summarize, weighted_metrics)

log = logging.getLogger("semmem.taxonomy")
AGGREGATE = "aggregate"
COMPARED = ("log_loss", "pr_auc", "roc_auc", "f1")  # taxonomy_comparison's metrics


@dataclass(frozen=True)
class Part:
    """One side of the split: unscaled features (the partition thresholds apply to these), label, category."""

    sequence_id: np.ndarray  # (n,) int64
    raw: np.ndarray  # (n, k) float64, columns = Split.features
    y: np.ndarray  # (n,) bool: is_memorized
    category: np.ndarray  # (n,) int8: index into CATEGORIES (compact for the search's broadcast)

    def category_names(self) -> np.ndarray:
        return np.asarray(CATEGORIES, dtype=object)[self.category]

    def subset(self, mask: np.ndarray) -> Part:
        """The rows of `mask` (the partition search's fitting and validation rows)."""
        return Part(self.sequence_id[mask], self.raw[mask], self.y[mask], self.category[mask])


@dataclass(frozen=True)
class Split:
    model: str
    revision: str
    train: Part
    test: Part
    features: tuple[str, ...]
    mean: np.ndarray  # (k,) scaler statistics; 0 / 1 for binary features (not scaled)
    scale: np.ndarray
    selection: RowSelection
    n_capped: int  # usable rows left out by max_rows
    validation: np.ndarray  # (n_train,) bool: the training rows the partition search ranks candidates on
    upstream_protocol: bool
    seed: int

    @property
    def protocol(self) -> str:
        return "upstream" if self.upstream_protocol else "default"

    def column(self, feature: str) -> int:
        return self.features.index(feature)


def design(split: Split, part: Part) -> np.ndarray:
    """The LR input of `part`: continuous features z-scored with the split's scaler, binary ones as 0/1."""
    return (part.raw - split.mean) / split.scale


def stratified_mask(strata: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A seeded sample of round(n * fraction) rows, each stratum contributing its share (largest remainder)."""
    n = len(strata)
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    total = int(round(n * fraction))
    quota = counts * (total / max(n, 1))
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(-(quota - take), kind="stable")[:total - int(take.sum())]] += 1
    order = np.lexsort((rng.random(n), inverse))  # grouped by stratum, random within
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - (np.cumsum(counts) - counts)[inverse[order]]
    return rank < take[inverse]


def prepare_split(combined: pd.DataFrame, *, upstream_protocol: bool = False, test_fraction: float = 0.2,
                  validation_fraction: float = 0.25, seed: int = 1024, max_rows: int | None = None,
                  features: tuple[str, ...] = MODEL_FEATURES) -> Split:
    """Usable rows, capped at `max_rows` and split train/test, then the training rows fit/validation (for the
    partition search), each stratified on label + category and seeded. `features`: the model's (upstream's 13 +
    is_templating by default; taxonomy.features=upstream+exposure adds EXPOSURE_FEATURES)."""
    for key, share in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0.0 < share < 1.0:
            raise ConfigError(f"taxonomy.{key} = {share}; expected a share strictly between 0 and 1")
    model, revision = one_model(combined)
    rows, selection = select_rows(combined, features)
    if selection.dropped_rows:
        counts = ", ".join(f"{col} {n}" for col, n in selection.dropped_rows.items())
        if rows.empty:
            raise InputError(f"taxonomy {model}@{revision}: none of the {selection.n_input} rows of combined can be "
                             f"fitted: each has a NULL, NaN or infinite value (rows by the first such column: "
                             f"{counts}). Re-run the stages that write those columns (then combine), or leave the "
                             "model out (taxonomy.revisions)")
        log.warning("taxonomy: %s@%s: %d of %d rows dropped before fitting for a NULL, NaN or infinite value "
                    "(by the first such column: %s)", model, revision, selection.n_input - len(rows),
                    selection.n_input, counts)
    unknown = sorted(set(rows["category"]) - set(CATEGORIES))
    if unknown:
        raise InputError(f"combined has category values {unknown[:5]}; expected {', '.join(CATEGORIES)} or NULL "
                         f"(semmem.taxonomy.vocabulary.category_column)")
    rng = np.random.default_rng(seed)
    strata = rows["category"].astype(str).to_numpy() + rows[LABEL].astype(bool).astype(str).to_numpy()
    n_capped = 0
    if max_rows is not None and len(rows) > max_rows:
        keep = stratified_mask(strata, max_rows / len(rows), rng)
        n_capped = int((~keep).sum())
        rows, strata = rows[keep], strata[keep]
    test = stratified_mask(strata, test_fraction, rng)
    features = selection.features
    raw = rows[list(features)].to_numpy(dtype=np.float64)
    continuous = np.array([f not in BINARY_FEATURES for f in features], dtype=bool)
    mean, scale = np.zeros(len(features)), np.ones(len(features))
    fit_rows = raw if upstream_protocol else raw[~test]
    if continuous.any() and len(fit_rows):
        scaler = StandardScaler().fit(fit_rows[:, continuous])
        mean[continuous], scale[continuous] = scaler.mean_, scaler.scale_
    category = pd.Categorical(rows["category"], categories=CATEGORIES).codes.astype(np.int8)
    ids = rows["sequence_id"].to_numpy(dtype=np.int64)
    y = rows[LABEL].to_numpy(dtype=bool)
    parts = [Part(ids[m], raw[m], y[m], category[m]) for m in (~test, test)]
    validation = stratified_mask(strata[~test], validation_fraction, rng)
    return Split(model, revision, parts[0], parts[1], features, mean, scale, selection, n_capped, validation,
                 upstream_protocol, seed)


@dataclass(frozen=True)
class GroupFit:
    """The LR of one group (a category, a partition, or all rows), or why there is none."""

    name: str
    model: LogisticRegression | None
    reason: str | None  # set when model is None
    rows: np.ndarray  # indices (into the training part) the model was fitted on


def _unfit_reason(y: np.ndarray, n_features: int) -> str | None:
    if n_features == 0:
        return "no usable features"
    if len(y) == 0:
        return "no training rows"
    if y.all() or not y.any():
        return f"one class in training ({len(y)} rows, all {'memorized' if y.all() else 'not memorized'})"
    return None


def fit_groups(x: np.ndarray, y: np.ndarray, groups: np.ndarray, names: tuple[str, ...], *, seed: int,
               upstream_protocol: bool) -> dict[str, GroupFit]:
    """One LogisticRegression per group name over the training rows with that group (spec §4.1).

    BLAS runs single-threaded here: on these small matrices its threads cost up to 8x (measured on 2 cores), and the
    partition search gets its parallelism from Spark tasks instead.
    """
    with threadpool_limits(1, user_api="blas"):
        return {name: _fit_group(x, y, groups, name, seed=seed, upstream_protocol=upstream_protocol)
                for name in names}


def _fit_group(x: np.ndarray, y: np.ndarray, groups: np.ndarray, name: str, *, seed: int,
               upstream_protocol: bool) -> GroupFit:
    rows = np.flatnonzero(groups == name)
    if upstream_protocol and len(rows):  # upstream fits on 80% of the rows, stratified by label
        rows = rows[stratified_mask(y[rows], 0.8, np.random.default_rng(seed))]
    reason = _unfit_reason(y[rows], x.shape[1])
    model = None
    if reason is None:
        model = LogisticRegression(C=1.0, l1_ratio=0.0, class_weight="balanced", max_iter=10_000,
                                   random_state=seed).fit(x[rows], y[rows])
    return GroupFit(name, model, reason, rows)


def predict_groups(fits: dict[str, GroupFit], x: np.ndarray, groups: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """P(memorized) of each row from its group's model; `fallback` for rows whose group has no model."""
    p = np.array(fallback, dtype=np.float64, copy=True)
    for name, fit in fits.items():
        mask = groups == name
        if fit.model is not None and mask.any():
            p[mask] = fit.model.predict_proba(x[mask])[:, 1]
    return p


def log_likelihood(y: np.ndarray, p: np.ndarray, *, hard_labels: bool = False) -> float:
    """sum y log p + (1 - y) log(1 - p), p clipped to [eps, 1 - eps]; hard_labels: p replaced by 1[p > 0.5]."""
    q = np.clip((p > 0.5).astype(float) if hard_labels else p, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
    return float(np.sum(np.where(y, np.log(q), np.log1p(-q))))


def likelihood_ratio_test(y: np.ndarray, p_null: np.ndarray, p_alt: np.ndarray, df: int, *,
                          hard_labels: bool = False) -> tuple[float, float]:
    """(statistic, p-value) of -2 (LL_null - LL_alt) against chi2(df); NaN when df < 1 or a probability is NaN."""
    stat = -2.0 * (log_likelihood(y, p_null, hard_labels=hard_labels)
                   - log_likelihood(y, p_alt, hard_labels=hard_labels))
    return stat, float(stats.chi2.sf(stat, df)) if df >= 1 and np.isfinite(stat) else np.nan


def wald_standard_errors(x: np.ndarray, p: np.ndarray, *, weights: np.ndarray | None = None,
                         y: np.ndarray | None = None) -> np.ndarray:
    """Standard errors of logistic coefficients for the design `x` (intercept column included).

    Information A = x' diag(w p (1 - p)) x. Without `y`: sqrt(diag(A^-1)) (spec §4.2). With `y`: the sandwich
    A^-1 B A^-1, B = x' diag(w^2 (y - p)^2) x, which stays valid when `w` are class weights rather than frequency
    weights. A singular A (collinear columns) gives NaN.
    """
    w = np.ones(len(p)) if weights is None else weights
    info = (x * (w * p * (1.0 - p))[:, None]).T @ x
    if np.linalg.matrix_rank(info) < x.shape[1]:
        return np.full(x.shape[1], np.nan)
    cov = np.linalg.inv(info)
    if y is not None:
        meat = (x * ((w * (y - p)) ** 2)[:, None]).T @ x
        cov = cov @ meat @ cov
    d = np.diag(cov)
    return np.sqrt(np.where(d >= 0, d, np.nan))


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """sklearn's class_weight='balanced' per row: n / (2 n_class)."""
    n_pos = y.sum()
    return np.where(y, len(y) / (2.0 * max(n_pos, 1)), len(y) / (2.0 * max(len(y) - n_pos, 1)))


@dataclass(frozen=True)
class Predictor:
    name: str  # one of vocabulary.PREDICTORS
    fits: dict[str, GroupFit]  # empty for trees (no coefficients)
    train_groups: np.ndarray
    test_groups: np.ndarray
    test_p: np.ndarray  # P(memorized) of every test row


@dataclass(frozen=True)
class TaxonomyResult:
    split: Split
    predictors: dict[str, Predictor]
    metrics: pd.DataFrame  # taxonomy_metrics rows
    comparison: pd.DataFrame  # taxonomy_comparison rows
    weights: pd.DataFrame  # taxonomy_weights rows
    bootstrap_rounds: int
    ci_level: float
    ece_bins: int


def _grouped(split: Split, name: str, train_groups: np.ndarray, test_groups: np.ndarray, names: tuple[str, ...],
             fallback: np.ndarray) -> Predictor:
    x_train, x_test = design(split, split.train), design(split, split.test)
    fits = fit_groups(x_train, split.train.y, train_groups, names, seed=split.seed,
                      upstream_protocol=split.upstream_protocol)
    return Predictor(name, fits, train_groups, test_groups, predict_groups(fits, x_test, test_groups, fallback))


def taxonomy_model(combined: pd.DataFrame, *, upstream_protocol: bool = False, test_fraction: float = 0.2,
                   validation_fraction: float = 0.25, seed: int = 1024, max_rows: int | None = None,
                   bootstrap_rounds: int = 200, ci_level: float = 0.95, ece_bins: int = 10,
                   features: tuple[str, ...] = MODEL_FEATURES, taxonomies: Iterable[str] = ("paper",),
                   trees: bool = False) -> TaxonomyResult:
    """The baseline LR of one model@revision and the predictors asked for (`taxonomies`: "paper" -> taxonomic,
    "guess_recall" -> guess_recall, which reads `combined`'s GUESSABLE column; `trees`), their test metrics (with
    CIs), their paired comparison with the baseline and the LRs' Wald-tested weights."""
    taxonomies, known = tuple(taxonomies), typing.get_args(Taxonomy)
    if unknown := sorted(set(taxonomies) - set(known)):
        raise ConfigError(f"taxonomies {unknown}; expected some of {', '.join(known)}")
    split = prepare_split(combined, upstream_protocol=upstream_protocol, test_fraction=test_fraction,
                          validation_fraction=validation_fraction, seed=seed, max_rows=max_rows, features=features)
    n_train, n_test = len(split.train.y), len(split.test.y)
    everyone = (np.full(n_train, AGGREGATE, dtype=object), np.full(n_test, AGGREGATE, dtype=object))
    baseline = _grouped(split, "baseline", *everyone, (AGGREGATE,), np.full(n_test, np.nan))
    predictors = {"baseline": baseline}
    if "paper" in taxonomies:
        predictors["taxonomic"] = _grouped(split, "taxonomic", split.train.category_names(),
                                           split.test.category_names(), CATEGORIES, baseline.test_p)
    if "guess_recall" in taxonomies:
        predictors["guess_recall"] = _grouped(split, "guess_recall", *guess_recall_groups(combined, split),
                                              GUESS_RECALL[1:], baseline.test_p)
    if trees:
        predictors["trees"] = fit_trees(split, baseline)
    return _result(split, predictors, bootstrap_rounds, ci_level, ece_bins)


def guess_recall_groups(combined: pd.DataFrame, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """The guess_recall group of each training and test row: GUESS_RECALL[1] (guess) where `combined`'s GUESSABLE
    column (vocabulary.guessable_column, by sequence_id) is true, GUESS_RECALL[2] (recall) where false, None where
    NULL (no group: the baseline scores the row, and no group's model is fitted on it)."""
    if GUESSABLE not in combined.columns:
        raise InputError(f"taxonomy guess_recall needs column {GUESSABLE} (vocabulary.guessable_column) in the rows")
    by_id = combined.set_index("sequence_id")[GUESSABLE].astype("boolean")
    out = []
    for part in (split.train, split.test):
        guessable = by_id.reindex(part.sequence_id)
        groups = np.where(guessable.fillna(False).to_numpy(dtype=bool), *GUESS_RECALL[1:]).astype(object)
        groups[guessable.isna().to_numpy(dtype=bool)] = None
        out.append(groups)
    if unknown := sum(int(pd.isna(g).sum()) for g in out):
        log.warning("taxonomy: %s@%s: guess_recall: %d of %d rows have no group (a value the guessable rule needs "
                    "is NULL): the baseline scores them and no group's model is fitted on them", split.model,
                    split.revision, unknown, sum(len(g) for g in out))
    return out[0], out[1]


def fit_trees(split: Split, baseline: Predictor) -> Predictor:
    """Predictor trees: one HistGradientBoostingClassifier (random_state = the split's seed, balanced class weights
    as the LRs so that log-loss and ECE compare like with like, sklearn's defaults otherwise) on the unscaled
    features of the baseline's training rows. Its early stopping (on above 10,000 rows) holds out a seeded share of
    those rows: the test rows never choose. With one class in those rows, the baseline's probabilities."""
    rows = baseline.fits[AGGREGATE].rows
    y = split.train.y[rows]
    reason = _unfit_reason(y, len(split.features))
    if reason is not None:
        log.warning("taxonomy: %s@%s: no trees (%s): their test rows are scored by the baseline", split.model,
                    split.revision, reason)
        return Predictor("trees", {}, baseline.train_groups, baseline.test_groups, baseline.test_p.copy())
    model = HistGradientBoostingClassifier(class_weight="balanced", random_state=split.seed)
    model.fit(split.train.raw[rows], y)
    return Predictor("trees", {}, baseline.train_groups, baseline.test_groups,
                     model.predict_proba(split.test.raw)[:, 1])


def add_predictor(result: TaxonomyResult, name: str, train_groups: np.ndarray, test_groups: np.ndarray,
                  names: tuple[str, ...]) -> TaxonomyResult:
    """`result` with one more grouped predictor (fallback: the baseline), all metrics on the same resamples."""
    pred = _grouped(result.split, name, train_groups, test_groups, names, result.predictors["baseline"].test_p)
    return _result(result.split, {**result.predictors, name: pred}, result.bootstrap_rounds, result.ci_level,
                   result.ece_bins)


def _result(split: Split, predictors: dict[str, Predictor], bootstrap_rounds: int, ci_level: float,
            ece_bins: int) -> TaxonomyResult:
    return TaxonomyResult(split, predictors, _metrics(split, predictors, bootstrap_rounds, ci_level, ece_bins),
                          comparison(split, predictors, bootstrap_rounds, ci_level),
                          _weights(split, predictors), bootstrap_rounds, ci_level, ece_bins)


def resampled_metrics(y: np.ndarray, scores: dict[str, np.ndarray], subsets: dict[str, np.ndarray],
                      chunks: Iterable[np.ndarray], *, ece_bins: int = 10,
                      hard_label_auc: bool = False) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Every metric of every score (P(memorized) of each row, by predictor name) on every subset (a mask of the
    rows), one value per round of `chunks` (row weights, rounds x rows): all scores see the same rounds, so their
    values pair up. The one resampling loop of the taxonomy: semmem.taxonomy.evidence reuses it."""
    got: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {
        (p, s): {m: [np.zeros(0)] for m in METRICS} for p in scores for s in subsets}
    for w in chunks:
        for pname, p in scores.items():
            for sname, mask in subsets.items():
                values = weighted_metrics(y[mask], p[mask], w[:, mask], ece_bins=ece_bins,
                                          hard_label_auc=hard_label_auc)
                for m in METRICS:
                    got[pname, sname][m].append(values[m])
    return {key: {m: np.concatenate(v) for m, v in by_metric.items()} for key, by_metric in got.items()}


def _resampled(test: Part, predictors: dict[str, Predictor], subsets: dict[str, np.ndarray],
               chunks: Iterable[np.ndarray], *, ece_bins: int = 10,
               hard_label_auc: bool = False) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """`resampled_metrics` of the predictors' test probabilities on the test rows."""
    return resampled_metrics(test.y, {name: pred.test_p for name, pred in predictors.items()}, subsets, chunks,
                             ece_bins=ece_bins, hard_label_auc=hard_label_auc)


def _metrics(split: Split, predictors: dict[str, Predictor], bootstrap_rounds: int, ci_level: float,
             ece_bins: int) -> pd.DataFrame:
    test, upstream = split.test, split.upstream_protocol
    names = test.category_names()
    subsets = {AGGREGATE: np.ones(len(test.y), dtype=bool), **{c: names == c for c in CATEGORIES}}
    chunks = kfold_weights(len(test.y), split.seed) if upstream else \
        bootstrap_weights(len(test.y), bootstrap_rounds, split.seed)
    resampled = _resampled(test, predictors, subsets, chunks, ece_bins=ece_bins, hard_label_auc=upstream)
    point = _resampled(test, predictors, subsets, [np.ones((1, len(test.y)))], ece_bins=ece_bins,
                       hard_label_auc=upstream)
    base = {"model": split.model, "revision": split.revision, "protocol": split.protocol}
    rows = []
    for pname, pred in predictors.items():
        for sname, mask in subsets.items():
            for m in METRICS:
                mean, low, high, std = summarize(resampled[pname, sname][m], ci_level)
                rows.append({**base, "predictor": pname, "subset": sname, "metric": m,
                             "value": mean if upstream else float(point[pname, sname][m][0]), "ci_low": low,
                             "ci_high": high, "std": std, "n_rows": int(mask.sum()),
                             "n_positive": int(test.y[mask].sum())})
        if pname != "baseline" and upstream:  # upstream's LRT, df 1; Wilks' theorem does not hold for these fits
            stat, p_value = likelihood_ratio_test(test.y, predictors["baseline"].test_p, pred.test_p, 1,
                                                  hard_labels=True)
            for m, v in (("lrt_statistic", stat), ("lrt_df", 1.0), ("lrt_p_value", p_value)):
                rows.append({**base, "predictor": pname, "subset": AGGREGATE, "metric": m, "value": v,
                             "n_rows": len(test.y), "n_positive": int(test.y.sum())})
    return table_frame("taxonomy_metrics", rows)


def comparison(split: Split, predictors: dict[str, Predictor], bootstrap_rounds: int,
               ci_level: float) -> pd.DataFrame:
    """taxonomy_comparison rows: each predictor minus the baseline on the test rows, for the metrics of COMPARED.

    Paired: both predictors are measured on the same seeded bootstrap resamples of the test rows, so the interval
    is that of the difference, not two overlapping intervals. difference = on all test rows; ci = percentiles of
    the resampled differences; p_value = `bootstrap_p_value`. Probabilities, not hard labels, under either protocol.
    """
    test = split.test
    everyone = {AGGREGATE: np.ones(len(test.y), dtype=bool)}
    point = _resampled(test, predictors, everyone, [np.ones((1, len(test.y)))])
    resampled = _resampled(test, predictors, everyone, bootstrap_weights(len(test.y), bootstrap_rounds, split.seed))
    base = {"model": split.model, "revision": split.revision, "protocol": split.protocol, "reference": "baseline",
            "n_test": len(test.y)}
    rows = []
    for name in predictors:
        if name == "baseline":
            continue
        for m in COMPARED:
            diff = resampled[name, AGGREGATE][m] - resampled["baseline", AGGREGATE][m]
            _, low, high, _ = summarize(diff, ci_level)
            rows.append({**base, "predictor": name, "metric": m,
                         "difference": float(point[name, AGGREGATE][m][0] - point["baseline", AGGREGATE][m][0]),
                         "ci_low": low, "ci_high": high, "p_value": bootstrap_p_value(diff)})
    return table_frame("taxonomy_comparison", rows)


def _weights(split: Split, predictors: dict[str, Predictor]) -> pd.DataFrame:
    base = {"model": split.model, "revision": split.revision, "protocol": split.protocol}
    names = ("intercept", *split.features)
    x_train, x_test = design(split, split.train), design(split, split.test)
    rows = []
    for pname, pred in predictors.items():
        for gname, fit in pred.fits.items():
            common = {**base, "predictor": pname, "subset": gname}
            rows += [{**common, "feature": f, "display_name": DISPLAY_NAMES[f], "status": "missing",
                      "note": "absent or entirely NULL in combined: left out"} for f in split.selection.missing]
            if fit.model is None:
                rows += [{**common, "feature": f, "display_name": DISPLAY_NAMES[f], "status": "not_fitted",
                          "note": fit.reason, "n_rows": len(fit.rows)} for f in names]
                continue
            if split.upstream_protocol:  # upstream: test rows of the group, unweighted information
                x, y, w = x_test[pred.test_groups == gname], None, None
            else:  # the rows the model was fitted on, with its class weights, robust (sandwich) SEs
                x, y = x_train[fit.rows], split.train.y[fit.rows]
                w = _balanced_weights(y)
            beta = np.r_[fit.model.intercept_, fit.model.coef_[0]]
            varies = np.r_[True, np.ptp(x, axis=0) > 0] if len(x) else np.zeros(len(names), dtype=bool)
            se = np.full(len(names), np.nan)
            if len(x):
                design_x = np.c_[np.ones(len(x)), x][:, varies]
                p = fit.model.predict_proba(x)[:, 1]
                se[varies] = wald_standard_errors(design_x, p, weights=w, y=None if y is None else y.astype(float))
            z = beta / se
            p_value = 2.0 * stats.norm.sf(np.abs(z))
            vif = np.r_[np.nan, variance_inflation(x_train[fit.rows])]
            for i, f in enumerate(names):
                constant = len(x) > 0 and not varies[i]
                note = "constant on the Wald-test rows: dropped from the test" if constant else \
                    None if len(x) else "no rows for the Wald test"
                rows.append({**common, "feature": f, "display_name": DISPLAY_NAMES[f], "coefficient": float(beta[i]),
                             "std_error": se[i], "z_value": z[i], "p_value": p_value[i],
                             "status": "constant" if constant else "fitted", "note": note, "n_rows": len(x),
                             "vif": vif[i]})
    return table_frame("taxonomy_weights", rows)


def variance_inflation(x: np.ndarray) -> np.ndarray:
    """Each column's variance inflation factor 1 / (1 - R^2 of it regressed on the others) = the diagonal of the
    inverse correlation matrix; NaN for a constant column, inf for columns when the others determine them exactly."""
    out = np.full(x.shape[1], np.nan)
    varies = np.ptp(x, axis=0) > 0 if len(x) > 1 else np.zeros(x.shape[1], dtype=bool)
    if varies.sum() < 2:
        out[varies] = 1.0
        return out
    corr = np.atleast_2d(np.corrcoef(x[:, varies], rowvar=False))
    if np.linalg.cond(corr) > 1e12:
        out[varies] = np.inf
    else:
        out[varies] = np.diag(np.linalg.inv(corr))
    return out
