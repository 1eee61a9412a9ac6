"""The stage registry: every arrow of the data flow is one stage that reads and writes catalog tables.

A stage is a plain function `fn(ctx) -> None` registered with `@stage(...)`. Registration order is pipeline order;
`resolve` picks the requested stages in that order and checks, before anything runs, that every table a stage reads
is either in the warehouse already or written by an earlier selected stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from pyspark.sql import SparkSession

from semmem import storage
from semmem.config import Config
from semmem.errors import StageError
from semmem.tables import ARTIFACTS, FILES, Warehouse, digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    spark: SparkSession
    cfg: Config
    warehouse: Warehouse


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]  # catalog tables read ("stream" = token_rows or a megatron .bin)
    outputs: tuple[str, ...]  # catalog tables written
    fn: Callable[[StageContext], None]
    description: str
    default: bool = True  # part of `semmem run` without --stages
    # the config it reads, whole sections ("score") or single keys ("taxonomy.seed"): its lineage, a change re-runs it
    config: tuple[str, ...] = ()
    reads_also: tuple[str, ...] = ()  # tables it reads when they exist (their versions are in its lineage too)
    reads_files: str = ""  # the config key of the files it reads ("input.path"): their sizes and times are lineage
    # the digests of what else it reads (model weights, a classifier, label files): a changed one re-runs it
    artifacts: Callable[[StageContext], dict[str, str]] | None = None

    def config_of(self, cfg: Config) -> dict:
        """The config this stage reads: {section: {key: value}} with the keys it declares."""
        full = cfg.to_dict()
        out: dict[str, dict] = {}
        for entry in self.config:
            section, _, key = entry.partition(".")
            out.setdefault(section, {}).update({key: full[section][key]} if key else full[section])
        return out

    def input_versions(self, ctx: StageContext, version_of: Callable[[str], int | None]) -> dict:
        """The versions of the tables it reads (None: absent), a digest of its input files' sizes and times, and
        its artifacts' digests."""
        inputs: dict[str, object] = {}
        for name in (*self.inputs, *self.reads_also):
            for t in (("token_rows", "stream_sources") if name == "stream" else (name,)):
                inputs[t] = version_of(t)
        if self.reads_files:
            inputs[FILES] = self.files_digest(ctx.cfg)
        if self.artifacts is not None:
            inputs[ARTIFACTS] = self.artifacts(ctx)
        return inputs

    def files_digest(self, cfg: Config) -> str:
        """A digest of the sizes and times of the files named by the config key `reads_files`."""
        section, key = self.reads_files.split(".")
        return digest(storage.fingerprint(getattr(getattr(cfg, section), key)))


REGISTRY: dict[str, Stage] = {}


def stage(name: str, *, inputs: tuple[str, ...], outputs: tuple[str, ...], default: bool = True,
          config: tuple[str, ...] = (), reads_also: tuple[str, ...] = (), reads_files: str = "",
          artifacts: Callable[[StageContext], dict[str, str]] | None = None
          ) -> Callable[[Callable[[StageContext], None]], Callable[[StageContext], None]]:
    """Register `fn` as stage `name`; its docstring's first line is the description `semmem stages` shows."""

    def register(fn: Callable[[StageContext], None]) -> Callable[[StageContext], None]:
        if name in REGISTRY:
            raise StageError(f"stage {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Stage(name, inputs, outputs, fn, doc[0] if doc else "", default, config, reads_also,
                               reads_files, artifacts)
        return fn

    return register


def resolve(names: list[str]) -> list[Stage]:
    """The stages named (all default stages when empty), in pipeline order."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise StageError(f"unknown stage {unknown[0]!r}; known stages: {', '.join(REGISTRY)}")
    wanted = set(names) if names else {s.name for s in REGISTRY.values() if s.default}
    return [s for s in REGISTRY.values() if s.name in wanted]


def producer_of(table_name: str) -> str:
    return next((s.name for s in REGISTRY.values() if table_name in s.outputs), "?")


def check_inputs(stages: list[Stage], warehouse: Warehouse) -> None:
    """Fail before any work when a stage would read a table that neither exists nor gets written earlier."""
    produced: set[str] = set()
    for s in stages:
        for name in s.inputs:
            if name == "stream":
                if not (warehouse.exists("token_rows") or warehouse.exists("stream_sources") or
                        {"token_rows", "stream_sources"} & produced):
                    raise StageError(f"stage {s.name!r} needs the training stream; run stage 'ingest' first "
                                     "(the input format sequences-parquet has no stream)")
            elif name not in produced and not warehouse.exists(name):
                raise StageError(f"stage {s.name!r} needs table {name!r}, which is not in {warehouse.root}; "
                                 f"run stage {producer_of(name)!r} first")
        produced.update(s.outputs)


def run_stages(ctx: StageContext, names: list[str], force: Collection[str] = ("all",)) -> list[str]:
    """Run the named stages in order, each as one stage run whose tables are published together when it succeeds;
    a stage whose outputs are current (same config, input versions and artifacts) is skipped unless forced ("all"
    forces every stage). Returns the names of the stages that ran."""
    stages = resolve(names)
    unknown = set(force) - set(REGISTRY) - {"all"}
    if unknown:
        raise StageError(f"--force: unknown stage {sorted(unknown)[0]!r}; known stages: {', '.join(REGISTRY)}")
    check_inputs(stages, ctx.warehouse)
    ran = []
    for s in stages:
        wh = ctx.warehouse
        wh.refresh()
        config, inputs = s.config_of(ctx.cfg), s.input_versions(ctx, wh.visible_version)
        forced = "all" in force or s.name in force
        if s.outputs and not forced and wh.is_current(s.name, config, inputs):
            log.info("stage %s: skipped: its tables are current (same config and inputs; --force %s reruns it)",
                     s.name, s.name)
            continue
        start = time.monotonic()
        log.info("stage %s: starting", s.name)
        wh.begin_stage(s.name, s.outputs, config, inputs, forced=forced)
        try:
            s.fn(ctx)
            wh.publish()
        except BaseException:
            wh.abort()
            raise
        log.info("stage %s: done in %.1f s", s.name, time.monotonic() - start)
        ran.append(s.name)
    return ran
