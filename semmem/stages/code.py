"""Stages `train_code_classifier` (the offline code-vs-NL classifier) and `code` (nl_score and is_code per sequence)."""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from semmem import code_classifier as cc
from semmem.artifacts import file_digest, short_sha256
from semmem.errors import ConfigError, ModelError, StageError
from semmem.features import code as cf
from semmem.ingest.tokenizer import saved_tokenizer_json
from semmem.progress import progress
from semmem.spark import spread_partitions
from semmem.stages.registry import StageContext, stage

log = logging.getLogger("semmem")


@dataclass(frozen=True)
class ClassifierInputs:
    """What decides the trained code classifier, and its fingerprint."""

    labels_file: Path | None  # None: pile_set_name of table sequences
    eval_file: Path | None
    tokenizer: str | None  # the warehouse tokenizer's JSON
    source: str  # the labels' identity: a file's digest or the sequences version
    fingerprint: str


def classifier_inputs(ctx: StageContext) -> ClassifierInputs:
    c, wh = ctx.cfg.code_classifier, ctx.warehouse
    labels_file = Path(c.labels).expanduser() if c.labels != "pile_set_name" else None
    eval_file = Path(c.eval_labels).expanduser() if c.eval_labels is not None else None
    tokenizer = saved_tokenizer_json(wh.root, wh.side_file("sequences", "tokenizer"))
    source = f"file sha256:{file_digest(labels_file)}" if labels_file else f"sequences@{wh.version('sequences')}"
    fp = cc.fingerprint({"config": {k: v for k, v in asdict(c).items() if k != "force"}, "labels": source,
                         "tokenizer": short_sha256(tokenizer.encode()) if tokenizer is not None else None})
    return ClassifierInputs(labels_file, eval_file, tokenizer, source, fp)


@stage("train_code_classifier", inputs=("sequences",), outputs=(),
       config=("code_classifier", "code.model", "code.nl_threshold", "code.code_threshold"))
def train_code_classifier(ctx: StageContext) -> None:
    """Fit the offline code-vs-NL classifier (code_classifier.*), saved in <warehouse>/_semmem/models/code-classifier.

    Skipped when code.model names a hub id or folder (nothing would use it), and when the saved classifier was trained
    with the same config on the same labels (code_classifier.force=true retrains).
    """
    c, wh = ctx.cfg.code_classifier, ctx.warehouse
    if ctx.cfg.code.model not in ("auto", "trained"):
        log.info("train_code_classifier: skipped, code.model = %r does not use it", ctx.cfg.code.model)
        return
    folder = cc.trained_classifier_dir(wh.root)
    made_from = classifier_inputs(ctx)
    labels_file, eval_file, tokenizer = made_from.labels_file, made_from.eval_file, made_from.tokenizer
    if labels_file is not None and eval_file is not None and labels_file.resolve() == eval_file.resolve():
        raise ConfigError(f"code_classifier.labels and code_classifier.eval_labels are the same file ({labels_file}): "
                          "the human labels are for evaluation only; train on pile_set_name or another file")
    source, fp = made_from.source, made_from.fingerprint
    if not c.force and cc.is_up_to_date(folder, fp):
        log.info("train_code_classifier: %s is up to date (fingerprint %s)", folder, fp)
        return
    human, window = _human_labels(eval_file, tokenizer)
    if labels_file is not None:
        texts, labels = _file_rows(labels_file, c.max_train_rows, c.seed)
    else:
        texts, labels = _pile_set_rows(ctx)
    texts, labels, dropped = _without(texts, labels, human[0] if human else [])
    trained = cf.train_classifier(texts, labels, holdout_fraction=c.holdout_fraction, seed=c.seed,
                                  nl_threshold=ctx.cfg.code.nl_threshold, code_threshold=ctx.cfg.code.code_threshold,
                                  human=human)
    extra = {"labels": c.labels if labels_file is None else str(labels_file), "labels_source": source,
             "code_sets": c.code_sets if labels_file is None else None, "dropped_eval_texts": dropped,
             "eval_labels": str(eval_file) if eval_file else None, "eval_window": window,
             "upstream_f1": {"value": cf.UPSTREAM_F1, "model": cf.UPSTREAM_MODEL,
                             "what": "F1 for the natural-language class at the best threshold on the same human "
                                     "labels (compare with human_labels.f1_nl_best_threshold)"}}
    cc.save_classifier(trained, folder, fp=fp, extra=extra)
    m = trained.metrics
    log.info("train_code_classifier: saved %s (%s, %d training texts): held-out F1(code) %.3f, human labels F1(code) "
             "%s", folder, m["variant"], m["rows"]["train_final"], m["held_out"]["f1_code"],
             f"{m['human_labels']['f1_code']:.3f}" if human else "not evaluated")


def _pile_set_rows(ctx: StageContext) -> tuple[list[str], list[int]]:
    """Labelled sequences (pile_set_name in code_sets -> code, other names -> NL, NULL left out): at most
    max_train_rows of them, the smallest seeded hashes of sequence_id, chosen by Spark before anything is collected."""
    c = ctx.cfg.code_classifier
    seqs = ctx.warehouse.read("sequences").where(F.col("pile_set_name").isNotNull())
    picked = (seqs.select(F.coalesce(F.col("text"), F.lit("")).alias("text"),
                          F.col("pile_set_name").isin(c.code_sets).cast("int").alias("label"),
                          F.xxhash64("sequence_id", F.lit(c.seed)).alias("key"), "sequence_id")
              .orderBy("key", "sequence_id").limit(c.max_train_rows))
    rows = picked.select("text", "label").collect()
    cf.check_classes([r.label for r in rows], f"pile_set_name of table sequences (code sets {c.code_sets})")
    return [r.text for r in rows], [int(r.label) for r in rows]


def _file_rows(path: Path, max_rows: int, seed: int) -> tuple[list[str], list[int]]:
    texts, labels = cc.read_labels_file(path)
    cf.check_classes(labels, str(path))
    if len(texts) > max_rows:
        keep = sorted(random.Random(seed).sample(range(len(texts)), max_rows))
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    return texts, [int(y) for y in labels]


def _human_labels(eval_file: Path | None, tokenizer: str | None
                  ) -> tuple[tuple[list[str], list[int]] | None, str | None]:
    """The labelled human texts cut to the pipeline's 64-token window (full texts when the warehouse has no
    tokenizer), and a word on which."""
    if eval_file is None:
        return None, None
    texts, labels = cc.read_labels_file(eval_file, allow_unlabelled=True)
    keep = [i for i, y in enumerate(labels) if y is not None]
    texts, known = [texts[i] for i in keep], [int(labels[i]) for i in keep]  # type: ignore[arg-type]
    if tokenizer is None:
        log.warning("train_code_classifier: the warehouse has no tokenizer; evaluating on the full human-labelled "
                    "texts")
        return (texts, known), "full text (no warehouse tokenizer)"
    return (cf.window_texts(texts, tokenizer), known), "first 64 tokens (the warehouse tokenizer)"


def _without(texts: list[str], labels: list[int], held: list[str]) -> tuple[list[str], list[int], int]:
    """Training rows minus any whose text (whitespace-collapsed) is an evaluation text: a corpus that contains the
    human-labelled Pile windows must not train on them."""
    banned = {" ".join(t.split()) for t in held}
    keep = [i for i, t in enumerate(texts) if " ".join(t.split()) not in banned]
    if len(keep) < len(texts):
        log.info("train_code_classifier: left out %d training texts equal to human-labelled ones",
                 len(texts) - len(keep))
    return [texts[i] for i in keep], [labels[i] for i in keep], len(texts) - len(keep)


def _code_model(ctx: StageContext) -> dict[str, str]:
    """The classifier code.model names: its hub commit or weights digest; for the trained one, the fingerprint of
    the classifier the config and labels make now (so an edited labels file makes code_scores stale at once)."""
    name, trained = ctx.cfg.code.model, cc.trained_classifier_dir(ctx.warehouse.root)
    try:
        model = cc.resolve_code_model(name, ctx.warehouse.root)
    except ModelError:
        if name not in ("auto", "trained"):
            raise
        model = None  # not trained yet
    if model is None or model.path == trained:
        return {"code model": f"trained classifier {classifier_inputs(ctx).fingerprint}"}
    return {"code model": model.version}


@stage("code", inputs=("sequences",), outputs=("code_scores",), config=("code",), artifacts=_code_model)
def code(ctx: StageContext) -> None:
    """P(natural language) of every sequence's text and its code / NL / uncertain flag -> code_scores (spec §2.6)."""
    c, wh = ctx.cfg.code, ctx.warehouse
    cf.check_thresholds(c.nl_threshold, c.code_threshold)
    model = cc.resolve_code_model(c.model, wh.root)  # on the driver: a clear error before executors load it
    wanted = wh.run_artifacts().get("code model")  # what this run's lineage records (_code_model)
    if model.path == cc.trained_classifier_dir(wh.root) and wanted not in (None, f"trained classifier {model.version}"):
        raise StageError(f"the trained code classifier at {model.path} was made from other labels or settings than "
                         "code_classifier.* give now; run stage 'train_code_classifier' first")
    log.info("code: %s (%s classifier, version %s) from %s", model.name, model.kind, model.version, model.path)
    texts = ctx.spark.sparkContext.accumulator(0)
    out = cf.code_scores(wh.read("sequences"), model, nl_threshold=c.nl_threshold, code_threshold=c.code_threshold,
                         batch_size=c.batch_size, device=c.device, counter=texts,
                         partitions=spread_partitions(ctx.spark))
    meta: dict[str, Any] = {
        "stage": "code", "model": model.name, "kind": model.kind, "model_version": model.version,
        "model_path": model.path, "metrics": model.metrics_path, "nl_threshold": c.nl_threshold,
        "code_threshold": c.code_threshold, "sequences_version": wh.version("sequences")}
    with progress(ctx.spark, "code", rows=texts, unit="distinct texts"):
        wh.write(out, "code_scores", mode="overwrite", metadata=meta)
