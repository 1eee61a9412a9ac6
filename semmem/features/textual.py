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

import numpy as np
from pyspark import Accumulator

from semmem.features.allpairs import NO_NEIGHBORS, Block, Cell, CellResult, NumpyGemm, PairFn, band_of, chunks_of, \
    make_backend, match_decisions, self_cosines

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
               max_distance: int, ascii_rule: bool = False, workers: int = 1, distance_calls: list[int] | None = None,
               cell: Cell = "rectangle") -> tuple[np.ndarray, np.ndarray | None]:
    """Weighted textual-match counts [nq, T] of the query items against the reference items, and for a "mirrored"
    or "triangle" cell (allpairs.Cell) those [nr, T] of the reference items against the query items (None for a
    rectangle): each pair's match decisions and prompt distance (both symmetric) serve both of its items."""
    nq, nr = len(q.item_id), len(r.item_id)
    mirrored = cell != "rectangle"
    q_counts = np.zeros((nq, len(thresholds)), dtype=np.float64)
    r_counts = np.zeros((nr, len(thresholds)), dtype=np.float64) if mirrored else None
    if nq == 0 or nr == 0:
        return q_counts, r_counts
    assert q.prompts is not None and r.prompts is not None and q.prompt_codes is not None
    band = band_of(backend)
    q_asks, r_asks = _askable(q, ascii_rule), _askable(r, ascii_rule)
    n_codes = int(r.prompt_codes.max()) + 1

    def add(qi: np.ndarray, rj: np.ndarray, ok: np.ndarray, mirror: bool) -> None:
        """Count the pairs (q row qi, r row rj) with match decisions `ok` [n, T] whose prompts are near, for the
        q item (when it asks) and, with `mirror`, for the r item (when it asks)."""
        q_ask = ok[:, 0] & q_asks[qi]
        r_ask = ok[:, 0] & r_asks[rj] if mirror else np.zeros(len(qi), dtype=bool)
        need = q_ask | r_ask
        qi, rj, ok, q_ask, r_ask = qi[need], rj[need], ok[need], q_ask[need], r_ask[need]
        if not len(qi):
            return
        # One distance per distinct (query prompt, reference prompt) pair.
        pair_key = q.prompt_codes[qi] * n_codes + r.prompt_codes[rj]
        uniq, first, inverse = np.unique(pair_key, return_index=True, return_inverse=True)
        d = prompt_distances(q.prompts[qi[first]], r.prompts[rj[first]], max_distance, workers)[inverse]
        if distance_calls is not None:
            distance_calls.append(len(uniq))
        near = (d >= min_distance) & (d <= max_distance)
        for k in range(len(thresholds)):
            hit = near & ok[:, k]
            q_counts[:, k] += np.bincount(qi[hit & q_ask], weights=r.weight[rj[hit & q_ask]], minlength=nq)
            if r_counts is not None and mirror:
                r_counts[:, k] += np.bincount(rj[hit & r_ask], weights=q.weight[qi[hit & r_ask]], minlength=nr)

    for c0, r0, chunk in chunks_of(q, r, backend, thresholds[0] - band, cell):
        ii, jj, v = chunk.entries(thresholds[0] - band)
        qi, rj = c0 + ii, r0 + jj
        add(qi, rj, match_decisions(q, r, qi, rj, v, thresholds, band), mirror=mirrored)
    if cell == "triangle":  # each item with itself, once (the chunks keep i < j only); its distance is 0
        own = np.arange(nq)
        add(own, own, self_cosines(q)[:, None] >= thresholds[None, :], mirror=False)
    return q_counts, r_counts


def _askable(block: Block, ascii_rule: bool) -> np.ndarray:
    """bool [n]: may the item count textual matches? Upstream's ASCII rule: only when its prompt is ASCII."""
    if not ascii_rule:
        return np.ones(len(block.item_id), dtype=bool)
    assert block.prompts is not None
    return np.array([p.isascii() for p in block.prompts], dtype=bool)


def pair_function(thresholds: list[float], kernel: str, device: str, dtype: str, *, min_distance: int,
                  max_distance: int, ascii_rule: bool, workers: int, distances: Accumulator | None = None) -> PairFn:
    """The per-cell work of a textual grid task or IVF list; `distances` counts the Levenshtein computations."""
    t = np.asarray(sorted(thresholds), dtype=np.float64)

    def run(q: Block, r: Block, cell: Cell) -> CellResult:
        calls: list[int] = []
        q_counts, r_counts = block_pair(q, r, t, make_backend(kernel, device, dtype), min_distance=min_distance,
                                        max_distance=max_distance, ascii_rule=ascii_rule, workers=workers,
                                        distance_calls=calls, cell=cell)
        if distances is not None:
            distances.add(sum(calls))
        return (q_counts, NO_NEIGHBORS), (None if r_counts is None else (r_counts, NO_NEIGHBORS))

    return run
