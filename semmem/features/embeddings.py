"""Sentence embeddings of the evaluation texts (spec §2.4): all-MiniLM-L6-v2 over the decoded 64-token text.

The model runs in executors through `predict_batch_udf` (loaded once per Python worker), fp16 on the GPU Spark
assigned to the task, fp32 on CPU. Every distinct text is embedded once and its vector shared by all sequences with
that text, so identical texts always get bit-identical embeddings (boilerplate repeated 10^5 times costs one encode).
Vectors are L2-normalized in float64 and stored as float32. Where the model comes from: semmem.model_sources.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pyspark import Accumulator
from pyspark.sql import DataFrame

from semmem.errors import ModelError
from semmem.model_sources import resolve_embedding_model
from semmem.spark import per_distinct_text


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
    return per_distinct_text(sequences, udf, "embedding", partitions)  # one task per GPU where executors have GPUs
