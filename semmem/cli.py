"""`semmem` command line: run stages, query tables with SQL, list tables.

    semmem run --config conf/local.yaml [--set key=value ...] [--stages ingest,duplicates] [--force STAGE]
    semmem texts --warehouse WH --model trained-l@step4108 [--model ...] [--stride 32] FILE.jsonl ...
    semmem status --warehouse WH [--config conf/local.yaml]
    semmem sql --warehouse WH [--format table|csv|json] [--engine auto|datafusion|spark] "SELECT ..."
    semmem tables --warehouse WH
    semmem summary --warehouse WH
    semmem stages
    semmem train-model --config conf/local.yaml
    semmem train-code-classifier --config conf/local.yaml [--set code_classifier.labels=FILE.jsonl]

Errors semmem raises on purpose (bad config, bad input, missing table) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Collection
from typing import NoReturn

from semmem import storage
from semmem.config import Config, load_config

log = logging.getLogger("semmem")


def _setup_logging() -> Callable[[], None]:
    """INFO lines on stderr, and the whole run's log in a file (semmem.failures: $SEMMEM_LOG_DIR, default
    ~/.cache/semmem/logs) where a failure's full trace goes too; a Spark JVM this command starts logs there as
    well. Returns the function that undoes the environment change for the JVM when the command ends."""
    from semmem import failures

    logging.basicConfig(level=logging.INFO, format="semmem %(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("py4j", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "semmem_log_file", False)]:  # an earlier main() in-process
        root.removeHandler(old)
        old.close()
    path = failures.start_log()
    if path is None:
        return lambda: None
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("semmem %(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.semmem_log_file = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    failures.quiet_pyspark_loggers()
    opts = failures.jvm_log_options(path)
    if opts is None:
        return lambda: None
    before = os.environ.get("SPARK_SUBMIT_OPTS")
    os.environ["SPARK_SUBMIT_OPTS"] = f"{before} {opts}" if before else opts

    def restore() -> None:  # only a JVM started during this command logs into its file
        if before is None:
            os.environ.pop("SPARK_SUBMIT_OPTS", None)
        else:
            os.environ["SPARK_SUBMIT_OPTS"] = before

    return restore


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (e.g. conf/local.yaml); defaults apply where absent")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set sample.size=1000 (repeatable)")


def _load(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    return load_config(args.config, [*args.overrides, *(extra or [])])


def run_pipeline(cfg: Config, stages: list[str] | None = None, force: Collection[str] = ()) -> list[str]:
    """Build the session and run `stages` (or cfg.stages, or all default stages); stages whose tables are current
    are skipped unless named in `force` ("all": every stage)."""
    from semmem.spark import build_session
    from semmem.stages import StageContext, resolve, run_stages
    from semmem.tables import Warehouse

    names = stages if stages is not None else cfg.stages
    resolve(names)  # unknown stage names fail before Spark starts
    spark = build_session(cfg)
    warehouse = Warehouse(spark, cfg.warehouse, backend=cfg.warehouse_backend)
    _record_run(cfg, names)
    log.info("warehouse %s (%s backend), Spark %s", warehouse.root, warehouse.backend.name, spark.version)
    return run_stages(StageContext(spark, cfg, warehouse), names, force=force)


def _record_run(cfg: Config, stages: list[str]) -> None:
    """Keep the resolved config beside the tables it produced."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    storage.write_text(storage.join(cfg.warehouse, "_semmem", "runs", f"{stamp}.json"),
                       json.dumps({"stages": stages, "config": cfg.to_dict()}, indent=2))


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args)
    stages = [s for s in args.stages.split(",") if s] if args.stages else None
    force = [s for f in args.force for s in f.split(",") if s]
    start = time.monotonic()
    ran = run_pipeline(cfg, stages, force)
    print(f"\nsemmem: ran {', '.join(ran) or 'nothing (every stage current)'} in {time.monotonic() - start:.0f} s")
    _print_tables(cfg.warehouse)
    print(f'\nquery them with: semmem sql --warehouse {cfg.warehouse} "SELECT count(*) FROM sequences"')
    _print_summary(cfg.warehouse)
    return 0


def _print_summary(warehouse: str) -> None:
    from semmem.summary import summary_text

    text = summary_text(warehouse)
    if text:
        print(text)


def cmd_summary(args: argparse.Namespace) -> int:
    from semmem.summary import summary_text

    text = summary_text(args.warehouse)
    if not text:
        print(f"semmem: no table combined in {storage.normalize(args.warehouse)}: run stages combine, taxonomy and "
              "report (they are in the default run)")
        return 1
    print(text.lstrip("\n"))
    return 0


def cmd_texts(args: argparse.Namespace) -> int:
    """Score the texts of FILE... with --model (stage texts), beside the warehouse's corpus, and print the answer."""
    from semmem.config import with_section
    from semmem.summary import texts_text

    cfg = load_config(args.config, [*args.overrides, f"warehouse={args.warehouse}"])
    family = None if args.config else _recorded_family(cfg.warehouse)
    if family is not None:  # the family as this warehouse trained it, so trained-<size>@step<N> resolves
        cfg = with_section(cfg, "train_model", family)
    cfg = with_section(cfg, "texts", {"path": list(args.files), "models": args.model or cfg.texts.models,
                                      "stride": cfg.texts.stride if args.stride is None else args.stride})
    run_pipeline(cfg, ["texts"])
    print(texts_text(cfg.warehouse))
    return 0


def _recorded_family(warehouse: str) -> dict | None:
    """The train_model section of the run that published the warehouse's model_family (None: there is none)."""
    from semmem.tables import read_publications

    root = storage.normalize(warehouse)
    pubs = read_publications(root) if storage.is_dir(root) else None
    p = pubs.newest.get("model_family") if pubs is not None else None
    return (p.config or {}).get("train_model") if p is not None else None


def cmd_train_model(args: argparse.Namespace) -> int:
    cfg = _load(args)
    run_pipeline(cfg, ["train_model"])
    return 0


def cmd_train_code_classifier(args: argparse.Namespace) -> int:
    cfg = _load(args)
    run_pipeline(cfg, ["train_code_classifier"])
    _print_code_metrics(cfg)
    return 0


def _print_code_metrics(cfg: Config) -> None:
    """The saved classifier's held-out and human-label figures, next to upstream's."""
    from semmem.code_classifier import METRICS_FILE, read_metrics, trained_classifier_dir
    from semmem.features.code import UPSTREAM_F1, UPSTREAM_MODEL

    folder = trained_classifier_dir(cfg.warehouse)
    if cfg.code.model not in ("auto", "trained") or not storage.is_file(storage.join(folder, METRICS_FILE)):
        print(f"\nsemmem: no code classifier trained (code.model = {cfg.code.model!r} does not use one)")
        return
    m = read_metrics(folder)

    def line(d: dict) -> str:
        return (f"F1(code) {d['f1_code']:.3f}  precision {d['precision_code']:.3f}  recall {d['recall_code']:.3f}  "
                f"F1(NL) {d['f1_nl']:.3f}  accuracy {d['accuracy']:.3f}  ROC-AUC {d['roc_auc']:.3f}  "
                f"({d['n']} texts, {d['n_code']} code)")

    print(f"\ncode classifier {folder}: {m['variant']}, trained on {m['rows']['train_final']:,} texts "
          f"(labels: {m['labels']})")
    print(f"  held out:     {line(m['held_out'])}")
    if "human_labels" not in m:
        print("  human labels: not evaluated (code_classifier.eval_labels is null)")
        return
    h = m["human_labels"]
    print(f"  human labels: {line(h)}")
    print(f"  vs upstream {UPSTREAM_MODEL}: F1(NL) {UPSTREAM_F1:.4f} at the best threshold chosen on these labels; "
          f"this classifier at its best threshold: F1(NL) {h['f1_nl_best_threshold']:.4f}")


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
    print(f"tables in {storage.normalize(warehouse)}:")
    width = max([len(i.name) for i in infos] + [5])
    print(f"  {'table':<{width}}  version  {'rows':>12}  files")
    for i in infos:
        print(f"  {i.name:<{width}}  {i.version:>7}  {i.num_rows:>12,}  {i.num_files:>5}")


def cmd_status(args: argparse.Namespace) -> int:
    from semmem.lineage import status_rows

    rows = status_rows(args.warehouse, load_config(args.config, args.overrides) if args.config else None)
    print(f"tables in {storage.normalize(args.warehouse)}:")
    width = max([len(r.table) for r in rows] + [5])
    print(f"  {'table':<{width}}  version  {'made (UTC)':<19}  {'stage':<22}  {'config':<16}  state")
    for r in rows:
        print(f"  {r.table:<{width}}  {r.version:>7}  {r.made:<19}  {r.stage:<22}  {r.config_hash:<16}  {r.state}")
        for name, made_from in r.artifacts.items():
            print(f"  {'':<{width}}  made from {name}: {made_from}")
    return 0


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
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="rerun STAGE even when its tables are current (comma-separated, repeatable; 'all': every "
                        "stage)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("texts", help="did the model memorize these texts? Score your texts (jsonl lines "
                                     "{\"text\": ...}) beside the warehouse's corpus and print the answer per text")
    p.add_argument("--warehouse", required=True, help="the warehouse: its models, tokenizer and training stream")
    p.add_argument("--model", action="append", default=[], metavar="MODEL",
                   help="a model to score with (repeatable): a family member or checkpoint (trained-l@step4108), a "
                        "save_pretrained folder, or a hub id@revision")
    p.add_argument("--stride", type=int, help="tokens between the 64-token windows of a long text (default 32)")
    p.add_argument("files", nargs="+", metavar="FILE.jsonl")
    _config_args(p)
    p.set_defaults(fn=cmd_texts)

    p = sub.add_parser("train-model", help="train the family of small GPT-NeoX models (stage train_model)")
    _config_args(p)
    p.set_defaults(fn=cmd_train_model)

    p = sub.add_parser("train-code-classifier",
                       help="fit the offline code-vs-NL classifier (stage train_code_classifier) and print its F1")
    _config_args(p)
    p.set_defaults(fn=cmd_train_code_classifier)

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

    p = sub.add_parser("status", help="each table: published version, when and by which stage run it was made, "
                                      "the artifacts it was made from, and whether it is stale")
    p.add_argument("--warehouse", required=True)
    _config_args(p)
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("summary", help="print the answer (memorized per category, model F1) from the tables")
    p.add_argument("--warehouse", required=True)
    p.set_defaults(fn=cmd_summary)

    p = sub.add_parser("stages", help="list the pipeline stages")
    p.set_defaults(fn=cmd_stages)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Any failure prints one line, `semmem: error: ...`, and where its full trace is (semmem.failures.report):
    status 2 for what semmem understands (bad config or input, a full or read-only disk, a corrupt Delta log, an
    error raised in a Spark task), 1 for anything unexpected, 130 on Ctrl-C."""
    from semmem import failures

    restore = _setup_logging()
    try:
        args = build_parser().parse_args(argv)
        try:
            return int(args.fn(args))
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - every failure becomes one line
            return failures.report(e, warehouse=failures.warehouse_of(args))
    finally:
        restore()


def job_main(stage_name: str, argv: list[str] | None = None) -> int:
    """Entry point of `spark-submit jobs/<stage>.py --config FILE [--set k=v ...] [--force]`: runs that one stage
    (skipped when its tables are current, unless --force); failures as in `main`."""
    from semmem import failures

    restore = _setup_logging()
    try:
        parser = argparse.ArgumentParser(prog=f"jobs/{stage_name}.py", description=f"run stage {stage_name}")
        _config_args(parser)
        parser.add_argument("--force", action="store_true", help="rerun the stage even when its tables are current")
        args = parser.parse_args(argv)
        try:
            run_pipeline(_load(args), [stage_name], [stage_name] if args.force else ())
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - every failure becomes one line
            return failures.report(e, warehouse=failures.warehouse_of(args))
        return 0
    finally:
        restore()


def exit_now(code: int) -> NoReturn:
    """Exit at once with `code`, for the `semmem` command and the jobs/ entry points once their work is committed and
    flushed: skipping the interpreter's teardown keeps the native libraries' background threads (Arrow's and delta-rs'
    pools, torch) from aborting a finished run at exit (a SIGABRT after success, 'terminate called without an active
    exception', seen in a spark-submit driver); Spark's JVM stops its context in its own shutdown hook."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def console() -> NoReturn:
    """The `semmem` command: `main`, then `exit_now` with its status."""
    exit_now(main())


if __name__ == "__main__":
    console()
