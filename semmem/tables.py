"""The only way to the tables: read and write catalog tables of one warehouse as Delta tables, at the versions the
publication log makes visible.

`Warehouse` composes the parts in semmem.warehouse: the Delta backend that reads, commits and restores (delta-spark
or delta-rs, chosen once), the publication log with the stage run in progress (what is visible, what may be
committed, publishing), and scratch files. The rest of semmem imports from here, never from those parts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from semmem import storage
from semmem.catalog import table
from semmem.errors import TableError
from semmem.warehouse.backends import BackendChoice, WriteMode, choose_backend
from semmem.warehouse.delta_log import (DataFile, add_actions, data_files, delta_table, is_delta_table,
                                        latest_version, table_path, user_metadata)
from semmem.warehouse.publications import (ADOPTED, ARTIFACTS, DIRECT, FILES, RUNS, Publication, PublicationLog,
                                           Publications, StageRun, digest, published_version, read_publications,
                                           semmem_version)
from semmem.warehouse.scratch import Scratch, scratch_files

__all__ = ["ADOPTED", "ARTIFACTS", "DIRECT", "FILES", "RUNS", "DataFile", "Publication", "Publications", "Scratch",
           "StageRun", "TableInfo", "Warehouse", "delta_table", "digest", "latest_version", "list_tables",
           "open_delta", "published_version", "read_publications", "semmem_version", "table_path", "user_metadata"]


@dataclass(frozen=True)
class TableInfo:
    name: str
    path: str
    version: int
    num_rows: int
    num_files: int


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
        adds = add_actions(delta_table(path, version))
        rows = adds.column("num_records").to_pylist() if "num_records" in adds.column_names else []
        infos.append(TableInfo(name, path, version, int(sum(r or 0 for r in rows)), adds.num_rows))
    return infos


class Warehouse:
    """Catalog tables of one warehouse folder, read and written through one Spark session."""

    def __init__(self, spark: SparkSession, root: str | Path, backend: BackendChoice = "auto") -> None:
        self.spark = spark
        self.root = storage.normalize(root)  # an absolute path, or s3://bucket/key
        storage.check_access(self.root, "warehouse")
        storage.make_dirs(self.root)
        self.backend = choose_backend(spark, self.root, backend)
        self.publication_log = PublicationLog(self.root, self.backend)

    @property
    def pubs(self) -> Publications | None:
        """The publication log as last read (None: a warehouse made before it)."""
        return self.publication_log.pubs

    @property
    def run(self) -> StageRun | None:
        """The stage run in progress, if any."""
        return self.publication_log.run

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
        return self.publication_log.visible_version(name)

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
        return data_files(dt, self.path(name))

    # ------------------------------------------------------------------ read
    def read(self, name: str) -> DataFrame:
        """The current snapshot of `name`, with exactly the catalog's columns and types."""
        dt = self._open(name)
        return self.backend.read(dt, table(name).with_columns_of(dt.schema().to_arrow().names))

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
        self.publication_log.refresh()

    def begin_stage(self, stage: str, outputs: Iterable[str], config: dict, inputs: dict, *,
                    forced: bool = False) -> StageRun:
        """Open a stage run: its commits stay unpublished until `publish`. Creates the publication log when the
        warehouse has none (adopting the tables already there, at their newest versions)."""
        return self.publication_log.begin(stage, outputs, config, inputs, forced)

    def publish(self) -> None:
        """Make every table the running stage wrote or dropped visible, in one commit of the publication log."""
        self.publication_log.publish()

    def abort(self) -> None:
        """Close the running stage without publishing: its commits stay invisible, the next run takes them back."""
        self.publication_log.abort()

    def add_side_file(self, key: str, location: str) -> None:
        """Record a side file (versioned by its path) in the lineage of every table this stage run writes next."""
        self.publication_log.open_run().side_files[key] = location

    def drop(self, name: str) -> None:
        """Make `name` invisible (published as dropped): a table another input format left behind."""
        if not self.exists(name):
            return
        if self.run is not None:
            self.run.dropped.add(name)
        else:
            self.publication_log.publish_direct(name, -1)

    def resumable_parts(self, name: str) -> set[str]:
        """Parts (chunks) of `name` an earlier run with this run's key committed and did not publish: a re-run after
        a failure skips them. Empty when the unpublished commits are not all of this key (they are taken back)."""
        return self.publication_log.resumable_parts(name)

    def is_current(self, stage: str, config: dict, inputs: dict) -> bool:
        """Whether the newest published run of `stage` ran this config on these input versions, and every table it
        published is still visible at the version it published."""
        return self.publication_log.is_current(stage, config, inputs)

    def run_artifacts(self) -> dict[str, str]:
        """The artifacts' digests the running stage's lineage records."""
        return self.run.inputs.get(ARTIFACTS, {}) if self.run is not None else {}

    def unchanged_artifacts(self) -> set[str]:
        """The artifacts of the running stage with the digests its newest published run read, when that run had the
        same config and table inputs and its tables are still visible (and the run is not forced): a stage that
        reads one artifact per partition (a model per (model, revision) of memorization) redoes only the others."""
        return self.publication_log.unchanged_artifacts()

    def scratch(self, df: DataFrame, *, max_rows_per_file: int | None = None,
                partition_by: str | None = None) -> AbstractContextManager[Scratch]:
        """Write `df` as plain Parquet files under <warehouse>/_semmem/scratch, for numpy tasks to read directly
        (paths with row counts, sorted; folders <column>=<value> under `partition_by`) and for Spark; removed when
        the block ends, even on failure."""
        return scratch_files(self.spark, self.root, df, max_rows_per_file=max_rows_per_file,
                             partition_by=partition_by)

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
            meta = json.dumps(metadata, sort_keys=True) if metadata else None
            version = self.backend.commit(df, tdef, mode, partition, meta)
            self.publication_log.publish_direct(name, version)
            return version
        expected = self.publication_log.before_commit(name, whole=mode == "overwrite" and partition is None)
        meta = json.dumps({**(metadata or {}), "lineage": self.run.lineage(part)}, sort_keys=True)
        version = self.backend.commit(df, tdef, mode, partition, meta)
        self.publication_log.committed(name, expected, version)
        return version
