"""Binary-classification metrics over weighted rows, many resamples at once (spec §4.2).

Every resampling scheme is a matrix of row weights (rounds x rows), so one vectorized code path gives
- the point estimate (one round of weights 1),
- the seeded bootstrap (`bootstrap_weights`: multinomial counts, i.e. rows drawn with replacement), and
- upstream's "bootstrap" (`kfold_weights`: the 99% train indices of KFold(100, shuffle) as 0/1 masks),
and paired comparisons between predictors, since all of them see the same resamples.

Definitions (label y, score p = P(memorized), prediction p > 0.5 as sklearn's LogisticRegression.predict):
- roc_auc: area under the ROC curve; tied scores form one step (trapezoid), as sklearn's roc_auc_score;
- pr_auc: average precision, sum_k (R_k - R_{k-1}) P_k over the distinct scores (sklearn's average_precision_score);
- precision, recall, f1 at 0.5; 0 when the denominator is 0 (sklearn's zero_division default);
- ece: conf = max(p, 1 - p), pred = argmax, equal-width bins (lo, hi] over [0, 1],
  sum_b (n_b / n) |acc_b - conf_b| (upstream's expected_calibration_error on [1 - p, p]);
- log_loss: mean of -(y log p + (1 - y) log(1 - p)), p clipped to [eps, 1 - eps] (sklearn's log_loss); a proper
  score, so it rewards calibrated probabilities where F1 only sees which side of 0.5 they fall.
`hard_label_auc=True` computes roc_auc and pr_auc from the 0/1 predictions as upstream's comparison file does; the ROC
AUC of hard labels is the balanced accuracy (TPR + TNR) / 2. A metric undefined on a resample (an AUC with one class)
is NaN there, and `summarize` leaves it out of the interval.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.model_selection import KFold

METRICS = ("roc_auc", "pr_auc", "precision", "recall", "f1", "ece", "log_loss")
PROBABILITY_EPS = float(np.finfo(np.float64).eps)  # probability clip of the log-likelihood, as sklearn's log_loss
_CELLS_PER_CHUNK = 4_000_000  # rounds x rows held at once (32 MB of float64)


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), empty, dtype=float), where=den > 0)


def ece_bin(p: np.ndarray, ece_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin index of each row in (lo, hi] bins over [0, 1], confidence max(p, 1 - p))."""
    conf = np.maximum(p, 1.0 - p)
    edges = np.linspace(0.0, 1.0, ece_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, ece_bins - 1), conf


def weighted_metrics(y: np.ndarray, p: np.ndarray, weights: np.ndarray, *, ece_bins: int = 10,
                     hard_label_auc: bool = False) -> dict[str, np.ndarray]:
    """Each metric of METRICS for every round of `weights` (rounds x len(y)); returns arrays of length rounds."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    if len(y) == 0 or np.isnan(p).any():  # no rows, or no model to score them
        return {m: np.full(w.shape[0], np.nan) for m in METRICS}
    pred = p > 0.5
    score = pred.astype(float) if hard_label_auc else p
    order = np.argsort(-score, kind="stable")
    last = np.r_[score[order][1:] != score[order][:-1], True]  # last row of each run of equal scores
    # ECE numerator per bin: sum of w * (correct - conf); |.| per bin, summed, over the total weight
    b, conf = ece_bin(p, ece_bins)
    calib = np.zeros((len(y), ece_bins))
    calib[np.arange(len(y)), b] = (pred == y) - conf
    q = np.clip(p, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
    loss = -np.where(y, np.log(q), np.log1p(-q))
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    step = max(1, _CELLS_PER_CHUNK // max(1, len(y)))
    for start in range(0, w.shape[0], step):
        wc = w[start:start + step]
        tp = np.cumsum(wc[:, order] * y[order], axis=1)[:, last]  # rounds x distinct scores
        fp = np.cumsum(wc[:, order] * ~y[order], axis=1)[:, last]
        pos, neg = tp[:, -1], fp[:, -1]
        tp0 = np.diff(tp, axis=1, prepend=0.0)
        fp0 = np.diff(fp, axis=1, prepend=0.0)
        area = ((tp - tp0 / 2.0) * fp0).sum(axis=1)  # trapezoids: (tp_prev + tp) / 2 * dfp
        valid = (pos > 0) & (neg > 0)
        out["roc_auc"].append(np.where(valid, _ratio(area, pos * neg, np.nan), np.nan))
        ap = (tp0 * _ratio(tp, tp + fp, 0.0)).sum(axis=1)
        out["pr_auc"].append(np.where(valid, _ratio(ap, pos, np.nan), np.nan))
        tp_half = wc @ (y & pred).astype(float)
        n_pred = wc @ pred.astype(float)
        out["precision"].append(_ratio(tp_half, n_pred, 0.0))
        out["recall"].append(_ratio(tp_half, pos, 0.0))
        out["f1"].append(_ratio(2.0 * tp_half, n_pred + pos, 0.0))
        out["ece"].append(_ratio(np.abs(wc @ calib).sum(axis=1), wc.sum(axis=1), np.nan))
        out["log_loss"].append(_ratio(wc @ loss, wc.sum(axis=1), np.nan))
    return {m: np.concatenate(v) for m, v in out.items()}


def bootstrap_weights(n: int, rounds: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of bootstrap weights: for each round, how often each of the n rows was drawn (with replacement)."""
    rng = np.random.default_rng(seed)
    step = max(1, _CELLS_PER_CHUNK // max(1, n))
    for start in range(0, rounds, step):
        k = min(step, rounds - start)
        draws = rng.integers(0, n, (k, n)) + (np.arange(k) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=k * n).reshape(k, n).astype(float)


def kfold_weights(n: int, seed: int, folds: int = 100) -> Iterator[np.ndarray]:
    """Upstream's resampling: KFold(folds, shuffle) (seeded here, unseeded upstream); each round keeps the train rows
    of one fold (99%) and drops its 1% test rows. Fewer than `folds` rows: one fold per row (one round if n < 2)."""
    k = min(folds, n)
    masks = np.ones((max(k, 1), n))
    if k < 2:
        yield masks
        return
    for i, (_, held_out) in enumerate(KFold(k, shuffle=True, random_state=seed).split(np.arange(n))):
        masks[i, held_out] = 0.0
    yield masks


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": twice the smaller share of resampled differences on either
    side of 0, counted with the +1 of Davison & Hinkley (so never 0 and 1 when every difference is 0); NaN rounds
    left out, NaN without rounds."""
    d = differences[~np.isnan(differences)]
    if len(d) == 0:
        return np.nan
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2.0 * (tail + 1) / (len(d) + 1)))


def summarize(values: np.ndarray, ci_level: float) -> tuple[float, float, float, float]:
    """(mean, ci_low, ci_high, std) of resampled values, NaN rounds left out (percentile interval, sample std)."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan, np.nan
    alpha = (1.0 - ci_level) / 2.0
    low, high = np.quantile(v, [alpha, 1.0 - alpha])
    return float(v.mean()), float(low), float(high), float(v.std(ddof=1)) if len(v) > 1 else np.nan


def wilson(k: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of a proportion k/n (NaN where n = 0)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half
