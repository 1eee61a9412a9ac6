"""Correlations and Chatterjee's xi, the duplicate-threshold divergence and memorization forecasts, against
hand-computed values and independent implementations (scipy, xicorpy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xicorpy
from pandas.testing import assert_frame_equal
from scipy import stats

from semmem.catalog import table
from semmem.errors import ConfigError
from semmem.taxonomy.report import _kl_note
from semmem.taxonomy.stats import (
    chatterjee_xi, duplicate_threshold_kl, feature_correlations, jensen_shannon, memorization_forecast, symmetric_kl)
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


def _kl_rows(rows: list[tuple[int, bool, float | None]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m", "revision": "r", "sequence_duplicates": d, "is_memorized": y,
                          "generation_perplexity": g} for d, y, g in rows])


def _js_reference(mem: list[float], non: list[float], edges: list[float], pseudo: float) -> float:
    """JS (nats) from its definition: histograms on [e_i, e_i+1) bins (the last closed), pseudo-count per bin."""
    def dist(xs: list[float]) -> list[float]:
        c = [pseudo + sum(edges[i] <= x < edges[i + 1] or (i == len(edges) - 2 and x == edges[-1]) for x in xs)
             for i in range(len(edges) - 1)]
        return [v / sum(c) for v in c]

    p, q = dist(mem), dist(non)
    m = [(a + b) / 2 for a, b in zip(p, q)]
    return 0.5 * sum(a * math.log(a / c) for a, c in zip(p, m)) + 0.5 * sum(b * math.log(b / c) for b, c in zip(q, m))


def test_duplicate_threshold_js_hand_computed():
    # log-perplexities over [0, 4] in 4 bins (edges 0 1 2 3 4); d = 1: memorized bins (0 0 1 3) -> counts (2 1 0 1),
    # other bins (1 2 3 3) -> (0 1 1 2). d = 2: one memorized row, below kl_min_rows. d = 0, NULL and 0 perplexities,
    # and d > kl_max_duplicates (log-perplexity 10) are left out, also of the binning range.
    mem, non = [0.0, 0.5, 1.5, 4.0], [1.2, 2.5, 3.5, 3.9]
    rows = [(1, True, math.exp(x)) for x in mem] + [(1, False, math.exp(x)) for x in non] + [
        (2, True, math.exp(2.2)), (2, False, math.exp(0.7)), (2, False, math.exp(3.2)), (3, True, None),
        (3, False, 0.0), (0, True, 1.0), (1000, False, math.exp(10.0))]
    got = duplicate_threshold_kl(_kl_rows(rows), duplicate_threshold=1, kl_bootstrap_rounds=0, kl_min_rows=2,
                                 js_bins=4, seed=3)  # no rounds: the plug-in JS
    assert list(got.columns) == table("duplicate_threshold_kl").columns
    # a pooled span of one count (1..1) is that count's row; the pool above is 2..999
    assert list(zip(got.duplicates_from, got.duplicates_to)) == [(1, 1), (2, 2), (2, 999)]
    assert (got.statistic == "jensen_shannon").all() and got.sample_size.isna().all() and got.kl_max.isna().all()
    one = got.iloc[0]
    want = _js_reference(mem, non, [0.0, 1.0, 2.0, 3.0, 4.0], 0.5)
    assert one.value == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert jensen_shannon(np.array([2, 1, 0, 1]), np.array([0, 1, 1, 2]))[()] == pytest.approx(want, rel=1e-12)
    assert (one.n_memorized, one.n_non_memorized, one.rounds) == (4, 4, 0) and np.isnan(one.ci_low)
    # with rounds: 2 JS - the mean of the JS of resampled bin counts, the basic bootstrap band around it
    boot = duplicate_threshold_kl(_kl_rows(rows), duplicate_threshold=1, kl_bootstrap_rounds=200, kl_min_rows=2,
                                  js_bins=4, seed=3).iloc[0]
    rng = np.random.default_rng(3)
    draws = jensen_shannon(rng.multinomial(4, np.array([2, 1, 0, 1]) / 4, size=200),
                           rng.multinomial(4, np.array([0, 1, 1, 2]) / 4, size=200))
    assert boot.value == pytest.approx(2 * want - draws.mean(), rel=1e-12) and boot.rounds == 200
    assert boot.ci_low == pytest.approx(2 * want - np.quantile(draws, 0.975), rel=1e-12)
    assert boot.ci_high == pytest.approx(2 * want - np.quantile(draws, 0.025), rel=1e-12)
    for i in (1, 2):  # one memorized row: below kl_min_rows
        assert (got.iloc[i].n_memorized, got.iloc[i].n_non_memorized, got.iloc[i].rounds) == (1, 2, 0)
        assert np.isnan(got.iloc[i].value) and np.isnan(got.iloc[i].ci_low)
    assert jensen_shannon(np.array([5, 0]), np.array([0, 5]), pseudo_count=0.0)[()] == pytest.approx(np.log(2))
    with pytest.raises(ConfigError, match="js_bins"):
        duplicate_threshold_kl(_kl_rows(rows), js_bins=0)


def _planted(shift: float, seed: int, n: int = 400) -> pd.DataFrame:
    """n memorized and n other rows at each count 1..10, log-perplexity N(2, 0.6); memorized rows above 5 duplicates
    shifted by `shift`."""
    rng = np.random.default_rng(seed)
    return _kl_rows([(d, y, float(np.exp(v))) for d in range(1, 11) for y in (True, False)
                     for v in rng.normal(2.0 + (shift if y and d > 5 else 0.0), 0.6, n)])


def test_duplicate_threshold_js_same_distribution_is_near_zero():
    got = duplicate_threshold_kl(_planted(0.0, seed=4), duplicate_threshold=5, kl_bootstrap_rounds=300, seed=1)
    assert len(got) == 12 and (got.rounds == 300).all()
    # bias-corrected: about 0, and every band covers 0
    assert (got.value.abs() < 0.01).all() and (got.ci_low <= 0).all() and (got.ci_high >= 0).all()
    pooled = got.set_index(["duplicates_from", "duplicates_to"])
    below, above = pooled.loc[(1, 5)], pooled.loc[(6, 999)]
    assert (below.n_memorized, above.n_non_memorized) == (2000, 2000)
    assert above.ci_low <= below.ci_high and below.ci_low <= above.ci_high  # the bands overlap
    assert "No difference detectable at this size" in _kl_note(got, 5)


def test_duplicate_threshold_js_does_not_rise_where_groups_shrink():
    """One distribution everywhere, groups shrinking with the count as in a real corpus (2,000 rows at d = 1, 100 at
    d = 10): the plug-in JS rises with 1 / n; the corrected one finds no count above count 1."""
    rng = np.random.default_rng(8)
    sizes = {d: int(2000 / d) for d in range(1, 11)}
    df = _kl_rows([(d, y, float(np.exp(v))) for d, n in sizes.items() for y in (True, False)
                   for v in rng.normal(2.0, 0.6, n)])
    got = duplicate_threshold_kl(df, duplicate_threshold=5, kl_bootstrap_rounds=400, seed=1)
    per = got[got.duplicates_from == got.duplicates_to].set_index("duplicates_from")
    assert not (per.loc[2:, "ci_low"] > per.loc[1, "ci_high"]).any()
    assert "first rises clearly" not in _kl_note(got, 5)
    plug_in = duplicate_threshold_kl(df, duplicate_threshold=5, kl_bootstrap_rounds=0, seed=1)
    plug = plug_in[plug_in.duplicates_from == plug_in.duplicates_to].set_index("duplicates_from").value
    assert plug[10] > 5 * plug[1]  # what the correction removes


def test_duplicate_threshold_js_finds_a_shift_above_the_threshold():
    got = duplicate_threshold_kl(_planted(-1.0, seed=5), duplicate_threshold=5, kl_bootstrap_rounds=300, seed=1)
    per = got[got.duplicates_from == got.duplicates_to].set_index("duplicates_from")
    assert (per.loc[6:, "ci_low"] > per.loc[:5, "value"].max()).all()  # bands above 5 exclude the values at 1..5
    assert (per.loc[6:, "ci_low"] > per.loc[:5, "ci_high"].max()).all() and (per.loc[6:, "value"] > 0.1).all()
    pooled = got.set_index(["duplicates_from", "duplicates_to"])
    assert pooled.loc[(6, 999)].ci_low > pooled.loc[(1, 5)].ci_high
    note = _kl_note(got, 5)
    assert "The data support the threshold" in note and "first rises clearly at d = 6" in note


def test_duplicate_threshold_js_is_seeded():
    df = _planted(-0.5, seed=6, n=100)
    got = duplicate_threshold_kl(df, kl_bootstrap_rounds=200, seed=1)
    assert_frame_equal(got, duplicate_threshold_kl(df, kl_bootstrap_rounds=200, seed=1))
    other = duplicate_threshold_kl(df, kl_bootstrap_rounds=200, seed=2)
    assert_frame_equal(got.drop(columns=["value", "ci_low", "ci_high"]),
                       other.drop(columns=["value", "ci_low", "ci_high"]))
    assert not np.allclose(got.ci_low, other.ci_low)  # the bands and the bias correction resample
    capped = duplicate_threshold_kl(df, kl_max_duplicates=1, kl_bootstrap_rounds=10)  # both pools reduce to count 1
    assert list(zip(capped.duplicates_from, capped.duplicates_to)) == [(1, 1)]


def test_duplicate_threshold_upstream_paired_kl():
    # d = 1: memorized (1, 3), non-memorized (2, 2), m = 2. A round draws two of (1, 3) with replacement: equal values
    # (prob 1/2) give P = Q = (.5, .5) and KL 0; (1, 3) or (3, 1) give P = (.25, .75) vs Q = (.5, .5):
    # (.25 ln 2 + .25 ln 1.5) / 2 = ln(3) / 8. Mean: ln(3) / 16.
    rows = [(1, True, 1.0), (1, True, 3.0), (1, False, 2.0), (1, False, 2.0),
            (2, True, 1.5), (2, False, 4.0), (2, False, 5.0), (3, False, 2.0), (3, True, None), (0, True, 1.0)]
    got = duplicate_threshold_kl(_kl_rows(rows), kl_bootstrap_rounds=4000, kl_min_rows=2, upstream_protocol=True,
                                 seed=3)
    assert list(got.columns) == table("duplicate_threshold_kl").columns
    assert (got.statistic == "upstream_paired_kl").all()  # per count only, no pooled rows
    assert got.duplicates_from.tolist() == got.duplicates_to.tolist() == [1, 2, 3]  # 0 and NULL perplexities left out
    one = got.iloc[0]
    assert (one.n_memorized, one.n_non_memorized, one.sample_size, one.rounds) == (2, 2, 2, 4000)
    assert one.kl_max == pytest.approx(np.log(3) / 8, abs=1e-15) and one.ci_low == 0
    assert one.value == pytest.approx(np.log(3) / 16, abs=0.006)  # 4000 rounds: sd of the mean 0.0011
    for i in (1, 2):  # one memorized row / none: below kl_min_rows
        assert got.iloc[i].rounds == 0 and np.isnan(got.iloc[i].value)
    assert (got.iloc[1].n_memorized, got.iloc[1].n_non_memorized, got.iloc[1].sample_size) == (1, 2, 1)
    # random pairing: identical-looking groups with spread score high, as upstream's notebook
    rng = np.random.default_rng(0)
    same = [(1, bool(i % 2), float(g)) for i, g in enumerate(1 + rng.random(400) * 0.05)]
    apart = [(2, True, float(g)) for g in 1 + rng.random(200) * 0.2] + \
            [(2, False, float(g)) for g in rng.lognormal(1.5, 0.8, 200)]
    df = _kl_rows(same + apart)
    up = duplicate_threshold_kl(df, kl_bootstrap_rounds=200, upstream_protocol=True, seed=1)
    assert up.value[1] > 3 * up.value[0]
    assert_frame_equal(up, duplicate_threshold_kl(df, kl_bootstrap_rounds=200, upstream_protocol=True, seed=1))
    assert "does not test the threshold" in _kl_note(up, 5)


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
    # Wilson at 95%, z = 1.95996...: centre (p + z^2/2n) / (1 + z^2/n),
    # half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    z = 1.959963984540054
    for k, n, low, high in ((1, 3, back.precision_ci_low, back.precision_ci_high),
                            (1, 2, back.recall_ci_low, back.recall_ci_high)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert (low, high) == (pytest.approx(centre - half, abs=1e-12), pytest.approx(centre + half, abs=1e-12))
    assert back.precision_ci_low == pytest.approx(0.0615, abs=1e-4)  # 1/3: [0.0615, 0.7923]
    assert back.precision_ci_high == pytest.approx(0.7923, abs=1e-4)
    wide = memorization_forecast(frame, ci_level=0.99).set_index(["model_a", "revision_a", "model_b", "revision_b"])
    assert wide.loc[("b", "s1", "a", "s2")].precision_ci_low < back.precision_ci_low
    assert memorization_forecast(frame.where(frame.model == "b")).empty


def test_restricted_forecast_uses_only_sequences_both_had_seen(spark):
    rows = [("a", "s1", 1, True, True), ("a", "s1", 2, True, True), ("a", "s1", 3, False, True),
            ("a", "s1", 4, True, False), ("b", "s1", 1, True, True), ("b", "s1", 2, False, None),
            ("b", "s1", 3, True, True), ("b", "s1", 4, True, True)]
    frame = spark.createDataFrame(rows, "model string, revision string, sequence_id long, is_memorized boolean, "
                                        "seen_by_checkpoint boolean")
    got = memorization_forecast(frame).set_index(["model_a", "model_b", "restricted"])
    counts = ["n_sequences", "n_memorized_a", "n_memorized_b", "n_memorized_both"]
    # every scored sequence: 1..4, A = {1, 2, 4}, B = {1, 3, 4}; seen by both: 1 and 3, A = {1}, B = {1, 3}
    assert tuple(got.loc[("a", "b", False), counts]) == (4, 3, 3, 2)
    assert tuple(got.loc[("a", "b", True), counts]) == (2, 1, 2, 1)
    assert tuple(got.loc[("b", "a", True), counts]) == (2, 2, 1, 1)
    assert got.loc[("a", "b", True)].precision == 1.0 and got.loc[("a", "b", True)].recall == 0.5
    assert len(got) == 4


def test_memorization_forecast_40_checkpoints_against_a_hand_count(spark):
    rng = np.random.default_rng(40)
    revisions = [f"step{1000 * i}" for i in range(1, 41)]
    rows = []
    for s in range(300):
        affinity = rng.random()  # some sequences are memorized by most checkpoints, so pairs agree
        for r in revisions:
            draw = rng.random()
            if draw < 0.15:
                continue  # not scored: no row
            state = None if draw < 0.25 else bool(rng.random() < affinity)
            rows.append(("m", r, s, state))
            if rng.random() < 0.05:  # a repeated row, possibly saying otherwise or NULL
                rows.append(("m", r, s, [None, True, False][rng.integers(3)]))
    rng.shuffle(rows)
    frame = spark.createDataFrame(rows, "model string, revision string, sequence_id long, is_memorized boolean") \
        .repartition(7)
    got = memorization_forecast(frame).set_index(["revision_a", "revision_b"])
    assert len(got) == 40 * 39 and (got.model_a == "m").all() and (got.model_b == "m").all()
    scored: dict[str, set[int]] = {r: set() for r in revisions}
    memorized: dict[str, set[int]] = {r: set() for r in revisions}
    for _, r, s, state in rows:
        if state is not None:
            scored[r].add(s)
            if state:
                memorized[r].add(s)
    for a in revisions:
        for b in revisions:
            if a == b:
                continue
            common = both_mem = mem_a = mem_b = 0
            for s in range(300):
                if s in scored[a] and s in scored[b]:
                    common += 1
                    mem_a += s in memorized[a]
                    mem_b += s in memorized[b]
                    both_mem += s in memorized[a] and s in memorized[b]
            row = got.loc[(a, b)]
            assert (row.n_sequences, row.n_memorized_a, row.n_memorized_b, row.n_memorized_both) == \
                (common, mem_a, mem_b, both_mem), (a, b)
            assert row.precision == pytest.approx(both_mem / mem_a) and row.recall == pytest.approx(both_mem / mem_b)
            assert row.precision_ci_low <= row.precision <= row.precision_ci_high
