"""Content digests of the artifacts a stage reads besides tables: model weights, classifiers, label files.

They are part of a stage run's lineage (semmem.stages.registry.Stage.artifacts), so replacing a model's weights or
editing a labels file in place makes the tables made from it stale. Hashing a 24 GB checkpoint takes a minute, so a
local file's digest is kept in a cache keyed by its path, size and modification time; a file on an object store is
identified by its size and time only (reading it whole for every status would cost a download).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from semmem import storage
from semmem.errors import ModelError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".joblib")


def cache_dir() -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/semmem: what semmem derives once and keeps between runs (digests, exports, logs)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "semmem"


def _cache_file() -> Path:
    return cache_dir() / "digests.json"


def _load_cache() -> dict[str, str]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict[str, str]) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: digests are recomputed next time


def file_digests(paths: list[str]) -> dict[str, str]:
    """sha256 (16 hex digits) of each file's content; on an object store, of its size and time."""
    cache, out, changed = _load_cache(), {}, False
    for path in paths:
        if storage.is_remote(path):
            out[path] = short_sha256(json.dumps(storage.fingerprint([path])).encode())
            continue
        st = os.stat(path)
        key = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
        if key not in cache:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    h.update(chunk)
            cache[key], changed = h.hexdigest()[:16], True
        out[path] = cache[key]
    if changed:
        _save_cache(cache)
    return out


def file_digest(path: str | Path) -> str:
    """One file's digest ("missing" when there is none)."""
    path = storage.normalize(path)
    return file_digests([path])[path] if storage.is_file(path) else "missing"


def folder_digest(folder: str | Path) -> str:
    """A digest of the names and contents of a folder's files, or of one file."""
    root = storage.normalize(folder)
    return file_digest(root) if storage.is_file(root) else _files_digest(root, ("",)) or "empty"


def weights_digest(folder: str | Path) -> str:
    """A digest of a model folder's weight files: the version of a folder that has no other. ModelError when it
    holds none."""
    digest = _files_digest(storage.normalize(folder), WEIGHT_SUFFIXES)
    if digest is None:
        raise ModelError(f"{folder} holds no model weights (*.safetensors, *.bin or *.joblib)")
    return digest


def _files_digest(root: str, suffixes: tuple[str, ...]) -> str | None:
    """The digest of the names and contents of the files under `root` ending with one of `suffixes` (None: none)."""
    files = [loc for loc, _ in storage.find_files(root, suffixes)]
    if not files:
        return None
    digests = file_digests(files)
    return short_sha256(json.dumps([[loc[len(root):], digests[loc]] for loc in files]).encode())


def short_sha256(data: bytes) -> str:
    """The first 16 hex digits of the sha256 of `data`: the form of every digest here."""
    return hashlib.sha256(data).hexdigest()[:16]


def digest(value: object) -> str:
    """A short stable hash of a JSON-serializable value (config sections, input versions, tokenizer specs)."""
    return short_sha256(json.dumps(value, sort_keys=True, default=str).encode())
