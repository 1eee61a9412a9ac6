"""`sequence_occurrences`: where each sequence's continuation occurs in the training stream, in which document, and
at which training step (beyond.md §1, §2).

The positions come from the duplicate scan (semmem.features.duplicates.sequence_occurrences); this module names the
document of each position. For jsonl input, `stream_documents` lists where every document piece starts in the
stream rows (a piece at offset 0 of each row a document spans), so the document of (row, offset) is the piece of
that row with the largest start <= offset: an equi-join on row_id, never a range join over the stream. For megatron
input the .idx's document index says it (semmem.ingest.megatron.documents_of_rows).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

OCCURRENCE_COLUMNS = ("sequence_id", "rank", "row_id", "offset", "step", "document", "source")


def with_documents(occurrences: DataFrame, documents: DataFrame) -> DataFrame:
    """occurrences (sequence_id, rank, row_id, offset, ...) -> the same rows with `document` ("path:line") and
    `source` (the document's Pile subset) from `stream_documents`; NULL where no piece of the row starts at or before
    the offset (cannot happen for a stream written by ingest: every row has a piece at offset 0)."""
    pieces = documents.select(F.col("row_id").alias("piece_row"), F.col("offset").alias("start"),
                              F.concat_ws(":", "path", F.col("line").cast("string")).alias("document"),
                              F.col("pile_set_name").alias("source"))
    on = (F.col("row_id") == F.col("piece_row")) & (F.col("start") <= F.col("offset"))
    return (occurrences.join(pieces, on, "left").groupBy(*occurrences.columns)
            .agg(F.max_by(F.struct("document", "source"), "start").alias("d"))
            .select(*occurrences.columns, "d.document", "d.source"))
