"""Stage `localize` as a Spark job: spark-submit jobs/localize.py --config conf/local.yaml [--set k=v]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.cli import exit_now, job_main  # noqa: E402

if __name__ == "__main__":
    exit_now(job_main("localize"))
