"""embed.engine=spark-nlp: all-MiniLM-L6-v2 exported to ONNX and run by spark-nlp's E5Embeddings on the JVM agrees
with the sentence-transformers engine (predict_batch_udf) to a cosine >= 0.999 on every sequence of the embedded
default and on the test corpus's texts with edge cases (empty, NULL, accents, kana, CJK, punctuation, Unicode spaces
and control characters, emoji, past the 256-token cut).

The agreement tests need the Spark 3.5 venv with spark-nlp's jars (`make spark3.5-test`; marker spark35). The
refusals run everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from semmem.compat import SCALA
from semmem.config import load_config
from semmem.errors import ConfigError, ModelError
from semmem.features.embeddings import embed_sequences
from semmem.model_sources import DEFAULT_EMBEDDING_MODEL, resolve_embedding_model
from semmem.sample import documents
from semmem.spark import sparknlp_jars
from tests.conftest import TEST_OVERRIDES
from tests.standalone import ROOT

NLP_JARS = ROOT / ".jars-spark3.5" / "nlp"
EDGE_TEXTS = ["", "   ", "Crème brûlée, naïve café — ÉTÉ İstanbul ß", "e\u0301cole", "東京で寿司を食べた。北京烤鸭。",
              "ひらがな カタカナ 한국어 Ελληνικά русский", "emoji 🎉🚀 end", "tab\tand\nnewline\r\x07bell\x7f",
              "x\u00a0y\u2003z\u3000w", "zero\u200bwidth soft\u00adhyphen \ufffd \x00nul",
              "a+b=c <x> $5 ^ | ~ `q` «quote» … “smart”", "A" * 3000, " ".join(f"word{i}" for i in range(400)),
              "def f(x):\n    return x ** 2  # square", "<html><body><p>Hi &amp; bye</p></body></html>"]

needs_sparknlp = pytest.mark.skipif(SCALA != "2.12" or not any(NLP_JARS.glob("spark-nlp_2.12-*.jar")),
                                    reason="needs the Spark 3.5 venv and spark-nlp's jars: make spark3.5-test")


def cosines(a: dict[int, list[float]], b: dict[int, list[float]]) -> np.ndarray:
    assert a.keys() == b.keys()
    x = np.array([a[k] for k in sorted(a)], np.float64)
    y = np.array([b[k] for k in sorted(a)], np.float64)
    return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)


def test_the_engine_is_refused_on_spark4_in_one_line():
    if SCALA == "2.12":
        pytest.skip("this pyspark is a Spark 3.5 build, where the engine runs")
    with pytest.raises(ConfigError, match=r"^config key embed.engine = 'spark-nlp'; expected sentence-transformers: "
                                          r"spark-nlp needs the Spark 3.5 build .*make venv SPARK=3.5"):
        load_config(None, ["embed.engine=spark-nlp"])
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "semmem"), "run", "--set", "embed.engine=spark-nlp"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    error = proc.stderr.splitlines()[0]  # the next line: where the log with the trace is
    assert error.startswith("semmem: error: config key embed.engine = 'spark-nlp'; expected sentence-transformers: "
                            "spark-nlp needs the Spark 3.5 build"), proc.stderr


def test_a_jar_folder_without_spark_nlp_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"embed.sparknlp_jars=.* holds no spark-nlp_2.12-\*.jar: run `make venv "
                                          r"SPARK=3.5`"):
        sparknlp_jars(str(tmp_path))


def test_a_model_other_than_bert_with_mean_pooling_is_refused(tmp_path):
    pytest.importorskip("sentence_transformers")
    from semmem.features.embeddings_sparknlp import export_onnx

    model = tmp_path / "cls-pooled"
    shutil.copytree(resolve_embedding_model(DEFAULT_EMBEDDING_MODEL).path, model)
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True,
                                   "pooling_mode": "cls"}))
    with pytest.raises(ModelError, match="is not a BERT transformer with mean pooling .* use "
                                         "embed.engine=sentence-transformers"):
        export_onnx(str(model), tmp_path / "export")
    assert not (tmp_path / "export").exists()


@pytest.mark.spark35
@needs_sparknlp
def test_both_engines_agree_on_the_test_corpus_and_edge_cases():
    from semmem.artifacts import cache_dir
    from semmem.features.embeddings_sparknlp import embed_sequences_sparknlp, exported, load_annotator
    from semmem.spark import build_session

    spark = build_session(load_config(None, [*TEST_OVERRIDES, "embed.engine=spark-nlp"]))
    if not spark.sparkContext.getConf().get("spark.jars", "").count("spark-nlp_2.12-"):
        pytest.skip("a session without spark-nlp's jars already runs in this process: run this file alone")
    texts = [d["text"][i:i + 300] for d in documents(7, 60) for i in range(0, min(len(d["text"]), 900), 300)]
    rows = [(i, t) for i, t in enumerate(texts + EDGE_TEXTS + [None, texts[0]])]
    sequences = spark.createDataFrame(rows, "sequence_id long, text string")
    model = resolve_embedding_model(DEFAULT_EMBEDDING_MODEL)
    annotator = load_annotator(spark, exported(model.path, model.version, cache_dir()))
    nlp = {r.sequence_id: r.embedding for r in embed_sequences_sparknlp(sequences, annotator, 2).collect()}
    udf = {r.sequence_id: r.embedding for r in embed_sequences(sequences, DEFAULT_EMBEDDING_MODEL, partitions=2)
           .collect()}
    assert len(nlp) == len(rows)
    c = cosines(nlp, udf)
    assert c.min() >= 0.999, [(rows[i][1][:40] if rows[i][1] else rows[i][1], float(c[i]))
                              for i in np.flatnonzero(c < 0.999)]
    assert nlp[len(rows) - 1] == nlp[0]  # a repeated text gets its first copy's vector
    assert nlp[len(rows) - 2] == nlp[len(texts)]  # NULL is embedded as ""


@pytest.mark.spark35
@needs_sparknlp
def test_both_engines_agree_on_every_sequence_of_the_embedded_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_")}
    semmem = [str(ROOT / ".venv-spark3.5" / "bin" / "semmem"), "run", "--config", str(ROOT / "conf" / "local.yaml"),
              "--set", "spark.master=local[2]"]
    udf_wh, nlp_wh = tmp_path / "udf", tmp_path / "nlp"
    for wh, stages, engine in ((udf_wh, "ingest,embed", "sentence-transformers"), (nlp_wh, "embed", "spark-nlp")):
        if wh == nlp_wh:
            shutil.copytree(udf_wh, nlp_wh)
        proc = subprocess.run([*semmem, "--stages", stages, "--set", f"warehouse={wh}", "--set",
                               f"embed.engine={engine}"], capture_output=True, text=True, cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from deltalake import DeltaTable

    tables = [DeltaTable(str(wh / "embeddings")) for wh in (udf_wh, nlp_wh)]
    udf, nlp = ({r["sequence_id"]: r["embedding"] for r in t.to_pyarrow_table().to_pylist()} for t in tables)
    n = DeltaTable(str(udf_wh / "sequences")).to_pyarrow_table().num_rows
    assert len(udf) == len(nlp) == n > 200
    assert cosines(nlp, udf).min() >= 0.999
    assert json.loads(tables[1].history(1)[0]["userMetadata"])["engine"] == "spark-nlp"
