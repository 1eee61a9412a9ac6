"""A Delta table as its log describes it, whichever backend wrote it: delta-rs handles, versions, commit metadata and
the data files of a snapshot. Nothing here needs Spark, so readers (`semmem sql`, `status`, the driver) stay light."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
from deltalake import DeltaTable

from semmem import storage


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a table's current snapshot: local path, and its row count when the log records it."""

    path: str
    num_rows: int | None


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


def add_actions(dt: DeltaTable) -> pa.Table:
    """The add actions of `dt`'s snapshot, one row per data file, partition values flattened (`partition.<col>`)."""
    return pa.table(dt.get_add_actions(flatten=True))


def data_files(dt: DeltaTable, table_root: str) -> list[DataFile]:
    """The Parquet files of `dt`'s snapshot (never files an overwrite left on disk), sorted by path."""
    files = []
    for add in add_actions(dt).to_pylist():
        rows = add.get("num_records")
        files.append(DataFile(file_location(table_root, add["path"]), None if rows is None else int(rows)))
    return sorted(files, key=lambda f: f.path)


def file_location(table_root: str, log_path: str) -> str:
    """The file a log path names, as a storage location (a local path or an s3:// URI): log paths are URL-encoded
    and relative to the table root, or absolute URIs."""
    path = unquote(log_path)
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return parsed.path
    return path if parsed.scheme else storage.join(table_root, path)
