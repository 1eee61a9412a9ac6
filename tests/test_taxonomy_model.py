"""The taxonomy rule, the baseline / taxonomic logistic regressions and their metrics (spec §3, §4.1, §4.2).

References are written from the definitions: sklearn's metrics with sample weights, a loop-per-bin ECE and a
loop-per-row Wald information matrix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression
from sklearn.metrics import (
    average_precision_score, balanced_accuracy_score, f1_score, log_loss, precision_score, recall_score,
    roc_auc_score)

from semmem.catalog import table
from semmem.errors import ConfigError, InputError
from semmem.taxonomy.vocabulary import (
    CATEGORIES, GUESSABLE, MODEL_FEATURES, categorize, category_column, guessable_column, select_rows)
from semmem.taxonomy.metrics import bootstrap_p_value, bootstrap_weights, kfold_weights, weighted_metrics
from semmem.taxonomy.model import (
    comparison, design, likelihood_ratio_test, prepare_split, stratified_mask, taxonomy_model, variance_inflation,
    wald_standard_errors)
from tests.synthetic import PLANTED, synthetic_combined

RULE_ROWS = [  # (sequence_duplicates, is_templating) -> category at thresholds 5 and 1
    ((6, False), "recitation", "recitation"),
    ((5, True), "reconstruction", "recitation"),
    ((5, False), "recollection", "recitation"),
    ((1, True), "reconstruction", "reconstruction"),
    ((1, False), "recollection", "recollection"),
    ((100, None), "recitation", "recitation"),
    ((2, None), None, "recitation"),
    ((None, True), None, None),
]


@pytest.fixture(scope="module")
def combined() -> pd.DataFrame:
    return synthetic_combined(20000, seed=7)


@pytest.fixture(scope="module")
def result(combined):
    return taxonomy_model(combined, bootstrap_rounds=100)


@pytest.fixture(scope="module")
def upstream(combined):
    return taxonomy_model(combined, upstream_protocol=True)


@pytest.mark.parametrize("threshold, col", [(5, 1), (1, 2)])
def test_category_rule_pandas_and_spark(spark, threshold, col):
    df = pd.DataFrame([r[0] for r in RULE_ROWS], columns=["sequence_duplicates", "is_templating"])
    df["sequence_duplicates"] = df["sequence_duplicates"].astype("Int64")
    want = [r[col] for r in RULE_ROWS]
    assert categorize(df, threshold).tolist() == want
    sdf = spark.createDataFrame([(i, *r[0]) for i, r in enumerate(RULE_ROWS)],
                                "i INT, sequence_duplicates BIGINT, is_templating BOOLEAN")
    got = {r.i: r.category for r in sdf.select("i", category_column(threshold).alias("category")).collect()}
    assert [got[i] for i in range(len(RULE_ROWS))] == want


def test_select_rows_leaves_out_null_features_and_counts_drops(combined):
    df = combined.head(100).copy()
    df["textual_matches_0_8"] = None
    df.loc[df.index[:3], "min_frequency"] = np.nan
    df["is_memorized"] = df["is_memorized"].astype(object)
    df.loc[df.index[2:5], "is_memorized"] = None
    df.loc[df.index[10], "category"] = None
    rows, sel = select_rows(df)
    assert sel.missing == ("textual_matches_0_8",)
    assert sel.features == tuple(f for f in MODEL_FEATURES if f != "textual_matches_0_8")
    assert sel.dropped_rows == {"is_memorized": 3, "category": 1, "min_frequency": 2}  # row 2 counted once
    assert len(rows) == 94 and sel.n_input == 100


def test_stratified_mask_exact_and_proportional():
    strata = np.array(["a"] * 700 + ["b"] * 290 + ["c"] * 10)
    mask = stratified_mask(strata, 0.2, np.random.default_rng(0))
    assert mask.sum() == 200
    assert [mask[strata == s].sum() for s in "abc"] == [140, 58, 2]
    assert np.array_equal(mask, stratified_mask(strata, 0.2, np.random.default_rng(0)))


def test_weighted_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    p = np.round(np.clip(0.35 * y + 0.65 * rng.random(400), 0, 1), 2)  # ties in p
    w = np.vstack([np.ones(400), next(bootstrap_weights(400, 4, seed=1)), next(kfold_weights(400, seed=1))[:3]])
    got = weighted_metrics(y, p, w)
    for i, sw in enumerate(w):
        assert got["roc_auc"][i] == pytest.approx(roc_auc_score(y, p, sample_weight=sw), abs=1e-12)
        assert got["pr_auc"][i] == pytest.approx(average_precision_score(y, p, sample_weight=sw), abs=1e-12)
        assert got["precision"][i] == pytest.approx(precision_score(y, p > 0.5, sample_weight=sw), abs=1e-12)
        assert got["recall"][i] == pytest.approx(recall_score(y, p > 0.5, sample_weight=sw), abs=1e-12)
        assert got["f1"][i] == pytest.approx(f1_score(y, p > 0.5, sample_weight=sw), abs=1e-12)
        assert got["log_loss"][i] == pytest.approx(log_loss(y, p, sample_weight=sw), abs=1e-12)
    hard = weighted_metrics(y, p, np.ones((1, 400)), hard_label_auc=True)
    assert hard["roc_auc"][0] == pytest.approx(balanced_accuracy_score(y, p > 0.5), abs=1e-12)
    one_class = weighted_metrics(np.zeros(5, bool), np.full(5, 0.2), np.ones((1, 5)))
    assert np.isnan(one_class["roc_auc"][0]) and one_class["precision"][0] == 0.0


def _ece_reference(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Upstream's expected_calibration_error (spec §4.2), one loop per bin over [1 - p, p]."""
    probs = np.c_[1 - p, p]
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += abs(conf[inside].mean() - (pred[inside] == y[inside]).mean()) * inside.mean()
    return ece


def test_ece_hand_computed_and_reference():
    # conf .95 .8 .7 .65 .55; correct 1 0 1 1 0; 5 bins: (.8,1]: |1-.95|/5; (.6,.8]: |2/3-.71667|*3/5; (.4,.6]: .55/5
    y, p = np.array([1, 0, 0, 1, 0], bool), np.array([0.95, 0.8, 0.3, 0.65, 0.55])
    assert weighted_metrics(y, p, np.ones((1, 5)), ece_bins=5)["ece"][0] == pytest.approx(0.15, abs=1e-12)
    rng = np.random.default_rng(0)
    y, p = rng.random(1000) < 0.4, rng.random(1000)
    for bins in (5, 10):
        assert weighted_metrics(y, p, np.ones((1, 1000)), ece_bins=bins)["ece"][0] == \
            pytest.approx(_ece_reference(y, p, bins), abs=1e-12)


def test_wald_standard_errors_against_formula():
    rng = np.random.default_rng(5)
    x = np.c_[np.ones(300), rng.normal(size=(300, 3))]
    p = 1 / (1 + np.exp(-x @ np.array([-0.5, 1.0, -0.3, 0.0])))
    y = (rng.random(300) < p).astype(float)
    w = np.where(y > 0, 2.0, 0.7)
    info = sum(np.outer(r, r) * pi * (1 - pi) for r, pi in zip(x, p))
    assert wald_standard_errors(x, p) == pytest.approx(np.sqrt(np.diag(np.linalg.inv(info))), rel=1e-10)
    a = sum(wi * np.outer(r, r) * pi * (1 - pi) for r, pi, wi in zip(x, p, w))
    b = sum(wi ** 2 * (yi - pi) ** 2 * np.outer(r, r) for r, pi, wi, yi in zip(x, p, w, y))
    sandwich = np.linalg.inv(a) @ b @ np.linalg.inv(a)
    assert wald_standard_errors(x, p, weights=w, y=y) == pytest.approx(np.sqrt(np.diag(sandwich)), rel=1e-10)
    assert np.isnan(wald_standard_errors(np.c_[x, x[:, 1]], p)).all()  # collinear: singular information


def test_coefficients_recover_planted_signs_and_size(result):
    w = result.weights.set_index(["predictor", "subset", "feature"])
    for cat, beta in PLANTED.items():
        for feature, b in beta.items():
            if feature == "intercept":  # balanced class weights move the intercept
                continue
            row = w.loc[("taxonomic", cat, feature)]
            assert np.sign(row.coefficient) == np.sign(b), (cat, feature, row.coefficient)
            assert row.coefficient == pytest.approx(b, abs=max(0.45, 0.35 * abs(b))), (cat, feature)
            if cat != "reconstruction":  # ~1,000 rows: only the larger categories give tight p-values
                assert row.p_value < 0.01
    gen = w.loc[("baseline", "aggregate", "generation_perplexity")]
    assert gen.coefficient < -0.8 and gen.p_value < 1e-10


def test_result_tables_have_catalog_columns(result):
    assert list(result.metrics.columns) == table("taxonomy_metrics").columns
    assert list(result.weights.columns) == table("taxonomy_weights").columns
    assert list(result.comparison.columns) == table("taxonomy_comparison").columns
    m = result.metrics
    assert set(m.predictor) == {"baseline", "taxonomic"} and set(m.subset) == {"aggregate", *CATEGORIES}
    agg = m[(m.subset == "aggregate") & (m.metric == "roc_auc")]
    assert (agg.ci_low < agg.value).all() and (agg.value < agg.ci_high).all()
    auc = m[m.metric == "roc_auc"].set_index(["predictor", "subset"]).value
    assert (auc["taxonomic"] > 0.7).all()
    # reconstruction's prompt-perplexity effect has the opposite sign: one model for all rows misses it
    assert auc["baseline", "reconstruction"] < auc["taxonomic", "reconstruction"] - 0.1


def test_constant_column_dropped_from_wald_and_listed(result):
    w = result.weights.set_index(["predictor", "subset", "feature"])
    for cat in ("reconstruction", "recollection"):  # is_templating is 1 / 0 on all their rows
        row = w.loc[("taxonomic", cat, "is_templating")]
        assert row.status == "constant" and np.isnan(row.p_value) and "dropped" in row.note
    assert w.loc[("taxonomic", "recitation", "is_templating")].status == "fitted"


def test_same_seed_same_results(combined, result):
    again = taxonomy_model(combined, bootstrap_rounds=100)
    assert_frame_equal(again.metrics, result.metrics)
    assert_frame_equal(again.weights, result.weights)
    other = taxonomy_model(combined, bootstrap_rounds=100, seed=1)
    assert not np.array_equal(other.split.test.sequence_id, result.split.test.sequence_id)


def test_metrics_are_probabilistic_by_default(result):
    split, m = result.split, result.metrics.set_index(["predictor", "subset", "metric"])
    p = result.predictors["taxonomic"].test_p
    assert m.loc[("taxonomic", "aggregate", "roc_auc")].value == pytest.approx(roc_auc_score(split.test.y, p))
    assert m.loc[("taxonomic", "aggregate", "pr_auc")].value == \
        pytest.approx(average_precision_score(split.test.y, p))
    assert m.loc[("taxonomic", "aggregate", "log_loss")].value == pytest.approx(log_loss(split.test.y, p))
    # no likelihood-ratio test by default: Wilks' chi-squared does not hold for these fits
    assert not result.metrics.metric.str.startswith("lrt_").any()


def test_upstream_protocol_documented_differences(combined, result, upstream):
    d, u = result.split, upstream.split
    assert np.array_equal(d.test.sequence_id, u.test.sequence_id)  # the same split
    cont = [d.column(f) for f in d.features if f != "is_templating"]
    # scaler: training rows (default) vs all rows before the split (upstream, leaks test statistics)
    assert d.mean[cont] == pytest.approx(d.train.raw[:, cont].mean(axis=0), rel=1e-12)
    everything = np.r_[u.train.raw, u.test.raw][:, cont]
    assert u.mean[cont] == pytest.approx(everything.mean(axis=0), rel=1e-12)
    assert u.scale[cont] == pytest.approx(everything.std(axis=0), rel=1e-12)
    assert not np.allclose(d.mean[cont], u.mean[cont], rtol=1e-6)
    dm, um = (r.metrics.set_index(["predictor", "subset", "metric"]) for r in (result, upstream))
    key = ("taxonomic", "aggregate", "roc_auc")
    # hard-label AUC = balanced accuracy (mean over the 99% folds), below the probabilistic AUC
    hard = balanced_accuracy_score(u.test.y, upstream.predictors["taxonomic"].test_p > 0.5)
    assert um.loc[key].value == pytest.approx(hard, abs=0.005)
    assert um.loc[key].value < dm.loc[key].value - 0.03
    # KFold(100) 99% subsets barely vary: the "bootstrap" std is ~10x smaller than a real bootstrap's
    assert um.loc[key]["std"] < 0.3 * dm.loc[key]["std"]
    # LRT from hard predictions clipped at eps, df = 1: 2 ln(1/eps) (errors_base - errors_tax)
    y = u.test.y
    errors = {k: int(((upstream.predictors[k].test_p > 0.5) != y).sum()) for k in ("baseline", "taxonomic")}
    lrt = um.loc[("taxonomic", "aggregate", "lrt_statistic")].value
    eps = np.finfo(float).eps
    assert lrt == pytest.approx(2 * (errors["baseline"] - errors["taxonomic"]) * (np.log(1 / eps) + np.log1p(-eps)),
                                rel=1e-9)
    assert um.loc[("taxonomic", "aggregate", "lrt_df")].value == 1
    # upstream fits on 80% of a group's training rows, its Wald test uses the group's test rows
    dw, uw = (r.weights.set_index(["predictor", "subset", "feature"]) for r in (result, upstream))
    n_train_rec = int((d.train.category_names() == "recitation").sum())
    assert dw.loc[("taxonomic", "recitation", "intercept")].n_rows == n_train_rec
    n_test_rec = int((u.test.category_names() == "recitation").sum())
    assert uw.loc[("taxonomic", "recitation", "intercept")].n_rows == n_test_rec
    assert len(upstream.predictors["taxonomic"].fits["recitation"].rows) == round(0.8 * n_train_rec)
    assert set(upstream.metrics.protocol) == {"upstream"} and set(result.metrics.protocol) == {"default"}


def test_degenerate_categories_are_reported_not_raised(combined):
    df = combined.copy()
    df.loc[df.category == "reconstruction", "is_memorized"] = False  # one class
    df = df[df.category != "recollection"]  # no rows
    r = taxonomy_model(df, bootstrap_rounds=20)
    w = r.weights.set_index(["predictor", "subset", "feature"])
    assert w.loc[("taxonomic", "reconstruction", "intercept")].status == "not_fitted"
    assert "one class" in w.loc[("taxonomic", "reconstruction", "intercept")].note
    assert w.loc[("taxonomic", "recollection", "intercept")].note == "no training rows"
    recon = r.split.test.category_names() == "reconstruction"
    assert np.array_equal(r.predictors["taxonomic"].test_p[recon], r.predictors["baseline"].test_p[recon])
    m = r.metrics.set_index(["predictor", "subset", "metric"])
    assert np.isnan(m.loc[("taxonomic", "reconstruction", "roc_auc")].value)
    assert m.loc[("taxonomic", "recollection", "f1")].n_rows == 0
    assert np.isnan(m.loc[("taxonomic", "recollection", "f1")].value)


def test_one_class_overall_gives_nan_metrics(combined):
    r = taxonomy_model(combined.assign(is_memorized=False), bootstrap_rounds=5)
    assert set(r.weights.status) == {"not_fitted"}
    assert r.metrics.value.isna().all()


def test_missing_feature_and_max_rows(combined):
    df = combined.copy()
    df["semantic_matches_0_8"] = None
    r = taxonomy_model(df, max_rows=5000, bootstrap_rounds=10)
    assert "semantic_matches_0_8" not in r.split.features
    missing = r.weights[r.weights.feature == "semantic_matches_0_8"]
    assert set(missing.status) == {"missing"} and len(missing) == 4  # baseline + 3 categories
    assert len(r.split.train.y) + len(r.split.test.y) == 5000 and r.split.n_capped == len(df) - 5000
    assert r.split.test.y.mean() == pytest.approx(df.is_memorized.mean(), abs=0.01)


def test_bad_arguments_raise(combined):
    with pytest.raises(ConfigError, match="test_fraction"):
        prepare_split(combined, test_fraction=1.0)
    two = pd.concat([combined.head(10), combined.head(10).assign(model="other")])
    with pytest.raises(ConfigError, match="one model@revision"):
        prepare_split(two)
    with pytest.raises(InputError, match="category values"):
        prepare_split(combined.assign(category="memorized"))
    with pytest.raises(ConfigError, match="expected some of paper, guess_recall"):
        taxonomy_model(combined, taxonomies=("paper", "topic"))
    with pytest.raises(InputError, match="needs column guessable"):
        taxonomy_model(combined, taxonomies=("guess_recall",))


def test_design_standardizes_continuous_only(result):
    split = result.split
    x = design(split, split.train)
    cont = [split.column(f) for f in split.features if f != "is_templating"]
    assert x[:, cont].mean(axis=0) == pytest.approx(0, abs=1e-9)
    assert np.array_equal(x[:, split.column("is_templating")], split.train.raw[:, split.column("is_templating")])


def test_likelihood_ratio_test_df_below_one_is_nan():
    y, p = np.array([True, False]), np.array([0.7, 0.2])
    stat, pv = likelihood_ratio_test(y, p, p, 0)
    assert stat == 0 and np.isnan(pv)


def test_bootstrap_p_value_counts_both_tails():
    assert bootstrap_p_value(np.zeros(50)) == 1.0
    assert bootstrap_p_value(np.full(99, 0.1)) == 2 / 100  # every difference above 0: the smallest p 99 rounds give
    d = np.r_[np.full(30, -1.0), np.full(70, 1.0), np.nan]
    assert bootstrap_p_value(d) == 2 * 31 / 101  # NaN rounds left out; 30 of 100 at or below 0
    assert np.isnan(bootstrap_p_value(np.array([np.nan])))


def _paired_reference(y, p, q, metric, rounds, seed):
    """Differences of sklearn's metric on the same resamples, one loop per round, drawn as bootstrap_weights does."""
    fn = {"log_loss": log_loss, "pr_auc": average_precision_score, "roc_auc": roc_auc_score,
          "f1": lambda y, p: f1_score(y, p > 0.5)}[metric]
    draws = np.random.default_rng(seed).integers(0, len(y), (rounds, len(y)))
    return np.array([fn(y[i], q[i]) - fn(y[i], p[i]) for i in draws])


def test_comparison_is_paired_on_the_same_resamples(result):
    split, preds = result.split, result.predictors
    got = result.comparison.set_index(["predictor", "metric"])
    assert set(got.reference) == {"baseline"} and (got.n_test == len(split.test.y)).all()
    y, base, tax = split.test.y, preds["baseline"].test_p, preds["taxonomic"].test_p
    for metric in ("log_loss", "pr_auc", "roc_auc", "f1"):
        ref = _paired_reference(y, base, tax, metric, 100, split.seed)
        row = got.loc[("taxonomic", metric)]
        assert row.ci_low == pytest.approx(np.quantile(ref, 0.025), abs=1e-12)
        assert row.ci_high == pytest.approx(np.quantile(ref, 0.975), abs=1e-12)
        assert row.p_value == bootstrap_p_value(ref)
    # the planted category effects: the taxonomy helps, and the intervals say so
    assert got.loc[("taxonomic", "pr_auc")].ci_low > 0 and got.loc[("taxonomic", "log_loss")].ci_high < 0
    assert got.loc[("taxonomic", "pr_auc")].difference == pytest.approx(
        average_precision_score(y, tax) - average_precision_score(y, base), abs=1e-12)
    assert got.loc[("taxonomic", "pr_auc")].p_value < 0.05


def test_a_predictor_compared_with_itself_differs_by_zero(result):
    same = {"baseline": result.predictors["baseline"], "copy": result.predictors["baseline"]}
    got = comparison(result.split, same, 50, 0.95)
    assert (got.difference == 0).all() and (got.ci_low == 0).all() and (got.ci_high == 0).all()
    assert (got.p_value == 1).all()
    assert_frame_equal(got, comparison(result.split, same, 50, 0.95))  # seeded


def test_variance_inflation_against_regressions():
    rng = np.random.default_rng(2)
    a, c = rng.normal(size=400), rng.normal(size=400)
    x = np.c_[a, a + 0.3 * rng.normal(size=400), c, np.ones(400)]
    got = variance_inflation(x)
    for j in range(3):
        others = [k for k in range(3) if k != j]
        r2 = LinearRegression().fit(x[:, others], x[:, j]).score(x[:, others], x[:, j])
        assert got[j] == pytest.approx(1 / (1 - r2), rel=1e-9)
    assert np.isnan(got[3])  # constant
    assert np.isinf(variance_inflation(np.c_[a, 2 * a, c])).all()


@pytest.mark.parametrize("upstream_protocol", [False, True])
def test_trees_equal_a_classifier_fitted_by_hand(upstream_protocol):
    """Predictor trees: HistGradientBoostingClassifier(class_weight="balanced", random_state=seed) on the unscaled
    features of the baseline's training rows (all of them; upstream: the same 80% as the baseline), scored on the
    test rows, and compared with the baseline on the same resamples."""
    df = synthetic_combined(2000, seed=5)
    got = taxonomy_model(df, upstream_protocol=upstream_protocol, bootstrap_rounds=30, seed=11, trees=True)
    split = prepare_split(df, upstream_protocol=upstream_protocol, seed=11)
    rows = np.arange(len(split.train.y))
    if upstream_protocol:
        rows = rows[stratified_mask(split.train.y, 0.8, np.random.default_rng(11))]
    hand = HistGradientBoostingClassifier(class_weight="balanced", random_state=11)
    want = hand.fit(split.train.raw[rows], split.train.y[rows]).predict_proba(split.test.raw)[:, 1]
    assert np.array_equal(got.predictors["trees"].test_p, want)
    assert np.array_equal(got.split.test.sequence_id, split.test.sequence_id)
    m = got.metrics.set_index(["predictor", "subset", "metric"])
    assert set(got.metrics.predictor) == {"baseline", "taxonomic", "trees"}
    assert "trees" not in set(got.weights.predictor)  # no coefficients
    if not upstream_protocol:
        assert m.loc[("trees", "aggregate", "pr_auc")].value == pytest.approx(
            average_precision_score(split.test.y, want), abs=1e-12)
        row = got.comparison.set_index(["predictor", "metric"]).loc[("trees", "pr_auc")]
        ref = _paired_reference(split.test.y, got.predictors["baseline"].test_p, want, "pr_auc", 30, 11)
        assert (row.ci_low, row.ci_high) == (pytest.approx(np.quantile(ref, 0.025), abs=1e-12),
                                             pytest.approx(np.quantile(ref, 0.975), abs=1e-12))


def test_trees_without_both_classes_fall_back_to_the_baseline(combined):
    r = taxonomy_model(combined.head(3000).assign(is_memorized=False), bootstrap_rounds=5, trees=True)
    assert np.array_equal(r.predictors["trees"].test_p, r.predictors["baseline"].test_p, equal_nan=True)


# (is_repeating, is_incrementing, prefix_suffix_rouge_l, prefix_suffix_rouge_3) -> group at rho 0.5, by hand from
# beyond.md §4 for every sequence, memorized or not; None: a missing value could decide it
GUESS_ROWS = [
    ((False, False, 0.2, 0.1), "recall"),
    ((True, False, 0.0, 0.0), "guess"),
    ((False, True, 0.0, 0.0), "guess"),
    ((False, False, 0.5, 0.0), "guess"),
    ((False, False, 0.0, 0.7), "guess"),
    ((False, False, 0.49, 0.49), "recall"),
    ((None, False, 0.1, 0.1), None),
    ((None, False, 0.9, 0.1), "guess"),
    ((False, False, None, 0.2), None),
    ((True, None, None, None), "guess"),
    ((False, False, 0.3, None), None),
]


def test_guess_recall_groups_equal_a_hand_assignment(spark):
    df = synthetic_combined(1100, seed=9)
    inputs = [(int(i), *GUESS_ROWS[k % len(GUESS_ROWS)][0]) for k, i in enumerate(df.sequence_id)]
    want = {int(i): GUESS_ROWS[k % len(GUESS_ROWS)][1] for k, i in enumerate(df.sequence_id)}
    sdf = spark.createDataFrame(inputs, "sequence_id BIGINT, is_repeating BOOLEAN, is_incrementing BOOLEAN, "
                                        "prefix_suffix_rouge_l DOUBLE, prefix_suffix_rouge_3 DOUBLE")
    guessable = sdf.select("sequence_id", guessable_column(0.5).alias(GUESSABLE)).toPandas()
    rows = df.merge(guessable, on="sequence_id")
    r = taxonomy_model(rows, bootstrap_rounds=5, taxonomies=("guess_recall",))
    assert set(r.predictors) == {"baseline", "guess_recall"}
    pred, split = r.predictors["guess_recall"], r.split
    for part, groups in ((split.train, pred.train_groups), (split.test, pred.test_groups)):
        assert list(groups) == [want[int(i)] for i in part.sequence_id]
        assert {bool(y) for y, g in zip(part.y, groups) if g == "recall"} == {False, True}  # memorized or not
    assert set(pred.fits) == {"guess", "recall"}
    assert list(pred.fits["guess"].rows) == [k for k, g in enumerate(pred.train_groups) if g == "guess"]
    unknown = np.array([g is None for g in pred.test_groups])
    assert unknown.any() and np.array_equal(pred.test_p[unknown], r.predictors["baseline"].test_p[unknown])
    assert set(r.weights[r.weights.predictor == "guess_recall"].subset) == {"guess", "recall"}
    assert set(r.comparison.predictor) == {"guess_recall"}
