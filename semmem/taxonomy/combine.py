"""The `combined` table (spec §3, §4.1): every feature of every scored sequence, one row per model@revision.

Labels come from `memorization` (one partition per model@revision) and, when the input came with published scores,
from `published_memorization` (revision "published": is_memorized = score == 1, no perplexities). Every feature
table is left-joined on sequence_id after its duplicate ids are removed (deterministically: the row that sorts first
on all columns is kept), and the category of spec §3 is added. Nothing is collected: all joins run in Spark.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from semmem.catalog import table
from semmem.errors import StageError
from semmem.features.declarations import FEATURE_BY_TABLE, FEATURE_TABLES
from semmem.features.exposure import EXPOSURE_COLUMNS, with_exposures
from semmem.taxonomy.vocabulary import category_column, guess_recall_column

LABEL_COLUMNS = tuple(c.name for c in FEATURE_BY_TABLE["memorization"].columns)


@dataclass(frozen=True)
class Deduplicated:
    df: DataFrame
    removed: int  # rows dropped because their key repeated


def deduplicate(df: DataFrame, key: list[str]) -> Deduplicated:
    """One row per key: the one that sorts first on all its columns (deterministic whatever the partitioning)."""
    removed = df.groupBy(*key).count().where(F.col("count") > 1).agg(F.sum(F.col("count") - 1)).first()[0] or 0
    if not removed:
        return Deduplicated(df, 0)
    others = [F.col(c).asc_nulls_last() for c in df.columns if c not in key and not _is_complex(df, c)]
    first = F.row_number().over(Window.partitionBy(*key).orderBy(*others))
    return Deduplicated(df.withColumn("_rank", first).where(F.col("_rank") == 1).drop("_rank"), int(removed))


def _is_complex(df: DataFrame, column: str) -> bool:
    return df.schema[column].dataType.typeName() in ("array", "map", "struct")


def labels(memorization: DataFrame | None, published: DataFrame | None) -> DataFrame:
    """(model, revision, sequence_id, LABEL_COLUMNS...) from the scored models and the published scores."""
    frames = []
    if memorization is not None:
        frames.append(memorization.select("model", "revision", "sequence_id", *LABEL_COLUMNS))
    if published is not None:
        score = F.col("memorization_score")
        types = {f.name: f.dataType for f in table("memorization").spark_schema.fields}
        frames.append(published.select(
            "model", F.lit("published").alias("revision"), "sequence_id", score,
            (score >= 1.0).alias("is_memorized"),
            *[F.lit(None).cast(types[c]).alias(c) for c in LABEL_COLUMNS[2:]]))
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def null_columns(name: str) -> list[Column]:
    """The columns table `name` would add to `combined`, as typed NULLs (for a table allowed to be missing)."""
    declared = FEATURE_BY_TABLE[name]
    return [F.lit(None).cast(f.dataType).alias(f.name) for f in table(name).spark_schema.fields
            if f.name != "sequence_id" and declared.enters_combined(f.name)]


def memorized_bits(label_rows: DataFrame, reference: tuple[str, str] | None) -> DataFrame:
    """label_rows + memorized_bits = max(0, NLL_ref - NLL_model) in bits over the continuation (Morris et al.'s
    memorization of a sequence relative to a reference model), NULL without a reference or a score of it."""
    if reference is None:
        return label_rows.withColumn("memorized_bits", F.lit(None).cast("double"))
    ref = (label_rows.where((F.col("model") == reference[0]) & (F.col("revision") == reference[1]))
           .select("sequence_id", F.col("continuation_nll_bits").alias("_ref_bits")))
    bits = F.greatest(F.lit(0.0), F.col("_ref_bits") - F.col("continuation_nll_bits"))
    return label_rows.join(ref, "sequence_id", "left").withColumn("memorized_bits", bits).drop("_ref_bits")


def category_counts(combined: DataFrame) -> DataFrame:
    """category_counts rows: per model@revision and category, the sequences and the memorized ones (a NULL label
    counts as a sequence, not as memorized). A few rows per model@revision, whatever the corpus size."""
    return (combined.groupBy("model", "revision", "category")
            .agg(F.count(F.lit(1)).alias("sequences"),
                 F.coalesce(F.sum(F.col("is_memorized").cast("long")), F.lit(0)).alias("memorized")))


def taxonomy_contingency(combined: DataFrame) -> DataFrame:
    """taxonomy_contingency rows: per model@revision, the sequences in each pair of the paper's category and the
    Guess / Recall one (beyond.md §4): how the two taxonomies split the same sequences. At most 4 x 4 rows each."""
    return (combined.groupBy("model", "revision", "category", "category_guess_recall")
            .agg(F.count(F.lit(1)).alias("sequences")))


def combine(label_rows: DataFrame, sequences: DataFrame, features: dict[str, DataFrame | None],
            duplicate_threshold: int, reference: tuple[str, str] | None = None,
            exposures: DataFrame | None = None, checkpoints: DataFrame | None = None,
            guess_rouge_threshold: float = 0.5) -> DataFrame:
    """The combined rows: labels x sequences (pile_set_name) x each feature table (None: NULL columns), + category
    and category_guess_recall (the second taxonomy, at `guess_rouge_threshold`),
    + the exposure columns at each checkpoint (semmem.features.exposure.with_exposures; NULL without `exposures`
    and `checkpoints`), + memorized_bits against the `reference` (model, revision).

    `features` maps each FEATURE_TABLES name to its deduplicated rows; of each, the columns its declaration lets
    into `combined` are kept, and a column it does not declare is a StageError (never silently dropped)."""
    if exposures is not None and checkpoints is not None:
        label_rows = with_exposures(label_rows, exposures, checkpoints)
    else:
        types = table("combined").spark_schema
        label_rows = label_rows.select("*", *[F.lit(None).cast(types[c].dataType).alias(c)
                                              for c, _ in EXPOSURE_COLUMNS])
    out = memorized_bits(label_rows, reference).join(sequences.select("sequence_id", "pile_set_name"), "sequence_id",
                                                     "left")
    for name in FEATURE_TABLES:
        df, declared = features.get(name), FEATURE_BY_TABLE[name]
        if df is None:
            out = out.select("*", *null_columns(name))
            continue
        unknown = [c for c in df.columns if c != "sequence_id" and not declared.declares(c)]
        if unknown:
            raise StageError(f"combine: table {name} has column(s) {', '.join(unknown)} that its declaration "
                             "(semmem.features.declarations) does not list; declare each, and whether it enters "
                             "combined")
        out = out.join(df.select("sequence_id", *[c for c in df.columns if declared.enters_combined(c)]),
                       "sequence_id", "left")
    return out.withColumns({"category": category_column(duplicate_threshold),
                            "category_guess_recall": guess_recall_column(guess_rouge_threshold)})
