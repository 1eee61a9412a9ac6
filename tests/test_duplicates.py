"""sequence_duplicates against a brute-force count over every window of every row (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from semmem import storage
from semmem.config import DuplicatesConfig
from semmem.errors import ConfigError
from semmem.features.duplicates import (QueryIndex, ScanPlan, WindowHasher, plan_passes, query_hashes,
                                        window_candidates)
from semmem.stages.corpus import duplicate_counts
from semmem.tables import RUNS, Warehouse
from tests import reference as ref


def _frames(spark, rows, sequences):
    stream = spark.createDataFrame([(i, r) for i, r in enumerate(rows)], "row_id BIGINT, tokens ARRAY<INT>")
    seqs = spark.createDataFrame([(sid, t) for sid, t in sequences.items()], "sequence_id BIGINT, tokens ARRAY<INT>")
    return stream, seqs


def _as_dict(df):
    return {r["sequence_id"]: r["sequence_duplicates"] for r in df.collect()}


def _counts(wh, seqs, stream, **settings):
    """sequence_duplicates as the stage computes it (query hashes in warehouse scratch), as a dict."""
    with duplicate_counts(wh, seqs, stream, DuplicatesConfig(**settings)) as out:
        return _as_dict(out)


@pytest.fixture
def wh(spark, base_cfg):
    return Warehouse(spark, base_cfg.warehouse)


def test_hash_matches_polynomial_definition():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50304, (3, 80)).astype(np.int32)
    for modulus in [(1 << 61) - 1, 1 << 64, 7]:
        h = WindowHasher(60013, modulus).hashes(tokens)
        assert h.shape == (3, 80 - 32 + 1)
        for r in range(3):
            for o in [0, 1, 30, 48]:
                want = sum(int(t) * 60013 ** k for k, t in enumerate(tokens[r, o:o + 32])) % (1 << 64) % modulus
                assert int(h[r, o]) == want


def test_query_index_equals_isin():
    rng = np.random.default_rng(1)
    queries = rng.integers(0, 1 << 40, 500).astype(np.uint64)
    hay = np.concatenate([rng.integers(0, 1 << 40, 20000).astype(np.uint64), queries[:100]])
    idx = QueryIndex.build(queries)
    got = np.zeros(len(hay), bool)
    got[idx.candidates(hay)] = True
    np.testing.assert_array_equal(got, np.isin(hay, queries))


def test_query_index_skewed_buckets_fall_back_to_binary_search():
    from semmem.features.duplicates import _MIX

    inv = pow(int(_MIX), -1, 1 << 64)  # hashes whose mixed values share their top bits: one crowded bucket
    queries = np.array([m * inv % (1 << 64) for m in range(1, 200)], np.uint64)
    idx = QueryIndex.build(queries, bits_per_query=4096)  # a big table: the survivors really reach the buckets
    assert idx.max_bucket > 16
    hay = np.concatenate([queries[::3], np.arange(1000, dtype=np.uint64), queries + np.uint64(1)])
    got = np.zeros(len(hay), bool)
    got[idx.candidates(hay)] = True
    np.testing.assert_array_equal(got, np.isin(hay, queries))


def test_duplicates_match_reference(spark, wh):
    rows, sequences = ref.make_stream(seed=0)
    want = ref.duplicates(rows, sequences)
    assert want[3] == 160 - 32 + 1  # the repeated-token row matches at every offset, last one included
    assert want[1] == want[4] >= 2 and want[1000] == 0
    assert min(v for k, v in want.items() if k != 1000) >= 1
    stream, seqs = _frames(spark, rows, sequences)
    assert _counts(wh, seqs, stream) == want


def test_tiny_modulus_collisions_are_verified_away(spark, wh, tmp_path):
    rows, sequences = ref.make_stream(seed=1)
    want = ref.duplicates(rows, sequences)
    stream, seqs = _frames(spark, rows, sequences)
    hasher = WindowHasher(60013, 7)  # 7 buckets: almost every window collides with some query
    q = query_hashes(seqs, hasher).select("h").toArrow()
    pq.write_table(q, tmp_path / "keys.parquet")
    plan = ScanPlan(((str(tmp_path / "keys.parquet"),),))
    candidates = window_candidates(stream, hasher, plan).agg(F.sum("n")).first()[0]
    assert candidates > 10 * sum(want.values())  # collisions did happen ...
    got = _counts(wh, seqs, stream, hash_modulus=7, rows_per_batch=5)
    assert got == want  # ... and verification removed every one


@pytest.mark.parametrize("budget_bytes,passes", [(2**31, 1), (1000, 3), (600, 8)])
def test_passes_split_the_queries_and_keep_exact_counts(spark, wh, budget_bytes, passes, caplog):
    # A budget too small for every query index at once: the queries are split into disjoint passes over the stream
    # (13 queries; an index of one takes 233 bytes; two tasks per executor here).
    rows, sequences = ref.make_stream(seed=6)
    want = ref.duplicates(rows, sequences)
    stream, seqs = _frames(spark, rows, sequences)
    budget_mb = budget_bytes / 2**20
    per_task = round(budget_mb * 2**20) // 2  # local[2]
    assert plan_passes(len(sequences), per_task) == passes
    with caplog.at_level("INFO", logger="semmem.stages.corpus"):
        assert _counts(wh, seqs, stream, memory_budget_mb=budget_mb, hash_modulus=1009) == want
    assert f"{passes} pass(es) over the stream" in caplog.text


def test_plan_passes_fit_the_budget():
    for n in [1, 1000, 10**6, 146_432_000]:
        for budget in [2**20, 2**26, 2**30, 2**33]:
            if QueryIndex.nbytes(1) > budget:
                continue
            p = plan_passes(n, budget)
            assert QueryIndex.nbytes(-(-n * 11 // (10 * p))) <= budget  # each pass fits, with 10% headroom ...
            assert p == 1 or QueryIndex.nbytes(-(-n * 11 // (10 * (p - 1)))) > budget  # ... and no fewer would
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        plan_passes(10, 100)


def test_query_index_memory_is_what_nbytes_says():
    import tracemalloc

    rng = np.random.default_rng(7)
    for n in [1, 1000, 70_000, 300_000]:
        hashes = rng.integers(0, 1 << 63, n).astype(np.uint64)
        tracemalloc.start()  # numpy reports its buffers to tracemalloc
        idx = QueryIndex.build(hashes)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak + hashes.nbytes <= QueryIndex.nbytes(n) + 2**16  # the input is counted; + Python objects
        assert idx.held_bytes() == 8 * n + (1 << (idx.bits - 3)) + 8 * ((1 << idx.bucket_bits) + 1)
        assert idx.max_bucket <= 16


@pytest.mark.parametrize("partitions,rows_per_batch", [(1, 1), (7, 3), (3, 256)])
def test_partitioning_does_not_change_counts(spark, wh, partitions, rows_per_batch):
    # local[1] vs local[*] is emulated within the one test session: 1 vs 7 stream partitions, 1-row vs large blocks.
    rows, sequences = ref.make_stream(seed=2)
    want = ref.duplicates(rows, sequences)
    stream, seqs = _frames(spark, rows, sequences)
    got = _counts(wh, seqs.repartition(partitions), stream.repartition(partitions), hash_modulus=1009,
                  rows_per_batch=rows_per_batch)
    assert got == want


def test_sequence_shorter_than_64_gets_null(spark, wh):
    rows, sequences = ref.make_stream(seed=3, n_rows=30)
    sequences = {0: sequences[0], 1: sequences[1][:40]}
    stream, seqs = _frames(spark, rows, sequences)
    got = _counts(wh, seqs, stream)
    assert got == {0: ref.duplicates(rows, {0: sequences[0]})[0], 1: None}


def test_scan_handles_sliced_arrow_batches():
    from semmem.features.duplicates import scan_batches

    rows, sequences = ref.make_stream(seed=4, n_rows=30)
    hasher = WindowHasher(60013, (1 << 61) - 1)
    conts = np.array([t[32:64] for t in sequences.values()], np.int32)
    index = QueryIndex.build(hasher.hashes(conts)[:, 0])
    arr = pa.array(rows, pa.list_(pa.int32()))
    batch = pa.RecordBatch.from_arrays([pa.array(range(len(rows)), pa.int64()), arr],
                                       names=["row_id", "tokens"]).slice(2, 15)
    got = {}
    for out in scan_batches(iter([batch]), hasher, index, 4):
        for w, n in zip(out.column("window").to_pylist(), out.column("n").to_pylist()):
            got[tuple(w)] = got.get(tuple(w), 0) + n
    want = ref.duplicates(rows[2:17], sequences)
    for sid, toks in sequences.items():
        assert got.get(tuple(toks[32:64]), 0) == want[sid]


# ------------------------------------------------------------------ direct read: scan tasks read the stream themselves
def _stream_table(rows, start=0):
    return pa.table({"row_id": pa.array(range(start, start + len(rows)), pa.int64()),
                     "tokens": pa.array(rows, pa.list_(pa.int32()))})


def _delta_stream(spark, base_cfg, rows):
    """token_rows: a Spark-written version of decoy rows, then an overwrite by delta-rs in two commits (two files of
    several row groups each). The decoy files stay on disk and must not be read."""
    from deltalake import WriterProperties, write_deltalake

    wh = Warehouse(spark, base_cfg.warehouse)
    decoys = [[7] * 160 for _ in range(30)]  # would add 129 matches per row to sequence 3 if read
    wh.write(spark.createDataFrame(list(enumerate(decoys)), "row_id BIGINT, tokens ARRAY<INT>"), "token_rows",
             mode="overwrite")
    path, half = str(wh.path("token_rows")), len(rows) // 2
    props = WriterProperties(max_row_group_size=4)
    write_deltalake(path, _stream_table(rows[:half]), mode="overwrite", writer_properties=props)
    write_deltalake(path, _stream_table(rows[half:], half), mode="append", writer_properties=props)
    storage.delete_dir(wh.path(RUNS))  # no publication log: the newest versions, by whichever writer, are read
    return Warehouse(spark, base_cfg.warehouse)


def _megatron_stream(spark, base_cfg, tmp_path, rows):
    from semmem.catalog import table
    from semmem.ingest.megatron import index_record, open_index
    from tests.corpus import write_megatron

    write_megatron(tmp_path / "document", np.array(rows, np.int64))
    wh = Warehouse(spark, base_cfg.warehouse)
    record = index_record(open_index(str(tmp_path / "document"), len(rows[0])))
    wh.write(spark.createDataFrame([record], table("stream_sources").spark_schema), "stream_sources",
             mode="overwrite")
    return wh


def _shard_rows(shards):
    from semmem.ingest.stream import StreamShard, iter_stream_batches

    got = {}
    for d in shards.df.collect():
        for batch in iter_stream_batches(StreamShard(**d.asDict())):
            got.update(zip(batch.column("row_id").to_pylist(), batch.column("tokens").to_pylist()))
    return got


@pytest.mark.parametrize("source", ["delta", "megatron"])
@pytest.mark.parametrize("rows_per_task,rows_per_batch", [(1, 1), (5, 3), (1000, 64)])
def test_direct_read_matches_reference(spark, base_cfg, tmp_path, source, rows_per_task, rows_per_batch):
    from semmem.ingest.stream import read_stream, stream_shards

    rows, sequences = ref.make_stream(seed=5)
    if source == "megatron":
        rows = [r for r in rows if len(r) == 160]  # .bin rows have one length
        wh = _megatron_stream(spark, base_cfg, tmp_path, rows)
    else:
        wh = _delta_stream(spark, base_cfg, rows)
        files = wh.snapshot_files("token_rows")
        assert len(files) == 2 and sum(f.num_rows for f in files) == len(rows)
        assert all(pq.ParquetFile(f.path).metadata.num_row_groups > 1 for f in files)
    want = ref.duplicates(rows, sequences)
    shards = stream_shards(wh, base_cfg, rows_per_task)
    assert shards.num_shards == shards.df.rdd.getNumPartitions() >= (len(rows) + rows_per_task - 1) // rows_per_task
    # the shards hold exactly the rows Spark reads, each once
    assert _shard_rows(shards) == {r["row_id"]: r["tokens"] for r in read_stream(wh, base_cfg).collect()} == \
        dict(enumerate(rows))
    _, seqs = _frames(spark, rows[:1], sequences)
    assert _counts(wh, seqs, shards, rows_per_batch=rows_per_batch) == want
    assert _counts(wh, seqs, shards, hash_modulus=7, rows_per_batch=rows_per_batch, memory_budget_mb=1000 / 2**20) == want


def test_snapshot_files_of_missing_table_is_a_table_error(spark, base_cfg):
    from semmem.errors import TableError

    with pytest.raises(TableError, match="does not exist"):
        Warehouse(spark, base_cfg.warehouse).snapshot_files("token_rows")
