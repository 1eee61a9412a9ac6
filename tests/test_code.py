"""Code vs natural language: the trained classifier separates code from prose deterministically, the transformer path
equals a direct softmax, is_code follows the two thresholds, and the stages write what direct calls compute."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from tokenizers import Tokenizer

from semmem import code_classifier as cc
from semmem.cli import main
from semmem.config import with_overrides
from semmem.errors import ConfigError, InputError, ModelError, StageError
from semmem.features import code as cf
from semmem.ingest.tokenizer import saved_tokenizer_path
from semmem.lineage import status_rows
from semmem.sample import code as sample_code
from semmem.sample import natural_language
from semmem.stages.code import code, train_code_classifier
from semmem.stages.registry import StageContext, run_stages
from semmem.tables import Warehouse
from tests.corpus import small_tokenizer, write_jsonl

THRESHOLDS = {"nl_threshold": 0.525, "code_threshold": 0.4}


def labelled_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    """n windows of 120-300 characters, alternately from generated code (1) and generated prose (0)."""
    r = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        doc = sample_code(r) if label else natural_language(r)
        start = r.randint(0, max(0, len(doc) - 300))
        texts.append(doc[start:start + r.randint(120, 300)])
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def trained() -> cf.TrainedClassifier:
    texts, labels = labelled_texts(200, seed=1)
    return cf.train_classifier(texts, labels, holdout_fraction=0.2, seed=7, **THRESHOLDS)


def test_classifier_separates_generated_code_from_prose(trained):
    assert trained.metrics["held_out"]["f1_code"] == 1.0 and trained.metrics["held_out"]["n"] == 40
    assert trained.metrics["rows"] == {"train": 128, "validation": 32, "train_final": 160, "held_out": 40,
                                       "code": 100, "natural_language": 100}
    assert {v["variant"] for v in trained.metrics["variants"]} == {v.name for v in cf.VARIANTS}
    texts, labels = labelled_texts(60, seed=99)  # unseen texts
    scores = cf.nl_scores_of(trained.pipeline, texts)
    assert all((s < 0.5) == (y == cf.CODE) for s, y in zip(scores, labels)), scores


def test_training_is_deterministic_for_a_seed(trained):
    texts, labels = labelled_texts(200, seed=1)
    again = cf.train_classifier(texts, labels, holdout_fraction=0.2, seed=7, **THRESHOLDS)
    probe, _ = labelled_texts(30, seed=5)
    assert again.metrics == trained.metrics
    np.testing.assert_array_equal(cf.nl_scores_of(again.pipeline, probe), cf.nl_scores_of(trained.pipeline, probe))


def test_binary_metrics_by_hand():
    # code rows 0, 1, 4; cut at 0.5 predicts code for rows 0, 3, 4: code TP 2, FP 1, FN 1
    m = cf.binary_metrics([1, 1, 0, 0, 1], np.array([0.1, 0.6, 0.7, 0.3, 0.45]), **THRESHOLDS)
    assert m["f1_code"] == pytest.approx(2 / 3) and m["precision_code"] == pytest.approx(2 / 3)
    assert m["recall_code"] == pytest.approx(2 / 3) and m["f1_nl"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.6) and m["roc_auc"] == pytest.approx(4 / 6)  # 4 of 6 pairs ordered
    assert m["uncertain_fraction"] == pytest.approx(0.2) and m["accuracy_certain"] == pytest.approx(0.5)
    assert m["f1_nl_best_threshold"] == pytest.approx(2 / 3)  # NL above 0.7 (P 1, R 1/2) or above 0.3 (P 1/2, R 1)
    assert (m["n"], m["n_code"]) == (5, 3)


def test_is_code_rule(spark):
    scores = [0.0, 0.4, 0.40001, 0.5, 0.52499, 0.525, 1.0, None]
    df = spark.createDataFrame([(s,) for s in scores], "nl_score double")
    got = [r.c for r in df.select(cf.is_code_of(F.col("nl_score"), **THRESHOLDS).alias("c")).collect()]
    assert got == [True, True, None, None, None, False, False, None]
    tie = df.select(cf.is_code_of(F.col("nl_score"), nl_threshold=0.5, code_threshold=0.5).alias("c")).collect()
    assert [r.c for r in tie] == [True, True, True, True, False, False, False, None]  # code wins at 0.5
    with pytest.raises(ConfigError, match="need 0 <= code_threshold <= nl_threshold <= 1"):
        cf.check_thresholds(0.4, 0.6)


# ---------------------------------------------------------------------------------------------- transformers path
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 1-layer DistilBERT classifier with a WordPiece tokenizer trained on generated text, save_pretrained."""
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(labelled_texts(100, seed=3)[0], trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", wp.token_to_id("[CLS]")), ("[SEP]", wp.token_to_id("[SEP]"))])
    DistilBertTokenizerFast(tokenizer_object=wp).save_pretrained(folder)
    torch.manual_seed(0)
    net = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=wp.get_vocab_size(), dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=512,
        num_labels=2, pad_token_id=0))
    net.save_pretrained(folder)
    return folder


def softmax_reference(folder: Path, texts: list[str]) -> np.ndarray:
    """One text at a time, no padding: [CLS] ids [SEP] cut to 512 by hand, P(label 0) = softmax of the logits."""
    from transformers import AutoTokenizer, DistilBertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(folder)
    net = DistilBertForSequenceClassification.from_pretrained(folder).eval()
    out = []
    for t in texts:
        ids = tok(t)["input_ids"]
        if len(ids) > 512:
            ids = ids[:511] + [tok.sep_token_id]
        with torch.no_grad():
            logits = net(input_ids=torch.tensor([ids])).logits[0].double()
        out.append(float(torch.exp(logits[0]) / torch.exp(logits).sum()))
    return np.array(out)


def test_transformers_scores_equal_a_direct_softmax(tiny_bert, tmp_path):
    model = cc.resolve_code_model(str(tiny_bert), tmp_path)
    assert model.kind == "transformers" and model.hub_id is None and len(model.version) == 16
    texts = labelled_texts(7, seed=4)[0] + ["word " * 700, ""]  # one past 512 tokens, one empty
    got = cf.make_code_predict_fn(model, batch_size=3, device="cpu")()(np.array(texts, dtype=object))
    np.testing.assert_allclose(got, softmax_reference(tiny_bert, texts), rtol=0, atol=1e-5)
    assert got.dtype == np.float64 and len(set(np.round(got, 6))) > 1  # not a constant


# ---------------------------------------------------------------------------------------------------------- stages
def sequences_table(spark, wh: Warehouse, n: int, seed: int) -> list[tuple[int, str, str | None]]:
    """A sequences table of generated texts: code rows from 'Github', prose from other sets, a few NULL set names."""
    texts, labels = labelled_texts(n, seed)
    sets = ["Github" if y else ["Pile-CC", "FreeLaw", "ArXiv"][i % 3] for i, y in enumerate(labels)]
    rows = [(i, t, None if i % 17 == 5 else s) for i, (t, s) in enumerate(zip(texts, sets))]
    rows.append((n, texts[1], "Github"))  # a repeated text: scored once, same score twice
    df = spark.createDataFrame([(i, [1, 2], t, t[:20], s) for i, t, s in rows],
                               "sequence_id long, tokens array<int>, text string, prompt_text string, "
                               "pile_set_name string")
    wh.write(df, "sequences")
    return rows


def human_file(path: Path) -> Path:
    texts, labels = labelled_texts(24, seed=11)
    return write_jsonl(path, [{"id": i, "text": t, "label_is_code": y} for i, (t, y) in enumerate(zip(texts, labels))]
                       + [{"id": 99, "text": "unlabelled", "label_is_code": None}])


def test_stages_train_from_pile_set_name_and_write_code_scores(spark, base_cfg, tmp_path):
    wh = Warehouse(spark, base_cfg.warehouse)
    rows = sequences_table(spark, wh, 120, seed=21)
    Path(saved_tokenizer_path(wh.root)).parent.mkdir(parents=True)
    small_tokenizer(Path(saved_tokenizer_path(wh.root)))
    human = human_file(tmp_path / "human.jsonl")
    cfg = with_overrides(base_cfg, ["code.model=trained", f"code_classifier.eval_labels={human}"])
    ctx = StageContext(spark, cfg, wh)
    train_code_classifier(ctx)
    folder = Path(cc.trained_classifier_dir(wh.root))
    metrics = cc.read_metrics(folder)
    labelled = [r for r in rows if r[2] is not None]
    assert metrics["rows"]["code"] == sum(r[2] == "Github" for r in labelled)
    assert metrics["rows"]["code"] + metrics["rows"]["natural_language"] == len(labelled)
    # the human texts, cut to 64 tokens of the warehouse tokenizer by hand, scored by the saved classifier
    tok = Tokenizer.from_file(saved_tokenizer_path(wh.root))
    h = [json.loads(line) for line in human.read_text().splitlines()][:-1]
    windows = [tok.decode(tok.encode(x["text"], add_special_tokens=False).ids[:64], skip_special_tokens=False)
               for x in h]
    pipeline = cc.load_classifier(folder)
    want = cf.binary_metrics([x["label_is_code"] for x in h], cf.nl_scores_of(pipeline, windows), **THRESHOLDS)
    assert metrics["human_labels"] == pytest.approx(want) and metrics["eval_window"].startswith("first 64 tokens")

    code(ctx)
    scores = cf.nl_scores_of(pipeline, [r[1] for r in rows])
    expected = [(r[0], float(s), True if s <= 0.4 else False if s >= 0.525 else None) for r, s in zip(rows, scores)]
    assertDataFrameEqual(wh.read("code_scores"),
                         spark.createDataFrame(expected, "sequence_id long, nl_score double, is_code boolean"),
                         rtol=0, atol=1e-12)
    meta = wh.commit_metadata("code_scores")
    assert (meta["model"], meta["kind"], meta["model_version"]) == ("trained", "sklearn", metrics["fingerprint"])
    assert meta["metrics"] == str(folder / cc.METRICS_FILE)

    mtime = (folder / cc.CLASSIFIER_FILE).stat().st_mtime_ns
    train_code_classifier(ctx)  # same config, same sequences version: nothing to do
    assert (folder / cc.CLASSIFIER_FILE).stat().st_mtime_ns == mtime


def test_code_stage_with_a_transformer_folder(spark, base_cfg, tiny_bert):
    wh = Warehouse(spark, base_cfg.warehouse)
    rows = sequences_table(spark, wh, 40, seed=22)
    ctx = StageContext(spark, with_overrides(base_cfg, [f"code.model={tiny_bert}"]), wh)
    train_code_classifier(ctx)  # a transformer named: nothing to train
    assert not Path(cc.trained_classifier_dir(wh.root)).exists()
    code(ctx)  # through predict_batch_udf
    ref = softmax_reference(tiny_bert, [r[1] for r in rows])
    got = {r.sequence_id: (r.nl_score, r.is_code) for r in wh.read("code_scores").collect()}
    np.testing.assert_allclose([got[r[0]][0] for r in rows], ref, rtol=0, atol=1e-5)
    assert all(c == (True if s <= 0.4 else False if s >= 0.525 else None) for s, c in got.values())
    meta = wh.commit_metadata("code_scores")
    assert (meta["model"], meta["kind"], meta["metrics"]) == (str(tiny_bert), "transformers", None)


def test_train_from_a_labels_file_with_a_cap(spark, base_cfg, tmp_path, capsys):
    wh = Warehouse(spark, base_cfg.warehouse)
    sequences_table(spark, wh, 30, seed=2)
    texts, labels = labelled_texts(150, seed=8)
    labels_file = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label_is_code": y}
                                                         for t, y in zip(texts, labels)])
    rc = main(["train-code-classifier", "--set", f"warehouse={wh.root}", "--set",
               f"code_classifier.labels={labels_file}", "--set", "code_classifier.max_train_rows=100",
               "--set", "code_classifier.eval_labels=null"])
    assert rc == 0
    metrics = cc.read_metrics(cc.trained_classifier_dir(wh.root))
    assert metrics["labels"] == str(labels_file) and metrics["labels_source"].startswith("file sha256:")
    assert metrics["rows"]["code"] + metrics["rows"]["natural_language"] == 100  # capped
    assert metrics["held_out"]["f1_code"] == 1.0 and "human_labels" not in metrics
    out = capsys.readouterr().out
    assert "held out:     F1(code) 1.000" in out and "not evaluated" in out


def test_an_edited_labels_file_makes_code_scores_stale(spark, base_cfg, tmp_path):
    wh = Warehouse(spark, base_cfg.warehouse)
    sequences_table(spark, wh, 30, seed=3)
    texts, labels = labelled_texts(80, seed=8)
    labels_file = tmp_path / "train.jsonl"
    write_jsonl(labels_file, [{"text": t, "label_is_code": y} for t, y in zip(texts, labels)])
    cfg = with_overrides(base_cfg, ["code.model=trained", f"code_classifier.labels={labels_file}",
                                    "code_classifier.eval_labels=null"])
    ctx, both = StageContext(spark, cfg, wh), ["train_code_classifier", "code"]
    assert run_stages(ctx, both, force=()) == both
    assert run_stages(ctx, both, force=()) == ["train_code_classifier"]  # a table-less stage always runs (and skips)
    before = {r.sequence_id: r.nl_score for r in wh.read("code_scores").collect()}

    write_jsonl(labels_file, [{"text": t, "label_is_code": 1 - y} for t, y in zip(texts, labels)])  # in place
    assert "stale: code model changed" in {r.table: r.state for r in status_rows(wh.root, cfg)}["code_scores"]
    with pytest.raises(StageError, match="run stage 'train_code_classifier' first"):
        run_stages(ctx, ["code"], force=())  # the saved classifier is the old one
    assert run_stages(ctx, both, force=()) == both
    after = {r.sequence_id: r.nl_score for r in wh.read("code_scores").collect()}
    assert after.keys() == before.keys() and all((after[k] > 0.5) != (before[k] > 0.5) for k in after)
    assert wh.commit_metadata("code_scores")["model_version"] == cc.read_metrics(
        cc.trained_classifier_dir(wh.root))["fingerprint"]
    assert {r.table: r.state for r in status_rows(wh.root, cfg)}["code_scores"] == "current"


# ---------------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("lines, match", [
    (None, "does not exist"),
    ([b'{"text": "a", "label_is_code": 1}', b"not json"], "line 2 is not JSON"),
    ([b'{"label_is_code": 1}'], "line 1 has no string 'text'"),
    ([b'{"text": "a", "label_is_code": 2}'], "label_is_code = 2; expected 0"),
    ([b'{"text": "a", "label_is_code": null}'], "label_is_code = None"),
])
def test_bad_labels_files(tmp_path, lines, match):
    path = tmp_path / "labels.jsonl"
    if lines is not None:
        write_jsonl(path, lines)
    with pytest.raises(InputError, match=match):
        cc.read_labels_file(path)


def test_one_class_of_labels(tmp_path):
    with pytest.raises(InputError, match="found 0 code and 30 natural-language texts; need at least 10 of each"):
        cf.check_classes([0] * 30, "x")


def test_no_classifier_and_missing_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(cc, "_hub_folder", lambda *a, **k: None)  # upstream's model neither cached nor reachable
    with pytest.raises(ModelError, match="usvsnsp/code-vs-nl is not in the local .* Run `semmem train-code-classifier"):
        cc.resolve_code_model("auto", tmp_path)
    with pytest.raises(ModelError, match="no trained code classifier exists at .*code-classifier"):
        cc.resolve_code_model("trained", tmp_path)
    with pytest.raises(ModelError, match="no such folder"):
        cc.resolve_code_model(str(tmp_path / "nope"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="holds neither classifier.joblib"):
        cc.resolve_code_model(str(tmp_path / "empty"), tmp_path)


def test_auto_prefers_upstream_when_available(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.setattr(cc, "_hub_folder", lambda *a, **k: str(tiny_bert))
    model = cc.resolve_code_model("auto", tmp_path)
    assert (model.name, model.kind, model.hub_id, model.version) == (cf.UPSTREAM_MODEL, "transformers",
                                                                     cf.UPSTREAM_MODEL, tiny_bert.name)


def test_cli_errors_without_traceback(spark, base_cfg, tmp_path, capsys):
    wh = Warehouse(spark, base_cfg.warehouse)
    sequences_table(spark, wh, 20, seed=3)
    base = ["train-code-classifier", "--set", f"warehouse={wh.root}"]
    assert main([*base, "--set", f"code_classifier.labels={tmp_path / 'missing.jsonl'}"]) == 2
    assert "labels file" in capsys.readouterr().err
    assert main([*base, "--set", "code_classifier.code_sets=[Nope]"]) == 2
    assert "found 0 code" in capsys.readouterr().err
    human = human_file(tmp_path / "h.jsonl")
    assert main([*base, "--set", f"code_classifier.labels={human}", "--set",
                 f"code_classifier.eval_labels={human}"]) == 2
    assert "evaluation only" in capsys.readouterr().err
