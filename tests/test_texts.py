"""Ingest of user texts (input.format texts-jsonl): one evaluation sequence per line, cut or left-padded to 64 tokens,
against a reference made with the tokenizer directly; ids; bad lines; no training stream."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from semmem.config import with_overrides
from semmem.errors import InputError, StageError
from semmem.stages.registry import StageContext, run_stages
from semmem.tables import Warehouse
from tests.corpus import small_tokenizer, write_jsonl

LONG = "The quiet river reads every journey near the old harbour. " * 12


def _ingest(spark, base_cfg, tmp_path, files: dict[str, list], *overrides: str) -> Warehouse:
    folder = tmp_path / "texts"
    folder.mkdir(exist_ok=True)
    for name, records in files.items():
        write_jsonl(folder / name, records)
    tok = small_tokenizer(tmp_path / "tokenizer.json")
    cfg = with_overrides(base_cfg, ["input.format=texts-jsonl", f"input.path=[{folder}]", f"tokenizer.name={tok}",
                                    *overrides])
    wh = Warehouse(spark, cfg.warehouse)
    run_stages(StageContext(spark, cfg, wh), ["ingest"])
    return wh


def reference_window(tok: Tokenizer, text: str) -> tuple[list[int], str, str]:
    """The spec of texts-jsonl written plainly: first 64 ids, or <|padding|> ids in front up to 64; texts decoded
    from the text's own ids (all of them, and those inside the 32-token prompt)."""
    ids = tok.encode(text, add_special_tokens=False).ids[:64]
    pad = tok.token_to_id("<|padding|>")
    tokens = [pad] * (64 - len(ids)) + ids
    in_prompt = ids[:max(0, 32 - (64 - len(ids)))]
    return tokens, tok.decode(ids, skip_special_tokens=False), tok.decode(in_prompt, skip_special_tokens=False)


def test_texts_become_64_token_sequences(spark, base_cfg, tmp_path):
    texts = ["A short text.", LONG, "def f(x):\n    return x + 1\n" * 4, "Grüße aus Köln ☃", "w " * 40]
    wh = _ingest(spark, base_cfg, tmp_path, {"a.jsonl": [{"text": t, "id": 100 + i} for i, t in enumerate(texts)]})
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    got = {r["sequence_id"]: r for r in wh.read("sequences").toPandas().to_dict("records")}
    assert sorted(got) == [100, 101, 102, 103, 104]
    for i, t in enumerate(texts):
        tokens, text, prompt = reference_window(tok, t)
        row = got[100 + i]
        assert (list(row["tokens"]), row["text"], row["prompt_text"]) == (tokens, text, prompt), t
    assert got[100]["text"] == "A short text." and got[101]["text"] != LONG  # cut at 64 tokens
    assert not wh.exists("token_rows")


def test_without_ids_texts_are_numbered_in_file_order(spark, base_cfg, tmp_path):
    wh = _ingest(spark, base_cfg, tmp_path, {"b.jsonl": [{"text": "third"}, {"text": "fourth"}],
                                             "a.jsonl": [{"text": "first"}, {"text": "second"}]})
    rows = wh.read("sequences").orderBy("sequence_id").select("sequence_id", "text").collect()
    assert [(r.sequence_id, r.text) for r in rows] == [(0, "first"), (1, "second"), (2, "third"), (3, "fourth")]


@pytest.mark.parametrize("records, match", [
    ([{"text": "a", "id": 1}, {"text": "b"}], "1 of 2 lines have an 'id'"),
    ([{"text": "a", "id": 7}, {"text": "b", "id": 7}], "id 7 appears on 2 lines"),
    ([{"text": "a"}, {"text": "   "}], "line 2: empty_text"),
    ([{"text": "a", "id": "x"}], "line 1: bad_id"),
    ([{"text": "a"}, b"{not json"], "line 2: invalid_json"),
])
def test_bad_texts_are_clear_errors(spark, base_cfg, tmp_path, records, match):
    with pytest.raises(InputError, match=match):
        _ingest(spark, base_cfg, tmp_path, {"t.jsonl": records})


def test_bad_lines_can_be_skipped(spark, base_cfg, tmp_path):
    wh = _ingest(spark, base_cfg, tmp_path, {"t.jsonl": [{"text": "kept"}, {"text": ""}, b"{oops", {"text": "too"}]},
                 "ingest.on_bad_record=skip")
    assert [r.text for r in wh.read("sequences").orderBy("sequence_id").collect()] == ["kept", "too"]
    rejects = wh.read("ingest_rejects").orderBy("line").collect()
    assert [(r.line, r.reason) for r in rejects] == [(2, "empty_text"), (3, "invalid_json")]


def test_stages_that_need_a_stream_say_so(spark, base_cfg, tmp_path):
    wh = _ingest(spark, base_cfg, tmp_path, {"t.jsonl": [{"text": json.dumps({"x": 1})}]})
    with pytest.raises(StageError, match="needs the training stream"):
        run_stages(StageContext(spark, base_cfg, wh), ["duplicates"])
