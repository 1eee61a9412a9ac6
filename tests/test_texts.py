"""`semmem texts` (stage texts): a user's texts tokenized with the model's own tokenizer, scored over windows at their
real length (no padding), beside the corpus. References are written from the definitions: windows and spans by
plain loops, scores by `generate()` from the unpadded prompt (tests/reference_scoring.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from semmem.cli import main
from semmem.config import load_config, with_overrides
from semmem.errors import ConfigError, InputError, ModelError
from semmem.ingest.texts import memorized_spans, text_answer, window_starts
from semmem.ingest.tokenizer import tokenizer_digest, train_bpe
from semmem.scoring.memorization import continuation_length, score_tokens
from semmem.stages.registry import StageContext, run_stages
from semmem.tables import Warehouse
from tests.corpus import small_tokenizer, write_jsonl
from tests.reference_scoring import memorization_reference

WORDS = "the quiet river reads every journey near an old harbour while lanterns drift past".split()


# ------------------------------------------------------------------------------------------------ pure functions
def reference_windows(n: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of every window, from the definition: one window for up to 64 tokens; else a window at each
    multiple of the stride that fits whole, and the window that ends at the last token."""
    if n <= 64:
        return [(0, n)]
    out = [(s, 64) for s in range(0, n) if s % stride == 0 and s + 64 <= n]
    if out[-1][0] + 64 != n:
        out.append((n - 64, 64))
    return out


@pytest.mark.parametrize("n", [2, 20, 63, 64, 65, 95, 96, 97, 300, 1000])
@pytest.mark.parametrize("stride", [1, 7, 32])
def test_window_starts(n, stride):
    got = window_starts(n, stride)
    assert [(s, min(64, n - s)) for s in got] == reference_windows(n, stride)
    if n > 64:  # every token after the first 32 lies in some window's continuation
        assert {t for s in got for t in range(s + 32, s + 64)} == set(range(32, n))


def test_memorized_spans_merge_overlapping_and_touching_runs():
    assert memorized_spans(np.array([96, 32, 200, 64]), np.array([128, 64, 232, 96])) == [(32, 128), (200, 232)]
    assert memorized_spans(np.array([10]), np.array([20])) == [(10, 20)]
    assert memorized_spans(np.array([], int), np.array([], int)) == []


def test_text_answer_takes_the_longest_span_and_the_best_window():
    w = pd.DataFrame({"token_start": [0, 32, 64, 96], "n_tokens": [64] * 4, "continuation_start": [32, 64, 96, 128],
                      "continuation_char_start": [100, 200, 300, 400], "char_end": [200, 300, 400, 500],
                      "is_memorized": [True, False, True, True], "matched_prefix": [32, 3, 32, 32],
                      "memorization_score": [1.0, 0.4, 1.0, 1.0], "loss": [0.1, 2.0, 0.05, 0.2],
                      "stream_count": [4.0, np.nan, 9.0, 1.0]})
    got = text_answer(w)
    assert got == {"memorized": True, "windows": 4, "memorized_windows": 3, "span_tokens": 64,
                   "span_token_start": 96, "span_char_start": 300, "span_char_end": 500, "best_matched_prefix": 32,
                   "best_memorization_score": 1.0, "lowest_loss": 0.05, "stream_count": 9}
    none = text_answer(w.assign(is_memorized=False, stream_count=np.nan))
    assert not none["memorized"] and none["span_tokens"] == 0 and none["span_char_start"] is None
    assert none["stream_count"] is None


def tiny_model(vocab: int, seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, eos_token_id=0, bos_token_id=0)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.mark.parametrize("length", [2, 20, 33, 40, 64])
def test_short_windows_are_scored_unpadded_like_generate(length):
    """A window of L real tokens: continuation = the last min(32, L-1), prompt = the rest, exactly what generate()
    gives from the unpadded prompt (EOS excluded as min_length does)."""
    model = tiny_model(300)
    rng = np.random.default_rng(length)
    tokens = torch.as_tensor(rng.integers(1, 300, (6, length)))
    with torch.no_grad():  # make a few rows follow the model's own greedy choice: some memorized, some prefixes
        prompt = length - continuation_length(length)
        greedy = model.generate(input_ids=tokens[:, :prompt], attention_mask=torch.ones_like(tokens[:, :prompt]),
                                max_length=length, min_length=length, do_sample=False, eos_token_id=0,
                                pad_token_id=0)
    tokens[:3] = greedy[:3]
    if length > 4:
        tokens[1, -2] = (tokens[1, -2] + 1) % 299 + 1  # a late first mismatch
    got = score_tokens(model, tokens)
    want = memorization_reference(model, tokens, prompt_length=prompt)
    assert got["matched_prefix"].tolist() == [w["matched_prefix"] for w in want]
    assert got["memorization_score"].tolist() == [w["memorization_score"] for w in want]
    assert got["is_memorized"].tolist() == [w["is_memorized"] for w in want]
    assert got["is_memorized"][0] and got["is_memorized"][2]


# ------------------------------------------------------------------------------------------------ the stage
PASSAGE_STEPS = 350


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer.from_file(str(small_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")))


def words(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


@pytest.fixture(scope="module")
def memorizing_model(tmp_path_factory, tokenizer):
    """A tiny model trained to recite one 64-token passage, saved with its tokenizer: (folder, passage ids)."""
    rng = np.random.default_rng(5)
    ids = tokenizer.encode(words(rng, 120), add_special_tokens=False).ids[:64]
    model = tiny_model(tokenizer.get_vocab_size(), seed=1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    batch = torch.tensor([ids])
    for _ in range(PASSAGE_STEPS):
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = tmp_path_factory.mktemp("models") / "reciter"
    model.eval().save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(folder)
    assert score_tokens(model, batch)["is_memorized"].tolist() == [True]
    return folder, ids


def _run(spark, base_cfg, tmp_path, records, *overrides):
    write_jsonl(tmp_path / "texts.jsonl", records)
    cfg = with_overrides(base_cfg, [f"texts.path=[{tmp_path / 'texts.jsonl'}]", *overrides])
    wh = Warehouse(spark, cfg.warehouse)
    run_stages(StageContext(spark, cfg, wh), ["texts"])
    return wh


def test_texts_are_windowed_scored_and_answered(spark, base_cfg, tmp_path, tokenizer, memorizing_model):
    folder, passage = memorizing_model
    rng = np.random.default_rng(9)
    text_of = tokenizer.decode
    before = words(rng, 90)
    while len(tokenizer.encode(before + "\n").ids) % 32:  # the passage starts on a window boundary
        before += " " + str(rng.choice(WORDS))
    doc = before + "\n" + text_of(passage) + "\n" + words(rng, 120)
    doc_ids = tokenizer.encode(doc, add_special_tokens=False).ids
    at = len(tokenizer.encode(before + "\n").ids)
    assert doc_ids[at:at + 64] == passage and len(doc_ids) > 250  # the test's premise
    texts = [text_of(passage), doc, words(rng, 12), "w w"]
    wh = _run(spark, base_cfg, tmp_path, [{"text": t} for t in texts], f"texts.models=[{folder}]")

    rows = {r["text_id"]: r for r in wh.read("texts").toPandas().to_dict("records")}
    assert [rows[i]["text"] for i in range(4)] == texts
    assert {r["tokenizer"] for r in rows.values()} == {tokenizer_digest(tokenizer)}
    windows = wh.read("text_windows").orderBy("text_id", "window").toPandas()
    ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    for i, t in enumerate(ids):
        mine = windows[windows.text_id == i]
        assert [(r.token_start, r.n_tokens) for r in mine.itertuples()] == reference_windows(len(t), 32)
        assert [list(r.tokens) for r in mine.itertuples()] == [t[s:s + n] for s, n in reference_windows(len(t), 32)]
    assert windows["stream_count"].isna().all()  # no training stream in this warehouse

    scored = wh.read("text_memorization").toPandas().merge(windows, on=["text_id", "window"])
    model = GPTNeoXForCausalLM.from_pretrained(folder).eval()
    for r in scored.itertuples():  # each window as score_tokens scores it alone, at its own length
        want = score_tokens(model, torch.tensor([list(r.tokens)]))
        assert (r.matched_prefix, r.memorization_score, r.is_memorized) == (
            int(want["matched_prefix"][0]), float(want["memorization_score"][0]), bool(want["is_memorized"][0]))
        assert r.continuation_length == min(32, r.n_tokens - 1)
        assert r.loss == pytest.approx(np.log(float(want["generation_perplexity"][0])), rel=1e-9)

    answers = {r["text_id"]: r for r in wh.read("text_answers").toPandas().to_dict("records")}
    assert answers[0]["memorized"] and answers[0]["span_tokens"] == 32 and answers[0]["span_token_start"] == 32
    found = answers[1]
    assert found["memorized"] and found["span_token_start"] == at + 32 and found["span_tokens"] >= 32
    starts = [s for s, _ in tokenizer.encode(doc, add_special_tokens=False).offsets]
    assert found["span_char_start"] == starts[at + 32]
    assert doc[int(found["span_char_start"]):int(found["span_char_end"])].strip() in text_of(passage)
    assert not answers[2]["memorized"] and answers[2]["windows"] == 1


def test_texts_beside_a_corpus_count_in_its_stream(spark, base_cfg, tmp_path, tokenizer, memorizing_model):
    """A warehouse whose stream was made with the model's tokenizer: windows of 64 get their continuation's exact
    count in the stream (a plain count here); the corpus tables keep their versions."""
    folder, passage = memorizing_model
    rows = [(0, [*passage, 0, *passage, 0, *passage[:40]]), (1, [7] * 40 + passage[32:] + [0] * 100)]
    wh = ingested(spark, base_cfg, tokenizer, passage, rows)
    versions = {t: wh.version(t) for t in ("token_rows", "sequences")}
    _run(spark, base_cfg, tmp_path, [{"text": tokenizer.decode(passage), "id": 77}], f"texts.models=[{folder}]")
    wh.refresh()
    cont = passage[32:]
    want = sum(r[i:i + 32] == cont for _, r in rows for i in range(len(r) - 31))
    got = wh.read("text_windows").collect()[0]["stream_count"]
    assert got == want == 3
    assert wh.read("texts").collect()[0]["id"] == 77
    assert {t: wh.version(t) for t in versions} == versions


def ingested(spark, base_cfg, tokenizer: Tokenizer, sequence: list[int], rows: list | None = None) -> Warehouse:
    """A warehouse as ingest leaves it: sequences (one row) and, given `rows`, a training stream, with `tokenizer`
    recorded as the one they were made with."""
    from semmem.ingest.tokenizer import save_tokenizer

    wh = Warehouse(spark, base_cfg.warehouse)
    _, location = save_tokenizer(wh.root, tokenizer)
    wh.begin_stage("ingest", ["token_rows", "sequences"], {}, {})
    wh.add_side_file("tokenizer", location)
    if rows is not None:
        wh.write(spark.createDataFrame(rows, "row_id long, tokens array<int>"), "token_rows", mode="overwrite")
    wh.write(spark.createDataFrame([(0, sequence, "t", "p", None)], "sequence_id long, tokens array<int>, "
                                   "text string, prompt_text string, pile_set_name string"), "sequences",
             mode="overwrite")
    wh.publish()
    return wh


def test_semmem_texts_prints_the_answer(spark, tmp_path, capsys, memorizing_model, tokenizer):
    folder, passage = memorizing_model
    write_jsonl(tmp_path / "mine.jsonl", [{"text": tokenizer.decode(passage), "id": 5}, {"text": "w w w"}])
    write_jsonl(tmp_path / "ids.jsonl", [{"text": tokenizer.decode(passage), "id": 5}])
    rc = main(["texts", "--warehouse", str(tmp_path / "wh"), "--model", str(folder), str(tmp_path / "ids.jsonl"),
               "--set", "spark.master=local[2]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Did the model memorize these texts?" in out
    line = next(x for x in out.splitlines() if "ids.jsonl:1" in x)
    assert line.split()[0] == "5" and " yes " in line and "32 tokens from token 32" in line


@pytest.mark.parametrize("records, match", [
    ([], "empty_shard"),
    ([{"text": "a b c"}, {"nope": 1}], r"line 2: missing_text"),
    ([{"text": "a b c"}, b"{not json"], r"line 2: invalid_json"),
    ([{"text": "a b c"}, {"text": "  "}], r"line 2: empty_text"),
    ([{"text": "a"}], r"line 1: too_short"),
    ([{"text": "a b c", "id": 1}, {"text": "d e f"}], "1 of 2 lines have an 'id'"),
])
def test_bad_texts_are_one_line_errors_and_nothing_is_written(spark, base_cfg, tmp_path, memorizing_model,
                                                              records, match):
    folder, _ = memorizing_model
    with pytest.raises(InputError, match=match):
        _run(spark, base_cfg, tmp_path, records, f"texts.models=[{folder}]")
    assert not Warehouse(spark, base_cfg.warehouse).exists("texts")


def test_models_the_texts_cannot_be_tokenized_for(spark, base_cfg, tmp_path, memorizing_model):
    folder, _ = memorizing_model
    bare = tmp_path / "bare"
    GPTNeoXForCausalLM.from_pretrained(folder).save_pretrained(bare)  # weights, no tokenizer
    with pytest.raises(ModelError, match="ships no tokenizer"):
        _run(spark, base_cfg, tmp_path, [{"text": "a b c"}], f"texts.models=[{bare}]")
    other = tmp_path / "other"
    GPTNeoXForCausalLM.from_pretrained(folder).save_pretrained(other)
    PreTrainedTokenizerFast(tokenizer_object=train_bpe(["x y z"] * 5, 300),
                            eos_token="<|endoftext|>").save_pretrained(other)
    with pytest.raises(ModelError, match="use different tokenizers"):
        _run(spark, base_cfg, tmp_path, [{"text": "a b c"}], f"texts.models=[{folder}, {other}]")
    with pytest.raises(ModelError, match="neither a local folder nor a trained checkpoint"):
        _run(spark, base_cfg, tmp_path, [{"text": "a b c"}], "texts.models=[trained-l@step9]")
    with pytest.raises(ConfigError, match="texts.stride = 40"):  # said when the config is made
        _run(spark, base_cfg, tmp_path, [{"text": "a b c"}], f"texts.models=[{folder}]", "texts.stride=40")
    assert not Warehouse(spark, base_cfg.warehouse).exists("texts")


def test_scoring_sequences_of_another_tokenizer_is_an_error(spark, base_cfg, tmp_path, memorizing_model):
    """The warehouse's sequences were made with one tokenizer, the model ships another of the same size: a one-line
    error naming both, before any task runs."""
    folder, passage = memorizing_model
    other = train_bpe(["x y z w"] * 5, Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size())
    wh = ingested(spark, base_cfg, other, passage)
    location = wh.side_file("sequences", "tokenizer")
    cfg = with_overrides(base_cfg, [f"model.names=[{folder}]"])
    with pytest.raises(ModelError, match=rf"^tokenizer mismatch: the sequences were tokenized with {location} "
                                         rf"\(digest {tokenizer_digest(other)}\) but model {folder}@local was trained "
                                         rf"with {folder}/tokenizer.json"):
        run_stages(StageContext(spark, cfg, wh), ["score"])
    assert not wh.exists("memorization")


def test_texts_jsonl_is_no_corpus_format():
    with pytest.raises(ConfigError, match="input.format = 'texts-jsonl'"):
        load_config(None, ["input.format=texts-jsonl"])
