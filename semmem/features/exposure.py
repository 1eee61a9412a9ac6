"""Exposure: how often, and how recently, a model had seen each sequence's continuation by its checkpoint
(beyond.md §1; issue 22 §2).

Each model trains in an *order*: Pythia (any model trained on the stream as it lies) in the stream's own, where
step s trains rows [s·rows_per_step, (s+1)·rows_per_step) (table `sequence_exposures`, exact per step); the trained
family in the order its trainer drew, recorded at training time (table `family_exposures`, per member). A checkpoint
at step c has trained steps 0..c-1, so an occurrence trained at step s was seen by it when s < c. Per (model,
revision, sequence): exposures_before = the occurrences trained at steps < c (the sequence's own row counts like any
other), first_seen_step and last_seen_step their earliest and latest step, steps_since_last_exposure = c -
last_seen_step, seen_by_checkpoint = exposures_before > 0. All NULL where the checkpoint's step or its order is
unknown; the step columns NULL where never seen.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.features.duplicates import WINDOW

EXPOSURE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("exposures_before", pa.int64()), ("first_seen_step", pa.int64()), ("last_seen_step", pa.int64()),
    ("steps_since_last_exposure", pa.int64()), ("seen_by_checkpoint", pa.bool_()))
STREAM_ORDER = "stream"  # the `order` of models trained on the stream as it lies (training.rows_per_step)


def window_exposures(occurrences: DataFrame, trained: DataFrame, context_length: int) -> DataFrame:
    """(model, sequence_id, step, occurrences): how often each continuation was trained at each step of a model that
    trains on windows of `context_length` tokens. `occurrences`: (sequence_id, row_id, offset), every one;
    `trained`: (model, step, row_id, offset), the stream window each step trained (once per epoch). An occurrence is
    trained with a window when it lies wholly inside it; one straddling two windows is never seen whole."""
    windows = trained.select("model", "step", F.col("row_id").alias("w_row"), F.col("offset").alias("w_start"))
    inside = ((F.col("row_id") == F.col("w_row")) & (F.col("w_start") <= F.col("offset")) &
              (F.col("offset") + WINDOW <= F.col("w_start") + context_length))
    return (occurrences.select("sequence_id", "row_id", "offset").join(windows, inside)
            .groupBy("model", "sequence_id", "step")
            .agg(F.count(F.lit(1)).alias("occurrences")))


def with_exposures(label_rows: DataFrame, exposures: DataFrame, checkpoints: DataFrame) -> DataFrame:
    """label_rows (model, revision, sequence_id, ...) + EXPOSURE_COLUMNS.

    `exposures`: (order, sequence_id, step, occurrences); `checkpoints`: (model, revision, checkpoint_step, order),
    one row per model@revision (a NULL step: unknown, every exposure column NULL)."""
    rows = label_rows.join(F.broadcast(checkpoints), ["model", "revision"], "left")
    key = ["model", "revision", "sequence_id"]
    seen = (rows.select(*key, "checkpoint_step", "order").join(exposures, ["order", "sequence_id"])
            .where(F.col("step") < F.col("checkpoint_step"))
            .groupBy(*key).agg(F.sum("occurrences").alias("_n"), F.min("step").alias("first_seen_step"),
                               F.max("step").alias("last_seen_step")))
    known = F.col("checkpoint_step").isNotNull()
    before = F.when(known, F.coalesce(F.col("_n"), F.lit(0))).cast("bigint")
    return (rows.join(seen, key, "left")
            .withColumn("exposures_before", before)
            .withColumn("steps_since_last_exposure", F.col("checkpoint_step") - F.col("last_seen_step"))
            .withColumn("seen_by_checkpoint", before > 0)
            .drop("_n", "checkpoint_step", "order"))
