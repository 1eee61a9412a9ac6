"""Semantic matches (spec §2.4): how many reference sequences lie within cosine >= t of each sequence.

The reference set is every evaluation sequence, so each sequence counts itself (>= 1). All thresholds are counted in
one pass of the exact grid of semmem.features.allpairs. The same pass keeps, per item, its best `keep` neighbour
items, from which `semantic_neighbors` lists up to `max_neighbors` neighbour sequences per sequence (highest cosine
first, then smallest neighbor_id; the sequence itself excluded). The cap bounds that table only; counts stay exact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from semmem.features.allpairs import NO_NEIGHBORS, Block, Chunk, NumpyGemm, PairResult, band_of, exact_cosines, \
    make_backend, match_decisions, top_per_group

COUNTS_PREFIX = "semantic_matches_"


def block_pair(q: Block, r: Block, thresholds: np.ndarray, keep: int, backend: NumpyGemm) -> PairResult:
    """Weighted match counts [nq, T] of the query items against the reference items, and up to `keep` neighbour
    candidates per query item (query row, reference row, float64 cosine), the best by cosine then reference id."""
    nq, nr = len(q.item_id), len(r.item_id)
    counts = np.zeros((nq, len(thresholds)), dtype=np.float64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if nq == 0 or nr == 0:
        return counts, NO_NEIGHBORS
    band = band_of(backend)
    rh = backend.put(r.vectors)
    step = backend.rows_per_chunk(nr)
    for c0 in range(0, nq, step):
        c1 = min(nq, c0 + step)
        chunk = backend.chunk(backend.put(q.vectors[c0:c1]), rh, thresholds[0] - band)
        for k, t in enumerate(thresholds):
            counts[c0:c1, k] = chunk.count_ge(t + band, r.weight)
            ii, jj, v = chunk.entries(t - band, t + band)
            if len(ii):
                ok = match_decisions(q, r, c0, ii, jj, v, np.array([t]), band)[:, 0]
                counts[c0:c1, k] += np.bincount(ii[ok], weights=r.weight[jj[ok]], minlength=c1 - c0)
        if keep:
            found.append(_best_neighbors(q, r, c0, chunk, thresholds[0], keep, band))
    if not found:
        return counts, NO_NEIGHBORS
    return counts, tuple(np.concatenate(parts) for parts in zip(*found))  # type: ignore[return-value]


def _best_neighbors(q: Block, r: Block, c0: int, chunk: Chunk, t0: float, keep: int, band: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `keep` best reference rows (cosine >= t0) of each query row of one chunk, exactly ranked.

    Only entries within 2*band of the row's keep-th largest GEMM value can be among its exact best `keep`, so only
    those get a float64 cosine."""
    ii, jj, _ = chunk.entries(np.maximum(t0 - band, chunk.row_kth(keep) - 2 * band))
    cos = exact_cosines(q, r, c0 + ii, jj)
    ok = cos >= t0
    ii, jj, cos = ii[ok], jj[ok], cos[ok]
    best = top_per_group(ii, cos, r.item_id[jj], keep)
    return c0 + ii[best], jj[best], cos[best]


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


def pair_function(thresholds: list[float], keep: int, kernel: str, device: str, dtype: str
                  ) -> Callable[[Block, Block], PairResult]:
    """The per-block-pair work of a semantic grid task (built on the executor: the backend may hold a GPU)."""
    t = np.asarray(sorted(thresholds), dtype=np.float64)

    def run(q: Block, r: Block) -> PairResult:
        return block_pair(q, r, t, keep, make_backend(kernel, device, dtype))

    return run
