"""Stages combine, taxonomy and report: the joins against a pandas reference, clear errors for missing inputs, the
taxonomy tables on synthetic rows with planted coefficients, the summary from the tables, and the report as a person
sees it (headless Chromium: every image loaded, no console errors)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semmem.catalog import table
from semmem.config import load_config, with_overrides
from semmem.errors import StageError
from semmem.stages.registry import StageContext, run_stages
from semmem.summary import summary_text
from semmem.tables import Warehouse
from semmem.taxonomy.combine import category_counts
from tests.synthetic import synthetic_combined
from tests.conftest import TEST_OVERRIDES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _ctx(spark, root: Path, *overrides: str) -> StageContext:
    cfg = load_config(None, [*TEST_OVERRIDES, f"warehouse={root}", *overrides])
    return StageContext(spark, cfg, Warehouse(spark, root))


def _write(wh: Warehouse, name: str, rows: list[dict]) -> None:
    tdef = table(name).with_columns_of(list(rows[0]))
    pdf = pd.DataFrame(rows)
    wh.write(wh.spark.createDataFrame(pdf[[c for c in tdef.columns if c in pdf]]), name, mode="overwrite")


def small_feature_tables(wh: Warehouse) -> None:
    """Five sequences, two models, every feature table; sequence 3 repeated in templating (two different rows)."""
    ids = [1, 2, 3, 4, 5]
    _write(wh, "sequences", [{"sequence_id": i, "tokens": [0] * 64, "text": f"text {i}", "prompt_text": f"p {i}",
                              "pile_set_name": "Github" if i % 2 else "Pile-CC"} for i in ids])
    mem = [{"model": m, "revision": "local", "sequence_id": i, "memorization_score": s, "is_memorized": s == 1.0,
            "matched_prefix": 32 if s == 1.0 else 3, "prompt_perplexity": 10.0 + i, "generation_perplexity": 1.0 + i,
            "sequence_perplexity": 20.0 + i, "continuation_nll_bits": 30.0 + i, "loss": 1.0 + i,
            "min_k_prob": -2.0 - i, "min_k_plus_plus": -1.0 - i, "memorized_at": {32: s == 1.0}, "zlib_ratio": 0.1}
           for m, scores in (("a", [1, 0.5, 1, 0, 1]), ("b", [1, 0, 0, 0, 0.25]))
           for i, s in zip(ids, scores)]
    _write(wh, "memorization", mem)
    _write(wh, "sequence_duplicates", [{"sequence_id": i, "sequence_duplicates": d}
                                       for i, d in zip(ids, [9, 1, 6, 5, 2])])
    _write(wh, "token_frequency_stats", [{"sequence_id": i, "max_frequency": 100 * i, "min_frequency": i,
                                          "avg_frequency": 10.0 * i, "median_frequency": 5.0 * i,
                                          "p25_frequency": 2 * i, "p75_frequency": 7 * i, "frequencies": [i] * 64}
                                         for i in ids])
    _write(wh, "templating", [{"sequence_id": i, "is_incrementing": i == 4, "is_repeating": False,
                               "is_templating": i == 4} for i in ids] +
           [{"sequence_id": 3, "is_incrementing": True, "is_repeating": False, "is_templating": True}])
    _write(wh, "prefix_suffix_rouge", [{"sequence_id": i, "prefix_suffix_rouge_l": rl, "prefix_suffix_rouge_3": r3}
                                       for i, rl, r3 in zip(ids, [0.6, 0.0, 0.1, 0.9, 0.2], [0.0, 0.0, 0.1, 0.0, 0.5])])
    _write(wh, "huffman", [{"sequence_id": i, "huffman_coding_length": 4.0 + i / 10,
                            "huffman_code_length_true": 3.9 + i / 10} for i in ids])
    _write(wh, "semantic_matches", [{"sequence_id": i, "semantic_matches_0_8": i, "semantic_matches_0_9": 1}
                                    for i in ids])
    _write(wh, "textual_matches", [{"sequence_id": i, "textual_matches_0_8": i - 1, "textual_matches_0_9": 0}
                                   for i in ids])
    _write(wh, "code_scores", [{"sequence_id": i, "nl_score": i / 10, "is_code": i / 10 <= 0.4} for i in ids])


def test_combine_joins_every_feature_and_applies_the_taxonomy(spark, tmp_path, caplog):
    ctx = _ctx(spark, tmp_path / "wh")
    small_feature_tables(ctx.warehouse)
    with caplog.at_level(logging.WARNING, logger="semmem"):
        run_stages(ctx, ["combine"])
    assert "1 duplicate sequence_id row(s) removed from templating" in caplog.text
    got = ctx.warehouse.read("combined").toPandas().set_index(["model", "sequence_id"]).sort_index()
    assert len(got) == 10
    # spec §3: recitation if duplicates > 5, else reconstruction if templating, else recollection.
    # Sequence 3's two templating rows: the one sorting first on its values (is_incrementing False) is kept.
    want = {1: "recitation", 2: "recollection", 3: "recitation", 4: "reconstruction", 5: "recollection"}
    assert got.loc["a"]["category"].to_dict() == want
    assert not got.loc[("a", 3), "is_templating"]
    row = got.loc[("b", 5)]
    assert (row.memorization_score, row.is_memorized, row.sequence_duplicates, row.max_frequency, row.nl_score,
            row.textual_matches_0_8, row.semantic_matches_0_8, row.pile_set_name) == \
        (0.25, False, 2, 500, 0.5, 4, 5, "Github")
    assert got.loc["a"]["is_memorized"].tolist() == [True, False, True, False, True]
    assert ctx.warehouse.commit_metadata("combined")["duplicate_threshold"] == 5
    # category_counts: the per-category counts, by hand from the rows above (NULL labels: sequences, not memorized)
    counts = ctx.warehouse.read("category_counts").toPandas()
    want_counts = {(m, c): (int(len(g)), int(g.is_memorized.fillna(False).astype(bool).sum()))
                   for (m, c), g in got.reset_index().groupby(["model", "category"], dropna=False)}
    assert {(r.model, r.category): (r.sequences, r.memorized) for r in counts.itertuples()} == want_counts
    # Guess / Recall (beyond.md §4): memorized and ROUGE-L or ROUGE-3 >= 0.5 (or repeating, incrementing): guess
    assert got.loc["a"]["category_guess_recall"].to_dict() == {1: "guess", 2: "not_memorized", 3: "recall",
                                                              4: "not_memorized", 5: "guess"}
    assert got.loc["b"]["category_guess_recall"].tolist() == ["guess"] + ["not_memorized"] * 4
    pairs = ctx.warehouse.read("taxonomy_contingency").toPandas()
    want_pairs = {k: int(len(g)) for k, g in got.reset_index().groupby(["model", "category", "category_guess_recall"])}
    assert {(r.model, r.category, r.category_guess_recall): r.sequences for r in pairs.itertuples()} == want_pairs


def test_combine_exposure_columns_equal_a_hand_count(spark, tmp_path, caplog):
    ctx = _ctx(spark, tmp_path / "wh", "training.rows_per_step=4")
    small_feature_tables(ctx.warehouse)
    _write(ctx.warehouse, "token_rows", [{"row_id": i, "tokens": [0] * 64} for i in range(20)])  # steps 0..4
    label = {"memorization_score": 0.0, "is_memorized": False, "matched_prefix": 0, "prompt_perplexity": 1.0,
             "generation_perplexity": 1.0, "sequence_perplexity": 1.0, "continuation_nll_bits": 1.0, "loss": 1.0,
             "min_k_prob": -1.0, "min_k_plus_plus": -1.0, "memorized_at": {32: False}, "zlib_ratio": 0.1}
    # c, e: trained-family members, e's order recorded; d@step6 would have trained on 24 rows of a 20-row stream
    scored = [("a", "step3"), ("a", "step5"), ("b", "local"), ("c", "step5"), ("d", "step6"), ("e", "step3")]
    _write(ctx.warehouse, "memorization", [{"model": m, "revision": r, "sequence_id": i, **label}
                                           for m, r in scored for i in (1, 2, 3)])
    _write(ctx.warehouse, "model_family", [{"model": m, "revision": r, "size": "s", "num_parameters": 1,
                                            "hidden_size": 8, "num_layers": 1, "num_heads": 1, "step": int(r[4:]),
                                            "steps": 5, "fraction": 1.0, "tokens_seen": 1, "loss": 1.0,
                                            "seconds": 1.0} for m, r in (("c", "step5"), ("e", "step3"))])
    _write(ctx.warehouse, "family_exposures", [{"model": "e", "sequence_id": 1, "step": s, "occurrences": n}
                                               for s, n in ((1, 2), (3, 1))])  # e trained sequence 1 at steps 1, 3
    # sequence 1 occurs twice at step 0, once at step 2, three times at step 4; sequence 2 once at step 5; 3 never
    _write(ctx.warehouse, "sequence_exposures", [{"sequence_id": i, "step": s, "occurrences": n}
                                                 for i, s, n in ((1, 0, 2), (1, 2, 1), (1, 4, 3), (2, 5, 1))])
    with caplog.at_level(logging.WARNING, logger="semmem"):
        run_stages(ctx, ["combine"])
    assert "exposure columns of c@step5 are NULL: their training order was not recorded" in caplog.text
    assert "exposure columns of b@local are NULL: the revision names no training step" in caplog.text
    assert "exposure columns of d@step6 are NULL: at training.rows_per_step=4 their steps reach past the 20 rows" \
        in caplog.text
    cols = ["exposures_before", "first_seen_step", "last_seen_step", "steps_since_last_exposure",
            "seen_by_checkpoint"]
    got = {(r["model"], r["revision"], r["sequence_id"]): tuple(r[c] for c in cols)
           for r in ctx.warehouse.read("combined").collect()}
    never = (0, None, None, None, False)
    unknown = (None,) * 5
    assert got == {("a", "step3", 1): (3, 0, 2, 1, True), ("a", "step3", 2): never, ("a", "step3", 3): never,
                   ("a", "step5", 1): (6, 0, 4, 1, True), ("a", "step5", 2): never, ("a", "step5", 3): never,
                   ("e", "step3", 1): (2, 1, 1, 2, True), ("e", "step3", 2): never, ("e", "step3", 3): never,
                   **{(m, r, i): unknown for m, r in (("b", "local"), ("c", "step5"), ("d", "step6"))
                      for i in (1, 2, 3)}}


def test_combine_names_the_stage_of_a_missing_table(spark, tmp_path, caplog):
    ctx = _ctx(spark, tmp_path / "wh")
    small_feature_tables(ctx.warehouse)
    shutil.rmtree(ctx.warehouse.path("code_scores"))
    with pytest.raises(StageError, match="table 'code_scores' \\(run stage 'code'\\)"):
        run_stages(ctx, ["combine"])
    ctx = StageContext(spark, with_overrides(ctx.cfg, ["combine.allow_missing=true"]), ctx.warehouse)
    with caplog.at_level(logging.WARNING, logger="semmem"):
        run_stages(ctx, ["combine"])
    assert "table code_scores is missing" in caplog.text
    got = ctx.warehouse.read("combined").toPandas()
    assert got["nl_score"].isna().all() and got["sequence_duplicates"].notna().all()


def test_combine_needs_scores(spark, tmp_path):
    ctx = _ctx(spark, tmp_path / "wh")
    small_feature_tables(ctx.warehouse)
    shutil.rmtree(ctx.warehouse.path("memorization"))
    with pytest.raises(StageError, match="run stage 'score' first"):
        run_stages(ctx, ["combine"])


# ------------------------------------------------------------------------------------------------------ taxonomy
@pytest.fixture(scope="module")
def answered(spark, tmp_path_factory):
    """A warehouse whose combined table holds synthetic rows of two models, after stages taxonomy and report."""
    root = tmp_path_factory.mktemp("answer") / "wh"
    ctx = _ctx(spark, root, "taxonomy.bootstrap_rounds=30", "taxonomy.kl_bootstrap_rounds=30",
               "taxonomy.search_features=[sequence_duplicates,generation_perplexity,huffman_coding_length]")
    frames = []
    for model, seed in (("big", 1), ("small", 2)):
        df = synthetic_combined(1500, seed=seed, model=model, revision="step100")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    # "small" memorizes a subset of what "big" memorizes, so forecasting has something to find.
    big = df[df.model == "big"].set_index("sequence_id")["is_memorized"]
    small = df.model == "small"
    df.loc[small, "is_memorized"] = df.loc[small, "is_memorized"].to_numpy() & big.loc[
        df.loc[small, "sequence_id"]].to_numpy()
    # the evidence: exposure rising with memorization, scores that separate it, graded labels, occurrences
    rng = np.random.default_rng(3)
    memorized = df["is_memorized"].to_numpy(dtype=bool)
    df["exposures_before"] = 1 + rng.poisson(2.0, len(df)) + memorized * rng.poisson(5.0, len(df))
    df["steps_since_last_exposure"] = rng.integers(1, 100, len(df))
    df["first_seen_step"], df["last_seen_step"] = 3, 100 - df["steps_since_last_exposure"]
    df["memorized_bits"] = np.where(memorized, rng.exponential(20.0, len(df)), rng.exponential(5.0, len(df)))
    rouge = np.random.default_rng(4)  # the guess_recall predictor's groups: some guessable sequences, none unknown
    df["prefix_suffix_rouge_l"], df["prefix_suffix_rouge_3"] = rouge.uniform(0, 0.7, (2, len(df)))
    tdef = table("combined")
    for f in tdef.schema:
        if f.name not in df:
            df[f.name] = None
    sdf = spark.createDataFrame(df[tdef.columns], tdef.spark_schema)
    ctx.warehouse.write(sdf, "combined", mode="overwrite")
    ctx.warehouse.write(category_counts(sdf), "category_counts", mode="overwrite")
    seqs = df[df.model == "big"][["sequence_id"]].assign(tokens=[[0] * 64] * 1500, text="an example text",
                                                         prompt_text="an", pile_set_name=None)
    ctx.warehouse.write(spark.createDataFrame(seqs[table("sequences").columns], table("sequences").spark_schema),
                        "sequences", mode="overwrite")
    loss = np.where(memorized, rng.gamma(2.0, 0.3, len(df)), rng.gamma(2.0, 1.0, len(df)))
    scores = df[["model", "revision", "sequence_id"]].assign(
        loss=loss, min_k_prob=-2 * loss + rng.normal(0, 0.5, len(df)), min_k_plus_plus=rng.normal(0, 1, len(df)),
        zlib_ratio=loss / 40.0, memorized_at=[{8: bool(m and i % 3 == 0), 16: bool(m and i % 3 < 2), 32: bool(m)}
                                              for i, m in enumerate(memorized)])
    mdef = table("memorization")
    for f in mdef.schema:
        if f.name not in scores:
            scores[f.name] = None
    ctx.warehouse.write(spark.createDataFrame(scores[mdef.columns], mdef.spark_schema), "memorization",
                        mode="overwrite")
    ids = df[(df.model == "big") & df.is_memorized].sequence_id.head(40).tolist()
    occurrences = pd.DataFrame([{"sequence_id": i, "rank": k, "row_id": i, "offset": 32, "step": k,
                                 "document": f"shard.jsonl:{i * 10 + k}", "source": None}
                                for i in ids for k in range(1, 4)])
    odef = table("sequence_occurrences")
    ctx.warehouse.write(spark.createDataFrame(occurrences[odef.columns], odef.spark_schema), "sequence_occurrences",
                        mode="overwrite")
    run_stages(ctx, ["taxonomy", "evidence", "report"])
    return ctx, df


def test_taxonomy_tables_per_model(answered):
    ctx, df = answered
    wh = ctx.warehouse
    metrics = wh.read("taxonomy_metrics").toPandas()
    assert set(zip(metrics.model, metrics.revision)) == {("big", "step100"), ("small", "step100")}
    predictors = {"baseline", "taxonomic", "guess_recall", "trees", "best_partition"}  # taxonomy.taxonomies, .trees
    assert set(metrics.predictor) == predictors
    f1 = metrics[(metrics.metric == "f1") & (metrics.subset == "aggregate")]
    assert ((f1.ci_low <= f1.value) & (f1.value <= f1.ci_high)).all()
    comparison = wh.read("taxonomy_comparison").toPandas()
    assert set(comparison.predictor) == predictors - {"baseline"} and set(comparison.reference) == {"baseline"}
    assert comparison.ci_low.notna().all() and comparison.ci_high.notna().all()
    weights = wh.read("taxonomy_weights").toPandas()
    rec = weights[(weights.model == "big") & (weights.subset == "recollection") & (weights.status == "fitted")]
    coef = rec.set_index("feature")["coefficient"]
    assert coef["generation_perplexity"] < 0 and coef["prompt_perplexity"] > 0  # the planted signs
    # guess / recall groups every training row (memorized or not; no value missing here); trees have no weights
    n = weights[(weights.feature == "intercept") & (weights.status == "fitted")].groupby(
        ["model", "predictor", "subset"])["n_rows"].first()
    for model in ("big", "small"):
        assert n[model, "guess_recall", "guess"] + n[model, "guess_recall", "recall"] == \
            n[model, "baseline", "aggregate"]
    assert "trees" not in set(weights.predictor)
    search = wh.read("taxonomy_search").toPandas()
    assert len(search) == 2 * 3 * 3 * 2 * 3  # per model: 3 features x 3 quantiles, ordered pairs of features
    assert (search.groupby("model")["rank"].min() == 1).all()
    assert len(wh.read("feature_correlations").toPandas()) > 0
    assert wh.read("duplicate_threshold_kl").count() > 0


def test_forecast_between_the_two_models(answered):
    ctx, df = answered
    fc = ctx.warehouse.read("memorization_forecast").toPandas().set_index(["model_a", "model_b"])
    small = set(df[(df.model == "small") & df.is_memorized].sequence_id)
    big = set(df[(df.model == "big") & df.is_memorized].sequence_id)
    row = fc.loc[("small", "big")]
    assert (row.n_memorized_a, row.n_memorized_b, row.n_memorized_both) == (len(small), len(big), len(small & big))
    assert row.precision == 1.0 and row.recall == pytest.approx(len(small) / len(big))


def test_summary_reads_the_tables(answered):
    ctx, df = answered
    text = summary_text(ctx.warehouse.root)
    n_big = int(df[df.model == "big"].is_memorized.sum())
    assert f"big@step100: 1,500 sequences, {n_big:,} memorized" in text
    for c in ("recitation", "reconstruction", "recollection", "baseline", "taxonomic", "F1", "PR-AUC"):
        assert c in text
    for predictor in ("guess_recall", "trees"):  # side by side, with intervals, and each one's paired difference
        assert text.count(f"    {predictor:<15} F1 ") == 2 and text.count(f"{predictor} minus baseline on") == 2
        assert all("[" in line for line in text.splitlines() if line.startswith(f"    {predictor:<15} F1 "))
    # the evidence, from memorization_by_context and exposure_medians, for each final model
    assert text.count("memorized from the last k prompt tokens (k = 8, 16, 32)") == 2
    m = float(np.median(df[(df.model == "big") & df.is_memorized].exposures_before))
    assert f"median exposures before the checkpoint: memorized {m:g} [" in text
    assert text.count("median steps since the last exposure: memorized") == 2
    assert str(Path(ctx.warehouse.root) / "report" / "index.html") in text


def test_summary_command(answered, capsys):
    from semmem.cli import main

    ctx, _ = answered
    assert main(["summary", "--warehouse", str(ctx.warehouse.root)]) == 0
    assert capsys.readouterr().out.startswith("What the model memorized")
    assert main(["summary", "--warehouse", str(Path(ctx.warehouse.root) / "nothing")]) == 1


def test_report_files(answered):
    ctx, _ = answered
    folder = Path(ctx.warehouse.root) / "report"
    page = (folder / "index.html").read_text()
    pngs = sorted(p.name for p in folder.glob("*.png"))
    for kind in ("categories", "metrics", "weights", "correlations", "kl", "context", "exposure", "separation"):
        assert f"{kind}_big_step100.png" in pngs and f"{kind}_small_step100.png" in pngs
    assert "forecast.png" in pngs
    assert page.count("<img ") == len(pngs)
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    for heading in ("Memorization vs context length", "Memorization vs exposure and recency",
                    "How well each score separates memorized from other sequences", "Memorized examples"):
        assert page.count(heading) == 2  # a section per model
    assert "shard.jsonl:" in page and "With and without exposure features" not in page  # features=upstream
    for predictor in ("guess_recall", "trees"):  # in the metrics table, the figure's legend and the comparison
        assert page.count(f"{predictor} minus baseline on") == 2 and page.count(f"{predictor}: ") == 2


def test_evidence_tables(answered):
    ctx, df = answered
    wh = ctx.warehouse
    big = df[df.model == "big"]
    seps = wh.read("score_separation").toPandas().set_index(["model", "score", "category"])
    for score in ("loss", "zlib_ratio", "min_k_prob", "memorized_bits"):  # planted to separate
        r = seps.loc[("big", score, "all")]
        assert r.ci_low <= r.roc_auc <= r.ci_high and r.roc_auc > 0.7 and r.n_rows == 1500
    by_context = wh.read("memorization_by_context").toPandas().set_index(["model", "category", "context_length"])
    assert by_context.loc[("big", "all", 32), "memorized"] == int(big.is_memorized.sum())
    assert by_context.loc[("big", "all", 8), "share"] <= by_context.loc[("big", "all", 32), "share"]
    medians = wh.read("exposure_medians").toPandas().set_index(["model", "category", "memorized", "measure"])
    assert medians.loc[("big", "all", True, "exposures_before"), "median"] == \
        float(np.median(big[big.is_memorized].exposures_before))
    cards = wh.read("memorization_examples").toPandas()
    assert len(cards) and cards.text.notna().all() and set(cards.model) == {"big", "small"}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium; .ci/run "
                                              "installs it): the report is not checked in a browser")
def test_report_renders_in_headless_chromium(answered, tmp_path):
    from playwright.sync_api import sync_playwright

    ctx, _ = answered
    page_path = Path(ctx.warehouse.root) / "report" / "index.html"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri(), wait_until="load")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        title = page.title()
        browser.close()
    assert errors == []
    assert len(images) >= 11 and all(done and width > 0 for done, width in images)
    assert "memorized" in title and shot.stat().st_size > 50_000
    assert np.all([w > 200 for _, w in images])


def test_fitted_revisions_keeps_each_models_last_step():
    from semmem.taxonomy import fitted_revisions

    keys = [("a", "step10"), ("a", "step9"), ("a", "main"), ("b", "step3"), ("c", "published")]
    assert fitted_revisions(keys, "final") == [("a", "step10"), ("a", "main"), ("b", "step3"), ("c", "published")]
    assert fitted_revisions(keys, "all") == keys


def test_too_few_memorized_rows_get_no_fit(spark, tmp_path, caplog):
    """A model@revision with fewer memorized rows than taxonomy.min_memorized: correlations and the KL curve, no
    fitted model or search; the log, the summary and the report say so."""
    ctx = _ctx(spark, tmp_path / "wh", "taxonomy.bootstrap_rounds=5", "taxonomy.kl_bootstrap_rounds=5")
    df = synthetic_combined(400, seed=3, model="rare", revision="step5")
    df["is_memorized"] = df.sequence_id.isin(df.sequence_id.head(4))  # 4 < 10
    tdef = table("combined")
    for f in tdef.schema:
        if f.name not in df:
            df[f.name] = None
    combined = spark.createDataFrame(df[tdef.columns], tdef.spark_schema)
    ctx.warehouse.write(combined, "combined", mode="overwrite")
    ctx.warehouse.write(category_counts(combined), "category_counts", mode="overwrite")
    seqs = df[["sequence_id"]].assign(tokens=[[0] * 64] * len(df), text="a text", prompt_text="a", pile_set_name=None)
    ctx.warehouse.write(spark.createDataFrame(seqs[table("sequences").columns], table("sequences").spark_schema),
                        "sequences", mode="overwrite")
    with caplog.at_level(logging.WARNING, logger="semmem"):
        run_stages(ctx, ["taxonomy", "report"])
    assert "4 memorized and 396 other rows, fewer than taxonomy.min_memorized = 10" in caplog.text
    wh = ctx.warehouse
    assert wh.read("taxonomy_metrics").count() == 0 and wh.read("taxonomy_search").count() == 0
    assert wh.read("feature_correlations").count() > 0
    assert "rare@step5: 400 sequences, 4 memorized" in summary_text(wh.root)
    assert "no taxonomic model" in summary_text(wh.root)
    assert "No taxonomic model for rare@step5 (4 memorized)" in (Path(wh.root) / "report" / "index.html").read_text()
