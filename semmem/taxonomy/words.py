"""What the paired comparison allows the summary and the report to say: one sentence per predictor, from the
taxonomy_comparison rows, that claims a difference only where its interval excludes 0 (pandas-free, so the summary
command stays light)."""

from __future__ import annotations

import math
from collections.abc import Mapping

LOWER_IS_BETTER = {"log_loss"}
LABELS = {"log_loss": "log-loss", "pr_auc": "PR-AUC", "roc_auc": "ROC-AUC", "f1": "F1"}
DECISIVE = ("pr_auc", "log_loss")  # threshold-free: F1 at 0.5 and ROC-AUC are shown, not decisive


def _signed(v: float) -> str:
    return f"{'+' if v >= 0 else '-'}{abs(v):.3f}"


def _finite(*values: object) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def difference_text(metric: str, row: Mapping[str, object]) -> str:
    """"PR-AUC +0.018 [+0.003, +0.036], p 0.04" (the interval and p only where they exist)."""
    d, lo, hi, p = (row.get(k) for k in ("difference", "ci_low", "ci_high", "p_value"))
    if not _finite(d):
        return f"{LABELS[metric]} -"
    ci = f" [{_signed(lo)}, {_signed(hi)}]" if _finite(lo, hi) else ""
    return f"{LABELS[metric]} {_signed(d)}{ci}" + (f", p {p:.2g}" if _finite(p) else "")


def verdict(predictor: str, rows: Mapping[str, Mapping[str, object]]) -> str:
    """One sentence: does `predictor` beat the baseline? `rows`: metric -> its taxonomy_comparison row."""
    better, worse = [], []
    for m in DECISIVE:
        r = rows.get(m, {})
        lo, hi = r.get("ci_low"), r.get("ci_high")
        if not _finite(lo, hi):
            continue
        good, bad = (hi < 0, lo > 0) if m in LOWER_IS_BETTER else (lo > 0, hi < 0)
        better += [m] if good else []
        worse += [m] if bad else []
    n = next((r.get("n_test") for r in rows.values() if r.get("n_test") is not None), None)
    numbers = "; ".join(difference_text(m, rows[m]) for m in DECISIVE if m in rows)
    on = f" ({predictor} minus baseline on {n:,} test rows, 95% paired bootstrap intervals)" if n else ""
    if not any(_finite(rows.get(m, {}).get("ci_low"), rows.get(m, {}).get("ci_high")) for m in DECISIVE):
        return f"{predictor} vs baseline: not measurable without bootstrap intervals: {numbers}{on}"
    if better and not worse:
        head = f"{predictor} predicts memorization better than the baseline"
    elif worse and not better:
        head = f"{predictor} predicts memorization worse than the baseline"
    elif better and worse:
        head = f"{predictor} vs baseline: mixed ({', '.join(LABELS[m] for m in better)} better, " \
               f"{', '.join(LABELS[m] for m in worse)} worse)"
    else:
        head = f"{predictor} vs baseline: no difference detectable at this size"
    return f"{head}: {numbers}{on}"
