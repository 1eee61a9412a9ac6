"""Stage `report`: the answer as one self-contained page, drawn from the small tables the stages before wrote."""

from __future__ import annotations

import logging

import pandas as pd
from pyspark.sql import functions as F

from semmem import storage
from semmem.stages.registry import StageContext, stage
from semmem.stages.taxonomy import EVIDENCE_TABLES, TAXONOMY_TABLES, examples
from semmem.tables import Warehouse
from semmem.taxonomy import fitted_revisions
from semmem.taxonomy.report import ReportData, write_report

log = logging.getLogger("semmem")
LOCALIZE_TABLES = ("localization", "gradient_shares")


@stage("report", inputs=("combined", "category_counts", "sequences", *TAXONOMY_TABLES), outputs=(),
       reads_also=("taxonomy_contingency", "model_family", "capacity", "embeddings", "code_scores",
                   *EVIDENCE_TABLES, *LOCALIZE_TABLES),
       config=("report", *(f"taxonomy.{k}" for k in ("duplicate_threshold", "revisions", "upstream_protocol",
                                                     "test_fraction", "bootstrap_rounds", "seed"))))
def report_stage(ctx: StageContext) -> None:
    """The answer as a page: <warehouse>/report/index.html (self-contained) with its figures as PNGs beside it."""
    wh, t = ctx.warehouse, ctx.cfg.taxonomy
    combined = wh.read("combined")
    cats = wh.read("category_counts").where(F.col("category").isNotNull()).toPandas()  # models x 3 rows
    data = ReportData(
        title="semmem: what the model memorized, and why",
        categories=cats,  # models x 4 x 4 rows at most, below
        contingency=_frame(wh, "taxonomy_contingency"),
        metrics=wh.read("taxonomy_metrics").toPandas(), weights=wh.read("taxonomy_weights").toPandas(),
        comparison=wh.read("taxonomy_comparison").toPandas(),
        correlations=wh.read("feature_correlations").toPandas(),
        search=wh.read("taxonomy_search").toPandas(),  # 810 candidates per model
        kl=wh.read("duplicate_threshold_kl").toPandas(), forecast=wh.read("memorization_forecast").toPandas(),
        examples=examples(combined, wh.read("sequences"), ctx.cfg.report.examples_per_category),
        duplicate_threshold=t.duplicate_threshold, notes=_provenance(ctx),
        models=fitted_revisions(sorted(set(zip(cats["model"], cats["revision"]))), t.revisions),
        family=_frame(wh, "model_family"), capacity=_frame(wh, "capacity"),
        localization=_frame(wh, "localization"), gradients=_frame(wh, "gradient_shares"),  # models x layers x 3 x 5
        **_evidence_tables(wh))
    folder = wh.side_path("report")
    with storage.replacing_folder(folder, marker="index.html") as staging:
        write_report(data, staging)
    log.info("report: %s", storage.join(folder, "index.html"))


def _evidence_tables(wh: Warehouse) -> dict:
    """The evidence tables as ReportData fields (bounded rows; empty where stage evidence has not run), and why a
    model@revision has no fit with exposure features (the taxonomy's commit metadata)."""
    fields = {"memorization_by_context": "by_context", "memorization_exposure": "exposure",
              "exposure_medians": "medians", "score_separation": "separation", "memorization_examples": "cards"}
    out: dict = {field: _frame(wh, name) for name, field in fields.items()}
    out["exposure_skipped"] = wh.commit_metadata("taxonomy_metrics").get("exposure_skipped", {})
    return out


def _frame(wh: Warehouse, name: str) -> pd.DataFrame:
    """A small table's rows, or an empty frame where the stage that writes it has not run."""
    return wh.read(name).toPandas() if wh.exists(name) else pd.DataFrame()


def _provenance(ctx: StageContext) -> list[str]:
    wh = ctx.warehouse
    lines = [f"warehouse {wh.root}"]
    for name in ("sequences", "combined", "taxonomy_metrics", "embeddings", "code_scores"):
        if wh.exists(name):
            meta = wh.commit_metadata(name)
            extra = ", ".join(f"{k}={v}" for k, v in meta.items() if k in ("model", "model_version", "classifier",
                                                                             "duplicate_threshold", "seed"))
            lines.append(f"table {name} version {wh.version(name)}" + (f" ({extra})" if extra else ""))
    t = ctx.cfg.taxonomy
    lines.append(f"taxonomy: duplicate_threshold={t.duplicate_threshold}, upstream_protocol={t.upstream_protocol}, "
                 f"test_fraction={t.test_fraction}, bootstrap_rounds={t.bootstrap_rounds}, seed={t.seed}")
    return lines
