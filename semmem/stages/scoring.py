"""Stages `train_model` (the embedded default model) and `score` (memorization + perplexities per model@revision)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from semmem.errors import ConfigError
from semmem.ingest.tokenizer import saved_tokenizer_path
from semmem.scoring.models import check_model_available, models_dir, parse_model_spec
from semmem.stages.registry import StageContext, stage

log = logging.getLogger(__name__)


def _stream_identity(ctx: StageContext) -> str:
    wh = ctx.warehouse
    for name in ("stream_sources", "token_rows"):
        if wh.exists(name):
            return f"{name}@{wh.version(name)}"
    return "none"


@stage("train_model", inputs=("stream",), outputs=())
def train_model_stage(ctx: StageContext) -> None:
    """Train the tiny GPT-NeoX of train_model.* on the training stream; saved under <warehouse>/_semmem/models/<name>.

    Skipped when model.names does not mention train_model.name (nothing would use it), and when the saved model was
    trained with the same parameters on the same stream version (train_model.force=true retrains).
    """
    import numpy as np

    from semmem.ingest.stream import read_stream
    from semmem.scoring.train import TrainParams, fingerprint, is_up_to_date, save_trained, train_model, \
        windows_from_rows

    tcfg = ctx.cfg.train_model
    out_dir = models_dir(ctx.warehouse.root) / tcfg.name
    if ctx.cfg.model.names and tcfg.name not in ctx.cfg.model.names:
        log.info("train_model: skipped, model.names does not use %r", tcfg.name)
        return
    params = TrainParams(hidden_size=tcfg.hidden_size, num_layers=tcfg.num_layers, num_heads=tcfg.num_heads,
                         context_length=tcfg.context_length, epochs=tcfg.epochs, batch_size=tcfg.batch_size,
                         learning_rate=tcfg.learning_rate, seed=tcfg.seed)
    tok_path = saved_tokenizer_path(ctx.warehouse.root)
    stream = read_stream(ctx.warehouse, ctx.cfg).select("row_id", "tokens")
    if tcfg.max_rows is not None:
        stream = stream.where(stream.row_id < tcfg.max_rows)
    vocab = _vocab_size(tok_path)
    fp = fingerprint(params, vocab or -1, f"{_stream_identity(ctx)}:{tcfg.max_rows}")
    if not tcfg.force and is_up_to_date(out_dir, fp):
        log.info("train_model: %s is up to date (fingerprint %s)", out_dir, fp)
        return
    # The trainer is one process: the stream comes to the driver in row order, one Arrow batch at a time. Meant for
    # samples (the bundled one is ~350 rows); cap big streams with train_model.max_rows.
    rows = [np.asarray(r.tokens, dtype=np.int64) for r in stream.orderBy("row_id").toLocalIterator()]
    windows = windows_from_rows(rows, params.context_length)
    if vocab is None:
        vocab = int(windows.max()) + 1
        log.warning("train_model: no saved tokenizer at %s; vocab size %d taken from the stream", tok_path, vocab)
    model, summary = train_model(windows, vocab, params, eod_id=ctx.cfg.stream.eod_id, pad_id=1,
                                 threads=os.cpu_count())
    save_trained(model, out_dir, summary=summary, fp=fp, tokenizer_file=tok_path)
    log.info("train_model: saved %s (%d windows, loss %s, %.0f s)", out_dir, summary["windows"],
             [round(x, 3) for x in summary["epoch_loss"]], summary["seconds"])


def _vocab_size(tok_path: Path) -> int | None:
    if not tok_path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok_path)).get_vocab_size()


@stage("score", inputs=("sequences",), outputs=("memorization",))
def score_stage(ctx: StageContext) -> None:
    """Memorization score, matched prefix and perplexities of every sequence under each model in model.names.

    One partition (model, revision) of table memorization is overwritten per model; other partitions stay.
    """
    from semmem.scoring.memorization import score_sequences

    cfg = ctx.cfg
    if not cfg.model.names:
        raise ConfigError("model.names is empty: list the models to score, e.g. "
                          "--set model.names=EleutherAI/pythia-70m-deduped@step143000, or "
                          f"model.names=[{cfg.train_model.name}] for the model stage train_model makes")
    specs = [parse_model_spec(n, ctx.warehouse.root, cfg.train_model.name) for n in cfg.model.names]
    sequences = ctx.warehouse.read("sequences").select("sequence_id", "tokens")
    for spec in specs:
        check_model_available(spec)  # on the driver: a clear error before any executor starts loading weights
        scored = score_sequences(sequences, spec, mode=cfg.score.mode,
                                 upstream_perplexity=cfg.score.upstream_perplexity, eod_id=cfg.stream.eod_id,
                                 batch_size=cfg.score.batch_size, dtype=cfg.model.dtype, device=cfg.model.device)
        version = ctx.warehouse.write(scored, "memorization", mode="overwrite",
                                      partition={"model": spec.model, "revision": spec.revision})
        log.info("score: %s@%s -> memorization version %d", spec.model, spec.revision, version)
