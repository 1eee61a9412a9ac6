"""Stages `duplicates`, `frequencies` and one per feature declared with `compute` (`templating`, `huffman`): the
intrinsic and corpus features of the taxonomy.

Each reads `sequences` (and the training stream where needed), calls the pure functions of semmem.features and
overwrites its output table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem import storage
from semmem.config import DuplicatesConfig
from semmem.features.declarations import FEATURES, Feature
from semmem.features.duplicates import (QueryIndex, ScanPlan, WindowHasher, plan_passes, query_hashes, query_keys,
                                        sequence_duplicates, sequence_exposures, sequence_occurrences,
                                        window_candidates)
from semmem.features.provenance import OCCURRENCE_COLUMNS, with_documents
from semmem.features.frequencies import token_frequencies, token_frequency_stats
from semmem.ingest.megatron import recorded_index
from semmem.ingest.stream import StreamShards, megatron_documents, read_stream, stream_shards
from semmem.spark import tasks_per_executor
from semmem.stages.registry import StageContext, stage
from semmem.tables import Warehouse

log = logging.getLogger(__name__)


@stage("duplicates", inputs=("sequences", "stream"),
       outputs=("sequence_duplicates", "sequence_occurrences", "sequence_exposures"),
       reads_also=("stream_documents",),
       config=("duplicates", "stream", "ingest.megatron_rows_per_task", "training.rows_per_step"))
def duplicates(ctx: StageContext) -> None:
    """Exact stream occurrences of each continuation 32-gram -> sequence_duplicates, and per training step ->
    sequence_exposures; where the earliest of them are, in which document -> sequence_occurrences. One scan of the
    stream gives all three."""
    d, wh, per_step = ctx.cfg.duplicates, ctx.warehouse, ctx.cfg.training.rows_per_step
    stream = stream_shards(wh, ctx.cfg, d.rows_per_task) if d.direct_read else read_stream(wh, ctx.cfg)
    with duplicate_scan(wh, wh.read("sequences"), stream, d, per_step) as scan:
        wh.write(scan.counts, "sequence_duplicates", mode="overwrite")
        wh.write(scan.exposures, "sequence_exposures", mode="overwrite")
        wh.write(_with_documents(wh, scan.occurrences).select(*OCCURRENCE_COLUMNS), "sequence_occurrences",
                 mode="overwrite")


def _with_documents(wh: Warehouse, occurrences: DataFrame) -> DataFrame:
    """The document and Pile subset of each occurrence, from the .idx (megatron) or stream_documents (jsonl); NULL,
    said once in the log, where neither is there."""
    if wh.exists("stream_sources"):
        index = recorded_index(wh)
        if storage.is_file(index.idx_path):
            return megatron_documents(occurrences, index)
        missing = f"{index.idx_path} is gone"
    elif wh.exists("stream_documents"):
        return with_documents(occurrences, wh.read("stream_documents"))
    else:
        missing = "no table stream_documents (token_rows written by an older ingest: run stage 'ingest' again)"
    log.warning("duplicates: %s; the documents of sequence_occurrences are NULL", missing)
    return (occurrences.withColumn("document", F.lit(None).cast("string"))
            .withColumn("source", F.lit(None).cast("string")))


@dataclass(frozen=True)
class DuplicateScan:
    counts: DataFrame  # (sequence_id, sequence_duplicates)
    exposures: DataFrame  # (sequence_id, step, occurrences)
    occurrences: DataFrame  # (sequence_id, row_id, offset, step, rank)


@contextmanager
def duplicate_scan(wh: Warehouse, sequences: DataFrame, stream: DataFrame | StreamShards,
                   d: DuplicatesConfig, rows_per_step: int = 1 << 62) -> Iterator[DuplicateScan]:
    """sequence_duplicates, the occurrences per training step (row_id // rows_per_step) and the earliest
    d.max_occurrences positions of each continuation, from one scan of `stream`, to be read inside the block. The
    query hashes are written to warehouse scratch, split into as many passes as `d.memory_budget_mb` requires; the
    scan's candidates are kept (on disk) for the three results; all are removed afterwards."""
    hasher = WindowHasher(d.hash_base, d.hash_modulus)
    n_queries = sequences.count()  # an upper bound on the distinct continuations
    per_task = round(d.memory_budget_mb * 2**20) // tasks_per_executor(wh.spark)
    passes = plan_passes(n_queries, per_task, d.filter_bits_per_query)
    index_mb = QueryIndex.nbytes(-(-n_queries // passes), d.filter_bits_per_query) / 2**20
    log.info("duplicates: %d sequences, %d pass(es) over the stream, query index ~%.0f MiB per task (budget %.0f MiB)",
             n_queries, passes, index_mb, per_task / 2**20)
    queries = query_hashes(sequences, hasher)
    with wh.scratch(query_keys(queries, passes), partition_by="pass") as keys:
        plan = ScanPlan.from_files([f.path for f in keys.files], passes, d.filter_bits_per_query)
        candidates = window_candidates(stream, hasher, plan, d.rows_per_batch, d.max_occurrences,
                                       rows_per_step).persist(StorageLevel.DISK_ONLY)
        try:
            yield DuplicateScan(sequence_duplicates(sequences, queries, candidates),
                                sequence_exposures(queries, candidates),
                                sequence_occurrences(queries, candidates, d.max_occurrences))
        finally:
            candidates.unpersist()


@contextmanager
def duplicate_counts(wh: Warehouse, sequences: DataFrame, stream: DataFrame | StreamShards,
                     d: DuplicatesConfig) -> Iterator[DataFrame]:
    """sequence_duplicates of `sequences` over `stream`, to be read inside the block (see `duplicate_scan`); no
    positions are kept."""
    with duplicate_scan(wh, sequences, stream, replace(d, max_occurrences=0)) as scan:
        yield scan.counts


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
