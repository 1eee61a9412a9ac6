"""Brute-force references for model scoring, written from the definitions (spec §1.2, §2.9), not from semmem's code.

- memorization: Hugging Face `generate()` exactly as pythia's eval_memorization.py calls it (greedy, max_length=64,
  min_length=64 so the EOS id is never chosen), then a position-by-position comparison.
- perplexities: a plain float64 log-softmax over the model's logits, one row at a time.
"""

from __future__ import annotations

import math

import torch


def generate_continuations(model, tokens: torch.Tensor, *, use_cache: bool = True, prompt_length: int = 32
                           ) -> torch.Tensor:
    """[B, L - P] greedy continuations of the P-token prompt tokens[:, :P] by model.generate (min_length=L suppresses
    EOS); upstream passes use_cache=False. The corpus sequences: L = 64, P = 32."""
    eos = model.config.eos_token_id
    length = tokens.shape[1]
    prompt = tokens[:, :prompt_length]
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_length=length,
                             min_length=length, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=eos,
                             use_cache=use_cache)
    assert out.shape == (tokens.shape[0], length)
    return out[:, prompt_length:]


def memorization_reference(model, tokens: torch.Tensor, *, use_cache: bool = True, prompt_length: int = 32
                           ) -> list[dict]:
    gen = generate_continuations(model, tokens, use_cache=use_cache, prompt_length=prompt_length)
    cont = tokens.shape[1] - prompt_length
    rows = []
    for g, t in zip(gen.tolist(), tokens[:, prompt_length:].tolist()):
        matches = [a == b for a, b in zip(g, t)]
        prefix = 0
        while prefix < cont and matches[prefix]:
            prefix += 1
        rows.append({"memorization_score": sum(matches) / cont, "is_memorized": all(matches),
                     "matched_prefix": prefix})
    return rows


def perplexity_reference(model, tokens: torch.Tensor, *, upstream: bool = False, eod_id: int = 0) -> list[tuple]:
    """(prompt, generation, sequence) perplexities per row from a float64 softmax of one forward pass per row."""
    rows = []
    for row in tokens:
        with torch.no_grad():
            logits = model(input_ids=row[None]).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        lp = [float(logp[k, row[k + 1]]) for k in range(63)]
        if not upstream:
            rows.append((math.exp(-sum(lp[:31]) / 31), math.exp(-sum(lp[31:]) / 32), math.exp(-sum(lp) / 63)))
            continue
        n = 63 - int((row == eod_id).sum())
        if n <= 0:
            rows.append((math.nan, math.nan, math.nan))
            continue
        m = n // 2
        kept = lp[:n]
        rows.append((math.exp(-sum(kept[:m]) / n), math.exp(-sum(kept[m:]) / n), math.exp(-sum(kept) / n)))
    return rows


def membership_reference(model, tokens: torch.Tensor, *, fraction: float = 0.2, prompt_length: int = 32
                         ) -> list[dict]:
    """loss, min_k_prob and min_k_plus_plus per row, in float64 numpy from the model's logits, over the tokens after
    the prompt (beyond.md §3): the mean NLL; the mean of the floor(fraction * n) lowest log-probabilities; the same of
    (log p - mu) / sigma, mu and sigma^2 the mean and variance of log p(z) over the vocabulary z under p."""
    import numpy as np

    with torch.no_grad():
        logits = model(input_ids=tokens).logits.double().numpy()
    ids = tokens.numpy()
    rows = []
    for lg, row in zip(logits, ids):
        x = lg[prompt_length - 1:-1]  # the positions that predict tokens prompt_length..L-1
        m = x.max(axis=1, keepdims=True)
        logp = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))
        p = np.exp(logp)
        true = logp[np.arange(len(x)), row[prompt_length:]]
        mu = (p * logp).sum(axis=1)
        sigma = np.sqrt((p * logp ** 2).sum(axis=1) - mu ** 2)
        n = max(1, int(fraction * len(true)))
        rows.append({"loss": -true.mean(), "min_k_prob": np.sort(true)[:n].mean(),
                     "min_k_plus_plus": np.sort((true - mu) / sigma)[:n].mean()})
    return rows
