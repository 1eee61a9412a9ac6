"""`sequence_duplicates`: how often each continuation 32-gram occurs anywhere in the training stream (spec §2.2).

The count is exact and the stream is never collected. Three steps:

1. **Query hashes.** Hash the continuation (tokens[32:64]) of every evaluation sequence. The distinct hashes are
   written as Parquet files (by the stage, into warehouse scratch), split into `passes` disjoint sets sized so that
   one set's index fits the memory budget of a task (`plan_passes`). Nothing goes through the driver: each scan task
   reads the files of its pass and builds the index once per Python worker.
2. **Scan.** One scan of the stream per pass (all passes in one Spark job): `mapInArrow` over the stream hashes
   every 32-token window of every row at offsets 0..len-32 inclusive (upstream skips the last offset, an off-by-one
   we do not replicate), windows crossing EOD included. The hash is
   polynomial, H = sum_k t[o+k]·B^k, evaluated mod 2^64 for all windows of a block of rows at once from prefix sums
   (B odd, so B^-o exists mod 2^64: H(o) = (P[o+32] - P[o])·B^-o), then reduced mod `hash_modulus` (default 2^64:
   no reduction). A bit table (`bits_per_query` bits per query of the pass) rejects almost every window in one
   gather; survivors are looked up in buckets of the query hashes. Matching windows are aggregated per Arrow batch as
   (hash, window tokens, count). The stream reaches the scan either as DataFrame rows (Spark's Arrow transfer) or,
   in the `duplicates` stage, as shards that each task reads itself (semmem.ingest.stream.stream_shards: pyarrow
   over the token_rows snapshot's Parquet files, or a memory map of the megatron .bin), which skips the JVM hop.
3. **Verify.** Candidates are summed by (hash, window) and equi-joined to the queries on the hash *and* the exact
   token array, so hash collisions never inflate a count. Sequences that share a continuation each get the full count.

Memory per task depends on one pass's query set (`QueryIndex.nbytes`) and on the batch size, never on the stream.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from semmem.errors import ConfigError

if TYPE_CHECKING:
    from semmem.ingest.stream import StreamShards

WINDOW = 32  # continuation length in tokens
CONTINUATION_START = 32  # the continuation is tokens[32:64]
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci multiplier: spreads small moduli over the filter's index bits
_CHUNK = 1 << 16  # hashes per step of the index build's loops
_QUERY_SCHEMA = "sequence_id BIGINT, h BIGINT, cont ARRAY<INT>"
_CANDIDATE_SCHEMA = ("h BIGINT, window ARRAY<INT>, step BIGINT, n BIGINT, "
                     "first ARRAY<STRUCT<row_id: BIGINT, offset: INT>>")


# ----------------------------------------------------------------------------------------------------------- hashing
@dataclass(frozen=True)
class WindowHasher:
    """Polynomial hash of every `window`-token window, sum_k t[o+k]·base^k mod 2^64, reduced mod `modulus`."""

    base: int = 60013
    modulus: int = 1 << 64
    window: int = WINDOW

    def __post_init__(self) -> None:
        if self.base % 2 == 0:
            raise ConfigError(f"duplicates.hash_base must be odd (invertible mod 2^64), got {self.base}")
        if not 2 <= self.modulus <= 1 << 64:
            raise ConfigError(f"duplicates.hash_modulus must be in [2, 2^64], got {self.modulus}")

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
    """Distinct query hashes behind a bit table (one probe per window) that rejects almost every non-candidate.

    Hashes are kept mixed (m = h·MIX mod 2^64, a bijection since MIX is odd) and sorted. The bit table is indexed
    by the top `bits` bits of m; the rare survivors are looked up in the bucket of the sorted mixed hashes that their
    top `bucket_bits` bits select (`mixed[starts[k]:starts[k+1]]`, at most `max_bucket` entries): one or two cache
    misses instead of a binary search. A skewed set (e.g. under a tiny test modulus) falls back to a binary search.
    Windows of other passes are simply non-queries here: the table and buckets reject them like any other.
    """

    table: np.ndarray  # uint8 bit table of 2^bits bits
    bits: int
    mixed: np.ndarray  # sorted h·MIX of the unique hashes
    starts: np.ndarray  # int64, 2^bucket_bits + 1 bucket offsets into `mixed`
    bucket_bits: int
    max_bucket: int

    @staticmethod
    def _sizes(n: int, bits_per_query: int) -> tuple[int, int]:
        """(table bits, bucket bits) for n distinct hashes: buckets hold about one to two hashes each."""
        bits = int(max(10, np.ceil(np.log2(max(1, n) * bits_per_query))))
        return bits, int(min(bits, max(1, np.floor(np.log2(max(1, n))))))

    @classmethod
    def nbytes(cls, n: int, bits_per_query: int = 64) -> int:
        """Peak bytes of `build` on n distinct hashes, the caller's input array included: input and sorted copy
        (16n), a duplicate mask (n), the bit table, the bucket offsets, and the temporaries of chunked loops."""
        bits, bucket_bits = cls._sizes(n, bits_per_query)
        buckets = 1 << bucket_bits
        return 17 * n + (1 << (bits - 3)) + 8 * (buckets + 1) + 32 * min(n, _CHUNK) + 16 * min(buckets, _CHUNK)

    def held_bytes(self) -> int:
        """Bytes this index holds while it is probed."""
        return self.table.nbytes + self.mixed.nbytes + self.starts.nbytes

    @classmethod
    def build(cls, hashes: np.ndarray, bits_per_query: int = 64) -> QueryIndex:
        mixed = np.asarray(hashes, dtype=np.uint64) * _MIX
        mixed.sort()
        if len(mixed) > 1:
            dup = mixed[1:] == mixed[:-1]
            if dup.any():
                mixed = mixed[np.concatenate([[True], ~dup])]
            del dup
        n = len(mixed)
        bits, bucket_bits = cls._sizes(n, bits_per_query)
        table = np.zeros(1 << (bits - 3), np.uint8)
        for lo in range(0, n, _CHUNK):  # chunked: the temporaries stay small
            idx = mixed[lo:lo + _CHUNK] >> np.uint64(64 - bits)
            np.bitwise_or.at(table, (idx >> np.uint64(3)).astype(np.int64),
                             np.left_shift(np.uint8(1), (idx & np.uint64(7)).astype(np.uint8)))
        buckets = 1 << bucket_bits
        starts = np.empty(buckets + 1, np.int64)
        for lo in range(0, buckets, _CHUNK):  # bucket k starts at the first hash >= k << (64 - bucket_bits)
            firsts = np.arange(lo, min(buckets, lo + _CHUNK), dtype=np.uint64) << np.uint64(64 - bucket_bits)
            starts[lo:lo + len(firsts)] = np.searchsorted(mixed, firsts)
        starts[buckets] = n
        max_bucket = max(int(np.diff(starts[lo:lo + _CHUNK + 1]).max()) for lo in range(0, buckets, _CHUNK))
        return cls(table, bits, mixed, starts, bucket_bits, max_bucket)

    def candidates(self, h: np.ndarray) -> np.ndarray:
        """Flat indices into `h` whose value is one of the query hashes (exact on hashes)."""
        flat = h.reshape(-1)
        if len(self.mixed) == 0 or flat.size == 0:
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


# ------------------------------------------------------------------------------------------------------ scan passes
@dataclass(frozen=True)
class ScanPlan:
    """The query hashes as `passes` disjoint sets, each a tuple of Parquet files (column h) its scan tasks read."""

    passes: tuple[tuple[str, ...], ...]
    bits_per_query: int = 64

    @classmethod
    def from_files(cls, paths: Sequence[str], passes: int, bits_per_query: int = 64) -> ScanPlan:
        """Files of `query_keys(..., passes)` written partitioned by `pass` (folders pass=<p>)."""
        groups: list[list[str]] = [[] for _ in range(passes)]
        for path in sorted(paths):
            found = re.search(r"(?:^|/)pass=(\d+)/", path)
            if found is None or int(found.group(1)) >= passes:
                raise ValueError(f"{path} is not in a pass=<0..{passes - 1}> folder")
            groups[int(found.group(1))].append(path)
        return cls(tuple(tuple(g) for g in groups), bits_per_query)


def plan_passes(n_queries: int, budget_bytes: int, bits_per_query: int = 64) -> int:
    """The fewest passes over the stream for which one pass's query index fits `budget_bytes` (query hashes split
    evenly, with 10% headroom for uneven splits)."""
    if QueryIndex.nbytes(1, bits_per_query) > budget_bytes:
        raise ConfigError(f"duplicates.memory_budget_mb leaves {budget_bytes / 2**20:.2f} MiB per task, less than an "
                         "index of one query; raise it")
    passes = 1
    while QueryIndex.nbytes(-(-n_queries * 11 // (10 * passes)), bits_per_query) > budget_bytes:
        passes += 1
    return passes


def query_keys(queries: DataFrame, passes: int) -> DataFrame:
    """(h, pass): the distinct query hashes of `query_hashes`, each assigned to one of `passes` scan passes."""
    return queries.select("h").distinct().withColumn("pass", F.pmod(F.xxhash64("h"), F.lit(passes)).cast("int"))


_LOADED: dict[tuple[tuple[str, ...], int], QueryIndex] = {}


def pass_index(files: tuple[str, ...], bits_per_query: int) -> QueryIndex:
    """The query index of one pass, built from its files once per Python worker; the previous pass's index is
    dropped first, so a worker never holds two."""
    from semmem.scratch_reads import read_int64_column  # the file access, outside the features

    key = (files, bits_per_query)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = QueryIndex.build(read_int64_column(files, "h").view(np.uint64), bits_per_query)
    return _LOADED[key]


# ------------------------------------------------------------------------------------------------------ batch scans
def _row_blocks(row_ids: np.ndarray, tokens: pa.Array, rows_per_batch: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Equal-length blocks of rows: (their row ids, (rows, L) int32 matrix; zero-copy when all rows share a length)."""
    tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    if len(tokens) == 0:
        return
    if tokens.null_count:
        valid = np.asarray(tokens.is_valid())
        tokens, row_ids = tokens.filter(tokens.is_valid()), row_ids[valid]
    offsets = tokens.offsets.to_numpy()
    values = tokens.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    lengths = np.diff(offsets)
    if np.all(lengths == lengths[0]):
        start, length = int(offsets[0]), int(lengths[0])
        mat = values[start:start + len(lengths) * length].reshape(len(lengths), length)
        for i in range(0, len(lengths), rows_per_batch):
            yield row_ids[i:i + rows_per_batch], mat[i:i + rows_per_batch]
        return
    for length in np.unique(lengths):  # ragged rows (e.g. a short last row): one block per length
        rows = np.flatnonzero(lengths == length)
        mat = np.stack([values[offsets[r]:offsets[r] + length] for r in rows]) if length else \
            np.empty((len(rows), 0), np.int32)
        for i in range(0, len(rows), rows_per_batch):
            yield row_ids[rows[i:i + rows_per_batch]], mat[i:i + rows_per_batch]


@dataclass(frozen=True)
class Candidates:
    """Windows of a block whose hash is a query hash: hashes (uint64), tokens ((k, window) int32), and where each
    occurs (row index in the block, offset in the row)."""

    hashes: np.ndarray
    windows: np.ndarray
    rows: np.ndarray
    offsets: np.ndarray


def scan_block(tokens: np.ndarray, hasher: WindowHasher, index: QueryIndex) -> Candidates:
    """Candidate windows of one (rows, L) block."""
    h = hasher.hashes(tokens)
    if h.shape[1] == 0:
        empty = np.empty(0, np.int64)
        return Candidates(np.empty(0, np.uint64), np.empty((0, hasher.window), np.int32), empty, empty)
    hits = index.candidates(h)
    r, o = np.divmod(hits, h.shape[1])
    windows = tokens[r[:, None], o[:, None] + np.arange(hasher.window)]
    return Candidates(h.reshape(-1)[hits], np.ascontiguousarray(windows, dtype=np.int32), r, o)


def _list_array(values: pa.Array, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _aggregate(hashes: np.ndarray, windows: np.ndarray, positions: np.ndarray, rows_per_step: int,
               max_positions: int) -> pa.RecordBatch:
    """Distinct (hash, window, step) with their counts and their earliest `max_positions` positions (row_id,
    offset), as an Arrow batch of the candidate schema. `positions`: (k, 2) int64, one row per window; a window's
    step is its row // rows_per_step."""
    width = windows.shape[1]
    steps = positions[:, 0] // rows_per_step
    if len(hashes):
        key = np.ascontiguousarray(np.concatenate([hashes.view(np.int64)[:, None].view(np.int32),
                                                   steps[:, None].view(np.int32), windows], axis=1))
        _, first, group, counts = np.unique(key.view(np.dtype((np.void, key.shape[1] * 4))).reshape(-1),
                                            return_index=True, return_inverse=True, return_counts=True)
        hashes, windows, steps = hashes[first], windows[first], steps[first]
        order = np.lexsort((positions[:, 1], positions[:, 0], group.reshape(-1)))  # by group, then stream order
        rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
        kept = order[rank < max_positions]
        positions = positions[kept]
        listed = np.minimum(counts, max_positions)
    else:
        counts = listed = np.empty(0, np.int64)
        positions = np.empty((0, 2), np.int64)
    occurrences = pa.StructArray.from_arrays([pa.array(positions[:, 0], pa.int64()),
                                              pa.array(positions[:, 1].astype(np.int32), pa.int32())],
                                             names=["row_id", "offset"])
    return pa.RecordBatch.from_arrays(
        [pa.array(hashes.view(np.int64), pa.int64()),
         _list_array(pa.array(windows.reshape(-1), pa.int32()), np.full(len(hashes), width)),
         pa.array(steps, pa.int64()), pa.array(counts.astype(np.int64), pa.int64()), _list_array(occurrences, listed)],
        names=["h", "window", "step", "n", "first"])


def scan_batches(batches: Iterator[pa.RecordBatch], hasher: WindowHasher, index: QueryIndex,
                 rows_per_batch: int, max_positions: int = 0, rows_per_step: int = 1 << 62
                 ) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: stream batches (row_id, tokens) -> candidates (h, window, step, n, first), aggregated per
    Arrow batch and training step (row_id // rows_per_step); `first` holds the group's earliest `max_positions`
    occurrences, so the earliest overall are among the union of every group's."""
    for batch in batches:
        ids = batch.column("row_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        hs, ws, ps = [], [], []
        for block_ids, block in _row_blocks(ids, batch.column("tokens"), rows_per_batch):
            c = scan_block(block, hasher, index)
            if len(c.hashes):
                hs.append(c.hashes)
                ws.append(c.windows)
                ps.append(np.stack([block_ids[c.rows], c.offsets], axis=1))
        if hs:
            yield _aggregate(np.concatenate(hs), np.concatenate(ws), np.concatenate(ps), rows_per_step,
                             max_positions)


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


def window_candidates(stream: DataFrame | StreamShards, hasher: WindowHasher, plan: ScanPlan,
                      rows_per_batch: int = 64, max_positions: int = 0, rows_per_step: int = 1 << 62) -> DataFrame:
    """(h, window, step, n, first): occurrences of stream windows whose hash is a query hash, partially aggregated
    per training step (row_id // rows_per_step), with up to `max_positions` of the earliest (row_id, offset) of each
    in `first` (see `scan_batches`).

    `stream` is a DataFrame with columns row_id and tokens (rows reach Python through Spark's Arrow transfer), or
    `StreamShards` (semmem.ingest.stream.stream_shards): each task then reads its shard of the stream itself, with
    pyarrow or a memory map, and scans it in the same process. The stream is scanned once per pass of `plan`; the
    passes are one union, so one Spark job runs them all (tasks in pass order).
    """
    from semmem.ingest.stream import StreamShards, shard_batches

    columns = ["row_id", "tokens"]
    source = stream.df if isinstance(stream, StreamShards) else stream.select(*columns)
    read = (lambda it: shard_batches(it, columns)) if isinstance(stream, StreamShards) else (lambda it: it)
    bits = plan.bits_per_query

    def scan_pass(files: tuple[str, ...]):
        def scan(it: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return scan_batches(read(it), hasher, pass_index(files, bits), rows_per_batch, max_positions,
                                rows_per_step)
        return scan

    frames = [source.mapInArrow(scan_pass(files), _CANDIDATE_SCHEMA) for files in plan.passes if files]
    if not frames:
        return source.sparkSession.createDataFrame([], _CANDIDATE_SCHEMA)
    return functools.reduce(DataFrame.unionAll, frames)


def _matches(queries: DataFrame, found: DataFrame, how: str) -> DataFrame:
    """`found` (h, window, ...) joined to the queries (sequence_id, h, cont) on the hash *and* the exact tokens, so
    a hash collision never counts; sequences that share a continuation each get every match."""
    q, c = queries.alias("q"), found.alias("c")
    return q.join(c, (F.col("q.h") == F.col("c.h")) & (F.col("q.cont") == F.col("c.window")), how)


def sequence_duplicates(sequences: DataFrame, queries: DataFrame, candidates: DataFrame) -> DataFrame:
    """(sequence_id, sequence_duplicates): exact occurrences of each continuation 32-gram in the stream.

    `queries`: `query_hashes(sequences, hasher)`; `candidates`: `window_candidates` with the same hasher.
    Sequences shorter than 64 tokens get NULL; a continuation absent from the stream gets 0.
    """
    counts = candidates.groupBy("h", "window").agg(F.sum("n").alias("n"))
    verified = _matches(queries, counts, "left").select(
        F.col("q.sequence_id").alias("sequence_id"),
        F.coalesce(F.col("c.n"), F.lit(0)).cast("bigint").alias("sequence_duplicates"))
    return (sequences.select("sequence_id").join(verified, "sequence_id", "left")
            .select("sequence_id", "sequence_duplicates"))


def sequence_exposures(queries: DataFrame, candidates: DataFrame) -> DataFrame:
    """(sequence_id, step, occurrences): exact occurrences of each continuation per training step, from
    `window_candidates` (steps without one are absent)."""
    per_step = candidates.groupBy("h", "window", "step").agg(F.sum("n").alias("n"))
    return _matches(queries, per_step, "inner").select(
        F.col("q.sequence_id").alias("sequence_id"), "c.step", F.col("c.n").alias("occurrences"))


def sequence_occurrences(queries: DataFrame, candidates: DataFrame, max_occurrences: int) -> DataFrame:
    """(sequence_id, row_id, offset, step, rank): where each continuation occurs in the stream and at which training
    step (that of its candidate group), its earliest `max_occurrences` positions (rank 1 = earliest by row, then
    offset), from `window_candidates` run with max_positions >= max_occurrences. The sort per window is Spark's (it
    spills), never a collect."""
    positions = (candidates.select("h", "window", "step", F.explode("first").alias("p"))
                 .select("h", "window", "step", "p.row_id", "p.offset"))
    earliest = (positions.withColumn("rank", F.row_number().over(
        Window.partitionBy("h", "window").orderBy("row_id", "offset")))
        .where(F.col("rank") <= max_occurrences))
    return _matches(queries, earliest, "inner").select(
        F.col("q.sequence_id").alias("sequence_id"), "c.row_id", "c.offset", "c.step",
        F.col("c.rank").cast("int").alias("rank"))
