"""Scratch files: a stage's intermediate rows as plain Parquet beside the tables, so numpy tasks can read them
directly by path (no Delta log to resolve) while Spark reads the same rows; never part of any table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from semmem import storage
from semmem.warehouse.delta_log import DataFile

SCRATCH_DIR = ("_semmem", "scratch")  # intermediate Parquet files of one stage, removed when the stage ends


@dataclass(frozen=True)
class Scratch:
    """Intermediate Parquet files of one stage: their paths (for numpy tasks) and the same rows as a DataFrame."""

    files: list[DataFile]
    df: DataFrame

    @property
    def num_rows(self) -> int:
        """Rows in all files, from their Parquet footers (always recorded for scratch files): no Spark job."""
        return sum(f.num_rows or 0 for f in self.files)


@contextmanager
def scratch_files(spark: SparkSession, warehouse: str, df: DataFrame, *, max_rows_per_file: int | None,
                  partition_by: str | None) -> Iterator[Scratch]:
    """Write `df` under <warehouse>/_semmem/scratch (see `Warehouse.scratch`); removed when the block ends."""
    folder = storage.join(warehouse, *SCRATCH_DIR, uuid.uuid4().hex)
    try:
        writer = df.write.mode("errorifexists")
        if max_rows_per_file:
            writer = writer.option("maxRecordsPerFile", max_rows_per_file)
        if partition_by:
            writer = writer.partitionBy(partition_by)
        writer.parquet(folder)
        files = [f for f, _ in storage.find_files(folder, (".parquet",))]
        yield Scratch([DataFile(f, storage.parquet_file(f).metadata.num_rows) for f in files],
                      spark.read.schema(df.schema).parquet(folder))
    finally:
        storage.delete_dir(folder)
