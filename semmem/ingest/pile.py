"""Pile-format shards (`*.jsonl`, `*.jsonl.zst`) -> tokenized documents -> fixed-length stream rows.

Executor side, all vectorized per Arrow batch:
1. `tokenize_shards`: one task per shard streams its lines, parses JSON, tokenizes documents in batches with the fast
   tokenizer and appends EOD. It also returns each document's token offset inside its shard, so global positions
   follow from the (tiny) per-shard totals without a window or a join. Bad records come back as rejects.
2. `cut_fragments`: each document is cut at row boundaries (multiples of seq_length in the global stream) into
   fragments (row_id, offset_in_row, tokens), with numpy index arithmetic over the whole batch.
3. Rows made of one full fragment are final; the others are assembled by row_id with built-in SQL functions.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zstandard
from pyspark import Accumulator

from semmem import storage
from semmem.errors import InputError
from semmem.ingest.tokenizer import encode_batch, from_json

DOC_SCHEMA = pa.schema([
    ("shard_id", pa.int32()), ("line", pa.int64()), ("shard_offset", pa.int64()), ("pile_set_name", pa.string()),
    ("tokens", pa.list_(pa.int32())), ("reject_reason", pa.string()), ("reject_detail", pa.string()),
])
FRAGMENT_SCHEMA = pa.schema([
    ("row_id", pa.int64()), ("offset", pa.int32()), ("shard_id", pa.int32()), ("line", pa.int64()),
    ("pile_set_name", pa.string()), ("tokens", pa.list_(pa.int32())),
])
FATAL_REASONS = ("corrupt_zstd", "unreadable_file")  # the rest of the shard cannot be read: never skippable
T = TypeVar("T")


def find_shards(paths: list[str]) -> list[str]:
    """Expand files, directories and globs (local or S3) into a sorted, de-duplicated list of shard files."""
    found: list[str] = []
    for p in paths:
        storage.check_access(storage.normalize(p), "input path")
        matches = storage.glob(p) if any(c in p for c in "*?[") else [storage.normalize(p)]
        if not matches:
            raise InputError(f"input path {p!r} matches no file")
        for m in matches:
            if storage.is_file(m):
                found.append(m)
            elif storage.is_dir(m):
                found += [f for f, _ in storage.find_files(m, (".jsonl", ".jsonl.zst"))]
            else:
                raise InputError(f"input path {m} does not exist")
    shards = sorted(set(found))
    if not shards:
        raise InputError(f"no *.jsonl or *.jsonl.zst files under {', '.join(paths)}")
    bad = [s for s in shards if not s.endswith((".jsonl", ".jsonl.zst"))]
    if bad:
        raise InputError(f"{bad[0]} is not a .jsonl or .jsonl.zst file")
    return shards


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def parse_json(raw: bytes) -> dict:
    """One JSON-object line, or _Reject naming what is wrong with it."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Reject("invalid_utf8", f"byte {e.start}: {raw[e.start:e.start + 4]!r}") from None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _Reject("invalid_json", f"{e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise _Reject("missing_text", "no 'text' field")
    return obj


def document_fields(obj: dict) -> tuple[str, str | None]:
    """(text, pile_set_name) of a parsed line, or _Reject when it has no text."""
    if "text" not in obj:
        raise _Reject("missing_text", "no 'text' field")
    if not isinstance(obj["text"], str):
        raise _Reject("missing_text", f"'text' is {type(obj['text']).__name__}, not a string")
    meta = obj.get("meta")
    name = meta.get("pile_set_name") if isinstance(meta, dict) else None
    return obj["text"], (str(name) if name is not None else None)


def parse_line(raw: bytes) -> tuple[str, str | None]:
    """(text, pile_set_name) of one JSON line, or _Reject naming what is wrong with it."""
    return document_fields(parse_json(raw))


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of a jsonl or zstd-compressed jsonl file; zstd errors surface as _Reject."""
    with storage.open_input_file(path) as fh:  # reads of 1 MiB: one range request each on an object store
        if path.endswith(".zst"):
            raw_stream = zstandard.ZstdDecompressor().stream_reader(fh, read_size=1 << 20, read_across_frames=True)
        else:
            raw_stream = fh
        stream = io.BufferedReader(raw_stream, buffer_size=1 << 20)  # type: ignore[arg-type]
        n = 0
        try:
            for n, raw in enumerate(stream, start=1):
                yield n, raw.rstrip(b"\r\n")
        except zstandard.ZstdError as e:
            raise _Reject("corrupt_zstd", f"zstd error after line {n}, "
                          f"compressed byte offset ~{fh.tell()}: {e}") from None


def iter_records(path: str, parse: Callable[[bytes], T]) -> Iterator[tuple[int, T | None, _Reject | None]]:
    """(line, parse(raw), None) for each good non-blank line of a shard, (line, None, reject) for a bad one; problems
    of the whole file (corrupt zstd, unreadable, empty) come last, as line 0."""
    seen_any = False
    try:
        for n, raw in iter_lines(path):
            seen_any = True
            if not raw.strip():
                continue  # blank lines carry no record
            try:
                yield n, parse(raw), None
            except _Reject as r:
                yield n, None, r
    except _Reject as r:
        yield 0, None, r
    except OSError as e:
        yield 0, None, _Reject("unreadable_file", str(e))
    else:
        if not seen_any:
            yield 0, None, _Reject("empty_shard", "the file holds no lines")


def record_batches(path: str, parse: Callable[[bytes], T], batch_size: int
                   ) -> Iterator[tuple[list[tuple[int, T]], list[tuple[int, str, str]]]]:
    """Batches (good, rejects) of a shard: good = up to batch_size (line, parsed) pairs; rejects = the (line, reason,
    detail) of the bad lines met since the previous batch. The last batch carries the file-level problems."""
    good: list[tuple[int, T]] = []
    rejects: list[tuple[int, str, str]] = []
    for n, parsed, reject in iter_records(path, parse):
        if reject is not None:
            rejects.append((n, reject.reason, reject.detail))
            continue
        good.append((n, parsed))  # type: ignore[arg-type]
        if len(good) >= batch_size:
            yield good, rejects
            good, rejects = [], []
    yield good, rejects


def shard_batch(shard_id: int, lines: list[int], columns: dict[str, list], rejects: list[tuple[int, str, str]],
                schema: pa.Schema) -> pa.RecordBatch:
    """One batch of a shard reader: the good records (their `lines` and `columns`), then one row per reject with
    NULL columns and its reason."""
    pad = [None] * len(rejects)
    return pa.RecordBatch.from_pydict({
        "shard_id": [shard_id] * (len(lines) + len(rejects)), "line": lines + [n for n, _, _ in rejects],
        **{name: values + pad for name, values in columns.items()},
        "reject_reason": [None] * len(lines) + [r for _, r, _ in rejects],
        "reject_detail": [None] * len(lines) + [d for _, _, d in rejects]}, schema=schema)


def tokenize_shards(batches: Iterator[pa.RecordBatch], tokenizer_json: str, eod_id: int, batch_size: int,
                    counter: Accumulator | None = None) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (shard_id, path) rows -> documents (tokens + EOD) and rejects, in line order."""
    tok = from_json(tokenizer_json)
    for batch in batches:
        for shard_id, path in zip(batch.column("shard_id").to_pylist(), batch.column("path").to_pylist()):
            for out in _tokenize_shard(shard_id, path, tok, eod_id, batch_size):
                if counter is not None:
                    counter.add(out.num_rows)
                yield out


def _tokenize_shard(shard_id: int, path: str, tok, eod_id: int, batch_size: int) -> Iterator[pa.RecordBatch]:
    offset = 0
    for good, rejects in record_batches(path, parse_line, batch_size):
        ids = encode_batch(tok, [text for _, (text, _) in good])
        lengths = np.array([len(x) + 1 for x in ids], dtype=np.int64)
        starts = offset + np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(ids) else np.zeros(0, np.int64)
        offset += int(lengths.sum())
        yield shard_batch(shard_id, [n for n, _ in good], {
            "shard_offset": list(starts), "pile_set_name": [name for _, (_, name) in good],
            "tokens": [x + [eod_id] for x in ids]}, rejects, DOC_SCHEMA)


def cut_fragments(batches: Iterator[pa.RecordBatch], shard_starts: np.ndarray,
                  seq_length: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: documents -> pieces of stream rows, cut at global multiples of seq_length, each with the
    document (shard and line) it comes from."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        tokens = batch.column("tokens")
        lengths = pc.list_value_length(tokens).to_numpy().astype(np.int64)
        doc_start = shard_starts[batch.column("shard_id").to_numpy()] + batch.column("shard_offset").to_numpy()
        doc_end = doc_start + lengths
        first_row = doc_start // seq_length
        n_frag = (doc_end - 1) // seq_length - first_row + 1
        doc_of = np.repeat(np.arange(len(lengths)), n_frag)
        k = np.arange(n_frag.sum()) - np.repeat(np.cumsum(n_frag) - n_frag, n_frag)
        row_id = first_row[doc_of] + k
        frag_start = np.maximum(doc_start[doc_of], row_id * seq_length)
        frag_end = np.minimum(doc_end[doc_of], (row_id + 1) * seq_length)
        # Fragments tile each document in order, and documents are contiguous in the flat values array.
        flat = tokens.values  # offsets below index into it even when the batch is a slice
        base = tokens.offsets.to_numpy()[:-1].astype(np.int64)[doc_of] - doc_start[doc_of]
        offsets = np.concatenate([frag_start + base, [frag_end[-1] + base[-1]]]).astype(np.int32)
        take = pa.array(doc_of)
        yield pa.RecordBatch.from_arrays(
            [pa.array(row_id), pa.array((frag_start - row_id * seq_length).astype(np.int32)),
             batch.column("shard_id").take(take), batch.column("line").take(take),
             batch.column("pile_set_name").take(take), pa.ListArray.from_arrays(pa.array(offsets), flat)],
            schema=FRAGMENT_SCHEMA)
