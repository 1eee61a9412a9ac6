"""Benchmark of stage localize's model work: layer rewinding and per-sequence gradient norms, against a flag pass.

    .venv/bin/python bench/bench_localize.py                                      # CPU, the embedded default's shape
    .venv/bin/python bench/bench_localize.py --quick                              # smoke run
    .venv/bin/python bench/bench_localize.py --shape 160m --device cuda --dtype float16   # a Pythia-160M shape, GPU

Random weights (timing only) of Pythia's GPT-NeoX shapes; the "earlier checkpoint" is the same shape with another
seed. Rewinding every block (layer, attention, MLP of each layer) is 3 x layers flag passes plus the weight swaps:
the ratio `rewind / (blocks x flag)` is the swaps' overhead (goal: close to 1). Gradient accounting runs one
backward pass per sequence (float32, bfloat16 on a GPU); its sequences/s are set against flag scoring's, same rows.
Results go to stdout and bench-out/bench_localize.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.bench_scoring import build, sync  # noqa: E402
from semmem.scoring.localization import gradient_norms, layer_blocks, rewind_weights, rewound_memorized  # noqa: E402
from semmem.scoring.memorization import score_numpy  # noqa: E402


def timed(fn, device: torch.device) -> float:  # noqa: ANN001
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="small", help="small (the embedded default), 70m, 160m, 1b")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="of the rewinding passes (gradients: float32, bf16 on GPU)")
    p.add_argument("--sequences", type=int, default=None, help="default: 512 on GPU, 128 on CPU (16 with --quick)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    n = a.sequences or (16 if a.quick else 512 if device.type == "cuda" else 128)
    dtype = getattr(torch, a.dtype)
    final, earlier = build(a.shape, device, dtype), build(a.shape, device, dtype)
    with torch.no_grad():
        for q in earlier.parameters():
            q.add_(torch.randn_like(q) * 0.01)
    vocab = final.config.vocab_size
    tokens = torch.randint(2, vocab, (n, 64), generator=torch.Generator().manual_seed(0)).numpy()
    blocks = layer_blocks(final)
    batch = min(n, 256)
    score_numpy(final, tokens[:batch], batch_size=batch, device=device, mode="flag")  # warm-up
    flag_s = timed(lambda: score_numpy(final, tokens, batch_size=batch, device=device, mode="flag"), device)
    weights = rewind_weights(final, earlier, blocks)
    rewind_s = timed(lambda: rewound_memorized(final, weights, tokens, blocks, batch_size=batch, device=device),
                     device)
    wide = build(a.shape, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    grad_rows = tokens[: max(4, n // 8)]
    gradient_norms(wide, grad_rows[:2], blocks, device=device)  # warm-up
    grad_s = timed(lambda: gradient_norms(wide, grad_rows, blocks, device=device), device)
    out = {"shape": a.shape, "device": str(device), "dtype": a.dtype, "sequences": n, "blocks": len(blocks),
           "flag_seq_per_s": n / flag_s, "rewind_all_blocks_s": rewind_s,
           "rewind_vs_blocks_x_flag": rewind_s / (len(blocks) * flag_s),
           "gradient_seq_per_s": len(grad_rows) / grad_s, "gradient_vs_flag": (len(grad_rows) / grad_s) / (n / flag_s)}
    print(f"localize {a.shape} on {device} ({a.dtype}), {n} sequences, {len(blocks)} blocks: flag "
          f"{out['flag_seq_per_s']:,.1f} seq/s; rewinding every block {rewind_s:.2f} s = "
          f"{out['rewind_vs_blocks_x_flag']:.2f}x blocks x flag (goal: close to 1); gradient norms "
          f"{out['gradient_seq_per_s']:,.1f} seq/s ({out['gradient_vs_flag']:.3f}x flag)")
    folder = Path(__file__).resolve().parents[1] / "bench-out"
    folder.mkdir(exist_ok=True)
    (folder / "bench_localize.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
