"""Stage `localize`: where in the model memorized sequences are held (beyond.md §5), per taxonomy category."""

from __future__ import annotations

import logging
import math

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from semmem.catalog import table
from semmem.config import Config
from semmem.errors import ConfigError, ModelError, StageError
from semmem.scoring.localization import BLOCKS, Rewinding, gradient_shares, gradient_sums, rewinding_counts
from semmem.scoring.models import ModelSpec, checkpoint_step, model_config
from semmem.spark import gpu_task_profile
from semmem.stages.registry import StageContext, stage
from semmem.stages.scoring import model_specs, model_weights, uses_family

log = logging.getLogger(__name__)
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def rewinding_plans(cfg: Config, specs: list[ModelSpec]) -> dict[str, Rewinding]:
    """The models to localize (localize.models, or the trained family's members) with their final checkpoint, the
    one to rewind to, and their layer count, from the scored step<N> revisions `specs`. A model with a single
    checkpoint is said and skipped; ConfigError for a model not scored at checkpoints or a rewind_to that is not an
    earlier scored checkpoint; ModelError for checkpoints of different shapes."""
    loc = cfg.localize
    by_model: dict[str, list[ModelSpec]] = {}
    for s in sorted(specs, key=lambda s: checkpoint_step(s.revision) or 0):
        if checkpoint_step(s.revision) is not None:
            by_model.setdefault(s.model, []).append(s)
    family = cfg.train_model.name
    names = loc.models or ([m for m in by_model if m.startswith(family + "-")]
                           if uses_family(cfg.model.names, family) else [])
    unknown = [n for n in names if n not in by_model]
    if unknown:
        raise ConfigError(f"localize.models names {unknown[0]!r}, which model.names does not score at step<N> "
                          f"checkpoints (scored at checkpoints: {', '.join(by_model) or 'none'})")
    plans = {}
    for name in names:
        revisions = by_model[name]
        final = revisions[-1]
        if len(revisions) < 2:
            log.warning("localize: %s has a single scored checkpoint (%s): nothing to rewind to; skipped", name,
                        final.revision)
            continue
        earlier = revisions[0] if loc.rewind_to == "first" else \
            next((s for s in revisions if s.revision == loc.rewind_to), None)
        step = checkpoint_step(loc.rewind_to)  # None for "first"
        if step is not None and step >= checkpoint_step(final.revision):
            earlier_ones = ", ".join(s.revision for s in revisions[:-1])
            raise ConfigError(f"localize.rewind_to = {loc.rewind_to} is not earlier than {name}'s final checkpoint "
                              f"{final.revision}; name an earlier one ({earlier_ones})")
        if earlier is None:
            raise ConfigError(f"localize.rewind_to = {loc.rewind_to}: {name} is not scored at that checkpoint (its "
                              f"scored checkpoints: {', '.join(s.revision for s in revisions)})")
        plans[name] = Rewinding(final, earlier, _same_shape(final, earlier))
    return plans


def _same_shape(final: ModelSpec, earlier: ModelSpec) -> int:
    """The layer count of two checkpoints of one shape; ModelError naming the first setting they differ in."""
    a, b = model_config(final), model_config(earlier)
    for key in SHAPE_KEYS:
        if getattr(a, key, None) != getattr(b, key, None):
            raise ModelError(f"localize: {final.model}@{final.revision} and @{earlier.revision} have different shapes "
                             f"({key} {getattr(a, key, None)} vs {getattr(b, key, None)}): rewinding a block needs "
                             "checkpoints of one architecture")
    return int(a.num_hidden_layers)


def _sample(ctx: StageContext, plans: dict[str, Rewinding]) -> DataFrame:
    """(model, sequence_id, category, category_guess_recall, is_memorized, tokens) at each final checkpoint: every
    sequence with a category, or a seeded hash sample of about localize.max_sequences per model, category and
    memorized or not where there are more."""
    loc, wh = ctx.cfg.localize, ctx.warehouse
    finals = ctx.spark.createDataFrame([(m, p.final.revision) for m, p in plans.items()],
                                       "model STRING, revision STRING")
    rows = (wh.read("combined").join(F.broadcast(finals), ["model", "revision"])
            .where(F.col("category").isNotNull())
            .select("model", "sequence_id", "category", "category_guess_recall",
                    F.coalesce(F.col("is_memorized"), F.lit(False)).alias("is_memorized")))
    groups = ["model", "category", "is_memorized"]
    counts = rows.groupBy(*groups).agg(F.count("*").alias("_n"))  # models x 3 x 2 rows
    uniform = F.xxhash64("sequence_id", F.lit(loc.seed)).bitwiseAND(F.lit(2 ** 53 - 1)) / F.lit(float(2 ** 53))
    return (rows.join(F.broadcast(counts), groups).where(uniform * F.col("_n") < F.lit(loc.max_sequences)).drop("_n")
            .join(wh.read("sequences").select("sequence_id", "tokens"), "sequence_id"))


def _tasks(rows: DataFrame, per_model: dict[str, int], rows_per_task: int, seed: int,
           layer_groups: dict[str, int] | None = None) -> DataFrame:
    """`rows` laid out one task per unit: its model, its layer group (column first_layer, when `layer_groups` gives
    each model's count of them) and a hash chunk of at most about rows_per_task of the model's rows (per_model: its
    row count)."""
    chunks = {m: max(1, math.ceil(n / rows_per_task)) for m, n in per_model.items()}
    chunk = F.pmod(F.xxhash64("sequence_id", F.lit(seed + 1)),
                   F.coalesce(*(F.when(F.col("model") == m, F.lit(c)) for m, c in chunks.items()), F.lit(1)))
    unit = F.concat_ws("|", "model", *(["first_layer"] if layer_groups else []), chunk.cast("string"))
    tasks = sum(c * (layer_groups[m] if layer_groups else 1) for m, c in chunks.items())
    return rows.withColumn("unit", unit).repartition(tasks, "unit")


@stage("localize", inputs=("combined", "sequences"), outputs=("localization", "gradient_shares"),
       reads_also=("model_family",),
       config=("localize", "model", "score.batch_size", "train_model", "taxonomy.ci_level"), artifacts=model_weights)
def localize_stage(ctx: StageContext) -> None:
    """Layer rewinding and gradient accounting per category at each localized model's final checkpoint
    -> localization, gradient_shares (beyond.md §5)."""
    cfg, wh, loc = ctx.cfg, ctx.warehouse, ctx.cfg.localize
    plans = rewinding_plans(cfg, model_specs(ctx))
    if not plans:
        log.info("localize: no model to localize (localize.models, or the trained family with two or more "
                 "checkpoints)")
        for name in ("localization", "gradient_shares"):
            wh.write(ctx.spark.createDataFrame([], table(name).spark_schema), name, mode="overwrite",
                     metadata={"stage": "localize", "models": []})
        return
    revisions = ctx.spark.createDataFrame(
        [(m, p.final.revision, p.earlier.revision) for m, p in plans.items()],
        "model STRING, revision STRING, rewound_to STRING")
    sample = _sample(ctx, plans).cache()
    try:
        sizes = {(r["model"], r["is_memorized"]): r["n"]
                 for r in sample.groupBy("model", "is_memorized").agg(F.count("*").alias("n")).collect()}
        if not sizes:
            raise StageError("stage 'localize': table combined has no rows of the final checkpoints "
                             f"({', '.join(f'{m}@{p.final.revision}' for m, p in plans.items())}); rerun stage "
                             "combine after score")
        profile = gpu_task_profile(ctx.spark)
        memorized = {m: sizes.get((m, True), 0) for m in plans}
        for m, n in memorized.items():
            log.info("localize: %s@%s: %d memorized sequences, %d layers x %d blocks rewound to %s", m,
                     plans[m].final.revision, n, plans[m].layers, len(BLOCKS), plans[m].earlier.revision)
        groups = ctx.spark.createDataFrame([(m, first) for m, p in plans.items()
                                            for first in range(0, p.layers, loc.layers_per_task)],
                                           "model STRING, first_layer INT")
        rewind = _tasks(sample.where("is_memorized").join(F.broadcast(groups), "model"), memorized,
                        loc.rows_per_task, loc.seed,
                        {m: math.ceil(p.layers / loc.layers_per_task) for m, p in plans.items()})
        counts = rewinding_counts(rewind, plans, layers_per_task=loc.layers_per_task, dtype=cfg.model.dtype,
                                  device=cfg.model.device, batch_size=cfg.score.batch_size, profile=profile)
        localization = (counts.groupBy("model", "layer", "block", "taxonomy", "category")
                        .agg(F.sum("memorized").alias("memorized"), F.sum("still_memorized").alias("still_memorized"))
                        .join(F.broadcast(revisions), "model"))
        totals = {m: sizes.get((m, True), 0) + sizes.get((m, False), 0) for m in plans}
        sums = gradient_sums(_tasks(sample, totals, loc.rows_per_task, loc.seed), plans, dtype=cfg.model.dtype,
                             device=cfg.model.device, profile=profile)
        summed = (sums.groupBy("model", "layer", "block", "category", "memorized")  # models x layers x 24 rows
                  .agg(*(F.sum(c).alias(c) for c in ("norm_sum", "norm_sq_sum", "n"))).toPandas())
        but_revision = StructType([f for f in table("gradient_shares").spark_schema.fields if f.name != "revision"])
        shares = ctx.spark.createDataFrame(gradient_shares(summed, cfg.taxonomy.ci_level).astype({"layer": "int32"}),
                                           but_revision).join(F.broadcast(revisions), "model")
        meta = {"stage": "localize", "models": {m: [p.final.revision, p.earlier.revision] for m, p in plans.items()},
                "max_sequences": loc.max_sequences, "seed": loc.seed}
        wh.write(localization, "localization", mode="overwrite", metadata=meta)
        wh.write(shares, "gradient_shares", mode="overwrite", metadata=meta)
    finally:
        sample.unpersist()
