"""A tiny GPT-NeoX trained on the training stream itself: the embedded default model when the hub is out of reach.

It makes controlled memorization experiments possible on a laptop: text the stream repeats many times (licence
boilerplate, templates) is seen on every epoch many times over and gets memorized; text seen once per epoch does not fit
in a model of ~1M parameters. The training windows are the stream rows cut into `context_length` pieces from each
row's start, so the 64-token evaluation window of a row (its first 64 tokens) is itself a training window when
context_length divides 64 or equals it.

Deterministic: one seed drives the initialisation and the window order; one process, a fixed thread count.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semmem.artifacts import digest
from semmem.errors import ModelError
from semmem.storage import replacing_folder

log = logging.getLogger(__name__)

TRAIN_INFO = "semmem_train.json"


@dataclass(frozen=True)
class TrainParams:
    """The knobs of TrainModelConfig that shape the model (keyword names equal the config keys)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    context_length: int = 64
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 1234


def windows_from_rows(rows: Iterable[np.ndarray], context_length: int) -> np.ndarray:
    """[n, context_length] int64 windows: each row cut from its start; a short tail is dropped."""
    out = []
    for row in rows:
        row = np.asarray(row, dtype=np.int64)
        n = len(row) // context_length
        if n:
            out.append(row[:n * context_length].reshape(n, context_length))
    if not out:
        raise ModelError(f"the training stream has no row of at least {context_length} tokens; "
                         "lower train_model.context_length or ingest more text")
    return np.concatenate(out)


def build_model(vocab_size: int, params: TrainParams, *, eod_id: int, pad_id: int, rotary_pct: float = 0.25) -> Any:
    """A randomly initialised GPT-NeoX in the Pythia layout (parallel residual, rotary on `rotary_pct` of each head,
    25% as Pythia)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    if params.hidden_size % params.num_heads:
        raise ModelError(f"hidden_size ({params.hidden_size}) must be a multiple of num_heads ({params.num_heads})")
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size, hidden_size=params.hidden_size, num_hidden_layers=params.num_layers,
        num_attention_heads=params.num_heads, intermediate_size=4 * params.hidden_size,
        max_position_embeddings=max(params.context_length, 64), eos_token_id=eod_id, bos_token_id=eod_id,
        pad_token_id=pad_id, tie_word_embeddings=False, attn_implementation="sdpa")
    cfg.rope_parameters["partial_rotary_factor"] = rotary_pct
    torch.manual_seed(params.seed)
    return GPTNeoXForCausalLM(cfg)


def warmup_cosine(total: int, floor: float) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warmup over the first 5% of `total` steps, then cosine decay to `floor`."""
    warmup = max(1, total // 20)
    return lambda s: ((s + 1) / warmup if s < warmup else
                      floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))


def total_steps(n_windows: int, params: TrainParams) -> int:
    return max(1, math.ceil(n_windows / params.batch_size) * params.epochs)


def checkpoint_steps(fractions: Iterable[float], total: int) -> list[int]:
    """The optimizer steps at which the fractions of training end (ceil(f * total), distinct, sorted)."""
    return sorted({max(1, min(total, math.ceil(f * total))) for f in fractions})


def train_model(windows: np.ndarray, vocab_size: int, params: TrainParams, *, eod_id: int = 0, pad_id: int = 1,
                threads: int | None = None, device: Any = None,
                on_checkpoint: tuple[list[int], Callable[[int, Any, dict[str, Any]], None]] | None = None,
                on_epoch: Callable[[int, np.ndarray], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train on windows [n, T] (next-token loss on every position); returns (model in eval mode, summary).

    AdamW, linear warmup over the first 5% of steps then cosine decay to 10%, gradient clipping at 1.0, no dropout and
    no weight decay (we want memorization to be possible). `on_checkpoint` = (steps, fn): fn(step, model, summary)
    runs after each of those optimizer steps (the model in eval mode for the call), e.g. to save a checkpoint.
    `on_epoch(first_step, order)`: the window order of each epoch as it is drawn (windows order[i] are trained at
    optimizer step first_step + i // batch_size, counting from 0), to record when each window was seen.
    """
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ModelError(f"training windows must be [n, T>=2], got {windows.shape}")
    if int(windows.max()) >= vocab_size:
        raise ModelError(f"the stream holds token id {int(windows.max())} >= vocab size {vocab_size}; the "
                         "tokenizer the stream was made with does not match")
    device = device or torch.device("cpu")
    model = build_model(vocab_size, params, eod_id=eod_id, pad_id=pad_id).to(device)
    model.train()
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
    n = data.shape[0]
    total = total_steps(n, params)
    saves, save = on_checkpoint if on_checkpoint is not None else ([], None)
    step = 0
    opt = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, 0.1))
    gen = torch.Generator().manual_seed(params.seed)
    head = model.get_output_embeddings()
    losses = []
    start = time.monotonic()
    for epoch in range(params.epochs):
        order = torch.randperm(n, generator=gen)
        if on_epoch is not None:
            on_epoch(step, order.numpy())
        epoch_loss = 0.0
        for s in range(0, n, params.batch_size):
            batch = data[order[s:s + params.batch_size]].to(device)
            hidden = model.base_model(input_ids=batch[:, :-1]).last_hidden_state
            logits = head(hidden)  # [b, T-1, V]
            loss = F.cross_entropy(logits.reshape(-1, vocab_size), batch[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            epoch_loss += float(loss.detach()) * len(batch)
            step += 1
            if save is not None and step in saves:
                model.eval()
                save(step, model, {"step": step, "steps": total, "windows_seen": min(n * params.epochs, step *
                                   params.batch_size), "loss": float(loss.detach()),
                                   "seconds": round(time.monotonic() - start, 1)})
                model.train()
        losses.append(epoch_loss / n)
        log.info("train_model: epoch %d/%d loss %.4f (%.0f s)", epoch + 1, params.epochs, losses[-1],
                 time.monotonic() - start)
    model.eval()
    summary = {"params": asdict(params), "vocab_size": vocab_size, "windows": n, "tokens": int(windows.size),
               "steps": total, "epoch_loss": losses, "seconds": round(time.monotonic() - start, 1),
               "num_parameters": sum(p.numel() for p in model.parameters())}
    return model, summary


def fingerprint(params: TrainParams, vocab_size: int, stream_id: str) -> str:
    """What decides the trained weights: the params, the vocabulary and the stream's identity (table version)."""
    return digest({"params": asdict(params), "vocab": vocab_size, "stream": stream_id})


def save_trained(model: Any, out_dir: str | Path, *, summary: dict[str, Any], fp: str,
                 tokenizer_json: str | None = None, eod_token: str = "<|endoftext|>",
                 pad_token: str = "<|padding|>") -> Path:
    """save_pretrained the model (and the stream's tokenizer when given) into the local folder out_dir, replacing it
    atomically."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per checkpoint of a one-shard model is noise in the run's log
    with replacing_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer_json is not None:
            from tokenizers import Tokenizer
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), eos_token=eod_token,
                                          bos_token=eod_token, pad_token=pad_token)
            tok.save_pretrained(tmp)
        (tmp / TRAIN_INFO).write_text(json.dumps({**summary, "fingerprint": fp}, indent=2, sort_keys=True))
    return Path(out_dir).absolute()

