"""The optimal-partition search (spec §4.4): candidates, the partition rule, and the Spark search finding a planted
best split; Spark results equal a local evaluation of each candidate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score

from semmem.catalog import table
from semmem.config import TaxonomyConfig
from semmem.errors import ConfigError
from semmem.taxonomy.model import Part, design, prepare_split, taxonomy_model
from semmem.taxonomy.search import (
    CandidateEvaluator, Partition, partition_candidates, search_partitions, with_best_partition)
from tests.synthetic import standardized, synthetic_combined

SEARCH = TaxonomyConfig().search_features
QUANTILES = TaxonomyConfig().search_quantiles
H, D = "huffman_coding_length", "sequence_duplicates"


@pytest.fixture(scope="module")
def planted() -> pd.DataFrame:
    """Opposite effects in three regions: huffman >= 4.2 (T1), else duplicates >= 6 (T2), else the rest (T3)."""
    df = synthetic_combined(8000, seed=21)
    gen, prompt = standardized(df.generation_perplexity), standardized(df.prompt_perplexity)
    region = np.where(df[H] >= 4.2, 0, np.where(df[D] >= 6, 1, 2))
    logit = np.choose(region, [3 * gen, -3 * gen, 3 * prompt])
    df["is_memorized"] = np.random.default_rng(0).random(len(df)) < 1 / (1 + np.exp(-logit))
    return df


@pytest.fixture(scope="module")
def result(planted):
    return taxonomy_model(planted, bootstrap_rounds=20)


def _candidates(rows: list[tuple[str, float, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"candidate_id": i, "feature_1": f1, "quantile_1": np.nan, "threshold_1": t1,
                          "feature_2": f2, "quantile_2": np.nan, "threshold_2": t2}
                         for i, (f1, t1, f2, t2) in enumerate(rows)])


PLANTED_AND_DECOYS = [
    (H, 4.2, D, 6.0),  # the planted partition
    (D, 6.0, H, 4.2),  # same features, other precedence
    (H, 4.2, "prompt_perplexity", 6.0),
    ("avg_frequency", 3e6, D, 6.0),
    (H, 4.6, D, 6.0),
    (H, 100.0, D, 6.0),  # T1 empty: skipped
]


def test_partition_rule():
    split = prepare_split(synthetic_combined(50, seed=0))
    raw = np.zeros((4, len(split.features)))
    raw[:, split.column(H)] = [5.0, 4.0, 4.0, 4.2]
    raw[:, split.column(D)] = [1, 9, 2, 6]
    part = Part(np.arange(4), raw, np.zeros(4, bool), np.zeros(4, np.int8))
    assert Partition(H, 4.2, D, 6.0).assign(split, part).tolist() == ["t1", "t2", "t3", "t1"]
    assert Partition(D, 6.0, H, 4.2).assign(split, part).tolist() == ["t2", "t1", "t3", "t1"]


def test_810_candidates_from_memorized_quantiles(result):
    split = result.split
    got = partition_candidates(split, search_features=SEARCH, search_quantiles=QUANTILES)
    assert len(got) == 810 and got.candidate_id.tolist() == list(range(810))
    assert (got.feature_1 != got.feature_2).all()
    assert len(got[["feature_1", "quantile_1", "feature_2", "quantile_2"]].drop_duplicates()) == 810
    fitting = ~split.validation  # thresholds come from the memorized rows the search fits on, never the test rows
    mem = split.train.raw[fitting & split.train.y]
    first = got.iloc[0]
    assert (first.feature_1, first.quantile_1, first.feature_2, first.quantile_2) == (SEARCH[0], 0.25, SEARCH[1], 0.25)
    for _, c in got.sample(20, random_state=0).iterrows():
        assert c.threshold_1 == np.quantile(mem[:, split.column(c.feature_1)], c.quantile_1)
        assert c.threshold_2 == np.quantile(mem[:, split.column(c.feature_2)], c.quantile_2)


def test_upstream_thresholds_use_all_memorized_rows(planted):
    split = prepare_split(planted, upstream_protocol=True)
    got = partition_candidates(split, search_features=[H, D], search_quantiles=[0.5])
    every = np.r_[split.train.raw[split.train.y], split.test.raw[split.test.y]]
    assert got.threshold_1.tolist() == [np.quantile(every[:, split.column(f)], 0.5) for f in (H, D)]


def test_candidates_skip_missing_features_and_reject_unknown(planted):
    df = planted.copy()
    df["textual_matches_0_8"] = None
    split = prepare_split(df)
    assert len(partition_candidates(split, search_features=SEARCH, search_quantiles=QUANTILES)) == 27 * 24
    with pytest.raises(ConfigError, match="search_features"):
        partition_candidates(split, search_features=["huffman"], search_quantiles=QUANTILES)


def test_search_finds_planted_split(spark, result):
    cands = _candidates(PLANTED_AND_DECOYS)
    got = search_partitions(spark, result.split, cands, search_tasks=3)
    assert list(got.columns) == table("taxonomy_search").columns
    assert got.candidate_id.tolist() == list(range(len(cands)))
    best = got[got["rank"] == 1].iloc[0]
    assert best.candidate_id == 0
    assert got.loc[5, "status"] == "skipped" and got.loc[5, "reason"] == "t1: no training rows"
    assert pd.isna(got.loc[5, "rank"]) and sorted(got["rank"].dropna()) == [1, 2, 3, 4, 5]
    split = result.split
    assert got.loc[0, "n_train_1"] + got.loc[0, "n_train_2"] + got.loc[0, "n_train_3"] == (~split.validation).sum()
    assert (got.n_validation == split.validation.sum()).all()
    # ranked by F1 on the validation rows, written from the definition: fit on the other training rows
    fit, val = ~split.validation, split.validation
    x = design(split, split.train)
    for i, c in cands.iterrows():
        if got.loc[i, "status"] != "evaluated":
            continue
        groups = Partition.of(c).assign(split, split.train)
        p = np.empty(len(groups))
        for g in ("t1", "t2", "t3"):
            rows = fit & (groups == g)
            model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000, random_state=split.seed)
            model.fit(x[rows], split.train.y[rows])
            p[groups == g] = model.predict_proba(x[groups == g])[:, 1]
        assert got.loc[i, "validation_f1"] == pytest.approx(f1_score(split.train.y[val], p[val] > 0.5), abs=1e-9)
        assert got.loc[i, "validation_pr_auc"] == pytest.approx(
            average_precision_score(split.train.y[val], p[val]), abs=1e-9)
    # Spark tasks = a local evaluation of each candidate; and reruns are identical
    local = CandidateEvaluator(split)
    for i in range(len(cands)):
        want = local(cands.iloc[i])
        for m in ("f1", "precision", "recall", "roc_auc", "pr_auc", "ece"):
            m = f"validation_{m}"
            assert got.loc[i, m] == pytest.approx(want.get(m, np.nan), abs=1e-9, nan_ok=True)
    assert_frame_equal(got, search_partitions(spark, split, cands, search_tasks=2))
    # the winner, refitted on all training rows and tested once, beats one model for all rows and the taxonomy
    m = with_best_partition(result, got).metrics.set_index(["predictor", "subset", "metric"])
    f1 = {p: m.loc[(p, "aggregate", "f1")].value for p in ("baseline", "taxonomic", "best_partition")}
    assert f1["best_partition"] > f1["baseline"] + 0.05 and f1["best_partition"] > f1["taxonomic"] + 0.05


def test_a_search_over_noise_finds_nothing_the_test_rows_confirm(spark):
    """Candidate features of pure noise: the winner on the validation rows is no better than the baseline on the
    test rows: its paired interval covers 0."""
    df = synthetic_combined(6000, seed=5)
    rng = np.random.default_rng(1)
    noise = ["avg_frequency", "huffman_coding_length", "semantic_matches_0_8", "textual_matches_0_8"]
    for f in noise:
        df[f] = rng.normal(size=len(df))
    result = taxonomy_model(df, bootstrap_rounds=200)
    cands = partition_candidates(result.split, search_features=noise, search_quantiles=QUANTILES)
    search = search_partitions(spark, result.split, cands, search_tasks=2)
    out = with_best_partition(result, search)
    f1 = out.comparison.set_index(["predictor", "metric"]).loc[("best_partition", "f1")]
    assert f1.ci_low <= 0 <= f1.ci_high and f1.p_value > 0.05


def test_a_validation_share_too_small_skips_the_search(spark, result):
    cands = _candidates(PLANTED_AND_DECOYS[:2])
    got = search_partitions(spark, result.split, cands, min_validation=10 ** 6)
    assert (got.status == "skipped").all() and got["rank"].isna().all()
    assert got.reason[0].startswith("validation split too small to rank candidates") and "test rows" in got.reason[0]
    assert with_best_partition(result, got) is result


def test_with_best_partition_tables(result):
    search = pd.DataFrame([{"rank": 1, "feature_1": H, "threshold_1": 4.2, "feature_2": D, "threshold_2": 6.0}])
    out = with_best_partition(result, search)
    assert set(out.metrics.predictor) == {"baseline", "taxonomic", "best_partition"}
    w = out.weights[out.weights.predictor == "best_partition"]
    assert set(w.subset) == {"t1", "t2", "t3"} and set(w.status) <= {"fitted", "constant"}
    base = out.metrics[out.metrics.predictor != "best_partition"].reset_index(drop=True)
    assert_frame_equal(base, result.metrics)  # the other predictors keep their resamples and values
    assert with_best_partition(result, search.assign(rank=2)) is result
