"""Approximate near-match search (`semantic.mode: approximate`): an inverted file (IVF) spread over Spark tasks.

For corpora where all pairs is too much. k-means (faiss, spherical, seeded) on a bounded sample of the items gives
`nlist` centroids; every item is stored in the list of its nearest centroid and, as a query, probes its `nprobe`
nearest lists. One Spark task per list compares the queries probing it with the items stored in it using the same
exact block-pair kernels as the grid, so every pair found is decided exactly; pairs whose reference lies in a list
the query did not probe are missed. Counts are therefore lower bounds of the exact counts (an item always probes
its own list first, so it still counts itself); the benchmark measures recall against exact mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.features.allpairs import Block, PairResult, result_schema, result_batch
from semmem.tables import Scratch

SAMPLE_PER_LIST = 64  # k-means training points per centroid (faiss warns below 39)


def default_nlist(n_items: int) -> int:
    """About 4 * sqrt(n) lists (the usual IVF rule of thumb), at least 1."""
    return max(1, int(4 * math.sqrt(n_items)))


def train_centroids(scratch: Scratch, nlist: int, seed: int) -> np.ndarray:
    """Unit-norm k-means centroids [nlist, d] from a seeded sample of about SAMPLE_PER_LIST * nlist items (the only
    data collected on the driver: bounded by nlist, not by the corpus)."""
    import faiss

    n = sum(f.num_rows or 0 for f in scratch.files)
    nlist = max(1, min(nlist, n))
    fraction = min(1.0, 1.2 * SAMPLE_PER_LIST * nlist / max(1, n))
    rows = scratch.df.sample(fraction=fraction, seed=seed).select("embedding").collect()
    sample = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
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
    vectors = np.stack(pdf["embedding"].to_numpy()).astype(np.float32) if len(pdf) else np.empty((0, 0), np.float32)
    prompts = codes = None
    if with_prompts:
        prompts = pdf["prompt_text"].to_numpy(dtype=object)
        codes = np.unique(prompts, return_inverse=True)[1].astype(np.int64) if len(pdf) else np.empty(0, np.int64)
    return Block(pdf["item_id"].to_numpy(np.int64), vectors, pdf["weight"].to_numpy(np.float64), prompts, codes)


def run_ivf(scratch: Scratch, centroids: np.ndarray, nprobe: int, pair_fn: Callable[[Block, Block], PairResult],
            n_thresholds: int, *, with_prompts: bool) -> DataFrame:
    """Task results (neighbors.result_schema rows), lazily: one cogroup task per list; `pair_fn` runs there."""
    from pyspark.sql.types import ArrayType, IntegerType, StructField, StructType

    columns = ["item_id", "embedding", "weight"] + (["prompt_text"] if with_prompts else [])
    items = scratch.df.select(*columns)
    out_schema = StructType([*items.schema.fields, StructField("home", IntegerType()),  # not .add(): it mutates
                             StructField("probes", ArrayType(IntegerType()))])
    listed = items.mapInArrow(lambda b: _with_lists(b, centroids, nprobe), out_schema)
    queries = listed.select(F.explode("probes").alias("list_id"), *columns)
    stored = listed.select(F.col("home").alias("list_id"), *columns)

    def per_list(q: pd.DataFrame, r: pd.DataFrame) -> pd.DataFrame:
        qb, rb = _block_of(q, with_prompts), _block_of(r, with_prompts)
        return result_batch(qb, rb, *pair_fn(qb, rb), n_thresholds).to_pandas()

    return (queries.groupBy("list_id").cogroup(stored.groupBy("list_id"))
            .applyInPandas(per_list, result_schema(n_thresholds)))
