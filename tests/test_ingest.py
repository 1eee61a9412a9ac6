"""Ingestion equals a plain-Python tokenization and chunking of the same files; bad input fails cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from semmem.cli import run_pipeline
from semmem.config import Config, with_overrides
from semmem.errors import InputError
from tests.corpus import write_megatron
from semmem.ingest.sequences import sample_key
from semmem.tables import Warehouse
from tests.corpus import reference_stream, small_corpus, small_tokenizer, write_jsonl

SEQ = 100  # short rows: many rows, several per document, from a small corpus


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    return small_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def ingest(spark, cfg: Config, *overrides: str) -> Warehouse:
    cfg = with_overrides(cfg, list(overrides))
    run_pipeline(cfg, ["ingest"])
    return Warehouse(spark, cfg.warehouse)


def _pile_cfg(base_cfg: Config, corpus: Path, tokenizer: Path, *more: str) -> list[str]:
    return [f"input.path=[{corpus}]", f"tokenizer.name={tokenizer}", f"stream.seq_length={SEQ}", *more]


def test_stream_and_sequences_equal_reference(spark, base_cfg, tmp_path, tokenizer):
    shards = small_corpus(tmp_path / "corpus")
    wh = ingest(spark, base_cfg, *_pile_cfg(base_cfg, tmp_path / "corpus", tokenizer))
    rows, owners = reference_stream(shards, tokenizer, SEQ)
    got = {r["row_id"]: r["tokens"] for r in wh.read("token_rows").collect()}
    assert got == dict(enumerate(rows))

    tok = Tokenizer.from_file(str(tokenizer))
    seqs = {r["sequence_id"]: r for r in wh.read("sequences").collect()}
    assert sorted(seqs) == list(range(len(rows)))
    for i, row in enumerate(rows):
        s = seqs[i]
        assert s["tokens"] == row[:64]
        assert s["text"] == tok.decode(row[:64], skip_special_tokens=False)
        assert s["prompt_text"] == tok.decode(row[:32], skip_special_tokens=False)
        assert s["pile_set_name"] == owners[i]
    assert wh.read("ingest_rejects").count() == 0


def test_same_result_with_any_partitioning(spark, base_cfg, tmp_path, tokenizer):
    small_corpus(tmp_path / "corpus", n_docs=40, n_shards=4)
    a = ingest(spark, base_cfg, *_pile_cfg(base_cfg, tmp_path / "corpus", tokenizer),
               f"warehouse={tmp_path / 'a'}", "spark.conf.spark.sql.shuffle.partitions=1")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        b = ingest(spark, base_cfg, *_pile_cfg(base_cfg, tmp_path / "corpus", tokenizer), f"warehouse={tmp_path / 'b'}")
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "4")
    for name in ("token_rows", "sequences"):
        key = "row_id" if name == "token_rows" else "sequence_id"
        assert a.read(name).orderBy(key).collect() == b.read(name).orderBy(key).collect()


def test_sampling_is_reproducible(spark, base_cfg, tmp_path, tokenizer):
    small_corpus(tmp_path / "corpus")
    cfg = _pile_cfg(base_cfg, tmp_path / "corpus", tokenizer)
    wh = ingest(spark, base_cfg, *cfg, "sample.size=7", "sample.seed=5")
    ids = sorted(r[0] for r in wh.read("sequences").select("sequence_id").collect())
    assert len(ids) == 7
    n_rows = wh.read("token_rows").count()
    # Reference: the 7 row ids with the smallest key (xxhash64 of row_id and seed, top 53 bits).
    keys = spark.range(n_rows).withColumnRenamed("id", "row_id").select(
        "row_id", sample_key(5).alias("k")).orderBy("k", "row_id").limit(7).collect()
    assert ids == sorted(r["row_id"] for r in keys)
    wh2 = ingest(spark, base_cfg, *cfg, "sample.size=7", "sample.seed=5", f"warehouse={tmp_path / 'again'}")
    assert ids == sorted(r[0] for r in wh2.read("sequences").select("sequence_id").collect())
    frac = ingest(spark, base_cfg, *cfg, "sample.fraction=0.5", f"warehouse={tmp_path / 'frac'}")
    assert 0 < frac.read("sequences").count() < n_rows


def test_megatron_rows_in_place(spark, base_cfg, tmp_path, tokenizer):
    rng = np.random.default_rng(0)
    rows = rng.integers(2, 600, size=(37, 80)).astype(np.uint16)
    write_megatron(tmp_path / "document", rows)
    wh = ingest(spark, base_cfg, "input.format=megatron", f"input.path=[{tmp_path / 'document'}]",
                f"tokenizer.name={tokenizer}", "stream.seq_length=80", "ingest.megatron_rows_per_task=10")
    assert not wh.exists("token_rows")
    seqs = {r["sequence_id"]: r["tokens"] for r in wh.read("sequences").collect()}
    assert seqs == {i: rows[i, :64].tolist() for i in range(37)}
    from semmem.ingest.stream import read_stream

    stream = {r["row_id"]: r["tokens"] for r in read_stream(wh, base_cfg).collect()}
    assert stream == {i: rows[i].tolist() for i in range(37)}
    # The first rows only (train_model's max_tokens): the .bin is cut before it is split into tasks, so the tasks
    # cover rows [0, 15) and nothing past them is read (a filter above the reader kept 4 tasks over all 37 rows).
    first = read_stream(wh, with_overrides(base_cfg, ["ingest.megatron_rows_per_task=10"]), first_rows=15)
    assert first.rdd.getNumPartitions() == 2
    assert {r["row_id"]: r["tokens"] for r in first.collect()} == {i: stream[i] for i in range(15)}
    assert read_stream(wh, base_cfg, first_rows=100).count() == 37
    # Later stages trust what ingest validated: the .idx is not read again ...
    (tmp_path / "document.idx").unlink()
    assert {r["row_id"]: r["tokens"] for r in read_stream(wh, base_cfg).collect()} == stream
    # ... and a .bin that changed since is caught.
    with open(tmp_path / "document.bin", "ab") as fh:
        fh.write(b"\0\0")
    with pytest.raises(InputError, match=r"document\.bin: 5922 bytes, but ingest recorded 5920: the file changed"):
        read_stream(wh, base_cfg)


def test_megatron_size_mismatch(spark, base_cfg, tmp_path, tokenizer):
    write_megatron(tmp_path / "document", np.ones((5, 80), dtype=np.uint16))
    with open(tmp_path / "document.bin", "ab") as fh:
        fh.write(b"\0\0")
    with pytest.raises(InputError, match=r"document\.bin: 802 bytes, but .* describes 5 rows of 80 tokens"):
        ingest(spark, base_cfg, "input.format=megatron", f"input.path=[{tmp_path / 'document'}]",
               f"tokenizer.name={tokenizer}", "stream.seq_length=80")


def test_sequences_parquet_with_scores(spark, base_cfg, tmp_path, tokenizer):
    tokens = [[(i * 7 + j) % 500 + 2 for j in range(64)] for i in range(5)]
    pq.write_table(pa.table({"Index": [10, 11, 12, 13, 14], "Tokens": tokens, "70M": [0.0, 1.0, 0.5, 0.25, 1.0]}),
                   tmp_path / "sampled.parquet")
    wh = ingest(spark, base_cfg, "input.format=sequences-parquet", f"input.path=[{tmp_path / 'sampled.parquet'}]",
                f"tokenizer.name={tokenizer}")
    assert {r["sequence_id"]: r["tokens"] for r in wh.read("sequences").collect()} == dict(zip(range(10, 15), tokens))
    scores = {(r["model"], r["sequence_id"]): r["memorization_score"]
              for r in wh.read("published_memorization").collect()}
    assert scores == {("70M", 10): 0.0, ("70M", 11): 1.0, ("70M", 12): 0.5, ("70M", 13): 0.25, ("70M", 14): 1.0}


# ----------------------------------------------------------------------------------------------- bad input
GOOD = {"text": "hello world, a good line", "meta": {"pile_set_name": "Pile-CC"}}


def _bad_corpus(folder: Path, case: str) -> tuple[Path, str]:
    """A two-shard corpus whose second shard has one problem; returns (folder, expected message pattern)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "a.jsonl", [GOOD] * 30)
    bad = folder / ("b.jsonl.zst" if case == "corrupt_zstd" else "b.jsonl")
    lines: list = [GOOD, GOOD]
    if case == "invalid_json":
        lines.append(b'{"text": "unterminated')
    elif case == "missing_text":
        lines.append(json.dumps({"meta": {}}).encode())
    elif case == "invalid_utf8":
        lines.append(b'{"text": "caf\xe9"}')
    lines.append(GOOD)
    if case == "empty_shard":
        bad.write_bytes(b"")
        return folder, r"b\.jsonl file: empty_shard"
    write_jsonl(bad, lines)
    if case == "corrupt_zstd":
        data = bytearray(bad.read_bytes())
        data[len(data) // 2:] = b"\xff" * (len(data) - len(data) // 2)
        bad.write_bytes(bytes(data))
        return folder, r"b\.jsonl\.zst: corrupt_zstd: zstd error"
    return folder, rf"b\.jsonl line 3: {case}"


@pytest.mark.parametrize("case", ["invalid_json", "missing_text", "invalid_utf8", "empty_shard", "corrupt_zstd"])
def test_bad_record_fails_and_keeps_tables(spark, base_cfg, tmp_path, tokenizer, case):
    small_corpus(tmp_path / "good")
    cfg = [f"tokenizer.name={tokenizer}", f"stream.seq_length={SEQ}"]
    wh = ingest(spark, base_cfg, *cfg, f"input.path=[{tmp_path / 'good'}]")
    before = {n: wh.version(n) for n in ("token_rows", "sequences")}
    rows_before = wh.read("token_rows").count()
    folder, pattern = _bad_corpus(tmp_path / "bad", case)
    with pytest.raises(InputError, match=pattern):
        ingest(spark, base_cfg, *cfg, f"input.path=[{folder}]")
    assert {n: wh.version(n) for n in before} == before  # nothing half-written
    assert wh.read("token_rows").count() == rows_before


@pytest.mark.parametrize("case", ["invalid_json", "missing_text", "invalid_utf8", "empty_shard"])
def test_bad_record_skipped_and_counted(spark, base_cfg, tmp_path, tokenizer, case):
    folder, _ = _bad_corpus(tmp_path / "bad", case)
    wh = ingest(spark, base_cfg, f"tokenizer.name={tokenizer}", "stream.seq_length=64", f"input.path=[{folder}]",
                "ingest.on_bad_record=skip")
    rejects = wh.read("ingest_rejects").collect()
    assert [(Path(r["path"]).name, r["line"], r["reason"]) for r in rejects] == \
        [("b.jsonl", 0 if case == "empty_shard" else 3, case)]
    good_lines = 30 + (0 if case == "empty_shard" else 3)
    tok = Tokenizer.from_file(str(tokenizer))
    expected_tokens = good_lines * (len(tok.encode(GOOD["text"], add_special_tokens=False).ids) + 1)
    assert wh.read("token_rows").count() == expected_tokens // 64


def test_corrupt_zstd_is_fatal_even_when_skipping(spark, base_cfg, tmp_path, tokenizer):
    folder, pattern = _bad_corpus(tmp_path / "bad", "corrupt_zstd")
    with pytest.raises(InputError, match=pattern):
        ingest(spark, base_cfg, f"tokenizer.name={tokenizer}", f"input.path=[{folder}]", "ingest.on_bad_record=skip")


def test_missing_path(spark, base_cfg, tmp_path, tokenizer):
    with pytest.raises(InputError, match=r"nowhere does not exist"):
        ingest(spark, base_cfg, f"tokenizer.name={tokenizer}", f"input.path=[{tmp_path / 'nowhere'}]")
    with pytest.raises(InputError, match=r"matches no file"):
        ingest(spark, base_cfg, f"tokenizer.name={tokenizer}", f"input.path=[{tmp_path / '*.jsonl'}]")


def test_offline_tokenizer_fallback(spark, base_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    small_corpus(tmp_path / "corpus", n_docs=30)
    from semmem.errors import ModelError

    with pytest.raises(ModelError, match="huggingface-cli download EleutherAI/pythia-70m"):
        ingest(spark, base_cfg, f"input.path=[{tmp_path / 'corpus'}]", "tokenizer.offline_fallback=fail")
    wh = ingest(spark, base_cfg, f"input.path=[{tmp_path / 'corpus'}]", "tokenizer.offline_fallback=train-bpe",
                "tokenizer.vocab_size=400", "stream.seq_length=64")
    from semmem.ingest.tokenizer import saved_tokenizer_path

    saved = Tokenizer.from_file(saved_tokenizer_path(wh.root, wh.side_file("sequences", "tokenizer")))
    assert saved.get_vocab_size() == 400 and saved.id_to_token(0) == "<|endoftext|>"
    assert wh.read("sequences").count() == wh.read("token_rows").count() > 0


@pytest.mark.parametrize("size", [1, 777, 4999, 5000, 6000])
def test_size_cut_equals_a_full_sort(spark, size):
    """The cut found by histogram passes keeps exactly the `size` rows a full sort by (key, row_id) keeps; small bins
    and a small collect limit force several passes."""
    from semmem.config import SampleConfig
    from semmem.ingest.sequences import sample_key_bits, sample_predicate, size_cut

    ids = spark.range(0, 5000, numPartitions=3).withColumnRenamed("id", "row_id")
    pairs = sorted((r["k"], r["row_id"]) for r in ids.select("row_id", sample_key_bits(9).alias("k")).collect())
    cut = size_cut(ids, size, 9, bins=8, collect_rows=50)
    assert cut == (pairs[size - 1] if size < len(pairs) else None)
    keep = sample_predicate(ids, SampleConfig(size=size, seed=9))
    got = sorted(r[0] for r in (ids if keep is None else ids.where(keep)).collect())
    assert got == sorted(r for _, r in pairs[:size])


def test_megatron_sample_reads_the_chosen_rows(spark, base_cfg, tmp_path, tokenizer):
    from semmem.ingest.sequences import sample_key_bits

    rows = np.random.default_rng(1).integers(2, 600, size=(53, 70)).astype(np.uint16)
    write_megatron(tmp_path / "document", rows)
    wh = ingest(spark, base_cfg, "input.format=megatron", f"input.path=[{tmp_path / 'document'}]",
                f"tokenizer.name={tokenizer}", "stream.seq_length=70", "ingest.megatron_rows_per_task=8",
                "sample.size=11", "sample.seed=3")
    keys = spark.range(53).withColumnRenamed("id", "row_id").select("row_id", sample_key_bits(3).alias("k"))
    want = sorted(r for _, r in sorted((x["k"], x["row_id"]) for x in keys.collect())[:11])
    seqs = {r["sequence_id"]: r["tokens"] for r in wh.read("sequences").collect()}
    assert seqs == {i: rows[i, :64].tolist() for i in want}
