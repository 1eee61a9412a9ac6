"""Stages `embed`, `semantic`, `textual`: sentence embeddings and the exact near-match counts built on them."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.catalog import threshold_column
from semmem.features import semantic as sem
from semmem.features import textual as txt
from semmem.features.embeddings import embed_sequences
from semmem.features.ivf import default_nlist, run_ivf, train_centroids
from semmem.features.allpairs import PairFn, check_embeddings, grid_frame, items_of, match_counts, plan_blocks, \
    run_grid
from semmem.model_sources import resolve_embedding_model
from semmem.progress import progress
from semmem.scratch_reads import read_block
from semmem.spark import spread_partitions
from semmem.stages.chunks import chunks_of, write_in_chunks
from semmem.stages.registry import StageContext, stage
from semmem.tables import Scratch

log = logging.getLogger("semmem")


def _embedding_model(ctx: StageContext) -> dict[str, str]:
    e = ctx.cfg.embed
    return {"embedding model": resolve_embedding_model(e.model, e.revision).version}


@stage("embed", inputs=("sequences",), outputs=("embeddings",), config=("embed",), artifacts=_embedding_model)
def embed(ctx: StageContext) -> None:
    """Sentence embedding of every sequence's text (embed.model, L2-normalized) -> embeddings."""
    e = ctx.cfg.embed
    model = resolve_embedding_model(e.model, e.revision)  # on the driver: a clear error before executors load it
    log.info("embed: %s (%s) from %s", e.model, model.version, model.path)
    texts = ctx.spark.sparkContext.accumulator(0)
    partitions = spread_partitions(ctx.spark)
    meta = {"stage": "embed", "model": e.model, "revision": e.revision, "model_version": model.version,
            "engine": e.engine, "sequences_version": ctx.warehouse.version("sequences")}

    if e.engine == "spark-nlp":
        from semmem.artifacts import cache_dir
        from semmem.features.embeddings_sparknlp import embed_sequences_sparknlp, exported, load_annotator

        export = exported(model.path, model.version, cache_dir())
        log.info("embed: spark-nlp's E5Embeddings over the ONNX export %s", export)
        annotator = load_annotator(ctx.spark, export)
        meta |= {"dtype": "float32", "normalization": "L2 in float32 (spark-nlp)"}

        def embed_chunk(sequences: DataFrame) -> DataFrame:
            return embed_sequences_sparknlp(sequences, annotator, partitions)
    else:
        meta |= {"dtype": e.dtype, "normalization": "L2 in float64, stored as float32"}

        def embed_chunk(sequences: DataFrame) -> DataFrame:
            return embed_sequences(sequences, e.model, e.revision, batch_size=e.batch_size, dtype=e.dtype,
                                   device=e.device, counter=texts, partitions=partitions)

    with progress(ctx.spark, "embed", rows=texts, unit="distinct texts"):
        with chunks_of(ctx, ctx.warehouse.read("sequences").select("sequence_id", "text"),
                       rows_per_commit=e.rows_per_commit, by="text") as chunks:  # a text in one chunk: embedded once
            write_in_chunks(ctx, chunks, "embeddings", embed_chunk, label="embed", metadata=meta)


def _thresholds(ctx: StageContext) -> list[float]:
    t = ctx.cfg.semantic.thresholds  # distinct, in (0, 1]: checked when the config was loaded
    for x in t:
        threshold_column("", x)  # a plain number that names a column
    return sorted(t)


def _grid_metadata(ctx: StageContext, stage_name: str) -> dict:
    s = ctx.cfg.semantic
    return {"stage": stage_name, "thresholds": _thresholds(ctx), "mode": s.mode, "kernel": s.kernel, "nlist": s.nlist,
            "nprobe": s.nprobe, "seed": s.seed, "kmeans_max_sample": s.kmeans_max_sample,
            "dtype": s.dtype, "block_rows": s.block_rows, "embeddings_version": ctx.warehouse.version("embeddings"),
            "embedding_model": ctx.warehouse.commit_metadata("embeddings").get("model")}


def _results(ctx: StageContext, scratch: Scratch, pair_fn: PairFn, n_thresholds: int, *, with_prompts: bool,
             label: str) -> DataFrame:
    """Every item against every item (exact: the upper triangle of the block grid, each pair once, mirrored) or
    against the items of its probed IVF lists (approximate); the task results are computed here, under a progress
    line, and kept for the writes."""
    s = ctx.cfg.semantic
    n_items = scratch.num_rows
    pairs = ctx.spark.sparkContext.accumulator(0)
    if s.mode == "exact":
        blocks = plan_blocks(scratch.files, s.block_rows)
        log.info("%s: %d distinct items in %d block(s): %d grid task(s) (the upper triangle)", label, n_items,
                 len(blocks), len(blocks) * (len(blocks) + 1) // 2)
        results = run_grid(grid_frame(ctx.spark, blocks), pair_fn, n_thresholds, with_prompts=with_prompts,
                           read_block=read_block, pairs=pairs)
    else:
        centroids = train_centroids(scratch, s.nlist or default_nlist(n_items), s.seed, s.kmeans_max_sample)
        log.info("%s: approximate: %d distinct items in %d IVF lists, %d probed per item", label, n_items,
                 len(centroids), min(s.nprobe, len(centroids)))
        results = run_ivf(scratch, centroids, s.nprobe, pair_fn, n_thresholds, with_prompts=with_prompts,
                          max_list_items=s.max_list_items)
    results = results.persist()
    with progress(ctx.spark, f"{label}: pairs", rows=pairs if s.mode == "exact" else None, unit="pairs"):
        results.count()
    if s.mode == "exact":
        log.info("%s: %d item pairs compared (n(n+1)/2 for n = %d items)", label, pairs.value, n_items)
    return results


@stage("semantic", inputs=("embeddings",), outputs=("semantic_matches", "semantic_neighbors"), config=("semantic",))
def semantic(ctx: StageContext) -> None:
    """Exact counts of sequences within cosine >= each threshold -> semantic_matches; capped pairs -> neighbors."""
    s, wh = ctx.cfg.semantic, ctx.warehouse
    thresholds = _thresholds(ctx)
    meta = {**_grid_metadata(ctx, "semantic"), "max_neighbors": s.max_neighbors}
    with wh.scratch(items_of(wh.read("embeddings")), max_rows_per_file=s.block_rows) as scratch:
        check_embeddings(scratch.df)
        keep = s.max_neighbors + 1 if s.max_neighbors else 0
        fn = sem.pair_function(thresholds, keep, s.kernel, s.device, s.dtype)
        results = _results(ctx, scratch, fn, len(thresholds), with_prompts=False, label="semantic")
        try:
            wh.write(match_counts(results, scratch.df, thresholds, sem.COUNTS_PREFIX), "semantic_matches",
                     mode="overwrite", metadata=meta)
            wh.write(sem.neighbor_pairs(results, scratch.df, s.max_neighbors), "semantic_neighbors",
                     mode="overwrite", metadata=meta)
        finally:
            results.unpersist()
    lowest = threshold_column(sem.COUNTS_PREFIX, thresholds[0])
    total = wh.read("semantic_matches").agg(F.sum(F.col(lowest) - 1)).first()[0] or 0
    kept = wh.read("semantic_neighbors").count()
    log.info("semantic_neighbors: kept %d of %d pairs with cosine >= %s (semantic.max_neighbors=%d per sequence: "
             "%d dropped; the counts include them all)", kept, total, thresholds[0], s.max_neighbors, total - kept)


@stage("textual", inputs=("embeddings", "sequences"), outputs=("textual_matches",),
       config=("semantic", "textual"))
def textual(ctx: StageContext) -> None:
    """Semantic matches whose prompt is within textual.{min,max}_distance edits -> textual_matches."""
    s, t, wh = ctx.cfg.semantic, ctx.cfg.textual, ctx.warehouse
    thresholds = _thresholds(ctx)
    meta = {**_grid_metadata(ctx, "textual"), "min_distance": t.min_distance, "max_distance": t.max_distance,
            "upstream_ascii_rule": t.upstream_ascii_rule, "sequences_version": wh.version("sequences")}
    items = items_of(wh.read("embeddings"), prompts=wh.read("sequences"))
    with wh.scratch(items, max_rows_per_file=s.block_rows) as scratch:
        check_embeddings(scratch.df)
        distances = ctx.spark.sparkContext.accumulator(0)
        fn = txt.pair_function(thresholds, s.kernel, s.device, s.dtype, min_distance=t.min_distance,
                               max_distance=t.max_distance, ascii_rule=t.upstream_ascii_rule, workers=t.workers,
                               distances=distances)
        results = _results(ctx, scratch, fn, len(thresholds), with_prompts=True, label="textual")
        try:
            wh.write(match_counts(results, scratch.df, thresholds, txt.COUNTS_PREFIX), "textual_matches",
                     mode="overwrite", metadata=meta)
        finally:
            results.unpersist()
    log.info("textual: %d Levenshtein computations (distinct prompt pairs per task)", distances.value)
