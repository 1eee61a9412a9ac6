"""token_frequencies and token_frequency_stats against brute-force counts (tests/reference.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pyspark.sql import functions as F

from tests import reference as ref
from semmem.features.frequencies import stats_matrix, token_frequencies, token_frequency_stats

STATS = ["max_frequency", "min_frequency", "avg_frequency", "median_frequency", "p25_frequency", "p75_frequency",
         "frequencies"]


def _frames(spark, rows, sequences):
    stream = spark.createDataFrame([(i, r) for i, r in enumerate(rows)], "row_id BIGINT, tokens ARRAY<INT>")
    seqs = spark.createDataFrame([(sid, t) for sid, t in sequences.items()], "sequence_id BIGINT, tokens ARRAY<INT>")
    return stream, seqs


@pytest.mark.parametrize("partitions", [1, 7])
def test_frequencies_match_reference(spark, partitions):
    rows, sequences = ref.make_stream(seed=5, vocab=40)
    rows.append([3_000_000_000 % (1 << 31), 5, 5])  # an id above the dense-bincount limit
    stream, seqs = _frames(spark, rows, sequences)
    want = ref.token_frequencies(rows)
    freq = token_frequencies(stream.repartition(partitions))
    got = {r["token_id"]: r["frequency"] for r in freq.collect()}
    assert got == want
    stats = {r["sequence_id"]: r.asDict() for r in token_frequency_stats(seqs.repartition(partitions), freq).collect()}
    assert set(stats) == set(sequences)
    for sid, toks in sequences.items():
        expect = ref.frequency_stats(toks, want)
        assert {k: stats[sid][k] for k in STATS} == expect, sid


def test_stats_rules_on_small_rows():
    rnd = random.Random(0)
    for n in [1, 2, 3, 4, 5, 63, 64, 65]:
        mat = np.array([[rnd.randrange(0, 30) for _ in range(n)] for _ in range(20)], np.int64)
        got = stats_matrix(mat)
        table = {i: i for i in range(30)}
        for r in range(20):
            expect = ref.frequency_stats(mat[r].tolist(), table)
            for k, v in got.items():
                assert v[r] == expect[k], (n, k)


def test_percentiles_equal_spark_percentile_approx(spark):
    # p25/p75 are nearest-rank values; upstream used percentile_approx, which gives the same on 64 values.
    rnd = random.Random(1)
    rows = [(sid, [rnd.randrange(1, 1000) for _ in range(64)]) for sid in range(30)]
    df = spark.createDataFrame(rows, "sid INT, f ARRAY<BIGINT>")
    approx = (df.select("sid", F.explode("f").alias("v")).groupBy("sid")
              .agg(F.percentile_approx("v", 0.25, 1_000_000).alias("p25"),
                   F.percentile_approx("v", 0.75, 1_000_000).alias("p75"), F.median("v").alias("med")))
    got = stats_matrix(np.array([r[1] for r in rows], np.int64))
    for r in approx.collect():
        assert r["p25"] == got["p25_frequency"][r["sid"]]
        assert r["p75"] == got["p75_frequency"][r["sid"]]
        assert r["med"] == got["median_frequency"][r["sid"]]


def test_empty_and_null_token_lists(spark):
    seqs = spark.createDataFrame([(1, [1, 1, 2]), (2, []), (3, None)], "sequence_id BIGINT, tokens ARRAY<INT>")
    freq = spark.createDataFrame([(1, 5), (2, 9)], "token_id INT, frequency BIGINT")
    got = {r["sequence_id"]: r.asDict() for r in token_frequency_stats(seqs, freq).collect()}
    assert got[1]["frequencies"] == [5, 5, 9] and got[1]["median_frequency"] == 5.0
    assert got[2]["max_frequency"] is None and got[2]["frequencies"] == []
    assert got[3]["avg_frequency"] is None and got[3]["frequencies"] is None
