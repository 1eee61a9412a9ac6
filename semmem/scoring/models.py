"""Which model to score with, and loading it: Hugging Face ids with revisions, local folders, the trained default.

A model spec in `model.names` is one of
- `EleutherAI/pythia-1b-deduped@step143000`: a hub id and a revision (branch, tag or commit; `main` when omitted);
- a local folder written by `save_pretrained` (absolute or relative path; revision `local`);
- a bare name such as `trained` that matches `<warehouse>/_semmem/models/<name>`: a model written by the
  `train_model` stage (revision `local`).

Loading is the real `from_pretrained(name, revision=...)`: the local Hugging Face cache (HF_HOME / HF_HUB_CACHE) is
tried first without network; only when that misses and HF_HUB_OFFLINE is not set does it go to the hub. When the model
cannot be had, ModelError says how to make it available offline.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semmem import storage
from semmem.artifacts import weights_digest
from semmem.errors import ModelError
from semmem.model_sources import hub_snapshot

LOCAL_REVISION = "local"
MODELS_DIR = ("_semmem", "models")


@dataclass(frozen=True)
class ModelSpec:
    model: str  # the `model` column of the memorization table: the spec without "@revision"
    revision: str  # the `revision` column
    source: str  # what from_pretrained gets: a hub id or an absolute local folder
    is_local: bool


def models_dir(warehouse_root: str | Path) -> str:
    """Where train_model saves models: <warehouse>/_semmem/models."""
    return storage.join(warehouse_root, *MODELS_DIR)


def parse_model_spec(spec: str, warehouse_root: str | Path | None = None, trained_name: str = "trained"
                     ) -> ModelSpec:
    """Resolve one `model.names` entry (see the module docstring for the three forms).

    `trained_name` (train_model.name) is reserved: `<trained_name>-<size>@step<N>` is a checkpoint of the trained
    family, and when it does not exist the error says to train it.
    """
    spec = spec.strip()
    if not spec:
        raise ModelError("model.names contains an empty entry; expected e.g. EleutherAI/pythia-70m-deduped@step143000")
    if warehouse_root is not None and "/" not in spec:
        name, _, revision = spec.partition("@")
        saved = storage.join(models_dir(warehouse_root), name, *([revision] if revision else []))
        if storage.is_file(storage.join(saved, "config.json")):
            return ModelSpec(name, revision or LOCAL_REVISION, saved, True)
    if storage.is_remote(spec):
        if not storage.is_file(storage.join(spec, "config.json")):
            raise ModelError(f"model {spec!r}: no config.json there; expected a folder written by save_pretrained")
        return ModelSpec(spec, LOCAL_REVISION, storage.normalize(spec), True)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSpec(spec, LOCAL_REVISION, str(path.absolute()), True)
    name, sep, revision = spec.rpartition("@")
    if not sep:
        name, revision = spec, "main"
    if not name or not revision:
        raise ModelError(f"model spec {spec!r} is malformed; expected <hub id>[@<revision>] or a local folder")
    if warehouse_root is not None and (spec == trained_name or name.startswith(trained_name + "-")):
        raise ModelError(f"model {spec!r} is neither a local folder nor a trained checkpoint under "
                         f"{models_dir(warehouse_root)}; "
                         f"run `semmem train-model` (stage train_model) to create it, or give a hub id such as "
                         "EleutherAI/pythia-70m-deduped@step143000")
    return ModelSpec(name, revision, name, False)


def model_digest(spec: ModelSpec) -> str:
    """The identity of the weights `spec` names: a local folder's weights digest; a hub model's commit when it is in
    the local cache, else its revision (to be downloaded)."""
    if spec.is_local:
        return f"weights {weights_digest(spec.source)}"
    try:
        cached = hub_snapshot(spec.source, spec.revision, download=False)
    except Exception:  # noqa: BLE001 - a cache the hub library cannot read: not cached, as far as we can tell
        cached = None
    return f"hub commit {Path(cached).name}" if cached else f"hub revision {spec.revision} (not in the local cache)"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _offline_help(spec: ModelSpec, err: BaseException) -> ModelError:
    return ModelError(
        f"cannot load model {spec.source}@{spec.revision}: it is not in the local Hugging Face cache "
        f"({os.environ.get('HF_HOME') or os.environ.get('HF_HUB_CACHE') or '~/.cache/huggingface'}) and the hub "
        f"{'is disabled (HF_HUB_OFFLINE=1)' if hub_offline() else 'could not be reached'}. To score offline: on a "
        f"connected machine run `huggingface-cli download {spec.source} --revision {spec.revision}` (with HF_HOME set "
        "to a folder you can copy), copy that folder here and set HF_HOME to it; or `save_pretrained` the model to a "
        "folder and put that path in model.names; or use the embedded default (`semmem train-model`, "
        f"model.names: [trained]). Cause: {type(err).__name__}: {err}")


def where_running() -> str:
    """"on host H" in a Spark task (the executor's host), "" on the driver: for errors about node-local files."""
    try:
        from pyspark import TaskContext

        if TaskContext.get() is None:
            return ""
    except ImportError:  # pragma: no cover - pyspark is a dependency
        return ""
    return f" on host {socket.gethostname()} (a Spark task)"


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.h5", "*.msgpack", "*.gguf")  # what save_pretrained writes (or shards)


def check_local_files(spec: ModelSpec, *, weights: bool = True) -> None:
    """For a model in a local folder: ModelError when the folder is missing on this machine (naming the host in a
    Spark task), or holds no config.json or (`weights`) no weights. Cheap: no torch or transformers import, so a
    task fails at once."""
    if not spec.is_local or storage.is_remote(spec.source):
        return
    folder = Path(spec.source)
    if not folder.is_dir():
        raise ModelError(f"model folder {spec.source} does not exist{where_running()}: every node that runs tasks "
                         "needs the model at that same path (a shared filesystem, or a copy on each node), or put "
                         "the model in the warehouse's storage (an s3:// folder)")
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if weights and not any(next(folder.glob(p), None) for p in WEIGHT_FILES):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if missing:
        raise ModelError(f"cannot load model from local folder {spec.source}{where_running()}: it has no "
                         f"{' and no '.join(missing)}. The folder must hold a config.json and weights written by "
                         "save_pretrained")


def _from_pretrained(loader: Any, spec: ModelSpec, **kwargs: Any) -> Any:
    """loader.from_pretrained with the cache tried first, the hub only when allowed; ModelError otherwise."""
    if spec.is_local:
        check_local_files(spec, weights=loader.__name__ != "AutoConfig")
        try:
            return loader.from_pretrained(str(storage.local_folder(spec.source)), local_files_only=True, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load model from local folder {spec.source}{where_running()}: "
                             f"{' '.join(str(e).split())}. The folder must hold a config.json and weights written "
                             "by save_pretrained") from None
    try:
        return loader.from_pretrained(spec.source, revision=spec.revision, local_files_only=True, **kwargs)
    except (OSError, ValueError) as first:
        if hub_offline():
            raise _offline_help(spec, first) from None
    try:
        return loader.from_pretrained(spec.source, revision=spec.revision, **kwargs)
    except (OSError, ValueError) as e:
        raise _offline_help(spec, e) from None


def model_config(spec: ModelSpec) -> Any:
    """The model's configuration (config.json only: no weights), or ModelError when it cannot be had."""
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, spec)


def check_model_available(spec: ModelSpec, tokenizer_vocab: int | None = None) -> None:
    """Fail fast on the driver (config.json only) before executors try to load the weights; with `tokenizer_vocab`,
    also check that the tokenizer's ids fit the model's vocabulary (config.vocab_size). The executors check again
    (score_sequences): a path can exist on the driver and not on a node."""
    config = model_config(spec)
    vocab = getattr(config, "vocab_size", None)
    if tokenizer_vocab is not None and isinstance(vocab, int):
        check_vocabulary(f"{spec.model}@{spec.revision}", tokenizer_vocab, vocab)


def model_tokenizer(spec: ModelSpec) -> tuple[Any, str] | None:
    """(the tokenizer a model was trained with, where it came from) as the model ships it: tokenizer.json in its
    folder (a trained family checkpoint, a save_pretrained folder), or the tokenizer of a hub id (the cache first,
    the hub when reachable). None when the model carries none."""
    from tokenizers import Tokenizer

    from semmem.ingest.tokenizer import hub_reachable

    if spec.is_local:
        path = storage.join(spec.source, "tokenizer.json")
        return (Tokenizer.from_str(storage.read_text(path)), path) if storage.is_file(path) else None
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(spec.source, revision=spec.revision, local_files_only=True)
    except (OSError, ValueError):
        if hub_offline() or not hub_reachable():
            return None
        try:
            hf = AutoTokenizer.from_pretrained(spec.source, revision=spec.revision)
        except (OSError, ValueError):
            return None
    return hf.backend_tokenizer, f"{spec.source}@{spec.revision}"


def check_same_tokenizer(spec: ModelSpec, tokens_made_with: Any, made_where: str) -> None:
    """ModelError naming both when the tokenizer some token ids were made with (`tokens_made_with`, found at
    `made_where`) is not the one the model ships (compared by tokenizer_digest). Nothing to compare when the model
    ships none: the vocabulary-size checks still apply."""
    from semmem.ingest.tokenizer import tokenizer_digest

    shipped = model_tokenizer(spec)
    if shipped is None:
        return
    made, own = tokenizer_digest(tokens_made_with), tokenizer_digest(shipped[0])
    if made != own:
        raise ModelError(f"tokenizer mismatch: the sequences were tokenized with {made_where} (digest {made}) but "
                         f"model {spec.model}@{spec.revision} was trained with {shipped[1]} (digest {own}); its "
                         "scores of them would mean nothing. Score them with a model of their tokenizer, or score "
                         f"your texts with `semmem texts --model {spec.model}@{spec.revision} FILE.jsonl`, which "
                         "tokenizes them with the model's own tokenizer")


def embedding_rows(model: Any) -> int:
    """The number of token ids a loaded model can embed (its input embedding's rows)."""
    emb = model.get_input_embeddings()
    return int(getattr(emb, "num_embeddings", None) or emb.weight.shape[0])


def check_vocabulary(model: str, tokenizer_vocab: int, model_vocab: int) -> None:
    """ModelError when the tokenizer can produce ids the model has no embedding for."""
    if tokenizer_vocab > model_vocab:
        raise ModelError(f"vocabulary mismatch: the tokenizer the sequences were made with has {tokenizer_vocab} "
                         f"tokens but model {model} embeds only {model_vocab} ids{where_running()}; they are not "
                         "from the same model family. Score with a model trained on this tokenizer, or re-ingest "
                         "with the model's own tokenizer (tokenizer.name)")


def pick_device(device: str = "auto") -> Any:
    """The torch device: `cuda` when asked or (auto) visible, the GPU Spark assigned to this task when it did."""
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA device is visible to this process; "
                         "set model.device=auto (CPU fallback) or run on a GPU executor")
    index = 0
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses:
            index = int(gpus.addresses[0])
    except Exception:  # noqa: BLE001 - outside Spark or no resource info: the first visible GPU
        index = 0
    if index >= torch.cuda.device_count():  # addresses are physical ids; CUDA_VISIBLE_DEVICES may renumber
        index = 0
    return torch.device("cuda", index)


def checkpoint_step(revision: str) -> int | None:
    """N of a revision named step<N> (a Pythia or trained-family checkpoint); None for any other revision."""
    return int(revision[4:]) if revision.startswith("step") and revision[4:].isdigit() else None


def pick_dtype(dtype: str, device: Any) -> Any:
    """auto: float16 on a GPU (upstream scores Pythia with `.half()`: bfloat16 flips near-tie argmaxes more often, and
    those labels drive the taxonomy), float32 on CPU."""
    import torch

    if dtype == "auto":
        return torch.float16 if getattr(device, "type", str(device)) == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                "float64": torch.float64}[dtype]
    except KeyError:
        raise ModelError(f"model.dtype = {dtype!r}; expected auto, float32, bfloat16 or float16") from None


def load_model(spec: ModelSpec, *, device: Any = None, dtype: str = "auto") -> Any:
    """A causal LM in eval mode on `device`, with SDPA attention where the architecture has it."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load ("Loading weights") is noise in a run's log
    device = pick_device("auto") if device is None else device
    torch_dtype = pick_dtype(dtype, device)
    try:
        model = _from_pretrained(AutoModelForCausalLM, spec, dtype=torch_dtype, attn_implementation="sdpa")
    except ModelError as e:
        if "sdpa" not in str(e).lower():
            raise
        model = _from_pretrained(AutoModelForCausalLM, spec, dtype=torch_dtype)
    return model.to(device).eval()
