"""Benchmark of the model-family sweep (stage train_model): does training the sizes in parallel Spark tasks pay?

    python bench/bench_family.py                 # the embedded default's family (conf/local.yaml) at local[1], local[2]
    python bench/bench_family.py --masters 1,2,4 --config conf/local.yaml
    python bench/bench_family.py --masters 3 --device cuda    # the family on the GPU (make gpu-check)

Ingests the embedded sample once into a temporary warehouse, then trains the whole family (every size, every
checkpoint, train_model.force=true) in a fresh SparkSession per master: local[1] runs the sizes' tasks one after the
other, local[n] n at a time. Prints each wall time, the ratio local[1] / local[n], and checks that every master saved
the same checkpoints (the same losses: training is seeded and each task trains its size alone). Figures also go to
bench-out/bench_family.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.config import load_config  # noqa: E402
from semmem.stages.registry import StageContext, run_stages  # noqa: E402
from semmem.tables import Warehouse  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="conf/local.yaml", help="the family to train (train_model.*)")
    ap.add_argument("--masters", default="1,2", help="local[n] masters to time, comma-separated")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="train_model.device (default: config's)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: the stream's first 100,000 tokens only")
    args = ap.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.basicConfig(level=logging.WARNING)
    from semmem.spark import build_session

    with tempfile.TemporaryDirectory(prefix="bench-family-") as tmp:
        base = [f"warehouse={tmp}/wh", "spark.conf.spark.ui.enabled=false", "model.names=[trained]",
                "train_model.force=true", *([f"train_model.device={args.device}"] if args.device else []),
                *(["train_model.max_tokens=100000"] if args.quick else [])]
        walls: dict[int, float] = {}
        res: dict = {"quick": args.quick, "masters": {}}
        losses: dict[int, list[tuple[str, str, float]]] = {}
        for i, cores in enumerate(int(c) for c in args.masters.split(",")):
            cfg = load_config(args.config, [*base, f"spark.master=local[{cores}]"])
            spark = build_session(cfg)
            ctx = StageContext(spark, cfg, Warehouse(spark, cfg.warehouse))
            if i == 0:
                start = time.perf_counter()
                run_stages(ctx, ["ingest"])
                res.update(device=cfg.train_model.device, ingest_s=time.perf_counter() - start)
                sizes = ", ".join(f"{s.name} ({s.hidden_size}x{s.num_layers})" for s in cfg.train_model.sizes)
                print(f"ingested the embedded sample in {time.perf_counter() - start:.0f} s; family {sizes}, "
                      f"checkpoints {cfg.train_model.checkpoints}; {os.cpu_count()} CPUs", flush=True)
            start = time.perf_counter()
            run_stages(ctx, ["train_model"])
            walls[cores] = time.perf_counter() - start
            fam = ctx.warehouse.read("model_family").toPandas().sort_values(["model", "step"])
            losses[cores] = [(r.model, r.revision, round(r.loss, 6)) for r in fam.itertuples()]
            res["masters"][f"local[{cores}]"] = {"wall_s": walls[cores], "checkpoints": len(fam)}
            params = ", ".join(f"{m} {n:,}" for m, n in fam.groupby("model")["num_parameters"].first().items())
            print(f"local[{cores}]: {walls[cores]:6.1f} s wall for {len(fam)} checkpoints ({params} parameters)",
                  flush=True)
            spark.stop()

    first = min(walls)
    for cores, wall in walls.items():
        if cores != first:
            print(f"ratio local[{first}] / local[{cores}]: {walls[first] / wall:.2f}x")
    same = all(v == losses[first] for v in losses.values())
    print(f"same checkpoints (losses) at every master: {same}")
    res["same_checkpoints"] = same
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / "bench_family.json").write_text(json.dumps(res, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
