"""The spark-nlp embedding engine (embed.engine: spark-nlp; Spark 3.5 builds only): the same sentence embeddings as
semmem.features.embeddings, computed on the JVM by spark-nlp's ONNX runtime instead of in Python workers.

The sentence-transformers model (a BERT transformer, mean pooling, L2 normalization: all-MiniLM-L6-v2) is exported
once, offline, to ONNX (token ids -> last hidden states). spark-nlp's E5Embeddings annotator runs it with its own
WordPiece tokenizer over the model's vocabulary ([CLS] text [SEP], cut at the model's max_seq_length, lower-cased
for an uncased vocabulary), then mean-pools over the tokens and L2-normalizes, as sentence-transformers does.

One text per ONNX call (setBatchSize(1)): spark-nlp 5.5.3 hands a batch's token rows to ONNX unpadded, so texts of
different lengths in one batch are read misaligned (cosine to the right vector down to 0.42 on the embedded default
with 16 per call); one at a time, every text of the embedded default agrees to a cosine of 1 - 1e-12 (tested).
"""

from __future__ import annotations

import functools
import json
import shutil
import warnings
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.errors import ModelError
from semmem.spark import per_distinct_text

ONNX_FILE = "model.onnx"


def _pipeline_parts(model_path: str):
    """The transformer, its tokenizer's lower-casing and max length, of a sentence-transformers model that the ONNX
    export can reproduce exactly, else a ModelError naming what differs."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    st = SentenceTransformer(model_path, device="cpu")
    modules = list(st)
    if not (len(modules) in (2, 3) and isinstance(modules[0], Transformer) and isinstance(modules[1], Pooling)
            and modules[1].pooling_mode == "mean" and (len(modules) == 2 or isinstance(modules[2], Normalize))
            and modules[0].auto_model.config.model_type == "bert"):
        raise ModelError(f"embed.engine=spark-nlp: {model_path} is not a BERT transformer with mean pooling (modules "
                         f"{[type(m).__name__ for m in modules]}); spark-nlp's E5Embeddings runs only that shape: "
                         "use embed.engine=sentence-transformers for this model")
    tokenizer = modules[0].tokenizer
    return modules[0].auto_model.eval(), bool(getattr(tokenizer, "do_lower_case", False)), modules[0].max_seq_length


def export_onnx(model_path: str, out: Path) -> Path:
    """Export the sentence-transformers model at `model_path` to `out` as spark-nlp's E5Embeddings loads it:
    model.onnx (input_ids, attention_mask, token_type_ids -> last_hidden_state, the names E5Embeddings feeds and
    reads), assets/vocab.txt, and semmem.json (lower-casing, max length, dimension).
    Written to a temporary folder first, so a crash never leaves a half-written export."""
    import torch

    bert, lowercase, max_length = _pipeline_parts(model_path)

    class Hidden(torch.nn.Module):  # keyword arguments: BertModel's positional order is not ONNX's input order
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "assets").mkdir(parents=True)
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])  # [CLS] hello world [SEP], and a padded row
    names = ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]
    # the tracer warns of shape tests it freezes (an attention mask as long as the keys, never causal): both hold for
    # every input here; the agreement tests check the graph on texts of every length
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(), (ids, (ids != 0).long(), torch.zeros_like(ids)), str(tmp / ONNX_FILE),
                          dynamo=False, opset_version=17, input_names=names[:3], output_names=names[3:],
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names})
    shutil.copy(Path(model_path) / "vocab.txt", tmp / "assets" / "vocab.txt")
    (tmp / "semmem.json").write_text(json.dumps({"lowercase": lowercase, "max_length": max_length,
                                                 "dimension": bert.config.hidden_size}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_annotator(spark, export: Path):
    """spark-nlp's E5Embeddings over the exported graph, set as the export says (one text per call: module doc)."""
    from sparknlp.annotator import E5Embeddings

    settings = json.loads((export / "semmem.json").read_text())
    return (E5Embeddings.loadSavedModel(str(export), spark)
            .setInputCols(["_document"]).setOutputCol("_embeddings")
            .setCaseSensitive(not settings["lowercase"]).setMaxSentenceLength(settings["max_length"])
            .setDimension(settings["dimension"]).setBatchSize(1))


def exported(model_path: str, version: str, root: Path) -> Path:
    """The ONNX export of the model at `model_path` (resolved version `version`) under `root`, made on first use."""
    out = root / "onnx" / "".join(c if c.isalnum() or c in "-_." else "_" for c in version)
    return out if (out / "semmem.json").exists() else export_onnx(model_path, out)


# What a BERT tokenizer does to a text before WordPiece and spark-nlp's tokenizer does not (each measured on a text
# where it did: cosine 0.44 to 0.67), as Java regexes for Spark: drop control and format characters (Unicode C*, but
# tab, newline and return; U+FFFD), read every Unicode space separator as a space, and make words of their own of
# punctuation (Unicode P*, and ASCII's symbols) and CJK ideographs: spark-nlp keeps "た。" one word, BERT has た and 。.
CONTROL = "[\\p{C}\\x{FFFD}&&[^\\t\\n\\r]]"
SPACE = "\\p{Zs}"
OWN_WORDS = ("([\\p{P}!-/:-@\\[-`{-~\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}\\x{20000}-\\x{2A6DF}\\x{2A700}-\\x{2B73F}"
             "\\x{2B740}-\\x{2B81F}\\x{2B820}-\\x{2CEAF}\\x{F900}-\\x{FAFF}\\x{2F800}-\\x{2FA1F}])")


@functools.cache
def accent_stripping() -> tuple[str, str]:
    """(from, to) for Spark's translate(): what an uncased BERT tokenizer does to accents, character by character,
    from the tokenizers library's own BertNormalizer (so its Unicode tables): each character stripped to one other
    maps to it, each stripped to nothing (a combining mark) goes past the end of `to`; one stripped to several
    (Hangul syllables to jamo) is left to spark-nlp, which decomposes those itself. spark-nlp strips fewer marks:
    it keeps the kana voicing marks (が stays が, not か as in the model's vocabulary: cosine 0.44 on ひらがな)."""
    from tokenizers.normalizers import BertNormalizer

    strip = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    pairs, marks = [], []
    for code in (*range(0xD800), *range(0xE000, 0x110000)):  # every code point but the surrogates
        c = chr(code)
        stripped = strip.normalize_str(c)
        if stripped == "":
            marks.append(c)
        elif len(stripped) == 1 and stripped != c:
            pairs.append((c, stripped))
    return "".join(c for c, _ in pairs) + "".join(marks), "".join(d for _, d in pairs)


def embed_sequences_sparknlp(sequences: DataFrame, annotator, partitions: int | None = None) -> DataFrame:
    """sequences(sequence_id, text) -> embeddings(sequence_id, embedding), lazily, like embed_sequences: each
    distinct text embedded once by `annotator` (load_annotator), after the steps of the model's own tokenizer that
    spark-nlp's does differently: CONTROL dropped, SPACE read as spaces, accents stripped (where the annotator is
    uncased) and OWN_WORDS split off. An empty text, to which spark-nlp's DocumentAssembler gives no
    document, is embedded as one space: the same WordPiece tokens, [CLS] [SEP]."""
    from sparknlp.base import DocumentAssembler

    document = DocumentAssembler().setInputCol("_text").setOutputCol("_document")
    text = F.regexp_replace(F.regexp_replace("text", CONTROL, ""), SPACE, " ")
    if not annotator.getCaseSensitive():
        text = F.translate(text, *accent_stripping())
    text = F.regexp_replace(text, OWN_WORDS, " $1 ")

    def transform(texts: DataFrame) -> DataFrame:
        padded = texts.withColumn("_text", F.when(F.length(text) > 0, text).otherwise(F.lit(" ")))
        embedded = annotator.transform(document.transform(padded))
        return embedded.withColumn("embedding", F.col("_embeddings").getItem(0).getField("embeddings"))

    return per_distinct_text(sequences, None, "embedding", partitions, transform=transform)
