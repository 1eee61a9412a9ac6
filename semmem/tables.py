"""The only module that touches storage: read and write catalog tables as Delta tables.

Two backends produce the same Delta tables:
- delta-spark (`format("delta")`) when the Delta jar is on the classpath (clusters);
- delta-rs otherwise: Spark writes Parquet files in parallel into a fresh folder inside the table, then the driver
  commits exactly those files to the Delta log in one transaction. Nothing is collected on the driver but file
  footers. A job that fails before the commit leaves the previous version untouched (its files are removed).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from semmem import storage
from semmem.catalog import TableDef, table
from semmem.errors import TableError
from semmem.spark import delta_jar_available

log = logging.getLogger(__name__)

WriteMode = Literal["error", "overwrite", "append"]
STAGING_PREFIX = "_semmem_write_"  # never referenced by the log until committed
SCRATCH_DIR = ("_semmem", "scratch")  # intermediate Parquet files of one stage, removed when the stage ends


@dataclass(frozen=True)
class TableInfo:
    name: str
    path: str
    version: int
    num_rows: int
    num_files: int


@dataclass(frozen=True)
class Scratch:
    """Intermediate Parquet files of one stage: their paths (for numpy tasks) and the same rows as a DataFrame."""

    files: list[DataFile]
    df: DataFrame


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a table's current snapshot: local path, and its row count when the log records it."""

    path: str
    num_rows: int | None


def table_path(warehouse: str | Path, name: str) -> str:
    return storage.join(warehouse, name)


def is_delta_table(path: str | Path) -> bool:
    return storage.is_dir(storage.join(path, "_delta_log"))


def delta_table(path: str | Path) -> DeltaTable:
    """delta-rs's handle of the table at `path` (a folder or an S3 URI)."""
    location = storage.normalize(path)
    return DeltaTable(location, storage_options=storage.delta_options(location))


def open_delta(warehouse: str | Path, name: str) -> DeltaTable:
    """The delta-rs handle of a catalog table, or a TableError that says which stage produces it."""
    table(name)
    try:
        return delta_table(table_path(warehouse, name))
    except TableNotFoundError:
        raise TableError(f"table {name!r} does not exist in warehouse {storage.normalize(warehouse)} "
                         f"(run the stage that writes it, e.g. `semmem run --stages ...`)") from None


def list_tables(warehouse: str | Path) -> list[TableInfo]:
    """Every Delta table under `warehouse`, with its current version and row count (from the log, no scan)."""
    if not storage.is_dir(warehouse):
        raise TableError(f"warehouse {storage.normalize(warehouse)} does not exist")
    infos = []
    for name in storage.list_dir(warehouse):
        path = table_path(warehouse, name)
        if not is_delta_table(path):
            continue
        dt = delta_table(path)
        adds = pa.table(dt.get_add_actions(flatten=True))
        rows = adds.column("num_records").to_pylist() if "num_records" in adds.column_names else []
        infos.append(TableInfo(name, path, dt.version(), int(sum(r or 0 for r in rows)), adds.num_rows))
    return infos


class Warehouse:
    """Catalog tables of one warehouse folder, read and written through one Spark session."""

    def __init__(self, spark: SparkSession, root: str | Path,
                 backend: Literal["auto", "delta-spark", "delta-rs"] = "auto") -> None:
        self.spark = spark
        self.root = storage.normalize(root)  # an absolute path, or s3://bucket/key
        storage.check_access(self.root, "warehouse")
        storage.make_dirs(self.root)
        if backend == "auto":
            backend = "delta-spark" if delta_jar_available(spark) else "delta-rs"
        elif backend == "delta-spark" and not delta_jar_available(spark):
            raise TableError("warehouse_backend=delta-spark, but the session has no Delta jar and extension: set "
                             "spark.delta_jars (after `make jars`), or pass them to spark-submit")
        self.backend = backend

    def path(self, name: str) -> str:
        return table_path(self.root, name)

    def side_path(self, *parts: str) -> str:
        """A file or folder beside the tables, under <warehouse>/_semmem (tokenizer, models, runs) or as named."""
        return storage.join(self.root, *parts)

    def exists(self, name: str) -> bool:
        table(name)
        return is_delta_table(self.path(name))

    def version(self, name: str) -> int:
        return open_delta(self.root, name).version()

    def snapshot_files(self, name: str) -> list[DataFile]:
        """The Parquet files of the current snapshot of `name` (never files an overwrite left on disk), sorted.

        For readers that bypass Spark (numpy kernels reading inside a task): the paths are on the warehouse
        filesystem, which every executor sees. Works for tables written by either backend. Partition values are not
        in the files. TableError if the table does not exist, or uses Delta reader features (deletion vectors,
        column mapping) that make its files unreadable as plain Parquet.
        """
        dt = open_delta(self.root, name)
        unsupported = {"deletionVectors", "columnMapping"} & set(dt.protocol().reader_features or [])
        if unsupported:
            raise TableError(f"table {name!r} uses Delta reader features {sorted(unsupported)}: its Parquet files "
                             "cannot be read directly; read it through Spark (Warehouse.read)")
        files = []
        for add in pa.table(dt.get_add_actions(flatten=True)).to_pylist():
            rows = add.get("num_records")
            files.append(DataFile(_file_location(self.path(name), add["path"]), None if rows is None else int(rows)))
        return sorted(files, key=lambda f: f.path)

    # ------------------------------------------------------------------ read
    def read(self, name: str) -> DataFrame:
        """The current snapshot of `name`, with exactly the catalog's columns and types."""
        dt = open_delta(self.root, name)
        tdef = table(name).with_columns_of(dt.schema().to_arrow().names)
        if self.backend == "delta-spark":
            return _conform(self.spark.read.format("delta").load(self.path(name)), tdef)
        return self._read_files(dt, tdef, self.path(name))

    def commit_metadata(self, name: str) -> dict:
        """What the writer of the current version of `name` recorded with `write(..., metadata=...)` ({} if none)."""
        info = open_delta(self.root, name).history(1)[0]
        return json.loads(info.get("userMetadata") or "{}")

    @contextmanager
    def scratch(self, df: DataFrame, *, max_rows_per_file: int | None = None,
                partition_by: str | None = None) -> Iterator[Scratch]:
        """Write `df` as plain Parquet files under <warehouse>/_semmem/scratch, for numpy tasks to read directly
        (paths with row counts, sorted; folders <column>=<value> under `partition_by`) and for Spark; removed when
        the block ends, even on failure."""
        folder = self.side_path(*SCRATCH_DIR, uuid.uuid4().hex)
        try:
            writer = df.write.mode("errorifexists")
            if max_rows_per_file:
                writer = writer.option("maxRecordsPerFile", max_rows_per_file)
            if partition_by:
                writer = writer.partitionBy(partition_by)
            writer.parquet(folder)
            files = [f for f, _ in storage.find_files(folder, (".parquet",))]
            yield Scratch([DataFile(f, storage.parquet_file(f).metadata.num_rows) for f in files],
                          self.spark.read.schema(df.schema).parquet(folder))
        finally:
            storage.delete_dir(folder)

    def _read_files(self, dt: DeltaTable, tdef: TableDef, root: str) -> DataFrame:
        data_fields = [f for f in tdef.spark_schema.fields if f.name not in tdef.partition_by]
        from pyspark.sql.types import StructType

        data_schema = StructType(data_fields)
        if not tdef.partition_by:
            uris = dt.file_uris()
            if not uris:
                return self.spark.createDataFrame([], tdef.spark_schema)
            return _conform(self.spark.read.schema(data_schema).parquet(*uris), tdef)
        adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        groups: dict[tuple[str | None, ...], list[str]] = {}
        for add in adds:
            values = tuple(add.get(f"partition.{c}") for c in tdef.partition_by)
            groups.setdefault(values, []).append(_file_location(root, add["path"]))
        frames = []
        for values, uris in sorted(groups.items(), key=lambda kv: str(kv[0])):
            df = self.spark.read.schema(data_schema).parquet(*uris)
            for col, value in zip(tdef.partition_by, values):
                df = df.withColumn(col, F.lit(value))
            frames.append(_conform(df, tdef))
        if not frames:
            return self.spark.createDataFrame([], tdef.spark_schema)
        out = frames[0]
        for f in frames[1:]:
            out = out.unionByName(f)
        return out

    # ----------------------------------------------------------------- write
    def write(self, df: DataFrame, name: str, *, mode: WriteMode = "error",
              partition: dict[str, str] | None = None, metadata: dict | None = None) -> int:
        """Write `df` as table `name` in one Delta commit and return the new version.

        mode: "error" (the table must not exist), "overwrite" (the whole table, or only `partition` when given, e.g.
        {"model": m, "revision": r}), "append". Columns are selected and cast to the catalog schema. `metadata`
        (JSON-serializable) is stored in the commit as its userMetadata; `commit_metadata` reads it back.
        """
        tdef = table(name).with_columns_of(df.columns)
        user_metadata = json.dumps(metadata, sort_keys=True) if metadata else None
        if partition is not None:
            if mode != "overwrite":
                raise TableError(f"writing {name!r}: a partition can only be given with mode='overwrite'")
            if set(partition) != set(tdef.partition_by):
                raise TableError(f"writing {name!r}: partition keys {sorted(partition)} must be exactly "
                                 f"{list(tdef.partition_by)}")
        if mode == "error" and self.exists(name):
            raise TableError(f"table {name!r} already exists at {self.path(name)} (use mode='overwrite')")
        df = _conform(df, tdef)
        if partition is not None:
            df = df.where(_partition_predicate(partition))
        start = time.monotonic()
        if self.backend == "delta-spark":
            version = self._write_delta_spark(df, tdef, mode, partition, user_metadata)
        else:
            version = self._write_delta_rs(df, tdef, mode, partition, user_metadata)
        log.info("wrote %s version %d in %.1f s", name, version, time.monotonic() - start)
        return version

    def _write_delta_spark(self, df: DataFrame, tdef: TableDef, mode: WriteMode,
                           partition: dict[str, str] | None, user_metadata: str | None) -> int:
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
        return self.version(tdef.name)

    def _write_delta_rs(self, df: DataFrame, tdef: TableDef, mode: WriteMode,
                        partition: dict[str, str] | None, user_metadata: str | None) -> int:
        root = self.path(tdef.name)
        staging = storage.join(root, f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        try:
            writer = df.write.mode("errorifexists")
            if tdef.partition_by:
                writer = writer.partitionBy(*tdef.partition_by)
            writer.parquet(staging)
            adds = _add_actions(root, staging, tdef)
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
        except BaseException:
            storage.delete_dir(staging)  # the previous version stays as it was
            raise
        return delta_table(root).version()


def _conform(df: DataFrame, tdef: TableDef) -> DataFrame:
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


def _add_actions(root: str, staging: str, tdef: TableDef) -> list[AddAction]:
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


def _file_location(table_root: str, log_path: str) -> str:
    """The file a log path names, as a storage location (a local path or an s3:// URI): log paths are URL-encoded
    and relative to the table root, or absolute URIs."""
    path = unquote(log_path)
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return parsed.path
    return path if parsed.scheme else storage.join(table_root, path)
