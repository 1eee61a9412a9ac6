"""sequence_occurrences and sequence_exposures (issue 22 §1, §2) against a brute-force search of the stream: every
occurrence of each continuation by row then offset, the cap, the training step, the uncapped count per step, and the
document (jsonl file and line; megatron .idx document), documents across EOD boundaries included."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from semmem.cli import run_pipeline
from semmem.config import DuplicatesConfig, with_overrides
from semmem.stages.corpus import duplicate_scan
from semmem.tables import Warehouse
from tests import reference as ref
from tests.corpus import small_corpus, small_tokenizer, token_documents, write_megatron


def _by_sequence(rows) -> dict[int, list]:
    """sequence_occurrences rows -> {sequence_id: [row, ...] in rank order}, checking ranks are 1..n."""
    got: dict[int, list] = {}
    for r in sorted(rows, key=lambda r: (r["sequence_id"], r["rank"])):
        got.setdefault(r["sequence_id"], []).append(r)
    for found in got.values():
        assert [r["rank"] for r in found] == list(range(1, len(found) + 1))
    return got


@pytest.mark.parametrize("cap,partitions,rows_per_batch,modulus", [(1, 1, 64, 1 << 64), (3, 5, 2, 7),
                                                                    (1000, 3, 7, 1 << 64)])
def test_occurrences_equal_brute_force(spark, base_cfg, cap, partitions, rows_per_batch, modulus):
    rows, sequences = ref.make_stream(seed=3)  # planted copies, one-token runs (129 matches in a row), short rows
    stream = spark.createDataFrame(list(enumerate(rows)), "row_id BIGINT, tokens ARRAY<INT>").repartition(partitions)
    seqs = spark.createDataFrame(list(sequences.items()), "sequence_id BIGINT, tokens ARRAY<INT>")
    d = DuplicatesConfig(max_occurrences=cap, rows_per_batch=rows_per_batch, hash_modulus=modulus)
    per_step = 4
    with duplicate_scan(Warehouse(spark, base_cfg.warehouse), seqs, stream, d, per_step) as scan:
        got = _by_sequence(scan.occurrences.collect())
        counts = {r["sequence_id"]: r["sequence_duplicates"] for r in scan.counts.collect()}
        exposures = {(r["sequence_id"], r["step"]): r["occurrences"] for r in scan.exposures.collect()}
    want = ref.occurrences(dict(enumerate(rows)), sequences, cap)
    assert {sid: [(r["row_id"], r["offset"]) for r in found] for sid, found in got.items()} == want
    assert counts == ref.duplicates(rows, sequences)  # the count stays exact and uncapped
    assert max(len(v) for v in want.values()) == min(cap, 129)
    every = ref.occurrences(dict(enumerate(rows)), sequences, len(rows) * 160)  # per training step, uncapped
    assert exposures == Counter((sid, r // per_step) for sid, found in every.items() for r, _ in found)


def test_jsonl_occurrences_name_their_documents(spark, base_cfg, tmp_path):
    seq, cap, per_step = 100, 4, 3
    shards = small_corpus(tmp_path / "corpus")  # documents span rows; one long document repeats its text 6 times
    tokenizer = small_tokenizer(tmp_path / "tokenizer.json")
    cfg = with_overrides(base_cfg, [f"input.path=[{tmp_path / 'corpus'}]", f"tokenizer.name={tokenizer}",
                                    f"stream.seq_length={seq}", f"duplicates.max_occurrences={cap}",
                                    f"training.rows_per_step={per_step}"])
    run_pipeline(cfg, ["ingest", "duplicates"])
    wh = Warehouse(spark, cfg.warehouse)
    stream, owner = token_documents(shards, tokenizer)
    rows = {r: stream[r * seq:(r + 1) * seq] for r in range(len(stream) // seq)}
    sequences = {r: toks[:64] for r, toks in rows.items()}  # ingest's sequences: the first 64 tokens of each row
    want = ref.occurrences(rows, sequences, cap)
    got = _by_sequence(wh.read("sequence_occurrences").collect())
    assert {sid: [(r["row_id"], r["offset"]) for r in found] for sid, found in got.items()} == want
    documents = set()
    for found in got.values():
        for r in found:
            path, line, subset = owner[r["row_id"] * seq + r["offset"]]  # the document of the window's first token
            assert (r["document"], r["source"], r["step"]) == (f"{path}:{line}", subset, r["row_id"] // per_step)
            documents.add(r["document"])
    assert any(len(v) == cap for v in want.values()) and len(documents) > 10
    crossing = [r for found in got.values() for r in found
                if owner[r["row_id"] * seq + r["offset"]][:2] != owner[r["row_id"] * seq + r["offset"] + 31][:2]]
    assert crossing  # windows that start in one document and end in the next


def test_megatron_occurrences_name_idx_documents(spark, base_cfg, tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.integers(2, 600, size=(12, 80)).astype(np.uint16)
    rows[7, 10:42] = rows[2, 32:64]  # copies of row 2's continuation in two later documents
    rows[11, 48:80] = rows[2, 32:64]
    doc_idx = np.array([0, 3, 4, 9, 12])  # documents of 3, 1, 5 and 3 rows
    write_megatron(tmp_path / "document", rows, doc_idx)
    cfg = with_overrides(base_cfg, ["input.format=megatron", f"input.path=[{tmp_path / 'document'}]",
                                    f"tokenizer.name={small_tokenizer(tmp_path / 'tokenizer.json')}",
                                    "stream.seq_length=80", "ingest.megatron_rows_per_task=5",
                                    "training.rows_per_step=2"])
    run_pipeline(cfg, ["ingest", "duplicates"])
    got = _by_sequence(Warehouse(spark, cfg.warehouse).read("sequence_occurrences").collect())
    want = ref.occurrences({i: r.tolist() for i, r in enumerate(rows)}, {i: r[:64].tolist() for i, r in
                                                                         enumerate(rows)}, 100)
    assert {sid: [(r["row_id"], r["offset"]) for r in found] for sid, found in got.items()} == want
    assert [(r["row_id"], r["step"], r["document"], r["source"]) for r in got[2]] == [
        (2, 1, "document.idx:0", None), (7, 3, "document.idx:2", None), (11, 5, "document.idx:3", None)]
