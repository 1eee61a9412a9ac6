"""Benchmark of the near-match stages (embed, semantic, textual) against baselines measured in the same run.

    python bench/bench_near.py            # what `make bench` runs
    python bench/bench_near.py --quick    # a smoke run
    python bench/bench_near.py --only embed,semantic --device cuda --cores 8   # the GPU figures (make gpu-check)

- embed: texts/s of the Spark stage (`local[cores]`, distinct texts through predict_batch_udf, Delta write included)
  vs plain `SentenceTransformer.encode` on the same texts in one process with `cores` torch threads (model load
  included in both; encode alone also shown). Goal on CPU: >= 0.8x. On a Spark 3.5 build (`make bench SPARK=3.5`),
  the stage again with embed.engine=spark-nlp in the same session: texts/s of both engines, the ratio, and the
  smallest cosine between their vectors (the measurement behind the default engine).
- semantic: item pairs/s of the stage (exact grid, float32 BLAS, neighbours kept) on synthetic unit vectors with
  clusters vs a numpy all-pairs baseline (one process, chunked GEMM + threshold counts: what upstream did with
  torch), plus the kernel alone, faiss `IndexFlatIP.range_search` and torch's CPU GEMM for the kernel choice;
  extrapolated to 5M x 5M; the same with neighbours kept; approximate mode's time and recall; and the kernel on one
  block as the grid's diagonal cell (upper triangle, mirrored) vs the full block (what every cell computed before).
- textual: candidate pairs (cosine >= 0.8) per second of the stage, and of its kernel alone, vs a plain Python loop
  computing the Levenshtein distance of every candidate pair's prompts (rapidfuzz's `Levenshtein.distance`, one call
  per pair), on synthetic vectors and prompts: clusters of near-duplicate prompts (real distance work) and a
  2,000-copy boilerplate cluster; and how many distances each computes.
With --device, plain encode and the embed stage run there (fp16 on CUDA, as the stage), the semantic stage uses the
torch kernel there, and the torch kernel alone is timed beside numpy's. Figures also go to bench-out/bench_near.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.compat import SCALA  # noqa: E402
from semmem.config import load_config  # noqa: E402
from semmem.features.embeddings import normalize_rows  # noqa: E402
from semmem.features.allpairs import NumpyGemm  # noqa: E402
from semmem.features.semantic import block_pair  # noqa: E402
from semmem.sample import LICENCE, code, natural_language  # noqa: E402
from semmem.spark import build_session  # noqa: E402
from semmem.stages import StageContext, run_stages  # noqa: E402
from semmem.scratch_reads import read_block  # noqa: E402
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


PLAIN_ENCODE = """
import json, sys, time
t0 = time.perf_counter()
import torch
from sentence_transformers import SentenceTransformer
from semmem.model_sources import DEFAULT_EMBEDDING_MODEL as DEFAULT_MODEL, resolve_embedding_model
torch.set_num_threads(int(sys.argv[1]))
texts = json.load(open(sys.argv[2]))
model = SentenceTransformer(resolve_embedding_model(DEFAULT_MODEL).path, device=sys.argv[3])
if sys.argv[3] == "cuda":
    model.half()
t1 = time.perf_counter()
model.encode(texts, batch_size=128, convert_to_numpy=True)
t2 = time.perf_counter()
print(json.dumps({"total": t2 - t0, "encode": t2 - t1}))
"""


def bench_embed(spark, cfg, wh: Warehouse, texts: list[str], distinct: list[str], cores: int, tmp: Path,
                device: str) -> dict:
    """Plain encode runs in a fresh process (its imports and model load counted), as the stage's workers do."""
    import subprocess

    rows = [(i, [0] * 64, t, t[:len(t) // 2], None) for i, t in enumerate(texts)]
    wh.write(spark.createDataFrame(rows, "sequence_id long, tokens array<int>, text string, prompt_text string, "
                                         "pile_set_name string"), "sequences", mode="overwrite")
    (tmp / "texts.json").write_text(json.dumps(distinct))
    out = subprocess.run([sys.executable, "-c", PLAIN_ENCODE, str(cores), str(tmp / "texts.json"), device], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    _, t_stage = timed(lambda: run_stages(StageContext(spark, cfg, wh), ["embed"]))
    n = len(distinct)
    print(f"embed: {n} distinct texts ({len(texts)} sequences)")
    print(f"  plain SentenceTransformer.encode, one process, {cores} threads: {plain['total']:6.1f} s with imports and "
          f"load = {n / plain['total']:6.1f} texts/s (encode alone {n / plain['encode']:6.1f} texts/s)")
    print(f"  semmem embed stage, local[{cores}] (Delta write included): {t_stage:6.1f} s = {n / t_stage:6.1f} texts/s"
          f"  -> {plain['total'] / t_stage:.2f}x plain, {plain['encode'] / t_stage:.2f}x encode alone (goal >= 0.8x)")
    res = {"plain_device": device, "distinct_texts": n, "stage_texts_per_s": n / t_stage,
           "plain_texts_per_s": n / plain["total"], "encode_alone_texts_per_s": n / plain["encode"],
           "stage_vs_plain": plain["total"] / t_stage, "stage_vs_encode_alone": plain["encode"] / t_stage}
    return res | bench_sparknlp(spark, cfg, wh, n, t_stage, cores)


def bench_sparknlp(spark, cfg, wh: Warehouse, n: int, t_stage: float, cores: int) -> dict:
    """The embed stage again with embed.engine=spark-nlp on the same texts and session (Spark 3.5 builds only): its
    texts/s against the sentence-transformers stage's just measured, and the two tables' agreement (min cosine).
    The one-time ONNX export is timed apart (it is cached between runs)."""
    from dataclasses import replace

    from semmem.features.embeddings_sparknlp import exported
    from semmem.model_sources import resolve_embedding_model

    if SCALA != "2.12":
        print("  spark-nlp engine: not measured (it needs the Spark 3.5 build: `make bench SPARK=3.5`)")
        return {}
    reference = {r.sequence_id: np.asarray(r.embedding, np.float64) for r in wh.read("embeddings").collect()}
    model = resolve_embedding_model(cfg.embed.model, cfg.embed.revision)
    with tempfile.TemporaryDirectory() as tmp:
        _, t_export = timed(lambda: exported(model.path, model.version, Path(tmp)))
    nlp = replace(cfg, embed=replace(cfg.embed, engine="spark-nlp"))
    _, t_nlp = timed(lambda: run_stages(StageContext(spark, nlp, wh), ["embed"]))
    cosines = [float(np.dot(v := np.asarray(r.embedding, np.float64), reference[r.sequence_id]) / np.linalg.norm(v)
                     / np.linalg.norm(reference[r.sequence_id])) for r in wh.read("embeddings").collect()]
    print(f"  semmem embed stage, engine spark-nlp (E5Embeddings, ONNX on the JVM, one text per call), local[{cores}]:"
          f" {t_nlp:6.1f} s = {n / t_nlp:6.1f} texts/s -> {t_stage / t_nlp:.2f}x the sentence-transformers stage;"
          f" ONNX export once {t_export:.1f} s; smallest cosine to sentence-transformers' vector: "
          f"1 - {1 - min(cosines):.1e}")
    return {"sparknlp_texts_per_s": n / t_nlp, "sparknlp_vs_sentence_transformers": t_stage / t_nlp,
            "sparknlp_export_s": t_export, "sparknlp_min_cosine": min(cosines)}


def bench_semantic(spark, root: Path, n: int, cores: int, device: str | None) -> dict:
    import faiss
    import torch

    v = clustered_vectors(n)
    wh = Warehouse(spark, root / "sem")
    df = spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(v)], "sequence_id long, embedding array<float>")
    wh.write(df.repartition(cores), "embeddings", mode="overwrite")
    block = max(1, n // 2)  # a 2 x 2 grid: both cores busy

    on_device = ["semantic.kernel=torch", f"semantic.device={device}"] if device else []

    def stage(*overrides: str) -> float:
        cfg = load_config(None, [f"warehouse={root / 'sem'}", f"spark.master=local[{cores}]",
                                 f"semantic.block_rows={block}", *on_device, *overrides])
        return timed(lambda: run_stages(StageContext(spark, cfg, wh), ["semantic"]))[1]

    t_counts = stage("semantic.max_neighbors=0")
    exact = wh.read("semantic_matches").toPandas().sort_values("sequence_id")
    t_stage = stage()
    pairs = n * n

    def numpy_all_pairs() -> np.ndarray:
        counts = np.zeros((n, 2), dtype=np.int64)
        for s in range(0, n, 1024):
            sim = v[s:s + 1024] @ v.T
            counts[s:s + 1024, 0] = (sim >= 0.8).sum(1)
            counts[s:s + 1024, 1] = (sim >= 0.9).sum(1)
        return counts

    ref, t_numpy = timed(numpy_all_pairs)
    assert (exact.semantic_matches_0_8.to_numpy() == ref[:, 0]).all(), "stage counts differ from the baseline"
    items = _as_block(v)
    _, t_kernel = timed(lambda: block_pair(items, items, np.array([0.8, 0.9]), 0, NumpyGemm()))
    _, t_triangle = timed(lambda: block_pair(items, items, np.array([0.8, 0.9]), 0, NumpyGemm(), "triangle"))
    _, t_kernel_nb = timed(lambda: block_pair(items, items, np.array([0.8, 0.9]), 101, NumpyGemm()))
    _, t_triangle_nb = timed(lambda: block_pair(items, items, np.array([0.8, 0.9]), 101, NumpyGemm(), "triangle"))
    faiss.omp_set_num_threads(cores)
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    _, t_faiss = timed(lambda: index.range_search(v, 0.8))
    torch.set_num_threads(cores)
    tv = torch.from_numpy(v)
    _, t_torch = timed(lambda: [((tv[s:s + 1024] @ tv.T) >= 0.8).sum(1) for s in range(0, n, 1024)])
    if device:
        from semmem.features.allpairs import TorchGemm

        gemm = TorchGemm(torch.device(device), "float16" if device == "cuda" else "float32")
        block_pair(items, items, np.array([0.8, 0.9]), 0, gemm)  # warm-up: CUDA context, kernels
        _, t_torch_kernel = timed(lambda: block_pair(items, items, np.array([0.8, 0.9]), 0, gemm))
    t_approx = stage("semantic.mode=approximate", "semantic.max_neighbors=0")
    approx = wh.read("semantic_matches").toPandas().sort_values("sequence_id")
    found = (approx.semantic_matches_0_8.to_numpy() - 1).sum() / max(1, (ref[:, 0] - 1).sum())
    print(f"semantic: {n} x {n} = {pairs:.2e} pairs, thresholds 0.8/0.9, {cores} cores")
    for name, t in (("semmem semantic stage, counts only", t_counts),
                    ("semmem semantic stage + neighbours (cap 100)", t_stage),
                    ("kernel alone, one process", t_kernel), ("kernel, upper triangle (mirrored)", t_triangle),
                    ("baseline: numpy all-pairs, one process", t_numpy),
                    ("faiss range_search (0.8 only)", t_faiss), ("torch CPU GEMM + count (0.8 only)", t_torch)):
        print(f"  {name:<46} {t:7.2f} s = {pairs / t / cores:.3e} pairs/s/core")
    if device:
        print(f"  {'torch kernel alone, ' + device + ' ' + gemm.dtype:<46} {t_torch_kernel:7.2f} s = "
              f"{pairs / t_torch_kernel:.3e} pairs/s ({t_kernel / t_torch_kernel:.2f}x numpy's kernel)")
    print(f"  stage (counts) vs numpy baseline: {t_numpy / t_counts:.2f}x; kernel vs baseline: "
          f"{t_numpy / t_kernel:.2f}x; 5M x 5M at the stage rate: "
          f"{FIVE_M ** 2 / (pairs / t_counts / cores) / 3600:,.0f} core-hours "
          f"({FIVE_M ** 2 / (pairs / t_counts / cores) / 3600 / 100:,.1f} h on 100 cores)")
    print(f"  kernel on one block, full block / upper triangle (the grid's diagonal cell): counts only "
          f"{t_kernel / t_triangle:.2f}x, with 101 neighbours kept {t_kernel_nb / t_triangle_nb:.2f}x (ideal ~2x)")
    print(f"  approximate mode (nlist 4*sqrt(n), nprobe 32): {t_approx:.2f} s, recall of the pairs at 0.8 "
          f"(self excluded): {found:.4f}")
    res = {"vectors": n, "cores": cores, "stage_kernel": f"torch {device}" if device else "auto",
           "stage_counts_pairs_per_s": pairs / t_counts, "stage_neighbors_pairs_per_s": pairs / t_stage,
           "numpy_kernel_pairs_per_s": pairs / t_kernel, "numpy_baseline_pairs_per_s": pairs / t_numpy,
           "approximate_s": t_approx, "approximate_recall": float(found)}
    if device:
        res.update(torch_kernel=f"{device} {gemm.dtype}", torch_kernel_pairs_per_s=pairs / t_torch_kernel)
    return res


def _as_block(v: np.ndarray):
    from semmem.features.allpairs import Block

    return Block(np.arange(len(v), dtype=np.int64), v, np.ones(len(v)), None, None)


def synthetic_prompts(n_clusters: int, size: int, n_random: int, copies: int, seed: int = 7
                      ) -> tuple[np.ndarray, list[str]]:
    """Unit vectors and prompts: clusters of `size` near-duplicates (vectors close to a centre, prompts with a few
    random edits: real distance work), `copies` identical boilerplate sequences, and random singletons."""
    rng = np.random.default_rng(seed)
    r = random.Random(seed)
    dim = 384
    vectors, prompts = [], []
    for _ in range(n_clusters):
        centre = rng.standard_normal(dim)
        base = natural_language(r)[:120]
        for _ in range(size):
            vectors.append(centre + rng.standard_normal(dim) * 0.25)
            chars = list(base)
            for _ in range(r.randint(0, 12)):
                chars[r.randrange(len(chars))] = r.choice("abcdefgh ")
            prompts.append("".join(chars))
    lic = rng.standard_normal(dim)
    vectors += [lic] * copies
    prompts += [LICENCE[:120]] * copies
    vectors += list(rng.standard_normal((n_random, dim)))
    prompts += [natural_language(r)[:120] for _ in range(n_random)]
    return normalize_rows(np.asarray(vectors)), prompts


def bench_textual(spark, root: Path, n_clusters: int, cores: int) -> dict:
    from rapidfuzz.distance import Levenshtein

    from semmem.features.textual import block_pair as textual_pair

    v, prompts = synthetic_prompts(n_clusters, 200, 4000, 2000)
    n = len(v)
    wh = Warehouse(spark, root / "txt")
    wh.write(spark.createDataFrame([(i, x.tolist()) for i, x in enumerate(v)],
                                   "sequence_id long, embedding array<float>").repartition(cores), "embeddings")
    wh.write(spark.createDataFrame([(i, [0] * 64, p, p, None) for i, p in enumerate(prompts)],
                                   "sequence_id long, tokens array<int>, text string, prompt_text string, "
                                   "pile_set_name string").repartition(cores), "sequences")
    cfg = load_config(None, [f"warehouse={root / 'txt'}", f"spark.master=local[{cores}]",
                             f"semantic.block_rows={n // 2}", f"textual.workers={cores}"])
    _, t_stage = timed(lambda: run_stages(StageContext(spark, cfg, wh), ["textual"]))
    cos = v.astype(np.float64) @ v.astype(np.float64).T
    qi, rj = np.nonzero(cos >= 0.8)

    def loop() -> int:
        hits = 0
        for a, b in zip(qi.tolist(), rj.tolist()):
            hits += 1 <= Levenshtein.distance(prompts[a], prompts[b]) <= 19
        return hits

    n_match, t_loop = timed(loop)
    got = wh.read("textual_matches").toPandas().textual_matches_0_8.sum()
    assert got == n_match, (got, n_match)
    items = read_items(v, prompts)
    calls: list[int] = []
    _, t_kernel = timed(lambda: textual_pair(items, items, np.array([0.8, 0.9]), NumpyGemm(), min_distance=1,
                                             max_distance=19, workers=cores, distance_calls=calls))
    print(f"textual: {n} sequences ({n_clusters} clusters of 200 near-duplicates, 2,000 identical copies), "
          f"{len(qi):,} candidate pairs with cosine >= 0.8, {n_match:,} textual matches, {cores} cores")
    print(f"  baseline: Python loop over candidate pairs  {t_loop:7.2f} s = {len(qi) / t_loop:12,.0f} pairs/s "
          f"({len(qi):,} distance computations)")
    print(f"  semmem kernel alone, one process            {t_kernel:7.2f} s = {len(qi) / t_kernel:12,.0f} pairs/s "
          f"({sum(calls):,} distance computations) -> {t_loop / t_kernel:.1f}x")
    print(f"  semmem textual stage (whole stage)          {t_stage:7.2f} s = {len(qi) / t_stage:12,.0f} pairs/s "
          f"-> {t_loop / t_stage:.1f}x")
    return {"candidate_pairs": int(len(qi)), "stage_pairs_per_s": len(qi) / t_stage,
            "kernel_pairs_per_s": len(qi) / t_kernel, "loop_pairs_per_s": len(qi) / t_loop}


def read_items(v: np.ndarray, prompts: list[str]):
    """The stage's items of (embedding, prompt): identical copies merged, with their weight."""
    from semmem.features.allpairs import Block

    keys: dict[tuple[bytes, str], int] = {}
    for i, (x, p) in enumerate(zip(v, prompts)):
        keys.setdefault((x.tobytes(), p), i)
    first = np.array(sorted(keys.values()))
    weight = np.bincount([keys[(x.tobytes(), p)] for x, p in zip(v, prompts)], minlength=len(v))[first]
    p = np.asarray([prompts[i] for i in first], dtype=object)
    return Block(first.astype(np.int64), v[first], weight.astype(np.float64), p,
                 np.unique(p, return_inverse=True)[1].astype(np.int64))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--only", default="embed,textual,semantic", help="the benches to run, comma-separated")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="plain encode, the embed stage and the semantic torch kernel there (default: plain encode "
                        "on CPU, the stages on their configured device)")
    args = p.parse_args()
    only = set(args.only.split(","))
    if only - {"embed", "textual", "semantic"}:
        p.error(f"--only: unknown bench(es) {sorted(only - {'embed', 'textual', 'semantic'})}")
    n_texts, n_vectors, n_clusters = (300, 6000, 5) if args.quick else (3000, 40000, 60)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overrides = [f"warehouse={root / 'wh'}", f"spark.master=local[{args.cores}]",
                     "spark.conf.spark.ui.enabled=false", f"spark.conf.spark.sql.shuffle.partitions={args.cores * 2}",
                     "spark.conf.spark.driver.memory=6g", *([f"embed.device={args.device}"] if args.device else [])]
        cfg = load_config(None, overrides)
        # on a Spark 3.5 build, a session with spark-nlp's jars: the embed bench runs both engines in it
        spark = build_session(load_config(None, [*overrides, "embed.engine=spark-nlp"]) if SCALA == "2.12" and
                              "embed" in only else cfg)
        wh = Warehouse(spark, root / "wh")
        res: dict[str, dict] = {}
        if "embed" in only:
            texts, distinct = texts_for_bench(n_texts)
            res["embed"] = bench_embed(spark, cfg, wh, texts, distinct, args.cores, root, args.device or "cpu")
        if "textual" in only:
            res["textual"] = bench_textual(spark, root, n_clusters, args.cores)
        if "semantic" in only:
            res["semantic"] = bench_semantic(spark, root, n_vectors, args.cores, args.device)
        read_block.cache_clear()
        spark.stop()
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / "bench_near.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
