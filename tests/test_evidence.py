"""Stage evidence and taxonomy.features (issue 22 §4): every computation against a reference written from its
definition on small inputs (exact equality), the stage on a small warehouse, the exposure fit beside the default one."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semmem.catalog import table
from semmem.config import load_config
from semmem.errors import ConfigError
from semmem.stages.registry import run_stages
from semmem.taxonomy.combine import category_counts
from semmem.taxonomy.evidence import (
    ALL, SCORES, context_shares, exposure_medians, exposure_shares, order_statistic_ranks, score_separation, z_of)
from semmem.taxonomy.metrics import wilson
from semmem.taxonomy.vocabulary import CATEGORIES
from tests.synthetic import synthetic_combined
from tests.test_taxonomy_stages import _ctx, _write, small_feature_tables


def _pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """P(score of a memorized row > score of another) + 1/2 P(equal), by counting every pair."""
    pos, neg = s[y], s[~y]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg)) if len(pos) and len(neg) else float("nan")


def _categories_of(rows: list[dict]) -> list[tuple[dict, str]]:
    """Each row under its category (when it has one) and under "all"."""
    return [(r, c) for r in rows for c in ([r["category"]] if r["category"] is not None else []) + [ALL]]


def test_score_separation_equals_a_pairwise_count():
    rng = np.random.default_rng(5)
    n = 90
    rows = pd.DataFrame({"model": "m", "revision": "r", "category": rng.choice(list(CATEGORIES), n),
                         "is_memorized": pd.Series(rng.random(n) < 0.4, dtype=object),
                         **{s: rng.integers(0, 6, n).astype(float) for s in SCORES}})  # many ties
    rows.loc[3, "loss"] = np.nan  # a row without that score
    rows.loc[4, "is_memorized"] = None
    got = score_separation(rows, bootstrap_rounds=40, ci_level=0.9, seed=1)
    assert len(got) == len(SCORES) * 4
    for r in got.itertuples():
        keep = rows["is_memorized"].notna() & rows[r.score].notna()
        if r.category != ALL:
            keep &= rows["category"] == r.category
        sub = rows[keep]
        y = sub["is_memorized"].astype(bool).to_numpy()
        want = _pairwise_auc(y, SCORES[r.score] * sub[r.score].to_numpy())
        assert r.roc_auc == want, (r.score, r.category)
        assert (r.n_rows, r.n_memorized) == (len(sub), int(y.sum()))
        assert r.ci_low <= r.roc_auc <= r.ci_high or abs(r.roc_auc - 0.5) < 0.2  # the interval exists
        assert r.memorized_when == ("higher" if SCORES[r.score] > 0 else "lower")


def test_order_statistic_ranks_from_the_binomial_definition():
    for n in range(1, 80):
        low, high, j = order_statistic_ranks(n, 0.95)
        assert (low, high) == ((n + 1) // 2 if n % 2 else n // 2, (n + 1) // 2 if n % 2 else n // 2 + 1)
        cdf = [sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n for k in range(n + 1)]
        ok = [jj for jj in range(1, n + 1) if cdf[jj - 1] <= 0.025]
        assert j == (max(ok) if ok else None), n


@pytest.fixture(scope="module")
def small(spark):
    """Labels with memorized_at and combined rows with exposure columns (NULLs included), as Spark frames."""
    rng = np.random.default_rng(7)
    rows = []
    for model, revision in (("a", "step9"), ("b", "local")):
        for i in range(60):
            seen = model == "a" and rng.random() < 0.8
            exposures = int(rng.integers(1, 40)) if seen else 0 if model == "a" else None
            rows.append({"model": model, "revision": revision, "sequence_id": i,
                         "category": [*CATEGORIES, None][int(rng.integers(0, 4))],
                         "is_memorized": None if i == 0 else bool(rng.random() < 0.3),
                         "exposures_before": exposures,
                         "steps_since_last_exposure": int(rng.integers(1, 20)) if seen else None,
                         "memorized_at": {k: bool(rng.random() < 0.1 * k / 8) for k in (8, 16, 32)
                                          if not (k == 8 and i == 5)}})
    combined = spark.createDataFrame(
        [{k: r[k] for k in r if k != "memorized_at"} for r in rows],
        "model STRING, revision STRING, sequence_id BIGINT, category STRING, is_memorized BOOLEAN, "
        "exposures_before BIGINT, steps_since_last_exposure BIGINT")
    labels = spark.createDataFrame([{k: r[k] for k in ("model", "revision", "sequence_id", "memorized_at")}
                                    for r in rows],
                                   "model STRING, revision STRING, sequence_id BIGINT, memorized_at MAP<INT, BOOLEAN>")
    return rows, labels, combined


def test_context_shares_equal_a_loop(small):
    rows, labels, combined = small
    got = context_shares(labels, combined, 0.95)
    want: dict[tuple, list[int]] = {}
    for r, c in _categories_of(rows):
        for k, m in r["memorized_at"].items():
            n = want.setdefault((r["model"], r["revision"], c, k), [0, 0])
            n[0] += 1
            n[1] += int(m)
    assert {(r.model, r.revision, r.category, r.context_length): [r.sequences, r.memorized]
            for r in got.itertuples()} == want
    lo, hi = wilson(got["memorized"], got["sequences"], z_of(0.95))
    share = got["memorized"] / got["sequences"]
    assert (got["share"] == share).all()
    assert np.array_equal(got["ci_low"], np.clip(np.fmin(lo, share), 0, 1))  # Wilson's, its rounding at 0 and 1 cut
    assert np.array_equal(got["ci_high"], np.clip(np.fmax(hi, share), 0, 1))
    assert ((got["ci_low"] <= got["share"]) & (got["share"] <= got["ci_high"])).all()
    assert (got["memorized"] == 0).any()  # the case where Wilson's lower end rounds above 0


def test_exposure_shares_equal_a_loop(small):
    rows, _, combined = small
    got = exposure_shares(combined, 0.95)
    want: dict[tuple, list[int]] = {}
    for r, c in _categories_of(rows):
        for measure in ("exposures_before", "steps_since_last_exposure"):
            v = r[measure]
            if v is None or r["is_memorized"] is None:
                continue
            low = 0 if v == 0 else max(2 ** e for e in range(40) if 2 ** e <= v)
            n = want.setdefault((r["model"], r["revision"], c, measure, low, 0 if v == 0 else 2 * low - 1), [0, 0])
            n[0] += 1
            n[1] += int(r["is_memorized"])
    assert {(r.model, r.revision, r.category, r.measure, r.bin_low, r.bin_high): [r.sequences, r.memorized]
            for r in got.itertuples()} == want
    assert not (got["model"] == "b").any()  # its exposures are unknown


def test_exposure_medians_equal_sorted_values(small):
    rows, _, combined = small
    got = exposure_medians(combined, 0.95)
    groups: dict[tuple, list[int]] = {}
    for r, c in _categories_of(rows):
        for measure in ("exposures_before", "steps_since_last_exposure"):
            if r[measure] is not None and r["is_memorized"] is not None:
                groups.setdefault((r["model"], r["revision"], c, r["is_memorized"], measure), []).append(r[measure])
    assert len(got) == len(groups)
    for r in got.itertuples():
        values = sorted(groups[(r.model, r.revision, r.category, r.memorized, r.measure)])
        n = len(values)
        assert r.sequences == n and r.median == float(np.median(values))
        _, _, j = order_statistic_ranks(n, 0.95)
        if j is None:
            assert pd.isna(r.ci_low) and pd.isna(r.ci_high)
        else:
            assert (r.ci_low, r.ci_high) == (values[j - 1], values[n - j])


def test_taxonomy_features_must_be_known():
    with pytest.raises(ConfigError, match="taxonomy.features"):
        load_config(None, ["taxonomy.features=exposure"])


def test_evidence_stage_on_a_small_warehouse(spark, tmp_path):
    ctx = _ctx(spark, tmp_path / "wh", "training.rows_per_step=1", "report.examples_per_category=5")
    wh = ctx.warehouse
    small_feature_tables(wh)
    _write(wh, "token_rows", [{"row_id": i, "tokens": [0] * 64} for i in range(20)])
    _write(wh, "sequence_exposures", [{"sequence_id": i, "step": s, "occurrences": 1}
                                      for i in (1, 2, 3, 4, 5) for s in range(i)])
    _write(wh, "sequence_occurrences", [{"sequence_id": i, "rank": k, "row_id": k, "offset": 32, "step": k,
                                         "document": f"doc{k % 12}", "source": "x"}
                                        for i in (1, 3, 5) for k in range(1, 15)])
    run_stages(ctx, ["combine", "evidence"])
    by_context = wh.read("memorization_by_context").toPandas()
    assert set(by_context["context_length"]) == {32}
    assert set(by_context["category"]) == {ALL, "recitation", "reconstruction", "recollection"}
    seps = wh.read("score_separation").toPandas()
    assert set(seps["score"]) == set(SCORES) - {"memorized_bits"}  # no reference model: memorized_bits is NULL
    cards = wh.read("memorization_examples").toPandas()
    # model a memorizes 1, 3, 5 (revision "local": no step, so no exposure); b memorizes 1
    assert sorted(zip(cards["model"], cards["sequence_id"])) == [("a", 1), ("a", 3), ("a", 5), ("b", 1)]
    docs = cards.set_index(["model", "sequence_id"]).loc[("a", 1), "documents"]
    assert list(docs) == [f"doc{k}" for k in range(1, 11)]  # 10 distinct documents, earliest first
    assert cards["text"].notna().all() and cards["exposures_before"].isna().all()
    assert wh.read("exposure_medians").count() == 0  # no checkpoint step: no exposure


@pytest.fixture(scope="module")
def exposure_rows():
    """Synthetic combined rows of one model whose exposure columns are known, memorization rising with exposure."""
    df = synthetic_combined(1200, seed=4, model="m", revision="step50")
    rng = np.random.default_rng(4)
    df["exposures_before"] = rng.poisson(3.0, len(df)) + 1 + df["is_memorized"].astype(int) * rng.poisson(4.0, len(df))
    df["steps_since_last_exposure"] = rng.integers(1, 50, len(df))
    tdef = table("combined")
    for f in tdef.schema:
        if f.name not in df:
            df[f.name] = None
    return df[tdef.columns]


def _taxonomy(spark, root, df, *overrides):
    ctx = _ctx(spark, root, "taxonomy.bootstrap_rounds=10", "taxonomy.kl_bootstrap_rounds=5",
               "taxonomy.search_features=[sequence_duplicates,generation_perplexity]",
               "taxonomy.taxonomies=[paper]", "taxonomy.trees=false", *overrides)  # the exposure fit is under test
    sdf = spark.createDataFrame(df, table("combined").spark_schema)
    ctx.warehouse.write(sdf, "combined", mode="overwrite")
    ctx.warehouse.write(category_counts(sdf), "category_counts", mode="overwrite")
    seqs = df[["sequence_id"]].assign(tokens=[[0] * 64] * len(df), text="a text", prompt_text="a", pile_set_name=None)
    ctx.warehouse.write(spark.createDataFrame(seqs[table("sequences").columns], table("sequences").spark_schema),
                        "sequences", mode="overwrite")
    run_stages(ctx, ["taxonomy", "report"])
    return ctx.warehouse


def _page(wh) -> str:
    return (Path(wh.root) / "report" / "index.html").read_text()


def test_exposure_fit_beside_the_unchanged_default(spark, tmp_path, exposure_rows, caplog):
    default = _taxonomy(spark, tmp_path / "default", exposure_rows)
    both = _taxonomy(spark, tmp_path / "both", exposure_rows, "taxonomy.features=upstream+exposure")
    for name in ("taxonomy_metrics", "taxonomy_comparison", "taxonomy_weights", "taxonomy_search",
                 "feature_correlations"):
        key = list(table(name).key)
        plain = default.read(name).toPandas().sort_values(key).reset_index(drop=True)
        mine = both.read(name).toPandas()
        if "predictor" in mine:
            mine = mine[~mine["predictor"].str.endswith("+exposure")]
        pd.testing.assert_frame_equal(plain, mine.sort_values(key).reset_index(drop=True))  # bitwise
    metrics = both.read("taxonomy_metrics").toPandas()
    assert {"baseline+exposure", "taxonomic+exposure"} <= set(metrics["predictor"])
    weights = both.read("taxonomy_weights").toPandas()
    fitted = weights[(weights.predictor == "baseline+exposure") & (weights.status == "fitted")]
    assert fitted.set_index("feature").loc["exposures_before", "coefficient"] > 0  # the planted association
    comparison = both.read("taxonomy_comparison").toPandas()
    assert set(comparison[comparison.predictor == "taxonomic+exposure"]["reference"]) == {"baseline+exposure"}
    assert "With and without exposure features" not in _page(default)
    assert "With and without exposure features" in _page(both) and "taxonomic+exposure" in _page(both)
    # without a checkpoint step the exposure columns are NULL: the fit is skipped, said once, and recorded
    unknown = exposure_rows.assign(revision="local", exposures_before=None, steps_since_last_exposure=None)
    with caplog.at_level(logging.WARNING, logger="semmem"):
        wh = _taxonomy(spark, tmp_path / "unknown", unknown, "taxonomy.features=upstream+exposure")
    assert caplog.text.count("no fit with exposure features") == 1
    assert "m@local" in wh.commit_metadata("taxonomy_metrics")["exposure_skipped"]
    assert not wh.read("taxonomy_metrics").toPandas()["predictor"].str.endswith("+exposure").any()
    assert "No fit with exposure features: the exposure columns are NULL" in _page(wh)


def test_separation_of_a_perfect_and_a_useless_score():
    rows = pd.DataFrame({"model": "m", "revision": "r", "category": list(itertools.islice(
        itertools.cycle(CATEGORIES), 40)), "is_memorized": [i % 4 == 0 for i in range(40)]})
    rows["loss"] = np.where(rows["is_memorized"], 0.1, 2.0)  # lower for every memorized row
    rows["min_k_prob"] = 1.0  # constant
    got = score_separation(rows, bootstrap_rounds=20, ci_level=0.95, seed=0).set_index(["score", "category"])
    assert got.loc[("loss", ALL), "roc_auc"] == 1.0 and got.loc[("min_k_prob", ALL), "roc_auc"] == 0.5
