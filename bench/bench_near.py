"""Benchmark of the near-match stages (embed, semantic, textual) against baselines measured in the same run.

    python bench/bench_near.py            # what `make bench` runs
    python bench/bench_near.py --quick    # a smoke run

- embed: texts/s of the Spark stage (`local[cores]`, distinct texts through predict_batch_udf, Delta write included)
  vs plain `SentenceTransformer.encode` on the same texts in one process with `cores` torch threads (model load
  included in both; encode alone also shown). Goal on CPU: >= 0.8x.
- semantic: item pairs/s of the stage (exact grid, float32 BLAS, neighbours kept) on synthetic unit vectors with
  clusters vs a numpy all-pairs baseline (one process, chunked GEMM + threshold counts: what upstream did with
  torch), plus the kernel alone, faiss `IndexFlatIP.range_search` and torch's CPU GEMM for the kernel choice;
  extrapolated to 5M x 5M.
- textual: candidate pairs (cosine >= 0.8) per second of the stage vs a plain Python loop computing the
  Levenshtein distance of every candidate pair's prompts (rapidfuzz's `Levenshtein.distance`, one call per pair),
  on real embeddings of generated texts with planted near-duplicates and a 2,000-copy boilerplate cluster; and how
  many distances each computes.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.config import load_config  # noqa: E402
from semmem.features.embeddings import DEFAULT_MODEL, normalize_rows, resolve_embedding_model  # noqa: E402
from semmem.features.neighbors import NumpyGemm, read_block  # noqa: E402
from semmem.features.semantic import block_pair  # noqa: E402
from semmem.sample import LICENCE, code, natural_language  # noqa: E402
from semmem.spark import build_session  # noqa: E402
from semmem.stages import StageContext, run_stages  # noqa: E402
from semmem.tables import Warehouse  # noqa: E402

FIVE_M = 5_000_000


def texts_for_bench(n_distinct: int, seed: int = 3) -> tuple[list[str], list[str]]:
    """(all texts, distinct texts): prose and code of about 64 tokens, a near-duplicate (a few edits) of every
    fourth one, and 2,000 copies of a licence."""
    r = random.Random(seed)
    base = [(natural_language(r) if i % 3 else code(r))[:300] for i in range(n_distinct * 4 // 5)]
    near = []
    for t in base[::4]:
        chars = list(t)
        for _ in range(r.randint(1, 8)):
            chars[r.randrange(0, min(len(chars), 120))] = r.choice("abcxyz ")
        near.append("".join(chars))
    distinct = list(dict.fromkeys(base + near + [LICENCE]))
    return distinct + [LICENCE] * 1999, distinct


def clustered_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Unit vectors: half random, half in 200 tight clusters (so counts at 0.8/0.9 are not all 1)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim))
    centers = rng.standard_normal((200, dim))
    half = n // 2
    v[:half] = centers[rng.integers(0, 200, half)] * 1.2 + rng.standard_normal((half, dim)) * 0.5
    return normalize_rows(v)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_embed(spark, cfg, wh: Warehouse, texts: list[str], distinct: list[str], cores: int) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    rows = [(i, [0] * 64, t, t[:len(t) // 2], None) for i, t in enumerate(texts)]
    wh.write(spark.createDataFrame(rows, "sequence_id long, tokens array<int>, text string, prompt_text string, "
                                         "pile_set_name string"), "sequences", mode="overwrite")
    torch.set_num_threads(cores)

    def plain() -> np.ndarray:
        model = SentenceTransformer(resolve_embedding_model(DEFAULT_MODEL).path, device="cpu")
        t0 = time.perf_counter()
        out = model.encode(distinct, batch_size=128, convert_to_numpy=True)
        plain.encode_s = time.perf_counter() - t0
        return out

    _, t_plain = timed(plain)
    _, t_stage = timed(lambda: run_stages(StageContext(spark, cfg, wh), ["embed"]))
    n = len(distinct)
    print(f"embed: {n} distinct texts ({len(texts)} sequences)")
    print(f"  plain SentenceTransformer.encode, {cores} threads: {t_plain:6.1f} s incl. load = "
          f"{n / t_plain:6.1f} texts/s  (encode alone {n / plain.encode_s:6.1f} texts/s)")
    print(f"  semmem embed stage, local[{cores}]:            {t_stage:6.1f} s = {n / t_stage:6.1f} texts/s"
          f"  -> {t_plain / t_stage:.2f}x plain (goal >= 0.8x)")


def bench_semantic(spark, cfg, root: Path, n: int, cores: int) -> None:
    import faiss
    import torch

    v = clustered_vectors(n)
    wh = Warehouse(spark, root / "sem")
    df = spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(v)], "sequence_id long, embedding array<float>")
    wh.write(df.repartition(cores), "embeddings", mode="overwrite")
    block = max(1, n // 2)  # a 2 x 2 grid: both cores busy
    cfg_s = load_config(None, [f"warehouse={root / 'sem'}", f"spark.master=local[{cores}]",
                               f"semantic.block_rows={block}"])
    _, t_stage = timed(lambda: run_stages(StageContext(spark, cfg_s, wh), ["semantic"]))
    pairs = n * n

    def numpy_all_pairs() -> np.ndarray:
        counts = np.zeros((n, 2), dtype=np.int64)
        for s in range(0, n, 1024):
            sim = v[s:s + 1024] @ v.T
            counts[s:s + 1024, 0] = (sim >= 0.8).sum(1)
            counts[s:s + 1024, 1] = (sim >= 0.9).sum(1)
        return counts

    ref, t_numpy = timed(numpy_all_pairs)
    got = wh.read("semantic_matches").toPandas().sort_values("sequence_id")
    assert (got.semantic_matches_0_8.to_numpy() == ref[:, 0]).all(), "stage counts differ from the baseline"
    items = _as_block(v)
    _, t_kernel = timed(lambda: block_pair(items, items, np.array([0.8, 0.9]), 0, NumpyGemm()))
    faiss.omp_set_num_threads(cores)
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    _, t_faiss = timed(lambda: index.range_search(v, 0.8))
    torch.set_num_threads(cores)
    tv = torch.from_numpy(v)
    _, t_torch = timed(lambda: [((tv[s:s + 1024] @ tv.T) >= 0.8).sum(1) for s in range(0, n, 1024)])
    print(f"semantic: {n} x {n} = {pairs:.2e} pairs, thresholds 0.8/0.9, {cores} cores")
    for name, t in (("semmem semantic stage (grid, neighbours)", t_stage), ("kernel alone, one process", t_kernel),
                    ("baseline: numpy all-pairs, one process", t_numpy), ("faiss range_search (0.8 only)", t_faiss),
                    ("torch CPU GEMM + count (0.8 only)", t_torch)):
        print(f"  {name:<42} {t:7.2f} s = {pairs / t / cores:.3e} pairs/s/core")
    print(f"  stage vs numpy baseline: {t_numpy / t_stage:.2f}x; 5M x 5M at the stage rate: "
          f"{FIVE_M ** 2 / (pairs / t_stage / cores) / 3600:,.0f} core-hours")


def _as_block(v: np.ndarray):
    from semmem.features.neighbors import Block

    return Block(np.arange(len(v), dtype=np.int64), v, np.ones(len(v)), None, None)


def bench_textual(spark, cfg, wh: Warehouse) -> None:
    from rapidfuzz.distance import Levenshtein

    logging.getLogger("semmem").setLevel(logging.INFO)
    captured: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage())

    handler = Grab()
    logging.getLogger("semmem").addHandler(handler)
    _, t_stage = timed(lambda: run_stages(StageContext(spark, cfg, wh), ["textual"]))
    logging.getLogger("semmem").removeHandler(handler)
    calls = next(int(m.split(": ")[1].split()[0]) for m in captured if "Levenshtein computations" in m)
    emb = wh.read("embeddings").toPandas().sort_values("sequence_id")
    seqs = wh.read("sequences").toPandas().set_index("sequence_id").loc[emb.sequence_id]
    v = np.stack(emb.embedding.to_numpy()).astype(np.float64)
    prompts = seqs.prompt_text.tolist()
    cos = v @ v.T
    qi, rj = np.nonzero(cos >= 0.8)

    def loop() -> int:
        n = 0
        for a, b in zip(qi.tolist(), rj.tolist()):
            n += 1 <= Levenshtein.distance(prompts[a], prompts[b]) <= 19
        return n

    n_match, t_loop = timed(loop)
    got = wh.read("textual_matches").toPandas().textual_matches_0_8.sum()
    assert got == n_match, (got, n_match)
    print(f"textual: {len(v)} sequences, {len(qi):,} candidate pairs with cosine >= 0.8, {n_match:,} textual matches")
    print(f"  baseline: Python loop over candidate pairs  {t_loop:7.2f} s = {len(qi) / t_loop:,.0f} pairs/s "
          f"({len(qi):,} distance computations)")
    print(f"  semmem textual stage (whole stage)          {t_stage:7.2f} s = {len(qi) / t_stage:,.0f} pairs/s "
          f"({calls:,} distance computations) -> {t_loop / t_stage:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    n_texts, n_vectors = (300, 6000) if args.quick else (1500, 40000)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = load_config(None, [f"warehouse={root / 'wh'}", f"spark.master=local[{args.cores}]",
                                 "spark.conf.spark.ui.enabled=false", f"spark.conf.spark.sql.shuffle.partitions="
                                 f"{args.cores * 2}", "spark.conf.spark.driver.memory=6g"])
        spark = build_session(cfg)
        wh = Warehouse(spark, root / "wh")
        texts, distinct = texts_for_bench(n_texts)
        bench_embed(spark, cfg, wh, texts, distinct, args.cores)
        bench_textual(spark, cfg, wh)
        bench_semantic(spark, cfg, root, n_vectors, args.cores)
        read_block.cache_clear()
        spark.stop()


if __name__ == "__main__":
    main()
