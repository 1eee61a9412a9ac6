"""Every feature of a sequence, declared once: its table and columns, the stage that makes it, which columns enter
`combined`, and how the taxonomic model and the report use each column.

From FEATURES come the catalog's feature tables and the schema of `combined` (semmem.catalog), the tables `combine`
joins and the columns it keeps (semmem.taxonomy.combine), and the taxonomic model's features with their upstream
and display names (semmem.taxonomy.vocabulary). A feature that is a function of the sequences alone (`compute`) gets
its stage from here too (semmem.stages.corpus): adding one touches its module, its declaration and its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame

from semmem.features.exposure import EXPOSURE_COLUMNS
from semmem.features.huffman import huffman
from semmem.features.rouge import rouge
from semmem.features.templating import templating


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    type: pa.DataType
    combined: bool = True  # a column of `combined`
    display: str = ""  # what the report calls it (a feature of the taxonomic model needs one)
    upstream: str = ""  # upstream's column name, for a feature of the taxonomic model
    model: int = 0  # its place among the taxonomic model's features, in upstream's order; 0: not in the model
    binary: bool = False  # used by the model as 0/1, never standardized (as upstream)


@dataclass(frozen=True)
class Feature:
    table: str
    stage: str  # the stage that writes it
    description: str
    columns: tuple[FeatureColumn, ...]  # besides the key
    key: tuple[tuple[str, pa.DataType], ...] = (("sequence_id", pa.int64()),)
    partition_by: tuple[str, ...] = ()
    # one BIGINT column per semantic.thresholds under this prefix; `columns` holds those of the default thresholds
    threshold_prefix: str = ""
    # sequences -> the table, with the keys of config section `config` as keyword arguments; None: a stage of its own
    compute: Callable[..., DataFrame] | None = None
    config: str = ""

    @property
    def per_sequence(self) -> bool:
        """Joined on sequence_id alone (the labels of `memorization` are per model@revision)."""
        return [k for k, _ in self.key] == ["sequence_id"]

    def declares(self, column: str) -> bool:
        return any(c.name == column for c in self.columns) or bool(
            self.threshold_prefix and column.startswith(self.threshold_prefix))

    def enters_combined(self, column: str) -> bool:
        return any(c.name == column and c.combined for c in self.columns) or bool(
            self.threshold_prefix and column.startswith(self.threshold_prefix))


def _cols(*specs: tuple) -> tuple[FeatureColumn, ...]:
    return tuple(FeatureColumn(*s[:2], **(s[2] if len(s) > 2 else {})) for s in specs)


def _model(position: int, display: str, upstream: str = "", **more: object) -> dict:
    return {"model": position, "display": display, "upstream": upstream, **more}


FEATURES: tuple[Feature, ...] = (
    Feature("memorization", "score", "k-extractable memorization and perplexities per model@revision (spec §1.2, "
            "§2.9); continuation_nll_bits: -log2 P of the 32 true continuation tokens given the true prefix. "
            "Graded memorization (beyond.md §3): memorized_at maps each score.context_lengths k to whether greedy "
            "decoding from the k tokens before the continuation reproduces it; loss (mean NLL, nats), min_k_prob "
            "and min_k_plus_plus (means of the score.min_k_fraction lowest log-probabilities, raw and standardized) "
            "over the 32 continuation tokens given the 32-token prompt; zlib_ratio = loss / zlib bytes of the "
            "64-token text.",
            _cols(("memorization_score", pa.float64()), ("is_memorized", pa.bool_()),
                  ("matched_prefix", pa.int32()),
                  ("prompt_perplexity", pa.float64(), _model(9, "Prompt PPL", "prompt_perplexity")),
                  ("generation_perplexity", pa.float64(), _model(8, "Continuation PPL", "generation_perplexity")),
                  ("sequence_perplexity", pa.float64(), _model(10, "Sequence PPL", "sequence_perplexity")),
                  ("continuation_nll_bits", pa.float64(), {"combined": False}),
                  # membership scores and graded labels: in `memorization` only, joined on (model, revision,
                  # sequence_id) where needed; a map keeps one schema whatever lengths a partition was scored at
                  ("loss", pa.float64(), {"combined": False}), ("min_k_prob", pa.float64(), {"combined": False}),
                  ("min_k_plus_plus", pa.float64(), {"combined": False}),
                  ("memorized_at", pa.map_(pa.int32(), pa.bool_()), {"combined": False}),
                  ("zlib_ratio", pa.float64(), {"combined": False})),
            key=(("model", pa.string()), ("revision", pa.string()), ("sequence_id", pa.int64())),
            partition_by=("model", "revision")),
    Feature("sequence_duplicates", "duplicates",
            "Occurrences of each continuation 32-gram anywhere in the stream (>= 1).",
            _cols(("sequence_duplicates", pa.int64(), _model(1, "Duplicates", "sequence_duplicates")))),
    Feature("token_frequency_stats", "frequencies", "Corpus-frequency statistics over the 64 tokens of each sequence.",
            _cols(("max_frequency", pa.int64(), _model(2, "Max frequency", "max_frequency")),
                  ("min_frequency", pa.int64(), _model(4, "Min frequency", "min_frequency")),
                  ("avg_frequency", pa.float64(), _model(3, "Mean frequency", "avg_frequency")),
                  ("median_frequency", pa.float64(), _model(5, "Median frequency", "median_frequency")),
                  ("p25_frequency", pa.int64(), _model(6, "P25 frequency", "p25_frequency")),
                  ("p75_frequency", pa.int64(), _model(7, "P75 frequency", "p75_frequency")),
                  ("frequencies", pa.list_(pa.int64()), {"combined": False}))),
    Feature("templating", "templating", "Incrementing / repeating text (spec §2.7).",
            _cols(("is_incrementing", pa.bool_()), ("is_repeating", pa.bool_()),
                  ("is_templating", pa.bool_(), _model(14, "Templating", "is_templating", binary=True))),
            compute=templating, config="templating"),
    Feature("huffman", "huffman",
            "Shannon code length per character as upstream, and a true Huffman code length (spec §2.8).",
            _cols(("huffman_coding_length", pa.float64(),
                   _model(13, "Huffman coding length", "huffman_coding_length")),
                  ("huffman_code_length_true", pa.float64())),
            compute=huffman),
    Feature("prefix_suffix_rouge", "rouge",
            "ROUGE-L and ROUGE-3 F1 between the prompt's 32 token ids and the continuation's (beyond.md §4): the "
            "guess side of the Guess / Recall taxonomy (category_guess_recall in combined).",
            _cols(("prefix_suffix_rouge_l", pa.float64()), ("prefix_suffix_rouge_3", pa.float64())),
            compute=rouge),
    Feature("semantic_matches", "semantic",
            "Reference sequences with cosine >= each threshold, the sequence itself included (spec §2.4).",
            _cols(("semantic_matches_0_8", pa.int64(), _model(12, "Semantic Matches", "0_8_snowclones")),
                  ("semantic_matches_0_9", pa.int64())),
            threshold_prefix="semantic_matches_"),
    Feature("textual_matches", "textual",
            "Semantic matches whose prompt is within the configured Levenshtein distance (spec §2.5).",
            _cols(("textual_matches_0_8", pa.int64(), _model(11, "Textual Matches", "0_8_templates")),
                  ("textual_matches_0_9", pa.int64())),
            threshold_prefix="textual_matches_"),
    Feature("code_scores", "code", "P(natural language) of each text; is_code NULL when uncertain (spec §2.6).",
            _cols(("nl_score", pa.float64()), ("is_code", pa.bool_()))),
)

# the columns `combine` adds of its own, after every feature's
COMBINE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (*EXPOSURE_COLUMNS, ("memorized_bits", pa.float64()),
                                                        ("category", pa.string()),
                                                        ("category_guess_recall", pa.string()))

FEATURE_BY_TABLE: dict[str, Feature] = {f.table: f for f in FEATURES}
# the per-sequence feature tables `combine` joins, in the column order of `combined`, with the stage of each
FEATURE_TABLES: dict[str, str] = {f.table: f.stage for f in FEATURES if f.per_sequence}
MODEL_COLUMNS: tuple[FeatureColumn, ...] = tuple(sorted((c for f in FEATURES for c in f.columns if c.model),
                                                        key=lambda c: c.model))
