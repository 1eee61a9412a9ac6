"""`make gpu-check`: the GPU-marked tests and the GPU benchmarks in one run of at most 8 minutes, one table of figures.

    .venv/bin/python tools/gpu_check.py                      # where CUDA is; elsewhere it says so and exits 0
    .venv/bin/python tools/gpu_check.py --allow-cpu --quick  # the same steps on CPU, smoke sizes: tests the plumbing

A GPU is lent for minutes at a time, so one command gives every GPU figure the docs lack. Each step is a subprocess
with its own time limit (a hung step costs its budget, not the run; its process group is killed, Spark's JVM too),
and its figures come from the JSON the bench writes to bench-out/. A step that fails or runs out of time is a row of
the table saying so. Exit status 1 when the GPU tests did not pass, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench-out"
TOTAL_S = 470  # all steps together: the 8 minutes, less this script's own start

Row = tuple[str, str, str]  # check, figure, value


@dataclass(frozen=True)
class Step:
    check: str  # the table's first column for the step's own rows (time, failure)
    argv: list[str]
    budget_s: int
    output: str | None  # the JSON the step writes under bench-out/; None: figures from its stdout (pytest)
    figures: Callable[[Any], list[Row]]


def pytest_figures(stdout: str) -> list[Row]:
    return [("pytest -m gpu", "result", last_line(stdout))]


def scoring_figures(r: dict) -> list[Row]:
    check = f"scoring {r['shape']} {r['dtype']} (batch {r['batch_size']})"
    rows = [(check, "flag seq/s", f"{r['flag_seq_per_s']:,.1f}"),
            (check, "full seq/s", f"{r['full_seq_per_s']:,.1f}"),
            (check, "generate seq/s", f"{r['generate_seq_per_s']:,.1f}"),
            (check, "flag / generate", f"{r['flag_vs_generate']:.1f}x"),
            (check, "full / generate", f"{r['full_vs_generate']:.2f}x"),
            (check, "graded time / full", f"{r['graded_time_vs_full']:.2f}x"),
            (check, "full == generate on every row", str(r["full_equals_generate"]))]
    if "flag_fraction_of_h100_bf16_peak" in r:
        rows.append((check, "flag MFU vs H100 bf16 peak", f"{r['flag_fraction_of_h100_bf16_peak']:.1%}"))
    return rows


def near_figures(r: dict) -> list[Row]:
    e, s = r["embed"], r["semantic"]
    embed = f"embed, {e['distinct_texts']:,} texts"
    semantic = f"semantic, {s['vectors']:,} x {s['vectors']:,}"
    return [(embed, "stage texts/s", f"{e['stage_texts_per_s']:,.1f}"),
            (embed, "plain SentenceTransformer texts/s (with load)", f"{e['plain_texts_per_s']:,.1f}"),
            (embed, "plain encode alone texts/s", f"{e['encode_alone_texts_per_s']:,.1f}"),
            (embed, "stage / plain", f"{e['stage_vs_plain']:.2f}x"),
            (semantic, f"torch kernel ({s['torch_kernel']}) pairs/s", f"{s['torch_kernel_pairs_per_s']:.3e}"),
            (semantic, "numpy kernel (CPU) pairs/s", f"{s['numpy_kernel_pairs_per_s']:.3e}"),
            (semantic, f"stage, {s['stage_kernel']} kernel, counts pairs/s", f"{s['stage_counts_pairs_per_s']:.3e}")]


def family_figures(r: dict) -> list[Row]:
    check = f"family trainer ({r['device']})"
    return [(check, f"train_model wall s, {master}, {m['checkpoints']} checkpoints", f"{m['wall_s']:.1f}")
            for master, m in r["masters"].items()]


def localize_figures(r: dict) -> list[Row]:
    check = f"localize {r['shape']} {r['dtype']}, {r['sequences']:,} sequences, {r['blocks']} blocks"
    return [(check, "flag seq/s", f"{r['flag_seq_per_s']:,.1f}"),
            (check, "rewinding every block s", f"{r['rewind_all_blocks_s']:.2f}"),
            (check, "rewinding / (blocks x flag)", f"{r['rewind_vs_blocks_x_flag']:.2f}x"),
            (check, "gradient norms seq/s", f"{r['gradient_seq_per_s']:,.1f}")]


def steps(device: str, quick: bool) -> list[Step]:
    """The checks in order, each with its share of TOTAL_S. On CPU the 1b and 160m shapes become `small` (1b in fp32
    on two cores takes many minutes a batch)."""
    py = sys.executable
    q = ["--quick"] if quick else []
    dtype = ["--dtype", "float16"] if device == "cuda" else []
    big = "1b" if device == "cuda" else "small"
    cores = str(min(8, os.cpu_count() or 2))
    return [
        Step("pytest -m gpu", [py, "-m", "pytest", "-q", "-m", "gpu", "tests"], 70, None, pytest_figures),
        *(Step(f"scoring {shape}", [py, "bench/bench_scoring.py", "--shape", shape, "--device", device, *dtype, *q],
               budget, "bench_scoring.json", scoring_figures) for shape, budget in (("70m", 60), (big, 90))),
        Step("near (embed, semantic)", [py, "bench/bench_near.py", "--only", "embed,semantic", "--device", device,
                                        "--cores", cores, *q], 120, "bench_near.json", near_figures),
        Step("localize", [py, "bench/bench_localize.py", "--shape", "160m" if device == "cuda" else "small",
                          "--device", device, *dtype, *q], 40, "bench_localize.json", localize_figures),
        Step("family trainer", [py, "bench/bench_family.py", "--masters", "3", "--device", device, *q], 80,
             "bench_family.json", family_figures),
    ]


def last_line(text: str) -> str:
    lines = [ln.strip(" =") for ln in text.splitlines() if ln.strip(" =")]
    return lines[-1][:200] if lines else "(no output)"


def run_step(step: Step, deadline: float) -> tuple[list[Row], bool]:
    """The step's rows and whether it passed; never raises for the step's own failure or timeout."""
    limit = min(step.budget_s, deadline - time.monotonic())
    if limit < 10:
        return [(step.check, "not run", "the 8-minute budget is spent")], False
    if step.output:
        (OUT / step.output).unlink(missing_ok=True)  # a stale file must not pass for this run's figures
    start = time.monotonic()
    proc = subprocess.Popen(step.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the step's own process group: Spark's JVM and workers with it
        except ProcessLookupError:  # it ended just now
            pass
        proc.communicate()
        return [(step.check, "timed out", f"killed after {limit:.0f} s")], False
    took = (step.check, "time", f"{time.monotonic() - start:.0f} s (limit {limit:.0f} s)")
    failed = (step.check, "failed", f"exit {proc.returncode}: "
              + (last_line(stdout) if step.output is None else last_line(stderr or stdout)))
    if proc.returncode != 0 and not (step.output and (OUT / step.output).exists()):
        return [failed, took], False
    try:
        rows = step.figures(stdout if step.output is None else json.loads((OUT / step.output).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [(step.check, "failed", f"no figures in its output: {type(e).__name__}: {e}"), took], False
    if proc.returncode != 0:  # a bench that wrote its figures, then found a fault (full != generate): both shown
        rows.insert(0, failed)
    return [*rows, took], proc.returncode == 0


def table(header: str, rows: list[Row]) -> str:
    cells = [[c.replace("|", "\\|") for c in row] for row in rows]
    return "\n".join([header, "", "| check | figure | value |", "|---|---|---|",
                      *(f"| {c} | {f} | {v} |" for c, f, v in cells)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the steps on CPU (tests the plumbing)")
    ap.add_argument("--quick", action="store_true", help="the benches' smoke sizes")
    args = ap.parse_args(argv)
    if torch.cuda.is_available():
        device = "cuda"
        header = f"gpu-check on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    elif args.allow_cpu:
        device = "cpu"
        header = f"gpu-check on CPU (--allow-cpu: a check of the plumbing, not GPU figures; torch {torch.__version__})"
    else:
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}): nothing to measure; run it where a GPU is")
        return 0
    print(header, file=sys.stderr, flush=True)
    deadline = time.monotonic() + TOTAL_S
    rows: list[Row] = []
    tests_ok = False
    todo = steps(device, args.quick)
    for i, step in enumerate(todo, 1):
        print(f"gpu-check: [{i}/{len(todo)}] {step.check} ...", file=sys.stderr, flush=True)
        got, ok = run_step(step, deadline)
        rows += got
        if step.output is None:
            tests_ok = ok
    print(table(header, rows))
    return 0 if tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
