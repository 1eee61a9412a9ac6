"""The stage registry: every arrow of the data flow is one stage that reads and writes catalog tables.

A stage is a plain function `fn(ctx) -> None` registered with `@stage(...)`. Registration order is pipeline order;
`resolve` picks the requested stages in that order and checks, before anything runs, that every table a stage reads
is either in the warehouse already or written by an earlier selected stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import SparkSession

from semmem.config import Config
from semmem.errors import StageError
from semmem.tables import Warehouse

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


REGISTRY: dict[str, Stage] = {}


def stage(name: str, *, inputs: tuple[str, ...], outputs: tuple[str, ...], default: bool = True
          ) -> Callable[[Callable[[StageContext], None]], Callable[[StageContext], None]]:
    """Register `fn` as stage `name`; its docstring's first line is the description `semmem stages` shows."""

    def register(fn: Callable[[StageContext], None]) -> Callable[[StageContext], None]:
        if name in REGISTRY:
            raise StageError(f"stage {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Stage(name, inputs, outputs, fn, doc[0] if doc else "", default)
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


def run_stages(ctx: StageContext, names: list[str]) -> list[str]:
    """Run the named stages in order; returns their names."""
    stages = resolve(names)
    check_inputs(stages, ctx.warehouse)
    for s in stages:
        start = time.monotonic()
        log.info("stage %s: starting", s.name)
        s.fn(ctx)
        log.info("stage %s: done in %.1f s", s.name, time.monotonic() - start)
    return [s.name for s in stages]
