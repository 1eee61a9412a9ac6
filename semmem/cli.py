"""`semmem` command line: run stages, query tables with SQL, list tables.

    semmem run --config conf/local.yaml [--set key=value ...] [--stages ingest,duplicates]
    semmem sql --warehouse WH [--format table|csv|json] [--engine auto|datafusion|spark] "SELECT ..."
    semmem tables --warehouse WH
    semmem stages
    semmem train-model --config conf/local.yaml

Errors semmem raises on purpose (bad config, bad input, missing table) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from semmem.config import Config, load_config
from semmem.errors import SemmemError

log = logging.getLogger("semmem")


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="semmem %(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("py4j", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (e.g. conf/local.yaml); defaults apply where absent")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set sample.size=1000 (repeatable)")


def _load(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    return load_config(args.config, [*args.overrides, *(extra or [])])


def run_pipeline(cfg: Config, stages: list[str] | None = None) -> list[str]:
    """Build the session and run `stages` (or cfg.stages, or all default stages)."""
    from semmem.spark import build_session
    from semmem.stages import StageContext, resolve, run_stages
    from semmem.tables import Warehouse

    names = stages if stages is not None else cfg.stages
    resolve(names)  # unknown stage names fail before Spark starts
    spark = build_session(cfg)
    warehouse = Warehouse(spark, cfg.warehouse)
    _record_run(cfg, names)
    log.info("warehouse %s (%s backend)", warehouse.root, warehouse.backend)
    return run_stages(StageContext(spark, cfg, warehouse), names)


def _record_run(cfg: Config, stages: list[str]) -> None:
    """Keep the resolved config beside the tables it produced."""
    runs = Path(cfg.warehouse) / "_semmem" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (runs / f"{stamp}.json").write_text(json.dumps({"stages": stages, "config": cfg.to_dict()}, indent=2))


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    stages = [s for s in args.stages.split(",") if s] if args.stages else None
    start = time.monotonic()
    ran = run_pipeline(cfg, stages)
    print(f"\nsemmem: ran {', '.join(ran)} in {time.monotonic() - start:.0f} s")
    _print_tables(cfg.warehouse)
    print(f'\nquery them with: semmem sql --warehouse {cfg.warehouse} "SELECT count(*) FROM sequences"')
    return 0


def cmd_train_model(args: argparse.Namespace) -> int:
    cfg = _load(args)
    run_pipeline(cfg, ["train_model"])
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from semmem.sql import format_table, run_sql

    result = run_sql(args.warehouse, args.query, engine=args.engine)
    sys.stdout.write(format_table(result, args.format))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    _print_tables(args.warehouse)
    return 0


def _print_tables(warehouse: str) -> None:
    from semmem.tables import list_tables

    infos = list_tables(warehouse)
    print(f"tables in {Path(warehouse).absolute()}:")
    width = max([len(i.name) for i in infos] + [5])
    print(f"  {'table':<{width}}  version  {'rows':>12}  files")
    for i in infos:
        print(f"  {i.name:<{width}}  {i.version:>7}  {i.num_rows:>12,}  {i.num_files:>5}")


def cmd_stages(args: argparse.Namespace) -> int:
    from semmem.stages import REGISTRY

    for s in REGISTRY.values():
        flag = "" if s.default else "  (not in the default run)"
        print(f"{s.name:<14} {s.description}{flag}\n{'':<14} reads {', '.join(s.inputs) or '-'}; "
              f"writes {', '.join(s.outputs) or '-'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semmem", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run pipeline stages (all by default)")
    _config_args(p)
    p.add_argument("--stages", help="comma-separated stage names (see `semmem stages`)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("train-model", help="train the small GPT-NeoX of the embedded default (stage train_model)")
    _config_args(p)
    p.set_defaults(fn=cmd_train_model)

    p = sub.add_parser("sql", help="run SQL over every table of a warehouse, by catalog name")
    p.add_argument("--warehouse", required=True)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--engine", choices=["auto", "datafusion", "spark"], default="auto",
                   help="auto: DataFusion (no JVM start-up); spark: Spark SQL")
    p.add_argument("query")
    p.set_defaults(fn=cmd_sql)

    p = sub.add_parser("tables", help="list tables with versions and row counts")
    p.add_argument("--warehouse", required=True)
    p.set_defaults(fn=cmd_tables)

    p = sub.add_parser("stages", help="list the pipeline stages")
    p.set_defaults(fn=cmd_stages)
    return parser


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except SemmemError as e:
        print(f"semmem: error: {e}", file=sys.stderr)
        return 2


def job_main(stage_name: str, argv: list[str] | None = None) -> int:
    """Entry point of `spark-submit jobs/<stage>.py --config FILE [--set k=v ...]`: runs that one stage."""
    _setup_logging()
    parser = argparse.ArgumentParser(prog=f"jobs/{stage_name}.py", description=f"run stage {stage_name}")
    _config_args(parser)
    args = parser.parse_args(argv)
    try:
        run_pipeline(_load(args), [stage_name])
    except SemmemError as e:
        print(f"semmem: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
