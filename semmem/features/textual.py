"""Textual matches (spec §2.5): semantic matches whose prompt is a near copy of the sequence's prompt.

For threshold t, a sequence's count is the number of sequences r with cosine >= t (exact, as for semantic matches)
whose `prompt_text` is at character Levenshtein distance in [min_distance, max_distance] from its own (upstream:
(0, 20)). The sequence itself, and every sequence with an identical prompt, is at distance 0 and never counts.

The count never depends on the neighbour cap of semantic_neighbors: it reruns the exact grid over items of equal
(embedding, prompt text) with their weights, and within a task computes each distinct (query prompt, reference
prompt) distance once, with rapidfuzz's `cpdist` and a score cutoff. A cluster of 2,000 identical boilerplate
sequences is one item: one distance computation, not 4M.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyspark import Accumulator

from semmem.features.allpairs import NO_NEIGHBORS, Block, NumpyGemm, PairResult, band_of, make_backend, \
    match_decisions

COUNTS_PREFIX = "textual_matches_"


def prompt_distances(a: np.ndarray, b: np.ndarray, max_distance: int, workers: int = 1) -> np.ndarray:
    """Levenshtein distance of a[i] and b[i] (str arrays), max_distance + 1 where it exceeds max_distance."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cpdist

    if len(a) == 0:
        return np.empty(0, dtype=np.int64)
    return np.asarray(cpdist(list(a), list(b), scorer=Levenshtein.distance, score_cutoff=max_distance,
                             workers=workers, dtype=np.int32), dtype=np.int64)


def block_pair(q: Block, r: Block, thresholds: np.ndarray, backend: NumpyGemm, *, min_distance: int,
               max_distance: int, ascii_rule: bool = False, workers: int = 1,
               distance_calls: list[int] | None = None) -> np.ndarray:
    """Weighted textual-match counts [nq, T] of the query items against the reference items."""
    nq, nr = len(q.item_id), len(r.item_id)
    counts = np.zeros((nq, len(thresholds)), dtype=np.float64)
    if nq == 0 or nr == 0:
        return counts
    assert q.prompts is not None and r.prompts is not None and q.prompt_codes is not None
    band = band_of(backend)
    askable = np.ones(nq, dtype=bool)
    if ascii_rule:
        askable = np.array([p.isascii() for p in q.prompts], dtype=bool)
    rh = backend.put(r.vectors)
    n_codes = int(r.prompt_codes.max()) + 1
    step = backend.rows_per_chunk(nr)
    for c0 in range(0, nq, step):
        c1 = min(nq, c0 + step)
        chunk = backend.chunk(backend.put(q.vectors[c0:c1]), rh, thresholds[0] - band)
        ii, jj, v = chunk.entries(thresholds[0] - band)
        ok = match_decisions(q, r, c0, ii, jj, v, thresholds, band)
        keep = ok[:, 0] & askable[c0 + ii]
        ii, jj, ok = ii[keep], jj[keep], ok[keep]
        if not len(ii):
            continue
        # One distance per distinct (query prompt, reference prompt) pair of this chunk.
        pair_key = q.prompt_codes[c0 + ii] * n_codes + r.prompt_codes[jj]
        uniq, first, inverse = np.unique(pair_key, return_index=True, return_inverse=True)
        d = prompt_distances(q.prompts[c0 + ii[first]], r.prompts[jj[first]], max_distance, workers)[inverse]
        if distance_calls is not None:
            distance_calls.append(len(uniq))
        near = (d >= min_distance) & (d <= max_distance)
        for k in range(len(thresholds)):
            hit = near & ok[:, k]
            counts[c0:c1, k] += np.bincount(ii[hit], weights=r.weight[jj[hit]], minlength=c1 - c0)
    return counts


def pair_function(thresholds: list[float], kernel: str, device: str, dtype: str, *, min_distance: int,
                  max_distance: int, ascii_rule: bool, workers: int, distances: Accumulator | None = None
                  ) -> Callable[[Block, Block], PairResult]:
    """The per-block-pair work of a textual grid task; `distances` counts the Levenshtein computations."""
    t = np.asarray(sorted(thresholds), dtype=np.float64)

    def run(q: Block, r: Block) -> PairResult:
        calls: list[int] = []
        counts = block_pair(q, r, t, make_backend(kernel, device, dtype), min_distance=min_distance,
                            max_distance=max_distance, ascii_rule=ascii_rule, workers=workers, distance_calls=calls)
        if distances is not None:
            distances.add(sum(calls))
        return counts, NO_NEIGHBORS

    return run
