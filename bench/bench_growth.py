"""Growth benchmark (issue 21): work that must not grow with the corpus, measured at two sizes 4x apart.

    python bench/bench_growth.py            # what `make bench` runs (~7 min on 2 cores)
    python bench/bench_growth.py --quick    # the same at a tenth of the sizes, a smoke run

Each path runs twice, each time in a fresh process (its own Python driver and JVM, Spark local[2]), and prints
`growth: <path> driver_rss <ratio> input_bytes <ratio> wall <ratio>`, each the large run over the small one.

- forecast: `memorization_forecast` over 1M sequences scored by K = 12 and K = 48 model@revisions (rows made in
  Spark, never on the driver). Only the K keys and 2 K^2 pair counts reach the driver. Goal: driver RSS <= 1.1x.
- score_chunks: the chunked commits of the model stages (`chunks_of` + `write_in_chunks`) over a 1M-row
  `sequences` table in 4 and in 16 chunks, each chunk's rows summed and committed. The input is split once into
  scratch folders, so 16 chunks read what 4 do; a filter per chunk would read 4x more. Goal: input bytes <= 1.1x.
- train_model: the rows `train_model` trains on (`train_model.max_tokens`, the same at both sizes) read from a
  100M- and a 400M-token megatron stream. Goal: input bytes <= 1.1x, wall <= 1.3x.

Driver RSS is the peak of the Python driver process. Input bytes: for Parquet, what the process tree read through
read(2) (rchar), less what a run that only starts Spark reads; the megatron .bin is read by memory map, which rchar
does not see, so there it is the part of the .bin in the page cache after the run, evicted before it (fincore).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_scale import run_sampled, write_stream  # noqa: E402

GOALS = {"forecast": {"driver_rss": 1.1}, "score_chunks": {"driver_rss": 1.1, "input_bytes": 1.1},
         "train_model": {"driver_rss": 1.1, "input_bytes": 1.1, "wall": 1.3}}
MAX_TOKENS = 20_000_000  # train_model.max_tokens at both stream sizes (a fifth of the small stream with --quick)


# ------------------------------------------------------------------------------------------- in the child process
def context(work: Path, *overrides: str):
    """A stage context on warehouse work/wh, Spark local[2]."""
    from semmem.config import load_config
    from semmem.spark import build_session
    from semmem.stages.registry import StageContext
    from semmem.tables import Warehouse

    cfg = load_config(None, [f"warehouse={work / 'wh'}", "spark.master=local[2]", *overrides])
    spark = build_session(cfg)
    return StageContext(spark, cfg, Warehouse(spark, cfg.warehouse))


def child_forecast(ctx, work: Path, models: int, sequences: int) -> None:
    from pyspark.sql import functions as F

    from semmem.taxonomy.stats import memorization_forecast

    keys = ctx.spark.createDataFrame([(f"m{i % 4}", f"step{i}") for i in range(models)],
                                     "model string, revision string")
    rows = (ctx.spark.range(sequences).withColumnRenamed("id", "sequence_id").crossJoin(F.broadcast(keys))
            .withColumn("is_memorized", F.pmod(F.xxhash64("sequence_id", "revision"), F.lit(7)) == 0))
    assert len(memorization_forecast(rows)) == models * (models - 1)  # no seen_by_checkpoint: no restricted rows


def prepare_sequences(ctx, work: Path, size: int, sequences: int) -> None:
    from pyspark.sql import functions as F

    tokens = F.transform(F.sequence(F.lit(0), F.lit(63)), lambda i: F.pmod(F.xxhash64(F.col("id"), i), F.lit(50_000)))
    rows = ctx.spark.range(sequences).select(
        F.col("id").alias("sequence_id"), tokens.cast("array<int>").alias("tokens"), F.lit("t").alias("text"),
        F.lit("p").alias("prompt_text"), F.lit(None).cast("string").alias("pile_set_name"))
    ctx.warehouse.write(rows, "sequences", mode="overwrite")


def child_score_chunks(ctx, work: Path, chunks: int, sequences: int) -> None:
    from pyspark.sql import functions as F

    from semmem.stages.chunks import chunks_of, write_in_chunks

    rows = ctx.warehouse.read("sequences").select("sequence_id", "tokens")

    def compute(chunk):
        total = F.aggregate("tokens", F.lit(0).cast("long"), lambda acc, t: acc + t)
        return chunk.select(F.col("sequence_id").cast("int").alias("token_id"), total.alias("frequency"))

    with chunks_of(ctx, rows, rows_per_commit=-(-sequences // chunks)) as parts:
        write_in_chunks(ctx, parts, "token_frequencies", compute, label="bench")
        assert parts.count == chunks
    assert ctx.warehouse.read("token_frequencies").count() == sequences


def child_train_model(ctx, work: Path, tokens: int, sequences: int) -> None:
    from pyspark.sql import functions as F

    from semmem.catalog import table
    from semmem.ingest import megatron
    from semmem.stages.scoring import _trained_rows

    index = megatron.open_index(str(work / f"stream{tokens}"), ctx.cfg.stream.seq_length)
    ctx.warehouse.write(ctx.spark.createDataFrame([megatron.index_record(index)], table("stream_sources").spark_schema),
                        "stream_sources", mode="overwrite")
    rows, n = _trained_rows(ctx)
    assert rows.select(F.count("*")).first()[0] == n


def child_startup(ctx, work: Path, size: int, sequences: int) -> None:
    ctx.spark.range(10).count()


CHILDREN = {"forecast": child_forecast, "score_chunks": child_score_chunks, "train_model": child_train_model,
            "startup": child_startup, "prepare_sequences": prepare_sequences}


def child(path: str, work: Path, size: int, sequences: int, max_tokens: int) -> None:
    ctx = context(work, f"train_model.max_tokens={max_tokens}")
    start = time.perf_counter()
    CHILDREN[path](ctx, work, size, sequences)
    print(json.dumps({"wall": time.perf_counter() - start}))


# ------------------------------------------------------------------------------------------ in the parent process
def measure(path: str, work: Path, size: int, sequences: int, max_tokens: int) -> dict:
    """One child run under the sampler: its wall time (the measured work only), driver peak RSS and bytes read."""
    cmd = [sys.executable, __file__, "--child", path, "--work", str(work), "--size", str(size),
           "--sequences", str(sequences), "--max-tokens", str(max_tokens)]
    proc, sampler = run_sampled(cmd)
    if proc.returncode:
        sys.exit(f"bench_growth: {path} at {size} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return {"wall": json.loads(proc.stdout.strip().splitlines()[-1])["wall"], "driver_rss": sampler.peak["driver"],
            "read": sampler.read_bytes}


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (after flushing them), so that what a run reads of it shows."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def ratio(large: float, small: float) -> float:
    return large / small if small > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes: a smoke run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sequences", type=int, default=1_000_000, help="sequences for forecast and score_chunks")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, Path(args.work), args.size, args.sequences, args.max_tokens)
        return 0
    n = args.sequences // 10 if args.quick else args.sequences
    stream_tokens = (10_000_000, 40_000_000) if args.quick else (100_000_000, 400_000_000)
    max_tokens = min(MAX_TOKENS, stream_tokens[0] // 5)
    sizes = {"forecast": (12, 48), "score_chunks": (4, 16), "train_model": stream_tokens}
    with tempfile.TemporaryDirectory(prefix="bench_growth_") as tmp:
        work = Path(tmp)
        measure("prepare_sequences", work, 0, n, max_tokens)
        for tokens in stream_tokens:
            write_stream(work / f"stream{tokens}", tokens, seed=tokens % 97)
        startup = measure("startup", work, 0, n, max_tokens)["read"]
        print(f"bench_growth: {n:,} sequences; streams of {stream_tokens[0]:,} and {stream_tokens[1]:,} tokens, "
              f"train_model.max_tokens {max_tokens:,}; a run that only starts Spark reads {startup / 2**20:.0f} MiB")
        failed = []
        for path, (small, large) in sizes.items():
            runs = []
            for size in (small, large):
                mapped = work / f"stream{size}.bin" if path == "train_model" else None  # read by memory map
                if mapped:
                    evict(mapped)
                run = measure(path, work, size, n, max_tokens)
                run["input"] = cached_bytes(mapped) if mapped else max(0, run["read"] - startup)
                runs.append(run)
                print(f"  {path} at {size:,}: wall {run['wall']:.1f} s, driver peak {run['driver_rss']:.0f} MiB, "
                      f"input {run['input'] / 2**20:.1f} MiB")
            got = {k: ratio(runs[1][src], runs[0][src]) for k, src in
                   (("driver_rss", "driver_rss"), ("input_bytes", "input"), ("wall", "wall"))}
            print(f"growth: {path} driver_rss {got['driver_rss']:.2f} input_bytes {got['input_bytes']:.2f} "
                  f"wall {got['wall']:.2f}")
            failed += [f"{path} {k} {got[k]:.2f} > {goal}" for k, goal in GOALS[path].items() if got[k] > goal]
    print("growth goals: " + ("all met" if not failed else "MISSED: " + "; ".join(failed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
