"""Pythia's preshuffled Megatron `document.bin` + `document.idx`, read in place by memory map.

Layout (spec §1.1): the .idx holds magic `MMIDIDX\\0\\0`, u64 version 1, u8 dtype code (8 = uint16), u64 count,
u64 document count, int32 sizes[count], int64 byte pointers[count], int64 doc_idx[doc count]. Each document is one
stream row, so row i starts at pointers[i]. This module validates the pair; semmem.ingest.stream reads row ranges of
the .bin inside executors (a memory map on a filesystem, range requests on S3), so nothing is copied whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from semmem import storage
from semmem.errors import InputError

MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
          8: np.uint16}


@dataclass(frozen=True)
class MegatronIndex:
    bin_path: str
    num_rows: int
    seq_length: int
    dtype: type
    first_pointer: int

    @property
    def idx_path(self) -> str:
        """The .idx beside the .bin (its document index is read again only for provenance)."""
        return self.bin_path[:-4] + ".idx"


VALIDATE_ROWS = 1 << 24  # .idx entries checked at a time (192 MiB of sizes and pointers)


def read_items(path: str, dtype: np.dtype, offset: int, count: int) -> np.ndarray:
    """`count` items of `dtype` from byte `offset` of a file: a memory map on a filesystem (pages are read when
    touched), one range request on an object store."""
    dtype = np.dtype(dtype)
    if storage.is_remote(path):
        with storage.open_input_file(path) as f:
            return np.frombuffer(f.read_at(count * dtype.itemsize, offset), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))


def open_index(path: str, seq_length: int) -> MegatronIndex:
    """Validate `path` (.bin, .idx, or their common prefix; a local path or an S3 URI) and return where the rows
    are. The .idx is checked in chunks, so memory stays bounded whatever its size."""
    prefix = storage.normalize(path[:-4] if path.endswith((".bin", ".idx")) else path)
    idx, bin_ = prefix + ".idx", prefix + ".bin"
    storage.check_access(prefix, "megatron input")
    for p in (idx, bin_):
        if not storage.is_file(p):
            raise InputError(f"megatron input: {p} does not exist (expected {prefix}.bin and {prefix}.idx)")
    with storage.open_input_file(idx) as fh:
        head = fh.read_at(len(MAGIC) + 8 + 1 + 8 + 8, 0)
    if len(head) < 34 or head[:9] != MAGIC:
        raise InputError(f"{idx}: not a Megatron index (bad magic {head[:9]!r}, expected {MAGIC!r})")
    version, code, count, _docs = struct.unpack("<QBQQ", head[9:34])
    if version != 1 or code not in DTYPES:
        raise InputError(f"{idx}: unsupported version {version} or dtype code {code}")
    dtype = DTYPES[code]
    expected_idx = 34 + count * 4 + count * 8 + (_docs * 8)
    idx_size = storage.size(idx)
    if idx_size < expected_idx:  # sizes, pointers and the document index: a shorter file was cut
        raise InputError(f"{idx}: {idx_size} bytes, too short for {count} entries (needs {expected_idx})")
    step = seq_length * np.dtype(dtype).itemsize
    first = int(read_items(idx, np.int64, 34 + count * 4, 1)[0]) if count else 0
    for lo in range(0, count, VALIDATE_ROWS):
        n = min(VALIDATE_ROWS, count - lo)
        sizes = read_items(idx, np.int32, 34 + lo * 4, n)
        bad = np.flatnonzero(sizes != seq_length)
        if bad.size:
            row = lo + int(bad[0])
            raise InputError(f"{idx}: row {row} has {sizes[bad[0]]} tokens, expected stream.seq_length={seq_length}")
        pointers = read_items(idx, np.int64, 34 + count * 4 + lo * 8, n)
        if np.any(pointers != first + (lo + np.arange(n, dtype=np.int64)) * step):
            raise InputError(f"{idx}: rows are not contiguous {seq_length}-token records")
    need = first + count * step
    have = storage.size(bin_)
    if have != need:
        raise InputError(f"{bin_}: {have} bytes, but {idx} describes {count} rows of {seq_length} tokens "
                         f"= {need} bytes (truncated or mismatched pair?)")
    return MegatronIndex(bin_, int(count), seq_length, dtype, first)


def index_record(index: MegatronIndex) -> dict:
    """The stream_sources row of a validated index: what later stages need to read the .bin without the .idx."""
    return {"path": index.bin_path, "num_rows": index.num_rows, "seq_length": index.seq_length,
            "dtype": np.dtype(index.dtype).name, "first_pointer": index.first_pointer,
            "bin_bytes": storage.size(index.bin_path)}


def recorded_index(warehouse) -> MegatronIndex:  # noqa: ANN001 - Warehouse (import cycle)
    """The index a megatron ingest validated and recorded in stream_sources (one small row). The .idx is not read
    again (for Pythia it is 1.75 GB); the .bin's size is checked against the record, so a replaced file is caught."""
    src = warehouse.read("stream_sources").collect()  # one row per .bin file
    if len(src) != 1:
        raise InputError(f"stream_sources should name one .bin file, found {len(src)}")
    r = src[0]
    try:
        size = storage.size(r["path"])
    except OSError as e:
        raise InputError(f"the training stream {r['path']} (recorded by ingest) cannot be read: {e}") from None
    if size != r["bin_bytes"]:
        raise InputError(f"{r['path']}: {size} bytes, but ingest recorded {r['bin_bytes']}: the file changed since; "
                         "run stage 'ingest' again")
    return MegatronIndex(r["path"], r["num_rows"], r["seq_length"], np.dtype(r["dtype"]).type, r["first_pointer"])


def documents_of_rows(idx: str, rows: np.ndarray) -> np.ndarray:
    """The .idx document of each stream row: doc_idx[k] is the first row of document k, so row r lies in the last
    document k with doc_idx[k] <= r. Only the pages the binary search touches are read (a memory map)."""
    _version, _code, count, docs = struct.unpack("<QBQQ", read_items(idx, np.uint8, 9, 25).tobytes())
    doc_idx = read_items(idx, np.int64, 34 + count * 12, docs)
    return np.searchsorted(doc_idx, rows, side="right") - 1
