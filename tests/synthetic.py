"""Synthetic `combined` rows whose label follows known logistic coefficients per category (tests, benchmarks).

Features have realistic shapes: duplicate counts with a recitation tail, heavy-tailed corpus frequencies whose six
statistics come from 16 draws per row, perplexities >= 1 with sequence = prompt x generation (upstream's perplexity
bug), match counts with the row itself among the semantic matches, ~8% templating. The category follows the rule of
spec §3. The label is Bernoulli(sigmoid(intercept_c + sum_j beta_cj z_j)), z_j being feature j standardized with the
sample's mean and standard deviation, so an LR on z-scored features recovers beta_c (balanced class weights move only
the intercept).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from semmem.taxonomy.vocabulary import categorize

# beta per category on the standardized features; features not listed have 0 (paper, via review, spec §6.4: low
# continuation perplexity predicts memorization everywhere, high prompt perplexity except in reconstruction, duplicates
# and rare tokens matter for recollection)
PLANTED: dict[str, dict[str, float]] = {
    "recitation": {"intercept": 0.0, "generation_perplexity": -1.5, "prompt_perplexity": 0.8},
    "reconstruction": {"intercept": -0.3, "generation_perplexity": -1.2, "prompt_perplexity": -0.8},
    "recollection": {"intercept": -1.0, "generation_perplexity": -1.5, "prompt_perplexity": 0.8,
                     "sequence_duplicates": 1.0, "min_frequency": -1.0},
}


def standardized(values: pd.Series) -> np.ndarray:
    """(v - mean) / std over the rows (population std), as StandardScaler."""
    v = values.to_numpy(dtype=np.float64)
    return (v - v.mean()) / v.std()


def synthetic_combined(n: int, *, seed: int = 0, model: str = "synthetic", revision: str = "main",
                       coefficients: dict[str, dict[str, float]] | None = None,
                       duplicate_threshold: int = 5) -> pd.DataFrame:
    """`n` rows with the columns of the combined table; labels from `coefficients` (default PLANTED)."""
    rng = np.random.default_rng(seed)
    recite = rng.random(n) < 0.3
    dups = np.where(recite, duplicate_threshold + rng.geometric(0.1, n),
                    np.minimum(1 + rng.poisson(1.0, n), duplicate_threshold))
    freqs = np.sort(rng.lognormal(rng.normal(14.0, 1.0, (n, 1)), 2.0, (n, 16)), axis=1)
    gen = 1.0 + rng.lognormal(0.5, 0.6, n)
    prompt = 1.0 + rng.lognormal(1.5, 0.6, n)
    incrementing = rng.random(n) < 0.04
    repeating = ~incrementing & (rng.random(n) < 0.04)
    textual = rng.poisson(0.5, n)
    df = pd.DataFrame({
        "sequence_id": np.arange(n, dtype=np.int64), "model": model, "revision": revision,
        "sequence_duplicates": dups.astype(np.int64),
        "max_frequency": freqs[:, -1].round().astype(np.int64), "avg_frequency": freqs.mean(axis=1),
        "min_frequency": freqs[:, 0].round().astype(np.int64), "median_frequency": np.median(freqs, axis=1),
        "p25_frequency": freqs[:, 4].round().astype(np.int64), "p75_frequency": freqs[:, 12].round().astype(np.int64),
        "generation_perplexity": gen, "prompt_perplexity": prompt, "sequence_perplexity": gen * prompt,
        "textual_matches_0_8": textual.astype(np.int64),
        "semantic_matches_0_8": (1 + textual + rng.poisson(2.0, n)).astype(np.int64),
        "huffman_coding_length": np.clip(rng.normal(4.2, 0.5, n), 0.0, None),
        "is_incrementing": incrementing, "is_repeating": repeating, "is_templating": incrementing | repeating,
        "nl_score": rng.uniform(0.2, 0.8, n),
    })
    df["category"] = categorize(df, duplicate_threshold)
    logit = np.zeros(n)
    for cat, beta in (coefficients or PLANTED).items():
        rows = (df["category"] == cat).to_numpy()
        logit[rows] = beta.get("intercept", 0.0) + sum(
            b * standardized(df[f])[rows] for f, b in beta.items() if f != "intercept")
    memorized = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    df["is_memorized"] = memorized
    df["memorization_score"] = np.where(memorized, 1.0, rng.integers(0, 32, n) / 32.0)
    return df
