"""Where in the network memorized sequences are held (beyond.md §5): layer rewinding and gradient accounting.

Layer rewinding (Maini et al. 2023): put one block's weights (a whole layer, or its attention or its MLP) of an
earlier checkpoint into the final model, keep every other weight, and decide again whether each sequence the final
model memorizes is still memorized. The decision is `score_numpy` in flag mode, the same forward pass and
EOS-excluded greedy rule as the score stage: there is no second implementation of memorization here.

Gradient accounting: per sequence, the L2 norm of the gradient of its continuation loss (the mean NLL of its 32
continuation tokens given the true prompt, nats) with respect to each block's parameters. Norms of single sequences
add up across Spark tasks, so a share (memorized vs other, per category) is a sum of per-task sums.

Plain torch on a loaded model; the Spark side (which sequences, which tasks) is the stage's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semmem.compat import map_batches
from semmem.errors import ModelError
from semmem.scoring.memorization import CONT_LEN, load_for_scoring, score_numpy, worker_model
from semmem.scoring.models import load_model, pick_device

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BLOCKS = ("layer", "attention", "mlp")  # a whole transformer layer (its norms too), its attention, its MLP
# (the module list of the layers, the names a layer's attention may have): GPT-NeoX (Pythia), Llama-like, GPT-2
LAYOUTS = (("gpt_neox.layers", ("attention",)), ("model.layers", ("self_attn",)), ("transformer.h", ("attn",)))


@dataclass(frozen=True)
class Block:
    layer: int
    block: str  # one of BLOCKS
    prefix: str  # its parameters' names start with this


def layer_blocks(model: Any) -> list[Block]:
    """The (layer, block) units of `model`, layer by layer: layer, attention, mlp. ModelError for a layout this does
    not know (the layers are found by name, as Hugging Face lays out GPT-NeoX, Llama-like and GPT-2 models)."""
    for path, attention_names in LAYOUTS:
        layers: Any = model
        for part in path.split("."):
            layers = getattr(layers, part, None)
        if layers is None:
            continue
        blocks: list[Block] = []
        for i, layer in enumerate(layers):
            attention = next((n for n in attention_names if hasattr(layer, n)), None)
            if attention is None or not hasattr(layer, "mlp"):
                break
            blocks += [Block(i, "layer", f"{path}.{i}."), Block(i, "attention", f"{path}.{i}.{attention}."),
                       Block(i, "mlp", f"{path}.{i}.mlp.")]
        else:
            return blocks
    raise ModelError(f"cannot find the transformer layers of {type(model).__name__}: layer rewinding knows "
                     "GPT-NeoX (Pythia), Llama-like and GPT-2 layouts (an attention and an mlp module per layer)")


def _names(model: Any, block: Block) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(block.prefix)]


def rewind_weights(final: Any, earlier: Any, blocks: list[Block]) -> dict[str, Any]:
    """The earlier checkpoint's tensors of `blocks`, on the final model's device and dtype: what rewinding swaps in.
    ModelError naming the first tensor whose shape differs (checkpoints of another architecture)."""
    own = dict(final.named_parameters())
    theirs = dict(earlier.named_parameters())
    out = {}
    for block in blocks:
        for name in _names(final, block):
            if name not in theirs or tuple(theirs[name].shape) != tuple(own[name].shape):
                shape = tuple(theirs[name].shape) if name in theirs else "absent"
                raise ModelError(f"cannot rewind {name}: it is {tuple(own[name].shape)} in the final checkpoint and "
                                 f"{shape} in the earlier one; rewinding needs checkpoints of one architecture")
            out[name] = theirs[name].detach().to(device=own[name].device, dtype=own[name].dtype)
    return out


def rewound_memorized(model: Any, earlier: dict[str, Any], tokens: np.ndarray, blocks: list[Block], *,
                      batch_size: int, device: Any) -> dict[Block, np.ndarray]:
    """For each block: is_memorized [N] of every row of tokens [N, 64] under `model` with that block's weights
    taken from `earlier` (rewind_weights) and the rest its own. The model's weights are restored after each block."""
    import torch

    own = dict(model.named_parameters())
    out = {}
    for block in blocks:
        names = _names(model, block)
        with torch.no_grad():
            saved = {n: own[n].detach().clone() for n in names}
            for n in names:
                own[n].copy_(earlier[n])
        try:
            out[block] = score_numpy(model, tokens, batch_size=batch_size, device=device, mode="flag")["is_memorized"]
        finally:
            with torch.no_grad():
                for n in names:
                    own[n].copy_(saved[n])
    return out


def gradient_norms(model: Any, tokens: np.ndarray, blocks: list[Block], *, device: Any) -> np.ndarray:
    """[N, len(blocks)] float64: per row of tokens [N, 64], the L2 norm of the gradient of its continuation loss
    (mean NLL of the last 32 tokens, nats) with respect to each block's parameters.

    One backward pass per row: a norm of a single sequence's gradient is what adds up across tasks. The model's
    parameters outside the blocks get no gradient."""
    import torch

    params = dict(model.named_parameters())
    names = {b: _names(model, b) for b in blocks}
    wanted = list(dict.fromkeys(n for b in blocks for n in names[b]))
    kept = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in wanted)
    out = np.empty((len(tokens), len(blocks)), dtype=np.float64)
    try:
        for i, row in enumerate(np.asarray(tokens, dtype=np.int64)):
            x = torch.as_tensor(row[None], device=device)
            prompt = x.shape[1] - CONT_LEN
            logits = model(input_ids=x, use_cache=False).logits[0, prompt - 1:-1].float()
            loss = torch.nn.functional.cross_entropy(logits, x[0, prompt:])
            grads = torch.autograd.grad(loss, [params[n] for n in wanted])
            squares = {n: float(g.double().square().sum()) for n, g in zip(wanted, grads)}
            out[i] = [np.sqrt(sum(squares[n] for n in names[b])) for b in blocks]
    finally:
        for n, p in params.items():
            p.requires_grad_(kept[n])
    return out


# ------------------------------------------------------------------------------------------------ in Spark tasks
REWIND_COUNTS = ("model STRING, layer INT, block STRING, taxonomy STRING, category STRING, memorized BIGINT, "
                 "still_memorized BIGINT")
GRADIENT_SUMS = ("model STRING, layer INT, block STRING, category STRING, memorized BOOLEAN, norm_sum DOUBLE, "
                 "norm_sq_sum DOUBLE, n BIGINT")
TAXONOMY_COLUMNS = (("paper", "category"), ("guess_recall", "category_guess_recall"))


@dataclass(frozen=True)
class Rewinding:
    """One model to localize: its final checkpoint, the earlier one whose blocks are swapped in, and its layers."""

    final: Any  # a ModelSpec
    earlier: Any  # a ModelSpec
    layers: int


def rewinding_counts(df: DataFrame, plans: dict[str, Rewinding], *, layers_per_task: int, dtype: str, device: str,
                     batch_size: int | None, profile: Any = None) -> DataFrame:
    """df(unit, model, first_layer, sequence_id, category, category_guess_recall, tokens) of memorized sequences,
    laid out one `unit` per task -> REWIND_COUNTS per task: for each block of layers first_layer ..
    first_layer + layers_per_task - 1 and each category of both taxonomies, the sequences and how many stay memorized
    with that block rewound (the caller sums the tasks' rows)."""
    import pandas as pd

    def body(frames):  # noqa: ANN001, ANN202 - mapInPandas iterators
        rows = _whole_partition(frames)
        for (model, first), part in rows.groupby(["model", "first_layer"], sort=True):
            plan = plans[model]
            final, earlier, blocks, dev, micro = worker_model(
                ("rewind", plan, int(first), layers_per_task, dtype, device, batch_size),
                lambda: _rewinding_pair(plan, range(int(first), int(first) + layers_per_task), dtype=dtype,
                                        device=device, batch_size=batch_size))
            flags = rewound_memorized(final, earlier, np.stack(part["tokens"].to_numpy()), blocks, batch_size=micro,
                                      device=dev)
            out = [(model, b.layer, b.block, taxonomy, category, len(idx), int(still[idx].sum()))
                   for b, still in flags.items() for taxonomy, column in TAXONOMY_COLUMNS
                   for category, idx in part.groupby(column, dropna=True).indices.items()]
            yield pd.DataFrame(out, columns=["model", "layer", "block", "taxonomy", "category", "memorized",
                                             "still_memorized"])

    return map_batches(df, body, REWIND_COUNTS, profile=profile)


def gradient_sums(df: DataFrame, plans: dict[str, Rewinding], *, dtype: str, device: str, profile: Any = None
                  ) -> DataFrame:
    """df(unit, model, sequence_id, category, is_memorized, tokens) laid out one `unit` per task -> GRADIENT_SUMS per
    task: for each block of the final model, category (and 'all') and memorized or not, the sum of the sequences'
    gradient norms, of their squares (for the share's interval) and their count (the caller sums the tasks' rows).

    Gradients run in float32, bfloat16 on a GPU when model.dtype is auto: float16's range loses the small gradients
    of well-fitted (memorized) sequences."""
    import pandas as pd

    def body(frames):  # noqa: ANN001, ANN202 - mapInPandas iterators
        rows = _whole_partition(frames)
        for model, part in rows.groupby("model", sort=True):
            plan = plans[model]
            final, blocks, dev = worker_model(("gradients", plan, dtype, device),
                                              lambda: _gradient_model(plan, dtype=dtype, device=device))
            norms = gradient_norms(final, np.stack(part["tokens"].to_numpy()), blocks, device=dev)
            memorized = part["is_memorized"].fillna(False).astype(bool).to_numpy()
            out = []
            for category in [*sorted(part["category"].dropna().unique()), "all"]:
                mine = np.ones(len(part), bool) if category == "all" else (part["category"] == category).to_numpy()
                for flag in (True, False):
                    idx = np.flatnonzero(mine & (memorized == flag))
                    out += [(model, b.layer, b.block, category, flag, float(norms[idx, j].sum()),
                             float(np.square(norms[idx, j]).sum()), len(idx)) for j, b in enumerate(blocks) if len(idx)]
            yield pd.DataFrame(out, columns=["model", "layer", "block", "category", "memorized", "norm_sum",
                                             "norm_sq_sum", "n"])

    return map_batches(df, body, GRADIENT_SUMS, profile=profile)


def _whole_partition(frames: Any) -> Any:
    """The pandas batches of one task as one frame (empty for a partition the hash layout left empty): a task's
    rows are grouped by model (and layer group) before any model work."""
    import pandas as pd

    parts = list(frames)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["model", "first_layer"])


def _rewinding_pair(plan: Rewinding, layers: range, *, dtype: str, device: str, batch_size: int | None
                    ) -> tuple[Any, dict[str, Any], list[Block], Any, int]:
    """(final model, the earlier checkpoint's weights of the blocks of `layers`, those blocks, device, rows per
    forward pass), the earlier model dropped once its weights are taken."""
    model, dev, _vocab, micro, _name = load_for_scoring(plan.final, dtype=dtype, device=device, tokenizer_vocab=None,
                                                        batch_size=batch_size)
    blocks = [b for b in layer_blocks(model) if b.layer in layers]
    earlier = load_model(plan.earlier, device=dev, dtype=dtype)
    return model, rewind_weights(model, earlier, blocks), blocks, dev, micro


def _gradient_model(plan: Rewinding, *, dtype: str, device: str) -> tuple[Any, list[Block], Any]:
    dev = pick_device(device)
    wide = dtype if dtype != "auto" else "bfloat16" if dev.type == "cuda" else "float32"
    model, dev, _vocab, _micro, _name = load_for_scoring(plan.final, dtype=wide, device=device, tokenizer_vocab=None,
                                                         batch_size=1)
    return model, layer_blocks(model), dev


def share_interval(sums: Any, squares: Any, counts: Any, other_sums: Any, other_squares: Any, other_counts: Any,
                   level: float) -> tuple[Any, Any]:
    """The normal interval at `level` of share = S / (S + S_o), S and S_o sums of per-sequence gradient norms
    (with their sums of squares and counts), by the delta method, the sequences independent and their groups fixed:
    Var(S) = n s^2 (s^2 the sample variance of the norms) and Var(share) = (S_o^2 Var(S) + S^2 Var(S_o)) / (S + S_o)^4.
    Clipped to [0, 1]; NaN where a group has fewer than two sequences."""
    from scipy.stats import norm

    def variance(total: Any, sq: Any, n: Any) -> Any:
        n = np.asarray(n, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            s2 = (np.asarray(sq, np.float64) - np.asarray(total, np.float64) ** 2 / n) / (n - 1)
        return np.where(n >= 2, n * np.maximum(s2, 0.0), np.nan)

    s, o = np.asarray(sums, np.float64), np.asarray(other_sums, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = s / (s + o)
        sd = np.sqrt((o ** 2 * variance(s, squares, counts) + s ** 2 * variance(o, other_squares, other_counts))
                     / (s + o) ** 4)
    z = norm.ppf(0.5 + level / 2)
    return np.clip(share - z * sd, 0.0, 1.0), np.clip(share + z * sd, 0.0, 1.0)


def gradient_shares(sums: Any, level: float) -> Any:
    """GRADIENT_SUMS rows summed over tasks (pandas: model, layer, block, category, memorized, norm_sum, norm_sq_sum,
    n) -> the rows of table gradient_shares but revision: each group's share of its block and category's sum of
    norms, its interval (share_interval against the other group; NaN when there is none) and its mean norm."""
    import pandas as pd

    keys = ["model", "layer", "block", "category"]
    other = sums.assign(memorized=~sums["memorized"].astype(bool))[[*keys, "memorized", "norm_sum", "norm_sq_sum", "n"]]
    both = sums.merge(other, on=[*keys, "memorized"], how="left", suffixes=("", "_other"))
    both[["norm_sum_other", "norm_sq_sum_other", "n_other"]] = both[
        ["norm_sum_other", "norm_sq_sum_other", "n_other"]].fillna(0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = both["norm_sum"] / (both["norm_sum"] + both["norm_sum_other"])
    low, high = share_interval(both["norm_sum"], both["norm_sq_sum"], both["n"], both["norm_sum_other"],
                               both["norm_sq_sum_other"], both["n_other"], level)
    alone = both["n_other"].to_numpy() == 0
    return pd.DataFrame({**{k: both[k] for k in keys}, "memorized": both["memorized"].astype(bool), "share": share,
                         "ci_low": np.where(alone, np.nan, low), "ci_high": np.where(alone, np.nan, high),
                         "mean_norm": both["norm_sum"] / both["n"], "n": both["n"].astype(np.int64)})
