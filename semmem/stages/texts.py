"""Stage `texts` (`semmem texts`): a user's texts scored against models beside the corpus, never over it.

texts.path (jsonl) -> texts, text_windows (with each window's count in the training stream, when the warehouse has
one made with the same tokenizer), text_memorization (per model@revision and window), text_answers (per text). The
corpus tables and everything derived from them keep their versions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from tokenizers import Tokenizer

from semmem.catalog import table
from semmem.errors import ConfigError, InputError, ModelError
from semmem.ingest import pile
from semmem.ingest import texts as tx
from semmem.ingest.sequences import WINDOW_LENGTH
from semmem.ingest.tokenizer import saved_tokenizer_json, tokenizer_digest
from semmem.progress import progress
from semmem.scoring.memorization import score_windows
from semmem.scoring.models import ModelSpec, check_model_available, model_tokenizer
from semmem.spark import model_tasks, one_task_each
from semmem.stages.corpus import duplicate_counts
from semmem.stages.registry import StageContext, stage
from semmem.stages.scoring import model_specs, model_weights

log = logging.getLogger(__name__)


@stage("texts", inputs=(), outputs=("texts", "text_windows", "text_memorization", "text_answers"), default=False,
       config=("texts", "model", "score", "duplicates", "train_model"), reads_also=("model_family", "stream"),
       reads_files="texts.path", artifacts=lambda ctx: model_weights(ctx, ctx.cfg.texts.models))
def texts_stage(ctx: StageContext) -> None:
    """Score your own texts (texts.path) with texts.models, beside the corpus -> texts, text_windows, ..."""
    cfg = ctx.cfg
    if not cfg.texts.path:
        raise ConfigError("texts.path is empty: give the jsonl files of texts to score (`semmem texts FILE.jsonl`)")
    if not cfg.texts.models:
        raise ConfigError("texts.models is empty: name the model(s) to score the texts with (`semmem texts --model "
                          "trained-l@step4108 FILE.jsonl`)")
    specs = model_specs(ctx, cfg.texts.models)
    for spec in specs:
        check_model_available(spec)  # a model that cannot be had says how to get it, before its tokenizer is looked for
    tok, where = shared_tokenizer(specs)
    digest = tokenizer_digest(tok)
    log.info("texts: tokenizer %s (digest %s), the one %s ships", where, digest,
             specs[0].model if len(specs) == 1 else "every model")
    paths = pile.find_shards(cfg.texts.path)
    log.info("texts: %d file(s) of texts", len(paths))
    files = one_task_each(ctx.spark, list(enumerate(paths)), "shard_id int, path string")
    counter = ctx.spark.sparkContext.accumulator(0)
    lines = files.mapInArrow(partial(tx.read_texts, tokenizer_json=tok.to_str(), batch_size=512, counter=counter),
                             from_arrow_schema(tx.TEXT_SCHEMA)).persist(StorageLevel.DISK_ONLY)
    try:  # the tokenized lines are read for the checks, then for the tables: kept on the executors' disks
        with progress(ctx.spark, "texts: read and tokenize", rows=counter, unit="lines"):
            numbered = _checked(lines, files, paths)
        _write_texts(ctx, numbered, tok, digest, specs)
    finally:
        lines.unpersist()


def shared_tokenizer(specs: list[ModelSpec]) -> tuple[Tokenizer, str]:
    """The tokenizer every model of `specs` ships (compared by digest), or a ModelError naming what is missing or
    which two differ: texts are never tokenized with a tokenizer a model was not trained with."""
    found = []
    for spec in specs:
        shipped = model_tokenizer(spec)
        if shipped is None:
            raise ModelError(f"model {spec.model}@{spec.revision} ships no tokenizer ({spec.source} has no "
                             "tokenizer.json, or the hub tokenizer is not in the local cache): the texts must be "
                             "tokenized with the tokenizer the model was trained with; save it beside the weights "
                             "(tokenizer.save_pretrained(folder))")
        found.append((spec, *shipped))
    first = found[0]
    for other in found[1:]:
        if tokenizer_digest(other[1]) != tokenizer_digest(first[1]):
            raise ModelError(f"models {first[0].model}@{first[0].revision} ({first[2]}) and {other[0].model}@"
                             f"{other[0].revision} ({other[2]}) use different tokenizers; run `semmem texts` once "
                             "per tokenizer")
    return first[1], first[2]


def _checked(lines: DataFrame, files: DataFrame, paths: list[str]) -> DataFrame:
    """The good lines numbered in file order (text_id) with their file's path; a bad line, an empty file or no text
    at all is an InputError naming the file and line, before anything is written."""
    per_file = lines.groupBy("shard_id").agg(
        F.count(F.when(F.col("reject_reason").isNull(), 1)).alias("good"),
        F.count("reject_reason").alias("rejects"), F.count("id").alias("with_id")).collect()  # a row per file
    if sum(r["rejects"] for r in per_file):
        first = (lines.where(F.col("reject_reason").isNotNull()).join(files, "shard_id")
                 .orderBy("shard_id", "line").limit(1).collect()[0])
        where = f"line {first['line']}" if first["line"] else "file"
        raise InputError(f"{first['path']} {where}: {first['reject_reason']} ({first['reject_detail']}); nothing "
                         "was written")
    good = {r["shard_id"]: r["good"] for r in per_file}
    n_good, n_ids = sum(good.values()), sum(r["with_id"] for r in per_file)
    if n_good == 0:
        raise InputError(f"no text in {', '.join(paths)}")
    if n_ids and n_ids < n_good:
        raise InputError(f"{n_ids} of {n_good} lines have an 'id': give every line an integer id, or none")
    starts = np.concatenate([[0], np.cumsum([good.get(i, 0) for i in range(len(paths))])[:-1]])
    text_id = F.element_at(F.array(*[F.lit(int(x)) for x in starts]), F.col("shard_id") + 1) + F.col("record")
    return (lines.where(F.col("reject_reason").isNull()).join(files, "shard_id")
            .withColumn("text_id", text_id.cast("long")))


def _write_texts(ctx: StageContext, lines: DataFrame, tok: Tokenizer, digest: str, specs: list[ModelSpec]) -> None:
    cfg, wh = ctx.cfg, ctx.warehouse
    wh.write(lines.select("text_id", "id", "path", "line", "text", F.size("tokens").cast("int").alias("n_tokens"),
                          F.lit(digest).alias("tokenizer")), "texts", mode="overwrite")
    windows = lines.select("text_id", "tokens", "starts", "ends").mapInArrow(
        partial(tx.text_windows, stride=cfg.texts.stride), from_arrow_schema(tx.WINDOW_SCHEMA))
    with _stream_counts(ctx, windows, digest) as counts, progress(ctx.spark, "texts: windows and stream counts"):
        wh.write(windows.join(counts, "key", "left").drop("key"), "text_windows", mode="overwrite")
    stored = wh.read("text_windows")
    keyed = stored.select(_key().alias("key"), "tokens")
    frames = []
    for spec in specs:
        scores = score_windows(model_tasks(keyed, "key"), spec, mode=cfg.score.mode, batch_size=cfg.score.batch_size,
                               dtype=cfg.model.dtype, device=cfg.model.device, tokenizer_vocab=tok.get_vocab_size())
        frames.append(scores.select(
            F.lit(spec.model).alias("model"), F.lit(spec.revision).alias("revision"),
            F.shiftright("key", tx.MAX_WINDOWS_BITS).alias("text_id"),
            (F.col("key").bitwiseAND((1 << tx.MAX_WINDOWS_BITS) - 1)).cast("int").alias("window"),
            "continuation_length", "memorization_score",
            (F.col("matched_prefix") == F.col("continuation_length")).alias("is_memorized"), "matched_prefix",
            F.log("generation_perplexity").alias("loss"), "prompt_perplexity", "generation_perplexity",
            "sequence_perplexity", "continuation_nll_bits"))
    scored = frames[0]
    for f in frames[1:]:
        scored = scored.unionByName(f)
    with progress(ctx.spark, f"texts: score with {len(specs)} model(s)"):
        wh.write(scored, "text_memorization", mode="overwrite")
    per_window = wh.read("text_memorization").join(
        stored.select("text_id", "window", "token_start", "n_tokens", "continuation_start",
                      "continuation_char_start", "char_end", "stream_count"), ["text_id", "window"])
    answers = per_window.groupBy("model", "revision", "text_id").applyInPandas(
        _answer, table("text_answers").spark_schema)
    wh.write(answers, "text_answers", mode="overwrite")


def _key() -> F.Column:
    return F.shiftleft(F.col("text_id"), tx.MAX_WINDOWS_BITS).bitwiseOR(F.col("window").cast("long"))


def _answer(group: pd.DataFrame) -> pd.DataFrame:
    """applyInPandas body: one text's windows under one model -> its row of text_answers."""
    row = {"model": group["model"].iloc[0], "revision": group["revision"].iloc[0],
           "text_id": group["text_id"].iloc[0], **tx.text_answer(group)}
    return pd.DataFrame([row], columns=table("text_answers").columns)


@contextmanager
def _stream_counts(ctx: StageContext, windows: DataFrame, digest: str) -> Iterator[DataFrame]:
    """(key, stream_count) of the windows whose continuation is 32 tokens, counted in the warehouse's training
    stream by the duplicate scan, to be read inside the block; empty (so NULL counts) when there is no stream or it
    was made with another tokenizer (said in the log)."""
    from semmem.ingest.stream import read_stream, stream_shards

    wh, cfg = ctx.warehouse, ctx.cfg
    source = next((t for t in ("token_rows", "stream_sources") if wh.exists(t)), None)
    stream_json = saved_tokenizer_json(wh.root, wh.side_file(source, "tokenizer")) if source else None
    if source is None or stream_json is None or tokenizer_digest(Tokenizer.from_str(stream_json)) != digest:
        log.info("texts: %s: stream_count is NULL", "the warehouse has no training stream" if source is None else
                 "the training stream was tokenized with another tokenizer than the models'")
        yield ctx.spark.createDataFrame([], "key BIGINT, stream_count BIGINT")
        return
    full = windows.where(F.col("n_tokens") == WINDOW_LENGTH).select(F.col("key").alias("sequence_id"), "tokens")
    d = cfg.duplicates
    stream = stream_shards(wh, cfg, d.rows_per_task) if d.direct_read else read_stream(wh, cfg)
    with duplicate_counts(wh, full, stream, d) as counts:
        yield counts.select(F.col("sequence_id").alias("key"), F.col("sequence_duplicates").alias("stream_count"))
