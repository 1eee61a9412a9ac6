"""What Morris et al.'s capacity would take on this machine (issue 24): bits per parameter of one capacity shape
against the step ceiling.

    python bench/bench_capacity.py                       # shape xs, N = 256, ceilings 1K-16K steps (~6 min, 2 cores)
    python bench/bench_capacity.py --quick               # ceilings 250-1K, a smoke run
    python bench/bench_capacity.py --shape s --n 1024 --ceilings 2000 8000 32000

Each ceiling is its own run of `semmem.training.capacity.run_one` (conf/local.yaml's capacity settings: V, L,
batch, learning rate, rotary) with the stopping rule off: constant learning rate up to the ceiling, no cool-down, so
each point is what that many steps store, not a converged value. Runs go two at a time, one core each. Prints
memorized bits, bits/param and the control's bits (unseen random data, the noise floor) per ceiling, then the slope
of bits/param per doubling of steps over the last two ceilings and, from it, the steps 3.0 bits/param would take if
the curve kept that slope (an extrapolation, printed as one).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semmem.config import load_config  # noqa: E402

TARGET = 3.0  # bits/param: issue 24's goal (Morris et al. measure 3.6 in bf16, 3.83 in fp32)


def one_run(shape, n: int, ceiling: int, seed: int) -> dict:
    import torch

    from semmem.training.capacity import run_one

    torch.set_num_threads(1)
    c = load_config(None, []).capacity
    return run_one(shape, n, seed, vocab=c.vocab_size, length=c.sequence_length, max_steps=ceiling, window=c.window,
                   tolerance=-math.inf, batch_size=c.batch_size, learning_rate=c.learning_rate,
                   rotary_pct=c.rotary_pct, dtype="float32", device="cpu")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="xs", help="a name among conf/local.yaml's capacity.sizes")
    ap.add_argument("--n", type=int, default=256, help="dataset sequences")
    ap.add_argument("--ceilings", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 16000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="ceilings 250, 500 and 1,000")
    args = ap.parse_args(argv)
    c = load_config(None, []).capacity
    shapes = {s.name: s for s in c.sizes}
    if args.shape not in shapes:
        sys.exit(f"bench_capacity: --shape {args.shape!r}: conf/local.yaml's capacity.sizes are {sorted(shapes)}")
    ceilings = sorted([250, 500, 1000] if args.quick else args.ceilings)
    shape = shapes[args.shape]
    print(f"capacity-{shape.name} (hidden {shape.hidden_size}, {shape.num_layers} layer(s)), V = {c.vocab_size}, "
          f"L = {c.sequence_length}, N = {args.n} ({args.n * c.sequence_length * math.log2(c.vocab_size):,.0f} "
          f"dataset bits), lr {c.learning_rate}, float32, seed {args.seed}; constant rate to each ceiling", flush=True)
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        runs = list(pool.map(one_run, [shape] * len(ceilings), [args.n] * len(ceilings), ceilings,
                             [args.seed] * len(ceilings)))
    print(f"{'ceiling':>8s} {'params':>7s} {'memorized bits':>15s} {'bits/param':>11s} {'control bits':>13s} "
          f"{'CPU s':>7s}")
    for ceiling, r in zip(ceilings, runs):
        print(f"{ceiling:8,d} {r['params']:7,d} {r['memorized_bits']:15,.0f} {r['bits_per_param']:11.2f} "
              f"{r['control_bits']:13,.0f} {r['seconds']:7.0f}")
    if len(runs) >= 2:
        (c0, r0), (c1, r1) = list(zip(ceilings, runs))[-2:]
        slope = (r1["bits_per_param"] - r0["bits_per_param"]) / math.log2(c1 / c0)
        if r1["bits_per_param"] >= TARGET:
            print(f"{TARGET} bits/param reached at {c1:,} steps")
        elif slope <= 0:
            print(f"slope {slope:+.3f} bits/param per doubling of steps over the last two ceilings: "
                  f"no extrapolation to {TARGET}")
        else:
            doublings = (TARGET - r1["bits_per_param"]) / slope
            print(f"slope {slope:+.3f} bits/param per doubling of steps ({c0:,} -> {c1:,}); at that slope "
                  f"{TARGET} bits/param would take ~{c1 * 2 ** doublings:.1e} steps ({doublings:.1f} more doublings; "
                  f"an extrapolation, not a measurement)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
