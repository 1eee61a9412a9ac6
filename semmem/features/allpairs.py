"""Exact all-pairs cosine search over the stored embeddings, as a grid of Spark tasks (spec §2.4, §2.5).

- **Items.** Sequences with the same embedding (and, for textual matches, the same prompt text) are one item with a
  weight, the number of its sequences: a boilerplate text repeated 10^5 times is one row of the search, and its
  weight counts it 10^5 times. `items_of` builds them in Spark.
- **Grid.** The items are written once as Parquet files (Warehouse.scratch) and grouped into blocks of about
  `block_rows` items. One Spark task per block pair (I, J) reads both blocks itself and multiplies them in chunks of
  I's rows, so neither side has to fit one machine and the work spreads over every executor.
- **Upper triangle.** Cosine (and the Levenshtein distance of textual matches) is symmetric, so only the cells
  I <= J of the grid run: a cell I < J reports its results for the items of both blocks (J's counts and neighbours
  are the mirror of I's), and a diagonal cell I = I compares pairs i < j (mirrored too) and each item with itself
  once. Every unordered pair is compared once, and every item gets the counts and neighbours the full grid gave it
  (a mirrored neighbour's float64 cosine is computed in the operand order of the (J, I) cell it replaces).
- **Exact.** A pair matches at threshold t when the float64 inner product of the stored float32 vectors is >= t.
  The GEMM runs in float32 (CPU, numpy/BLAS) or float16 (GPU, torch); its error is below `band(dtype)`, so a
  product at least `band` above t is a match, one at least `band` below is not, and only the few products in
  between are recomputed in float64. Counts therefore equal a float64 all-pairs reference whatever the block size,
  chunk size, partitioning or device; only a product within ~1e-15 of t could differ between float64 evaluations.
  A match is thus a function of the float64 product alone, the same number for (i, j) and (j, i) (IEEE products
  commute and einsum sums the d terms in the same order): the mirrored decision is the one the (j, i) cell made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa
from pyspark import Accumulator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from semmem.catalog import threshold_column
from semmem.errors import InputError
from semmem.spark import one_task_each

GRID_SCHEMA = "q_block INT, r_block INT, q_files ARRAY<STRING>, r_files ARRAY<STRING>"
# Largest GEMM error |S - x.y| for unit vectors of dimension <= 1024, with a safety factor of 3 or more:
# float32: gamma_1024 = 1024 * 2^-24 = 6.1e-5; float16 inputs: 2 * 2^-11 (input rounding) + 2^-12 (output) = 1.2e-3.
BANDS = {"float32": 2e-4, "float16": 4e-3}
NORM_TOLERANCE = 1e-3  # a stored embedding must have norm 1 (or 0) within this
# A diagonal cell's chunk k multiplies rows c0.. only, so it does (k+1)/2k of the full block's GEMM: at least this
# many chunks (56%), each at least TRIANGLE_MIN_ROWS rows (big enough for an efficient GEMM).
TRIANGLE_CHUNKS = 8
TRIANGLE_MIN_ROWS = 512


@dataclass(frozen=True)
class Block:
    """One block of items, in the memory of one task."""

    item_id: np.ndarray  # int64 [n]
    vectors: np.ndarray  # float32 [n, d], unit norm
    weight: np.ndarray  # float64 [n]: sequences per item (exact integers)
    prompts: np.ndarray | None  # object [n] of str, when the items carry prompt texts
    prompt_codes: np.ndarray | None  # int64 [n]: equal codes <=> equal prompts, within this block


def make_block(item_id: np.ndarray, vectors: np.ndarray, weight: np.ndarray, prompts: np.ndarray | None) -> Block:
    """A Block in the kernels' dtypes, with its prompt codes when it has prompts: the one way a grid block (Arrow)
    and an IVF list (pandas) become kernel input."""
    codes = None if prompts is None else np.unique(prompts, return_inverse=True)[1].astype(np.int64)
    return Block(item_id.astype(np.int64, copy=False), vectors.astype(np.float32, copy=False),
                 weight.astype(np.float64), prompts, codes)


EMPTY_BLOCK = make_block(np.empty(0, np.int64), np.empty((0, 0), np.float32), np.empty(0), None)


def block_of_table(t: pa.Table, with_prompts: bool) -> Block:
    """The items of one block read as Arrow (item_id, embedding, weight[, prompt_text])."""
    if t.num_rows == 0:
        return EMPTY_BLOCK
    emb = t.column("embedding").combine_chunks()
    vectors = emb.flatten().to_numpy().reshape(len(emb), len(emb[0]))
    prompts = np.asarray(t.column("prompt_text").to_pylist(), dtype=object) if with_prompts else None
    return make_block(t.column("item_id").to_numpy(), vectors, t.column("weight").to_numpy(), prompts)


class RowFile(Protocol):
    """A Parquet file of the items and its row count (semmem.tables.DataFile)."""

    path: str
    num_rows: int | None


def items_of(embeddings: DataFrame, *, prompts: DataFrame | None = None) -> DataFrame:
    """embeddings(sequence_id, embedding) [+ prompts(sequence_id, prompt_text)] -> items(item_id, embedding, weight,
    members[, prompt_text]): one row per distinct embedding (and prompt text), item_id = its smallest sequence_id."""
    df = embeddings.select("sequence_id", "embedding")
    keys = ["embedding"]
    if prompts is not None:
        df = df.join(prompts.select("sequence_id", F.coalesce("prompt_text", F.lit("")).alias("prompt_text")),
                     "sequence_id")
        keys.append("prompt_text")
    return df.groupBy(*keys).agg(F.min("sequence_id").alias("item_id"), F.count(F.lit(1)).alias("weight"),
                                 F.array_sort(F.collect_list("sequence_id")).alias("members"))


def check_embeddings(items: DataFrame) -> int:
    """The embedding dimension; InputError when vectors differ in length, are empty, or are not L2-normalized
    (one aggregate over the items, on executors)."""
    norm = F.sqrt(F.aggregate("embedding", F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x))
    row = items.agg(F.min(F.size("embedding")).alias("lo"), F.max(F.size("embedding")).alias("hi"),
                    F.max(F.when(norm > 0, F.abs(norm - 1))).alias("err"), F.count(F.lit(1)).alias("n")).first()
    if row is None or not row["n"]:
        raise InputError("table embeddings is empty: run stage 'embed' on a non-empty sequences table")
    if row["lo"] != row["hi"] or not row["lo"]:
        raise InputError(f"embeddings have lengths from {row['lo']} to {row['hi']}; every vector must have the same "
                         "non-zero dimension (re-run stage 'embed')")
    if row["err"] is not None and row["err"] > NORM_TOLERANCE:
        raise InputError(f"embeddings are not L2-normalized (a norm is off by {row['err']:.2g}); cosine counts need "
                         "unit vectors (re-run stage 'embed', which normalizes)")
    return int(row["lo"])


def plan_blocks(files: Sequence[RowFile], block_rows: int) -> list[list[str]]:
    """Consecutive files grouped into blocks of at most `block_rows` rows (a larger file is a block of its own)."""
    blocks: list[list[str]] = []
    rows = 0
    for f in files:
        n = f.num_rows or 0
        if not n:
            continue
        if not blocks or rows + n > block_rows:
            blocks.append([])
            rows = 0
        blocks[-1].append(f.path)
        rows += n
    return blocks


def grid_frame(spark: SparkSession, blocks: list[list[str]]) -> DataFrame:
    """One row (GRID_SCHEMA) and one partition per block pair (I, J) with I <= J: the upper triangle of the grid,
    n(n+1)/2 tasks for n blocks (a cell I < J stands for J, I too: see grid_task)."""
    rows = [(i, j, blocks[i], blocks[j]) for i in range(len(blocks)) for j in range(i, len(blocks))]
    return one_task_each(spark, rows, GRID_SCHEMA)


# Neighbour candidates of one side of a block pair: (row of the item, row of the neighbour in the other block,
# float64 cosine) arrays, empty when the caller keeps none.
Neighbors = tuple[np.ndarray, np.ndarray, np.ndarray]
# What a block pair yields for the items of one block: weighted counts [n, T] against the other block, neighbours.
PairResult = tuple[np.ndarray, Neighbors]
NO_NEIGHBORS = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
# Which pairs of (q, r) a block-pair function compares, and for whom it reports:
#   "rectangle": every (q row, r row) pair, results for q's items only (an IVF list: r is not a query there);
#   "mirrored":  every pair, results for q's items and r's items (grid cell I < J, which stands for J, I too);
#   "triangle":  q is r; pairs i < j for both items, and each item with itself once (grid cell I = I).
Cell = Literal["rectangle", "mirrored", "triangle"]
# (results of q's items, results of r's items or None for a rectangle)
CellResult = tuple[PairResult, PairResult | None]
PairFn = Callable[[Block, Block, Cell], CellResult]
# Reads one grid block inside a task: (its files, with prompt texts?) -> Block (semmem.scratch_reads.read_block: the
# file access stays outside the features).
BlockReader = Callable[[tuple[str, ...], bool], Block]


def result_schema(n_thresholds: int) -> str:
    """Rows of a grid task: kind 0 = partial counts c0.. of a query item, kind 1 = one neighbour candidate."""
    counts = ", ".join(f"c{k} DOUBLE" for k in range(n_thresholds))
    return f"kind INT, item_id BIGINT, {counts}, neighbor_item BIGINT, cosine DOUBLE"


def grid_task(grid_batches: Iterator[pa.RecordBatch], *, pair_fn: PairFn, n_thresholds: int, with_prompts: bool,
              read_block: BlockReader, pairs: Accumulator | None = None) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: for each grid row (GRID_SCHEMA, I <= J) read both blocks (`read_block`), run `pair_fn` on
    the cell ("triangle" on the diagonal, else "mirrored") and emit result_schema rows for the items of both blocks
    (count rows only for items with a nonzero count). `pairs` counts the item pairs compared: n(n+1)/2 over the
    grid."""
    from threadpoolctl import threadpool_limits

    from semmem.spark import task_cpus

    for batch in grid_batches:
        for row in batch.to_pylist():
            q = read_block(tuple(row["q_files"]), with_prompts)
            r = read_block(tuple(row["r_files"]), with_prompts)
            diagonal = row["q_block"] == row["r_block"]
            if pairs is not None:
                n_q = len(q.item_id)
                pairs.add(n_q * (n_q + 1) // 2 if diagonal else n_q * len(r.item_id))
            with threadpool_limits(task_cpus()):  # BLAS threads = the task's cores: tasks, not threads, share a node
                q_side, r_side = pair_fn(q, r, "triangle" if diagonal else "mirrored")
            yield result_batch(q, r, *q_side, n_thresholds)
            if r_side is not None:
                yield result_batch(r, q, *r_side, n_thresholds)


def result_batch(q: Block, r: Block, counts: np.ndarray, neighbors: Neighbors, n_thresholds: int) -> pa.RecordBatch:
    """result_schema rows of one block pair: counts of the query items with a nonzero count, then the neighbours."""
    qi, rj, cos = neighbors
    hit = np.nonzero(counts.any(axis=1))[0]
    n_c, n_n = len(hit), len(qi)
    no_neighbor = np.r_[np.ones(n_c, bool), np.zeros(n_n, bool)]  # NULL neighbour columns on count rows
    cols = {"kind": pa.array(np.r_[np.zeros(n_c, np.int32), np.ones(n_n, np.int32)]),
            "item_id": pa.array(np.r_[q.item_id[hit], q.item_id[qi]].astype(np.int64))}
    for k in range(n_thresholds):
        cols[f"c{k}"] = pa.array(np.r_[counts[hit, k], np.zeros(n_n)])
    cols["neighbor_item"] = pa.array(np.r_[np.zeros(n_c, np.int64), r.item_id[rj]].astype(np.int64), mask=no_neighbor)
    cols["cosine"] = pa.array(np.r_[np.zeros(n_c), cos], mask=no_neighbor)
    return pa.RecordBatch.from_pydict(cols)


def run_grid(grid: DataFrame, pair_fn: PairFn, n_thresholds: int, *, with_prompts: bool, read_block: BlockReader,
             pairs: Accumulator | None = None) -> DataFrame:
    """The grid's task results (result_schema), lazily; `pair_fn` and `read_block` run on executors."""
    fn = functools.partial(grid_task, pair_fn=pair_fn, n_thresholds=n_thresholds, with_prompts=with_prompts,
                           read_block=read_block, pairs=pairs)
    return grid.mapInArrow(fn, result_schema(n_thresholds))


def match_counts(results: DataFrame, items: DataFrame, thresholds: Sequence[float], prefix: str) -> DataFrame:
    """Per-task partial counts (kind 0 rows) summed per item, then given to every sequence of the item:
    (sequence_id, <prefix><t>...) for the sorted thresholds, 0 for items no task reported."""
    t = sorted(thresholds)
    sums = (results.where(F.col("kind") == 0).groupBy("item_id")
            .agg(*[F.sum(f"c{k}").alias(f"c{k}") for k in range(len(t))]))
    per_item = items.select("item_id", "members").join(sums, "item_id", "left")
    return per_item.select(F.explode("members").alias("sequence_id"), *[
        F.coalesce(F.col(f"c{k}"), F.lit(0.0)).cast("long").alias(threshold_column(prefix, v))
        for k, v in enumerate(t)])


# --------------------------------------------------------------------------------------------------- GEMM backends
# A backend multiplies a chunk of query rows by a reference block and answers questions about that product S. Only
# `floor` and above matters: every question asks about entries >= floor (the lowest threshold minus the band).
class NumpyChunk:
    """S of one chunk on the CPU, kept as its entries >= floor (row, column, value): one comparison and one nonzero
    pass over S, the rest works on the (usually few) candidates."""

    def __init__(self, shape: tuple[int, int], ii: np.ndarray, jj: np.ndarray, v: np.ndarray) -> None:
        self.rows, self.columns = shape
        self.ii, self.jj, self.v = ii, jj, v

    @classmethod
    def of(cls, s: np.ndarray, floor: float, strict_upper: bool = False) -> NumpyChunk:
        """The entries of S >= floor; with `strict_upper` only those right of the diagonal (column > row)."""
        flat = np.flatnonzero(s >= floor)  # much faster than a 2-D nonzero
        ii, jj = np.divmod(flat, s.shape[1])
        v = s.reshape(-1)[flat].astype(np.float64)
        if strict_upper:
            upper = jj > ii
            ii, jj, v = ii[upper], jj[upper], v[upper]
        return cls(s.shape, ii, jj, v)

    def transposed(self) -> NumpyChunk:
        """S^T: the same entries, with the reference rows as rows (the mirrored side of a grid cell)."""
        return NumpyChunk((self.columns, self.rows), self.jj, self.ii, self.v)

    def count_ge(self, value: float, weight: np.ndarray) -> np.ndarray:
        """Per row: the weight of the columns with S >= value (float64, exact for integer weights < 2^53)."""
        m = self.v >= value
        return np.bincount(self.ii[m], weights=weight[self.jj[m]], minlength=self.rows)

    def entries(self, lo: np.ndarray | float, hi: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, value) of the entries with lo <= S < hi (lo: a scalar or one value per row)."""
        lo_e = lo[self.ii] if isinstance(lo, np.ndarray) else lo
        m = (self.v >= lo_e) & (self.v < hi)
        return self.ii[m], self.jj[m], self.v[m]

    def row_kth(self, k: int) -> np.ndarray:
        """Per row, the k-th largest entry >= floor (-inf for rows with fewer)."""
        out = np.full(self.rows, -np.inf)
        order = np.lexsort((-self.v, self.ii))
        ii = self.ii[order]
        start = np.searchsorted(ii, np.arange(self.rows))
        end = np.searchsorted(ii, np.arange(self.rows), side="right")
        has = end - start >= k
        out[has] = self.v[order][start[has] + k - 1]
        return out


class NumpyGemm:
    """float32 BLAS GEMM on the CPU (measured faster here than torch's CPU matmul and faiss range_search)."""

    dtype = "float32"
    chunk_entries = 1 << 25  # S entries per chunk: 128 MiB of float32 (with the mask and candidates, ~200 MiB)

    def rows_per_chunk(self, n_reference: int) -> int:
        """Query rows per chunk: big enough for an efficient GEMM, small enough to bound S's memory."""
        return int(min(8192, max(1, self.chunk_entries // max(1, n_reference))))

    def put(self, vectors: np.ndarray) -> np.ndarray:
        return vectors

    def chunk(self, q: np.ndarray, r: np.ndarray, floor: float, strict_upper: bool = False) -> NumpyChunk:
        """S = q @ r.T kept from `floor` up; `strict_upper`: only the entries with column > row (see chunks_of)."""
        return NumpyChunk.of(q @ r.T, floor, strict_upper)


class TorchChunk:
    """S of one chunk on the GPU: counts and k-th values are reduced there; only entries cross to the host."""

    def __init__(self, s: Any, floor: float) -> None:
        import torch

        self.torch, self.s, self.floor = torch, s, floor
        self.rows, self.columns = s.shape

    def transposed(self) -> TorchChunk:
        """S^T (a view): the same entries, with the reference rows as rows."""
        return TorchChunk(self.s.T, self.floor)

    def count_ge(self, value: float, weight: np.ndarray) -> np.ndarray:
        w = self.torch.as_tensor(weight, device=self.s.device, dtype=self.torch.float64)
        return ((self.s >= value).to(self.torch.float64) @ w).cpu().numpy()

    def entries(self, lo: np.ndarray | float, hi: float = np.inf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo_t = self.torch.as_tensor(np.maximum(lo, self.floor), dtype=self.torch.float32, device=self.s.device)
        mask = self.s >= (lo_t[:, None] if lo_t.ndim else lo_t)
        if hi != np.inf:
            mask &= self.s < hi
        ii, jj = self.torch.nonzero(mask, as_tuple=True)
        return ii.cpu().numpy(), jj.cpu().numpy(), self.s[ii, jj].double().cpu().numpy()

    def row_kth(self, k: int) -> np.ndarray:
        if k > self.s.shape[1]:
            return np.full(self.rows, -np.inf)
        kth = self.torch.topk(self.s.float(), k, dim=1).values[:, -1].double().cpu().numpy()
        return np.where(kth >= self.floor, kth, -np.inf)


Chunk = NumpyChunk | TorchChunk


class TorchGemm(NumpyGemm):
    """torch GEMM on a GPU (float16 by default: the band re-check keeps counts exact) or, for tests, the CPU."""

    chunk_entries = 1 << 28  # 512 MiB of float16 on the GPU

    def __init__(self, device: Any, dtype: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.dtype = dtype
        self.tdtype = {"float32": torch.float32, "float16": torch.float16}[dtype]

    def put(self, vectors: np.ndarray) -> Any:
        return self.torch.as_tensor(vectors, device=self.device).to(self.tdtype)

    def chunk(self, q: Any, r: Any, floor: float, strict_upper: bool = False) -> TorchChunk:  # type: ignore[override]
        s = q @ r.T
        if strict_upper:  # the diagonal and below of the leading square: -inf is below every floor
            m = s.shape[0]
            on_or_below = self.torch.ones(m, m, dtype=self.torch.bool, device=s.device).tril_()
            s[:, :m].masked_fill_(on_or_below, float("-inf"))
        return TorchChunk(s, floor)


def make_backend(kernel: str, device: str, dtype: str) -> NumpyGemm:
    """The GEMM backend of one task: torch on the GPU Spark assigned (or when asked), numpy BLAS on CPU."""
    from semmem.scoring.models import pick_device

    use_torch = kernel == "torch" or (kernel == "auto" and device != "cpu" and _cuda_available())
    if not use_torch:
        if dtype == "float16":
            raise InputError("semantic.dtype=float16 needs the torch kernel (semantic.kernel=torch, on a GPU)")
        return NumpyGemm()
    dev = pick_device(device)
    if dtype == "auto":
        dtype = "float16" if dev.type == "cuda" else "float32"
    return TorchGemm(dev, dtype)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return torch.cuda.is_available()


# --------------------------------------------------------------------------------------------------- exact decisions
def exact_cosines(q: Block, r: Block, qi: np.ndarray, rj: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """float64 inner products of the stored float32 vectors of pairs (q.vectors[qi], r.vectors[rj])."""
    out = np.empty(len(qi), dtype=np.float64)
    for s in range(0, len(qi), chunk):
        a = q.vectors[qi[s:s + chunk]].astype(np.float64)
        b = r.vectors[rj[s:s + chunk]].astype(np.float64)
        out[s:s + chunk] = np.einsum("ij,ij->i", a, b)
    return out


def self_cosines(block: Block) -> np.ndarray:
    """The float64 product of each item with itself. A diagonal cell decides its self pairs by it: what the band
    re-check decides for any pair (the GEMM only says which pairs are far from a threshold)."""
    rows = np.arange(len(block.item_id))
    return exact_cosines(block, block, rows, rows)


def band_of(backend: NumpyGemm) -> float:
    return BANDS[backend.dtype]


def chunks_of(q: Block, r: Block, backend: NumpyGemm, floor: float, cell: Cell) -> Iterator[tuple[int, int, Chunk]]:
    """(first q row, first r row, chunk of S = q @ r.T from `floor` up) in chunks of q rows. In a "triangle" cell
    (q is r) the chunk of rows [c0, c1) is multiplied by the rows c0.. of r only and keeps the pairs i < j: about
    half the GEMM of the full block, and each unordered pair once; the self pairs are the caller's (self_cosines)."""
    rh = backend.put(r.vectors)
    step = backend.rows_per_chunk(len(r.item_id))
    triangle = cell == "triangle"
    if triangle:
        step = min(step, max(TRIANGLE_MIN_ROWS, -(-len(q.item_id) // TRIANGLE_CHUNKS)))
    for c0 in range(0, len(q.item_id), step):
        r0 = c0 if triangle else 0
        c1 = min(len(q.item_id), c0 + step)
        yield c0, r0, backend.chunk(backend.put(q.vectors[c0:c1]), rh[r0:], floor, strict_upper=triangle)


def match_decisions(q: Block, r: Block, qi: np.ndarray, rj: np.ndarray, s: np.ndarray, thresholds: np.ndarray,
                    band: float) -> np.ndarray:
    """bool [len(qi), T]: is the pair (q row qi, r row rj), whose GEMM value is s, a match at each threshold?

    Decided by s where it is at least `band` away from the threshold, by the float64 product otherwise."""
    sure = s[:, None] >= thresholds[None, :] + band
    maybe = (s[:, None] >= thresholds[None, :] - band) & ~sure
    rows = np.nonzero(maybe.any(axis=1))[0]
    if len(rows):
        cos = exact_cosines(q, r, qi[rows], rj[rows])
        sure[rows] |= maybe[rows] & (cos[:, None] >= thresholds[None, :])
    return sure


def top_per_group(group: np.ndarray, score: np.ndarray, tie: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first k entries of each group, ordered by score descending then tie ascending."""
    if len(group) == 0:
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((tie, -score, group))
    g = group[order]
    starts = np.r_[True, g[1:] != g[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(g)), 0))
    return order[(np.arange(len(g)) - first) < k]
