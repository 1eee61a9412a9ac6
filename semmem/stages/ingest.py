"""Stage `ingest`: corpus files -> token_rows (the training stream) and sequences (the evaluation windows)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark import Accumulator, StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from tokenizers import Tokenizer

from semmem import storage
from semmem.artifacts import folder_digest
from semmem.catalog import table
from semmem.errors import InputError
from semmem.ingest import megatron, pile
from semmem.ingest.sequences import WINDOW_LENGTH, sample_predicate, to_sequences
from semmem.ingest.stream import megatron_heads, megatron_row_ids
from semmem.ingest.tokenizer import check_eod, load_named, resolve_tokenizer, save_tokenizer
from semmem.progress import progress
from semmem.spark import one_task_each
from semmem.stages.registry import StageContext, stage

log = logging.getLogger("semmem")


def _tokenizer_files(ctx: StageContext) -> dict[str, str]:
    """A local tokenizer's files (edited in place, they give other tokens); a hub id is its name and revision."""
    t = ctx.cfg.tokenizer
    where = t.name if storage.is_remote(t.name) else Path(t.name).expanduser()
    if storage.is_remote(where) or Path(where).exists():
        return {"tokenizer": folder_digest(where)}
    return {"tokenizer": f"hub {t.name}@{t.revision or 'main'}"}


@stage("ingest", inputs=(), outputs=("token_rows", "stream_documents", "sequences", "ingest_rejects",
                                     "stream_sources", "published_memorization"),
       config=("input", "tokenizer", "stream", "sample", "ingest"), reads_files="input.path",
       artifacts=_tokenizer_files)
def ingest(ctx: StageContext) -> None:
    """Read the corpus: the training stream (token_rows) and the sampled evaluation sequences."""
    fmt = ctx.cfg.input.format
    if fmt == "pile-jsonl":
        ingest_pile(ctx)
    elif fmt == "megatron":
        ingest_megatron(ctx)
    else:
        ingest_sequences_parquet(ctx)


def _save_tokenizer(ctx: StageContext, tok: Tokenizer) -> str:
    """Save the tokenizer (versioned by its content) and record it in the lineage of every table ingest writes."""
    check_eod(tok, ctx.cfg.stream.eod_id)
    text, location = save_tokenizer(ctx.warehouse.root, tok)
    if ctx.warehouse.run is not None:
        ctx.warehouse.add_side_file("tokenizer", location)
    return text


def _training_texts(shards: list[str], limit: int) -> Iterator[str]:
    """The first `limit` good documents in stream order (for the offline BPE fallback)."""

    def texts() -> Iterator[str]:
        for path in shards:
            try:
                for _, raw in pile.iter_lines(path):
                    try:
                        yield pile.parse_line(raw)[0]
                    except pile._Reject:  # noqa: SLF001 - bad lines are reported by the real pass
                        continue
            except pile._Reject:  # noqa: SLF001
                continue

    return itertools.islice(texts(), limit)


def _shard_rows(ctx: StageContext, what: str, reader: Callable[..., Iterator[pa.RecordBatch]], schema: pa.Schema,
                **reader_args: object) -> tuple[list[str], DataFrame, str, DataFrame, Accumulator]:
    """The start both jsonl formats share: the shards of input.path (a list, and a (shard_id, path) frame), the
    tokenizer (resolved, trained if allowed, and saved), and the rows `reader` makes of each shard in its own task,
    with the reader's line counter. The rows are read twice (per-shard totals, then the cut), so they are kept on the
    executors' local disks in between: executor memory stays flat whatever the corpus size, and tokenizing again
    would cost more than the disk."""
    cfg, spark = ctx.cfg, ctx.spark
    shards = pile.find_shards(cfg.input.path)
    log.info("ingest: %d %s", len(shards), what)
    tok, source = resolve_tokenizer(cfg.tokenizer, _training_texts(shards, cfg.tokenizer.train_docs))
    log.info("ingest: tokenizer: %s", source)
    tok_json = _save_tokenizer(ctx, tok)
    files = one_task_each(spark, list(enumerate(shards)), "shard_id int, path string")
    counter = spark.sparkContext.accumulator(0)
    rows = files.mapInArrow(partial(reader, tokenizer_json=tok_json, batch_size=cfg.tokenizer.batch_size,
                                    counter=counter, **reader_args), from_arrow_schema(schema))
    return shards, files, tok_json, rows.persist(StorageLevel.DISK_ONLY), counter


def ingest_pile(ctx: StageContext) -> None:
    cfg, spark, wh = ctx.cfg, ctx.spark, ctx.warehouse
    shards, files, tok_json, docs, n_docs = _shard_rows(ctx, "shard(s) of Pile jsonl", pile.tokenize_shards,
                                                 pile.DOC_SCHEMA, eod_id=cfg.stream.eod_id)
    try:
        with progress(spark, "ingest: tokenize", rows=n_docs, unit="documents"):
            per_shard = docs.groupBy("shard_id").agg(
                F.sum(F.when(F.col("reject_reason").isNull(), F.size("tokens"))).alias("tokens"),
                F.count(F.when(F.col("reject_reason").isNull(), 1)).alias("docs"),
                F.count("reject_reason").alias("rejects"),
            ).collect()  # one row per shard
        counts = {r["shard_id"]: r for r in per_shard}
        _handle_rejects(ctx, docs, files, sum(r["rejects"] for r in per_shard))

        seq_length = cfg.stream.seq_length
        tokens_per_shard = np.array([counts[i]["tokens"] or 0 for i in range(len(shards))], dtype=np.int64)
        total = int(tokens_per_shard.sum())
        n_rows = total // seq_length
        log.info("ingest: %d documents, %d tokens -> %d rows of %d (%d trailing tokens dropped)",
                 sum(r["docs"] for r in per_shard), total, n_rows, seq_length, total - n_rows * seq_length)
        if n_rows == 0:
            raise InputError(f"the corpus has {total} tokens, fewer than one row of stream.seq_length={seq_length}")
        shard_starts = np.concatenate([[0], np.cumsum(tokens_per_shard)[:-1]])
        good = docs.where(F.col("reject_reason").isNull()).select("shard_id", "line", "shard_offset",
                                                                   "pile_set_name", "tokens")
        fragments = good.mapInArrow(partial(pile.cut_fragments, shard_starts=shard_starts, seq_length=seq_length),
                                    from_arrow_schema(pile.FRAGMENT_SCHEMA))
        rows = assemble_rows(fragments, seq_length)
        with progress(spark, "ingest: write token_rows"):
            wh.write(rows.select("row_id", "tokens"), "token_rows", mode="overwrite")
        with progress(spark, "ingest: write stream_documents"):
            wh.write(stream_documents(fragments.where(F.col("row_id") < n_rows), files), "stream_documents",
                     mode="overwrite")
        ctx.warehouse.drop("stream_sources")
        stored = wh.read("token_rows")
        keep = _sample(ctx, stored.select("row_id"))
        windows = stored.select("row_id", F.slice("tokens", 1, WINDOW_LENGTH).alias("tokens"))
        names = fragments.where(F.col("offset") == 0).select("row_id", "pile_set_name")
        if keep is not None:  # both sides cut to the sample before the join: no shuffle of the whole stream
            windows, names = windows.where(keep), names.where(keep)
        _write_sequences(ctx, windows.join(names, "row_id", "left"), tok_json)
    finally:
        docs.unpersist()


def assemble_rows(fragments: DataFrame, seq_length: int) -> DataFrame:
    """Fragments -> complete rows (row_id, tokens, pile_set_name); the last, partial row is dropped.

    Rows lying inside one document are already complete and skip the shuffle; only rows that span documents (or
    shards) are grouped by row_id and concatenated in offset order, with built-in SQL functions.
    """
    whole = fragments.where(F.size("tokens") == seq_length).select("row_id", "tokens", "pile_set_name")
    pieces = (fragments.where(F.size("tokens") < seq_length)
              .groupBy("row_id")
              .agg(F.array_sort(F.collect_list(F.struct("offset", "pile_set_name", "tokens"))).alias("p"))
              .select("row_id", F.flatten(F.transform("p", lambda x: x["tokens"])).alias("tokens"),
                      F.col("p")[0]["pile_set_name"].alias("pile_set_name"))
              .where(F.size("tokens") == seq_length))
    return whole.unionByName(pieces)


def stream_documents(fragments: DataFrame, files: DataFrame) -> DataFrame:
    """(row_id, offset, path, line, pile_set_name): where each document piece starts in the stream rows, so a
    position (row, offset) belongs to the piece of its row with the largest offset <= its own. Shard paths come from
    the (shard_id, path) frame by a join."""
    return fragments.join(files, "shard_id").select("row_id", "offset", "path", "line", "pile_set_name")


def _handle_rejects(ctx: StageContext, docs: DataFrame, files: DataFrame, n_rejects: int) -> None:
    """Fatal problems and (under on_bad_record=fail) bad records stop the job before any table is written. Shard
    paths come from the (shard_id, path) frame by a join, never as literals in the plan."""
    rejects = (docs.where(F.col("reject_reason").isNotNull()).join(files, "shard_id")
               .select("path", "line", F.col("reject_reason").alias("reason"),
                       F.col("reject_detail").alias("detail"), "shard_id"))
    if n_rejects:
        fatal = rejects.where(F.col("reason").isin(*pile.FATAL_REASONS)).orderBy("shard_id").limit(1).collect()
        if fatal:
            raise InputError(f"{fatal[0]['path']}: {fatal[0]['reason']}: {fatal[0]['detail']}")
        if ctx.cfg.ingest.on_bad_record == "fail":
            first = rejects.orderBy("shard_id", "line").limit(1).collect()[0]
            where = f"line {first['line']}" if first["line"] else "file"
            raise InputError(f"{first['path']} {where}: {first['reason']} ({first['detail']}); {n_rejects} bad "
                             "record(s) in all. Set ingest.on_bad_record=skip to skip them (they are then counted "
                             "in table ingest_rejects).")
        log.warning("ingest: skipped %d bad record(s); see table ingest_rejects", n_rejects)
    ctx.warehouse.write(rejects.drop("shard_id"), "ingest_rejects", mode="overwrite")


def _sample(ctx: StageContext, row_ids: DataFrame) -> Column | None:
    """The sample.* filter on row_id (None: every row), found from the row ids alone."""
    with progress(ctx.spark, "ingest: sample cut"):
        return sample_predicate(row_ids, ctx.cfg.sample)


def _write_sequences(ctx: StageContext, sampled: DataFrame, tok_json: str) -> None:
    """Write `sequences` from the sampled rows (row_id, tokens of at least 64, pile_set_name), many tasks."""
    with progress(ctx.spark, "ingest: write sequences"):
        ctx.warehouse.write(to_sequences(sampled, tok_json), "sequences", mode="overwrite")


def ingest_megatron(ctx: StageContext) -> None:
    cfg = ctx.cfg
    if len(cfg.input.path) != 1:
        raise InputError(f"megatron input takes one document.bin/.idx pair, got {len(cfg.input.path)} paths")
    index = megatron.open_index(cfg.input.path[0], cfg.stream.seq_length)
    log.info("ingest: megatron %s: %d rows of %d tokens, read in place", index.bin_path, index.num_rows,
             index.seq_length)
    tok = load_named(cfg.tokenizer)
    if tok is None:
        raise InputError(f"megatron input needs the tokenizer it was made with; {cfg.tokenizer.name!r} cannot be "
                         "loaded offline (set tokenizer.name to a local tokenizer.json or a cached HF id)")
    tok_json = _save_tokenizer(ctx, tok)
    src = ctx.spark.createDataFrame([megatron.index_record(index)], table("stream_sources").spark_schema)
    row_ids = megatron_row_ids(ctx.spark, index, cfg.ingest.megatron_rows_per_task)
    keep = _sample(ctx, row_ids)
    chosen = row_ids if keep is None else row_ids.where(keep)  # only the sampled rows' first 64 tokens are read
    heads = megatron_heads(chosen, index, WINDOW_LENGTH)
    _write_sequences(ctx, heads.withColumn("pile_set_name", F.lit(None).cast("string")), tok_json)
    ctx.warehouse.write(src, "stream_sources", mode="overwrite")
    ctx.warehouse.drop("token_rows")
    ctx.warehouse.drop("stream_documents")  # the .idx says where documents are


def ingest_sequences_parquet(ctx: StageContext) -> None:
    """A table of (sequence_id|Index, tokens|Tokens[, score columns]) like pile-*-pythia-random-sampled."""
    cfg, spark = ctx.cfg, ctx.spark
    try:
        df = spark.read.parquet(*cfg.input.path)
    except Exception as e:  # noqa: BLE001 - Spark's AnalysisException for missing paths / bad files
        raise InputError(f"cannot read parquet input {cfg.input.path}: {str(e).splitlines()[0]}") from None
    cols = {c.lower(): c for c in df.columns}
    id_col = cols.get("sequence_id") or cols.get("index")
    tok_col = cols.get("tokens")
    if id_col is None or tok_col is None:
        raise InputError(f"parquet input needs columns sequence_id (or Index) and tokens (or Tokens); "
                         f"found {df.columns}")
    tok = load_named(cfg.tokenizer)
    if tok is None:
        raise InputError(f"decoding sequences needs tokenizer {cfg.tokenizer.name!r}, which cannot be loaded "
                         "offline (set tokenizer.name to a local tokenizer.json or a cached HF id)")
    tok_json = _save_tokenizer(ctx, tok)
    rows = df.select(F.col(id_col).cast("long").alias("row_id"),
                     F.col(tok_col).cast("array<int>").alias("tokens"),
                     F.lit(None).cast("string").alias("pile_set_name"))
    short = rows.where(F.size("tokens") < WINDOW_LENGTH).limit(1).collect()
    if short:
        raise InputError(f"sequence {short[0]['row_id']} has {len(short[0]['tokens'])} tokens; "
                         f"sequences need {WINDOW_LENGTH}")
    _write_sequences(ctx, rows, tok_json)
    score_cols = [c for c, t in df.dtypes if c not in (id_col, tok_col) and t in ("double", "float")]
    if score_cols:
        stacked = df.select(F.col(id_col).cast("long").alias("sequence_id"), F.explode(F.array(*[
            F.struct(F.lit(c).alias("model"), F.col(c).cast("double").alias("memorization_score"))
            for c in score_cols])).alias("s")).select("s.model", "sequence_id", "s.memorization_score")
        ctx.warehouse.write(stacked, "published_memorization", mode="overwrite")
