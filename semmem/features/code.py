"""Code vs natural language (spec §2.6): nl_score = P(natural language) of each sequence's decoded text.

Two kinds of classifier give nl_score:
- a Hugging Face sequence classifier whose label 0 is natural language: upstream's `usvsnsp/code-vs-nl` (DistilBERT)
  or a `save_pretrained` folder. The text is re-tokenized, truncated at 512 tokens, run in fp16 on a GPU (fp32 on
  CPU), nl_score = softmax(logits)[:, 0] as upstream;
- offline, the classifier `semmem train-code-classifier` fits: tf-idf of hashed character n-grams + logistic
  regression (scikit-learn), chosen among VARIANTS on a validation split.
Both run on executors through predict_batch_udf, loaded once per Python worker. is_code is TRUE when
nl_score <= code_threshold, FALSE when nl_score >= nl_threshold, NULL (uncertain) in between. Labels files, the saved
classifier and which classifier code.model names: semmem.code_classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pyspark import Accumulator
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from semmem.errors import ConfigError, InputError
from semmem.spark import per_distinct_text

if TYPE_CHECKING:  # scikit-learn is imported lazily: the driver of the code stage needs only the DataFrame plan
    from sklearn.pipeline import Pipeline

    from semmem.code_classifier import CodeModel

CODE, NL = 1, 0  # label_is_code values; upstream's classifier has NL as label 0, so nl_score = P(label 0)
UPSTREAM_MODEL = "usvsnsp/code-vs-nl"
# F1 for the NL class of UPSTREAM_MODEL on the 490 human labels at the best of ~200 thresholds tried on those same
# labels (upstream_tables.md §9): an optimistic figure, reported next to ours.
UPSTREAM_F1 = 0.923588
MAX_LENGTH = 512  # transformer truncation, as upstream
MIN_PER_CLASS = 10  # fewer labelled texts of a class cannot fill a training, validation and held-out split
TRAINER_VERSION = 1  # part of the fingerprint: bump when the training code changes what a config produces
N_FEATURES = 1 << 20  # hashed n-gram buckets: few collisions at 10^5 training texts, 8 MB of coefficients

_FLATTEN = str.maketrans("\r\n\t", "   ")


def normalize_text(text: str) -> str:
    """Newlines and tabs as spaces, one for one: human-labelled texts come newline-flattened (upstream TSVs), and the
    classifier must not learn a signal those texts cannot have. Indentation runs survive."""
    return text.translate(_FLATTEN)


def check_classes(labels: Sequence[int], source: str) -> None:
    """InputError unless both classes have MIN_PER_CLASS texts: a one-class training set learns nothing."""
    n_code = sum(1 for y in labels if y == CODE)
    n_nl = sum(1 for y in labels if y == NL)
    if min(n_code, n_nl) < MIN_PER_CLASS:
        raise InputError(f"training labels from {source}: found {n_code} code and {n_nl} natural-language texts; need "
                         f"at least {MIN_PER_CLASS} of each. Give a labelled file with both classes "
                         "(code_classifier.labels=<file.jsonl>) or name the code sets of the corpus "
                         "(code_classifier.code_sets)")


def window_texts(texts: Sequence[str], tokenizer_json: str) -> list[str]:
    """Each text cut to its first 64 tokens and decoded, as a 64-token sequence's `text` is: what the pipeline would
    classify for it."""
    from tokenizers import Tokenizer

    from semmem.ingest.sequences import WINDOW_LENGTH
    from semmem.ingest.tokenizer import decode_batch, encode_batch

    tok = Tokenizer.from_str(tokenizer_json)
    return decode_batch(tok, [ids[:WINDOW_LENGTH] for ids in encode_batch(tok, list(texts))])


# ----------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Variant:
    """One candidate classifier: which character n-grams, and the inverse regularization strength C."""

    analyzer: Literal["char", "char_wb"]
    ngram_min: int
    ngram_max: int
    C: float

    @property
    def name(self) -> str:
        return f"{self.analyzer}{self.ngram_min}-{self.ngram_max}_C{self.C:g}"


# Chosen on the validation split (never on the human labels). "char" n-grams span word boundaries, so they see
# `) {`, `=>`, `();`; "char_wb" keeps to words.
VARIANTS = (Variant("char_wb", 2, 4, 1.0), Variant("char_wb", 2, 4, 10.0), Variant("char", 1, 5, 1.0),
            Variant("char", 1, 5, 10.0))


@dataclass(frozen=True)
class TrainedClassifier:
    pipeline: Pipeline  # hashed n-grams -> tf-idf -> logistic regression; predict_proba over (NL, code)
    metrics: dict[str, Any]


def nl_scores_of(pipeline: Pipeline, texts: Sequence[str]) -> np.ndarray:
    """P(natural language) of each text under a trained classifier, float64 [n]."""
    proba = pipeline.predict_proba(np.asarray(list(texts), dtype=object))
    return proba[:, list(pipeline.classes_).index(NL)].astype(np.float64)


def binary_metrics(labels: Sequence[int], nl_score: np.ndarray, *, nl_threshold: float, code_threshold: float
                   ) -> dict[str, float | int]:
    """Code-class precision / recall / F1, accuracy and ROC-AUC at the 0.5 cut; the share the three-way rule leaves
    uncertain and its accuracy on the rest; and the best NL-class F1 over all thresholds (an oracle: the way upstream
    computed its 0.923, so the two can be compared)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_curve, precision_score, recall_score, \
        roc_auc_score

    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(nl_score, dtype=np.float64)
    pred = np.where(s < 0.5, CODE, NL)
    certain = (s <= code_threshold) | (s >= nl_threshold)
    precision, recall, _ = precision_recall_curve(y == NL, s)
    f1_curve = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {
        "n": int(len(y)), "n_code": int((y == CODE).sum()),
        "f1_code": float(f1_score(y, pred, pos_label=CODE, zero_division=0)),
        "precision_code": float(precision_score(y, pred, pos_label=CODE, zero_division=0)),
        "recall_code": float(recall_score(y, pred, pos_label=CODE, zero_division=0)),
        "f1_nl": float(f1_score(y, pred, pos_label=NL, zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
        "roc_auc": float(roc_auc_score(y == CODE, -s)) if 0 < (y == CODE).sum() < len(y) else float("nan"),
        "uncertain_fraction": float(1 - certain.mean()),
        "accuracy_certain": float((pred[certain] == y[certain]).mean()) if certain.any() else float("nan"),
        "f1_nl_best_threshold": float(f1_curve.max()),
    }


def _hasher(variant: Variant) -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    # A preprocessor replaces lowercasing too: case stays, camelCase and CONSTANTS are code signals.
    return HashingVectorizer(analyzer=variant.analyzer, ngram_range=(variant.ngram_min, variant.ngram_max),
                             preprocessor=normalize_text, n_features=N_FEATURES, alternate_sign=False, norm=None)


def _fit(variant: Variant, counts: Any, labels: np.ndarray, seed: int) -> Pipeline:
    """Fit tf-idf and the logistic regression on hashed counts; the pipeline takes raw texts."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts)
    # balanced: upstream trained on equal samples of both classes, and the 0.4 / 0.525 thresholds assume a score
    # centred on 0.5 whatever the corpus's share of code
    lr = LogisticRegression(C=variant.C, class_weight="balanced", solver="liblinear", max_iter=1000,
                            random_state=seed).fit(tfidf.transform(counts), labels)
    return Pipeline([("ngrams", _hasher(variant)), ("tfidf", tfidf), ("logreg", lr)])


def train_classifier(texts: Sequence[str], labels: Sequence[int], *, holdout_fraction: float, seed: int,
                     nl_threshold: float, code_threshold: float, variants: Sequence[Variant] = VARIANTS,
                     human: tuple[Sequence[str], Sequence[int]] | None = None) -> TrainedClassifier:
    """Pick the variant with the best code-class F1 on a validation split, refit it on training + validation and
    measure it on the held-out split, which took no part in the choice.

    `human` (texts, labels) is evaluated for every variant and the final classifier, and reported only: selecting on
    it would be training on it.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < holdout_fraction <= 0.4:
        raise ConfigError(f"code_classifier.holdout_fraction = {holdout_fraction}: must be in (0, 0.4] (the same share "
                          "is split off again for choosing the variant)")
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    check_classes(labels, "the training rows")
    x = np.asarray(list(texts), dtype=object)
    y = np.asarray(labels, dtype=np.int64)
    x_fit, x_held, y_fit, y_held = train_test_split(x, y, test_size=holdout_fraction, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_fit, y_fit, test_size=holdout_fraction, stratify=y_fit,
                                                      random_state=seed)

    def measure(pipeline: Pipeline, xs: np.ndarray, ys: Sequence[int]) -> dict[str, float | int]:
        return binary_metrics(ys, nl_scores_of(pipeline, xs), nl_threshold=nl_threshold,
                              code_threshold=code_threshold)

    tried = []
    counts: dict[tuple[str, int, int], Any] = {}  # hashing is stateless: one transform per n-gram setting
    for v in variants:
        key = (v.analyzer, v.ngram_min, v.ngram_max)
        if key not in counts:
            counts[key] = _hasher(v).transform(x_train)
        pipeline = _fit(v, counts[key], y_train, seed)
        row: dict[str, Any] = {"variant": v.name, "validation": measure(pipeline, x_val, y_val)}
        if human is not None:
            row["human_labels"] = measure(pipeline, np.asarray(list(human[0]), dtype=object), human[1])
        tried.append(row)
    best = max(range(len(variants)), key=lambda i: (tried[i]["validation"]["f1_code"],
                                                   tried[i]["validation"]["roc_auc"]))
    chosen = variants[best]
    final = _fit(chosen, _hasher(chosen).transform(x_fit), y_fit, seed)
    metrics: dict[str, Any] = {
        "variant": chosen.name, "params": asdict(chosen), "selected_by": "validation f1_code",
        "rows": {"train": len(y_train), "validation": len(y_val), "train_final": len(y_fit), "held_out": len(y_held),
                 "code": int((y == CODE).sum()), "natural_language": int((y == NL).sum())},
        "held_out": measure(final, x_held, y_held), "variants": tried,
        "decision": "code when nl_score < 0.5; three-way: code <= code_threshold, NL >= nl_threshold",
        "nl_threshold": nl_threshold, "code_threshold": code_threshold,
    }
    if human is not None:
        metrics["human_labels"] = measure(final, np.asarray(list(human[0]), dtype=object), human[1])
    return TrainedClassifier(final, metrics)


# ------------------------------------------------------------------------------------------------------- scoring
def make_code_predict_fn(model: CodeModel, *, batch_size: int = 64, device: str = "auto",
                         counter: Accumulator | None = None) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    """A `make_predict_fn` for predict_batch_udf: the returned factory runs on executors, once per Python worker, and
    gives texts [n] -> nl_score [n] float64. `counter` counts the texts scored, for progress lines."""

    def make() -> Callable[[np.ndarray], np.ndarray]:
        score = _sklearn_scorer(model) if model.kind == "sklearn" else _transformers_scorer(model, batch_size, device)

        def predict(texts: np.ndarray) -> np.ndarray:
            out = score([t if isinstance(t, str) else "" for t in texts])
            if counter is not None:
                counter.add(len(texts))
            return out

        return predict

    return make


def _sklearn_scorer(model: CodeModel) -> Callable[[list[str]], np.ndarray]:
    pipeline = model.load_pipeline()
    return lambda texts: nl_scores_of(pipeline, texts)


def _transformers_scorer(model: CodeModel, batch_size: int, device: str) -> Callable[[list[str]], np.ndarray]:
    """Upstream's scoring: tokenize, truncate at 512, fp16 on CUDA (fp32 on CPU), P(NL) = softmax(logits)[:, 0]
    (the softmax in float32)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from semmem.scoring.models import pick_device

    folder = model.local_folder()
    dev = pick_device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(folder)
    net = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).to(dev).eval()

    def score(texts: list[str]) -> np.ndarray:
        out = np.empty(len(texts), dtype=np.float64)
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s:s + batch_size], truncation=True, max_length=MAX_LENGTH, padding=True,
                      return_tensors="pt").to(dev)
            with torch.inference_mode():
                logits = net(**enc).logits  # [b, 2]
            out[s:s + batch_size] = torch.softmax(logits.float(), dim=-1)[:, NL].cpu().numpy()
        return out

    return score


def check_thresholds(nl_threshold: float, code_threshold: float) -> None:
    if not 0.0 <= code_threshold <= nl_threshold <= 1.0:
        raise ConfigError(f"code.code_threshold = {code_threshold}, code.nl_threshold = {nl_threshold}: need "
                          "0 <= code_threshold <= nl_threshold <= 1 (upstream: 0.4 and 0.525)")


def is_code_of(nl_score: Column, *, nl_threshold: float, code_threshold: float) -> Column:
    """TRUE (code) when nl_score <= code_threshold, FALSE (NL) when >= nl_threshold, NULL (uncertain) between; code
    wins when the thresholds are equal."""
    return F.when(nl_score <= code_threshold, True).when(nl_score >= nl_threshold, False)


def code_scores(sequences: DataFrame, model: CodeModel, *, nl_threshold: float = 0.525, code_threshold: float = 0.4,
                batch_size: int = 64, device: str = "auto", udf_batch_size: int = 1024,
                counter: Accumulator | None = None, partitions: int | None = None) -> DataFrame:
    """sequences(sequence_id, text) -> code_scores(sequence_id, nl_score, is_code), lazily (runs on executors).

    Distinct texts are scored once, so identical texts get identical scores; a NULL text is scored as "".
    `partitions`: the distinct texts are spread over this many tasks (semmem.spark.model_tasks).
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import DoubleType

    check_thresholds(nl_threshold, code_threshold)
    udf = predict_batch_udf(make_code_predict_fn(model, batch_size=batch_size, device=device, counter=counter),
                            return_type=DoubleType(), batch_size=udf_batch_size)
    scored = per_distinct_text(sequences, udf, "nl_score", partitions)  # one task per GPU, if any
    return scored.select("sequence_id", "nl_score", is_code_of(F.col("nl_score"), nl_threshold=nl_threshold,
                                                               code_threshold=code_threshold).alias("is_code"))
