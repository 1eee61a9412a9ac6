"""The table catalog: every Delta table semmem writes, declared once.

Each table has one Arrow schema; the Spark StructType is derived from it, so the two can never disagree. Names and
columns are exactly those the issues and the reference spec use, because users query them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import pyarrow as pa
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from semmem.errors import TableError
from semmem.features.declarations import COMBINE_COLUMNS, FEATURE_BY_TABLE, FEATURE_TABLES, FEATURES, Feature

TOKENS = pa.list_(pa.int32())


@dataclass(frozen=True)
class TableDef:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    description: str
    partition_by: tuple[str, ...] = ()
    # Tables with one BIGINT column per configured threshold (semantic.thresholds), under these name prefixes: the
    # schema lists the defaults; `with_columns_of` gives the schema of the columns a DataFrame or a table really has.
    threshold_prefixes: tuple[str, ...] = ()

    @cached_property
    def spark_schema(self) -> StructType:
        return from_arrow_schema(self.schema)

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def with_columns_of(self, names: list[str]) -> TableDef:
        """This table with, for each threshold prefix, the columns among `names` in place of the default ones."""
        if not self.threshold_prefixes:
            return self
        fields: list[pa.Field] = []
        done: set[str] = set()
        for f in self.schema:
            prefix = next((p for p in self.threshold_prefixes if f.name.startswith(p)), None)
            if prefix is None:
                fields.append(f)
            elif prefix not in done:
                done.add(prefix)
                mine = sorted((n for n in names if n.startswith(prefix)), key=_threshold_of_column)
                if not mine:
                    raise TableError(f"table {self.name!r} needs at least one {prefix}<threshold> column; "
                                     f"found {names}")
                fields += [pa.field(n, pa.int64()) for n in mine]
        return replace(self, schema=pa.schema(fields))


def threshold_column(prefix: str, threshold: float) -> str:
    """The column of one threshold: semantic_matches_ + 0.8 -> semantic_matches_0_8 (0.95 -> ..._0_95)."""
    text = repr(float(threshold))
    if not 0.0 <= threshold <= 1.0 or "e" in text:
        raise TableError(f"threshold {threshold!r} must be a plain number in [0, 1]")
    return prefix + text.replace(".", "_")


def _threshold_of_column(name: str) -> float:
    return float(name.rsplit("_", 2)[-2] + "." + name.rsplit("_", 1)[-1])


def _table(name: str, fields: list[tuple[str, pa.DataType]], key: tuple[str, ...], description: str,
           partition_by: tuple[str, ...] = (), threshold_prefixes: tuple[str, ...] = ()) -> TableDef:
    return TableDef(name, pa.schema([pa.field(n, t) for n, t in fields]), key, description, partition_by,
                    threshold_prefixes)


def _feature_table(f: Feature) -> TableDef:
    return _table(f.table, [*f.key, *((c.name, c.type) for c in f.columns)], tuple(k for k, _ in f.key),
                  f.description, f.partition_by, (f.threshold_prefix,) if f.threshold_prefix else ())


def _combined_fields() -> list[tuple[str, pa.DataType]]:
    """The labels' and every per-sequence feature's columns that enter `combined`, then combine's own."""
    fields = [("model", pa.string()), ("revision", pa.string()), ("sequence_id", pa.int64()),
              ("pile_set_name", pa.string())]
    for f in (FEATURE_BY_TABLE["memorization"], *(FEATURE_BY_TABLE[t] for t in FEATURE_TABLES)):
        fields += [(c.name, c.type) for c in f.columns if c.combined]
    return [*fields, *COMBINE_COLUMNS]


TABLES: dict[str, TableDef] = {
    t.name: t
    for t in [
        # ingest
        _table("token_rows", [("row_id", pa.int64()), ("tokens", TOKENS)], ("row_id",),
               "The training stream: rows of stream.seq_length tokens, documents separated by EOD."),
        _table("stream_documents", [("row_id", pa.int64()), ("offset", pa.int32()), ("path", pa.string()),
                                    ("line", pa.int64()), ("pile_set_name", pa.string())], ("row_id", "offset"),
               "For jsonl input: where each document piece starts in token_rows (a document spanning rows has a "
               "piece at offset 0 of each), with the shard file and line it comes from."),
        _table("sequences", [("sequence_id", pa.int64()), ("tokens", TOKENS), ("text", pa.string()),
                             ("prompt_text", pa.string()), ("pile_set_name", pa.string())], ("sequence_id",),
               "Evaluation sequences: the first 64 tokens of each sampled row; prompt = tokens[0:32]."),
        _table("ingest_rejects", [("path", pa.string()), ("line", pa.int64()), ("reason", pa.string()),
                                  ("detail", pa.string())], ("path", "line"),
               "Input records skipped under ingest.on_bad_record=skip, with the reason."),
        _table("stream_sources", [("path", pa.string()), ("num_rows", pa.int64()), ("seq_length", pa.int32()),
                                  ("dtype", pa.string()), ("first_pointer", pa.int64()), ("bin_bytes", pa.int64())],
               ("path",), "For megatron input: the .bin file used in place as the training stream, and its layout "
                          "as validated against the .idx at ingest (later stages trust it; the .idx is not reread)."),
        _table("published_memorization", [("model", pa.string()), ("sequence_id", pa.int64()),
                                          ("memorization_score", pa.float64())], ("model", "sequence_id"),
               "Memorization scores that came with a sequences-parquet input (one column per model upstream)."),
        # corpus statistics, model scoring, near matches, code detection: semmem.features.declarations
        *(_feature_table(f) for f in FEATURES),
        _table("sequence_occurrences", [
            ("sequence_id", pa.int64()), ("rank", pa.int32()), ("row_id", pa.int64()), ("offset", pa.int32()),
            ("step", pa.int64()), ("document", pa.string()), ("source", pa.string())], ("sequence_id", "rank"),
               "Where each continuation occurs verbatim in the stream, earliest first (rank 1), at most "
               "duplicates.max_occurrences per sequence: row and offset, the training step (row_id // "
               "training.rows_per_step), the document (jsonl: file:line; megatron: .idx file:document index) and "
               "its Pile subset. Found by the scan that counts sequence_duplicates."),
        _table("sequence_exposures", [("sequence_id", pa.int64()), ("step", pa.int64()), ("occurrences", pa.int64())],
               ("sequence_id", "step"),
               "Exact occurrences of each continuation per training step (row_id // training.rows_per_step; steps "
               "without one absent): combine derives the exposure columns of each checkpoint from them."),
        _table("family_exposures", [("model", pa.string()), ("sequence_id", pa.int64()), ("step", pa.int64()),
                                    ("occurrences", pa.int64())], ("model", "sequence_id", "step"),
               "For each trained-family member: how often each continuation was trained at each optimizer step "
               "(steps from 0), from the window order its trainer recorded; an occurrence counts when it lies wholly "
               "inside a trained window, once per epoch."),
        _table("combined", _combined_fields(), ("model", "revision", "sequence_id"),
               "Every feature of every scored sequence, one row per model@revision, with its taxonomy category "
               "(spec §3): the table the taxonomic model is fitted on.", partition_by=("model", "revision"),
               threshold_prefixes=tuple(f.threshold_prefix for f in FEATURES if f.threshold_prefix)),
        _table("category_counts", [("model", pa.string()), ("revision", pa.string()), ("category", pa.string()),
                                   ("sequences", pa.int64()), ("memorized", pa.int64())],
               ("model", "revision", "category"),
               "Sequences and memorized ones per model@revision and category (NULL: a feature the rule needs is "
               "NULL), summed in Spark by combine: the summary and the report read these rows, never combined."),
        _table("taxonomy_contingency", [("model", pa.string()), ("revision", pa.string()),
                                        ("category", pa.string()), ("category_guess_recall", pa.string()),
                                        ("sequences", pa.int64())],
               ("model", "revision", "category", "category_guess_recall"),
               "Sequences per model@revision in each pair of the paper's category and the Guess / Recall category "
               "(beyond.md §4; NULL: a value the rule needs is NULL), summed in Spark by combine."),
        _table("token_frequencies", [("token_id", pa.int32()), ("frequency", pa.int64())], ("token_id",),
               "Corpus count of every token id over the whole stream."),
        _table("model_family", [
            ("model", pa.string()), ("revision", pa.string()), ("size", pa.string()), ("num_parameters", pa.int64()),
            ("hidden_size", pa.int32()), ("num_layers", pa.int32()), ("num_heads", pa.int32()), ("step", pa.int64()),
            ("steps", pa.int64()), ("fraction", pa.float64()), ("tokens_seen", pa.int64()), ("loss", pa.float64()),
            ("seconds", pa.float64())], ("model", "revision"),
            "The trained family: one row per size and checkpoint (train_model.sizes x train_model.checkpoints)."),
        _table("capacity", [
            ("model", pa.string()), ("params", pa.int64()), ("dtype", pa.string()), ("seed", pa.int64()),
            ("dataset_sequences", pa.int64()), ("dataset_bits", pa.float64()), ("memorized_bits", pa.float64()),
            ("bits_per_param", pa.float64()), ("memorized_bits_per_token", pa.float64()),
            ("control_bits", pa.float64()), ("final_loss", pa.float64()), ("loss_tail", pa.list_(pa.float64())),
            ("steps", pa.int64()), ("converged", pa.bool_()), ("seconds", pa.float64()), ("in_plateau", pa.bool_()),
            ("capacity_bits_per_param", pa.float64()), ("capacity_bits_per_param_std", pa.float64()),
            ("capacity_note", pa.string())], ("model", "dtype", "seed", "dataset_sequences"),
            "Morris et al. 2025: bits a model stores of uniformly random sequences, per dataset size, dtype and seed, "
            "each run trained until its loss stalls (memorized_bits floored per sequence; memorized_bits_per_token "
            "floored per token; control_bits: the per-sequence count on as many random sequences never trained on, "
            "the noise floor; final_loss: bits per token on the training data; loss_tail: the last window means of "
            "the training loss; converged false: stopped by capacity.max_steps, left out). Per model and dtype: "
            "in_plateau, capacity_bits_per_param (mean bits over the plateau / params; NULL when no plateau, "
            "capacity_note says why) and its std over seeds."),
        # near matches and code detection
        _table("embeddings", [("sequence_id", pa.int64()), ("embedding", pa.list_(pa.float32()))], ("sequence_id",),
               "L2-normalized sentence embedding of each sequence's text (model and version in the commit metadata)."),
        _table("semantic_neighbors", [("sequence_id", pa.int64()), ("neighbor_id", pa.int64()),
                                      ("cosine", pa.float64())], ("sequence_id", "neighbor_id"),
               "Pairs with cosine >= the lowest threshold, itself excluded, at most semantic.max_neighbors per "
               "sequence (highest cosine first)."),
        # taxonomy statistics (semmem.taxonomy; small, one set of rows per model@revision)
        _table("taxonomy_metrics", [
            ("model", pa.string()), ("revision", pa.string()), ("predictor", pa.string()), ("subset", pa.string()),
            ("metric", pa.string()), ("value", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
            ("std", pa.float64()), ("n_rows", pa.int64()), ("n_positive", pa.int64()), ("protocol", pa.string())],
            ("model", "revision", "protocol", "predictor", "subset", "metric"),
            "Test metrics of each predictor (baseline, taxonomic, guess_recall, trees, best_partition; "
            "vocabulary.PREDICTORS) per category subset and aggregate, with resampled CIs; lrt_* rows "
            "(upstream_protocol only): upstream's likelihood-ratio test against the baseline."),
        _table("taxonomy_comparison", [
            ("model", pa.string()), ("revision", pa.string()), ("predictor", pa.string()), ("reference", pa.string()),
            ("metric", pa.string()), ("difference", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
            ("p_value", pa.float64()), ("n_test", pa.int64()), ("protocol", pa.string())],
            ("model", "revision", "protocol", "predictor", "reference", "metric"),
            "Predictor minus reference (the baseline) on the test rows, paired on the same seeded bootstrap resamples: "
            "the difference on all test rows, its percentile interval and a two-sided bootstrap p-value "
            "(log_loss: lower is better; pr_auc, roc_auc, f1: higher)."),
        _table("taxonomy_weights", [
            ("model", pa.string()), ("revision", pa.string()), ("predictor", pa.string()), ("subset", pa.string()),
            ("feature", pa.string()), ("display_name", pa.string()), ("coefficient", pa.float64()),
            ("std_error", pa.float64()), ("z_value", pa.float64()), ("p_value", pa.float64()),
            ("status", pa.string()), ("note", pa.string()), ("n_rows", pa.int64()), ("vif", pa.float64()),
            ("protocol", pa.string())],
            ("model", "revision", "protocol", "predictor", "subset", "feature"),
            "Logistic-regression coefficients (standardized features) with Wald tests; status fitted | constant | "
            "missing | not_fitted; vif: the feature's variance inflation factor on the fitting rows (associations "
            "between correlated features, not causes: above 10, its weight is unstable)."),
        _table("feature_correlations", [
            ("model", pa.string()), ("revision", pa.string()), ("category", pa.string()), ("text_type", pa.string()),
            ("feature", pa.string()), ("display_name", pa.string()), ("statistic", pa.string()),
            ("value", pa.float64()), ("p_value", pa.float64()), ("n_rows", pa.int64()), ("n_positive", pa.int64())],
            ("model", "revision", "category", "text_type", "feature", "statistic"),
            "Pearson, Spearman and Chatterjee's xi of each feature vs is_memorized, per category and text subset "
            "(spec §4.3)."),
        _table("taxonomy_search", [
            ("model", pa.string()), ("revision", pa.string()), ("candidate_id", pa.int64()), ("feature_1", pa.string()),
            ("quantile_1", pa.float64()), ("threshold_1", pa.float64()), ("feature_2", pa.string()),
            ("quantile_2", pa.float64()), ("threshold_2", pa.float64()), ("status", pa.string()),
            ("reason", pa.string()), ("rank", pa.int64()), ("validation_f1", pa.float64()),
            ("validation_precision", pa.float64()), ("validation_recall", pa.float64()),
            ("validation_roc_auc", pa.float64()), ("validation_pr_auc", pa.float64()),
            ("validation_ece", pa.float64()), ("n_validation", pa.int64()), ("n_train_1", pa.int64()),
            ("n_train_2", pa.int64()), ("n_train_3", pa.int64()), ("protocol", pa.string())],
            ("model", "revision", "protocol", "candidate_id"),
            "Optimal-partition candidates (spec §4.4): T1 if feature_1 >= threshold_1, else T2 if feature_2 >= "
            "threshold_2, else T3; fitted on the training rows outside the validation share (n_train_*), ranked by "
            "their aggregate metrics on it (rank 1 = best validation F1). No test metrics: the winner's are in "
            "taxonomy_metrics (predictor best_partition)."),
        _table("duplicate_threshold_kl", [
            ("model", pa.string()), ("revision", pa.string()), ("statistic", pa.string()),
            ("duplicates_from", pa.int64()), ("duplicates_to", pa.int64()), ("n_memorized", pa.int64()),
            ("n_non_memorized", pa.int64()), ("rounds", pa.int64()), ("value", pa.float64()),
            ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("sample_size", pa.int64()), ("kl_max", pa.float64())],
            ("model", "revision", "statistic", "duplicates_from", "duplicates_to"),
            "Do memorized and other rows differ more in log generation perplexity above the recitation threshold "
            "(spec §3)? statistic 'jensen_shannon': JS divergence (nats, 0..ln 2) of their histograms "
            "(taxonomy.js_bins shared bins, 0.5 pseudo-count per bin) per duplicate count (from = to) and pooled over "
            "1..threshold and threshold+1..kl_max_duplicates; value on the full groups, bootstrap band. "
            "'upstream_paired_kl' (taxonomy.upstream_protocol only): upstream's randomly paired symmetric KL per "
            "count, value = bootstrap mean, with sample_size and kl_max; it grows with the spread within each group."),
        _table("memorization_forecast", [
            ("model_a", pa.string()), ("revision_a", pa.string()), ("model_b", pa.string()),
            ("revision_b", pa.string()), ("restricted", pa.bool_()), ("n_sequences", pa.int64()),
            ("n_memorized_a", pa.int64()),
            ("n_memorized_b", pa.int64()), ("n_memorized_both", pa.int64()), ("precision", pa.float64()),
            ("precision_ci_low", pa.float64()), ("precision_ci_high", pa.float64()), ("recall", pa.float64()),
            ("recall_ci_low", pa.float64()), ("recall_ci_high", pa.float64())],
            ("model_a", "revision_a", "model_b", "revision_b", "restricted"),
            "'Memorized by A' as a predictor of 'memorized by B' on the sequences both scored (Biderman et al. 2023; "
            "restricted: only those both had trained on by their checkpoints, seen_by_checkpoint); "
            "precision = n_memorized_both / n_memorized_a, recall = n_memorized_both / n_memorized_b, each with its "
            "Wilson interval at taxonomy.ci_level (NaN where the denominator is 0)."),
        # the evidence behind the answer (stage evidence, semmem.taxonomy.evidence; bounded: aggregates and a few cards)
        _table("memorization_by_context", [
            ("model", pa.string()), ("revision", pa.string()), ("category", pa.string()),
            ("context_length", pa.int32()), ("sequences", pa.int64()), ("memorized", pa.int64()),
            ("share", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64())],
            ("model", "revision", "category", "context_length"),
            "Memorized at each prompt length k (memorization.memorized_at, score.context_lengths) per model@revision "
            "and category ('all': every row, a NULL category included): sequences scored at k, those memorized, "
            "their share and its Wilson interval at taxonomy.ci_level. Counted in Spark."),
        _table("memorization_exposure", [
            ("model", pa.string()), ("revision", pa.string()), ("category", pa.string()), ("measure", pa.string()),
            ("bin_low", pa.int64()), ("bin_high", pa.int64()), ("sequences", pa.int64()), ("memorized", pa.int64()),
            ("share", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64())],
            ("model", "revision", "category", "measure", "bin_low"),
            "Memorized share per bin [bin_low, bin_high] of an exposure measure of combined: exposures_before (bins "
            "0, 1, 2-3, 4-7, ...) or steps_since_last_exposure (1, 2-3, ...; sequences never seen have none), per "
            "model@revision and category ('all' too), with the Wilson interval at taxonomy.ci_level."),
        _table("exposure_medians", [
            ("model", pa.string()), ("revision", pa.string()), ("category", pa.string()), ("memorized", pa.bool_()),
            ("measure", pa.string()), ("sequences", pa.int64()), ("median", pa.float64()), ("ci_low", pa.float64()),
            ("ci_high", pa.float64())], ("model", "revision", "category", "memorized", "measure"),
            "Median exposures_before and steps_since_last_exposure of memorized vs other sequences per model@revision "
            "and category ('all' too), over the sequences with a value; exact (the mean of the middle order "
            "statistics) with the distribution-free order-statistic interval at taxonomy.ci_level (NULL when too "
            "few sequences for one)."),
        _table("score_separation", [
            ("model", pa.string()), ("revision", pa.string()), ("category", pa.string()), ("score", pa.string()),
            ("memorized_when", pa.string()), ("roc_auc", pa.float64()), ("ci_low", pa.float64()),
            ("ci_high", pa.float64()), ("n_rows", pa.int64()), ("n_memorized", pa.int64())],
            ("model", "revision", "category", "score"),
            "How well each score (loss, zlib_ratio, min_k_prob, min_k_plus_plus, memorized_bits) separates memorized "
            "from other sequences per fitted model@revision (taxonomy.revisions) and category ('all' too): ROC-AUC "
            "with the score oriented so that 1 = every memorized sequence ranks above every other (memorized_when: "
            "the raw score's direction), on the seeded sample of at most taxonomy.max_rows rows the taxonomy draws, "
            "with a seeded bootstrap interval (taxonomy.bootstrap_rounds, taxonomy.ci_level)."),
        _table("memorization_examples", [
            ("model", pa.string()), ("revision", pa.string()), ("category", pa.string()), ("sequence_id", pa.int64()),
            ("text", pa.string()), ("sequence_duplicates", pa.int64()), ("exposures_before", pa.int64()),
            ("first_seen_step", pa.int64()), ("last_seen_step", pa.int64()), ("documents", pa.list_(pa.string()))],
            ("model", "revision", "sequence_id"),
            "A card per example memorized sequence of each fitted model@revision (the memorized among the report's "
            "report.examples_per_category examples per category): its text, duplicates, exposure by the checkpoint "
            "(first and last step seen) and up to 10 distinct documents where it occurs, earliest first "
            "(sequence_occurrences; NULL without that table)."),
        # where in the model (stage localize, beyond.md §5)
        _table("localization", [
            ("model", pa.string()), ("revision", pa.string()), ("rewound_to", pa.string()), ("layer", pa.int32()),
            ("block", pa.string()), ("taxonomy", pa.string()), ("category", pa.string()), ("memorized", pa.int64()),
            ("still_memorized", pa.int64())], ("model", "revision", "rewound_to", "layer", "block", "taxonomy",
                                               "category"),
            "Layer rewinding: of the sequences the final checkpoint (revision) memorizes, per category of each "
            "taxonomy (paper: recitation / reconstruction / recollection; guess_recall: guess / recall), how many stay "
            "memorized when one block (layer: the whole layer; attention; mlp) of one layer takes its weights from "
            "checkpoint rewound_to and every other weight stays. A seeded sample of at most localize.max_sequences "
            "per category when there are more."),
        _table("gradient_shares", [
            ("model", pa.string()), ("revision", pa.string()), ("layer", pa.int32()), ("block", pa.string()),
            ("category", pa.string()), ("memorized", pa.bool_()), ("share", pa.float64()), ("ci_low", pa.float64()),
            ("ci_high", pa.float64()), ("mean_norm", pa.float64()), ("n", pa.int64())],
            ("model", "revision", "layer", "block", "category", "memorized"),
            "Gradient accounting at the final checkpoint: per block of each layer and category ('all' too), the share "
            "of the sum of per-sequence gradient norms (of the continuation loss, mean NLL of the 32 continuation "
            "tokens) that the memorized (memorized = true) or the other sequences of that category contribute; "
            "mean_norm = that sum / n. The two shares of a block and category add to 1; the interval "
            "(taxonomy.ci_level) is the delta method's over independent sequences. Sampled as localization."),
        # a user's texts (`semmem texts`), beside the corpus tables
        _table("texts", [("text_id", pa.int64()), ("id", pa.int64()), ("path", pa.string()), ("line", pa.int64()),
                         ("text", pa.string()), ("n_tokens", pa.int32()), ("tokenizer", pa.string())], ("text_id",),
               "Texts submitted to `semmem texts`: text_id numbers them in file order (files sorted), id is the "
               "line's own id when it has one; tokenizer: the digest of the scored models' tokenizer."),
        _table("text_windows", [
            ("text_id", pa.int64()), ("window", pa.int32()), ("token_start", pa.int32()), ("n_tokens", pa.int32()),
            ("continuation_start", pa.int32()), ("char_start", pa.int32()), ("continuation_char_start", pa.int32()),
            ("char_end", pa.int32()), ("tokens", TOKENS), ("stream_count", pa.int64())], ("text_id", "window"),
            "The windows a text is scored over: at most 64 tokens each, a window every texts.stride tokens; the "
            "continuation is the last min(32, n_tokens - 1) tokens; character spans in the text; stream_count: "
            "occurrences of the 32-token continuation in the warehouse's training stream (NULL: no stream, another "
            "tokenizer, or a continuation shorter than 32)."),
        _table("text_memorization", [
            ("model", pa.string()), ("revision", pa.string()), ("text_id", pa.int64()), ("window", pa.int32()),
            ("continuation_length", pa.int32()), ("memorization_score", pa.float64()), ("is_memorized", pa.bool_()),
            ("matched_prefix", pa.int32()), ("loss", pa.float64()), ("prompt_perplexity", pa.float64()),
            ("generation_perplexity", pa.float64()), ("sequence_perplexity", pa.float64()),
            ("continuation_nll_bits", pa.float64())], ("model", "revision", "text_id", "window"),
            "Each window of each text scored as the corpus sequences are, at its own length (no padding); loss: the "
            "mean continuation NLL in nats per token."),
        _table("text_answers", [
            ("model", pa.string()), ("revision", pa.string()), ("text_id", pa.int64()), ("memorized", pa.bool_()),
            ("windows", pa.int64()), ("memorized_windows", pa.int64()), ("span_tokens", pa.int64()),
            ("span_token_start", pa.int64()), ("span_char_start", pa.int64()), ("span_char_end", pa.int64()),
            ("best_matched_prefix", pa.int64()), ("best_memorization_score", pa.float64()),
            ("lowest_loss", pa.float64()), ("stream_count", pa.int64())], ("model", "revision", "text_id"),
            "The answer per text and model@revision: memorized when a window is; the longest run of memorized "
            "continuations (merged where they overlap or touch) in tokens and characters [start, end); the most "
            "occurrences in the training stream of one of its windows' continuations."),
        # lineage
        _table("stage_runs", [
            ("run_id", pa.string()), ("stage", pa.string()), ("table_name", pa.string()), ("version", pa.int64()),
            ("published_at", pa.timestamp("us", tz="UTC")), ("config_hash", pa.string()), ("config", pa.string()),
            ("semmem_version", pa.string()), ("inputs", pa.string()), ("side_files", pa.string())],
            ("run_id", "table_name"),
            "The publication log: each stage run that succeeded, one row per table it made visible (version -1: "
            "dropped), with the config it ran (JSON, and its hash), the input table versions (JSON) and its side "
            "files; semmem reads every table at its newest published version."),
    ]
}


def table(name: str) -> TableDef:
    """The catalog entry for `name`, or a TableError listing the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise TableError(f"unknown table {name!r}; the catalog has: {', '.join(sorted(TABLES))}") from None
