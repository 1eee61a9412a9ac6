"""Benchmark of the duplicate-count scan (stage `duplicates`) against two baselines measured in the same run.

    python bench/bench_duplicates.py                 # >= 50M-token stream (what `make bench` runs)
    python bench/bench_duplicates.py --quick         # a 2M-token smoke run
    python bench/bench_duplicates.py --tokens 100000000 --queries 5000000 --cores 2

Reports 32-gram windows per second per core for
- the semmem scan as the `duplicates` stage runs it (`window_candidates` over `stream_shards`: each task reads its
  shard itself and hashes every window, bit-table filter, candidate extraction), on a token_rows Delta table written
  by `Warehouse.write` (Spark Parquet, as `ingest` writes it) and on a megatron .bin read by memory map;
- the same scan fed through Spark (the JVM reads the Parquet, rows reach Python by Arrow), and that transfer alone;
- the whole `sequence_duplicates` job (query hashing, scan, aggregation, exact verification join);
- the semmem kernel alone in one process (no Spark), to show the Spark overhead;
- baseline (a): a straightforward single-process numpy implementation (Horner hash over a sliding window view,
  `np.isin` against the query hashes, token-level verification);
- baseline (b): the naive Spark approach (explode every window, xxhash64 it, groupBy hash, count, join the queries),
  on a smaller prefix of the stream because it is slow.
Peak Python-worker memory of the direct-read scan (max over tasks of ru_maxrss, fresh worker per task) is measured at two stream
sizes with the same query set. Synthetic stream: rows of 2,049 uniform random token ids with planted copies of
continuations; queries: the first 64 tokens of every 20th row plus random decoy sequences up to `--queries`
(the Pythia sample has 5M sequences), so the filter and hash set have a realistic size.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.features.duplicates import (  # noqa: E402
    QueryIndex, ScanPlan, WindowHasher, pass_index, query_hashes, scan_batches, scan_block, window_candidates)
from semmem.catalog import table  # noqa: E402
from semmem.ingest.megatron import index_record, open_index  # noqa: E402
from tests.corpus import write_megatron  # noqa: E402
from semmem.ingest.stream import shard_batches  # noqa: E402

L = 2049
WIN = 32
VOCAB = 50304


def _list_array(mat: np.ndarray) -> pa.ListArray:
    n, width = mat.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)),
                                    pa.array(mat.reshape(-1).astype(np.int32), pa.int32()))


def write_stream(path: Path, n_rows: int, seed: int, chunk: int = 1024) -> None:
    """Rows of L random tokens; every 50th row gets a copy of an earlier continuation at a random offset."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([("row_id", pa.int64()), ("tokens", pa.list_(pa.int32()))])
    with pq.ParquetWriter(path, schema, compression="none") as w:
        for start in range(0, n_rows, chunk):
            n = min(chunk, n_rows - start)
            mat = rng.integers(1, VOCAB, (n, L), dtype=np.int32)
            mat[:, rng.integers(0, L, 3)] = 0  # EOD tokens
            for r in range(0, n, 50):
                src = rng.integers(0, n)
                o = int(rng.integers(0, L - WIN + 1))
                mat[r, o:o + WIN] = mat[src, 32:64]
            w.write_table(pa.table({"row_id": np.arange(start, start + n, dtype=np.int64),
                                    "tokens": _list_array(mat)}, schema=schema), row_group_size=256)


def write_sequences(path: Path, stream: Path, every: int, total: int, seed: int) -> int:
    """First 64 tokens of every `every`-th stream row, then random decoys up to `total` sequences."""
    rng = np.random.default_rng(seed + 1)
    real = []
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=1024):
        ids = batch.column("row_id").to_numpy()
        mat = batch.column("tokens").values.to_numpy().reshape(-1, L)
        keep = ids % every == 0
        real.append((ids[keep], mat[keep, :64]))
    ids = np.concatenate([r[0] for r in real])
    mat = np.concatenate([r[1] for r in real])
    schema = pa.schema([("sequence_id", pa.int64()), ("tokens", pa.list_(pa.int32()))])
    with pq.ParquetWriter(path, schema, compression="none") as w:
        w.write_table(pa.table({"sequence_id": ids, "tokens": _list_array(mat)}, schema=schema))
        n_decoy = max(0, total - len(ids))
        for start in range(0, n_decoy, 262144):
            n = min(262144, n_decoy - start)
            dec = np.zeros((n, 64), np.int32)
            dec[:, 32:] = rng.integers(1, VOCAB, (n, 32), dtype=np.int32)
            sid = np.arange(10**12 + start, 10**12 + start + n, dtype=np.int64)
            w.write_table(pa.table({"sequence_id": sid, "tokens": _list_array(dec)}, schema=schema))
    return len(ids)


def load_queries(path: Path, hasher: WindowHasher) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sequence ids, continuation matrix, hashes) of the query set, for the single-process baselines."""
    t = pq.read_table(path)
    cont = t.column("tokens").combine_chunks().values.to_numpy().reshape(-1, 64)[:, 32:64]
    return t.column("sequence_id").to_numpy(), np.ascontiguousarray(cont), hasher.hashes(np.ascontiguousarray(cont))[:, 0]


def numpy_baseline(stream: Path, cont: np.ndarray, qh: np.ndarray, hasher: WindowHasher, max_rows: int
                   ) -> tuple[float, int, np.ndarray]:
    """Baseline (a): Horner hash on a sliding window, np.isin, verify; returns (seconds, windows, counts per query)."""
    order = np.argsort(qh, kind="stable")
    sorted_h, sorted_cont = qh[order], cont[order]
    uniq, first = np.unique(sorted_h, return_index=True)
    counts = np.zeros(len(uniq), np.int64)
    base = np.uint64(hasher.base)
    windows = rows = 0
    start = time.perf_counter()
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=256, columns=["tokens"]):
        mat = batch.column("tokens").values.to_numpy().reshape(-1, L)[:max_rows - rows]
        if len(mat) == 0:
            break
        rows += len(mat)
        n_win = L - WIN + 1
        h = mat[:, WIN - 1:WIN - 1 + n_win].astype(np.uint64)
        for k in range(WIN - 2, -1, -1):
            h *= base
            h += mat[:, k:k + n_win].astype(np.uint64)
        if hasher.modulus < 1 << 64:
            h %= np.uint64(hasher.modulus)
        hit = np.flatnonzero(np.isin(h.reshape(-1), uniq))
        r, o = np.divmod(hit, n_win)
        cand = mat[r[:, None], o[:, None] + np.arange(WIN)]
        qi = np.searchsorted(uniq, h.reshape(-1)[hit])
        ok = np.all(cand == sorted_cont[first[qi]], axis=1)  # first continuation with that hash (64-bit: unique)
        np.add.at(counts, qi[ok], 1)
        windows += len(mat) * n_win
    secs = time.perf_counter() - start
    per_query = np.empty(len(qh), np.int64)
    per_query[order] = counts[np.searchsorted(uniq, sorted_h)]
    return secs, windows, per_query


def write_bin(stream: Path, prefix: Path) -> None:
    """The stream as Pythia's megatron document.bin / .idx (uint16 tokens, one row per document)."""
    mats = [b.column("tokens").values.to_numpy().reshape(-1, L)
            for b in pq.ParquetFile(stream).iter_batches(batch_size=1024, columns=["tokens"])]
    write_megatron(prefix, np.concatenate(mats))


def kernel_only(stream: Path, hasher: WindowHasher, index: QueryIndex, rows_per_batch: int, max_rows: int
                ) -> tuple[float, int]:
    """The semmem kernel (`scan_block`) in one process, no Spark."""
    windows = rows = 0
    start = time.perf_counter()
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=4096, columns=["tokens"]):
        mat = batch.column("tokens").values.to_numpy().reshape(-1, L)[:max_rows - rows]
        if len(mat) == 0:
            break
        rows += len(mat)
        for i in range(0, len(mat), rows_per_batch):
            scan_block(mat[i:i + rows_per_batch], hasher, index)
        windows += len(mat) * (L - WIN + 1)
    return time.perf_counter() - start, windows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=50_000_000, help="stream size in tokens (rounded up to rows)")
    ap.add_argument("--queries", type=int, default=1_000_000, help="evaluation sequences incl. decoys")
    ap.add_argument("--naive-tokens", type=int, default=3_000_000, help="stream prefix for the naive Spark baseline")
    ap.add_argument("--numpy-tokens", type=int, default=20_000_000, help="stream prefix for the numpy baselines")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rows-per-batch", type=int, default=64)
    ap.add_argument("--rows-per-task", type=int, default=0, help="stream rows per scan task (0: the config default)")
    ap.add_argument("--quick", action="store_true", help="2M tokens, 20k queries: a smoke run")
    ap.add_argument("--workdir", default=None, help="where the synthetic parquet goes (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.quick:
        args.tokens, args.queries, args.naive_tokens, args.numpy_tokens = 2_000_000, 20_000, 500_000, 2_000_000

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import functions as F

    from semmem.config import load_config
    from semmem.ingest.stream import read_stream, stream_shards
    from semmem.spark import build_session
    from semmem.stages.corpus import duplicate_counts
    from semmem.tables import Warehouse

    rows_big = -(-args.tokens // L)
    rows_small = max(1, rows_big // 5)
    tmp = tempfile.TemporaryDirectory(dir=args.workdir)
    work = Path(tmp.name)
    t0 = time.perf_counter()
    write_stream(work / "stream.parquet", rows_big, seed=1)
    write_stream(work / "stream_small.parquet", rows_small, seed=1)  # same generator: a prefix of the big one
    n_real = write_sequences(work / "sequences.parquet", work / "stream.parquet", 20, args.queries, seed=1)
    write_bin(work / "stream.parquet", work / "document")
    print(f"synthetic data: {rows_big} rows x {L} tokens = {rows_big * L / 1e6:.1f}M tokens "
          f"({rows_big * (L - WIN + 1) / 1e6:.1f}M windows); {args.queries} queries ({n_real} from the stream); "
          f"generated in {time.perf_counter() - t0:.0f} s", flush=True)

    overrides = [f"spark.master=local[{args.cores}]", "spark.conf.spark.ui.enabled=false",
                 "spark.conf.spark.driver.memory=6g", f"spark.conf.spark.sql.shuffle.partitions={2 * args.cores}",
                 "spark.conf.spark.sql.files.maxPartitionBytes=16m"]
    cfg = load_config(None, [*overrides, f"duplicates.rows_per_batch={args.rows_per_batch}"])

    def session(reuse: bool):
        return build_session(load_config(None, [*overrides,
                                                f"spark.conf.spark.python.worker.reuse={str(reuse).lower()}"]))

    hasher = WindowHasher(cfg.duplicates.hash_base, cfg.duplicates.hash_modulus)
    rpb = cfg.duplicates.rows_per_batch
    rpt = args.rows_per_task or cfg.duplicates.rows_per_task

    # The streams as the stage reads them: token_rows Delta tables written by Warehouse.write (Spark Parquet, as
    # `ingest` writes them), and a megatron .bin registered in stream_sources (read in place).
    spark = session(reuse=False)
    whs = {"big": Warehouse(spark, work / "wh_big"), "small": Warehouse(spark, work / "wh_small")}
    for name, src in [("big", "stream.parquet"), ("small", "stream_small.parquet")]:
        whs[name].write(spark.read.parquet(str(work / src)), "token_rows")
    whs["megatron"] = Warehouse(spark, work / "wh_megatron")
    whs["megatron"].write(spark.createDataFrame([index_record(open_index(str(work / "document"), L))],
                                                table("stream_sources").spark_schema), "stream_sources")

    def frames(spark):
        w = {k: Warehouse(spark, v.root) for k, v in whs.items()}
        return w, spark.read.parquet(str(work / "sequences.parquet"))

    # Memory: a fresh Python worker per task (worker.reuse=false), so each task's ru_maxrss is its own peak. The
    # query hashes in one file, one pass, as the stage writes them to scratch.
    w, seqs = frames(spark)
    keys = work / "keys" / "pass=0" / "keys.parquet"
    keys.parent.mkdir(parents=True)
    pq.write_table(query_hashes(seqs, hasher).select("h").distinct().toArrow(), keys)
    plan = ScanPlan(((str(keys),),))

    def peak(shards):
        def measure(it):
            index = pass_index(plan.passes[0], plan.bits_per_query)
            n = sum(b.num_rows for b in scan_batches(shard_batches(it, ["row_id", "tokens"]), hasher, index, rpb))
            yield pa.RecordBatch.from_pydict({"rss_kb": [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss],
                                              "n": [n]})
        return shards.df.mapInArrow(measure, "rss_kb BIGINT, n BIGINT").agg(F.max("rss_kb"), F.count("*")).first()

    mem = {}
    for name, rows in [("small", rows_small), ("big", rows_big)]:
        rss, tasks = peak(stream_shards(w[name], cfg, rpt))
        mem[name] = (rows * L, rss / 1024, tasks)
    spark.stop()

    # Timings: workers reused (the production setting), after one warm-up pass over the small stream.
    spark = session(reuse=True)
    w, seqs = frames(spark)

    def timed(df) -> float:
        start = time.perf_counter()
        df.write.format("noop").mode("overwrite").save()
        return time.perf_counter() - start

    t = time.perf_counter()
    index = QueryIndex.build(pq.read_table(keys).column("h").to_numpy().view(np.uint64))
    t_query = time.perf_counter() - t
    timed(window_candidates(stream_shards(w["small"], cfg, rpt), hasher, plan, rpb))  # warm-up: workers, index
    windows = rows_big * (L - WIN + 1)
    shards = stream_shards(w["big"], cfg, rpt)
    t_scan = timed(window_candidates(shards, hasher, plan, rpb))
    t_mega = timed(window_candidates(stream_shards(w["megatron"], cfg, rpt), hasher, plan, rpb))
    via_spark = read_stream(w["big"], cfg)
    noop = via_spark.select("tokens").mapInArrow(lambda it: (b.slice(0, 0) for b in it), "tokens ARRAY<INT>")
    timed(noop)
    t_pass = timed(noop)
    t_jvm = timed(window_candidates(via_spark, hasher, plan, rpb))
    start = time.perf_counter()
    with duplicate_counts(w["big"], seqs, shards, cfg.duplicates) as out:
        out.write.format("noop").mode("overwrite").save()
    t_e2e = time.perf_counter() - start
    real = seqs.where(F.col("sequence_id") < 10**12)  # the real (non-decoy) sequences only
    with duplicate_counts(w["big"], real, shards, cfg.duplicates) as out:
        spark_counts = {r[0]: r[1] for r in out.collect()}
    with duplicate_counts(w["megatron"], real, stream_shards(w["megatron"], cfg, rpt), cfg.duplicates) as out:
        mega_counts = {r[0]: r[1] for r in out.collect()}
    assert mega_counts == spark_counts, "Delta and megatron streams disagree"

    # (b) naive Spark on a prefix: explode windows, hash, groupBy, count, join the query hashes
    naive_rows = max(1, min(rows_big, -(-args.naive_tokens // L)))
    prefix = via_spark.where(F.col("row_id") < naive_rows)
    win = (prefix.select("tokens", F.explode(F.sequence(F.lit(0), F.size("tokens") - WIN)).alias("o"))
           .select(F.xxhash64(F.slice("tokens", F.col("o") + 1, WIN)).alias("h")).groupBy("h").count())
    qn = seqs.select("sequence_id", F.xxhash64(F.slice("tokens", WIN + 1, WIN)).alias("h"))
    t_naive = timed(qn.join(win, "h", "left").select("sequence_id", F.coalesce("count", F.lit(0)).alias("n")))
    naive_windows = naive_rows * (L - WIN + 1)

    # (a) numpy single process, and the semmem kernel without Spark, on a prefix
    np_rows = max(1, min(rows_big, -(-args.numpy_tokens // L)))
    sids, cont, qh = load_queries(work / "sequences.parquet", hasher)
    t_np, np_windows, np_counts = numpy_baseline(work / "stream.parquet", cont, qh, hasher, np_rows)
    t_kernel, k_windows = kernel_only(work / "stream.parquet", hasher, index, rpb, np_rows)
    if np_rows == rows_big:  # same stream: the counts must agree exactly
        by_id = dict(zip(sids.tolist(), np_counts.tolist()))
        assert all(by_id[s] == c for s, c in spark_counts.items()), "numpy baseline and semmem disagree"
        check = f"counts of the {len(spark_counts)} real sequences equal the numpy baseline's (Delta and megatron)"
    else:
        check = f"{len(spark_counts)} real sequences, min count {min(spark_counts.values())} (>= 1)"
        assert min(spark_counts.values()) >= 1
    spark.stop()

    c = args.cores
    head = "semmem scan: stage path, direct read of token_rows"
    rows_out = [
        (head, windows, t_scan, c),
        ("semmem scan: stage path, megatron .bin mmap", windows, t_mega, c),
        ("semmem scan: rows via Spark (JVM -> Arrow)", windows, t_jvm, c),
        ("  Spark read + Arrow transfer only, no-op", windows, t_pass, c),
        ("semmem sequence_duplicates end to end", windows, t_e2e, c),
        ("semmem kernel, 1 process, no Spark", k_windows, t_kernel, 1),
        ("(a) numpy single process", np_windows, t_np, 1),
        ("(b) naive Spark explode+groupBy", naive_windows, t_naive, c),
    ]
    rate = {name: w_ / t_ / cores for name, w_, t_, cores in rows_out}
    print(f"\nquery hashing + index build: {t_query:.1f} s for {args.queries} sequences "
          f"(index: {index.mixed.nbytes / 2**20:.1f} MiB hashes + {index.table.nbytes / 2**20:.1f} MiB bit table); "
          f"{shards.num_shards} scan tasks, hash modulus 2^{np.log2(float(hasher.modulus)):.0f}")
    print(f"\n{'implementation':48s} {'windows':>10s} {'seconds':>8s} {'cores':>5s} {'M win/s/core':>13s} "
          f"{'scan / this':>11s}")
    scan_rate = rate[head]
    for name, w_, t_, cores in rows_out:
        print(f"{name:48s} {w_ / 1e6:9.1f}M {t_:8.1f} {cores:5d} {rate[name] / 1e6:13.2f} "
              f"{scan_rate / rate[name]:10.1f}x")
    print(f"\npeak Python worker RSS of the direct-read scan (max over tasks), {args.queries} queries, "
          f"{rpb} rows per block:")
    for name, (tokens, mib, tasks) in mem.items():
        print(f"  stream {tokens / 1e6:7.1f}M tokens, {tasks:3d} tasks: {mib:7.1f} MiB")
    pythia = 146_432_000 * (L - WIN + 1)
    hours = {k: pythia / (rate[k] * 100) / 3600 for k in (head, rows_out[1][0])}
    fixed = max(0.0, t_e2e - t_scan)  # query hashing, scratch, aggregation, verification join: O(queries)
    print(f"\nfull Pythia stream ({pythia / 1e9:.0f}G windows) on 100 cores: scan {hours[head]:.3f} h from token_rows, "
          f"{hours[rows_out[1][0]]:.3f} h from the .bin; end to end = scan + {fixed:.0f} s of query-side work "
          f"for {args.queries} sequences in this run (it scales with the sample, not the stream)")
    print(f"check: {check}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
