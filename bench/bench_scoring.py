"""Benchmark of model scoring: `flag` mode, `full` mode and a plain Hugging Face generate() loop, same rows, one run.

    .venv/bin/python bench/bench_scoring.py                 # CPU, the embedded default's shape
    .venv/bin/python bench/bench_scoring.py --quick         # smoke run
    .venv/bin/python bench/bench_scoring.py --shape 1b --device cuda --dtype float16    # GPU, with MFU

Models have random weights (timing only) and the GPT-NeoX shapes of Pythia. Rows are random tokens, except a
fraction (--memorized, default 0.1) whose continuation is the model's own greedy output: full mode skips generation
for those, as it does for memorized rows in real data (~1-2% for Pythia-12b, much more in the embedded sample).
`graded` is what stage `score` computes: `full` plus memorized_at the default context lengths and the membership scores
(issue 22 §3; goal: at most 1.6x the time of `full`; zlib_ratio is one zlib call per text in Spark, not timed here).
Sequences/s are over the timed batches after one warm-up batch. MFU for flag mode counts 2 x parameters FLOPs per
token (all parameters, embeddings included, as in the issue) against the H100 SXM dense bf16 peak, 989 TFLOPS.
Results go to stdout and bench-out/bench_scoring.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from semmem.config import ScoreConfig  # noqa: E402
from semmem.scoring.memorization import auto_batch_size, score_tokens  # noqa: E402

H100_BF16_PEAK = 989e12
SHAPES = {  # hidden, layers, heads, vocab
    "small": (128, 2, 4, 4096),  # the embedded default (train_model defaults, BPE vocab 4096)
    "70m": (512, 6, 8, 50304),
    "160m": (768, 12, 12, 50304),
    "1b": (2048, 16, 8, 50304),
}


def build(shape: str, device: torch.device, dtype: torch.dtype) -> GPTNeoXForCausalLM:
    hidden, layers, heads, vocab = SHAPES[shape]
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * hidden, max_position_embeddings=2048, eos_token_id=0, bos_token_id=0,
                        pad_token_id=1, attn_implementation="sdpa", initializer_range=0.02)
    torch.manual_seed(0)
    with torch.device(device):
        model = GPTNeoXForCausalLM(cfg)
    return model.to(dtype).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_generate(model, batch: torch.Tensor) -> torch.Tensor:
    """What pythia's eval_memorization.py does per batch: generate() to 64 tokens with min_length=64, compare."""
    prompt = batch[:, :32]
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_length=64, min_length=64,
                         do_sample=False, num_beams=1, eos_token_id=0, pad_token_id=0)
    return (out[:, 32:] == batch[:, 32:]).double().mean(dim=1)


def generate_and_perplexity(model, batch: torch.Tensor) -> torch.Tensor:
    """The upstream pipeline's work for the same outputs: generate() for the score plus a separate forward pass for
    the perplexities (inference.py), here a plain log-softmax."""
    score = plain_generate(model, batch)
    logp = torch.log_softmax(model(input_ids=batch).logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, batch[:, 1:, None]).squeeze(-1)
    return score, nll.mean(dim=1).exp()


def timed(fn, batches, device) -> tuple[float, list]:
    outs = [fn(batches[0])]  # warm-up
    sync(device)
    start = time.perf_counter()
    for b in batches[1:]:
        outs.append(fn(b))
    sync(device)
    return time.perf_counter() - start, outs


def timed_pair(fa, fb, batches, device, repeats: int) -> tuple[float, float, list, list]:
    """timed() for two functions, alternating per batch, each batch's time the best of `repeats` runs (as timeit):
    on a shared machine a burst of load then slows neither side, so their ratio holds."""
    outs_a, outs_b = [fa(batches[0])], [fb(batches[0])]  # warm-up
    totals = [0.0, 0.0]
    for b in batches[1:]:
        best = [float("inf"), float("inf")]
        for r in range(repeats):
            for i, (fn, outs) in enumerate(((fa, outs_a), (fb, outs_b))):
                sync(device)
                start = time.perf_counter()
                out = fn(b)
                sync(device)
                best[i] = min(best[i], time.perf_counter() - start)
                if r == 0:
                    outs.append(out)
        totals[0] += best[0]
        totals[1] += best[1]
    return totals[0], totals[1], outs_a, outs_b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                    help="default: float32 on CPU, float16 on CUDA (model.dtype auto)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, from free memory on CUDA")
    ap.add_argument("--batches", type=int, default=None, help="timed batches (plus one warm-up)")
    ap.add_argument("--memorized", type=float, default=0.1, help="fraction of rows the model has memorized")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 small timed batches")
    ap.add_argument("--warehouse", default=None,
                    help="use a trained family member of this warehouse and its sequences instead of random ones")
    ap.add_argument("--member", default="trained-l", help="with --warehouse: the member (its last checkpoint)")
    ap.add_argument("--repeats", type=int, default=3, help="full / graded: each batch's best of this many runs")
    ap.add_argument("--skip-generate", action="store_true", help="time flag/full only (generate is slow on big shapes)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    if device.type == "cpu":
        torch.set_num_threads(torch.get_num_threads())
    if args.warehouse:
        from semmem import storage
        from semmem.training.family import checkpoint_folders
        from semmem.scoring.models import load_model, models_dir, parse_model_spec

        saved = checkpoint_folders(storage.join(models_dir(args.warehouse), args.member))
        if not saved:
            raise SystemExit(f"no checkpoint of {args.member} under {models_dir(args.warehouse)}: run `make run` first")
        spec = parse_model_spec(f"{args.member}@step{saved[-1][0]}", args.warehouse)
        model = load_model(spec, device=device, dtype=str(dtype).split(".")[-1])
        args.shape = args.member
    else:
        model = build(args.shape, device, dtype)
    bs = args.batch_size or (16 if args.quick else auto_batch_size(model, device, cpu_default=64))
    n_batches = args.batches or (2 if args.quick else 4)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(2, vocab, ((n_batches + 1) * bs, 64), generator=g).to(device)
    if args.warehouse:  # the real rows, cycled to fill the batches; nothing constructed
        import numpy as np
        from deltalake import DeltaTable

        seqs = DeltaTable(str(Path(args.warehouse) / "sequences")).to_pyarrow_table(columns=["tokens"])
        real = torch.as_tensor(np.stack(seqs.column("tokens").to_numpy(zero_copy_only=False)).astype(np.int64))
        rows = real[torch.arange(len(rows)) % len(real)].to(device)
    n_mem = 0 if args.warehouse else int(args.memorized * bs)
    batches = []
    for i in range(n_batches + 1):
        b = rows[i * bs:(i + 1) * bs].clone()
        if n_mem:
            with torch.inference_mode():
                prompt = b[:n_mem, :32]
                b[:n_mem, 32:] = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                                max_length=64, min_length=64, do_sample=False, eos_token_id=0,
                                                pad_token_id=0)[:, 32:]
        batches.append(b)
    n_rows = n_batches * bs

    with torch.inference_mode():
        t_flag, _ = timed(lambda b: score_tokens(model, b, mode="flag"), batches, device)
        graded = ScoreConfig()
        t_full, t_graded, full_out, graded_out = timed_pair(
            lambda b: score_tokens(model, b, mode="full"),
            lambda b: score_tokens(model, b, mode="full", membership=True, context_lengths=graded.context_lengths,
                                   min_k_fraction=graded.min_k_fraction), batches, device, args.repeats)
        t_gen, gen_out = (None, None) if args.skip_generate else timed(lambda b: plain_generate(model, b), batches,
                                                                       device)
        t_gp, _ = (None, None) if args.skip_generate else timed(lambda b: generate_and_perplexity(model, b), batches,
                                                                device)
    if gen_out is not None:  # same answers, or the comparison means nothing
        same = all(torch.equal(f["memorization_score"].cpu(), r.cpu()) for f, r in zip(full_out, gen_out))
    else:
        same = None
    params = sum(p.numel() for p in model.parameters())
    memorized = torch.cat([f["is_memorized"].cpu() for f in full_out[1:]]).float().mean()
    res = {
        "shape": args.shape, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "batch_size": bs,
        "rows": n_rows, "memorized_fraction": n_mem / bs, "params": params,
        "flag_seq_per_s": n_rows / t_flag, "full_seq_per_s": n_rows / t_full, "graded_seq_per_s": n_rows / t_graded,
        "graded_time_vs_full": t_graded / t_full,
        "memorized_at_in_rows": {k: float(torch.cat([g[f"memorized_at_{k}"].cpu() for g in graded_out[1:]])
                                          .float().mean()) for k in graded.context_lengths},
        "generate_seq_per_s": None if t_gen is None else n_rows / t_gen,
        "full_equals_generate": same, "memorized_in_rows": float(memorized),
    }
    if t_gen is not None:
        res["flag_vs_generate"] = t_gen / t_flag
        res["full_vs_generate"] = t_gen / t_full
        res["generate_plus_ppl_seq_per_s"] = n_rows / t_gp
        res["full_vs_generate_plus_ppl"] = t_gp / t_full
    flops_flag = 2 * params * 64 * n_rows / t_flag
    res["flag_tflops"] = flops_flag / 1e12
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
        res["flag_fraction_of_h100_bf16_peak"] = flops_flag / H100_BF16_PEAK
    print(f"scoring bench: shape {args.shape} ({params / 1e6:.1f}M params), {device} {res['dtype']}, "
          f"batch {bs}, {n_rows} rows, {res['memorized_fraction']:.0%} constructed memorized"
          + (f", {res['memorized_in_rows']:.0%} memorized in fact" if "memorized_in_rows" in res else ""))
    print(f"  flag     {res['flag_seq_per_s']:10.1f} seq/s   ({res['flag_tflops']:.3f} TFLOPS)")
    print(f"  full     {res['full_seq_per_s']:10.1f} seq/s")
    print(f"  graded   {res['graded_seq_per_s']:10.1f} seq/s   (full + memorized_at {graded.context_lengths} + loss, "
          f"Min-K%, Min-K%++: {res['graded_time_vs_full']:.2f}x the time of full, goal <= 1.6x)")
    if t_gen is not None:
        print(f"  generate {res['generate_seq_per_s']:10.1f} seq/s   (+ a perplexity pass, as upstream: "
              f"{res['generate_plus_ppl_seq_per_s']:.1f} seq/s)")
        print(f"  ratios: flag/generate {res['flag_vs_generate']:.1f}x (goal >= 10x), full/generate "
              f"{res['full_vs_generate']:.2f}x (goal >= 1.5x), full/(generate + perplexity pass) "
              f"{res['full_vs_generate_plus_ppl']:.2f}x; full == generate on every row: {same}")
    if "flag_fraction_of_h100_bf16_peak" in res:
        print(f"  flag MFU vs H100 bf16 peak: {res['flag_fraction_of_h100_bf16_peak']:.1%} (goal >= 40% for 1b)")
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / "bench_scoring.json").write_text(json.dumps(res, indent=2))
    if same is False:
        print("ERROR: full mode disagrees with generate()", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
