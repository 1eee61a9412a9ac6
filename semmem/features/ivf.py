"""Approximate near-match search (`semantic.mode: approximate`): an inverted file (IVF) spread over Spark tasks.

For corpora where all pairs is too much. k-means (faiss, spherical, seeded) on a bounded sample of the items gives
`nlist` centroids; every item is stored in the list of its nearest centroid and, as a query, probes its `nprobe`
nearest lists. One Spark task per list compares the queries probing it with the items stored in it using the same
exact block-pair kernels as the grid, so every pair found is decided exactly; pairs whose reference lies in a list
the query did not probe are missed. Counts are therefore lower bounds of the exact counts (an item always probes
its own list first, so it still counts itself); the benchmark measures recall against exact mode.

Bounded at any scale: the k-means sample has an absolute cap (`semantic.kmeans_max_sample`) and reaches the driver
as Arrow, not as Python rows; a list with more than `semantic.max_list_items` queries or stored items is split into a
grid of sub-tasks (queries by hash x stored items by hash), so no task compares more than about max_list_items^2
pairs. Every (query, reference) pair is still compared in exactly one task, so the results do not depend on the cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.compat import to_arrow
from semmem.features.allpairs import EMPTY_BLOCK, Block, PairFn, make_block, result_schema, result_batch

SAMPLE_PER_LIST = 64  # k-means training points per centroid (faiss warns below 39)
SPLIT_SEED = 42  # xxhash64 seed of the sub-task a query or stored item falls in, within a split list


class Items(Protocol):
    """The items as the stage stored them (semmem.tables.Scratch): their rows, and how many (without a Spark job)."""

    @property
    def df(self) -> DataFrame: ...

    @property
    def num_rows(self) -> int: ...


def default_nlist(n_items: int) -> int:
    """About 4 * sqrt(n) lists (the usual IVF rule of thumb), at least 1."""
    return max(1, int(4 * math.sqrt(n_items)))


def kmeans_sample(items: Items, nlist: int, seed: int, max_sample: int) -> np.ndarray:
    """The k-means training vectors [m, d], m <= max_sample: a seeded Spark sample of about SAMPLE_PER_LIST * nlist
    items (the only data collected on the driver), fetched as Arrow in partition order (as collect() would: same
    rows, same order). Near the cap the expected size is held 4 sigma below it (at least half of it), so the rows
    collected stay under the cap too; a rare overshoot is cut by a seeded draw that keeps the order."""
    n = items.num_rows
    below_cap = max(max_sample / 2, max_sample - 4 * math.sqrt(max_sample))
    target = min(1.2 * SAMPLE_PER_LIST * max(1, min(nlist, n)), below_cap)
    fraction = min(1.0, target / max(1, n))
    emb = to_arrow(items.df.sample(fraction=fraction, seed=seed).select("embedding")).column("embedding")
    emb = emb.combine_chunks()
    sample = emb.flatten().to_numpy().astype(np.float32).reshape(len(emb), -1)
    if len(sample) > max_sample:
        sample = sample[np.sort(np.random.default_rng(seed).choice(len(sample), max_sample, replace=False))]
    return sample


def train_centroids(items: Items, nlist: int, seed: int, max_sample: int) -> np.ndarray:
    """Unit-norm k-means centroids [nlist, d] from kmeans_sample (at most max_sample rows, whatever the corpus)."""
    import faiss

    sample = kmeans_sample(items, nlist, seed, max_sample)
    nlist = max(1, min(nlist, len(sample)))
    km = faiss.Kmeans(sample.shape[1], nlist, niter=20, seed=seed, spherical=True, verbose=False)
    km.train(sample)
    return km.centroids.astype(np.float32)


def _with_lists(batches: Iterator[pa.RecordBatch], centroids: np.ndarray, nprobe: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: add `home` (the nearest centroid) and `probes` (the nprobe nearest, nearest first)."""
    k = min(nprobe, len(centroids))
    for batch in batches:
        emb = batch.column("embedding")
        v = emb.flatten().to_numpy().astype(np.float32).reshape(batch.num_rows, -1)
        s = v @ centroids.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < len(centroids) else np.tile(np.arange(k), (len(v), 1))
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        probes = np.take_along_axis(top, order, axis=1).astype(np.int32)
        offsets = pa.array(np.arange(len(v) + 1, dtype=np.int32) * k)
        yield batch.append_column("home", pa.array(probes[:, 0])).append_column(
            "probes", pa.ListArray.from_arrays(offsets, pa.array(probes.reshape(-1))))


def _block_of(pdf: pd.DataFrame, with_prompts: bool) -> Block:
    """One side of a list's cogroup as kernel input."""
    if not len(pdf):
        return EMPTY_BLOCK
    prompts = pdf["prompt_text"].to_numpy(dtype=object) if with_prompts else None
    return make_block(pdf["item_id"].to_numpy(np.int64), np.stack(pdf["embedding"].to_numpy()),
                      pdf["weight"].to_numpy(np.float64), prompts)


def _listed(items: DataFrame, centroids: np.ndarray, nprobe: int) -> DataFrame:
    """`items` with the `home` and `probes` columns of _with_lists."""
    from pyspark.sql.types import ArrayType, IntegerType, StructField, StructType

    out_schema = StructType([*items.schema.fields, StructField("home", IntegerType()),  # not .add(): it mutates
                             StructField("probes", ArrayType(IntegerType()))])
    return items.mapInArrow(lambda b: _with_lists(b, centroids, nprobe), out_schema)


def list_splits(items: Items, centroids: np.ndarray, nprobe: int,
                max_list_items: int) -> list[tuple[int, int, int]]:
    """(list_id, query parts, stored parts) of each list with more than max_list_items queries or stored items: one
    Spark pass over the vectors (nlist rows reach the driver), so a crowded list is found, not guessed. No pass when
    the corpus has at most max_list_items items: an item probes a list at most once, so no list can exceed it."""
    if items.num_rows <= max_list_items:
        return []
    listed = _listed(items.df.select("embedding"), centroids, nprobe)
    sizes = (listed.select(F.explode("probes").alias("list_id"), "home").groupBy("list_id")
             .agg(F.count("*").alias("nq"), F.sum((F.col("home") == F.col("list_id")).cast("long")).alias("nr"))
             .where((F.col("nq") > max_list_items) | (F.col("nr") > max_list_items)).collect())
    return sorted((r["list_id"], -(-r["nq"] // max_list_items), -(-r["nr"] // max_list_items)) for r in sizes)


def _parts(df: DataFrame, splits: DataFrame | None, own: str, other: str) -> DataFrame:
    """`df` (by list_id) with its own part (hash of item_id among the list's `own` parts) and one row per part of the
    other side: each (query, stored item) pair of a list meets in exactly one (q_part, r_part) task. No split list
    (`splits` None): part 0 of 1 for every row, without a join."""
    if splits is None:
        return df.withColumn(own, F.lit(0)).withColumn(other, F.lit(0))
    df = df.join(F.broadcast(splits), "list_id", "left")
    n_own, n_other = F.coalesce(F.col(own), F.lit(1)), F.coalesce(F.col(other), F.lit(1))
    return (df.withColumn(own, F.pmod(F.xxhash64("item_id", F.lit(SPLIT_SEED)), n_own).cast("int"))
            .withColumn(other, F.explode(F.sequence(F.lit(0), n_other - 1))))


def run_ivf(items: Items, centroids: np.ndarray, nprobe: int, pair_fn: PairFn, n_thresholds: int, *,
            with_prompts: bool, max_list_items: int) -> DataFrame:
    """Task results (neighbors.result_schema rows): one cogroup task per list, or per (query part, stored part) of a
    list with more than max_list_items queries or stored items; `pair_fn` runs there on a "rectangle" (the stored
    items are not the list's queries: nothing to mirror). Lazy but for list_splits."""
    columns = ["item_id", "embedding", "weight"] + (["prompt_text"] if with_prompts else [])
    listed = _listed(items.df.select(*columns), centroids, nprobe)
    found = list_splits(items, centroids, nprobe, max_list_items)
    splits = items.df.sparkSession.createDataFrame(found, "list_id INT, q_part INT, r_part INT") if found else None
    keys = ["list_id", "q_part", "r_part"]
    queries = _parts(listed.select(F.explode("probes").alias("list_id"), *columns), splits, "q_part", "r_part")
    stored = _parts(listed.select(F.col("home").alias("list_id"), *columns), splits, "r_part", "q_part")

    def per_list(q: pd.DataFrame, r: pd.DataFrame) -> pd.DataFrame:
        qb, rb = _block_of(q, with_prompts), _block_of(r, with_prompts)
        queries_side, _ = pair_fn(qb, rb, "rectangle")
        return result_batch(qb, rb, *queries_side, n_thresholds).to_pandas()

    fresh = [F.col(c).alias(c) for c in [*keys, *columns]]  # new attribute ids: else an "ambiguous self-join"
    return (queries.select(*fresh).groupBy(*keys).cogroup(stored.select(*fresh).groupBy(*keys))
            .applyInPandas(per_list, result_schema(n_thresholds)))
