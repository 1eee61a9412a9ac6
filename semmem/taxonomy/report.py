"""The report: what each model memorized and why, as one self-contained HTML page with its figures (spec §4.5).

`ReportData` holds the small, already-aggregated tables the `report` stage reads (category counts, the taxonomy
tables, a few example sequences); `write_report` draws the figures with matplotlib (Agg, no display), writes them
as PNGs beside `index.html` and embeds them in it as data URIs, so the page opens anywhere without a network.
Every figure has a title, axis labels and units; every estimate shows its interval and the rows it rests on.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from semmem.taxonomy.vocabulary import CATEGORIES, DISPLAY_NAMES, GUESS_RECALL, MODEL_FEATURES, PREDICTORS
from semmem.taxonomy.metrics import wilson
from semmem.taxonomy.search import VALIDATION_TOO_SMALL
from semmem.taxonomy.words import verdict

SUBSET_ORDER = (*CATEGORIES, "aggregate")
METRIC_LABELS = {"pr_auc": "PR-AUC", "roc_auc": "ROC-AUC", "precision": "Precision", "recall": "Recall", "f1": "F1",
                 "ece": "ECE (lower is better)"}
COLORS = {"recitation": "#4e79a7", "reconstruction": "#f28e2b", "recollection": "#59a14f", "aggregate": "#76716f",
          "baseline": "#9c9c9c", "taxonomic": "#4e79a7", "guess_recall": "#b07aa1", "trees": "#edc948",
          "best_partition": "#e15759", "guess": "#b07aa1", "recall": "#9d7660"}
# Published Pythia-12B-deduped numbers (spec §6.2, §6.4), shown for context: another model and corpus than ours.
UPSTREAM_SHARES = {"recitation": 83.71, "reconstruction": 2.95, "recollection": 13.35}
UPSTREAM_F1 = {"taxonomic": 0.668, "baseline": 0.627, "best_partition": 0.636}


@dataclass(frozen=True)
class ReportData:
    """The tables a report is drawn from (pandas, bounded: aggregates and a few example rows)."""

    title: str
    categories: pd.DataFrame  # model, revision, category, sequences, memorized
    metrics: pd.DataFrame  # taxonomy_metrics rows
    weights: pd.DataFrame  # taxonomy_weights rows (with vif)
    correlations: pd.DataFrame  # feature_correlations rows
    search: pd.DataFrame  # taxonomy_search rows (the best few per model)
    kl: pd.DataFrame  # duplicate_threshold_kl rows
    forecast: pd.DataFrame  # memorization_forecast rows
    examples: pd.DataFrame  # model, revision, category, sequence_id, text, is_memorized, features...
    duplicate_threshold: int
    family: pd.DataFrame = field(default_factory=pd.DataFrame)  # model_family rows (empty: no trained family)
    capacity: pd.DataFrame = field(default_factory=pd.DataFrame)  # capacity rows (empty: stage capacity not run)
    comparison: pd.DataFrame = field(default_factory=pd.DataFrame)  # taxonomy_comparison rows
    contingency: pd.DataFrame = field(default_factory=pd.DataFrame)  # taxonomy_contingency rows
    notes: list[str] = field(default_factory=list)  # provenance lines (warehouse, table versions, config)
    # the model@revisions the taxonomy covered (taxonomy.revisions), one section each; empty: every one of categories
    models: list[tuple[str, str]] = field(default_factory=list)
    # the evidence (stage evidence; empty: not run): memorization_by_context, memorization_exposure,
    # exposure_medians, score_separation, memorization_examples rows
    by_context: pd.DataFrame = field(default_factory=pd.DataFrame)
    exposure: pd.DataFrame = field(default_factory=pd.DataFrame)
    medians: pd.DataFrame = field(default_factory=pd.DataFrame)
    separation: pd.DataFrame = field(default_factory=pd.DataFrame)
    cards: pd.DataFrame = field(default_factory=pd.DataFrame)
    # taxonomy.features=upstream+exposure: why a model@revision has no exposure fit ("model@revision" -> reason)
    exposure_skipped: dict[str, str] = field(default_factory=dict)
    # where in the model (stage localize; empty: not run): localization and gradient_shares rows
    localization: pd.DataFrame = field(default_factory=pd.DataFrame)
    gradients: pd.DataFrame = field(default_factory=pd.DataFrame)


def slug(model: str, revision: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}@{revision}").strip("_")


def _in_model_order(rows: pd.DataFrame) -> list[str]:
    """The features in `rows`, in the model's feature order (frequencies together, perplexities together, ...)."""
    present = set(rows["feature"])
    return [f for f in (*MODEL_FEATURES, "intercept") if f in present]


# ------------------------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titleweight": "bold", "font.size": 9})
    return plt


def category_figure(cats: pd.DataFrame, model: str, revision: str):
    """Sequences per category and the share of them memorized (95% Wilson intervals)."""
    plt = _plt()
    c = cats.set_index("category").reindex(list(CATEGORIES)).fillna(0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = np.arange(len(CATEGORIES))
    colors = [COLORS[k] for k in CATEGORIES]
    a.bar(x, c["sequences"], color=colors, alpha=0.45, label="all sequences")
    a.bar(x, c["memorized"], color=colors, label="memorized")
    for i, (n, m) in enumerate(zip(c["sequences"], c["memorized"])):
        a.annotate(f"{int(m):,} / {int(n):,}", (i, n), ha="center", va="bottom", fontsize=8)
    a.set(xticks=x, xticklabels=CATEGORIES, ylabel="sequences (count)", title="Sequences per category")
    a.legend(frameon=False, fontsize=8)
    rate = np.where(c["sequences"] > 0, c["memorized"] / c["sequences"].replace(0, np.nan), np.nan) * 100
    lo, hi = wilson(c["memorized"], c["sequences"])
    b.bar(x, rate, color=colors, yerr=np.clip([rate - lo * 100, hi * 100 - rate], 0, None), capsize=4)
    b.set(xticks=x, xticklabels=CATEGORIES, ylabel="memorized (% of the category)",
          title="Memorized rate per category (95% CI)", ylim=(0, 100))
    fig.suptitle(f"{model}@{revision}: the taxonomy", fontsize=10)
    fig.tight_layout()
    return fig


def metrics_figure(metrics: pd.DataFrame, model: str, revision: str):
    """Test metrics of every predictor (baseline, taxonomic, guess_recall, trees, best_partition) per subset, with
    their intervals."""
    plt = _plt()
    m = metrics[metrics["metric"].isin(list(METRIC_LABELS))]
    predictors = _predictors(m)
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.6), sharex=True)
    x = np.arange(len(SUBSET_ORDER))
    width = 0.8 / max(1, len(predictors))
    for ax, (metric, label) in zip(axes.flat, METRIC_LABELS.items()):
        for k, p in enumerate(predictors):
            rows = m[(m["metric"] == metric) & (m["predictor"] == p)].set_index("subset").reindex(list(SUBSET_ORDER))
            v = rows["value"].to_numpy(float)
            err = np.vstack([v - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - v])
            ax.bar(x + (k - (len(predictors) - 1) / 2) * width, v, width, yerr=np.nan_to_num(np.abs(err)),
                   capsize=2, color=COLORS[p], label=p.replace("_", " "))
        ax.set(title=label, ylabel="score (0-1)", xticks=x, xticklabels=SUBSET_ORDER, ylim=(0, 1.05))
        ax.tick_params(axis="x", rotation=20)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(predictors), frameon=False, fontsize=8)
    fig.suptitle(f"{model}@{revision}: predicting memorization on held-out sequences (bars: 95% CI)",
                 fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


WALD_Z = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def weights_figure(weights: pd.DataFrame, model: str, revision: str):
    """Coefficients (standardized features) of the baseline and of each group's model (the paper's categories, guess
    and recall), symlog axis."""
    plt = _plt()
    w = weights[weights["status"] == "fitted"]
    groups = [("baseline", "aggregate"), *[("taxonomic", c) for c in CATEGORIES],
              *[("guess_recall", g) for g in GUESS_RECALL[1:]]]
    groups = [g for g in groups if ((w["predictor"] == g[0]) & (w["subset"] == g[1])).any()]
    features = _in_model_order(weights)
    fig, ax = plt.subplots(figsize=(8, 0.12 * len(features) * max(1, len(groups)) + 1.4))
    y = np.arange(len(features))
    h = 0.8 / max(1, len(groups))
    for k, (pred, subset) in enumerate(groups):
        rows = w[(w["predictor"] == pred) & (w["subset"] == subset)].set_index("feature").reindex(features)
        color = COLORS["baseline"] if pred == "baseline" else COLORS[subset]
        ax.barh(y + (k - (len(groups) - 1) / 2) * h, rows["coefficient"].to_numpy(float), h, color=color,
                xerr=WALD_Z * rows["std_error"].to_numpy(float), error_kw={"lw": 0.6, "capsize": 1},
                label="baseline (all)" if pred == "baseline" else f"{subset} model ({pred})")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set(yticks=y, yticklabels=[DISPLAY_NAMES[f] for f in features],
           xlabel="coefficient (log-odds per standard deviation; symlog scale; bars: 95% Wald interval)",
           title=f"{model}@{revision}: what goes with memorization in each group (associations, not causes)")
    ax.invert_yaxis()
    if groups:
        ax.legend(fontsize=8, loc="lower right", framealpha=0.9, edgecolor="none")
    fig.tight_layout()
    return fig


def correlations_figure(corr: pd.DataFrame, model: str, revision: str):
    """Pearson, Spearman and xi of each feature with memorization, all sequences."""
    plt = _plt()
    c = corr[(corr["category"] == "all") & (corr["text_type"] == "all")]
    features = _in_model_order(c)
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.28 * len(features) + 1.8), sharey=True)
    for ax, (stat, label, lim) in zip(axes, (("pearson", "Pearson r", (-1, 1)), ("spearman", "Spearman rho", (-1, 1)),
                                             ("xi", "Chatterjee xi", (0, 1)))):
        rows = c[c["statistic"] == stat].set_index("feature").reindex(features)
        v = rows["value"].to_numpy(float)
        ax.barh(np.arange(len(features)), np.nan_to_num(v), color=np.where(v >= 0, "#4e79a7", "#e15759"))
        ax.axvline(0, color="black", lw=0.6)
        ax.set(xlim=lim, title=label, xlabel="correlation with memorized (unitless)")
    axes[0].set(yticks=np.arange(len(features)), yticklabels=[DISPLAY_NAMES[f] for f in features])
    axes[0].invert_yaxis()
    fig.suptitle(f"{model}@{revision}: feature correlations with memorization (all sequences)", fontsize=10)
    fig.tight_layout()
    return fig


EVIDENCE_ORDER = ("all", *CATEGORIES)
MEASURE_LABELS = {"exposures_before": "exposures before the checkpoint (count, power-of-two bins)",
                  "steps_since_last_exposure": "training steps since the last exposure (power-of-two bins)"}


def _share_lines(ax, rows: pd.DataFrame, x: str, categories: Iterable[str] = EVIDENCE_ORDER) -> None:
    """The memorized share (%) of each category against `x`, with its interval as error bars."""
    for c in categories:
        r = rows[rows["category"] == c].sort_values(x)
        if r.empty:
            continue
        v = r["share"].to_numpy(float) * 100
        err = np.clip([v - r["ci_low"].to_numpy(float) * 100, r["ci_high"].to_numpy(float) * 100 - v], 0, None)
        ax.errorbar(r[x].to_numpy(float), v, yerr=np.nan_to_num(err), fmt="o-", ms=3, capsize=3,
                    color=COLORS["aggregate" if c == "all" else c], label=c)


def context_figure(by_context: pd.DataFrame, model: str, revision: str):
    """Memorized share per prompt length and category (intervals: Wilson)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    _share_lines(ax, by_context, "context_length")
    ax.set(xlabel="prompt length k (tokens before the continuation)", ylabel="memorized at k (% of sequences)",
           xticks=sorted(set(by_context["context_length"])),
           title=f"{model}@{revision}: memorization vs context length (bars: interval)")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def exposure_figure(exposure: pd.DataFrame, model: str, revision: str):
    """Memorized share per bin of exposures before the checkpoint and of steps since the last exposure."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, (measure, label) in zip(axes, MEASURE_LABELS.items()):
        rows = exposure[exposure["measure"] == measure]
        bins = sorted(set(zip(rows["bin_low"], rows["bin_high"])))
        pos = {b: i for i, b in enumerate(bins)}
        _share_lines(ax, rows.assign(position=[pos[b] for b in zip(rows["bin_low"], rows["bin_high"])]),
                     "position")
        ax.set(xticks=range(len(bins)), xlabel=label, ylabel="memorized (% of the bin's sequences)",
               title="memorized vs " + ("exposures" if measure == "exposures_before" else "recency"))
        ax.set_xticklabels([f"{int(lo)}" if lo == hi else f"{int(lo)}-{int(hi)}" for lo, hi in bins],
                           rotation=40, ha="right", fontsize=7)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(f"{model}@{revision}: memorization vs exposure (bars: interval)", fontsize=10)
    fig.tight_layout()
    return fig


def separation_figure(separation: pd.DataFrame, model: str, revision: str):
    """ROC-AUC of each score per category with its bootstrap interval; 0.5 = no separation."""
    plt = _plt()
    scores = list(dict.fromkeys(separation["score"]))
    cats = [c for c in EVIDENCE_ORDER if c in set(separation["category"])]
    fig, ax = plt.subplots(figsize=(8, 0.16 * len(scores) * max(1, len(cats)) + 1.4))
    y = np.arange(len(scores))
    h = 0.8 / max(1, len(cats))
    for k, c in enumerate(cats):
        rows = separation[separation["category"] == c].set_index("score").reindex(scores)
        v = rows["roc_auc"].to_numpy(float)
        err = np.clip([v - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - v], 0, None)
        ax.barh(y + (k - (len(cats) - 1) / 2) * h, v, h, xerr=np.nan_to_num(err), capsize=2,
                color=COLORS["aggregate" if c == "all" else c], label=c)
    ax.axvline(0.5, color="black", lw=0.6, ls="--")
    ax.set(yticks=y, yticklabels=scores, xlim=(0, 1), xlabel="ROC-AUC (0.5: no separation; 1: perfect)",
           title=f"{model}@{revision}: how well each score separates memorized sequences (bars: interval)")
    ax.invert_yaxis()
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _kl_parts(kl: pd.DataFrame, threshold: int) -> tuple[pd.DataFrame, pd.Series | None, pd.Series | None]:
    """(per-count rows with a value, by count; the pooled row over 1..threshold; the pooled row above), None where
    absent or without a value. A pooled span of one count is stored as that count's row; upstream's has no pools."""
    per = kl[(kl["duplicates_from"] == kl["duplicates_to"]) & kl["value"].notna()].sort_values("duplicates_from")
    if (kl["statistic"] == "upstream_paired_kl").any():
        return per, None, None
    below = kl[(kl["duplicates_from"] == 1) & (kl["duplicates_to"] == threshold)]
    above = kl[kl["duplicates_from"] == threshold + 1].sort_values("duplicates_to").tail(1)
    return per, *(r.iloc[0] if len(r) and pd.notna(r["value"].iloc[0]) else None for r in (below, above))


def kl_figure(kl: pd.DataFrame, threshold: int, model: str, revision: str):
    """How much the continuation log-perplexities of memorized and other sequences differ per duplicate count (JS
    divergence, bootstrap band), and pooled at or below and above the threshold: does the threshold separate them?"""
    plt = _plt()
    upstream = bool((kl["statistic"] == "upstream_paired_kl").any())
    per, below, above = _kl_parts(kl, threshold)
    counts = kl.loc[kl["duplicates_from"] == kl["duplicates_to"], "duplicates_from"]
    right = max(float(counts.max()) if len(counts) else 0.0, threshold + 1.5)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    if len(per):
        d = per["duplicates_from"].to_numpy(float)
        ax.fill_between(d, per["ci_low"].to_numpy(float), per["ci_high"].to_numpy(float), color="#4e79a7",
                        alpha=0.2, label="bootstrap band")
        ax.plot(d, per["value"].to_numpy(float), "o-", color="#4e79a7", ms=3,
                label="bootstrap mean per count" if upstream else "per duplicate count")
    for r, x0, x1, name, color in ((below, 1.0, threshold + 0.5, f"pooled 1..{threshold}", "#59a14f"),
                                   (above, threshold + 0.5, right, f"pooled > {threshold}", "#f28e2b")):
        if r is not None:
            ax.hlines(r["value"], x0, x1, colors=color, lw=2, label=f"{name} (band shaded)")
            ax.fill_between([x0, x1], r["ci_low"], r["ci_high"], color=color, alpha=0.15)
    if len(per) or below is not None or above is not None:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.text(0.5, 0.5, "too few memorized and non-memorized rows at any one duplicate count\n"
                "(taxonomy.kl_min_rows of each are needed)", ha="center", transform=ax.transAxes)
        ax.set_xlim(0, 3 * (threshold + 1))
    ax.axvline(threshold + 0.5, color="#e15759", ls="--", label=f"recitation threshold (> {threshold})")
    ylabel, title = ("upstream's paired symmetric KL (nats)",
                     "upstream's paired statistic (grows with the spread within each group)") if upstream else \
        ("Jensen-Shannon divergence (nats, bias-corrected)", "memorized vs other continuation log-perplexity")
    ax.set(xlabel="duplicates of the continuation in the training stream (count, log scale)", ylabel=ylabel,
           title=f"{model}@{revision}: {title}")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def _kl_note(kl: pd.DataFrame, threshold: int) -> str:
    """In words: whether the pooled divergence above the threshold exceeds the one at or below it (band vs band),
    and the first count whose band lies above count 1's."""
    per, below, above = _kl_parts(kl, threshold)

    def est(r: pd.Series) -> str:
        return (f"{_fmt(r['value'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] on {_fmt(int(r['n_memorized']))} "
                f"memorized and {_fmt(int(r['n_non_memorized']))} other sequences")

    if (kl["statistic"] == "upstream_paired_kl").any():
        text = ("Upstream's statistic (taxonomy.upstream_protocol): it pairs the two groups' perplexities in random "
                "order, so it grows with the spread inside each group as well as with their difference; it does not "
                "test the threshold.")
    elif below is None or above is None or pd.isna(below["ci_low"]) or pd.isna(above["ci_low"]):
        text = (f"No comparison of 1..{threshold} and more than {threshold} duplicates: too few rows on one side "
                "(taxonomy.kl_min_rows of each group are needed) or no bootstrap rounds.")
    else:
        both = f"JS above {threshold} duplicates {est(above)}; at 1..{threshold} {est(below)}"
        if above["ci_low"] > below["ci_high"]:
            text = (f"The data support the threshold: memorized and other sequences differ more above {threshold} "
                    f"duplicates than at or below it ({both}).")
        elif above["ci_high"] < below["ci_low"]:
            text = (f"The data contradict the threshold: memorized and other sequences differ less above {threshold} "
                    f"duplicates than at or below it ({both}).")
        else:
            text = f"No difference detectable at this size ({both})."
        text += (" Values are bias-corrected by the bootstrap (the plain JS of finite samples grows as groups shrink), "
                 "so groups of different sizes compare fairly.")
    one = per[(per["duplicates_from"] == 1) & per["ci_high"].notna()]
    if len(one):
        clear = per[(per["duplicates_from"] > 1) & (per["ci_low"] > one["ci_high"].iloc[0])]
        text += (f" The divergence first rises clearly at d = {int(clear['duplicates_from'].iloc[0])} (its band lies "
                 "entirely above that of d = 1)." if len(clear) else
                 " No duplicate count's band lies entirely above that of d = 1.")
    return f"<p class=note>{text}</p>"


FORECAST_MIN_MEMORIZED = 10  # a predictor that memorized fewer sequences gives intervals too wide to read


def _few(forecast: pd.DataFrame) -> np.ndarray:
    """The pairs whose predictor A memorized fewer than FORECAST_MIN_MEMORIZED of the common sequences."""
    return (forecast["n_memorized_a"].fillna(0) < FORECAST_MIN_MEMORIZED).to_numpy(dtype=bool)


def forecast_figure(forecast: pd.DataFrame):
    """Precision and recall of 'memorized by A' predicting 'memorized by B', every ordered pair; the cells of a
    predictor with few memorized sequences hatched and greyed, as their values rest on a handful of sequences."""
    plt = _plt()
    names = sorted(set(forecast["model_a"] + "@" + forecast["revision_a"]) |
                   set(forecast["model_b"] + "@" + forecast["revision_b"]))
    idx = {n: i for i, n in enumerate(names)}
    few = np.zeros((len(names), len(names)), dtype=bool)
    for r, f in zip(forecast.itertuples(), _few(forecast)):
        few[idx[f"{r.model_a}@{r.revision_a}"], idx[f"{r.model_b}@{r.revision_b}"]] = f
    fig, axes = plt.subplots(1, 2, figsize=(4.2 * 2 + 0.4 * len(names), 1.2 + 0.45 * len(names) + 1.5))
    for ax, stat in zip(axes, ("precision", "recall")):
        mat = np.full((len(names), len(names)), np.nan)
        for r in forecast.itertuples():
            mat[idx[f"{r.model_a}@{r.revision_a}"], idx[f"{r.model_b}@{r.revision_b}"]] = getattr(r, stat)
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(names)):
            for j in range(len(names)):
                if few[i, j]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#ddd", edgecolor="#999",
                                               hatch="///", linewidth=0))
                if not np.isnan(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="#555" if few[i, j] else "white" if mat[i, j] < 0.6 else "black")
        ax.set(xticks=range(len(names)), yticks=range(len(names)), title=stat.capitalize(),
               xlabel="B: the model whose memorization is predicted", ylabel="A: the predictor")
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
        ax.set_yticklabels(names, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"{stat} (0-1)")
    fig.suptitle("Forecasting memorization: 'memorized by A' as a predictor of 'memorized by B'" + (
        f"\nhatched grey: A memorized fewer than {FORECAST_MIN_MEMORIZED} of the sequences both scored (too few to "
        "read)" if few.any() else ""), fontsize=10)
    fig.tight_layout()
    return fig


def _forecast_table(forecast: pd.DataFrame) -> str:
    """Every ordered pair, precision and recall with their intervals; rows with few memorized by A greyed."""
    def interval(stat: str) -> list[str]:
        return [_fmt(v) if pd.isna(v) else f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]" for v, lo, hi in
                zip(forecast[stat], forecast[f"{stat}_ci_low"], forecast[f"{stat}_ci_high"])]

    shown = forecast[["model_a", "revision_a", "model_b", "revision_b", "n_sequences", "n_memorized_a",
                      "n_memorized_b", "n_memorized_both"]].assign(precision=interval("precision"),
                                                                    recall=interval("recall"))
    return _table(shown, left=["model_a", "revision_a", "model_b", "revision_b"], greyed=_few(forecast))


def family_figure(family: pd.DataFrame, memorized: pd.DataFrame, forecast: pd.DataFrame):
    """The trained family: memorization emerging over training per size, and how well smaller models and earlier
    checkpoints predict what the largest model memorizes by the end (Biderman et al. 2023)."""
    plt = _plt()
    fam = family.merge(memorized, on=["model", "revision"], how="left").fillna({"memorized": 0})
    sizes = fam.groupby("model")["num_parameters"].max().sort_values()
    target = fam[fam["model"] == sizes.index[-1]].sort_values("step").iloc[-1]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    for model in sizes.index:
        rows = fam[fam["model"] == model].sort_values("step")
        a.plot(rows["fraction"] * 100, rows["memorized"], "o-", ms=4, label=f"{model} ({sizes[model] / 1e6:.2f}M)")
    a.set(xlabel="training done (%)", ylabel="memorized sequences (count)", title="Memorization during training",
          xlim=(0, 105))
    a.legend(frameon=False, fontsize=8)
    to_target = forecast[(forecast["model_b"] == target["model"]) & (forecast["revision_b"] == target["revision"])]
    finals = fam.sort_values("step").groupby("model").tail(1)
    by_size = finals.merge(to_target, left_on=["model", "revision"], right_on=["model_a", "revision_a"])
    by_size = by_size.sort_values("num_parameters")
    for stat, marker in (("precision", "o-"), ("recall", "s--")):
        b.plot(by_size["num_parameters"], by_size[stat], marker, label=stat)
    b.set_xscale("log")
    b.set(xlabel="parameters (log scale)", ylabel="score (0-1)", ylim=(-0.03, 1.05),
          title=f"Smaller models predicting {target['model']}")
    b.legend(frameon=False, fontsize=8)
    own = fam[fam["model"] == target["model"]].merge(to_target, left_on=["model", "revision"],
                                                     right_on=["model_a", "revision_a"]).sort_values("step")
    for stat, marker in (("precision", "o-"), ("recall", "s--")):
        c.plot(own["fraction"] * 100, own[stat], marker, label=stat)
    c.set(xlabel="training done by the predicting checkpoint (%)", ylabel="score (0-1)", ylim=(-0.03, 1.05),
          xlim=(0, 105), title=f"{target['model']}'s checkpoints predicting its end")
    c.legend(frameon=False, fontsize=8)
    fig.suptitle(f"The trained family: what {target['model']}@{target['revision']} memorizes, forecast "
                 "(precision = |A and B| / |A|, recall = |A and B| / |B|)", fontsize=10)
    fig.tight_layout()
    return fig


def capacity_figure(capacity: pd.DataFrame):
    """Left: memorized bits vs dataset size per model and dtype (mean and range over seeds of the converged runs),
    the plateau drawn thick; right: the same in bits per parameter against Morris et al.'s 3.51 (bf16) / 3.6 /
    3.83 (fp32). Unconverged runs are open circles: they enter no mean. The legend says each capacity or why none."""
    from semmem.training.capacity import describe, plateau

    plt = _plt()
    plats = plateau(capacity)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2 + 0.2 * len(plats)))
    for p in plats.itertuples():
        g = capacity[(capacity["model"] == p.model) & (capacity["dtype"] == p.dtype)]
        by_n = g[g["converged"]].groupby("dataset_sequences").agg(
            mean=("memorized_bits", "mean"), lo=("memorized_bits", "min"), hi=("memorized_bits", "max"),
            bpp=("bits_per_param", "mean"))
        line = ax.plot(by_n.index, by_n["mean"], "o-", ms=4, label=f"{p.model} ({p.params:,} params, {p.dtype}): "
                       f"{describe(p)}")[0]
        color = line.get_color()
        ax.fill_between(by_n.index, by_n["lo"], by_n["hi"], color=color, alpha=0.2)
        bx.plot(by_n.index, by_n["bpp"], "o-", ms=4, color=color)
        flat = g[g["in_plateau"]].groupby("dataset_sequences")
        ax.plot(flat["memorized_bits"].mean(), "-", lw=5, alpha=0.4, color=color)
        bx.plot(flat["bits_per_param"].mean(), "-", lw=5, alpha=0.4, color=color)
        bad = g[~g["converged"]]
        ax.plot(bad["dataset_sequences"], bad["memorized_bits"], "o", mfc="none", color=color)
        bx.plot(bad["dataset_sequences"], bad["bits_per_param"], "o", mfc="none", color=color)
    entropy = capacity.groupby("dataset_sequences")["dataset_bits"].first().sort_index()
    ax.plot(entropy.index, entropy, "--", color="grey", lw=1, label="the dataset's entropy (all of it stored)")
    for y in (3.51, 3.6, 3.83):
        bx.axhline(y, color="grey", ls=":", lw=1)
    bx.annotate("Morris et al.: 3.51 (bf16), 3.6, 3.83 (fp32)", (0.01, 3.85), xycoords=("axes fraction", "data"),
                fontsize=7, va="bottom", color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(top=3 * capacity["memorized_bits"].max())
    ax.set(xlabel="dataset size (random sequences, log scale)", ylabel="memorized bits (log scale)",
           title="Bits stored of uniformly random data (thick: plateau)")
    bx.set_xscale("log")
    bx.set_ylim(0, max(4.2, 1.1 * capacity["bits_per_param"].max()))
    bx.set(xlabel="dataset size (random sequences, log scale)", ylabel="memorized bits per parameter",
           title="Per parameter (open circles: unconverged, left out)")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower left", frameon=False, fontsize=7)
    fig.tight_layout(rect=(0, 0.05 * (len(plats) + 1), 1, 1))
    return fig


def png_bytes(fig) -> bytes:
    """A figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    out = io.BytesIO()
    fig.savefig(out, format="png", bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------------- page
CSS = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;max-width:1180px;margin:0 auto;
padding:24px 28px 60px;background:#fbfbfa}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:16px;margin:22px 0 6px}.sub{color:#666;margin:0 0 18px}.card{background:#fff;border:1px solid #e3e3e0;
border-radius:8px;padding:14px 18px;margin:12px 0;box-shadow:0 1px 2px rgba(0,0,0,.04)}
img{max-width:100%;height:auto;display:block;margin:8px 0}table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:right;vertical-align:top}th{background:#f3f3f1}
td.l,th.l{text-align:left}.note{color:#666;font-size:13px}.kpi{display:inline-block;margin:0 26px 8px 0}
.kpi b{display:block;font-size:22px}pre{white-space:pre-wrap;font:12px/1.35 ui-monospace,Menlo,monospace;margin:0;
max-width:560px;max-height:9.5em;overflow:auto;background:#f6f6f4;padding:4px 6px;border-radius:4px}
.mem{color:#1a7f37;font-weight:600}.not{color:#999}nav a{margin-right:14px}tr.few td{color:#999}
"""


def _img(fig, folder: Path, name: str, alt: str) -> str:
    """The figure as a PNG beside the page, and as an <img> embedding it."""
    data = png_bytes(fig)
    (folder / name).write_bytes(data)
    return (f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{html.escape(alt)}" '
            f'title="{html.escape(name)}">')


def _fmt(v: object, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{v:,.{digits}g}" if abs(v) >= 1000 else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, left: Iterable[str] = (), greyed: Iterable[bool] | None = None) -> str:
    """An HTML table of `df`; `left` columns left-aligned; rows where `greyed` is true in grey (class few)."""
    left = set(left)
    rows = [' class="few"' if g else "" for g in (greyed if greyed is not None else [False] * len(df))]
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = "".join(f"<tr{cls}>" + "".join(f'<td class="{"l" if c in left else ""}">{_fmt(v)}</td>'
                                          for c, v in zip(df.columns, row)) + "</tr>"
                   for row, cls in zip(df.itertuples(index=False), rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _metric(metrics: pd.DataFrame, predictor: str, metric: str, subset: str = "aggregate") -> str:
    r = metrics[(metrics["predictor"] == predictor) & (metrics["metric"] == metric) & (metrics["subset"] == subset)]
    if r.empty or pd.isna(r["value"].iloc[0]):
        return "–"
    v, lo, hi = (r[c].iloc[0] for c in ("value", "ci_low", "ci_high"))
    return f"{v:.3f} <span class=note>[{lo:.3f}, {hi:.3f}]</span>" if pd.notna(lo) else f"{v:.3f}"


# what each predictor is, as the report's metrics table says it; all share the training and the test rows
PREDICTOR_NOTES = {
    "baseline": "one logistic regression for all sequences",
    "taxonomic": "one logistic regression per paper category (recitation, reconstruction, recollection)",
    "guess_recall": "one logistic regression for the guessable sequences (repeating, incrementing, or prompt and "
                    "continuation overlapping: ROUGE-L or ROUGE-3 F1 at least taxonomy.guess_rouge_threshold), one "
                    "for the others, memorized or not (a sequence with a missing value is scored by the baseline)",
    "trees": "gradient-boosted trees on the same features and training rows as the baseline, without its linear "
             "form",
    "best_partition": "one logistic regression per group of the partition search's winner (below)",
}


def _predictors(metrics: pd.DataFrame) -> list[str]:
    """The predictors of PREDICTORS that `metrics` has rows of, in that order."""
    present = set(metrics["predictor"]) if len(metrics) else set()
    return [p for p in PREDICTORS if p in present]


def _of_model(df: pd.DataFrame, model: str, revision: str) -> pd.DataFrame:
    """The rows of one model@revision (an empty frame as it is: it may have no columns)."""
    return df[(df["model"] == model) & (df["revision"] == revision)] if len(df) else df


def _model_section(data: ReportData, model: str, revision: str, folder: Path) -> str:
    def mine(df: pd.DataFrame) -> pd.DataFrame:
        return _of_model(df, model, revision)

    cats, metrics, weights = mine(data.categories), mine(data.metrics), mine(data.weights)
    versus = mine(data.comparison)
    corr, search, kl, ex = mine(data.correlations), mine(data.search), mine(data.kl), mine(data.examples)
    s = slug(model, revision)
    n, m = int(cats["sequences"].sum()), int(cats["memorized"].sum())
    mem = cats[cats["memorized"] > 0]
    shares = ", ".join(f"{r.category} {100 * r.memorized / max(1, m):.1f}%" for r in mem.itertuples())
    out = [f'<h2 id="{s}">{html.escape(model)}@{html.escape(revision)}</h2>', '<div class="card">',
           f'<span class="kpi"><b>{n:,}</b>sequences scored</span>',
           f'<span class="kpi"><b>{m:,}</b>memorized ({100 * m / max(1, n):.2f}%)</span>',
           *[f'<span class="kpi"><b>{_metric(metrics, p, "f1")}</b>{p} F1</span>'
             for p in _predictors(metrics)],
           f"<p>Memorized sequences by category: {shares or 'none memorized'}. Published for Pythia-12B-deduped "
           f"(another model and corpus, for context): recitation {UPSTREAM_SHARES['recitation']}%, reconstruction "
           f"{UPSTREAM_SHARES['reconstruction']}%, recollection {UPSTREAM_SHARES['recollection']}%.</p></div>"]
    out.append("<h3>The taxonomy</h3>" + _img(category_figure(cats, model, revision), folder, f"categories_{s}.png",
                                              "sequences and memorized rate per category"))
    table = cats.set_index("category").reindex(list(CATEGORIES)).fillna(0).reset_index()
    table = table.assign(rate=lambda d: d["memorized"] / d["sequences"].replace(0, np.nan))
    lo, hi = wilson(table["memorized"], table["sequences"])
    table = table.assign(ci_low=lo, ci_high=hi)[["category", "sequences", "memorized", "rate", "ci_low", "ci_high"]]
    out.append(_table(table, left=["category"]))
    out.append(_guess_recall_html(mine(data.contingency)))
    if len(metrics):
        out.append("<h3>How well the features predict memorization</h3>")
        out.append(_img(metrics_figure(metrics, model, revision), folder, f"metrics_{s}.png", "model metrics"))
        key = metrics[metrics["metric"].isin(["pr_auc", "f1", "precision", "recall", "ece"]) &
                      (metrics["subset"] == "aggregate")]
        pivot = key.assign(value=_intervals(key, "value")).pivot(index="predictor", columns="metric", values="value")
        shown = _predictors(key)
        out.append(_table(pivot.reindex([*shown, *sorted(set(pivot.index) - set(shown))]).reset_index(),
                          left=["predictor"]))
        out.append("<p class=note>Aggregate test metrics, in brackets the resampled interval; " + "; ".join(
            f"{p}: {PREDICTOR_NOTES[p]}" for p in shown) + ".</p>")
        out.append(_comparison_html(versus))
        lrt = metrics[metrics["metric"].str.startswith("lrt_")]
        r = {row.metric: row.value for row in lrt.itertuples() if row.predictor == "taxonomic"}
        if r:
            out.append(f"<p class=note>Upstream's likelihood-ratio test (upstream_protocol), taxonomic vs baseline "
                       f"on the test rows: statistic {_fmt(r.get('lrt_statistic'))}, df {_fmt(r.get('lrt_df'))}, "
                       f"p = {_fmt(r.get('lrt_p_value'), 2)}. Its chi-squared reference does not hold for penalized, "
                       "class-weighted fits scored on held-out rows: read the paired comparison above instead.</p>")
        out.append(f"<p class=note>Published for Pythia-12B-deduped (aggregate F1, another model and corpus): "
                   f"taxonomic {UPSTREAM_F1['taxonomic']}, baseline {UPSTREAM_F1['baseline']}, best partition "
                   f"{UPSTREAM_F1['best_partition']}.</p>")
        n_rows = metrics[(metrics["metric"] == "f1") & (metrics["predictor"] == "baseline")]
        small = n_rows[(n_rows["n_positive"].fillna(0) < 10)]
        if len(small):
            out.append("<p class=note>Few memorized test sequences in: " + ", ".join(
                f"{r.subset} ({int(r.n_positive) if pd.notna(r.n_positive) else 0})" for r in small.itertuples()) +
                "; their intervals are wide and their point estimates unreliable.</p>")
    if len(weights):
        out.append("<h3>What goes with memorization in each category and group</h3>")
        out.append(_img(weights_figure(weights, model, revision), folder, f"weights_{s}.png", "coefficients"))
        out.append(_weight_notes(weights))
    if len(corr):
        out.append("<h3>Feature correlations</h3>")
        out.append(_img(correlations_figure(corr, model, revision), folder, f"correlations_{s}.png", "correlations"))
    if len(search):
        out.append("<h3>Optimal partition search</h3>")
        evaluated = search[search["status"] == "evaluated"]
        too_small = search[search["reason"].fillna("").str.startswith(VALIDATION_TOO_SMALL)]
        if len(too_small):
            out.append(f"<p class=note>No search: {html.escape(str(too_small['reason'].iloc[0]))}.</p>")
        else:
            top = evaluated.sort_values("rank").head(5)[[
                "rank", "feature_1", "threshold_1", "feature_2", "threshold_2", "validation_f1", "validation_pr_auc",
                "validation_ece"]].astype({"rank": int})
            n_val = int(search["n_validation"].max())
            out.append(f"<p>{len(evaluated):,} of {len(search):,} candidate partitions could be fitted (the others "
                       "leave a partition empty or with one class). Each was fitted on the training rows outside a "
                       f"validation share and ranked by its F1 on that share ({n_val:,} rows); the test rows never "
                       "choose. The winner was refitted on all training rows and tested once: its test metrics are "
                       "the best_partition row above. The best five by validation F1:</p>")
            out.append(_table(top, left=["feature_1", "feature_2"]))
    if len(kl):
        out.append(f"<h3>Do memorized and other sequences differ more above {data.duplicate_threshold} "
                   "duplicates?</h3>")
        out.append(_img(kl_figure(kl, data.duplicate_threshold, model, revision), folder, f"kl_{s}.png",
                        "divergence of memorized and other sequences per duplicate count"))
        out.append(_kl_note(kl, data.duplicate_threshold))
    out.append(_evidence_html(data, model, revision, folder))
    out.append(_localization_html(data, model, revision, folder))
    if len(ex):
        out.append("<h3>Examples</h3>")
        for cat in CATEGORIES:
            rows = ex[ex["category"] == cat]
            if rows.empty:
                continue
            out.append(f"<h4>{cat}</h4>")
            show = rows.assign(memorized=rows["is_memorized"].map(
                lambda v: '<span class="mem">memorized</span>' if v else '<span class="not">not memorized</span>'))
            body = "".join(
                f"<tr><td class=l><pre>{html.escape(str(r.text))}</pre></td><td class=l>{r.memorized}</td>"
                f"<td>{_fmt(r.sequence_duplicates)}</td><td>{_fmt(r.generation_perplexity)}</td>"
                f"<td>{_fmt(r.semantic_matches_0_8)}</td><td>{_fmt(r.textual_matches_0_8)}</td>"
                f"<td>{_fmt(r.nl_score, 2)}</td></tr>" for r in show.itertuples())
            out.append("<table><tr><th class=l>text (64 tokens)</th><th class=l>label</th><th>duplicates</th>"
                       "<th>continuation PPL</th><th>semantic matches</th><th>textual matches</th><th>P(NL)</th></tr>"
                       f"{body}</table>")
    return "\n".join(out)


def _interval(v: object, lo: object, hi: object) -> str:
    """A value with its interval in brackets ('–' for a missing part)."""
    return _fmt(v) if pd.isna(lo) else f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]"


def _intervals(df: pd.DataFrame, column: str) -> list[str]:
    """`_interval` of each row's `column` with its ci_low and ci_high."""
    return [_interval(v, lo, hi) for v, lo, hi in zip(df[column], df["ci_low"], df["ci_high"])]


def _evidence_html(data: ReportData, model: str, revision: str, folder: Path) -> str:
    """The evidence of one model@revision: memorization vs context length, vs exposure and recency, the scores'
    separation, the fits with exposure features, and a card per example memorized sequence."""
    def mine(df: pd.DataFrame) -> pd.DataFrame:
        return _of_model(df, model, revision)

    s, out = slug(model, revision), []
    by_context, exposure, medians = mine(data.by_context), mine(data.exposure), mine(data.medians)
    separation, cards, metrics = mine(data.separation), mine(data.cards), mine(data.metrics)
    if len(by_context):
        out.append("<h3>Memorization vs context length</h3>")
        out.append(_img(context_figure(by_context, model, revision), folder, f"context_{s}.png",
                        "memorized share per prompt length and category"))
        t = by_context.assign(share=_intervals(by_context, "share"))
        t = t.pivot(index="category", columns="context_length", values="share").reindex(
            [c for c in EVIDENCE_ORDER if c in set(t["category"])])
        t.columns = [f"k = {k}" for k in t.columns]
        out.append(_table(t.reset_index(), left=["category"]))
        out.append("<p class=note>Share of sequences whose continuation greedy decoding reproduces from the last k "
                   "prompt tokens (memorization.memorized_at); in brackets its Wilson interval.</p>")
    if len(exposure):
        out.append("<h3>Memorization vs exposure and recency</h3>")
        out.append(_img(exposure_figure(exposure, model, revision), folder, f"exposure_{s}.png",
                        "memorized share per exposure and recency bin"))
        if len(medians):
            m = medians[medians["category"] == "all"].sort_values(["measure", "memorized"], ascending=[True, False])
            out.append(_table(m.assign(memorized=m["memorized"].map({True: "memorized", False: "other"}),
                                       median=_intervals(m, "median"))[
                ["measure", "memorized", "sequences", "median"]], left=["measure", "memorized"]))
            out.append("<p class=note>Medians over all categories (per category in table exposure_medians), in "
                       "brackets the order-statistic interval; steps since the last exposure exist only for sequences "
                       "seen by the checkpoint.</p>")
    if len(separation):
        out.append("<h3>How well each score separates memorized from other sequences</h3>")
        out.append(_img(separation_figure(separation, model, revision), folder, f"separation_{s}.png",
                        "ROC-AUC of each score per category"))
        t = separation.assign(auc=_intervals(separation, "roc_auc"))
        t = t.pivot(index="score", columns="category", values="auc")
        t = t[[c for c in EVIDENCE_ORDER if c in t.columns]]
        out.append(_table(t.reset_index(), left=["score"]))
        n = separation[separation["category"] == "all"]
        out.append(f"<p class=note>ROC-AUC on {_fmt(int(n['n_rows'].max()) if len(n) else 0)} sampled sequences "
                   "(taxonomy.max_rows), each score oriented so that memorized sequences are expected higher "
                   "(loss and zlib_ratio negated); in brackets the bootstrap interval.</p>")
    exposed = metrics[metrics["predictor"].str.endswith("+exposure")] if len(metrics) else metrics
    skipped = data.exposure_skipped.get(f"{model}@{revision}")
    if len(exposed):
        out.append("<h3>With and without exposure features</h3>")
        rows = metrics[(metrics["subset"] == "aggregate") & metrics["metric"].isin(["f1", "pr_auc", "roc_auc",
                                                                                     "log_loss"])]
        rows = rows[rows["predictor"].isin(["baseline", "taxonomic", "baseline+exposure", "taxonomic+exposure"])]
        t = rows.assign(value=_intervals(rows, "value"))
        t = t.pivot(index="predictor", columns="metric", values="value").join(
            rows.groupby("predictor")["n_rows"].max().rename("test rows"))
        out.append(_table(t.reset_index(), left=["predictor"]))
        out.append(_comparison_html(mine(data.comparison).pipe(
            lambda d: d[d["predictor"].str.endswith("+exposure")] if len(d) else d)))
        out.append("<p class=note>The +exposure fits add exposures_before and steps_since_last_exposure to the "
                   "features (taxonomy.features=upstream+exposure); sequences never seen by the checkpoint have no "
                   "recency and are left out of them, so their test rows differ from the upstream fit's.</p>")
    elif skipped:
        out.append(f"<p class=note>No fit with exposure features: {html.escape(skipped)}.</p>")
    if len(cards):
        out.append("<h3>Memorized examples</h3>")
        for r in cards.sort_values(["category", "sequence_id"]).itertuples():
            docs = list(r.documents) if r.documents is not None else []
            where = ("<ul class=note>" + "".join(f"<li>{html.escape(str(d))}</li>" for d in docs) + "</ul>") if docs \
                else "<p class=note>no document listed (table sequence_occurrences: stage duplicates)</p>"
            out.append(f'<div class="card"><pre>{html.escape(str(r.text))}</pre><p>{html.escape(str(r.category))}'
                       f" · sequence {_fmt(r.sequence_id)} · {_fmt(r.sequence_duplicates)} duplicates in the stream"
                       " · "
                       f"{_fmt(r.exposures_before)} exposures before the checkpoint, first at step "
                       f"{_fmt(r.first_seen_step)}, last at step {_fmt(r.last_seen_step)}</p>"
                       f"<p class=note>documents where it occurs (up to 10, earliest first):</p>{where}</div>")
    return "\n".join(out)


LOCALIZED = (*CATEGORIES, *GUESS_RECALL[1:])  # the columns of the rewinding heat map: both taxonomies' memorized


def rewinding_losses(loc: pd.DataFrame) -> pd.DataFrame:
    """localization rows with lost = memorized - still_memorized, its share and the share's Wilson interval."""
    lost = loc["memorized"] - loc["still_memorized"]
    lo, hi = wilson(lost, loc["memorized"])
    return loc.assign(lost=lost, lost_share=lost / loc["memorized"].replace(0, np.nan), ci_low=lo, ci_high=hi)


def localization_figure(loc: pd.DataFrame, model: str, revision: str):
    """Heat map: the share of each category's memorized sequences lost by rewinding each layer's attention, MLP or
    whole layer, with lost / memorized written in each cell."""
    plt = _plt()
    rows = rewinding_losses(loc)
    order = [(layer, block) for layer in sorted(rows["layer"].unique()) for block in ("attention", "mlp", "layer")]
    cols = [c for c in LOCALIZED if c in set(rows["category"])]
    grid = rows.set_index(["layer", "block", "category"])
    values = np.full((len(order), len(cols)), np.nan)
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2.8, 0.42 * len(order) + 1.6))
    for i, key in enumerate(order):
        for j, c in enumerate(cols):
            if (*key, c) in grid.index:
                r = grid.loc[(*key, c)]
                values[i, j] = 100 * r["lost_share"] if r["memorized"] else np.nan
                ax.text(j, i, f"{int(r['lost'])}/{int(r['memorized'])}", ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > 60 else "black")
    im = ax.imshow(values, cmap="Reds", vmin=0, vmax=100, aspect="auto")
    ax.set(xticks=range(len(cols)), xticklabels=cols, yticks=range(len(order)),
           yticklabels=[f"layer {layer} {block}" for layer, block in order],
           xlabel="category of the memorized sequences")
    fig.colorbar(im, ax=ax, label="memorized sequences lost (%)")
    rewound = loc["rewound_to"].iloc[0] if len(loc) else "?"
    ax.set_title(f"{model}@{revision}: memorized sequences lost by rewinding one block to {rewound}", fontsize=10)
    fig.tight_layout()
    return fig


def _localization_html(data: ReportData, model: str, revision: str, folder: Path) -> str:
    """Where in the model: the rewinding heat map and its table with intervals, and the gradient shares."""
    loc, grads = _of_model(data.localization, model, revision), _of_model(data.gradients, model, revision)
    if not len(loc) and not len(grads):
        return ""
    out = ["<h3>Where in the model</h3>"]
    if len(loc):
        s = slug(model, revision)
        out.append(_img(localization_figure(loc, model, revision), folder, f"localization_{s}.png",
                        "memorized sequences lost by rewinding each block"))
        rows = rewinding_losses(loc[loc["block"] != "layer"])
        rows = rows.assign(lost=[f"{int(a)} of {int(b)}: " + _interval(v, lo, hi) for a, b, v, lo, hi in
                                 zip(rows["lost"], rows["memorized"], rows["lost_share"], rows["ci_low"],
                                     rows["ci_high"])])
        pivot = rows.pivot(index=["layer", "block"], columns="category", values="lost")
        out.append(_table(pivot.reindex(columns=[c for c in LOCALIZED if c in pivot.columns]).reset_index(),
                          left=["block"]))
        out.append(f"<p class=note>Each block of one layer takes its weights from checkpoint "
                   f"{html.escape(str(loc['rewound_to'].iloc[0]))}, every other weight stays; a memorized sequence "
                   "is lost when greedy decoding no longer reproduces its continuation. In brackets the Wilson "
                   "interval of the lost share. A block whose rewinding loses many holds them (Maini et al. 2023); a "
                   "small model with few memorized sequences per category tells little.</p>")
    if len(grads):
        mem = grads[grads["memorized"].astype(bool)].sort_values(["layer", "block"])
        counts = grads.groupby(["layer", "block", "category"])["n"].sum()
        mem = mem.assign(share=[_interval(v, lo, hi) + f" (rows {n / counts[(layer, block, c)]:.2f})"
                                for v, lo, hi, n, layer, block, c in zip(
                                    mem["share"], mem["ci_low"], mem["ci_high"], mem["n"], mem["layer"],
                                    mem["block"], mem["category"])])
        pivot = mem.pivot(index=["layer", "block"], columns="category", values="share")
        out.append(_table(pivot.reindex(columns=[c for c in (*CATEGORIES, "all") if c in pivot.columns])
                          .reset_index(), left=["block"]))
        out.append("<p class=note>Gradient accounting: each block's share of the summed per-sequence gradient norms "
                   "of the continuation loss that the memorized sequences of a category contribute, with its "
                   "delta-method interval; in parentheses their share of the category's rows. A share below the "
                   "rows' share: memorized sequences pull less on that block than the others.</p>")
    return "\n".join(out)


def _guess_recall_html(contingency: pd.DataFrame) -> str:
    """The paper's categories against Guess / Recall (beyond.md §4) for one model@revision: sequences per pair."""
    if not len(contingency):
        return ""
    pivot = (contingency.fillna({"category": "(none)", "category_guess_recall": "(none)"})
             .pivot_table(index="category", columns="category_guess_recall", values="sequences", aggfunc="sum",
                          fill_value=0))
    order = [c for c in (*GUESS_RECALL, "(none)") if c in pivot.columns]
    rows = [c for c in (*CATEGORIES, "(none)") if c in pivot.index]
    table = pivot.reindex(index=rows, columns=order).reset_index()
    return ("<h3>A second taxonomy: Guess / Recall</h3><p class=note>Dentan et al. (2025): a memorized sequence is "
            "a guess when it repeats or increments, or when its continuation overlaps its prompt (ROUGE-L or ROUGE-3 "
            "F1 of the token ids at least taxonomy.guess_rouge_threshold), a recall otherwise. Sequences per pair of "
            "categories ((none): a value a rule needs is missing); predictor guess_recall, where fitted, splits every "
            "sequence, memorized or not, by the same rule:</p>" + _table(table, left=["category"]))


def _comparison_html(versus: pd.DataFrame) -> str:
    """The paired comparison with the baseline: a sentence per predictor, then every metric's difference."""
    if versus.empty:
        return ""
    sentences = []
    for predictor in PREDICTORS[1:]:
        rows = versus[versus["predictor"] == predictor]
        if len(rows):
            sentences.append(html.escape(verdict(predictor, {r["metric"]: r for r in rows.to_dict("records")})))
    table = versus[["predictor", "metric", "difference", "ci_low", "ci_high", "p_value", "n_test"]]
    return ("<p>" + ".<br>".join(sentences) + ".</p><p class=note>Differences are predictor minus baseline "
            "(log-loss: lower is better), each on the same bootstrap resamples of the test rows; a difference is "
            "claimed only where its interval excludes 0.</p>" + _table(table, left=["predictor", "metric"]))


def _weight_notes(weights: pd.DataFrame) -> str:
    """Coefficients are associations; which weights are unstable (VIF); the models left unfitted (with why) and the
    features left out of fitted models (constant, missing)."""
    parts = ["coefficients are associations between correlated features, not causes: a feature's weight is its "
             "effect with the others held fixed"]
    inflated = weights[(weights["status"] == "fitted") & (weights["vif"].astype(float) > 10)]
    for (pred, subset), g in inflated.groupby(["predictor", "subset"]):
        names = ", ".join(f"{DISPLAY_NAMES.get(r.feature, r.feature)} ({r.vif:,.0f})" for r in g.itertuples())
        parts.append(f"{pred}/{subset}: unstable weights, variance inflation factor above 10: {html.escape(names)}")
    unfitted = weights[weights["status"] == "not_fitted"].drop_duplicates(["predictor", "subset"])
    parts += [f"{r.predictor}/{r.subset}: no model ({html.escape(str(r.note or 'not fitted'))}); its rows are "
              "scored by the baseline" for r in unfitted.itertuples()]
    left_out = weights[weights["status"].isin(["constant", "missing"])]
    for (pred, subset, status), f in left_out.groupby(["predictor", "subset", "status"])["feature"]:
        names = ", ".join(DISPLAY_NAMES.get(x, x) for x in sorted(set(f)))
        parts.append(f"{pred}/{subset}: {status} feature(s) left out ({html.escape(names)})")
    return "<p class=note>" + "; ".join(parts) + ".</p>" if parts else ""


def write_report(data: ReportData, folder: Path) -> Path:
    """Draw every figure into `folder` (PNGs) and write `folder`/index.html; returns the page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    memorized = data.categories.groupby(["model", "revision"])["memorized"].sum()
    keys = sorted(data.models or memorized.index)
    fitted = set(zip(data.metrics["model"], data.metrics["revision"])) if len(data.metrics) else set()
    unfitted = [f"{m}@{r} ({int(memorized[(m, r)])} memorized)" for m, r in keys if (m, r) not in fitted]
    nav = " ".join(f'<a href="#{slug(m, r)}">{html.escape(m)}@{html.escape(r)}</a>' for m, r in keys)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(data.title)}</title>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(data.title)}</h1>",
             "<p class=sub>What each model memorized from its training data, and why: every scored sequence sorted "
             f"into <b>recitation</b> (its continuation occurs more than {data.duplicate_threshold} times in the "
             "training stream), <b>reconstruction</b> (templated: incrementing or repeating text) or "
             "<b>recollection</b> (the rest), and a logistic model per category predicting memorization from corpus "
             "statistics, near matches, perplexities and intrinsic properties; beside it, on the same held-out "
             "sequences, one model for all sequences (the baseline), one per Guess / Recall group and gradient-boosted "
             "trees (as taxonomy.taxonomies and taxonomy.trees ask).</p>",
             f"<nav>{nav}{' <a href=#forecast>forecasting</a>' if len(data.forecast) else ''}</nav>"]
    if unfitted:
        parts.append("<p class=note>No taxonomic model for " + ", ".join(html.escape(u) for u in unfitted) +
                     ": fewer memorized (or non-memorized) sequences than taxonomy.min_memorized. Their sections "
                     "show the categories, correlations and the divergence curve; they appear in the forecasts "
                     "below.</p>")
    for model, revision in keys:
        parts.append(_model_section(data, model, revision, folder))
    parts.append('<h2 id="forecast">Forecasting memorization across models</h2>')
    every = data.forecast[~data.forecast["restricted"].astype(bool)]
    seen = data.forecast[data.forecast["restricted"].astype(bool)]
    if len(data.family) and len(every):
        memorized = data.categories.groupby(["model", "revision"], as_index=False)["memorized"].sum()
        parts.append(_img(family_figure(data.family, memorized, every), folder, "family.png",
                          "the trained family: memorization over training and forecasts"))
        parts.append("<p class=note>The trained family (train_model.sizes) learns from the same stream in the same "
                     "order; every checkpoint is scored. Biderman et al.'s finding to compare: high precision, low "
                     "recall for small models and early checkpoints, recall rising as training proceeds.</p>")
    if len(every):
        parts.append(_img(forecast_figure(every), folder, "forecast.png", "forecast heatmap"))
        parts.append(f"<details><summary>every ordered pair ({len(every)})</summary>"
                     "<p class=note>In brackets: the Wilson interval (taxonomy.ci_level) of each proportion. Grey "
                     f"rows: A memorized fewer than {FORECAST_MIN_MEMORIZED} of the sequences both scored, so its "
                     "precision and recall rest on a handful of sequences.</p>"
                     + _forecast_table(every) + "</details>")
        if len(seen):
            parts.append(f"<details><summary>restricted to the sequences both had trained on ({len(seen)} "
                         "pairs)</summary><p class=note>As Biderman et al. compare checkpoints: only sequences "
                         "seen by both checkpoints (seen_by_checkpoint, from training.rows_per_step).</p>"
                         + _forecast_table(seen) + "</details>")
        parts.append("<p class=note>Biderman et al. (2023), Pythia: 70M predicting 12B, precision 0.956, recall "
                     "0.197; 12B's own checkpoints predicting its final state, recall 0.500 rising to 0.916.</p>")
    else:
        parts.append("<p>Only one model@revision was scored: score two or more (model.names, or the trained "
                     "family's checkpoints) to see how well one predicts another.</p>")
    if len(data.capacity):
        from semmem.training.capacity import plateau

        parts.append('<h2 id="capacity">Capacity: bits per parameter</h2>')
        parts.append(_img(capacity_figure(data.capacity), folder, "capacity.png", "capacity curves"))
        parts.append(_table(plateau(data.capacity), left=["model", "dtype"]))
        parts.append("<p class=note>Models trained on uniformly random sequences store what they reproduce, nothing "
                     "else; Morris et al. (2025) measure about 3.6 bits per parameter (3.51 in bf16, 3.83 in fp32) "
                     "for GPT-style models trained to convergence. memorized_bits floors each sequence's compression at 0; "
                     "control_bits is the same count on as many random sequences the model never saw (its noise "
                     "floor).</p>")
    parts.append("<h2>Provenance</h2><ul class=note>" + "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
                 + "</ul></body></html>")
    page = folder / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
