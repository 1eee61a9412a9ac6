"""How many bits a model stores (Morris et al. 2025, "How much do language models memorize?").

Train GPT-NeoX models on N sequences of uniformly random tokens (vocabulary V, length L, seeded): nothing about such
data generalizes, so every bit the model can reproduce is memorized. The reference entropy of each token is exactly
log2 V, so a sequence's memorized bits are sum_t max(0, log2 V - NLL_t) (NLL in bits of token t given the previous
ones and a BOS token). Summed over the dataset they grow with N until the model is full: the plateau divided by the
parameter count is its capacity in bits per parameter (Morris et al.: about 3.6; 3.51 in bf16, 3.83 in fp32).

Each (size, N, seed) run trains in its own Spark task (`run_capacity`); `plateau` summarizes the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from semmem.config import ModelShape
from semmem.training.trainer import TrainParams, build_model, warmup_cosine

CAPACITY_COLUMNS = ("model", "params", "dtype", "seed", "dataset_sequences", "dataset_bits", "memorized_bits",
                    "bits_per_param", "memorized_bits_per_token", "control_bits", "final_loss")


def random_dataset(n: int, length: int, vocab: int, seed: int, *, control: bool = False) -> np.ndarray:
    """[n, length] tokens uniform on 0..vocab-1 (seeded: the same data for every model size); control=True draws
    sequences from another stream of the same seed, never trained on."""
    rng = np.random.default_rng([seed, 1] if control else seed)
    return rng.integers(0, vocab, (n, length), dtype=np.int64)


def build(shape: ModelShape, vocab: int, length: int, seed: int) -> Any:
    """The family's GPT-NeoX (`build_model`) for vocab + 1 tokens (the extra one is BOS), context length + 1."""
    params = TrainParams(hidden_size=shape.hidden_size, num_layers=shape.num_layers, num_heads=shape.num_heads,
                         context_length=length + 1, seed=seed)
    return build_model(vocab + 1, params, eod_id=vocab, pad_id=vocab)


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


def train(model: Any, data: np.ndarray, vocab: int, *, steps: int, batch_size: int, learning_rate: float, seed: int,
          dtype: str, device: Any) -> float:
    """Train to (near) convergence on `data`: AdamW, warmup then cosine, no weight decay; returns the last loss."""
    import torch
    import torch.nn.functional as F

    model.to(device=device, dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]).train()
    x_all = torch.as_tensor(data, device=device)
    bos = torch.full((len(data), 1), vocab, dtype=x_all.dtype, device=device)
    inputs = torch.cat([bos, x_all[:, :-1]], dim=1)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, 0.05))
    gen = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=gen).to(device)
        logits = model(input_ids=inputs[idx]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x_all[idx].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return float(loss.detach()) / math.log(2)


def run_one(shape: ModelShape, n: int, seed: int, *, vocab: int, length: int, steps: int, batch_size: int,
            learning_rate: float, dtype: str, device: Any) -> dict[str, Any]:
    """One (size, dataset size, seed) run -> a capacity row."""
    data = random_dataset(n, length, vocab, seed)
    model = build(shape, vocab, length, seed)
    params = sum(p.numel() for p in model.parameters())
    final_loss = train(model, data, vocab, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                       seed=seed, dtype=dtype, device=device)
    nll = token_nll_bits(model, data, vocab)
    bits = memorized_bits(nll, vocab)
    control = memorized_bits(token_nll_bits(model, random_dataset(n, length, vocab, seed, control=True), vocab), vocab)
    return {"model": f"capacity-{shape.name}", "params": params, "dtype": dtype, "seed": seed,
            "dataset_sequences": n, "dataset_bits": n * length * math.log2(vocab), "memorized_bits": bits,
            "bits_per_param": bits / params, "memorized_bits_per_token": memorized_bits_per_token(nll, vocab),
            "control_bits": control, "final_loss": final_loss}


def run_capacity(batches: Iterator[pd.DataFrame], *, vocab: int, length: int, steps: int, batch_size: int,
                 learning_rate: float, dtype: str, device: str) -> Iterator[pd.DataFrame]:
    """mapInPandas body: each row (JSON: shape, n, seed) is one run, trained here with the task's cores."""
    import torch

    from semmem.scoring.models import pick_device
    from semmem.spark import task_cpus

    torch.set_num_threads(task_cpus())
    dev = pick_device(device)
    for batch in batches:
        rows = []
        for spec in batch["run"]:
            r = json.loads(spec)
            rows.append(run_one(ModelShape(**r["shape"]), r["n"], r["seed"], vocab=vocab, length=length, steps=steps,
                                batch_size=batch_size, learning_rate=learning_rate, dtype=dtype, device=dev))
        yield pd.DataFrame(rows)[list(CAPACITY_COLUMNS)]


def run_specs(sizes: list[ModelShape], dataset_sequences: list[int], seeds: list[int], vocab: int) -> list[str]:
    """One JSON spec per run, the most expensive (largest model, largest dataset) first, for load balance."""
    runs = [(s, n, seed) for s in sizes for n in dataset_sequences for seed in seeds]
    runs.sort(key=lambda r: -r[0].flops_per_token(vocab) * r[1])
    return [json.dumps({"shape": asdict(s), "n": n, "seed": seed}) for s, n, seed in runs]


def plateau(capacity: pd.DataFrame) -> pd.DataFrame:
    """Per model and dtype: the dataset size where the mean memorized bits over seeds is highest, those bits, the
    bits per parameter there (mean and std over seeds), and the control bits there (the noise floor)."""
    out = []
    for (model, dtype), g in capacity.groupby(["model", "dtype"]):
        by_n = g.groupby("dataset_sequences").agg(bits=("memorized_bits", "mean"), bpp=("bits_per_param", "mean"),
                                                  bpp_std=("bits_per_param", "std"), params=("params", "first"),
                                                  control=("control_bits", "mean"))
        best = by_n["bits"].idxmax()
        out.append({"model": model, "dtype": dtype, "params": int(by_n.loc[best, "params"]),
                    "plateau_sequences": int(best), "plateau_bits": float(by_n.loc[best, "bits"]),
                    "bits_per_param": float(by_n.loc[best, "bpp"]),
                    "bits_per_param_std": float(np.nan_to_num(by_n.loc[best, "bpp_std"])),
                    "control_bits": float(by_n.loc[best, "control"])})
    return pd.DataFrame(out).sort_values("params") if out else pd.DataFrame()
