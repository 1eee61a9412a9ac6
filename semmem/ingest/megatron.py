"""Pythia's preshuffled Megatron `document.bin` + `document.idx`, read in place by memory map.

Layout (spec §1.1): the .idx holds magic `MMIDIDX\\0\\0`, u64 version 1, u8 dtype code (8 = uint16), u64 count,
u64 document count, int32 sizes[count], int64 byte pointers[count], int64 doc_idx[doc count]. Each document is one
stream row, so row i starts at pointers[i]. This module validates the pair; semmem.ingest.stream reads row ranges of
the .bin by memory map inside executors, so nothing is copied whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def open_index(path: str, seq_length: int) -> MegatronIndex:
    """Validate `path` (.bin, .idx, or their common prefix) and return where the rows are."""
    prefix = path[:-4] if path.endswith((".bin", ".idx")) else path
    idx, bin_ = Path(prefix + ".idx"), Path(prefix + ".bin")
    for p in (idx, bin_):
        if not p.is_file():
            raise InputError(f"megatron input: {p} does not exist (expected {prefix}.bin and {prefix}.idx)")
    with open(idx, "rb") as fh:
        head = fh.read(len(MAGIC) + 8 + 1 + 8 + 8)
    if len(head) < 34 or head[:9] != MAGIC:
        raise InputError(f"{idx}: not a Megatron index (bad magic {head[:9]!r}, expected {MAGIC!r})")
    version, code, count, _docs = struct.unpack("<QBQQ", head[9:34])
    if version != 1 or code not in DTYPES:
        raise InputError(f"{idx}: unsupported version {version} or dtype code {code}")
    dtype = DTYPES[code]
    expected_idx = 34 + count * 4 + count * 8 + (_docs * 8)
    if idx.stat().st_size < 34 + count * 12:
        raise InputError(f"{idx}: {idx.stat().st_size} bytes, too short for {count} entries (needs {expected_idx})")
    sizes = np.memmap(idx, dtype=np.int32, mode="r", offset=34, shape=(count,))
    pointers = np.memmap(idx, dtype=np.int64, mode="r", offset=34 + count * 4, shape=(count,))
    bad = np.flatnonzero(sizes != seq_length)
    if bad.size:
        raise InputError(f"{idx}: row {bad[0]} has {sizes[bad[0]]} tokens, expected stream.seq_length={seq_length}")
    itemsize = np.dtype(dtype).itemsize
    if count and np.any(np.diff(pointers) != seq_length * itemsize):
        raise InputError(f"{idx}: rows are not contiguous {seq_length}-token records")
    need = (int(pointers[0]) if count else 0) + int(sizes.astype(np.int64).sum()) * itemsize
    have = bin_.stat().st_size
    if have != need:
        raise InputError(f"{bin_}: {have} bytes, but {idx} describes {count} rows of {seq_length} tokens "
                         f"= {need} bytes (truncated or mismatched pair?)")
    return MegatronIndex(str(bin_.absolute()), int(count), seq_length, dtype, int(pointers[0]) if count else 0)


def index_record(index: MegatronIndex) -> dict:
    """The stream_sources row of a validated index: what later stages need to read the .bin without the .idx."""
    return {"path": index.bin_path, "num_rows": index.num_rows, "seq_length": index.seq_length,
            "dtype": np.dtype(index.dtype).name, "first_pointer": index.first_pointer,
            "bin_bytes": Path(index.bin_path).stat().st_size}


def recorded_index(warehouse) -> MegatronIndex:  # noqa: ANN001 - Warehouse (import cycle)
    """The index a megatron ingest validated and recorded in stream_sources (one small row). The .idx is not read
    again (for Pythia it is 1.75 GB); the .bin's size is checked against the record, so a replaced file is caught."""
    src = warehouse.read("stream_sources").collect()  # one row per .bin file
    if len(src) != 1:
        raise InputError(f"stream_sources should name one .bin file, found {len(src)}")
    r = src[0]
    try:
        size = Path(r["path"]).stat().st_size
    except OSError as e:
        raise InputError(f"the training stream {r['path']} (recorded by ingest) cannot be read: {e}") from None
    if size != r["bin_bytes"]:
        raise InputError(f"{r['path']}: {size} bytes, but ingest recorded {r['bin_bytes']}: the file changed since; "
                         "run stage 'ingest' again")
    return MegatronIndex(r["path"], r["num_rows"], r["seq_length"], np.dtype(r["dtype"]).type, r["first_pointer"])


def write_megatron(prefix: Path, rows: np.ndarray) -> None:
    """Write `rows` ([n, seq_length] token ids < 65536) as Pythia's `prefix.bin` / `prefix.idx`, one document per
    row: the layout `open_index` reads (for tests, benchmarks and exporting a sample)."""
    count, seq_length = rows.shape
    prefix.with_suffix(".bin").write_bytes(rows.astype(np.uint16).tobytes())
    sizes = np.full(count, seq_length, dtype=np.int32)
    pointers = np.arange(count, dtype=np.int64) * seq_length * 2
    doc_idx = np.arange(count + 1, dtype=np.int64)
    head = MAGIC + struct.pack("<QBQQ", 1, 8, count, count + 1)
    prefix.with_suffix(".idx").write_bytes(head + sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes())
