"""`semmem status`: every published table with its version, when and by which stage run it was made, the artifacts
it was made from, and whether it is stale (an input table has a newer published version or, given a config, the
config, the input files or an artifact such as a model's weights changed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semmem import storage
from semmem.config import Config
from semmem.errors import SemmemError
from semmem.tables import (ADOPTED, ARTIFACTS, DIRECT, FILES, RUNS, Publication, Publications, Warehouse, digest,
                           latest_version, list_tables, published_version, read_publications, table_path)


@dataclass(frozen=True)
class TableStatus:
    table: str
    version: int
    made: str  # UTC time of the publication
    stage: str
    config_hash: str
    state: str  # current | stale: why | unpublished commits | not tracked
    artifacts: dict[str, str]  # what else it was made from (model weights, a classifier, a tokenizer): digests


def status_rows(warehouse: str | Path, cfg: Config | None = None) -> list[TableStatus]:
    """One row per published table (the publication log last); `cfg` adds the config and input-file checks."""
    from semmem.stages import REGISTRY

    root = storage.normalize(warehouse)
    pubs = read_publications(root)
    found: dict[str, dict[str, str] | SemmemError] = {}  # each stage's artifacts as found now, once per stage
    rows = []
    for info in list_tables(root):
        if info.name == RUNS:
            continue
        p = pubs.newest.get(info.name) if pubs is not None else None
        if p is None:
            rows.append(TableStatus(info.name, info.version, "-", "-", "-", "not tracked (no publication log)", {}))
            continue
        why = _stale(p, root, pubs, cfg, REGISTRY.get(p.stage), found)
        latest = latest_version(table_path(root, info.name))
        if not why and latest is not None and latest > p.version:
            why = [f"current; {latest - p.version} newer unpublished commit(s) (a run failed or is running)"]
        rows.append(TableStatus(info.name, p.version, p.published_at.strftime("%Y-%m-%d %H:%M:%S"), p.stage,
                                p.config_hash if p.stage not in (ADOPTED, DIRECT) else "-",
                                "; ".join(why) if why else "current", p.inputs.get(ARTIFACTS, {})))
    return rows


def _stale(p: Publication, root: str, pubs, cfg: Config | None, stage,  # noqa: ANN001
           found: dict[str, dict[str, str] | SemmemError]) -> list[str]:
    if p.stage in (ADOPTED, DIRECT):
        return [f"not tracked ({'made before the publication log' if p.stage == ADOPTED else 'written directly'})"]
    now = {name: published_version(root, name, pubs) for name in p.inputs if name not in (FILES, ARTIFACTS)}
    why = [f"stale: {name} is at version {now[name]}, made from {v}" for name, v in p.inputs.items()
           if name in now and now[name] != v]
    if cfg is not None and stage is not None:
        if digest(stage.config_of(cfg)) != p.config_hash:
            why.append(f"stale: the config of stage {p.stage} changed")
        if FILES in p.inputs and stage.reads_files and stage.files_digest(cfg) != p.inputs[FILES]:
            why.append("stale: the input files changed")
        if stage.artifacts is not None:
            if stage.name not in found:
                found[stage.name] = _artifacts_now(stage, cfg, root)
            why += _changed_artifacts(p.inputs.get(ARTIFACTS, {}), found[stage.name])
    return why


def _artifacts_now(stage, cfg: Config, root: str) -> dict[str, str] | SemmemError:  # noqa: ANN001
    """The artifacts (model weights, a classifier, a tokenizer) as the stage would find them now, or why they cannot
    be found: no Spark session is needed, only the warehouse's metadata."""
    from semmem.stages import StageContext

    try:
        metadata_only = Warehouse(None, root, backend="delta-rs")  # type: ignore[arg-type]
        return stage.artifacts(StageContext(None, cfg, metadata_only))  # type: ignore[arg-type]
    except SemmemError as e:
        return e


def _changed_artifacts(before: dict[str, str], now: dict[str, str] | SemmemError) -> list[str]:
    """What changed among the artifacts a stage read."""
    if isinstance(now, SemmemError):
        return [f"stale?: its artifacts cannot be checked ({now})"]
    why = [f"stale: {name} changed ({before[name]} -> {now[name]})" for name in sorted(now)
           if name in before and before[name] != now[name]]
    why += [f"stale: {name} is new" for name in sorted(set(now) - set(before))]
    return why + [f"stale: {name} is gone" for name in sorted(set(before) - set(now))]


def stale_inputs(warehouse: str | Path, name: str, pubs: Publications | None) -> list[str]:
    """Why table `name` is not current with respect to its inputs, following them back: an input now published at
    another version than the one it was made from, or an input that is itself stale. Empty: current (or untracked).
    Each reason names the stage to run."""
    root = storage.normalize(warehouse)
    p = pubs.newest.get(name) if pubs is not None else None
    if p is None or p.stage in (ADOPTED, DIRECT):
        return []
    why = []
    for inp, made_from in p.inputs.items():
        if inp in (FILES, ARTIFACTS):
            continue
        now = published_version(root, inp, pubs)
        if now != made_from:
            state = "is gone" if now is None else f"changed (version {now}; {name} was made from {made_from})"
            why.append(f"{name} is stale: {inp} {state}; run stage {p.stage}")
        else:
            why += stale_inputs(root, inp, pubs)
    return list(dict.fromkeys(why))
