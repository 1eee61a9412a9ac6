"""The two writers of the same Delta tables, behind one interface (read, commit, restore); the only place that asks
which one runs:
- delta-spark (`format("delta")`) when the Delta jar is on the classpath (clusters);
- delta-rs otherwise: Spark writes Parquet files in parallel into a fresh folder inside the table, then the driver
  commits exactly those files to the Delta log in one transaction. Nothing is collected on the driver but file
  footers. A job that fails before the commit leaves the previous version untouched (its files are removed).
Each reads what the other wrote.
"""

from __future__ import annotations

import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import unquote

import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from semmem import storage
from semmem.catalog import TableDef
from semmem.errors import TableError
from semmem.spark import delta_jar_available
from semmem.warehouse.delta_log import (add_actions, delta_table, file_location, is_delta_table, latest_version,
                                        table_path)
from semmem.warehouse.publications import concurrent_writer

log = logging.getLogger(__name__)

WriteMode = Literal["error", "overwrite", "append"]
BackendChoice = Literal["auto", "delta-spark", "delta-rs"]
STAGING_PREFIX = "_semmem_write_"  # never referenced by the log until committed


class DeltaBackend(ABC):
    """Reads and writes the catalog tables of one warehouse folder through one Spark session."""

    name: str

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root

    def path(self, name: str) -> str:
        return table_path(self.root, name)

    @abstractmethod
    def read(self, dt: DeltaTable, tdef: TableDef) -> DataFrame:
        """The snapshot `dt` of table `tdef`, with exactly the catalog's columns and types."""

    def commit(self, df: DataFrame, tdef: TableDef, mode: WriteMode, partition: dict[str, str] | None,
               user_metadata: str | None) -> int:
        """Write `df` (conformed to the catalog, only `partition`'s rows when given) as table `tdef` in one Delta
        commit recording `user_metadata`; returns the new version. Modes as in `Warehouse.write`."""
        name = tdef.name
        if partition is not None:
            if mode != "overwrite":
                raise TableError(f"writing {name!r}: a partition can only be given with mode='overwrite'")
            if set(partition) != set(tdef.partition_by):
                raise TableError(f"writing {name!r}: partition keys {sorted(partition)} must be exactly "
                                 f"{list(tdef.partition_by)}")
        if mode == "error" and is_delta_table(self.path(name)):
            raise TableError(f"table {name!r} already exists at {self.path(name)} (use mode='overwrite')")
        df = conform(df, tdef)
        if partition is not None:
            df = df.where(_partition_predicate(partition))
        start = time.monotonic()
        version = self.write(df, tdef, mode, partition, user_metadata)
        log.info("wrote %s version %d in %.1f s", name, version, time.monotonic() - start)
        return version

    @abstractmethod
    def write(self, df: DataFrame, tdef: TableDef, mode: WriteMode, partition: dict[str, str] | None,
              user_metadata: str | None) -> int:
        """One Delta commit of `df` as it is (already conformed); returns the new version."""

    def restore(self, tdef: TableDef, version: int | None, user_metadata: str) -> int:
        """Make table `tdef` hold `version` again (empty when None) as a new commit recording `user_metadata`;
        returns that commit's version."""
        if version is None:
            empty = self.spark.createDataFrame([], tdef.spark_schema)
            return self.write(empty, tdef, "overwrite", None, user_metadata)
        self.restore_version(self.path(tdef.name), version, user_metadata)
        return latest_version(self.path(tdef.name))  # type: ignore[return-value]

    @abstractmethod
    def restore_version(self, path: str, version: int, user_metadata: str) -> None:
        """Delta RESTORE of the table at `path` to `version`."""


class DeltaSparkBackend(DeltaBackend):
    """delta-spark: `format("delta")`, one partition replaced with `replaceWhere`, RESTORE in Spark SQL."""

    name = "delta-spark"

    def read(self, dt: DeltaTable, tdef: TableDef) -> DataFrame:
        reader = self.spark.read.format("delta").option("versionAsOf", dt.version())
        return conform(reader.load(self.path(tdef.name)), tdef)

    def write(self, df: DataFrame, tdef: TableDef, mode: WriteMode, partition: dict[str, str] | None,
              user_metadata: str | None) -> int:
        writer = df.write.format("delta").mode("append" if mode == "append" else "overwrite")
        if tdef.threshold_prefixes and mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")  # other thresholds: other columns
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        if tdef.partition_by:
            writer = writer.partitionBy(*tdef.partition_by)
        if partition is not None:
            writer = writer.option("replaceWhere", _partition_sql(partition))
        writer.save(self.path(tdef.name))
        return latest_version(self.path(tdef.name))  # type: ignore[return-value]

    def restore_version(self, path: str, version: int, user_metadata: str) -> None:
        key = "spark.databricks.delta.commitInfo.userMetadata"  # RESTORE takes no userMetadata option
        self.spark.conf.set(key, user_metadata)
        try:
            self.spark.sql(f"RESTORE TABLE delta.`{path}` TO VERSION AS OF {version}")
        finally:
            self.spark.conf.unset(key)


class DeltaRsBackend(DeltaBackend):
    """delta-rs: Spark writes plain Parquet into a staging folder of the table, the driver commits those files."""

    name = "delta-rs"

    def read(self, dt: DeltaTable, tdef: TableDef) -> DataFrame:
        data_schema = StructType([f for f in tdef.spark_schema.fields if f.name not in tdef.partition_by])
        if not tdef.partition_by:
            uris = dt.file_uris()
            if not uris:
                return self.spark.createDataFrame([], tdef.spark_schema)
            return conform(self.spark.read.schema(data_schema).parquet(*uris), tdef)
        groups: dict[tuple[str | None, ...], list[str]] = {}  # partition values are in the log, not in the files
        for add in add_actions(dt).to_pylist():
            values = tuple(add.get(f"partition.{c}") for c in tdef.partition_by)
            groups.setdefault(values, []).append(file_location(self.path(tdef.name), add["path"]))
        frames = []
        for values, uris in sorted(groups.items(), key=lambda kv: str(kv[0])):
            df = self.spark.read.schema(data_schema).parquet(*uris)
            for col, value in zip(tdef.partition_by, values):
                df = df.withColumn(col, F.lit(value))
            frames.append(conform(df, tdef))
        if not frames:
            return self.spark.createDataFrame([], tdef.spark_schema)
        out = frames[0]
        for f in frames[1:]:
            out = out.unionByName(f)
        return out

    def write(self, df: DataFrame, tdef: TableDef, mode: WriteMode, partition: dict[str, str] | None,
              user_metadata: str | None) -> int:
        root = self.path(tdef.name)
        staging = storage.join(root, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        try:
            writer = df.write.mode("errorifexists")
            if tdef.partition_by:
                writer = writer.partitionBy(*tdef.partition_by)
            writer.parquet(staging)
            adds = _staged_add_actions(root, staging, tdef)
            if partition is not None:
                stray = {tuple(a.partition_values.items()) for a in adds} - {tuple(partition.items())}
                if stray:
                    raise TableError(f"writing {tdef.name!r}: rows outside partition {partition}: {sorted(stray)}")
            schema = DeltaSchema.from_arrow(tdef.schema)
            props = CommitProperties(custom_metadata={"userMetadata": user_metadata}) if user_metadata else None
            if not is_delta_table(root):
                create_table_with_add_actions(root, schema, adds, mode="error",
                                              partition_by=list(tdef.partition_by) or None, commit_properties=props,
                                              storage_options=storage.delta_options(root))
            else:
                dt = delta_table(root)
                filters = [(k, "=", v) for k, v in partition.items()] if partition is not None else None
                dt.create_write_transaction(adds, mode="append" if mode == "append" else "overwrite",
                                            schema=schema, partition_by=list(tdef.partition_by) or None,
                                            partition_filters=filters, commit_properties=props)
        except CommitFailedError as e:
            storage.delete_dir(staging)
            raise concurrent_writer(tdef.name, None, latest_version(root)) from e
        except BaseException:
            storage.delete_dir(staging)  # the previous version stays as it was
            raise
        return delta_table(root).version()

    def restore_version(self, path: str, version: int, user_metadata: str) -> None:
        delta_table(path).restore(version, commit_properties=CommitProperties(
            custom_metadata={"userMetadata": user_metadata}))


def choose_backend(spark: SparkSession, root: str, choice: BackendChoice) -> DeltaBackend:
    """The backend `choice` names; "auto": delta-spark when the session has the Delta jar, else delta-rs."""
    if choice == "delta-rs" or (choice == "auto" and not delta_jar_available(spark)):
        return DeltaRsBackend(spark, root)
    if choice == "delta-spark" and not delta_jar_available(spark):
        raise TableError("warehouse_backend=delta-spark, but the session has no Delta jar and extension: set "
                         "spark.delta_jars (after `make jars`), or pass them to spark-submit")
    return DeltaSparkBackend(spark, root)


def conform(df: DataFrame, tdef: TableDef) -> DataFrame:
    """Select the catalog's columns in order, cast to the catalog's types; a missing column is a TableError."""
    missing = [c for c in tdef.columns if c not in df.columns]
    if missing:
        raise TableError(f"table {tdef.name!r} needs columns {missing}; the DataFrame has {df.columns}")
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in tdef.spark_schema.fields])


def _partition_predicate(partition: dict[str, str]) -> Column:
    cond = F.lit(True)
    for k, v in partition.items():
        cond = cond & (F.col(k) == F.lit(v))
    return cond


def _partition_sql(partition: dict[str, str]) -> str:
    return " AND ".join(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'" for k, v in partition.items())


def _staged_add_actions(root: str, staging: str, tdef: TableDef) -> list[AddAction]:
    """The add actions that commit the Parquet files Spark wrote under `staging`: paths relative to the table root,
    partition values from the hive folders, row counts from the footers (read in parallel)."""
    files = storage.find_files(staging, (".parquet",))

    def action(item: tuple[str, pafs.FileInfo]) -> AddAction:
        location, info = item
        rel = PurePosixPath(location[len(root) + 1:])
        meta = storage.parquet_file(location).metadata
        values = _hive_partition_values(rel.relative_to(rel.parts[0]).parent.parts)
        if set(values) != set(tdef.partition_by):
            raise TableError(f"file {location} has partition values {values}, expected keys {tdef.partition_by}")
        return AddAction(rel.as_posix(), int(info.size), values, int((info.mtime_ns or 0) // 1_000_000), True,
                         f'{{"numRecords": {meta.num_rows}}}')

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(action, files))


def _hive_partition_values(parts: Iterable[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for part in parts:
        key, _, value = part.partition("=")
        values[unquote(key)] = None if value == "__HIVE_DEFAULT_PARTITION__" else unquote(value)
    return values
