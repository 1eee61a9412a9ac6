"""Stages `combine`, `taxonomy` and `evidence`: join every feature table with the labels, sort sequences into
recitation / reconstruction / recollection, fit and test the taxonomic model (spec §3, §4), gather the evidence."""

from __future__ import annotations

import functools
import logging

import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from semmem.catalog import table
from semmem.errors import StageError
from semmem.features.exposure import STREAM_ORDER
from semmem.ingest.megatron import recorded_index
from semmem.scoring.models import checkpoint_step
from semmem.stages.registry import StageContext, stage
from semmem.tables import Warehouse
from semmem.taxonomy import (
    MODEL_FEATURES, TaxonomyResult, duplicate_threshold_kl, feature_correlations, fitted_revisions,
    partition_candidates, search_partitions, taxonomy_model, with_best_partition)
from semmem.taxonomy.combine import (
    FEATURE_TABLES, category_counts, combine, deduplicate, labels, taxonomy_contingency)
from semmem.taxonomy.evidence import SCORES, context_shares, exposure_medians, exposure_shares, score_separation
from semmem.taxonomy.stats import memorization_forecast
from semmem.taxonomy.vocabulary import EXPOSURE_FEATURES, FEATURE_SETS, GUESSABLE, guessable_column

log = logging.getLogger("semmem")
TAXONOMY_TABLES = ("taxonomy_metrics", "taxonomy_comparison", "taxonomy_weights", "feature_correlations",
                   "taxonomy_search", "duplicate_threshold_kl", "memorization_forecast")
EVIDENCE_TABLES = ("memorization_by_context", "memorization_exposure", "exposure_medians", "score_separation",
                   "memorization_examples")
EXPOSURE_FIT = "+exposure"  # the suffix of the predictors fitted with taxonomy.features=upstream+exposure


@stage("combine", inputs=("sequences",), outputs=("combined", "category_counts", "taxonomy_contingency"),
       config=("combine", "taxonomy.duplicate_threshold", "taxonomy.guess_rouge_threshold", "training.rows_per_step"),
       reads_also=("memorization", "published_memorization", "model_family", "sequence_exposures",
                   "family_exposures", "stream",
                   *FEATURE_TABLES))
def combine_stage(ctx: StageContext) -> None:
    """Every feature of every scored sequence, one row per model@revision, with its category -> combined; and its
    per-category counts -> category_counts, and how the two taxonomies split them -> taxonomy_contingency (one more
    pass each over a few of combined's columns)."""
    wh, cfg = ctx.warehouse, ctx.cfg
    sources = {name: wh.exists(name) for name in ("memorization", "published_memorization")}
    if not any(sources.values()):
        raise StageError("stage 'combine' needs memorization scores: run stage 'score' first (table memorization), "
                         "or ingest a sequences-parquet input with score columns (table published_memorization)")
    missing = [name for name in FEATURE_TABLES if not wh.exists(name)]
    if missing and not cfg.combine.allow_missing:
        raise StageError("stage 'combine' needs " + ", ".join(f"table {m!r} (run stage {FEATURE_TABLES[m]!r})"
                                                               for m in missing) +
                         "; or set combine.allow_missing=true to leave those columns NULL (the model then leaves "
                         "them out)")
    for name in missing:
        log.warning("combine: table %s is missing: its columns are NULL (run stage %r to fill them)", name,
                    FEATURE_TABLES[name])
    features: dict[str, DataFrame | None] = {}
    for name in FEATURE_TABLES:
        if name in missing:
            features[name] = None
            continue
        d = deduplicate(wh.read(name), ["sequence_id"])
        if d.removed:
            log.warning("combine: %d duplicate sequence_id row(s) removed from %s (the first by value kept)",
                        d.removed, name)
        features[name] = d.df
    label_rows = deduplicate(labels(*(wh.read(n) if ok else None for n, ok in sources.items())),
                             ["model", "revision", "sequence_id"])
    if label_rows.removed:
        log.warning("combine: %d duplicate (model, revision, sequence_id) label row(s) removed", label_rows.removed)
    sequences = deduplicate(wh.read("sequences").select("sequence_id", "pile_set_name"), ["sequence_id"])
    if sequences.removed:
        log.warning("combine: %d duplicate sequence_id row(s) removed from sequences", sequences.removed)
    reference = _reference_model(ctx, label_rows.df)
    exposures, checkpoints = _exposures(ctx, label_rows.df)
    out = combine(label_rows.df, sequences.df, features, cfg.taxonomy.duplicate_threshold, reference, exposures,
                  checkpoints, cfg.taxonomy.guess_rouge_threshold)
    meta = {"stage": "combine", "duplicate_threshold": cfg.taxonomy.duplicate_threshold, "missing": missing,
            "reference_model": "@".join(reference) if reference else None,
            "inputs": {n: wh.version(n) for n in ["sequences", *sources, *FEATURE_TABLES] if wh.exists(n)}}
    wh.write(out, "combined", mode="overwrite", metadata=meta)
    wh.write(category_counts(wh.read("combined")), "category_counts", mode="overwrite", metadata=meta)
    wh.write(taxonomy_contingency(wh.read("combined")), "taxonomy_contingency", mode="overwrite", metadata=meta)


def _exposures(ctx: StageContext, label_rows: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(exposures, checkpoints) for semmem.features.exposure.with_exposures: the occurrences per step of every
    training order (the stream's, from sequence_exposures; each family member's, from family_exposures) and, per
    scored model@revision, its step (`step<N>`) and order. A step is NULL, said once per reason, where the revision
    names none, where its order was not recorded, or where the stream's order would reach past the stream."""
    wh = ctx.warehouse
    parts, orders = [], set()
    if wh.exists("sequence_exposures"):
        parts.append(wh.read("sequence_exposures").select(F.lit(STREAM_ORDER).alias("order"), "*"))
        orders.add(STREAM_ORDER)
    else:
        log.warning("combine: no table sequence_exposures (run stage 'duplicates'): exposure in the stream's order "
                    "is NULL")
    if wh.exists("family_exposures"):
        fam = wh.read("family_exposures")
        parts.append(fam.select(F.col("model").alias("order"), "sequence_id", "step", "occurrences"))
        orders |= {r["model"] for r in fam.select("model").distinct().collect()}  # a row per member
    family = ({r["model"] for r in wh.read("model_family").select("model").distinct().collect()}  # a row per member
              if wh.exists("model_family") else set())
    pairs = label_rows.select("model", "revision").distinct().collect()  # one row per model@revision
    rows = [(m, r, checkpoint_step(r), m if m in family else STREAM_ORDER) for m, r in pairs]
    why: dict[str, list[str]] = {
        "the revision names no training step (step<N>)": [f"{m}@{r}" for m, r, s, _ in rows if s is None],
        "their training order was not recorded (train_model.force=true retrains the family and records it; for "
        "other models run stage 'duplicates')": [f"{m}@{r}" for m, r, s, o in rows if s is not None and
                                                 o not in orders]}
    per_step, stream_rows = ctx.cfg.training.rows_per_step, _stream_rows(wh)
    why[f"at training.rows_per_step={per_step} their steps reach past the {stream_rows} rows of the stream (the "
        "mapping does not match this stream)"] = [
        f"{m}@{r}" for m, r, s, o in rows if o == STREAM_ORDER and s is not None and stream_rows is not None and
        s * per_step > stream_rows]
    unknown = set()
    for reason, keys in why.items():
        if keys:
            log.warning("combine: the exposure columns of %s are NULL: %s", ", ".join(sorted(keys)), reason)
            unknown |= set(keys)
    rows = [(m, r, None if f"{m}@{r}" in unknown else s, o) for m, r, s, o in rows]
    checkpoints = ctx.spark.createDataFrame(rows, "model STRING, revision STRING, checkpoint_step BIGINT, "
                                                  "order STRING")
    empty = ctx.spark.createDataFrame([], "order STRING, sequence_id BIGINT, step BIGINT, occurrences BIGINT")
    return functools.reduce(DataFrame.unionByName, parts, empty), checkpoints


def _stream_rows(wh: Warehouse) -> int | None:
    """Rows of the training stream, from the Delta log or the megatron record (no data read); None when unknown."""
    if wh.exists("stream_sources"):
        return recorded_index(wh).num_rows
    if wh.exists("token_rows"):
        counts = [f.num_rows for f in wh.snapshot_files("token_rows")]
        return None if None in counts else sum(counts)
    return None


def _reference_model(ctx: StageContext, label_rows: DataFrame) -> tuple[str, str] | None:
    """The (model, revision) memorized_bits is measured against (combine.reference_model), checked to be scored."""
    ref, wh = ctx.cfg.combine.reference_model, ctx.warehouse
    if ref is None:
        return None
    if ref == "auto":
        if not wh.exists("model_family"):
            return None
        fam = wh.read("model_family")
        row = fam.orderBy("num_parameters", F.col("step").desc(), "model").select("model", "revision").first()
        if row is None:
            return None
        key = (row["model"], row["revision"])
    else:
        model, _, revision = ref.rpartition("@")
        key = (model or ref, revision if model else "main")
    scored = label_rows.where((F.col("model") == key[0]) & (F.col("revision") == key[1])).limit(1).count()
    if not scored:
        if ref == "auto":
            log.warning("combine: reference model %s@%s is not scored: memorized_bits is NULL", *key)
            return None
        raise StageError(f"combine.reference_model = {ref!r} has no rows in memorization; score it (add it to "
                         "model.names) or set combine.reference_model to a scored model@revision or null")
    log.info("combine: memorized_bits measured against %s@%s", *key)
    return key


@stage("taxonomy", inputs=("combined",), outputs=TAXONOMY_TABLES, config=("taxonomy",))
def taxonomy_stage(ctx: StageContext) -> None:
    """The baseline, taxonomic (per taxonomy.taxonomies) and trees models, partition search, correlations,
    divergence curve and forecasts, per model."""
    wh, t = ctx.warehouse, ctx.cfg.taxonomy
    combined = wh.read("combined")
    keys = _fitted_keys(combined, t.revisions)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TAXONOMY_TABLES}
    exposure_skipped: dict[str, str] = {}
    extra = EXPOSURE_FEATURES if t.features == "upstream+exposure" else ()
    source, read = combined, extra
    if "guess_recall" in t.taxonomies:  # the guess_recall predictor's groups, for every sequence
        source, read = combined.withColumn(GUESSABLE, guessable_column(t.guess_rouge_threshold)), (*extra, GUESSABLE)
    for model, revision in keys:
        rows = _model_rows(source, model, revision, t.max_rows, t.seed, read)
        labels = rows.is_memorized.dropna().astype(bool)
        memorized, other = int(labels.sum()), int((~labels).sum())
        log.info("taxonomy: %s@%s: %d rows (%d memorized)", model, revision, len(rows), memorized)
        frames["feature_correlations"].append(feature_correlations(rows, nl_threshold=t.nl_threshold,
                                                                   code_threshold=t.code_threshold, seed=t.seed))
        frames["duplicate_threshold_kl"].append(duplicate_threshold_kl(
            rows, duplicate_threshold=t.duplicate_threshold, kl_max_duplicates=t.kl_max_duplicates,
            kl_bootstrap_rounds=t.kl_bootstrap_rounds, kl_min_rows=t.kl_min_rows, js_bins=t.js_bins,
            upstream_protocol=t.upstream_protocol, seed=t.seed, ci_level=t.ci_level))
        if min(memorized, other) < t.min_memorized:
            log.warning("taxonomy: %s@%s: %d memorized and %d other rows, fewer than taxonomy.min_memorized = %d: "
                        "no fitted model or partition search (correlations and the divergence curve only)", model,
                        revision, memorized, other, t.min_memorized)
            continue
        result = taxonomy_model(rows, upstream_protocol=t.upstream_protocol, test_fraction=t.test_fraction,
                                validation_fraction=t.validation_fraction, seed=t.seed, max_rows=t.max_rows,
                                bootstrap_rounds=t.bootstrap_rounds, ci_level=t.ci_level, ece_bins=t.ece_bins,
                                taxonomies=t.taxonomies, trees=t.trees)
        sel = result.split.selection
        for pred in result.predictors.values():
            for fit in pred.fits.values() if pred.name != "baseline" else ():
                if fit.model is None:
                    log.warning("taxonomy: %s@%s: no %s model for %s (%s): its test rows are scored by the "
                                "baseline", model, revision, pred.name, fit.name, fit.reason)
        if sel.missing:
            log.warning("taxonomy: %s@%s: features %s are NULL everywhere and left out of the model", model,
                        revision, ", ".join(sel.missing))
        candidates = partition_candidates(result.split, search_features=t.search_features,
                                          search_quantiles=t.search_quantiles)
        search = search_partitions(ctx.spark, result.split, candidates, ece_bins=t.ece_bins,
                                   search_tasks=t.search_tasks, min_validation=t.search_min_validation)
        result = with_best_partition(result, search)
        frames["taxonomy_metrics"].append(result.metrics)
        frames["taxonomy_comparison"].append(result.comparison)
        frames["taxonomy_weights"].append(result.weights)
        frames["taxonomy_search"].append(search)
        if extra:
            fit = _exposure_fit(ctx, rows)
            if isinstance(fit, str):
                log.warning("taxonomy: %s@%s: no fit with exposure features: %s", model, revision, fit)
                exposure_skipped[f"{model}@{revision}"] = fit
            else:
                for name in ("taxonomy_metrics", "taxonomy_comparison", "taxonomy_weights"):
                    frames[name].append(fit[name])
    frames["memorization_forecast"].append(memorization_forecast(combined, ci_level=t.ci_level))
    meta = {"stage": "taxonomy", "combined_version": wh.version("combined"), "models": [f"{m}@{r}" for m, r in keys],
            "upstream_protocol": t.upstream_protocol, "seed": t.seed}
    if extra:  # the default's metadata stays as it was
        meta |= {"features": t.features, "exposure_skipped": exposure_skipped}
    _write_frames(ctx, {name: pd.concat(parts, ignore_index=True) if parts else
                        pd.DataFrame(columns=table(name).columns) for name, parts in frames.items()}, meta)


def _fitted_keys(combined: DataFrame, revisions: str) -> list[tuple[str, str]]:
    """The (model, revision) pairs of `combined` the taxonomy fits (taxonomy.revisions), in order; one row per
    model@revision reaches the driver."""
    pairs = combined.select("model", "revision").distinct().orderBy("model", "revision").collect()
    return fitted_revisions([(r["model"], r["revision"]) for r in pairs], revisions)


def _exposure_fit(ctx: StageContext, rows: pd.DataFrame) -> dict[str, pd.DataFrame] | str:
    """taxonomy_metrics / _comparison / _weights rows of the baseline and taxonomic models refitted with
    FEATURE_SETS["upstream+exposure"] (predictors renamed <name>+exposure, compared with baseline+exposure), or why
    there is no such fit. Rows without a value of an exposure feature (never seen: no recency) are left out."""
    t = ctx.cfg.taxonomy
    if rows["exposures_before"].isna().all():
        return ("the exposure columns are NULL (the revision names no training step, or its training order was not "
                "recorded: see stage combine's log)")
    usable = rows[rows[list(EXPOSURE_FEATURES)].notna().all(axis=1)]
    memorized = int(usable.is_memorized.dropna().astype(bool).sum())
    if min(memorized, int(usable.is_memorized.notna().sum()) - memorized) < t.min_memorized:
        return (f"{memorized} memorized rows with exposure values, or as few other ones: fewer than "
                f"taxonomy.min_memorized = {t.min_memorized}")
    result: TaxonomyResult = taxonomy_model(
        rows, upstream_protocol=t.upstream_protocol, test_fraction=t.test_fraction,
        validation_fraction=t.validation_fraction, seed=t.seed, max_rows=t.max_rows,
        bootstrap_rounds=t.bootstrap_rounds, ci_level=t.ci_level, ece_bins=t.ece_bins,
        features=FEATURE_SETS["upstream+exposure"])
    renamed = {"taxonomy_metrics": result.metrics, "taxonomy_comparison": result.comparison,
               "taxonomy_weights": result.weights}
    for frame in renamed.values():
        for col in ("predictor", "reference"):
            if col in frame:
                frame[col] = frame[col] + EXPOSURE_FIT
    return renamed


def _model_rows(combined: DataFrame, model: str, revision: str, max_rows: int | None, seed: int,
                extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The combined rows of one model@revision on the driver: the columns the statistics read (and `extra`), and
    at most about max_rows of them (a seeded Bernoulli sample in Spark, so the driver never holds more than the
    cap). The evidence stage draws its sample of the scores the same way."""
    df = combined.where((F.col("model") == model) & (F.col("revision") == revision))
    columns = ["model", "revision", "sequence_id", "is_memorized", "memorization_score", "category", "nl_score",
               "is_incrementing", "is_repeating", *[c for c in MODEL_FEATURES if c not in ("is_templating",)],
               "is_templating", *extra]
    df = df.select(*dict.fromkeys(columns))
    if max_rows is not None:
        n = df.count()
        if n > max_rows:
            df = df.sample(fraction=min(1.0, 1.02 * max_rows / n), seed=seed)
    return df.toPandas()


@stage("evidence", inputs=("combined", "memorization"), outputs=EVIDENCE_TABLES,
       reads_also=("sequences", "sequence_occurrences"),
       config=("report.examples_per_category", *(f"taxonomy.{k}" for k in ("revisions", "max_rows", "seed",
                                                                          "bootstrap_rounds", "ci_level"))))
def evidence_stage(ctx: StageContext) -> None:
    """The evidence: memorization vs context length, exposure and recency; how well each score separates it; cards."""
    wh, t = ctx.warehouse, ctx.cfg.taxonomy
    combined, scores = wh.read("combined"), wh.read("memorization")
    frames = {"memorization_by_context": context_shares(scores, combined, t.ci_level),
              "memorization_exposure": exposure_shares(combined, t.ci_level),
              "exposure_medians": exposure_medians(combined, t.ci_level)}
    keys = _fitted_keys(combined, t.revisions)
    membership = [c for c in SCORES if c not in combined.columns]  # in memorization only; memorized_bits: combined
    scored = combined.join(scores.select("model", "revision", "sequence_id", *membership),
                           ["model", "revision", "sequence_id"], "left")
    separation = []
    for model, revision in keys:
        rows = _model_rows(scored, model, revision, t.max_rows, t.seed, tuple(SCORES))
        separation.append(score_separation(rows, bootstrap_rounds=t.bootstrap_rounds, ci_level=t.ci_level,
                                           seed=t.seed))
    frames["score_separation"] = pd.concat(separation, ignore_index=True) if separation else \
        pd.DataFrame(columns=table("score_separation").columns)
    frames["memorization_examples"] = _cards(ctx, combined, keys)
    meta = {"stage": "evidence", "combined_version": wh.version("combined"), "models": [f"{m}@{r}" for m, r in keys],
            "seed": t.seed}
    _write_frames(ctx, frames, meta)


def _cards(ctx: StageContext, combined: DataFrame, keys: list[tuple[str, str]]) -> pd.DataFrame:
    """memorization_examples rows: the memorized among the report's examples of each fitted model@revision, with
    their exposure and up to 10 distinct documents where they occur (earliest first)."""
    wh = ctx.warehouse
    sequences, occurrences = wh.read("sequences"), wh.exists("sequence_occurrences")
    if not keys:
        return pd.DataFrame(columns=table("memorization_examples").columns)
    fitted = ctx.spark.createDataFrame(keys, "model STRING, revision STRING")
    shown = examples(combined.join(F.broadcast(fitted), ["model", "revision"]), sequences,
                     ctx.cfg.report.examples_per_category,
                     extra=("exposures_before", "first_seen_step", "last_seen_step"))
    cards = shown[shown["is_memorized"].fillna(False).astype(bool)].copy()
    cards["documents"] = None
    if len(cards) and occurrences:
        ids = sorted({int(i) for i in cards["sequence_id"]})  # at most models x 3 x examples_per_category
        first = (wh.read("sequence_occurrences").where(F.col("sequence_id").isin(ids) & F.col("document").isNotNull())
                 .groupBy("sequence_id", "document").agg(F.min("rank").alias("first_rank")))
        order = F.row_number().over(Window.partitionBy("sequence_id").orderBy("first_rank", "document"))
        docs = first.withColumn("_n", order).where(F.col("_n") <= 10).toPandas()
        lists = {i: g.sort_values("_n")["document"].tolist() for i, g in docs.groupby("sequence_id")}
        cards["documents"] = [lists.get(int(i), []) for i in cards["sequence_id"]]
    return cards


def _write_frames(ctx: StageContext, frames: dict[str, pd.DataFrame], meta: dict) -> None:
    """Each bounded frame as its catalog table (an empty frame: an empty table)."""
    for name, pdf in frames.items():
        df = ctx.spark.createDataFrame(pdf[table(name).columns], schema=table(name).spark_schema) if len(pdf) else \
            ctx.spark.createDataFrame([], table(name).spark_schema)
        ctx.warehouse.write(df, name, mode="overwrite", metadata=meta)


def examples(combined: DataFrame, sequences: DataFrame, per_category: int, extra: tuple[str, ...] = ()
              ) -> pd.DataFrame:
    """A few sequences per model and category, memorized ones first (then by sequence_id), with their text (and the
    `extra` columns of combined): the report's examples, and the evidence's cards among them."""
    rank = F.row_number().over(Window.partitionBy("model", "revision", "category")
                               .orderBy(F.col("is_memorized").desc_nulls_last(), "sequence_id"))
    cols = ["model", "revision", "category", "sequence_id", "is_memorized", "sequence_duplicates",
            "generation_perplexity", "semantic_matches_0_8", "textual_matches_0_8", "nl_score", *extra]
    picked = (combined.select(*[c for c in cols if c in combined.columns]).withColumn("_rank", rank)
              .where(F.col("_rank") <= per_category).drop("_rank"))
    return picked.join(sequences.select("sequence_id", "text"), "sequence_id", "left").toPandas()
