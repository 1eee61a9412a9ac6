"""The statistics of the taxonomy (spec §3, §4, §6): pure, typed functions over the `combined` rows of one
model@revision in pandas. Each returns a frame with exactly the columns of its catalog table; nothing here reads or
writes tables; `search_partitions` and `memorization_forecast` use Spark (a session, or a frame, passed in).

Stage wiring; the keys of the `taxonomy:` config section equal these keyword arguments (t = cfg.taxonomy):

    combined.withColumn("category", category_column(t.duplicate_threshold))          # combine stage, Spark
    rows = <combined rows of one model@revision, as pandas>
    result = taxonomy_model(rows, upstream_protocol=t.upstream_protocol, test_fraction=t.test_fraction,
                            validation_fraction=t.validation_fraction, seed=t.seed, max_rows=t.max_rows,
                            bootstrap_rounds=t.bootstrap_rounds, ci_level=t.ci_level, ece_bins=t.ece_bins,
                            taxonomies=t.taxonomies, trees=t.trees)  # guess_recall: rows with guessable_column
    candidates = partition_candidates(result.split, search_features=t.search_features,
                                      search_quantiles=t.search_quantiles)
    search = search_partitions(spark, result.split, candidates, ece_bins=t.ece_bins, search_tasks=t.search_tasks,
                               min_validation=t.search_min_validation)
    result = with_best_partition(result, search)
    # taxonomy_search <- search; taxonomy_metrics <- result.metrics; taxonomy_comparison <- result.comparison;
    # taxonomy_weights <- result.weights
    feature_correlations(rows, nl_threshold=t.nl_threshold, code_threshold=t.code_threshold, seed=t.seed)
    duplicate_threshold_kl(rows, duplicate_threshold=t.duplicate_threshold, kl_max_duplicates=t.kl_max_duplicates,
                           kl_bootstrap_rounds=t.kl_bootstrap_rounds, kl_min_rows=t.kl_min_rows, js_bins=t.js_bins,
                           upstream_protocol=t.upstream_protocol, seed=t.seed, ci_level=t.ci_level)
    memorization_forecast(<Spark frame: model, revision, sequence_id, is_memorized of every model@revision>,
                          ci_level=t.ci_level)

`taxonomy_model` holds at most `max_rows` rows (a seeded stratified subsample); the correlations and the divergence
curve use every row passed in, so pass them only the columns they read when the sample is large. Rows with a NULL,
NaN or infinite label, category or used feature are dropped (never imputed), counted (`result.split.selection`) and
logged; when no row is left, InputError names the columns. Features that are entirely NULL are left out and listed
(weights status `missing`).
"""

from semmem.taxonomy.vocabulary import (
    CATEGORIES, DISPLAY_NAMES, MODEL_FEATURES, UPSTREAM_NAMES, categorize, category_column, fitted_revisions,
    select_rows)
from semmem.taxonomy.model import Split, TaxonomyResult, prepare_split, taxonomy_model
from semmem.taxonomy.search import (
    Partition, partition_candidates, search_partitions, with_best_partition)
from semmem.taxonomy.stats import (
    chatterjee_xi, duplicate_threshold_kl, feature_correlations, memorization_forecast)

__all__ = [
    "CATEGORIES", "DISPLAY_NAMES", "MODEL_FEATURES", "UPSTREAM_NAMES", "Partition", "Split", "TaxonomyResult",
    "categorize", "category_column", "chatterjee_xi", "duplicate_threshold_kl", "feature_correlations",
    "fitted_revisions", "memorization_forecast", "partition_candidates", "prepare_split", "search_partitions", "select_rows",
    "taxonomy_model", "with_best_partition",
]
