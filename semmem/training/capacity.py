"""How many bits a model stores (Morris et al. 2025, "How much do language models memorize?").

Train GPT-NeoX models on N sequences of uniformly random tokens (vocabulary V, length L, seeded): nothing about such
data generalizes, so every bit the model can reproduce is memorized. The reference entropy of each token is exactly
log2 V, so a sequence's memorized bits are max(0, L log2 V - NLL) (NLL in bits of its tokens, each given the previous
ones and a BOS token). Summed over the dataset they grow with N until the model is full: that plateau divided by the
parameter count is its capacity in bits per parameter (Morris et al.: about 3.6; 3.51 in bf16, 3.83 in fp32).

A fixed step budget would confound dataset size with training (small N seen far more often), so each run trains
until the bits it stores stop growing (`stalled`, on the training loss), up to a ceiling; a run that reaches the
ceiling is marked unconverged and kept out of the estimate. Each (size, dtype, N, seed) run trains in its own Spark
task (`run_capacity`); `mark_plateau` finds each model's plateau (`detect_plateau`), `plateau` summarizes the table.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from semmem.config import ModelShape
from semmem.training.trainer import TrainParams, build_model

RUN_COLUMNS = ("model", "params", "dtype", "seed", "dataset_sequences", "dataset_bits", "memorized_bits",
               "bits_per_param", "memorized_bits_per_token", "control_bits", "final_loss", "loss_tail", "steps",
               "converged", "seconds")
PLATEAU_COLUMNS = ("in_plateau", "capacity_bits_per_param", "capacity_bits_per_param_std", "capacity_note")
CAPACITY_COLUMNS = RUN_COLUMNS + PLATEAU_COLUMNS
LOSS_TAIL_WINDOWS = 4  # training-loss window means kept per run (loss_tail), the last one the cool-down's
STILL_RISING = "not reached (largest N still rising)"


def random_dataset(n: int, length: int, vocab: int, seed: int, *, control: bool = False) -> np.ndarray:
    """[n, length] tokens uniform on 0..vocab-1 (seeded: the same data for every model size); control=True draws
    sequences from another stream of the same seed, never trained on."""
    rng = np.random.default_rng([seed, 1] if control else seed)
    return rng.integers(0, vocab, (n, length), dtype=np.int64)


def build(shape: ModelShape, vocab: int, length: int, seed: int, rotary_pct: float = 1.0) -> Any:
    """The family's GPT-NeoX (`build_model`) for vocab + 1 tokens (the extra one is BOS), context length + 1, rotary
    on `rotary_pct` of each head: random sequences carry nothing but position and identity, and Pythia's 0.25 leaves
    a 4-dim head one rotary pair."""
    params = TrainParams(hidden_size=shape.hidden_size, num_layers=shape.num_layers, num_heads=shape.num_heads,
                         context_length=length + 1, seed=seed)
    return build_model(vocab + 1, params, eod_id=vocab, pad_id=vocab, rotary_pct=rotary_pct)


def token_nll_bits(model: Any, data: np.ndarray, vocab: int, batch_size: int = 256) -> np.ndarray:
    """[n, L] NLL in bits of each token given BOS and the tokens before it."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            x = torch.as_tensor(data[s:s + batch_size], device=next(model.parameters()).device)
            inp = torch.cat([torch.full((len(x), 1), vocab, dtype=x.dtype, device=x.device), x[:, :-1]], dim=1)
            logits = model(input_ids=inp).logits.float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1), reduction="none")
            out.append((nll.reshape(x.shape) / math.log(2)).cpu().numpy())
    return np.concatenate(out)


def memorized_bits(nll_bits: np.ndarray, vocab: int) -> float:
    """Sum over sequences of max(0, L log2 V - NLL of the sequence): what the model stores beyond the data's entropy.

    The max is taken per sequence, as Morris et al. do (the compression of a sequence, floored at 0). Floored per
    token instead (`memorized_bits_per_token`), the chance fluctuations of each NLL around log2 V add up to bits
    nobody stored: on random sequences the model never saw (`control_bits`) that count is far from 0."""
    return float(np.maximum(0.0, math.log2(vocab) * nll_bits.shape[1] - nll_bits.sum(axis=1)).sum())


def memorized_bits_per_token(nll_bits: np.ndarray, vocab: int) -> float:
    """Sum over tokens of max(0, log2 V - NLL of the token): the per-token reading of the definition."""
    return float(np.maximum(0.0, math.log2(vocab) - nll_bits).sum())


def stalled(losses: Sequence[float], window: int, tolerance: float, entropy: float) -> bool:
    """The stopping rule: the mean loss of the last `window` steps fell by no more than `tolerance` of what the model
    stores (`entropy` - that loss, bits per token) below the mean of the window before, i.e. the stored bits grew by
    less than that share. Relative to the stored bits, not to the loss: on a large N the loss falls by a few percent
    in all, so a rule on its own scale would stop before anything is stored. Window means: minibatches are noisy."""
    if len(losses) < 2 * window:
        return False
    last, before = float(np.mean(losses[-window:])), float(np.mean(losses[-2 * window:-window]))
    return before - last <= tolerance * (entropy - last)


def train(model: Any, data: np.ndarray, vocab: int, *, max_steps: int, window: int, tolerance: float,
          batch_size: int, learning_rate: float, seed: int, dtype: str, device: Any) -> tuple[list[float], bool]:
    """Train on `data` until the stored bits stall (`stalled`, checked every `window` steps after a warmup of one
    window), then cool the learning rate down linearly to 0 over one more window (a constant rate leaves the weights
    jittering around the minimum, which costs stored bits); AdamW, no weight decay. Returns the loss of every step
    in bits per token and whether the rule fired before `max_steps` (the ceiling of the constant-rate phase)."""
    import torch
    import torch.nn.functional as F

    model.to(device=device, dtype=getattr(torch, dtype)).train()
    x_all = torch.as_tensor(data, device=device)
    bos = torch.full((len(data), 1), vocab, dtype=x_all.dtype, device=device)
    inputs = torch.cat([bos, x_all[:, :-1]], dim=1)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    warmup = min(window, max_steps)  # one window, whatever the ceiling: a higher one only lengthens a run
    losses: list[float] = []
    pending: list[Any] = []  # this window's losses, still on the device (read once a window, not once a step)
    cooldown_from: int | None = None
    step, end = 0, max_steps
    while step < end:
        factor = min(1.0, (step + 1) / warmup) if cooldown_from is None else 1 - (step - cooldown_from) / window
        for group in opt.param_groups:
            group["lr"] = learning_rate * factor
        idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=gen).to(device)
        logits = model(input_ids=inputs[idx]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x_all[idx].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        pending.append(loss.detach())
        step += 1
        if step % window and step < end:
            continue
        losses += (torch.stack(pending) / math.log(2)).tolist()
        pending = []
        if cooldown_from is None and step > warmup and stalled(losses[warmup:], window, tolerance, math.log2(vocab)):
            cooldown_from, end = step, step + window
    model.eval()
    return losses, cooldown_from is not None


def run_one(shape: ModelShape, n: int, seed: int, *, vocab: int, length: int, max_steps: int, window: int,
            tolerance: float, batch_size: int, learning_rate: float, rotary_pct: float, dtype: str,
            device: Any) -> dict[str, Any]:
    """One (size, dtype, dataset size, seed) run -> a capacity row (RUN_COLUMNS)."""
    start = time.perf_counter()
    data = random_dataset(n, length, vocab, seed)
    model = build(shape, vocab, length, seed, rotary_pct)
    params = sum(p.numel() for p in model.parameters())
    losses, converged = train(model, data, vocab, max_steps=max_steps, window=window, tolerance=tolerance,
                              batch_size=batch_size, learning_rate=learning_rate, seed=seed, dtype=dtype,
                              device=device)
    nll = token_nll_bits(model, data, vocab)
    bits = memorized_bits(nll, vocab)
    control = memorized_bits(token_nll_bits(model, random_dataset(n, length, vocab, seed, control=True), vocab), vocab)
    tail = [float(np.mean(losses[max(0, e - window):e]))
            for e in range(len(losses), max(0, len(losses) - LOSS_TAIL_WINDOWS * window), -window)][::-1]
    return {"model": f"capacity-{shape.name}", "params": params, "dtype": dtype, "seed": seed,
            "dataset_sequences": n, "dataset_bits": n * length * math.log2(vocab), "memorized_bits": bits,
            "bits_per_param": bits / params, "memorized_bits_per_token": memorized_bits_per_token(nll, vocab),
            "control_bits": control, "final_loss": float(nll.mean()), "loss_tail": tail, "steps": len(losses),
            "converged": converged, "seconds": time.perf_counter() - start}


def run_capacity(batches: Iterator[pd.DataFrame], *, vocab: int, length: int, max_steps: int, window: int,
                 tolerance: float, batch_size: int, learning_rate: float, rotary_pct: float,
                 device: str) -> Iterator[pd.DataFrame]:
    """mapInPandas body: each row (JSON: shape, dtype, n, seed) is one run, trained here with the task's cores."""
    import torch

    from semmem.scoring.models import pick_device
    from semmem.spark import task_cpus

    torch.set_num_threads(task_cpus())
    dev = pick_device(device)
    for batch in batches:
        rows = []
        for spec in batch["run"]:
            r = json.loads(spec)
            rows.append(run_one(ModelShape(**r["shape"]), r["n"], r["seed"], vocab=vocab, length=length,
                                max_steps=max_steps, window=window, tolerance=tolerance, batch_size=batch_size,
                                learning_rate=learning_rate, rotary_pct=rotary_pct, dtype=r["dtype"], device=dev))
        yield pd.DataFrame(rows)[list(RUN_COLUMNS)]


def run_specs(sizes: list[ModelShape], dataset_sequences: list[int], seeds: list[int], dtypes: list[str],
              vocab: int) -> list[str]:
    """One JSON spec per run, the most expensive (largest model, largest dataset) first, for load balance."""
    runs = [(s, d, n, seed) for s in sizes for d in dtypes for n in dataset_sequences for seed in seeds]
    runs.sort(key=lambda r: -r[0].flops_per_token(vocab) * r[2])
    return [json.dumps({"shape": asdict(s), "dtype": d, "n": n, "seed": seed}) for s, d, n, seed in runs]


def detect_plateau(bits: Sequence[float], tolerance: float) -> tuple[int | None, str]:
    """Where the plateau of memorized bits (one value per dataset size, N ascending) starts: the longest tail of at
    least two points all within `tolerance` (relative) of the tail's largest value (the points before it are the
    rise). None and the reason when the two largest N are not that close."""
    start = None
    for i in range(len(bits) - 2, -1, -1):
        tail = bits[i:]
        if min(tail) >= (1 - tolerance) * max(tail):
            start = i
        else:
            break
    if start is not None:
        return start, "plateau"
    if len(bits) < 2:
        return None, "not reached (fewer than two dataset sizes with a converged run)"
    return None, STILL_RISING if bits[-1] > bits[-2] else "not reached (largest N falls below the one before)"


def mark_plateau(runs: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """`runs` with PLATEAU_COLUMNS: per model and dtype, the plateau of the converged runs' mean memorized bits over
    seeds (`detect_plateau`), the capacity = the mean bits over the plateau's dataset sizes / parameters (its std
    over seeds), NULL with the reason when no plateau is reached. Unconverged runs enter no estimate (said in the
    note)."""
    out = []
    for _, g in runs.groupby(["model", "dtype"], sort=False):
        g = g.copy()
        ok = g[g["converged"]]
        by_n = ok.groupby("dataset_sequences")["memorized_bits"].mean().sort_index()
        start, note = detect_plateau(by_n.tolist(), tolerance)
        plateau_ns = by_n.index[start:] if start is not None else by_n.index[:0]
        g["in_plateau"] = g["converged"] & g["dataset_sequences"].isin(plateau_ns)
        per_seed = g[g["in_plateau"]].groupby("seed")["bits_per_param"].mean()
        g["capacity_bits_per_param"] = float(per_seed.mean()) if len(per_seed) else np.nan
        g["capacity_bits_per_param_std"] = float(np.nan_to_num(per_seed.std())) if len(per_seed) else np.nan
        if start is not None:
            note = f"plateau over N = {', '.join(str(int(n)) for n in plateau_ns)}"
        dropped = int((~g["converged"]).sum())
        if dropped:
            note += f"; {dropped} of {len(g)} runs unconverged at the step ceiling, left out"
        g["capacity_note"] = note
        out.append(g)
    return pd.concat(out, ignore_index=True)[list(CAPACITY_COLUMNS)]


def plateau(capacity: pd.DataFrame) -> pd.DataFrame:
    """Per model and dtype (rows of `mark_plateau`): parameters, the plateau's dataset sizes and mean memorized bits,
    the capacity in bits per parameter (+- std over seeds; NaN when not reached), its ratio to the same model's
    float32 capacity, the control bits over the plateau (the noise floor), runs, unconverged runs, and the note."""
    out = []
    for (model, dtype), g in capacity.groupby(["model", "dtype"]):
        p = g[g["in_plateau"]]
        out.append({"model": model, "dtype": dtype, "params": int(g["params"].iloc[0]),
                    "plateau_sequences": ", ".join(str(n) for n in sorted(p["dataset_sequences"].unique())),
                    "plateau_bits": float(p["memorized_bits"].mean()) if len(p) else np.nan,
                    "bits_per_param": float(g["capacity_bits_per_param"].iloc[0]),
                    "bits_per_param_std": float(g["capacity_bits_per_param_std"].iloc[0]),
                    "control_bits": float(p["control_bits"].mean()) if len(p) else np.nan,
                    "runs": len(g), "unconverged": int((~g["converged"]).sum()),
                    "note": g["capacity_note"].iloc[0]})
    df = pd.DataFrame(out)
    fp32 = df[df["dtype"] == "float32"].set_index("model")["bits_per_param"]
    df["vs_float32"] = df["bits_per_param"] / df["model"].map(fp32)
    return df.sort_values(["params", "dtype"], ascending=[True, False])


def describe(summary: Any) -> str:
    """One row of `plateau` in words: the capacity (and its ratio to float32) or why there is none, then the note."""
    if pd.isna(summary.bits_per_param):
        return summary.note
    ratio = "" if summary.dtype == "float32" or pd.isna(summary.vs_float32) else f", {summary.vs_float32:.2f} x float32"
    return f"{summary.bits_per_param:.2f} +- {summary.bits_per_param_std:.2f} bits/parameter{ratio} ({summary.note})"
