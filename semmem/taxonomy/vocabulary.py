"""The taxonomy's vocabulary: model features, their upstream and display names, and the category rule (spec §3, §4).

- `MODEL_FEATURES`: the 13 continuous features + `is_templating` in upstream's column order (its
  `baseline_model.feature_names_in_`), under our column names; `UPSTREAM_NAMES` and `DISPLAY_NAMES` map them back.
- `category_column(duplicate_threshold)` (a Spark Column) and `categorize(df, duplicate_threshold)` (pandas) are the
  same rule: recitation if sequence_duplicates > threshold, else reconstruction if is_templating, else recollection.
  `guess_recall_column(rouge_threshold)` is the second taxonomy's (beyond.md §4): not_memorized / guess / recall;
  `guessable_column(rouge_threshold)` its predicate on every sequence, memorized or not (the guess_recall predictor's
  groups, GUESS_RECALL[1:]).
  A NULL in an input that decides the category gives NULL, so a stage that was not run never silently turns rows into
  reconstruction or recollection.
- `select_rows(df, features)`: leaves out features that are entirely NULL, drops rows with a NULL (or NaN, or
  infinite) label, category or used feature, and counts the drops by the column that caused them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from semmem.errors import ConfigError
from semmem.features.declarations import MODEL_COLUMNS
from semmem.scoring.models import checkpoint_step

CATEGORIES = ("recitation", "reconstruction", "recollection")
GUESS_RECALL = ("not_memorized", "guess", "recall")  # the second taxonomy (beyond.md §4), column category_guess_recall
GUESSABLE = "guessable"  # the column of guessable_column the taxonomy stage adds to the rows it fits
# the predictors of taxonomy_metrics / _comparison, in the order the summary and the report show them
PREDICTORS = ("baseline", "taxonomic", "guess_recall", "trees", "best_partition")
LABEL = "is_memorized"

# the taxonomic model's features (spec §2, §4.1), as semmem.features.declarations declares them: our column ->
# upstream's, in upstream's model order; the plot names of spec §4.5 for three of them, plain words for the rest
UPSTREAM_NAMES: dict[str, str] = {c.name: c.upstream for c in MODEL_COLUMNS}
MODEL_FEATURES: tuple[str, ...] = tuple(UPSTREAM_NAMES)
BINARY_FEATURES = frozenset(c.name for c in MODEL_COLUMNS if c.binary)  # used as 0/1, never standardized
# taxonomy.features=upstream+exposure adds these columns of `combined` (semmem.features.exposure) to the model's;
# a row never seen by its checkpoint has no recency (NULL) and is left out of that fit, like any row with a NULL
EXPOSURE_FEATURES: tuple[str, ...] = ("exposures_before", "steps_since_last_exposure")
FEATURE_SETS: dict[str, tuple[str, ...]] = {"upstream": MODEL_FEATURES,
                                            "upstream+exposure": (*MODEL_FEATURES, *EXPOSURE_FEATURES)}
DISPLAY_NAMES: dict[str, str] = {**{c.name: c.display for c in MODEL_COLUMNS}, "intercept": "Intercept",
                                 "exposures_before": "Exposures before checkpoint",
                                 "steps_since_last_exposure": "Steps since last exposure"}


def category_column(duplicate_threshold: int = 5) -> Column:
    """The category of spec §3 as a Spark Column over sequence_duplicates and is_templating (NULL inputs -> NULL)."""
    dup, tmpl = F.col("sequence_duplicates"), F.col("is_templating")
    none = F.lit(None).cast("string")
    return (F.when(dup.isNull(), none).when(dup > duplicate_threshold, F.lit(CATEGORIES[0]))
            .when(tmpl.isNull(), none).when(tmpl, F.lit(CATEGORIES[1])).otherwise(F.lit(CATEGORIES[2])))


def guessable_column(rouge_threshold: float = 0.5) -> Column:
    """Whether a sequence could be guessed rather than recalled (beyond.md §4), memorized or not, as a Spark Column:
    repeating, incrementing, or the prompt/continuation ROUGE-L or ROUGE-3 F1 at least `rouge_threshold`. A NULL
    that could decide it gives NULL (SQL's OR: TRUE OR NULL is TRUE, FALSE OR NULL is NULL)."""
    return (F.col("is_repeating") | F.col("is_incrementing") | (F.col("prefix_suffix_rouge_l") >= rouge_threshold)
            | (F.col("prefix_suffix_rouge_3") >= rouge_threshold))


def guess_recall_column(rouge_threshold: float = 0.5) -> Column:
    """The Guess / Recall category of beyond.md §4 (Dentan et al. 2025) as a Spark Column: not_memorized unless
    is_memorized; guess if memorized and `guessable_column`; recall for every other memorized sequence. A NULL that
    could decide it gives NULL."""
    memorized, guessable = F.col(LABEL), guessable_column(rouge_threshold)
    none = F.lit(None).cast("string")
    return (F.when(memorized.isNull(), none).when(~memorized, F.lit(GUESS_RECALL[0]))
            .when(guessable.isNull(), none).when(guessable, F.lit(GUESS_RECALL[1])).otherwise(F.lit(GUESS_RECALL[2])))


def categorize(df: pd.DataFrame, duplicate_threshold: int = 5) -> pd.Series:
    """`category_column` on a pandas frame: an object Series of category names or None."""
    dup = pd.to_numeric(df["sequence_duplicates"], errors="coerce")
    tmpl = df["is_templating"].astype("boolean")
    conditions = [dup.isna().to_numpy(), (dup > duplicate_threshold).fillna(False).to_numpy(dtype=bool),
                  tmpl.isna().to_numpy(), tmpl.fillna(False).to_numpy(dtype=bool)]
    out = np.select(conditions, [None, CATEGORIES[0], None, CATEGORIES[1]], default=CATEGORIES[2])
    return pd.Series(out, index=df.index, dtype=object, name="category")


def one_model(df: pd.DataFrame) -> tuple[str, str]:
    """The (model, revision) of a frame that must hold the rows of exactly one model@revision."""
    pairs = df[["model", "revision"]].drop_duplicates()
    if len(pairs) != 1:
        raise ConfigError(f"expected the rows of one model@revision, found {len(pairs)}: "
                          f"{pairs.head(5).to_dict('records')}; filter `combined` per model and revision")
    return str(pairs.iloc[0, 0]), str(pairs.iloc[0, 1])


@dataclass(frozen=True)
class RowSelection:
    """What `select_rows` kept and left out, for the stage's log and the weights table."""

    features: tuple[str, ...]  # used, in MODEL_FEATURES order
    missing: tuple[str, ...]  # absent or entirely NULL: left out of every model
    dropped_rows: dict[str, int]  # rows dropped for a NULL, by the first NULL column (label, category, feature order)
    n_input: int


def _unusable(values: pd.Series) -> np.ndarray:
    """NULL, NaN, or (in a numeric column) +-infinity: values a regression cannot use."""
    bad = values.isna().to_numpy(dtype=bool)
    if pd.api.types.is_float_dtype(values.dtype):
        bad |= np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan))
    return bad


def select_rows(df: pd.DataFrame, features: tuple[str, ...] = MODEL_FEATURES) -> tuple[pd.DataFrame, RowSelection]:
    """The rows complete in label, category and every usable feature; features that are entirely NULL are left out.

    Incomplete rows are dropped, never imputed: a NULL, NaN or infinite value in the label, the category or a used
    feature drops the row, counted under the first such column (`dropped_rows`); prepare_split logs the counts."""
    present = [f for f in features if f in df.columns and not _unusable(df[f]).all()]
    missing = tuple(f for f in features if f not in present)
    keep = np.ones(len(df), dtype=bool)
    dropped: dict[str, int] = {}
    for col in [LABEL, "category", *present]:
        null = _unusable(df[col]) & keep
        if null.any():
            dropped[col] = int(null.sum())
            keep &= ~null
    return df.loc[keep], RowSelection(tuple(present), missing, dropped, len(df))


def fitted_revisions(keys: list[tuple[str, str]], revisions: str) -> list[tuple[str, str]]:
    """The (model, revision) pairs the taxonomy fits: all, or per model its last step<N> checkpoint plus every
    revision that is not a step (hub branches, "local", "published")."""
    if revisions == "all":
        return keys
    steps = {key: checkpoint_step(key[1]) for key in keys}
    last: dict[str, int] = {}
    for (model, _), step in steps.items():
        if step is not None:
            last[model] = max(last.get(model, -1), step)
    return [key for key in keys if steps[key] is None or steps[key] == last[key[0]]]
