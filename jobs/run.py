"""The whole pipeline as one Spark application (every default stage, or --stages a,b):
spark-submit jobs/run.py --config conf/local.yaml [--stages ...] [--set k=v]  (same options as `semmem run`)"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.cli import exit_now, main  # noqa: E402

if __name__ == "__main__":
    exit_now(main(["run", *sys.argv[1:]]))
