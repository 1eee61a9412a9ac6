"""The only module that touches storage: read and write catalog tables as Delta tables.

Two backends produce the same Delta tables:
- delta-spark (`format("delta")`) when the Delta jar is on the classpath (clusters);
- delta-rs otherwise: Spark writes Parquet files in parallel into a fresh folder inside the table, then the driver
  commits exactly those files to the Delta log in one transaction. Nothing is collected on the driver but file
  footers. A job that fails before the commit leaves the previous version untouched (its files are removed).

Publication: every table is read at its newest *published* version, never simply its newest one. A stage run
commits its tables (each as many Delta commits as it needs) and, when the stage has succeeded, appends one row per
table to the publication log (table stage_runs) in one commit: all of a stage's outputs become visible together, and
a failure at any point leaves every reader on the previous, consistent versions. The log also holds the lineage
(config, input versions, semmem version, side files) `semmem run` uses to skip current stages. Before its first
commit to a table, a stage run takes back what an earlier run left unpublished (Delta RESTORE), unless those commits
are its own resumable chunks; a commit on top of a version it did not expect means another writer: a clear error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake import write_deltalake
from deltalake.exceptions import CommitFailedError
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
RUNS = "stage_runs"  # the publication log
ADOPTED = "(adopted)"  # stage of the rows that adopt the tables of a warehouse made before the publication log
DIRECT = "(direct)"  # stage of the rows of a write made outside any stage run


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

    @property
    def num_rows(self) -> int:
        """Rows in all files, from their Parquet footers (always recorded for scratch files): no Spark job."""
        return sum(f.num_rows or 0 for f in self.files)


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a table's current snapshot: local path, and its row count when the log records it."""

    path: str
    num_rows: int | None


@dataclass(frozen=True)
class Publication:
    """One row of the publication log: `table_name` made visible at `version` (-1: dropped) by a stage run."""

    run_id: str
    stage: str
    table_name: str
    version: int
    published_at: datetime
    config_hash: str
    config: dict
    semmem_version: str
    inputs: dict
    side_files: dict


@dataclass(frozen=True)
class Publications:
    """The publication log of a warehouse, oldest first (None: a warehouse made before the log existed)."""

    rows: tuple[Publication, ...]

    @cached_property
    def newest(self) -> dict[str, Publication]:
        """The newest publication of every table."""
        return {p.table_name: p for p in self.rows}

    def last_run(self, stage: str) -> list[Publication]:
        """The rows of the newest published run of `stage` (empty if it never published)."""
        mine = [p for p in self.rows if p.stage == stage]
        return [p for p in mine if p.run_id == mine[-1].run_id] if mine else []


def table_path(warehouse: str | Path, name: str) -> str:
    return storage.join(warehouse, name)


def is_delta_table(path: str | Path) -> bool:
    return storage.is_dir(storage.join(path, "_delta_log"))


def delta_table(path: str | Path, version: int | None = None) -> DeltaTable:
    """delta-rs's handle of the table at `path` (a folder or an S3 URI), at `version` (None: the newest)."""
    location = storage.normalize(path)
    return DeltaTable(location, version=version, storage_options=storage.delta_options(location))


def latest_version(path: str | Path) -> int | None:
    """The newest Delta version of the table at `path`, published or not (None: no table there)."""
    return delta_table(path).version() if is_delta_table(path) else None


def read_publications(warehouse: str | Path) -> Publications | None:
    """The publication log of `warehouse`, oldest first; None when it has none (a warehouse made before it)."""
    path = table_path(warehouse, RUNS)
    if not is_delta_table(path):
        return None
    rows = sorted(delta_table(path).to_pyarrow_table().to_pylist(), key=lambda r: (r["published_at"], r["run_id"]))
    return Publications(tuple(Publication(**{**r, "config": json.loads(r["config"]), "inputs": json.loads(r["inputs"]),
                                             "side_files": json.loads(r["side_files"])}) for r in rows))


def published_version(warehouse: str | Path, name: str, pubs: Publications | None) -> int | None:
    """The version of `name` readers see: its newest publication (None if never published or dropped); the newest
    version in a warehouse without a publication log, and always for the log itself."""
    if pubs is None or name == RUNS:
        return latest_version(table_path(warehouse, name))
    p = pubs.newest.get(name)
    if p is None or p.version < 0 or not is_delta_table(table_path(warehouse, name)):
        return None  # never published, dropped, or its folder deleted since
    return p.version


def commit_info(path: str | Path, version: int) -> dict:
    """The commitInfo action of one Delta version ({} if its log file was cleaned up), for either backend."""
    log_file = storage.join(path, "_delta_log", f"{version:020d}.json")
    if not storage.is_file(log_file):
        return {}
    for line in storage.read_text(log_file).splitlines():
        action = json.loads(line) if line.strip() else {}
        if "commitInfo" in action:
            return action["commitInfo"]
    return {}


def user_metadata(path: str | Path, version: int) -> dict:
    """What the writer of one version recorded as its userMetadata (a JSON object), {} if none."""
    text = commit_info(path, version).get("userMetadata")
    try:
        meta = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def open_delta(warehouse: str | Path, name: str, pubs: Publications | None = None) -> DeltaTable:
    """The delta-rs handle of a catalog table at its published version, or a TableError naming its stage."""
    table(name)
    version = published_version(warehouse, name, pubs if pubs is not None else read_publications(warehouse))
    if version is None:
        raise TableError(f"table {name!r} does not exist in warehouse {storage.normalize(warehouse)} "
                         f"(run the stage that writes it, e.g. `semmem run --stages ...`)")
    return delta_table(table_path(warehouse, name), version)


def list_tables(warehouse: str | Path) -> list[TableInfo]:
    """Every published Delta table under `warehouse`, at its published version, with its row count (from the log,
    no scan)."""
    if not storage.is_dir(warehouse):
        raise TableError(f"warehouse {storage.normalize(warehouse)} does not exist")
    pubs = read_publications(warehouse)
    infos = []
    for name in storage.list_dir(warehouse):
        path = table_path(warehouse, name)
        if not is_delta_table(path):
            continue
        version = published_version(warehouse, name, pubs)
        if version is None:
            continue
        dt = delta_table(path, version)
        adds = pa.table(dt.get_add_actions(flatten=True))
        rows = adds.column("num_records").to_pylist() if "num_records" in adds.column_names else []
        infos.append(TableInfo(name, path, version, int(sum(r or 0 for r in rows)), adds.num_rows))
    return infos


def digest(value: object) -> str:
    """A short stable hash of a JSON-serializable value (config sections, input versions)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def semmem_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("semmem")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


FILES, ARTIFACTS = "files", "artifacts"  # the inputs of a stage run that are not tables


@dataclass
class StageRun:
    """One stage run in progress: what it read, what it has committed so far (unpublished) and its side files."""

    stage: str
    config: dict
    inputs: dict
    base: dict[str, int | None]  # newest version of each output when the run began (optimistic concurrency)
    forced: bool = False  # --force: nothing of an earlier run is kept
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    written: dict[str, int] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    side_files: dict[str, str] = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        return digest(self.config)

    @property
    def key(self) -> str:
        """Equal for two runs that compute the same thing: a re-run with this key may resume the other's chunks."""
        return digest({"stage": self.stage, "config": self.config, "inputs": self.inputs})

    def lineage(self, part: str | None) -> dict:
        out = {"stage": self.stage, "run_id": self.run_id, "run_key": self.key, "config_hash": self.config_hash,
               "inputs": self.inputs, "semmem_version": semmem_version(), "side_files": dict(self.side_files)}
        return {**out, "part": part} if part is not None else out


def concurrent_writer(name: str, expected: int | None, found: int | None) -> TableError:
    return TableError(f"table {name!r} changed under this run: expected version {expected}, found {found}. Another "
                      "semmem run is writing this warehouse (or wrote it while this stage ran); this run's commits "
                      "stay unpublished. Wait for the other run to end, then run again.")


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
        self.pubs = read_publications(self.root)
        self.run: StageRun | None = None

    def path(self, name: str) -> str:
        return table_path(self.root, name)

    def side_path(self, *parts: str) -> str:
        """A file or folder beside the tables, under <warehouse>/_semmem (tokenizer, models, runs) or as named."""
        return storage.join(self.root, *parts)

    def exists(self, name: str) -> bool:
        return self.visible_version(name) is not None

    def visible_version(self, name: str) -> int | None:
        """The version this warehouse reads: the running stage's own newest commit, else the published one."""
        table(name)
        if self.run is not None and name in self.run.written:
            return self.run.written[name]
        if self.run is not None and name in self.run.dropped:
            return None
        return published_version(self.root, name, self.pubs)

    def version(self, name: str) -> int:
        version = self.visible_version(name)
        if version is None:
            open_delta(self.root, name, Publications(()))  # raises the TableError that names the stage
        return version  # type: ignore[return-value]

    def _open(self, name: str) -> DeltaTable:
        return delta_table(self.path(name), self.version(name))

    def snapshot_files(self, name: str) -> list[DataFile]:
        """The Parquet files of the current snapshot of `name` (never files an overwrite left on disk), sorted.

        For readers that bypass Spark (numpy kernels reading inside a task): the paths are on the warehouse
        filesystem, which every executor sees. Works for tables written by either backend. Partition values are not
        in the files. TableError if the table does not exist, or uses Delta reader features (deletion vectors,
        column mapping) that make its files unreadable as plain Parquet.
        """
        dt = self._open(name)
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
        dt = self._open(name)
        tdef = table(name).with_columns_of(dt.schema().to_arrow().names)
        if self.backend == "delta-spark":
            reader = self.spark.read.format("delta").option("versionAsOf", dt.version())
            return _conform(reader.load(self.path(name)), tdef)
        return self._read_files(dt, tdef, self.path(name))

    def commit_metadata(self, name: str) -> dict:
        """What the writer of the visible version of `name` recorded with `write(..., metadata=...)` ({} if none)."""
        return user_metadata(self.path(name), self.version(name))

    def side_file(self, name: str, key: str) -> str | None:
        """The side file (e.g. "tokenizer") the stage run that made the visible version of `name` recorded."""
        if self.run is not None and name in self.run.written:
            return self.run.side_files.get(key)
        if not self.exists(name):
            return None
        return self.commit_metadata(name).get("lineage", {}).get("side_files", {}).get(key)

    # ------------------------------------------------------------ stage runs
    def refresh(self) -> None:
        """Read the publication log again (another process may have published)."""
        self.pubs = read_publications(self.root)

    def begin_stage(self, stage: str, outputs: Iterable[str], config: dict, inputs: dict, *,
                    forced: bool = False) -> StageRun:
        """Open a stage run: its commits stay unpublished until `publish`. Creates the publication log when the
        warehouse has none (adopting the tables already there, at their newest versions)."""
        if self.run is not None:
            raise TableError(f"stage {self.run.stage!r} is still open; publish or abort it first")
        self.refresh()
        if self.pubs is None:
            self._adopt()
        self.run = StageRun(stage, config, inputs, {n: latest_version(self.path(n)) for n in outputs}, forced)
        return self.run

    def publish(self) -> None:
        """Make every table the running stage wrote or dropped visible, in one commit of the publication log."""
        run = self._open_run()
        for name, version in run.written.items():
            found = latest_version(self.path(name))
            if found != version:
                raise concurrent_writer(name, version, found)
        rows = [self._publication_row(run, n, v) for n, v in run.written.items()]
        rows += [self._publication_row(run, n, -1) for n in sorted(run.dropped - set(run.written))]
        if rows:
            _append_publications(self.root, rows)
        self.run = None
        self.refresh()

    def abort(self) -> None:
        """Close the running stage without publishing: its commits stay invisible, the next run takes them back."""
        self.run = None

    def add_side_file(self, key: str, location: str) -> None:
        """Record a side file (versioned by its path) in the lineage of every table this stage run writes next."""
        self._open_run().side_files[key] = location

    def drop(self, name: str) -> None:
        """Make `name` invisible (published as dropped): a table another input format left behind."""
        if not self.exists(name):
            return
        if self.run is not None:
            self.run.dropped.add(name)
        else:
            self._publish_direct(name, -1)

    def resumable_parts(self, name: str) -> set[str]:
        """Parts (chunks) of `name` an earlier run with this run's key committed and did not publish: a re-run after
        a failure skips them. Empty when the unpublished commits are not all of this key (they are taken back)."""
        run = self.run
        metas = self._unpublished(name) if run is not None else []
        if metas and all(m.get("lineage", {}).get("run_key") == run.key for m in metas):  # type: ignore[union-attr]
            return {m["lineage"]["part"] for m in metas if m["lineage"].get("part")}
        return set()

    def is_current(self, stage: str, config: dict, inputs: dict) -> bool:
        """Whether the newest published run of `stage` ran this config on these input versions, and every table it
        published is still visible at the version it published."""
        rows = self.pubs.last_run(stage) if self.pubs is not None else []
        newest = self.pubs.newest if self.pubs is not None else {}
        return bool(rows) and all(p.config_hash == digest(config) and p.inputs == json.loads(json.dumps(inputs))
                                  and newest.get(p.table_name) == p for p in rows)

    def run_artifacts(self) -> dict[str, str]:
        """The artifacts' digests the running stage's lineage records."""
        return self.run.inputs.get(ARTIFACTS, {}) if self.run is not None else {}

    def unchanged_artifacts(self) -> set[str]:
        """The artifacts of the running stage with the digests its newest published run read, when that run had the
        same config and table inputs and its tables are still visible (and the run is not forced): a stage that
        reads one artifact per partition (a model per (model, revision) of memorization) redoes only the others."""
        run = self.run
        if run is None or self.pubs is None or run.forced:  # a stage function called on its own: nothing to keep
            return set()
        rows, newest = self.pubs.last_run(run.stage), self.pubs.newest
        now = json.loads(json.dumps(run.inputs))

        def but_artifacts(inputs: dict) -> dict:
            return {k: v for k, v in inputs.items() if k != ARTIFACTS}

        if not rows or not all(p.config_hash == run.config_hash and newest.get(p.table_name) == p and
                               but_artifacts(p.inputs) == but_artifacts(now) for p in rows):
            return set()
        before = rows[0].inputs.get(ARTIFACTS, {})
        return {k for k, v in now.get(ARTIFACTS, {}).items() if before.get(k) == v}

    def _open_run(self) -> StageRun:
        if self.run is None:
            raise TableError("no stage run is open (Warehouse.begin_stage)")
        return self.run

    def _unpublished(self, name: str) -> list[dict]:
        """The userMetadata of every version of `name` newer than its published one."""
        latest = latest_version(self.path(name))
        if latest is None:
            return []
        published = published_version(self.root, name, self.pubs)
        start = -1 if published is None else published
        return [user_metadata(self.path(name), v) for v in range(start + 1, latest + 1)]

    def _before_commit(self, name: str, whole: bool) -> int:
        """Check no other writer committed to `name` since this run began or last committed, take back what an
        earlier run left unpublished (unless resuming it, or `whole` replaces everything anyway); returns the version
        this run's next commit must follow (-1: none yet)."""
        run = self._open_run()
        latest = latest_version(self.path(name))
        if name in run.written:
            if latest != run.written[name]:
                raise concurrent_writer(name, run.written[name], latest)
            return latest
        base = run.base.get(name, latest)
        if latest != base:
            raise concurrent_writer(name, base, latest)
        published = published_version(self.root, name, self.pubs)
        if latest is not None and latest != published and not whole and not self.resumable_parts(name):
            log.info("%s: taking back versions %s..%d that an earlier run left unpublished", name,
                     "0" if published is None else published + 1, latest)
            latest = self._take_back(name, published)
        return -1 if latest is None else latest

    def _take_back(self, name: str, published: int | None) -> int:
        """Restore `name` to its published version (empty when it never had one), as a new commit of this run."""
        run = self._open_run()
        meta = json.dumps({"lineage": run.lineage("take-back")}, sort_keys=True)
        if published is None:
            tdef = table(name)
            empty = self.spark.createDataFrame([], tdef.spark_schema)
            if self.backend == "delta-spark":
                return self._write_delta_spark(empty, tdef, "overwrite", None, meta)
            return self._write_delta_rs(empty, tdef, "overwrite", None, meta)
        if self.backend == "delta-spark":
            key = "spark.databricks.delta.commitInfo.userMetadata"
            self.spark.conf.set(key, meta)
            try:
                self.spark.sql(f"RESTORE TABLE delta.`{self.path(name)}` TO VERSION AS OF "
                               f"{published}")
            finally:
                self.spark.conf.unset(key)
        else:
            delta_table(self.path(name)).restore(published, commit_properties=CommitProperties(
                custom_metadata={"userMetadata": meta}))
        return latest_version(self.path(name))  # type: ignore[return-value]

    def _adopt(self) -> None:
        """Start the publication log of a warehouse made before it: every table there, at its newest version."""
        run = StageRun(ADOPTED, {}, {}, {})
        rows = [self._publication_row(run, name, latest_version(self.path(name)))  # type: ignore[arg-type]
                for name in storage.list_dir(self.root) if name != RUNS and is_delta_table(self.path(name))]
        _append_publications(self.root, rows)
        self.refresh()

    def _publish_direct(self, name: str, version: int) -> None:
        if self.pubs is None:
            self._adopt()
        _append_publications(self.root, [self._publication_row(StageRun(DIRECT, {}, {}, {}), name, version)])
        self.refresh()

    @staticmethod
    def _publication_row(run: StageRun, name: str, version: int) -> dict:
        return {"run_id": run.run_id, "stage": run.stage, "table_name": name, "version": version,
                "published_at": datetime.now(timezone.utc), "config_hash": run.config_hash,
                "config": json.dumps(run.config, sort_keys=True, default=str),
                "semmem_version": semmem_version(), "inputs": json.dumps(run.inputs, sort_keys=True),
                "side_files": json.dumps(run.side_files, sort_keys=True)}

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
              partition: dict[str, str] | None = None, metadata: dict | None = None, part: str | None = None) -> int:
        """Write `df` as table `name` in one Delta commit and return the new version.

        mode: "error" (the table must not exist), "overwrite" (the whole table, or only `partition` when given, e.g.
        {"model": m, "revision": r}), "append". Columns are selected and cast to the catalog schema. `metadata`
        (JSON-serializable) is stored in the commit as its userMetadata, with the stage run's lineage under
        "lineage"; `commit_metadata` reads it back. Inside a stage run the commit stays unpublished until the stage
        succeeds; `part` names a resumable chunk (`resumable_parts`). Outside a stage run it is published at once.
        """
        tdef = table(name).with_columns_of(df.columns)
        if self.run is None:
            version = self._commit(df, tdef, mode, partition, json.dumps(metadata, sort_keys=True) if metadata else None)
            self._publish_direct(name, version)
            return version
        expected = self._before_commit(name, whole=mode == "overwrite" and partition is None)
        user_meta = json.dumps({**(metadata or {}), "lineage": self.run.lineage(part)}, sort_keys=True)
        version = self._commit(df, tdef, mode, partition, user_meta)
        if version != expected + 1:
            raise concurrent_writer(name, expected + 1, version)
        self.run.written[name] = version
        return version

    def _commit(self, df: DataFrame, tdef: TableDef, mode: WriteMode, partition: dict[str, str] | None,
                user_metadata: str | None) -> int:
        name = tdef.name
        if partition is not None:
            if mode != "overwrite":
                raise TableError(f"writing {name!r}: a partition can only be given with mode='overwrite'")
            if set(partition) != set(tdef.partition_by):
                raise TableError(f"writing {name!r}: partition keys {sorted(partition)} must be exactly "
                                 f"{list(tdef.partition_by)}")
        if mode == "error" and is_delta_table(self.path(name)):
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
        return latest_version(self.path(tdef.name))  # type: ignore[return-value]

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
        except CommitFailedError as e:
            storage.delete_dir(staging)
            raise concurrent_writer(tdef.name, None, latest_version(root)) from e
        except BaseException:
            storage.delete_dir(staging)  # the previous version stays as it was
            raise
        return delta_table(root).version()


def _append_publications(warehouse: str, rows: list[dict]) -> None:
    """Append rows to the publication log in one commit (delta-rs, from the driver: a few rows per stage)."""
    path = table_path(warehouse, RUNS)
    write_deltalake(path, pa.Table.from_pylist(rows, schema=table(RUNS).schema), mode="append",
                    storage_options=storage.delta_options(path))


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
