"""`sequence_duplicates`: how often each continuation 32-gram occurs anywhere in the training stream (spec §2.2).

The count is exact and the stream is never collected. Three steps:

1. **Query hashes.** Hash the continuation (tokens[32:64]) of every evaluation sequence. Only the distinct hashes
   are collected on the driver and broadcast: O(number of sequences) memory, independent of the stream size.
2. **Scan.** `mapInArrow` over the stream hashes every 32-token window of every row at offsets 0..len-32 inclusive
   (upstream skips the last offset, an off-by-one we do not replicate), windows crossing EOD included. The hash is
   polynomial, H = sum_k t[o+k]·B^k, evaluated mod 2^64 for all windows of a block of rows at once from prefix sums
   (B odd, so B^-o exists mod 2^64: H(o) = (P[o+32] - P[o])·B^-o), then reduced mod `hash_modulus` (default 2^64:
   no reduction). A bit table (64 bits per query, 16 MiB at most) rejects almost every window in one gather;
   survivors are looked up in buckets of the query hashes. Matching windows are aggregated per Arrow batch as
   (hash, window tokens, count). The stream reaches the scan either as DataFrame rows (Spark's Arrow transfer) or,
   in the `duplicates` stage, as shards that each task reads itself (semmem.ingest.stream.stream_shards: pyarrow
   over the token_rows snapshot's Parquet files, or a memory map of the megatron .bin), which skips the JVM hop.
3. **Verify.** Candidates are summed by (hash, window) and equi-joined to the queries on the hash *and* the exact
   token array, so hash collisions never inflate a count. Sequences that share a continuation each get the full count.

Memory per task depends on the query set (hash array + bit table) and on the batch size, not on the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

if TYPE_CHECKING:
    from semmem.ingest.stream import StreamShards

WINDOW = 32  # continuation length in tokens
CONTINUATION_START = 32  # the continuation is tokens[32:64]
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci multiplier: spreads small moduli over the filter's index bits
_MAX_TABLE_BITS = 27  # a 16 MiB bit table at most: a bigger one is slower to probe than the extra bucket lookups
_QUERY_SCHEMA = "sequence_id BIGINT, h BIGINT, cont ARRAY<INT>"
_CANDIDATE_SCHEMA = "h BIGINT, window ARRAY<INT>, n BIGINT"


# ----------------------------------------------------------------------------------------------------------- hashing
@dataclass(frozen=True)
class WindowHasher:
    """Polynomial hash of every `window`-token window, sum_k t[o+k]·base^k mod 2^64, reduced mod `modulus`."""

    base: int = 60013
    modulus: int = 1 << 64
    window: int = WINDOW

    def __post_init__(self) -> None:
        if self.base % 2 == 0:
            raise ValueError(f"duplicates.hash_base must be odd (invertible mod 2^64), got {self.base}")
        if not 2 <= self.modulus <= 1 << 64:
            raise ValueError(f"duplicates.hash_modulus must be in [2, 2^64], got {self.modulus}")

    def _powers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        inv = pow(self.base, -1, 1 << 64)
        pw = np.empty(n, np.uint64)
        ipw = np.empty(n, np.uint64)
        a = b = 1
        for i in range(n):
            pw[i], ipw[i] = a, b
            a = a * self.base % (1 << 64)
            b = b * inv % (1 << 64)
        return pw, ipw

    def hashes(self, tokens: np.ndarray) -> np.ndarray:
        """(rows, L) token matrix -> (rows, L - window + 1) uint64 hashes; offset o is column o."""
        rows, length = tokens.shape
        n_win = length - self.window + 1
        if n_win <= 0:
            return np.empty((rows, 0), np.uint64)
        pw, ipw = _cached_powers(self, length)
        # P = cumsum(t·B^k) in place (uint64 arrays wrap silently: arithmetic mod 2^64); H(o) = (P[o+31] - P[o-1])·B^-o
        p = np.multiply(tokens, pw, dtype=np.uint64, casting="unsafe")
        np.cumsum(p, axis=1, out=p)
        h = np.empty((rows, n_win), np.uint64)
        h[:, 0] = p[:, self.window - 1]
        np.subtract(p[:, self.window:], p[:, :n_win - 1], out=h[:, 1:])
        h *= ipw[:n_win]
        if self.modulus < 1 << 64:
            h %= np.uint64(self.modulus)
        return h


_POWERS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _cached_powers(hasher: WindowHasher, n: int) -> tuple[np.ndarray, np.ndarray]:
    key = (hasher.base, n)
    if key not in _POWERS:
        _POWERS[key] = hasher._powers(n)  # noqa: SLF001
    return _POWERS[key]


# ------------------------------------------------------------------------------------------------------ query index
@dataclass(frozen=True)
class QueryIndex:
    """The distinct query hashes, plus a bit table (one probe per window) that rejects almost every non-candidate.

    Hashes are also kept mixed (m = h·MIX mod 2^64, a bijection since MIX is odd) and sorted. The bit table is indexed
    by the top `bits` bits of m; the rare survivors are looked up in the bucket of the sorted mixed hashes that their
    top `bucket_bits` bits select (`mixed[starts[k]:starts[k+1]]`, at most `max_bucket` entries): one or two cache
    misses instead of a binary search. A skewed set (e.g. under a tiny test modulus) falls back to a binary search.
    """

    hashes: np.ndarray  # sorted unique uint64 query hashes
    table: np.ndarray  # uint8 bit table of 2^bits bits
    bits: int
    mixed: np.ndarray  # sorted h·MIX of the unique hashes
    starts: np.ndarray  # int64, 2^bucket_bits + 1 bucket offsets into `mixed`
    bucket_bits: int
    max_bucket: int

    @classmethod
    def build(cls, hashes: np.ndarray, bits_per_query: int = 64) -> QueryIndex:
        h = np.unique(np.asarray(hashes, dtype=np.uint64))
        bits = int(min(_MAX_TABLE_BITS, max(10, np.ceil(np.log2(max(1, len(h)) * bits_per_query)))))
        table = np.zeros(1 << (bits - 3), np.uint8)
        idx = _slot(h, bits)
        np.bitwise_or.at(table, (idx >> np.uint64(3)).astype(np.int64),
                         np.left_shift(np.uint8(1), (idx & np.uint64(7)).astype(np.uint8)))
        mixed = np.sort(h * _MIX)
        bucket_bits = int(min(bits, max(1, np.ceil(np.log2(max(1, len(h)))))))
        starts = np.searchsorted(mixed >> np.uint64(64 - bucket_bits),
                                 np.arange((1 << bucket_bits) + 1, dtype=np.uint64)).astype(np.int64)
        max_bucket = int(np.diff(starts).max()) if len(h) else 0
        return cls(h, table, bits, mixed, starts, bucket_bits, max_bucket)

    def candidates(self, h: np.ndarray) -> np.ndarray:
        """Flat indices into `h` whose value is one of the query hashes (exact on hashes)."""
        flat = h.reshape(-1)
        if len(self.hashes) == 0 or flat.size == 0:
            return np.empty(0, np.int64)
        m = flat * _MIX
        slot = m >> np.uint64(64 - self.bits)
        probe = np.take(self.table, (slot >> np.uint64(3)).view(np.int64))
        slot &= np.uint64(7)
        probe >>= slot.astype(np.uint8)
        probe &= np.uint8(1)
        maybe = np.flatnonzero(probe)
        if maybe.size == 0:
            return maybe
        return maybe[self._contains(m[maybe])]

    def _contains(self, m: np.ndarray) -> np.ndarray:
        """Which of the mixed hashes `m` are mixed query hashes."""
        n = len(self.mixed)
        if self.max_bucket > 16:  # skewed buckets: binary search
            pos = np.searchsorted(self.mixed, m)
            pos[pos == n] = 0
            return self.mixed[pos] == m
        key = (m >> np.uint64(64 - self.bucket_bits)).view(np.int64)
        lo, hi = self.starts[key], self.starts[key + 1]
        found = np.zeros(len(m), bool)
        for j in range(self.max_bucket):
            pos = lo + j
            live = pos < hi
            if not live.any():
                break
            found |= live & (self.mixed[np.minimum(pos, n - 1)] == m)
        return found


def _slot(h: np.ndarray, bits: int) -> np.ndarray:
    return (h * _MIX) >> np.uint64(64 - bits)


# ------------------------------------------------------------------------------------------------------ batch scans
def _row_blocks(tokens: pa.Array, rows_per_batch: int) -> Iterator[np.ndarray]:
    """Equal-length blocks of rows as (rows, L) int32 matrices (zero-copy when all rows share a length)."""
    tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    if len(tokens) == 0:
        return
    if tokens.null_count:
        tokens = tokens.filter(tokens.is_valid())
    offsets = tokens.offsets.to_numpy()
    values = tokens.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    lengths = np.diff(offsets)
    if np.all(lengths == lengths[0]):
        start, length = int(offsets[0]), int(lengths[0])
        mat = values[start:start + len(lengths) * length].reshape(len(lengths), length)
        for i in range(0, len(lengths), rows_per_batch):
            yield mat[i:i + rows_per_batch]
        return
    for length in np.unique(lengths):  # ragged rows (e.g. a short last row): one block per length
        rows = np.flatnonzero(lengths == length)
        mat = np.stack([values[offsets[r]:offsets[r] + length] for r in rows]) if length else \
            np.empty((len(rows), 0), np.int32)
        for i in range(0, len(rows), rows_per_batch):
            yield mat[i:i + rows_per_batch]


def scan_block(tokens: np.ndarray, hasher: WindowHasher, index: QueryIndex) -> tuple[np.ndarray, np.ndarray]:
    """Candidate windows of one (rows, L) block: their hashes (uint64) and tokens ((k, window) int32)."""
    h = hasher.hashes(tokens)
    if h.shape[1] == 0:
        return np.empty(0, np.uint64), np.empty((0, hasher.window), np.int32)
    hits = index.candidates(h)
    r, o = np.divmod(hits, h.shape[1])
    windows = tokens[r[:, None], o[:, None] + np.arange(hasher.window)]
    return h.reshape(-1)[hits], np.ascontiguousarray(windows, dtype=np.int32)


def _aggregate(hashes: np.ndarray, windows: np.ndarray) -> pa.RecordBatch:
    """Distinct (hash, window) pairs with their counts, as an Arrow batch of the candidate schema."""
    width = windows.shape[1]
    if len(hashes):
        key = np.concatenate([hashes.view(np.int64)[:, None].view(np.int32), windows], axis=1)
        key = np.ascontiguousarray(key)
        uniq, first, counts = np.unique(key.view(np.dtype((np.void, key.shape[1] * 4))).reshape(-1),
                                        return_index=True, return_counts=True)
        del uniq
        hashes, windows = hashes[first], windows[first]
    else:
        counts = np.empty(0, np.int64)
    win = pa.ListArray.from_arrays(pa.array(np.arange(0, (len(hashes) + 1) * width, width, dtype=np.int32)),
                                   pa.array(windows.reshape(-1), pa.int32()))
    return pa.RecordBatch.from_arrays(
        [pa.array(hashes.view(np.int64), pa.int64()), win, pa.array(counts.astype(np.int64), pa.int64())],
        names=["h", "window", "n"])


def scan_batches(batches: Iterator[pa.RecordBatch], hasher: WindowHasher, index: QueryIndex,
                 rows_per_batch: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: stream batches (row_id, tokens) -> candidate (h, window, n), aggregated per Arrow batch."""
    for batch in batches:
        hs, ws = [], []
        for block in _row_blocks(batch.column("tokens"), rows_per_batch):
            h, w = scan_block(block, hasher, index)
            if len(h):
                hs.append(h)
                ws.append(w)
        if hs:
            yield _aggregate(np.concatenate(hs), np.concatenate(ws))


def query_batches(batches: Iterator[pa.RecordBatch], hasher: WindowHasher) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: sequences (sequence_id, tokens) -> (sequence_id, h, cont) for continuations of full length."""
    width = hasher.window
    end = CONTINUATION_START + width
    for batch in batches:
        col = batch.column("tokens")
        ids = batch.column("sequence_id").to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = col.offsets.to_numpy()
        keep = np.flatnonzero(np.asarray(col.is_valid()) & (np.diff(offsets) >= end))
        values = col.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        cont = values[offsets[keep][:, None] + CONTINUATION_START + np.arange(width)].reshape(len(keep), width)
        h = hasher.hashes(cont)[:, 0] if len(keep) else np.empty(0, np.uint64)
        arr = pa.ListArray.from_arrays(pa.array(np.arange(0, (len(keep) + 1) * width, width, dtype=np.int32)),
                                       pa.array(cont.reshape(-1), pa.int32()))
        yield pa.RecordBatch.from_arrays(
            [pa.array(ids[keep], pa.int64()), pa.array(h.view(np.int64), pa.int64()), arr],
            names=["sequence_id", "h", "cont"])


# ------------------------------------------------------------------------------------------------------ DataFrames
def query_hashes(sequences: DataFrame, hasher: WindowHasher) -> DataFrame:
    """(sequence_id, h, cont) for every sequence with at least 64 tokens."""
    return sequences.select("sequence_id", "tokens").mapInArrow(lambda it: query_batches(it, hasher), _QUERY_SCHEMA)


def window_candidates(stream: DataFrame | StreamShards, hasher: WindowHasher, index: QueryIndex,
                      rows_per_batch: int = 64) -> DataFrame:
    """(h, window, n): occurrences of stream windows whose hash is a query hash, partially aggregated.

    `stream` is a DataFrame with a `tokens` column (rows reach Python through Spark's Arrow transfer), or
    `StreamShards` (semmem.ingest.stream.stream_shards): each task then reads its shard of the stream itself, with
    pyarrow or a memory map, and scans it in the same process.
    """
    from semmem.ingest.stream import StreamShards, shard_batches

    if isinstance(stream, StreamShards):
        bc = stream.df.sparkSession.sparkContext.broadcast(index)

        def scan_shards(it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return scan_batches(shard_batches(it, ["tokens"]), hasher, bc.value, rows_per_batch)

        return stream.df.mapInArrow(scan_shards, _CANDIDATE_SCHEMA)
    bc = stream.sparkSession.sparkContext.broadcast(index)

    def scan(it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return scan_batches(it, hasher, bc.value, rows_per_batch)

    return stream.select("tokens").mapInArrow(scan, _CANDIDATE_SCHEMA)


def sequence_duplicates(sequences: DataFrame, stream: DataFrame | StreamShards, *, hash_base: int = 60013,
                        hash_modulus: int = 1 << 64, rows_per_batch: int = 64) -> DataFrame:
    """(sequence_id, sequence_duplicates): exact occurrences of each continuation 32-gram in the stream.

    `stream`: a (.., tokens) DataFrame, or StreamShards read inside the scan tasks (see `window_candidates`).

    Collects only the distinct continuation hashes of `sequences` (scales with the sample, not the corpus).
    Sequences shorter than 64 tokens get NULL; a continuation absent from the stream gets 0.
    """
    hasher = WindowHasher(hash_base, hash_modulus)
    queries = query_hashes(sequences, hasher)
    distinct = queries.select("h").distinct().toArrow().column("h").to_numpy()
    index = QueryIndex.build(distinct.astype(np.int64).view(np.uint64))
    counts = (window_candidates(stream, hasher, index, rows_per_batch)
              .groupBy("h", "window").agg(F.sum("n").alias("n")))
    q = queries.alias("q")
    c = counts.alias("c")
    verified = (q.join(c, (F.col("q.h") == F.col("c.h")) & (F.col("q.cont") == F.col("c.window")), "left")
                .select(F.col("q.sequence_id").alias("sequence_id"),
                        F.coalesce(F.col("c.n"), F.lit(0)).cast("bigint").alias("sequence_duplicates")))
    return (sequences.select("sequence_id").join(verified, "sequence_id", "left")
            .select("sequence_id", "sequence_duplicates"))
