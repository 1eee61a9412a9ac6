"""The code classifier's files, outside the feature (semmem.features.code): the labels files it is trained on, the
trained classifier saved under <warehouse>/_semmem/models/code-classifier (joblib, with its metrics and fingerprint),
and which classifier code.model names (a trained one, a local folder, or a hub model from the cache or the hub).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semmem import storage
from semmem.artifacts import digest, weights_digest
from semmem.errors import InputError, ModelError
from semmem.features.code import CODE, NL, TRAINER_VERSION, UPSTREAM_MODEL
from semmem.model_sources import hub_snapshot
from semmem.scoring.models import models_dir

if TYPE_CHECKING:  # scikit-learn is imported lazily
    from sklearn.pipeline import Pipeline

    from semmem.features.code import TrainedClassifier

TRAINED_NAME = "code-classifier"  # <warehouse>/_semmem/models/code-classifier
CLASSIFIER_FILE = "classifier.joblib"
METRICS_FILE = "metrics.json"


def read_labels_file(path: str | Path, *, allow_unlabelled: bool = False) -> tuple[list[str], list[int | None]]:
    """(texts, labels) of a jsonl of {"text": str, "label_is_code": 0 | 1}; null labels only if allow_unlabelled."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {p.absolute()} does not exist; expected a jsonl file of "
                         '{"text": ..., "label_is_code": 0 or 1} lines')
    texts: list[str] = []
    labels: list[int | None] = []
    with p.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"labels file {p}: line {n} is not JSON ({e}); expected one "
                                 '{"text": ..., "label_is_code": 0 or 1} object per line') from None
            text = obj.get("text") if isinstance(obj, dict) else None
            label = obj.get("label_is_code") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise InputError(f"labels file {p}: line {n} has no string 'text' (found {str(obj)[:80]!r})")
            if not (label is None and allow_unlabelled) and (isinstance(label, bool) or label not in (CODE, NL)):
                raise InputError(f"labels file {p}: line {n} has label_is_code = {label!r}; expected 0 (natural "
                                 "language) or 1 (code)")
            texts.append(text)
            labels.append(label)
    return texts, labels


def trained_classifier_dir(warehouse_root: str | Path) -> str:
    return storage.join(models_dir(warehouse_root), TRAINED_NAME)


def fingerprint(parts: dict[str, Any]) -> str:
    """What decides the trained classifier: its config, the labels' identity (table version or file hash), the
    trainer version."""
    return digest({**parts, "trainer_version": TRAINER_VERSION})


def is_up_to_date(folder: str, fp: str) -> bool:
    try:
        return storage.is_file(storage.join(folder, CLASSIFIER_FILE)) and read_metrics(folder).get("fingerprint") == fp
    except (OSError, json.JSONDecodeError):
        return False


def save_classifier(trained: TrainedClassifier, folder: str, *, fp: str, extra: dict[str, Any]) -> str:
    """joblib the pipeline and write metrics.json (with the fingerprint) into `folder`, replacing it whole."""
    import joblib

    with storage.replacing_folder(folder, marker=CLASSIFIER_FILE) as tmp:
        joblib.dump(trained.pipeline, tmp / CLASSIFIER_FILE, compress=3)
        (tmp / METRICS_FILE).write_text(json.dumps({**trained.metrics, **extra, "fingerprint": fp}, indent=2,
                                                   sort_keys=True))
    return storage.normalize(folder)


def read_metrics(folder: str) -> dict[str, Any]:
    return json.loads(storage.read_text(storage.join(folder, METRICS_FILE)))


def load_classifier(folder: str) -> Pipeline:
    """The saved pipeline (a pickle semmem wrote itself under the warehouse: load only folders you trust)."""
    import joblib

    return joblib.load(storage.local_folder(folder) / CLASSIFIER_FILE)


@dataclass(frozen=True)
class CodeModel:
    """A resolved classifier: what to load, and what the code_scores commit metadata records about it."""

    name: str  # as configured (code.model), or the name "auto" picked
    kind: Literal["sklearn", "transformers"]
    path: str  # the local folder, on the driver
    version: str  # hub commit, trained classifier's fingerprint, or a digest of the weights
    hub_id: str | None = None  # executors re-resolve a hub model from their own cache, at commit `version`
    metrics_path: str | None = None  # the trained classifier's metrics.json

    def local_folder(self) -> str:
        """The folder to load on this machine (an executor): a hub model from this node's cache (or the hub) at the
        commit the driver resolved, else `path`."""
        if self.hub_id is None:
            return self.path
        return _hub_folder(self.hub_id, self.version, must=True)  # type: ignore[return-value] # must: never None

    def load_pipeline(self) -> Pipeline:
        """The saved scikit-learn pipeline of a trained classifier (kind "sklearn")."""
        return load_classifier(self.path)


def resolve_code_model(name: str, warehouse_root: str | Path) -> CodeModel:
    """code.model -> CodeModel. "auto": UPSTREAM_MODEL when cached or the hub is reachable, else the trained
    classifier; "trained": the trained classifier; else a local folder or a hub id. ModelError says how to fix."""
    trained = trained_classifier_dir(warehouse_root)
    if name in ("auto", "trained"):
        if name == "auto":
            folder = _hub_folder(UPSTREAM_MODEL, None, must=False)
            if folder is not None:
                return _transformers_model(UPSTREAM_MODEL, folder, hub_id=UPSTREAM_MODEL)
        if storage.is_file(storage.join(trained, CLASSIFIER_FILE)):
            return _sklearn_model("trained", trained)
        why = (f"{UPSTREAM_MODEL} is not in the local Hugging Face cache and the hub cannot be reached, and "
               if name == "auto" else "")
        raise ModelError(f"code.model = {name!r}: {why}no trained code classifier exists at {trained}. Run "
                         "`semmem train-code-classifier --config ...` (stage train_code_classifier) first, or set "
                         f"code.model to a local folder of a sequence classifier")
    folder = Path(name).expanduser()
    if folder.is_dir():
        if (folder / CLASSIFIER_FILE).is_file():
            return _sklearn_model(name, str(folder.absolute()))
        if (folder / "config.json").is_file():
            return _transformers_model(name, str(folder.absolute()))
        raise ModelError(f"code.model = {name!r}: the folder holds neither {CLASSIFIER_FILE} (a trained code "
                         "classifier) nor config.json (a Hugging Face model written by save_pretrained)")
    if name.startswith(("/", ".", "~")) or name.count("/") != 1 or folder.exists():
        raise ModelError(f"code.model = {name!r}: no such folder. Give an existing folder, a hub id such as "
                         f"{UPSTREAM_MODEL}, 'trained' (run `semmem train-code-classifier` first) or 'auto'")
    return _transformers_model(name, _hub_folder(name, None, must=True), hub_id=name)


def _sklearn_model(name: str, folder: str) -> CodeModel:
    metrics = storage.join(folder, METRICS_FILE)
    has_metrics = storage.is_file(metrics)
    version = read_metrics(folder).get("fingerprint", "unknown") if has_metrics else weights_digest(folder)
    return CodeModel(name, "sklearn", folder, str(version), metrics_path=metrics if has_metrics else None)


def _transformers_model(name: str, folder: str, *, hub_id: str | None = None) -> CodeModel:
    version = Path(folder).name if hub_id is not None else weights_digest(folder)  # hub: the commit
    return CodeModel(name, "transformers", folder, version, hub_id=hub_id)


def _hub_folder(hub_id: str, revision: str | None, *, must: bool) -> str | None:
    """The local snapshot of a hub model: the cache first, then a download when the hub is reachable. None (or,
    when `must`, ModelError) if neither works."""
    folder = hub_snapshot(hub_id, revision, what=f"code classifier {hub_id!r}" if must else None)
    if folder is None and must:
        raise ModelError(f"code.model = {hub_id!r} is neither a local folder nor in the local Hugging Face cache, and "
                         f"the hub cannot be reached. Download it on a connected machine (`huggingface-cli download "
                         f"{hub_id}`) and copy the cache (HF_HOME), or set code.model=trained after "
                         "`semmem train-code-classifier`")
    return folder
