"""The short answer printed at the end of `semmem run` and by `semmem summary`: read from the tables with SQL
(DataFusion), never from numbers a run held in memory."""

from __future__ import annotations

import math
from pathlib import Path

from semmem import storage
from semmem.lineage import stale_inputs
from semmem.scoring.models import checkpoint_step
from semmem.sql import run_sql
from semmem.tables import published_version, read_publications
from semmem.taxonomy.vocabulary import CATEGORIES, GUESS_RECALL, PREDICTORS, fitted_revisions
from semmem.taxonomy.words import verdict


def summary_text(warehouse: str | Path) -> str:
    """Per model@revision: sequences, memorized, per-category counts and memorized rate, F1 and PR-AUC of every
    predictor (baseline, taxonomic, guess_recall, trees, best_partition) with their intervals and each one's paired
    difference from the baseline; then the report's path. Empty when nothing was combined.
    Reads small tables only (category_counts, the taxonomy's): never a scan of combined on this machine."""
    root = storage.normalize(warehouse)
    pubs = read_publications(root)
    if published_version(root, "combined", pubs) is None:
        return ""
    stale = stale_inputs(root, "combined", pubs)
    if stale:
        return "\n".join(["", "What the model memorized, and why: not shown, the answer's tables are not current:",
                          *[f"  {why}" for why in stale]])
    if published_version(root, "category_counts", pubs) is None:  # a warehouse combined before the table existed
        return "\n".join(["", "What the model memorized, and why: not shown, table category_counts is missing: rerun "
                               "stage combine (semmem run --force combine)"])
    cats = run_sql(root, "SELECT model, revision, category, sequences AS n, memorized AS m FROM category_counts "
                         "ORDER BY model, revision, category").to_pylist()
    contingency = run_sql(root, "SELECT model, revision, category, category_guess_recall AS g, sequences AS n FROM "
                                "taxonomy_contingency").to_pylist() \
        if published_version(root, "taxonomy_contingency", pubs) is not None else []
    metrics, compared = [], []
    taxonomy_ran = published_version(root, "taxonomy_metrics", pubs) is not None
    late = [why for t in ("taxonomy_metrics", "memorization_forecast") for why in stale_inputs(root, t, pubs)]
    taxonomy_ran = taxonomy_ran and not late
    if taxonomy_ran:
        metrics = run_sql(root, "SELECT model, revision, predictor, metric, value, ci_low, ci_high FROM "
                                "taxonomy_metrics WHERE subset = 'aggregate' AND metric IN ('f1', 'pr_auc') "
                                "ORDER BY model, revision, predictor, metric").to_pylist()
        if published_version(root, "taxonomy_comparison", pubs) is not None:
            compared = run_sql(root, "SELECT model, revision, predictor, metric, difference, ci_low, ci_high, "
                                     "p_value, n_test FROM taxonomy_comparison").to_pylist()
    evidence = _evidence(root, pubs)
    localization = _localization(root, pubs)
    fitted = {(r["model"], r["revision"]) for r in metrics}
    models = sorted(dict.fromkeys((r["model"], r["revision"]) for r in cats), key=_revision_order)
    shown = fitted | set(fitted_revisions(models, "final"))  # in detail; other checkpoints get one line
    lines = ["", "What the model memorized, and why:"]
    for model, revision in models:
        rows = {r["category"]: r for r in cats if (r["model"], r["revision"]) == (model, revision)}
        n = sum(r["n"] for r in rows.values())
        m = sum(r["m"] for r in rows.values())
        lines.append(f"  {model}@{revision}: {n:,} sequences, {m:,} memorized ({100 * m / max(1, n):.2f}%)")
        if (model, revision) not in shown:
            continue  # an earlier checkpoint: one line is enough
        for c in CATEGORIES:
            r = rows.get(c, {"n": 0, "m": 0})
            rate = f"{100 * r['m'] / r['n']:.1f}% memorized" if r["n"] else "-"
            share = f"{100 * r['m'] / m:.1f}% of memorized" if m else "-"
            lines.append(f"    {c:<15} {r['n']:>9,} sequences  {r['m']:>8,} memorized  {rate:<18} {share}")
        if None in rows:
            lines.append(f"    {'(no category)':<15} {rows[None]['n']:>9,} sequences: a feature the rule needs is NULL")
        pairs = {(r["category"], r["g"]): r["n"] for r in contingency
                 if (r["model"], r["revision"]) == (model, revision)}
        if pairs:
            guess, recall = (sum(n for (_, g), n in pairs.items() if g == which) for which in GUESS_RECALL[1:])
            split = "; ".join(f"{c} {pairs.get((c, GUESS_RECALL[1]), 0):,}/{pairs.get((c, GUESS_RECALL[2]), 0):,}"
                              for c in CATEGORIES)
            lines.append(f"    {'guess/recall':<15} {guess:>9,} guess  {recall:>8,} recall   (beyond.md §4; "
                         f"guess/recall by category: {split})")
        mine = [r for r in metrics if (r["model"], r["revision"]) == (model, revision)]
        for predictor in PREDICTORS:
            vals = {r["metric"]: r for r in mine if r["predictor"] == predictor}
            if vals:
                lines.append(f"    {predictor:<15} " + "  ".join(_with_ci(k, vals.get(k)) for k in ("f1", "pr_auc")))
        for predictor in PREDICTORS[1:]:
            versus = {r["metric"]: r for r in compared
                      if (r["model"], r["revision"], r["predictor"]) == (model, revision, predictor)}
            if versus:
                lines.append(f"    {verdict(predictor, versus)}")
        if taxonomy_ran and not mine:
            lines.append("    no taxonomic model: too few memorized (or other) sequences (taxonomy.min_memorized)")
        lines += _evidence_lines(evidence, model, revision)
        lines += _localization_lines(localization, model, revision)
    lines += [f"  not shown: {why}" for why in evidence.get("stale", []) + localization.get("stale", [])]
    lines += [f"  not shown: {why}" for why in late]
    if published_version(root, "memorization_forecast", pubs) is not None and not late and len(shown) > 1:
        forecast = run_sql(root, "SELECT model_a, revision_a, model_b, revision_b, precision, precision_ci_low, "
                                 "precision_ci_high, recall, recall_ci_low, recall_ci_high FROM memorization_forecast "
                                 "WHERE NOT restricted ORDER BY model_b, revision_b, model_a, revision_a").to_pylist()

        def est(r: dict, stat: str) -> str:
            """The value with its Wilson interval; '-' alone where A (or B) memorized none of the common ones."""
            return _num(r[stat]) if _num(r[stat]) == "-" else \
                f"{_num(r[stat])} [{_num(r[f'{stat}_ci_low'])}, {_num(r[f'{stat}_ci_high'])}]"

        pairs = [r for r in forecast if (r["model_a"], r["revision_a"]) in shown
                 and (r["model_b"], r["revision_b"]) in shown]
        if pairs:
            lines.append("  forecasts ('memorized by A' predicting 'memorized by B', Wilson intervals):")
            lines += [f"    {r['model_a']}@{r['revision_a']} -> {r['model_b']}@{r['revision_b']}: precision "
                      f"{est(r, 'precision')}, recall {est(r, 'recall')}" for r in pairs]
        for model, revision in sorted(shown, key=_revision_order):
            earlier = sorted((r for r in forecast if r["model_a"] == model == r["model_b"]
                              and r["revision_b"] == revision and (model, r["revision_a"]) not in shown),
                             key=lambda r: _revision_order((model, r["revision_a"])))
            if earlier:
                picked = [earlier[i] for i in sorted({round(k * (len(earlier) - 1) / 7) for k in range(8)})]
                more = f" ({len(picked)} of {len(earlier)}; all in table memorization_forecast)" \
                    if len(picked) < len(earlier) else ""
                lines.append(f"  {model}'s earlier checkpoints predicting {model}@{revision}{more}:")
                lines += [f"    {r['revision_a']}: recall {est(r, 'recall')}, precision {est(r, 'precision')}"
                          for r in picked]
    page = storage.join(root, "report", "index.html")
    if storage.is_file(page):
        lines += ["", f"report: {page}"]
    return "\n".join(lines)


def _current(root: str, pubs, queries: dict[str, str]) -> dict:  # noqa: ANN001 - the publication log
    """{table: the rows of its query} when every table of `queries` is published and current; {"stale": [why...]}
    when one is not current; {} when one was never made."""
    if any(published_version(root, t, pubs) is None for t in queries):
        return {}
    stale = list(dict.fromkeys(why for t in queries for why in stale_inputs(root, t, pubs)))
    if stale:
        return {"stale": stale}
    return {t: run_sql(root, q).to_pylist() for t, q in queries.items()}


def _evidence(root: str, pubs) -> dict:  # noqa: ANN001 - the publication log
    """The rows of memorization_by_context and exposure_medians (category all for the medians) when stage evidence
    published them and they are current (`_current`)."""
    return _current(root, pubs, {
        "memorization_by_context": "SELECT model, revision, category, context_length, share, ci_low, ci_high "
                                   "FROM memorization_by_context ORDER BY context_length",
        "exposure_medians": "SELECT model, revision, memorized, measure, sequences, median, ci_low, ci_high "
                            "FROM exposure_medians WHERE category = 'all'"})


def _evidence_lines(evidence: dict, model: str, revision: str) -> list[str]:
    """The share memorized at each context length per category, and the median exposures and recency of memorized
    vs other sequences, each with its interval (table memorization_by_context: Wilson; exposure_medians: order
    statistics)."""
    lines = []
    context = [r for r in evidence.get("memorization_by_context", [])
               if (r["model"], r["revision"]) == (model, revision)]
    lengths = sorted({r["context_length"] for r in context})
    if lengths:
        lines.append(f"    memorized from the last k prompt tokens (k = {', '.join(map(str, lengths))}), "
                     "% of sequences:")
        for c in (*CATEGORIES, "all"):
            by_k = {r["context_length"]: r for r in context if r["category"] == c}
            if by_k:
                lines.append(f"      {c:<15} " + "  ".join(_percent(by_k.get(k)) for k in lengths))
    medians = {(r["measure"], r["memorized"]): r for r in evidence.get("exposure_medians", [])
               if (r["model"], r["revision"]) == (model, revision)}
    for measure, label in (("exposures_before", "exposures before the checkpoint"),
                           ("steps_since_last_exposure", "steps since the last exposure")):
        mem, other = medians.get((measure, True)), medians.get((measure, False))
        if mem or other:
            lines.append(f"    median {label}: memorized {_median(mem)}, other {_median(other)}")
    return lines


def _localization(root: str, pubs) -> dict:  # noqa: ANN001 - the publication log
    """The rows of table localization (paper taxonomy) when stage localize published it and it is current
    (`_current`)."""
    return _current(root, pubs, {"localization": "SELECT model, revision, rewound_to, layer, block, category, "
                                                 "memorized, still_memorized FROM localization "
                                                 "WHERE taxonomy = 'paper'"})


def _localization_lines(localization: dict, model: str, revision: str) -> list[str]:
    """One line: for recitation and recollection, the layer whose rewinding loses the most of the final checkpoint's
    memorized sequences, with the Wilson interval of the lost share and what its attention and MLP alone lose."""
    from semmem.taxonomy.metrics import wilson

    rows = [r for r in localization.get("localization", []) if (r["model"], r["revision"]) == (model, revision)]
    if not rows:
        return []
    parts = []
    for category in ("recitation", "recollection"):
        mine = {(r["layer"], r["block"]): r for r in rows if r["category"] == category}
        layers = [r for (_, block), r in mine.items() if block == "layer" and r["memorized"]]
        if not layers:
            parts.append(f"{category}: none memorized")
            continue
        worst = max(layers, key=lambda r: (r["memorized"] - r["still_memorized"], -r["layer"]))
        lost, n = worst["memorized"] - worst["still_memorized"], worst["memorized"]
        lo, hi = (float(v) for v in wilson(lost, n))
        blocks = [(label, mine.get((worst["layer"], block))) for block, label in (("attention", "attention"),
                                                                                  ("mlp", "MLP"))]
        alone = ", ".join(f"its {label} alone {r['memorized'] - r['still_memorized']}" for label, r in blocks if r)
        parts.append(f"{category}: layer {worst['layer']}, {lost} of {n} lost ({100 * lost / n:.1f}% "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}]; {alone})")
    return [f"    rewinding one layer to {rows[0]['rewound_to']} loses the most {'; '.join(parts)}"]


def _percent(row: dict | None) -> str:
    if row is None or row["share"] is None or math.isnan(row["share"]):
        return "-"
    return f"{100 * row['share']:.1f}% [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"


def _median(row: dict | None) -> str:
    if row is None:
        return "-"
    ci = f" [{row['ci_low']:g}, {row['ci_high']:g}]" if row["ci_low"] is not None and not math.isnan(row["ci_low"]) \
        else " (too few for an interval)"
    return f"{row['median']:g}{ci} of {row['sequences']:,}"


def _with_ci(name: str, row: dict | None) -> str:
    label = {"f1": "F1", "pr_auc": "PR-AUC"}[name]
    if row is None or row["value"] is None or math.isnan(row["value"]):
        return f"{label} -"
    ci = f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row["ci_low"] is not None else ""
    return f"{label} {row['value']:.3f}{ci}"


def _num(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.3f}"


def _revision_order(key: tuple[str, str]) -> tuple:
    """Models by name; their step<N> revisions by N, other revisions first."""
    model, revision = key
    step = checkpoint_step(revision)
    return model, -1 if step is None else step, revision


def texts_text(warehouse: str | Path, limit: int = 50) -> str:
    """The answer of `semmem texts`, read from text_answers and texts: per text and model@revision, memorized or
    not, the longest memorized span (tokens from where, characters), the best window's matched prefix, the lowest
    continuation loss, and the most occurrences of one of its windows in the training stream."""
    root = storage.normalize(warehouse)
    n = run_sql(root, "SELECT count(*) AS n FROM text_answers").to_pylist()[0]["n"]
    rows = run_sql(root, "SELECT t.text_id, t.id, t.path, t.line, t.n_tokens, a.model, a.revision, a.memorized, "
                         "a.span_tokens, a.span_token_start, a.span_char_start, a.span_char_end, "
                         "a.best_matched_prefix, a.lowest_loss, a.stream_count "
                         "FROM text_answers a JOIN texts t ON a.text_id = t.text_id "
                         f"ORDER BY t.text_id, a.model, a.revision LIMIT {limit}").to_pylist()
    head = (f"  {'text':>6}  {'where':<24}  {'tokens':>6}  {'model@revision':<24}  {'memorized':<9}  "
            f"{'longest memorized span':<42}  {'best prefix':>11}  {'loss':>6}  {'in training data':>16}")
    lines = ["", f"Did the model memorize these texts? ({n:,} text x model rows in {root})", head]
    for r in rows:
        where = f"{Path(r['path']).name}:{r['line']}"
        span = (f"{r['span_tokens']} tokens from token {r['span_token_start']}, chars "
                f"{r['span_char_start']}-{r['span_char_end']}" if r["memorized"] else "-")
        count = "-" if r["stream_count"] is None else f"{r['stream_count']:,} times"
        text = str(r["text_id"] if r["id"] is None else r["id"])
        lines.append(f"  {text:>6}  {where:<24}  {r['n_tokens']:>6}  {r['model'] + '@' + r['revision']:<24}  "
                     f"{'yes' if r['memorized'] else 'no':<9}  {span:<42}  "
                     f"{str(r['best_matched_prefix']) + ' tok':>11}  {_num(r['lowest_loss']):>6}  {count:>16}")
    if n > len(rows):
        lines.append(f"  ... {n - len(rows):,} more: semmem sql --warehouse {root} \"SELECT * FROM text_answers\"")
    return "\n".join(lines)
