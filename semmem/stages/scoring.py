"""Stages `train_model` (the embedded default model) and `score` (memorization + perplexities per model@revision)."""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from functools import partial

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem import storage
from semmem.catalog import table
from semmem.compat import map_batches
from semmem.config import Config
from semmem.errors import ConfigError, ModelError
from semmem.ingest.tokenizer import from_json, saved_tokenizer_json, saved_tokenizer_path
from semmem.scoring.models import (ModelSpec, check_model_available, check_same_tokenizer, model_digest,
                                   parse_model_spec)
from semmem.spark import gpu_task_profile, model_tasks, one_task_each
from semmem.stages.chunks import chunks_of, write_in_chunks
from semmem.stages.registry import StageContext, stage

log = logging.getLogger(__name__)


def _stream_identity(ctx: StageContext) -> str:
    wh = ctx.warehouse
    for name in ("stream_sources", "token_rows"):
        if wh.exists(name):
            return f"{name}@{wh.version(name)}"
    return "none"


def uses_family(names: list[str], family: str) -> bool:
    """Does model.names name the trained family (the family itself, or one of its members)?"""
    return any(n == family or n.split("@")[0].startswith(family + "-") for n in names)


@stage("train_model", inputs=("stream",), outputs=("model_family", "family_exposures"), reads_also=("sequences",),
       config=("train_model", "stream", "model.names", "duplicates"))
def train_model_stage(ctx: StageContext) -> None:
    """Train the family of train_model.sizes on the stream, one Spark task per size, with checkpoints -> model_family;
    how often each evaluation continuation was trained at each step -> family_exposures.

    Skipped when model.names does not use train_model.name, and per size when its saved checkpoints were trained with
    the same settings on the same vocabulary and stream version (train_model.force=true retrains).
    """
    from semmem.progress import progress
    from semmem.training import family as fam

    t, wh = ctx.cfg.train_model, ctx.warehouse
    if ctx.cfg.model.names and not uses_family(ctx.cfg.model.names, t.name):
        log.info("train_model: skipped, model.names does not use %r", t.name)
        return
    members = fam.Member.all_of(t, wh.root)
    recorded = wh.side_file("sequences", "tokenizer")
    tok_json = saved_tokenizer_json(wh.root, recorded)
    if tok_json is None:
        raise ConfigError(f"train_model needs the tokenizer ingest saved ({saved_tokenizer_path(wh.root, recorded)}); "
                          "run stage 'ingest' first")
    vocab = from_json(tok_json).get_vocab_size()
    stream_id = f"{_stream_identity(ctx)}:{t.max_tokens}"
    published = {m.model: wh.side_file("model_family", _model_key(m.model)) for m in members}
    fps = {m.model: fam.member_fingerprint(m, vocab, stream_id, t.checkpoints) for m in members}
    members = [fam.versioned(m, fps[m.model]) for m in members]
    todo = [m for m in members if t.force or not fam.is_up_to_date(m, fps[m.model])]
    todo.sort(key=lambda m: -m.shape.flops_per_token(vocab))  # the largest starts first: the sweep ends sooner
    for m in members:
        if m not in todo:
            log.info("train_model: %s is up to date", m.model)
    if todo:
        rows, max_rows = _trained_rows(ctx)
        log.info("train_model: %d size(s) in parallel (%s) on the first %d stream rows", len(todo),
                 ", ".join(m.model for m in todo), max_rows)
        with wh.scratch(rows) as scratch:
            jobs = one_task_each(ctx.spark, [(fam.member_json(m),) for m in todo], "member string")
            body = partial(fam.train_members, files=[f.path for f in scratch.files], vocab_size=vocab,
                           eod_id=ctx.cfg.stream.eod_id, pad_id=1, tokenizer_json=tok_json,
                           checkpoints=t.checkpoints, stream_id=stream_id, device=t.device)
            with progress(ctx.spark, "train_model"):
                map_batches(jobs, body, table("model_family").spark_schema,
                        profile=gpu_task_profile(ctx.spark)).collect()  # a few rows per size
    rows = [r for m in members for r in (fam.saved_rows(m) or [])]
    if wh.run is not None:
        for m in members:
            wh.add_side_file(_model_key(m.model), m.folder)
    wh.write(ctx.spark.createDataFrame(rows, table("model_family").spark_schema), "model_family", mode="overwrite",
             metadata={"stage": "train_model", "stream": stream_id, "vocab_size": vocab})
    for m in members:
        fam.remove_other_versions(m, {m.folder, published[m.model] or m.folder})
        last = [r for r in rows if r["model"] == m.model][-1]
        log.info("train_model: %s: %d parameters, %d checkpoints, final loss %.3f", m.model, last["num_parameters"],
                 len([r for r in rows if r["model"] == m.model]), last["loss"])
    _family_exposures(ctx, members)


def _trained_rows(ctx: StageContext) -> tuple[DataFrame, int]:
    """(row_id, tokens) of the stream rows the family trains on (its first train_model.max_tokens), and how many."""
    from semmem.ingest.stream import read_stream

    max_rows = max(1, ctx.cfg.train_model.max_tokens // ctx.cfg.stream.seq_length)
    return read_stream(ctx.warehouse, ctx.cfg, first_rows=max_rows).select("row_id", "tokens"), max_rows


def _family_exposures(ctx: StageContext, members: list) -> None:  # of family.Member
    """family_exposures: for each member, how often each evaluation continuation was trained at each step, from the
    window order its trainer recorded (`fam.TRAINING_ORDER`) and every occurrence of the continuations in the trained
    rows (one duplicate scan of them, positions uncapped: the family's stream is bounded by max_tokens)."""
    from semmem.features.exposure import window_exposures
    from semmem.stages.corpus import duplicate_scan
    from semmem.training import family as fam

    wh, t = ctx.warehouse, ctx.cfg.train_model
    orders = {m.model: storage.join(m.folder, fam.TRAINING_ORDER) for m in members}
    unrecorded = sorted(m for m, p in orders.items() if not storage.is_file(p))
    if unrecorded:
        log.warning("train_model: %s trained before semmem recorded training orders: no exposure for them "
                    "(train_model.force=true retrains)", ", ".join(unrecorded))
    trained = [ctx.spark.read.parquet(p).select(F.lit(m).alias("model"), "step", "row_id", "offset")
               for m, p in orders.items() if m not in unrecorded]
    if not trained:
        return
    every = replace(ctx.cfg.duplicates, max_occurrences=2**31 - 1)
    with duplicate_scan(wh, wh.read("sequences"), _trained_rows(ctx)[0], every) as scan:
        exposures = window_exposures(scan.occurrences, functools.reduce(DataFrame.unionByName, trained),
                                     t.context_length)
        wh.write(exposures, "family_exposures", mode="overwrite")


def _model_key(model: str) -> str:
    """The side-file key under which model_family's lineage names a member's checkpoint folder."""
    return f"model:{model}"


def _member_folder(ctx: StageContext, member) -> str:  # noqa: ANN001 - a family.Member
    """The checkpoint folder of the published model_family (the unversioned one of older warehouses)."""
    return ctx.warehouse.side_file("model_family", _model_key(member.model)) or member.folder


def model_specs(ctx: StageContext, names: list[str] | None = None) -> list[ModelSpec]:
    """`names` (default model.names) resolved; the family's name expands to every size and checkpoint train_model
    saved."""
    from semmem.training import family as fam

    t, root = ctx.cfg.train_model, ctx.warehouse.root
    members = {m.model: m for m in fam.Member.all_of(t, root)}
    specs: list[ModelSpec] = []
    for name in ctx.cfg.model.names if names is None else names:
        targets = list(members.values()) if name == t.name else [members[name]] if name in members else []
        model, _, revision = name.partition("@")
        checkpoint = storage.join(_member_folder(ctx, members[model]), revision) if model in members and revision \
            else None
        if checkpoint is not None and storage.is_file(storage.join(checkpoint, "config.json")):
            specs.append(ModelSpec(model, revision, checkpoint, True))  # one checkpoint of the published family
        elif not targets:
            specs.append(parse_model_spec(name, root, t.name))
        for m in targets:
            folder = _member_folder(ctx, m)
            saved = fam.checkpoint_folders(folder)
            if not saved:
                raise ModelError(f"model {name!r}: {m.model} has no checkpoint under {folder}; run stage "
                                 "'train_model' (`semmem train-model`) first")
            specs += [ModelSpec(m.model, f"step{step}", folder, True) for step, folder in saved]
    return specs


def model_label(spec: ModelSpec) -> str:
    """How a model@revision is named among a stage's artifacts."""
    return f"model {spec.model}@{spec.revision}"


def model_weights(ctx: StageContext, names: list[str] | None = None) -> dict[str, str]:
    """The weights identity of each model `names` (default model.names) resolves to."""
    return {model_label(spec): model_digest(spec) for spec in model_specs(ctx, names)}


@stage("score", inputs=("sequences",), outputs=("memorization",), reads_also=("model_family",),
       config=("model", "score", "stream.eod_id", "train_model"), artifacts=model_weights)
def score_stage(ctx: StageContext) -> None:
    """Memorization score, matched prefix and perplexities of every sequence under each model in model.names, and
    graded memorization (memorized_at each score.context_lengths) with the membership scores (loss, min_k_prob,
    min_k_plus_plus, zlib_ratio) of beyond.md §3.

    One partition (model, revision) of table memorization is overwritten per model; other partitions stay, and so
    does the partition of a model whose weights are those it was scored with, when nothing else changed. Each model's
    rows are committed in chunks of score.rows_per_commit: a re-run after a failure resumes.
    """
    cfg = ctx.cfg
    if not cfg.model.names:
        raise ConfigError("model.names is empty: list the models to score, e.g. "
                          "--set model.names=EleutherAI/pythia-70m-deduped@step143000, or "
                          f"model.names=[{cfg.train_model.name}] for the model stage train_model makes")
    specs = model_specs(ctx)
    wh = ctx.warehouse
    sequences = wh.read("sequences").select("sequence_id", "tokens", "text")  # text: zlib_ratio
    recorded = wh.side_file("sequences", "tokenizer")
    tok_json = saved_tokenizer_json(wh.root, recorded)  # the one that made them
    vocab = from_json(tok_json).get_vocab_size() if tok_json is not None else None
    kept = wh.unchanged_artifacts()
    with chunks_of(ctx, sequences, rows_per_commit=cfg.score.rows_per_commit) as chunks:  # split once for all models
        for spec in specs:
            if model_label(spec) in kept:
                log.info("score: %s@%s is current (same weights, config and sequences as its scores)", spec.model,
                         spec.revision)
                continue
            check_model_available(spec, vocab)  # on the driver: a clear error before any executor loads weights
            if tok_json is not None:
                check_same_tokenizer(spec, from_json(tok_json), saved_tokenizer_path(wh.root, recorded))
            score = partial(_score_chunk, spec=spec, cfg=cfg, tokenizer_vocab=vocab)
            write_in_chunks(ctx, chunks, "memorization", score, label=f"{spec.model}@{spec.revision}",
                            partition={"model": spec.model, "revision": spec.revision})


def _score_chunk(sequences: DataFrame, spec: ModelSpec, cfg: Config, tokenizer_vocab: int | None) -> DataFrame:
    from semmem.scoring.memorization import score_sequences

    return score_sequences(model_tasks(sequences, "sequence_id"), spec, mode=cfg.score.mode,  # a GPU per task
                           upstream_perplexity=cfg.score.upstream_perplexity, eod_id=cfg.stream.eod_id,
                           batch_size=cfg.score.batch_size, dtype=cfg.model.dtype, device=cfg.model.device,
                           tokenizer_vocab=tokenizer_vocab, context_lengths=cfg.score.context_lengths,
                           min_k_fraction=cfg.score.min_k_fraction)


@stage("capacity", inputs=(), outputs=("capacity",), default=False, config=("capacity",))
def capacity_stage(ctx: StageContext) -> None:
    """Bits a model stores of uniformly random data, per size, dtype and dataset size, each run trained until the
    bits it stores stop growing (Morris et al. 2025) -> capacity, with each model's plateau or why none was reached."""
    from pyspark.sql.types import StructType

    from semmem.progress import progress
    from semmem.training import capacity as cap
    from semmem.taxonomy.report import capacity_figure, png_bytes

    c = ctx.cfg.capacity
    specs = cap.run_specs(c.sizes, c.dataset_sequences, c.seeds, c.dtypes, c.vocab_size)
    log.info("capacity: %d runs (%d sizes x %d dtypes x %d dataset sizes x %d seeds), one Spark task each, each "
             "until it stops storing more (at most %d steps)", len(specs), len(c.sizes), len(c.dtypes),
             len(c.dataset_sequences), len(c.seeds), c.max_steps)
    jobs = one_task_each(ctx.spark, [(s,) for s in specs], "run string")
    body = partial(cap.run_capacity, vocab=c.vocab_size, length=c.sequence_length, max_steps=c.max_steps,
                   window=c.window, tolerance=c.tolerance, batch_size=c.batch_size, learning_rate=c.learning_rate,
                   rotary_pct=c.rotary_pct, device=c.device)
    schema = table("capacity").spark_schema
    run_schema = StructType([f for f in schema.fields if f.name in cap.RUN_COLUMNS])
    with progress(ctx.spark, "capacity"):
        profile = gpu_task_profile(ctx.spark)
        runs = map_batches(jobs, body, run_schema, profile=profile).toPandas()  # a row per run
    rows = cap.mark_plateau(runs, c.plateau_tolerance)
    wh = ctx.warehouse
    wh.write(ctx.spark.createDataFrame(rows, schema), "capacity", mode="overwrite",
             metadata={"stage": "capacity", **{k: str(v) for k, v in vars(c).items()}})
    for r in rows[~rows.converged].itertuples():
        log.warning("capacity: %s %s N = %d seed %d did not converge in %d steps (last window means %s bits/token): "
                    "left out of the estimate", r.model, r.dtype, r.dataset_sequences, r.seed, r.steps,
                    ", ".join(f"{v:.3f}" for v in r.loss_tail))
    for r in cap.plateau(rows).itertuples():
        log.info("capacity: %s (%d parameters, %s): %s", r.model, r.params, r.dtype, cap.describe(r))
    page = wh.side_path("report", "capacity.png")
    storage.write_bytes(page, png_bytes(capacity_figure(rows)))
    log.info("capacity: plot %s", page)
