"""Stages `duplicates`, `frequencies` and one per feature declared with `compute` (`templating`, `huffman`): the
intrinsic and corpus features of the taxonomy.

Each reads `sequences` (and the training stream where needed), calls the pure functions of semmem.features and
overwrites its output table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

from pyspark.sql import DataFrame

from semmem.config import DuplicatesConfig
from semmem.features.declarations import FEATURES, Feature
from semmem.features.duplicates import (QueryIndex, ScanPlan, WindowHasher, plan_passes, query_hashes, query_keys,
                                        sequence_duplicates)
from semmem.features.frequencies import token_frequencies, token_frequency_stats
from semmem.ingest.stream import StreamShards, read_stream, stream_shards
from semmem.spark import tasks_per_executor
from semmem.stages.registry import StageContext, stage
from semmem.tables import Warehouse

log = logging.getLogger(__name__)


@stage("duplicates", inputs=("sequences", "stream"), outputs=("sequence_duplicates",),
       config=("duplicates", "stream", "ingest.megatron_rows_per_task"))
def duplicates(ctx: StageContext) -> None:
    """Exact stream occurrences of each continuation 32-gram -> sequence_duplicates."""
    d = ctx.cfg.duplicates
    stream = stream_shards(ctx.warehouse, ctx.cfg, d.rows_per_task) if d.direct_read else \
        read_stream(ctx.warehouse, ctx.cfg)
    with duplicate_counts(ctx.warehouse, ctx.warehouse.read("sequences"), stream, d) as out:
        ctx.warehouse.write(out, "sequence_duplicates", mode="overwrite")


@contextmanager
def duplicate_counts(wh: Warehouse, sequences: DataFrame, stream: DataFrame | StreamShards,
                     d: DuplicatesConfig) -> Iterator[DataFrame]:
    """sequence_duplicates of `sequences` over `stream`, to be read inside the block: the query hashes are written
    to warehouse scratch, split into as many passes as `d.memory_budget_mb` requires, and removed afterwards."""
    hasher = WindowHasher(d.hash_base, d.hash_modulus)
    n_queries = sequences.count()  # an upper bound on the distinct continuations
    per_task = round(d.memory_budget_mb * 2**20) // tasks_per_executor(wh.spark)
    passes = plan_passes(n_queries, per_task, d.filter_bits_per_query)
    index_mb = QueryIndex.nbytes(-(-n_queries // passes), d.filter_bits_per_query) / 2**20
    log.info("duplicates: %d sequences, %d pass(es) over the stream, query index ~%.0f MiB per task (budget %.0f MiB)",
             n_queries, passes, index_mb, per_task / 2**20)
    with wh.scratch(query_keys(query_hashes(sequences, hasher), passes), partition_by="pass") as keys:
        plan = ScanPlan.from_files([f.path for f in keys.files], passes, d.filter_bits_per_query)
        yield sequence_duplicates(sequences, stream, plan, hash_base=d.hash_base, hash_modulus=d.hash_modulus,
                                  rows_per_batch=d.rows_per_batch)


@stage("frequencies", inputs=("sequences", "stream"), outputs=("token_frequencies", "token_frequency_stats"),
       config=("ingest.megatron_rows_per_task",))
def frequencies(ctx: StageContext) -> None:
    """Corpus token counts -> token_frequencies; per-sequence statistics -> token_frequency_stats."""
    ctx.warehouse.write(token_frequencies(read_stream(ctx.warehouse, ctx.cfg)), "token_frequencies",
                        mode="overwrite")
    stats = token_frequency_stats(ctx.warehouse.read("sequences"), ctx.warehouse.read("token_frequencies"))
    ctx.warehouse.write(stats, "token_frequency_stats", mode="overwrite")


def computed_feature(feature: Feature) -> Callable[[StageContext], None]:
    """The stage of a feature declared with `compute`: the sequences in, its table out (semmem.features
    .declarations), its config section's keys as keyword arguments."""

    def run(ctx: StageContext) -> None:
        kwargs = asdict(getattr(ctx.cfg, feature.config)) if feature.config else {}
        ctx.warehouse.write(feature.compute(ctx.warehouse.read("sequences"), **kwargs),  # type: ignore[misc]
                            feature.table, mode="overwrite")

    run.__doc__ = f"{feature.description.rstrip('.')} -> {feature.table}"
    return stage(feature.stage, inputs=("sequences",), outputs=(feature.table,),
                 config=(feature.config,) if feature.config else ())(run)


for _feature in FEATURES:
    if _feature.compute is not None:
        computed_feature(_feature)
