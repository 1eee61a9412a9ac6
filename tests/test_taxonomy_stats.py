"""Correlations and Chatterjee's xi, the duplicate-threshold KL curve and memorization forecasts, against hand-computed
values and independent implementations (scipy, xicorpy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xicorpy
from pandas.testing import assert_frame_equal
from scipy import stats

from semmem.catalog import table
from semmem.taxonomy.stats import (
    chatterjee_xi, duplicate_threshold_kl, feature_correlations, memorization_forecast, symmetric_kl)
from tests.synthetic import synthetic_combined


@pytest.fixture(scope="module")
def combined() -> pd.DataFrame:
    return synthetic_combined(4000, seed=11)


def test_xi_hand_computed():
    rng = np.random.default_rng(0)
    x = np.arange(1.0, 7.0)
    # y = 0 0 0 1 1 1: r = 3 3 3 6 6 6, sum |dr| = 3; l = 6 6 6 3 3 3, sum l(n - l) = 27; xi = 1 - 6*3/54
    assert chatterjee_xi(x, np.array([0, 0, 0, 1, 1, 1.0]), rng)[0] == pytest.approx(2 / 3, abs=1e-15)
    # y = 2 1 4 3 6 5: r = y, sum |dr| = 9; l = 5 6 3 4 1 2, sum l(n - l) = 35; xi = 1 - 6*9/70 = 8/35
    assert chatterjee_xi(x, np.array([2, 1, 4, 3, 6, 5.0]), rng)[0] == pytest.approx(8 / 35, abs=1e-15)
    # rows in another order: xi only depends on the pairs
    perm = np.array([3, 0, 5, 1, 4, 2])
    assert chatterjee_xi(x[perm], np.array([2, 1, 4, 3, 6, 5.0])[perm], rng)[0] == pytest.approx(8 / 35)
    assert np.isnan(chatterjee_xi(x, np.ones(6), rng)[0])


def test_xi_against_xicorpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=3000)
    y = (x + rng.normal(size=3000) > 1).astype(float)
    ours, p = chatterjee_xi(x, y, np.random.default_rng(0))
    theirs = float(xicorpy.compute_xi_correlation(x, y, get_modified_xi=False)[0, 0])
    # xicorpy's standard xi uses l - 1 for l: 1 - xi scales by sum l(n - l) / sum (l - 1)(n - l + 1), exactly
    n = len(y)
    l_ = stats.rankdata(-y, method="max")
    assert 1 - theirs == pytest.approx((1 - ours) * (l_ * (n - l_)).sum() / ((l_ - 1) * (n - l_ + 1)).sum(),
                                       rel=1e-12)
    assert p < 1e-20
    # ... and by default it returns the modified xi here (no (x, y) pair repeats), a different coefficient
    assert float(xicorpy.compute_xi_correlation(x, y)[0, 0]) > ours + 0.2
    independent = chatterjee_xi(rng.normal(size=3000), (rng.random(3000) < 0.3).astype(float), rng)
    assert abs(independent[0]) < 0.05 and independent[1] > 0.01


def test_xi_ties_in_x_broken_at_random_with_seed():
    x = np.repeat([0.0, 1.0], 50)
    y = np.r_[np.zeros(25), np.ones(25), np.zeros(10), np.ones(40)]
    a = chatterjee_xi(x, y, np.random.default_rng(5))
    assert a == chatterjee_xi(x, y, np.random.default_rng(5))
    assert a != chatterjee_xi(x, y, np.random.default_rng(6))


def test_feature_correlations_subsets_and_scipy(combined):
    df = combined.copy()
    df["textual_matches_0_8"] = None  # a stage that was not run
    got = feature_correlations(df, nl_threshold=0.6, code_threshold=0.3, seed=1)
    assert list(got.columns) == table("feature_correlations").columns
    assert len(got) == 14 * 4 * 3 * 3
    g = got.set_index(["category", "text_type", "feature", "statistic"])
    nl = df.nl_score >= 0.6
    rec = (df.category == "recitation") & nl
    row = g.loc[("recitation", "nl", "generation_perplexity", "pearson")]
    want = stats.pearsonr(df.generation_perplexity[rec], df.is_memorized[rec].astype(float))
    assert row.n_rows == rec.sum() and row.n_positive == df.is_memorized[rec].sum()
    assert row.value == pytest.approx(want.statistic, rel=1e-12) and row.p_value == pytest.approx(want.pvalue)
    code = df.nl_score <= 0.3
    row = g.loc[("all", "code", "min_frequency", "spearman")]
    want = stats.spearmanr(df.min_frequency[code], df.is_memorized[code].astype(float))
    assert row.n_rows == code.sum() and row.value == pytest.approx(want.statistic, rel=1e-12)
    assert g.loc[("all", "all", "textual_matches_0_8", "xi")].n_rows == 0
    assert np.isnan(g.loc[("all", "all", "textual_matches_0_8", "xi")].value)
    # is_templating is constant within reconstruction: no correlation
    assert np.isnan(g.loc[("reconstruction", "all", "is_templating", "pearson")].value)
    assert g.loc[("all", "all", "generation_perplexity", "xi")].value > 0.05
    assert_frame_equal(got, feature_correlations(df, nl_threshold=0.6, code_threshold=0.3, seed=1))


def test_symmetric_kl_hand_computed():
    # P = (.25, .5, .25), Q = (.5, .25, .25): KL(P||Q) = KL(Q||P) = .25 ln 2
    got = symmetric_kl(np.array([[1.0, 2.0, 1.0]]), np.array([[2.0, 1.0, 1.0]]))
    assert got[0] == pytest.approx(0.25 * np.log(2), abs=1e-15)


def _kl_rows(rows: list[tuple[int, bool, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m", "revision": "r", "sequence_duplicates": d, "is_memorized": y,
                          "generation_perplexity": g} for d, y, g in rows])


def test_duplicate_threshold_kl_hand_computed():
    # d = 1: memorized (1, 3), non-memorized (2, 2), m = 2. A round draws two of (1, 3) with replacement: equal values
    # (prob 1/2) give P = Q = (.5, .5) and KL 0; (1, 3) or (3, 1) give P = (.25, .75) vs Q = (.5, .5):
    # (.25 ln 2 + .25 ln 1.5) / 2 = ln(3) / 8. Mean: ln(3) / 16.
    rows = [(1, True, 1.0), (1, True, 3.0), (1, False, 2.0), (1, False, 2.0),
            (2, True, 1.5), (2, False, 4.0), (2, False, 5.0), (3, False, 2.0), (3, True, None), (0, True, 1.0)]
    got = duplicate_threshold_kl(_kl_rows(rows), kl_bootstrap_rounds=4000, kl_min_rows=2, seed=3)
    assert list(got.columns) == table("duplicate_threshold_kl").columns
    assert got.sequence_duplicates.tolist() == [1, 2, 3]  # 0 and NULL perplexities left out
    one = got.iloc[0]
    assert (one.n_memorized, one.n_non_memorized, one.sample_size, one.rounds) == (2, 2, 2, 4000)
    assert one.kl_max == pytest.approx(np.log(3) / 8, abs=1e-15) and one.kl_low == 0
    assert one.kl_mean == pytest.approx(np.log(3) / 16, abs=0.006)  # 4000 rounds: sd of the mean 0.0011
    for i in (1, 2):  # one memorized row / none: below kl_min_rows
        assert got.iloc[i].rounds == 0 and np.isnan(got.iloc[i].kl_mean)
    assert (got.iloc[1].n_memorized, got.iloc[1].n_non_memorized, got.iloc[1].sample_size) == (1, 2, 1)


def test_duplicate_threshold_kl_separates_and_is_seeded():
    rng = np.random.default_rng(0)
    same = [(1, bool(i % 2), float(g)) for i, g in enumerate(1 + rng.random(400) * 0.05)]
    apart = [(2, True, float(g)) for g in 1 + rng.random(200) * 0.2] + \
            [(2, False, float(g)) for g in rng.lognormal(1.5, 0.8, 200)]
    df = _kl_rows(same + apart)
    got = duplicate_threshold_kl(df, kl_bootstrap_rounds=200, seed=1)
    assert got.kl_mean[1] > 3 * got.kl_mean[0]
    assert_frame_equal(got, duplicate_threshold_kl(df, kl_bootstrap_rounds=200, seed=1))
    assert duplicate_threshold_kl(df, kl_max_duplicates=1, kl_bootstrap_rounds=10).sequence_duplicates.tolist() == [1]


def test_memorization_forecast_hand_count(spark):
    scored = {  # (model, revision): {sequence_id: is_memorized}
        ("a", "s1"): {1: True, 2: True, 3: False, 4: True, 5: False, 6: None},
        ("a", "s2"): {1: True, 2: False, 3: False, 4: True, 5: True, 6: True},
        ("b", "s1"): {1: True, 2: True, 3: True, 5: False},  # 4 and 6 not scored
    }
    long = pd.DataFrame([{"model": m, "revision": r, "sequence_id": s, "is_memorized": v}
                         for (m, r), seqs in scored.items() for s, v in seqs.items()])
    long = pd.concat([long, long.head(1)])  # a repeated row counts once
    frame = spark.createDataFrame(long, "model string, revision string, sequence_id long, is_memorized boolean")
    got = memorization_forecast(frame)
    assert list(got.columns) == table("memorization_forecast").columns
    g = got.set_index(["model_a", "revision_a", "model_b", "revision_b"])
    assert len(g) == 6
    # A = a@s1, B = a@s2, common sequences 1..5: A = {1, 2, 4}, B = {1, 4, 5}, both = {1, 4}
    row = g.loc[("a", "s1", "a", "s2")]
    assert (row.n_sequences, row.n_memorized_a, row.n_memorized_b, row.n_memorized_both) == (5, 3, 3, 2)
    assert row.precision == pytest.approx(2 / 3) and row.recall == pytest.approx(2 / 3)
    # A = a@s2, B = b@s1, common 1, 2, 3, 5: A = {1, 5}, B = {1, 2, 3}, both = {1}
    row = g.loc[("a", "s2", "b", "s1")]
    assert (row.n_sequences, row.n_memorized_a, row.n_memorized_b, row.n_memorized_both) == (4, 2, 3, 1)
    assert row.precision == pytest.approx(1 / 2) and row.recall == pytest.approx(1 / 3)
    back = g.loc[("b", "s1", "a", "s2")]
    assert back.precision == pytest.approx(1 / 3) and back.recall == pytest.approx(1 / 2)
    assert memorization_forecast(frame.where(frame.model == "b")).empty
