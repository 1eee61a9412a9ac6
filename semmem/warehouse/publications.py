"""The publication log (table stage_runs) and the stage runs that append to it.

Every table is read at its newest *published* version, never simply its newest one. A stage run commits its tables
(each as many Delta commits as it needs) and, when the stage has succeeded, appends one row per table to the
publication log in one commit: all of a stage's outputs become visible together, and a failure at any point leaves
every reader on the previous, consistent versions. The log also holds the lineage (config, input versions, semmem
version, side files) `semmem run` uses to skip current stages. Before its first commit to a table, a stage run takes
back what an earlier run left unpublished (Delta RESTORE), unless those commits are its own resumable chunks; a commit
on top of a version it did not expect means another writer: a clear error.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from deltalake import write_deltalake

from semmem import storage
from semmem.artifacts import digest
from semmem.catalog import table
from semmem.errors import TableError
from semmem.warehouse.delta_log import delta_table, is_delta_table, latest_version, table_path, user_metadata

if TYPE_CHECKING:
    from semmem.warehouse.backends import DeltaBackend

log = logging.getLogger(__name__)

RUNS = "stage_runs"  # the publication log
ADOPTED = "(adopted)"  # stage of the rows that adopt the tables of a warehouse made before the publication log
DIRECT = "(direct)"  # stage of the rows of a write made outside any stage run
FILES, ARTIFACTS = "files", "artifacts"  # the inputs of a stage run that are not tables


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


def append_publications(warehouse: str, rows: list[dict]) -> None:
    """Append rows to the publication log in one commit (delta-rs, from the driver: a few rows per stage)."""
    path = table_path(warehouse, RUNS)
    write_deltalake(path, pa.Table.from_pylist(rows, schema=table(RUNS).schema), mode="append",
                    storage_options=storage.delta_options(path))


def semmem_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("semmem")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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

    def publication_row(self, name: str, version: int) -> dict:
        return {"run_id": self.run_id, "stage": self.stage, "table_name": name, "version": version,
                "published_at": datetime.now(timezone.utc), "config_hash": self.config_hash,
                "config": json.dumps(self.config, sort_keys=True, default=str),
                "semmem_version": semmem_version(), "inputs": json.dumps(self.inputs, sort_keys=True),
                "side_files": json.dumps(self.side_files, sort_keys=True)}


def concurrent_writer(name: str, expected: int | None, found: int | None) -> TableError:
    return TableError(f"table {name!r} changed under this run: expected version {expected}, found {found}. Another "
                      "semmem run is writing this warehouse (or wrote it while this stage ran); this run's commits "
                      "stay unpublished. Wait for the other run to end, then run again.")


class PublicationLog:
    """The publication log of one warehouse as this process last read it (`pubs`), and the stage run it has open
    (`run`): which version of a table is visible, what a commit may follow, and the one commit that publishes."""

    def __init__(self, root: str, backend: DeltaBackend) -> None:
        self.root = root
        self.backend = backend  # takes back what an earlier run left unpublished
        self.pubs = read_publications(root)
        self.run: StageRun | None = None

    def refresh(self) -> None:
        """Read the publication log again (another process may have published)."""
        self.pubs = read_publications(self.root)

    def published_version(self, name: str) -> int | None:
        return published_version(self.root, name, self.pubs)

    def visible_version(self, name: str) -> int | None:
        """The running stage's own newest commit of `name`, else its published version."""
        if self.run is not None and name in self.run.written:
            return self.run.written[name]
        if self.run is not None and name in self.run.dropped:
            return None
        return self.published_version(name)

    def begin(self, stage: str, outputs: Iterable[str], config: dict, inputs: dict, forced: bool) -> StageRun:
        if self.run is not None:
            raise TableError(f"stage {self.run.stage!r} is still open; publish or abort it first")
        self.refresh()
        if self.pubs is None:
            self._adopt()
        self.run = StageRun(stage, config, inputs, {n: latest_version(self._path(n)) for n in outputs}, forced)
        return self.run

    def publish(self) -> None:
        run = self.open_run()
        for name, version in run.written.items():
            found = latest_version(self._path(name))
            if found != version:
                raise concurrent_writer(name, version, found)
        rows = [run.publication_row(n, v) for n, v in run.written.items()]
        rows += [run.publication_row(n, -1) for n in sorted(run.dropped - set(run.written))]
        if rows:
            append_publications(self.root, rows)
        self.run = None
        self.refresh()

    def abort(self) -> None:
        self.run = None

    def open_run(self) -> StageRun:
        if self.run is None:
            raise TableError("no stage run is open (Warehouse.begin_stage)")
        return self.run

    def publish_direct(self, name: str, version: int) -> None:
        """Publish one commit made outside any stage run (version -1: `name` dropped)."""
        if self.pubs is None:
            self._adopt()
        append_publications(self.root, [StageRun(DIRECT, {}, {}, {}).publication_row(name, version)])
        self.refresh()

    def resumable_parts(self, name: str) -> set[str]:
        run = self.run
        metas = self._unpublished(name) if run is not None else []
        if metas and all(m.get("lineage", {}).get("run_key") == run.key for m in metas):  # type: ignore[union-attr]
            return {m["lineage"]["part"] for m in metas if m["lineage"].get("part")}
        return set()

    def is_current(self, stage: str, config: dict, inputs: dict) -> bool:
        rows = self.pubs.last_run(stage) if self.pubs is not None else []
        newest = self.pubs.newest if self.pubs is not None else {}
        return bool(rows) and all(p.config_hash == digest(config) and p.inputs == json.loads(json.dumps(inputs))
                                  and newest.get(p.table_name) == p for p in rows)

    def unchanged_artifacts(self) -> set[str]:
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

    def before_commit(self, name: str, whole: bool) -> int:
        """Check no other writer committed to `name` since this run began or last committed, take back what an
        earlier run left unpublished (unless resuming it, or `whole` replaces everything anyway); returns the version
        this run's next commit must follow (-1: none yet)."""
        run = self.open_run()
        latest = latest_version(self._path(name))
        if name in run.written:
            if latest != run.written[name]:
                raise concurrent_writer(name, run.written[name], latest)
            return latest
        base = run.base.get(name, latest)
        if latest != base:
            raise concurrent_writer(name, base, latest)
        published = self.published_version(name)
        if latest is not None and latest != published and not whole and not self.resumable_parts(name):
            log.info("%s: taking back versions %s..%d that an earlier run left unpublished", name,
                     "0" if published is None else published + 1, latest)
            meta = json.dumps({"lineage": run.lineage("take-back")}, sort_keys=True)
            latest = self.backend.restore(table(name), published, meta)
        return -1 if latest is None else latest

    def committed(self, name: str, expected: int, version: int) -> None:
        """Record this run's commit `version` of `name`, which had to follow `expected` (`before_commit`)."""
        if version != expected + 1:
            raise concurrent_writer(name, expected + 1, version)
        self.open_run().written[name] = version

    def _path(self, name: str) -> str:
        return table_path(self.root, name)

    def _unpublished(self, name: str) -> list[dict]:
        """The userMetadata of every version of `name` newer than its published one."""
        latest = latest_version(self._path(name))
        if latest is None:
            return []
        published = self.published_version(name)
        start = -1 if published is None else published
        return [user_metadata(self._path(name), v) for v in range(start + 1, latest + 1)]

    def _adopt(self) -> None:
        """Start the publication log of a warehouse made before it: every table there, at its newest version."""
        run = StageRun(ADOPTED, {}, {}, {})
        rows = [run.publication_row(name, latest_version(self._path(name)))  # type: ignore[arg-type]
                for name in storage.list_dir(self.root) if name != RUNS and is_delta_table(self._path(name))]
        append_publications(self.root, rows)
        self.refresh()
