"""What each stage really reads, recorded while it runs: config keys and tables (to compare with its declaration)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from semmem.config import Config
from semmem.stages import REGISTRY
from semmem.tables import Warehouse

TABLE_READS = ("read", "snapshot_files", "exists", "version", "side_file", "commit_metadata")


@dataclasses.dataclass
class StageReads:
    config: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))  # stage -> keys
    tables: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))  # stage -> tables
    running: list[str] = dataclasses.field(default_factory=list)


def record_stage_reads(monkeypatch) -> StageReads:  # noqa: ANN001 - pytest's MonkeyPatch
    """From now to the end of the test, every config key ("section.key") and table a stage's function touches is
    recorded under the stage's name (reads outside stage functions, e.g. the lineage checks of run_stages, are not)."""
    reads = StageReads()
    defaults = Config()
    for f in dataclasses.fields(Config):
        section = getattr(defaults, f.name)
        if not dataclasses.is_dataclass(section):
            continue
        keys = {k.name for k in dataclasses.fields(section)}

        def get(self, name, _section=f.name, _keys=keys):  # noqa: ANN001, ANN202
            if reads.running and name in _keys:
                reads.config[reads.running[-1]].add(f"{_section}.{name}")
            return object.__getattribute__(self, name)

        monkeypatch.setattr(type(section), "__getattribute__", get)
    for method in TABLE_READS:
        original = getattr(Warehouse, method)

        def recorded(self, name, *args, _original=original, **kwargs):  # noqa: ANN001, ANN202
            if reads.running:
                reads.tables[reads.running[-1]].add(name)
            return _original(self, name, *args, **kwargs)

        monkeypatch.setattr(Warehouse, method, recorded)
    for name, s in list(REGISTRY.items()):
        def fn(ctx, _fn=s.fn, _name=name):  # noqa: ANN001, ANN202
            reads.running.append(_name)
            try:
                return _fn(ctx)
            finally:
                reads.running.pop()

        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(s, fn=fn))
    return reads


def declaration_errors(reads: StageReads) -> list[str]:
    """Where a stage that ran read a config key or table it does not declare, or declares a table it never read."""
    errors = []
    for name, keys in reads.config.items():
        declared = REGISTRY[name].config
        errors += [f"stage {name} reads config key {k}, not declared" for k in sorted(keys)
                   if k not in declared and k.split(".")[0] not in declared]
    for name, tables in reads.tables.items():
        s = REGISTRY[name]
        declared = {t for d in (*s.inputs, *s.reads_also)
                    for t in (("token_rows", "stream_sources") if d == "stream" else (d,))}
        errors += [f"stage {name} reads table {t}, not declared" for t in sorted(tables - declared - set(s.outputs))]
        unread = {d for d in (*s.inputs, *s.reads_also)
                  if not ({"token_rows", "stream_sources"} if d == "stream" else {d}) & tables}
        errors += [f"stage {name} declares table {t} and never reads it" for t in sorted(unread)]
    return errors
