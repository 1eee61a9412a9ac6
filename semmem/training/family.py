"""A family of small GPT-NeoX models trained on the same stream, for controlled memorization experiments.

Every size of `train_model.sizes` trains in its own Spark task (so a sweep uses every executor core, or one GPU per
task), on the same windows in the same order (one seed), and saves checkpoints at `train_model.checkpoints`
fractions of training: `<warehouse>/_semmem/models/<name>-<size>/step<N>`, each a `save_pretrained` folder that
`score` loads as model `<name>-<size>`, revision `step<N>`. A member's folder is replaced as a whole when it is
retrained, so no checkpoint of an older run survives beside the new ones; an up-to-date member (same shape, training
settings, vocabulary and stream version) is not retrained.

The training data is bounded: the stream's first rows up to `train_model.max_tokens` tokens, written once as scratch
Parquet that every task reads itself (nothing of it passes through the driver).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from semmem import storage
from semmem.config import ModelShape, TrainModelConfig
from semmem.errors import ModelError
from semmem.scoring.models import checkpoint_step, models_dir
from semmem.training.trainer import (
    TrainParams, checkpoint_steps, fingerprint, save_trained, total_steps, train_model, windows_from_rows)

FAMILY_INFO = "semmem_family.json"
TRAINING_ORDER = "training_order.parquet"  # in a member's folder: (step, row_id, offset) of every window trained
FAMILY_COLUMNS = ("model", "revision", "size", "num_parameters", "hidden_size", "num_layers", "num_heads", "step",
                  "steps", "fraction", "tokens_seen", "loss", "seconds")


@dataclass(frozen=True)
class Member:
    """One size of the family: its model name, shape, training parameters and folder."""

    model: str
    shape: ModelShape
    params: TrainParams
    folder: str

    @staticmethod
    def all_of(cfg: TrainModelConfig, warehouse_root: str | Path) -> list[Member]:
        names = [s.name for s in cfg.sizes]
        if not names or len(set(names)) != len(names) or not all(n.replace("_", "").isalnum() for n in names):
            raise ModelError(f"train_model.sizes needs one or more shapes with distinct alphanumeric names, got "
                             f"{names}")
        root = models_dir(warehouse_root)
        return [Member(f"{cfg.name}-{s.name}", s,
                       TrainParams(hidden_size=s.hidden_size, num_layers=s.num_layers, num_heads=s.num_heads,
                                   context_length=cfg.context_length, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                   learning_rate=cfg.learning_rate, seed=cfg.seed),
                       storage.join(root, f"{cfg.name}-{s.name}")) for s in cfg.sizes]


def member_fingerprint(member: Member, vocab_size: int, stream_id: str, checkpoints: list[float]) -> str:
    return fingerprint(member.params, vocab_size, f"{stream_id}:{sorted(checkpoints)}")


def saved_rows(member: Member) -> list[dict[str, Any]] | None:
    """The model_family rows a trained member recorded, or None when it has none."""
    info = storage.join(member.folder, FAMILY_INFO)
    if not storage.is_file(info):
        return None
    return json.loads(storage.read_text(info))["rows"]


def versioned(member: Member, fp: str) -> Member:
    """The member trained on one fingerprint, in <models>/<model>/<fingerprint>: a changed family trains beside
    the published one, never over it, so model_family (whose lineage names the folder) always pairs with its
    checkpoints."""
    return replace(member, folder=storage.join(member.folder, fp))


def remove_other_versions(member: Member, keep: set[str]) -> None:
    """Delete the member's version folders other than `keep` (the new one and the one still published)."""
    parent = str(PurePosixPath(member.folder).parent) if not storage.is_remote(member.folder) else \
        member.folder.rsplit("/", 1)[0]
    for name in storage.list_dir(parent):
        folder = storage.join(parent, name)
        if len(name) == 16 and all(c in "0123456789abcdef" for c in name) and folder not in keep:
            storage.delete_dir(folder)


def is_up_to_date(member: Member, fp: str) -> bool:
    try:
        return json.loads(storage.read_text(storage.join(member.folder, FAMILY_INFO))).get("fingerprint") == fp
    except (OSError, json.JSONDecodeError):
        return False


def checkpoint_folders(folder: str) -> list[tuple[int, str]]:
    """(step, folder) of the checkpoints saved in a member's folder, by step."""
    steps = [(checkpoint_step(n), storage.join(folder, n)) for n in storage.list_dir(folder)]
    return sorted((s, f) for s, f in steps if s is not None and storage.is_file(storage.join(f, "config.json")))


def read_windows(files: list[str], context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The training windows of the scratch rows (row_id, tokens), in row order (the same in every task), and where
    each starts in the stream: [n, 2] (row_id, offset)."""
    t = pa.concat_tables([storage.read_parquet(f, columns=["row_id", "tokens"]) for f in files])
    t = t.sort_by("row_id")
    tokens = t.column("tokens").combine_chunks()
    offsets = tokens.offsets.to_numpy()
    values = tokens.values.to_numpy()
    pieces = np.diff(offsets) // context_length  # windows_from_rows cuts each row from its start
    rows = np.repeat(t.column("row_id").to_numpy(), pieces)
    starts = (np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * context_length
    windows = windows_from_rows((values[offsets[i]:offsets[i + 1]] for i in range(len(t))), context_length)
    return windows, np.stack([rows, starts], axis=1).astype(np.int64)


def train_members(batches: Iterator[pd.DataFrame], *, files: list[str], vocab_size: int, eod_id: int, pad_id: int,
                  tokenizer_json: str | None, checkpoints: list[float], stream_id: str, device: str
                  ) -> Iterator[pd.DataFrame]:
    """mapInPandas body: each row names one member (JSON); train it here and yield its model_family rows."""
    import torch

    from semmem.scoring.models import pick_device
    from semmem.spark import task_cpus

    for batch in batches:
        for spec in batch["member"]:
            m = json.loads(spec)
            member = Member(m["model"], ModelShape(**m["shape"]), TrainParams(**m["params"]), m["folder"])
            torch.set_num_threads(task_cpus())
            windows, origins = read_windows(files, member.params.context_length)
            fp = member_fingerprint(member, vocab_size, stream_id, checkpoints)
            yield pd.DataFrame(_train_one(member, windows, origins, vocab_size, eod_id=eod_id, pad_id=pad_id,
                                          tokenizer_json=tokenizer_json, checkpoints=checkpoints, fp=fp,
                                          device=pick_device(device)), columns=list(FAMILY_COLUMNS))


def _train_one(member: Member, windows: np.ndarray, origins: np.ndarray, vocab_size: int, *, eod_id: int,
               pad_id: int, tokenizer_json: str | None, checkpoints: list[float], fp: str, device: Any
               ) -> list[dict[str, Any]]:
    total = total_steps(len(windows), member.params)
    steps = checkpoint_steps(checkpoints, total)
    rows: list[dict[str, Any]] = []
    order: list[pa.Table] = []

    def record(first_step: int, epoch_order: np.ndarray) -> None:
        """The stream window trained at each optimizer step of this epoch (steps from 0: checkpoint step<N> has
        trained steps 0..N-1)."""
        order.append(pa.table({
            "step": first_step + np.arange(len(epoch_order), dtype=np.int64) // member.params.batch_size,
            "row_id": origins[epoch_order, 0], "offset": origins[epoch_order, 1].astype(np.int32)}))

    with storage.replacing_folder(member.folder, marker=FAMILY_INFO) as tmp:
        def save(step: int, model: Any, info: dict[str, Any]) -> None:
            n_params = sum(p.numel() for p in model.parameters())
            save_trained(model, tmp / f"step{step}", summary={**info, "params": asdict(member.params),
                                                                "num_parameters": n_params}, fp=fp,
                         tokenizer_json=tokenizer_json)
            rows.append({"model": member.model, "revision": f"step{step}", "size": member.shape.name,
                         "num_parameters": n_params, "hidden_size": member.shape.hidden_size,
                         "num_layers": member.shape.num_layers, "num_heads": member.shape.num_heads, "step": step,
                         "steps": total, "fraction": step / total,
                         "tokens_seen": info["windows_seen"] * member.params.context_length, "loss": info["loss"],
                         "seconds": info["seconds"]})

        train_model(windows, vocab_size, member.params, eod_id=eod_id, pad_id=pad_id, device=device,
                    on_checkpoint=(steps, save), on_epoch=record)
        pq.write_table(pa.concat_tables(order), tmp / TRAINING_ORDER)
        (tmp / FAMILY_INFO).write_text(json.dumps({"fingerprint": fp, "rows": rows}, indent=2))
    return rows


def member_json(member: Member) -> str:
    return json.dumps({"model": member.model, "shape": asdict(member.shape), "params": asdict(member.params),
                       "folder": member.folder})
