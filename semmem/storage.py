"""Files wherever the warehouse or the corpus lives: a local (or mounted) path, or an S3 URI (s3://, s3a://).

Every file semmem reads or writes outside Spark goes through here, on the driver and inside tasks alike, by pyarrow's
filesystem layer: the same calls serve local disk and an object store. Locations are plain strings: an absolute local
path, or `s3://bucket/key` (s3a:// and s3n:// are the same place; Spark reads s3:// through S3A, see `spark_conf`).

Where the object store is: `storage.endpoint_url` / `storage.region` in the config (an S3-compatible server such as
MinIO), exported by `configure` as the standard AWS_ENDPOINT_URL / AWS_REGION variables, which Spark passes to the
executors too; credentials come from the usual AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an
instance role) and never from a config file.

Folders that readers must see whole (a trained model, the report) are written in a local staging folder and published
in one step (`replacing_folder`): a rename on a filesystem; on an object store, the files first and the marker file
that readers check last. Remote folders are read through a local copy (`local_folder`).
"""

from __future__ import annotations

import fnmatch
import functools
import glob as _glob
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from semmem.errors import ConfigError, InputError

REMOTE_SCHEMES = ("s3", "s3a", "s3n")
ENDPOINT_ENV, REGION_ENV = "AWS_ENDPOINT_URL", "AWS_REGION"
DEFAULT_REGION = "us-east-1"
CACHE_ENV = "SEMMEM_CACHE"  # where remote folders are copied to be read (default: the system temp folder)


def is_remote(location: str | Path) -> bool:
    """True for an object-store URI (s3://, s3a://, s3n://)."""
    return urlparse(str(location)).scheme in REMOTE_SCHEMES


def normalize(location: str | Path) -> str:
    """The canonical form of a location: `s3://bucket/key` for an object store, an absolute path otherwise. Other
    URI schemes are a ConfigError naming what is supported."""
    text = str(location)
    parsed = urlparse(text)
    if parsed.scheme in REMOTE_SCHEMES:
        if not parsed.netloc:
            raise ConfigError(f"{text}: an S3 URI needs a bucket (s3://BUCKET/path)")
        return f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    if parsed.scheme == "file":
        return str(Path(parsed.path).absolute())
    if parsed.scheme and len(parsed.scheme) > 1:  # (one letter: a Windows drive)
        raise ConfigError(f"{text}: {parsed.scheme}:// locations are not supported; use a filesystem path every "
                          "node sees (local disk, NFS, a mounted bucket) or an S3 URI (s3://bucket/path)")
    return str(Path(text).expanduser().absolute())


def join(location: str | Path, *parts: str) -> str:
    base = normalize(location)
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))


# ------------------------------------------------------------------------------------------- object-store settings
def configure(endpoint_url: str = "", region: str = "") -> None:
    """Make the config's object-store settings the process's (and, through `spark_conf`, the executors')."""
    if endpoint_url:
        if urlparse(endpoint_url).scheme not in ("http", "https"):
            raise ConfigError(f"storage.endpoint_url = {endpoint_url!r}; expected http(s)://HOST[:PORT]")
        os.environ[ENDPOINT_ENV] = endpoint_url
    if region:
        os.environ[REGION_ENV] = region
    _s3.cache_clear()


def _endpoint() -> str:
    return os.environ.get(ENDPOINT_ENV, "")


def _region() -> str:
    return os.environ.get(REGION_ENV) or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def spark_conf() -> dict[str, str]:
    """Session settings for S3 through Hadoop's S3A (the hadoop-aws jar): s3:// and s3a:// both, the endpoint and
    region of `configure`, and the same variables in the executors' environment for their Python tasks."""
    conf = {"spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
            "spark.hadoop.fs.s3a.endpoint.region": _region(),
            f"spark.executorEnv.{REGION_ENV}": _region()}
    if _endpoint():
        conf.update({"spark.hadoop.fs.s3a.endpoint": _endpoint(),
                     "spark.hadoop.fs.s3a.path.style.access": "true",  # S3-compatible servers: bucket in the path
                     "spark.hadoop.fs.s3a.connection.ssl.enabled": str(_endpoint().startswith("https")).lower(),
                     f"spark.executorEnv.{ENDPOINT_ENV}": _endpoint()})
    return conf


def delta_options(location: str) -> dict[str, str] | None:
    """delta-rs storage options for a table at `location` (None on a filesystem). Commits use S3's conditional put
    (If-None-Match: AWS S3, MinIO and most compatible servers), so two writers of one table never both win."""
    if not is_remote(location):
        return None
    options = {"AWS_REGION": _region(), "conditional_put": "etag"}
    if _endpoint():
        options.update({"AWS_ENDPOINT_URL": _endpoint(), "AWS_ALLOW_HTTP": str(_endpoint().startswith("http:")).lower()})
    return options


@functools.lru_cache(maxsize=1)
def _s3() -> pafs.FileSystem:
    endpoint = urlparse(_endpoint()) if _endpoint() else None
    kwargs: dict = {"region": _region()}
    if endpoint is not None:
        kwargs.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
    return pafs.S3FileSystem(**kwargs)


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path on it) of a location."""
    loc = normalize(location)
    if is_remote(loc):
        return _s3(), loc[len("s3://"):]
    return pafs.LocalFileSystem(), loc


def check_access(location: str, what: str) -> None:
    """ConfigError naming the endpoint and the credentials' source when an S3 location's bucket cannot be listed
    (no such bucket, refused credentials, no server): before any job starts, not as a trace from an executor."""
    if not is_remote(location):
        return
    fs, path = filesystem(location)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise ConfigError(f"{what} {location}: cannot reach bucket {bucket!r} at "
                          f"{_endpoint() or 'AWS S3'} (region {_region()}): {str(e).splitlines()[0]}. Check "
                          "storage.endpoint_url and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment") from None
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"{what} {location}: bucket {bucket!r} does not exist at {_endpoint() or 'AWS S3'}")


# ------------------------------------------------------------------------------------------------------ file calls
def _info(location: str) -> pafs.FileInfo:
    fs, path = filesystem(location)
    return fs.get_file_info(path)


def exists(location: str) -> bool:
    return _info(location).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    return _info(location).type == pafs.FileType.File


def is_dir(location: str) -> bool:
    """A folder; on an object store, a prefix holding at least one object."""
    info = _info(location)
    if info.type == pafs.FileType.Directory:
        return True
    if info.type == pafs.FileType.File or not is_remote(location):
        return False
    fs, path = filesystem(location)
    try:
        return bool(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False)))
    except OSError:
        return False


def size(location: str) -> int:
    info = _info(location)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(location)
    return int(info.size)


def list_dir(location: str) -> list[str]:
    """Names directly under a folder, sorted ([] when it does not exist)."""
    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(PurePosixPath(i.path).name for i in infos)


def find_files(location: str, suffixes: tuple[str, ...] = ("",)) -> list[tuple[str, pafs.FileInfo]]:
    """(location, info) of every file under a folder, recursively, whose name ends with one of `suffixes`, sorted;
    names starting with '.' or '_' (Spark's markers and checksums) are skipped."""
    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
    base = normalize(location)
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name.startswith((".", "_")):
            continue
        if not info.base_name.endswith(suffixes):
            continue
        rel = PurePosixPath(info.path).relative_to(path).as_posix()
        out.append((join(base, rel), info))
    return sorted(out, key=lambda x: x[0])


def fingerprint(paths: list[str]) -> list[list]:
    """[location, size, mtime_ns] of every file the paths name (files, folders recursively, globs), sorted: equal
    when no input file was added, removed or changed since (the lineage of a stage that reads files)."""
    found: dict[str, pafs.FileInfo] = {}
    for path in paths:
        for location in (glob(path) if any(c in path for c in "*?[") else [normalize(path)]):
            if is_dir(location):
                found.update(find_files(location))
            elif is_file(location):
                found[location] = _info(location)
    return [[loc, int(info.size or 0), int(info.mtime_ns or 0)] for loc, info in sorted(found.items())]


def glob(pattern: str) -> list[str]:
    """Files and folders matching a glob pattern (*, ? and [..]; on an object store matched against every key under
    the folder before the first wildcard)."""
    loc = normalize(pattern)
    if not is_remote(loc):
        return sorted(_glob.glob(loc))
    parts = loc.split("/")
    first = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
    root = "/".join(parts[:first])
    fs, path = filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
    rest = "/".join(parts[first:])
    return sorted(join(root, rel) for rel in (PurePosixPath(i.path).relative_to(path).as_posix() for i in infos)
                  if fnmatch.fnmatchcase(rel, rest))


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path, compression=None) as f:
        return f.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file: readers see the old content or the new one (a rename locally, one PUT on S3)."""
    fs, path = filesystem(location)
    if is_remote(location):
        with fs.open_output_stream(path, compression=None) as f:
            f.write(data)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def open_input_file(location: str) -> pa.NativeFile:
    """A random-access reader (read_at, size)."""
    fs, path = filesystem(location)
    return fs.open_input_file(path)


def parquet_file(location: str) -> pq.ParquetFile:
    fs, path = filesystem(location)
    return pq.ParquetFile(fs.open_input_file(path))


def read_parquet(location: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = filesystem(location)
    return pq.read_table(path, columns=columns, filesystem=fs)


def make_dirs(location: str) -> None:
    """Create a folder (and its parents) on a filesystem; nothing to do on an object store (prefixes)."""
    if not is_remote(location):
        Path(normalize(location)).mkdir(parents=True, exist_ok=True)


def delete_dir(location: str) -> None:
    """Remove a folder and everything under it; nothing happens when it does not exist."""
    fs, path = filesystem(location)
    if is_remote(location):
        if is_dir(location):
            fs.delete_dir(path)
        return
    shutil.rmtree(path, ignore_errors=True)


def _upload_folder(local: Path, location: str, last: str | None = None) -> None:
    """Copy every file of a local folder under `location` (remote); the file named `last` goes last."""
    fs, path = filesystem(location)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)
    for p in files:
        with fs.open_output_stream(f"{path}/{p.relative_to(local).as_posix()}", compression=None) as out:
            out.write(p.read_bytes())


@contextmanager
def replacing_folder(location: str, marker: str | None = None) -> Iterator[Path]:
    """A fresh local folder to write into; when the block succeeds its files replace the folder at `location`.

    On a filesystem by renames only, so a reader sees the old folder or the new one, never a mix. On an object store
    the old objects are removed and the new ones uploaded, `marker` (the file readers check) last: a reader that
    finds the marker finds every file. When the block fails, `location` stays as it was.
    """
    loc = normalize(location)
    if is_remote(loc):
        tmp = Path(tempfile.mkdtemp(prefix="semmem-publish-"))
        try:
            yield tmp
            delete_dir(loc)
            _upload_folder(tmp, loc, last=marker)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    out = Path(loc)
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def local_folder(location: str) -> Path:
    """A local folder with the files of `location`: the folder itself on a filesystem; for an object store a copy in
    the local cache, refreshed when the objects changed (keyed by their paths, sizes and modification times)."""
    loc = normalize(location)
    if not is_remote(loc):
        return Path(loc)
    files = find_files(loc)
    if not files:
        raise InputError(f"{loc}: no files there")
    key = hashlib.sha256("\n".join(f"{f}:{i.size}:{i.mtime_ns}" for f, i in files).encode()).hexdigest()[:24]
    cache = Path(os.environ.get(CACHE_ENV) or tempfile.gettempdir()) / "semmem-cache" / key
    if (cache / ".complete").is_file():
        return cache
    staging = cache.with_name(f"{key}.{uuid.uuid4().hex}.tmp")
    fs, _ = filesystem(loc)
    for f, info in files:
        target = staging / f[len(loc) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path, compression=None) as src:
            target.write_bytes(src.read())
    (staging / ".complete").touch()
    try:
        staging.rename(cache)
    except OSError:  # another worker copied it first
        shutil.rmtree(staging, ignore_errors=True)
    return cache
