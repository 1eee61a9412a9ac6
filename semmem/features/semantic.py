"""Semantic matches (spec §2.4): how many reference sequences lie within cosine >= t of each sequence.

The reference set is every evaluation sequence, so each sequence counts itself (>= 1). All thresholds are counted in
one pass of the exact grid of semmem.features.allpairs. The same pass keeps, per item, its best `keep` neighbour
items, from which `semantic_neighbors` lists up to `max_neighbors` neighbour sequences per sequence (highest cosine
first, then smallest neighbor_id; the sequence itself excluded). The cap bounds that table only; counts stay exact.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from semmem.features.allpairs import NO_NEIGHBORS, Block, Cell, CellResult, Chunk, Neighbors, NumpyGemm, PairFn, \
    band_of, chunks_of, exact_cosines, make_backend, match_decisions, self_cosines, top_per_group

COUNTS_PREFIX = "semantic_matches_"


def block_pair(q: Block, r: Block, thresholds: np.ndarray, keep: int, backend: NumpyGemm,
               cell: Cell = "rectangle") -> CellResult:
    """Weighted match counts [nq, T] of the query items against the reference items, and up to `keep` neighbour
    candidates per query item (query row, reference row, float64 cosine), the best by cosine then reference id;
    for a "mirrored" or "triangle" cell (allpairs.Cell) the same for the reference items, from the same products.

    Each chunk entry is decided once and counted for both of its items; a mirrored neighbour's cosine is
    exact_cosines(r, q, ...), the operand order of the (J, I) cell it replaces."""
    nq, nr = len(q.item_id), len(r.item_id)
    mirrored = cell != "rectangle"
    q_counts = np.zeros((nq, len(thresholds)), dtype=np.float64)
    r_counts = np.zeros((nr, len(thresholds)), dtype=np.float64)
    q_found: list[Neighbors] = []
    r_found: list[Neighbors] = []
    if nq and nr:
        band = band_of(backend)
        for c0, r0, chunk in chunks_of(q, r, backend, thresholds[0] - band, cell):
            rows, cols = slice(c0, c0 + chunk.rows), slice(r0, r0 + chunk.columns)
            mirror = chunk.transposed() if mirrored else None
            for k, t in enumerate(thresholds):
                q_counts[rows, k] += chunk.count_ge(t + band, r.weight[cols])
                if mirror is not None:
                    r_counts[cols, k] += mirror.count_ge(t + band, q.weight[rows])
                ii, jj, v = chunk.entries(t - band, t + band)
                if len(ii):
                    qi, rj = c0 + ii, r0 + jj
                    ok = match_decisions(q, r, qi, rj, v, np.array([t]), band)[:, 0]
                    q_counts[:, k] += np.bincount(qi[ok], weights=r.weight[rj[ok]], minlength=nq)
                    if mirrored:
                        r_counts[:, k] += np.bincount(rj[ok], weights=q.weight[qi[ok]], minlength=nr)
            if keep:
                q_found.append(_best_neighbors(q, r, c0, r0, chunk, thresholds[0], keep, band))
                if mirror is not None:  # a reference item gets up to `keep` per chunk: cut back to keep as they pile
                    r_found.append(_best_neighbors(r, q, r0, c0, mirror, thresholds[0], keep, band))
                    if sum(len(rows) for rows, _, _ in r_found) > 2 * nr * keep:
                        r_found = [_top_neighbors(r_found, q, keep)]
        if cell == "triangle":  # each item with itself, once (the chunks keep i < j only)
            cos = self_cosines(q)
            q_counts += (cos[:, None] >= thresholds[None, :]) * q.weight[:, None]
            if keep:
                own = np.nonzero(cos >= thresholds[0])[0]
                q_found.append((own, own, cos[own]))
    q_side = (q_counts, _top_neighbors(q_found, r, keep))
    return q_side, ((r_counts, _top_neighbors(r_found, q, keep)) if mirrored else None)


def _best_neighbors(q: Block, r: Block, c0: int, r0: int, chunk: Chunk, t0: float, keep: int, band: float
                    ) -> Neighbors:
    """The `keep` best reference rows (cosine >= t0) of each query row of one chunk (q rows c0.., r rows r0..),
    exactly ranked.

    Only entries within 2*band of the row's keep-th largest GEMM value can be among its exact best `keep`, so only
    those get a float64 cosine."""
    ii, jj, _ = chunk.entries(np.maximum(t0 - band, chunk.row_kth(keep) - 2 * band))
    qi, rj = c0 + ii, r0 + jj
    cos = exact_cosines(q, r, qi, rj)
    ok = cos >= t0
    qi, rj, cos = qi[ok], rj[ok], cos[ok]
    best = top_per_group(qi, cos, r.item_id[rj], keep)
    return qi[best], rj[best], cos[best]


def _top_neighbors(found: list[Neighbors], other: Block, keep: int) -> Neighbors:
    """The best `keep` of each item's candidates gathered over the chunks (cosine descending, then the other
    block's item id): a mirrored item meets the query rows of every chunk."""
    if not found:
        return NO_NEIGHBORS
    rows, others, cos = (np.concatenate(parts) for parts in zip(*found))
    best = top_per_group(rows, cos, other.item_id[others], keep)
    return rows[best], others[best], cos[best]


def neighbor_pairs(results: DataFrame, items: DataFrame, max_neighbors: int) -> DataFrame:
    """semantic_neighbors(sequence_id, neighbor_id, cosine): the best `max_neighbors` neighbour sequences of each
    sequence (cosine descending, neighbor_id ascending), itself excluded.

    Per query item: its best max_neighbors + 1 neighbour items across all reference blocks, expanded to at most
    max_neighbors + 1 neighbour sequences (the items' smallest ids first); then per member sequence, that list
    without the sequence itself, cut to max_neighbors. Work and output stay within (sequences x max_neighbors)."""
    keep = max_neighbors + 1
    cand = results.where(F.col("kind") == 1).select("item_id", "neighbor_item", "cosine")
    by_item = Window.partitionBy("item_id").orderBy(F.desc("cosine"), "neighbor_item")
    top_items = cand.withColumn("rank", F.row_number().over(by_item)).where(F.col("rank") <= keep)
    members = items.select(F.col("item_id").alias("neighbor_item"),
                           F.explode(F.slice("members", 1, keep)).alias("neighbor_id"))
    item_lists = top_items.join(members, "neighbor_item").select("item_id", "neighbor_id", "cosine")
    by_item_seq = Window.partitionBy("item_id").orderBy(F.desc("cosine"), "neighbor_id")
    item_lists = item_lists.withColumn("rank", F.row_number().over(by_item_seq)).where(F.col("rank") <= keep)
    queries = items.select("item_id", F.explode("members").alias("sequence_id"))
    pairs = (queries.join(item_lists.drop("rank"), "item_id")
             .where(F.col("sequence_id") != F.col("neighbor_id")))
    by_seq = Window.partitionBy("sequence_id").orderBy(F.desc("cosine"), "neighbor_id")
    return (pairs.withColumn("rank", F.row_number().over(by_seq)).where(F.col("rank") <= max_neighbors)
            .select("sequence_id", "neighbor_id", "cosine"))


def pair_function(thresholds: list[float], keep: int, kernel: str, device: str, dtype: str) -> PairFn:
    """The per-cell work of a semantic grid task or IVF list (built on the executor: the backend may hold a GPU)."""
    t = np.asarray(sorted(thresholds), dtype=np.float64)

    def run(q: Block, r: Block, cell: Cell) -> CellResult:
        return block_pair(q, r, t, keep, make_backend(kernel, device, dtype), cell)

    return run
