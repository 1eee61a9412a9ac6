"""Any exception -> one line for the user and an exit status; the whole trace -> a log file.

    try:
        ...
    except BaseException as e:
        return report(e, warehouse=WH)   # prints `semmem: error: ...` and `semmem: full trace: PATH`

`translate(exc)` decides the line and the status:
- a SemmemError: its message (status 2);
- an exception coming back from Spark (PythonException, AnalysisException, Py4JJavaError, ...) whose Python worker
  raised a SemmemError: the worker's message (status 2) - the worker's traceback travels as text inside the Java
  exception, and its last line is `semmem.errors.ModelError: ...`;
- no space left on device, a read-only filesystem, permission denied (a Python OSError, or the Java IOException of a
  Spark task): what happened, the path (and the warehouse), and what to do (status 2);
- a corrupt or unreadable Delta log (delta-rs's DeltaError family, delta-spark's DELTA_* errors): the table, its log
  folder, and how to recover (status 2);
- Ctrl-C: `interrupted` (status 130);
- anything else: `unexpected <Type>: <first line>` (status 1).

Log files: `$SEMMEM_LOG_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/semmem/logs` (a temporary folder when that cannot be
created), one file per command, `semmem-<YYYYmmddTHHMMSS>-<pid>.log`; the newest KEEP_LOGS are kept. `start_log`
(called by the CLI's logging set-up) opens it for the run's INFO log, and `jvm_log_options` sends the local Spark
JVM's log4j output to the same file, so task failures' Java traces are there and not on the console; `report`
appends the failure's full trace (Python, chained causes, the Java stack and the Python worker's traceback).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from semmem.errors import SemmemError

LOG_DIR_ENV = "SEMMEM_LOG_DIR"
KEEP_LOGS = 200  # older semmem-*.log files are removed when a new one starts
EXIT_ERROR = 2  # a problem semmem understands (bad config, bad input, a full disk, ...)
EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130

_current_log: Path | None = None  # the log file of this process's command, once started


@dataclass(frozen=True)
class Failure:
    message: str  # one line, printed after "semmem: error: "
    exit_code: int
    kind: str  # semmem | worker | disk | delta_log | interrupted | unexpected


# ------------------------------------------------------------------------------------------------------ log files
def log_dir() -> Path:
    """$SEMMEM_LOG_DIR, else ${XDG_CACHE_HOME:-~/.cache}/semmem/logs."""
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV]).expanduser()
    from semmem.artifacts import cache_dir

    return cache_dir() / "logs"


def _new_log_path() -> Path | None:
    name = f"semmem-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir()) / "semmem-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            with path.open("a", encoding="utf-8"):
                pass
            _prune(folder, keep=path)
            return path
        except OSError:
            continue
    return None


def _prune(folder: Path, keep: Path) -> None:
    """Keep the newest KEEP_LOGS log files of `folder`."""
    try:
        logs = sorted((p for p in folder.glob("semmem-*.log") if p != keep), key=lambda p: p.stat().st_mtime)
        for p in logs[:max(0, len(logs) - (KEEP_LOGS - 1))]:
            p.unlink(missing_ok=True)
    except OSError:
        pass


def start_log() -> Path | None:
    """A fresh log file for this command (None when no folder is writable); `current_log` returns it from then on."""
    global _current_log
    _current_log = _new_log_path()
    return _current_log


def current_log() -> Path | None:
    return _current_log


LOG4J_PROPERTIES = """\
# written by semmem (semmem/failures.py): the local Spark JVM logs into the command's log file, not the console
rootLogger.level = warn
rootLogger.appenderRef.file.ref = semmemfile
appender.semmemfile.type = File
appender.semmemfile.name = semmemfile
appender.semmemfile.fileName = ${sys:semmem.log.file}
appender.semmemfile.append = true
appender.semmemfile.layout.type = PatternLayout
appender.semmemfile.layout.pattern = %d{yy/MM/dd HH:mm:ss} JVM %p %c{1}: %m%n%ex
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.parquet.name = org.apache.parquet.CorruptStatistics
logger.parquet.level = error
"""


def jvm_log_options(log_file: Path | None) -> str | None:
    """Java options that send the log4j output of a Spark JVM this process starts to `log_file` (None: leave the
    JVM's logging alone: no file, a session launched by spark-submit, or a user log4j configuration)."""
    if log_file is None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return None
    if "log4j" in os.environ.get("SPARK_SUBMIT_OPTS", "") or \
            Path(os.environ.get("SPARK_CONF_DIR", "/nonexistent"), "log4j2.properties").is_file():
        return None
    props = log_file.parent / "semmem-log4j2.properties"
    try:
        if not props.is_file() or props.read_text(encoding="utf-8") != LOG4J_PROPERTIES:
            tmp = props.with_name(f"{props.name}.{os.getpid()}.tmp")
            tmp.write_text(LOG4J_PROPERTIES, encoding="utf-8")
            tmp.replace(props)
    except OSError:
        return None
    return f"-Dlog4j2.configurationFile=file:{props} -Dsemmem.log.file={log_file}"


# ------------------------------------------------------------------------------------------------------ translation
_WORKER_SEMMEM = re.compile(r"^\s*semmem\.errors\.(\w+): (.*)$", re.MULTILINE)
_WORKER_HEADER = "Traceback (most recent call last):"
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): ?(.*)$")
_PATH = re.compile(r"(?:file:)?(/[^\s'\"(),;:\]]+)")
_DELTA_SPARK = re.compile(r"\[DELTA_[A-Z_]+\]")

_DISK = {
    errno.ENOSPC: ("no space left on device", re.compile(r"No space left on device|ENOSPC|errno 28\b", re.IGNORECASE)),
    errno.EROFS: ("read-only file system", re.compile(r"Read-only file system|EROFS|errno 30\b", re.IGNORECASE)),
    errno.EACCES: ("permission denied", re.compile(r"Permission denied|EACCES|errno 13\b", re.IGNORECASE)),
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """exc, its causes and contexts, and the causes pyspark attached (CapturedException._cause)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__, getattr(e, "_cause", None)):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _safe_str(e: BaseException) -> str:
    try:
        return str(e)
    except BaseException:  # noqa: BLE001 - str() of a Py4J error asks the JVM, which may be gone
        return repr(e.args)


def _texts(exc: BaseException) -> list[str]:
    """Every message of the chain, with the JVM and Python-worker traces pyspark keeps beside them."""
    out = []
    for e in _chain(exc):
        out.append(_safe_str(e))
        for attr in ("_desc", "_stackTrace"):
            value = getattr(e, attr, None)
            if isinstance(value, str) and value:
                out.append(value)
    return out


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _worker_error(text: str) -> tuple[str, str] | None:
    """(exception type, message) of the last exception a Python worker's traceback in `text` ends with."""
    start = text.find(_WORKER_HEADER)
    if start < 0:
        return None
    found = None
    for line in text[start:].splitlines():
        m = _EXC_LINE.match(line)
        if m and not line.startswith((" ", "\t")):
            found = (m.group(1), m.group(2).strip())
            if found[0].startswith(("org.", "java.", "scala.", "io.")):  # the Java trace starts: the worker's ended
                break
    return found


def _disk_kind(exc: BaseException, text: str) -> int | None:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK:
            return e.errno
    for code, (_, pattern) in _DISK.items():
        if pattern.search(text):
            return code
    return None


def _paths_in(exc: BaseException, text: str) -> list[str]:
    paths = []
    for e in _chain(exc):
        if isinstance(e, OSError):
            paths += [str(p) for p in (e.filename, e.filename2) if p]
    paths += [m.group(1).rstrip(".") for m in _PATH.finditer(text)]
    return [p for p in dict.fromkeys(paths) if not p.startswith(("/usr/", "/proc/")) and ".py" not in p
            and ".scala" not in p and ".jar" not in p]


def _mount_state(path: str) -> tuple[bool, int | None]:
    """(read-only, free bytes) of the filesystem holding `path` (its nearest existing folder)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return False, None
    return bool(st.f_flag & os.ST_RDONLY), st.f_bavail * st.f_frsize


def _probe_disk(exc: BaseException, text: str, warehouse: str | None) -> int | None:
    """For an I/O failure whose message does not say why (Hadoop's `Mkdirs failed to create ...`): the warehouse's
    filesystem read-only or full (only paths in the warehouse are probed)."""
    if not warehouse or "://" in warehouse:
        return None
    if not (any(isinstance(e, OSError) for e in _chain(exc)) or "IOException" in text or "Mkdirs failed" in text):
        return None
    wh = os.path.abspath(warehouse)
    for path in [p for p in _paths_in(exc, text) if p.startswith(wh.rstrip("/") + "/")] + [wh]:
        read_only, free = _mount_state(path)
        if read_only:
            return errno.EROFS
        if free == 0:
            return errno.ENOSPC
    return None


def _disk_message(code: int, exc: BaseException, text: str, warehouse: str | None) -> str:
    what = _DISK[code][0]
    paths = _paths_in(exc, text)
    wh = os.path.abspath(warehouse) if warehouse and "://" not in warehouse else warehouse
    inside = [p for p in paths if wh and (p == wh or p.startswith(wh.rstrip("/") + "/"))]
    path = (inside or paths or [wh or "?"])[0]
    in_warehouse = bool(inside) or path == wh
    target = wh if in_warehouse else path
    where = f"{'on' if code == errno.EACCES else 'writing'} {path}" + \
        (f" (warehouse {wh})" if in_warehouse and path != wh else "")
    other = ", or set warehouse to {}" if in_warehouse else ""
    if code == errno.ENOSPC:
        todo = f"free space on the filesystem of {target}" + other.format("a folder with room")
        if "blockmgr-" in path or "/spark-" in path:
            todo += " (Spark's scratch space: point spark.conf.spark.local.dir to a bigger disk)"
    elif code == errno.EROFS:
        todo = f"remount {target} read-write" + other.format("a writable folder")
    else:
        todo = f"give this user access to {target}" + other.format("a folder you can write")
    return f"{what} {where}: {todo}. Committed tables keep their last version (a failed write commits nothing)"


def _delta_table_path(exc: BaseException, text: str) -> str | None:
    """The table whose log failed: from the frames of semmem.tables and semmem.warehouse (delta_table(location),
    ...), else the text."""
    for e in _chain(exc):
        frames = list(traceback.walk_tb(e.__traceback__))
        for frame, _ in reversed(frames):
            if not _in_table_code(frame.f_code.co_filename):
                continue
            for name in ("location", "path", "root"):
                value = frame.f_locals.get(name)
                if isinstance(value, (str, os.PathLike)) and str(value):
                    return str(value).removeprefix("file://")
    m = re.search(r"(?:file:)?(/[^\s'\"]+?)/_delta_log", text)
    return m.group(1) if m else None


def _in_table_code(filename: str) -> bool:
    return filename.endswith(os.path.join("semmem", "tables.py")) or os.path.join("semmem", "warehouse", "") in filename


def _is_delta_log_error(exc: BaseException, text: str) -> bool:
    try:
        from deltalake.exceptions import DeltaError, TableNotFoundError
    except ImportError:  # pragma: no cover - deltalake is a dependency
        return False
    for e in _chain(exc):
        if isinstance(e, DeltaError) and not isinstance(e, TableNotFoundError):
            return True
    if _DELTA_SPARK.search(text) and "_delta_log" in text:
        return True
    return "io.delta" in text and re.search(r"JsonParseException|JsonMappingException|corrupt", text,
                                            re.IGNORECASE) is not None


def _producer(name: str) -> str:
    """The stage that writes table `name` ("?" when unknown): a hint only, so any failure here is ignored."""
    try:
        from semmem.stages.registry import producer_of

        return producer_of(name)
    except Exception:  # noqa: BLE001
        return "?"


def _delta_message(exc: BaseException, text: str) -> str:
    path = _delta_table_path(exc, text)
    name = Path(path).name if path else "?"
    stage = _producer(name)
    cause = _first_line(_safe_str(exc)) or type(exc).__name__
    redo = f"re-run stage {stage!r}" if stage != "?" else "re-run the stage that writes it"
    return (f"table {name!r} ({path}): its Delta log ({path}/_delta_log) is corrupt or unreadable ({cause}). "
            f"semmem changed nothing. Restore the damaged _delta_log file from a backup, or delete the table "
            f"folder and {redo}")


def translate(exc: BaseException, *, warehouse: str | None = None) -> Failure:
    """The one line and the exit status for `exc` (see the module docstring)."""
    if isinstance(exc, SemmemError):
        return Failure(_one_line(str(exc)), EXIT_ERROR, "semmem")
    if isinstance(exc, KeyboardInterrupt):
        return Failure("interrupted", EXIT_INTERRUPTED, "interrupted")
    texts = _texts(exc)
    text = "\n".join(texts)
    m = _WORKER_SEMMEM.search(text)
    if m:
        return Failure(_one_line(m.group(2)), EXIT_ERROR, "worker")
    for e in _chain(exc):  # a SemmemError raised while handling another exception
        if isinstance(e, SemmemError):
            return Failure(_one_line(str(e)), EXIT_ERROR, "semmem")
    code = _disk_kind(exc, text)
    if code is None and not _is_delta_log_error(exc, text):
        code = _probe_disk(exc, text, warehouse)
    if code is not None:
        return Failure(_disk_message(code, exc, text, warehouse), EXIT_ERROR, "disk")
    if _is_delta_log_error(exc, text):
        return Failure(_delta_message(exc, text), EXIT_ERROR, "delta_log")
    worker = _worker_error(text)
    if worker is not None:
        return Failure(f"unexpected {worker[0]} in a Spark task: {worker[1]}", EXIT_UNEXPECTED, "unexpected")
    return Failure(f"unexpected {type(exc).__name__}: {_summary(exc, texts)}", EXIT_UNEXPECTED, "unexpected")


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _summary(exc: BaseException, texts: list[str]) -> str:
    """The first informative line: for a Py4JJavaError the Java exception, not `An error occurred while calling`."""
    for t in texts:
        for line in t.splitlines():
            line = line.strip().lstrip(": ").strip()
            if line and not line.startswith("An error occurred while calling"):
                return line
    return repr(exc)


# ------------------------------------------------------------------------------------------------------ reporting
def full_trace(exc: BaseException) -> str:
    """The Python traceback (with chained exceptions) and the JVM / Python-worker traces pyspark carries."""
    parts = ["".join(traceback.format_exception(exc))]
    for e in _chain(exc):
        for attr in ("_desc", "_stackTrace"):
            value = getattr(e, attr, None)
            if isinstance(value, str) and value:
                parts.append(f"--- {type(e).__name__}.{attr}:\n{value}")
        java = getattr(e, "java_exception", None)
        if java is not None:
            parts.append(f"--- {type(e).__name__} (Java):\n{_safe_str(e)}")
    return "\n".join(parts)


def write_trace(exc: BaseException, failure: Failure) -> Path | None:
    """Append the failure and its full trace to this command's log file (a new one when none was started, or when
    SEMMEM_LOG_DIR changed since)."""
    path = _current_log if _current_log is not None and _current_log.parent == log_dir() else start_log()
    if path is None:
        return None
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(f"\n==== semmem: error: {failure.message}\n==== exit status {failure.exit_code} "
                    f"({failure.kind}); argv: {' '.join(sys.argv)}\n{full_trace(exc)}\n")
    except OSError:
        return None
    return path


def report(exc: BaseException, *, warehouse: str | None = None, stream: IO[str] | None = None) -> int:
    """Print the one line (and where the trace is) for `exc`, write the trace to the log file; the exit status."""
    stream = stream if stream is not None else sys.stderr
    try:
        failure = translate(exc, warehouse=warehouse)
    except BaseException as inner:  # noqa: BLE001 - reporting must never fail
        failure = Failure(f"unexpected {type(exc).__name__} (and {type(inner).__name__} while reporting it)",
                          EXIT_UNEXPECTED, "unexpected")
    try:
        logging.getLogger("semmem").debug("failure: %s", failure.message)
        path = write_trace(exc, failure)
    except BaseException:  # noqa: BLE001
        path = None
    print(f"semmem: error: {failure.message}", file=stream)
    if path is not None:
        print(f"semmem: full trace: {path}", file=stream)
    else:
        print("semmem: full trace: (no writable log folder; set SEMMEM_LOG_DIR)", file=stream)
        traceback.print_exception(exc, file=stream)
    stream.flush()
    return failure.exit_code


def quiet_pyspark_loggers() -> None:
    """pyspark logs an AnalysisException with its trace on stderr (DataFrameQueryContextLogger) before raising it;
    the CLI reports it itself."""
    try:
        from pyspark.logger import PySparkLogger
    except ImportError:  # pragma: no cover
        return
    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        logger: Any = PySparkLogger.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)


def warehouse_of(args: Any) -> str | None:
    """The warehouse a command worked on (--warehouse, or the config's), to name it in a disk error."""
    wh = getattr(args, "warehouse", None)
    if wh:
        return str(wh)
    if not hasattr(args, "overrides"):
        return None
    try:
        from semmem.config import load_config

        return str(load_config(getattr(args, "config", None), list(args.overrides)).warehouse)
    except Exception:  # noqa: BLE001 - a hint only; a bad config was the error itself
        return None
