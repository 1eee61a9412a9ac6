"""Stage `texts` as a Spark job: spark-submit jobs/texts.py --config conf/local.yaml --set texts.path=[my.jsonl]
--set texts.models=[trained-l@step4108] (the answer: semmem sql "SELECT * FROM text_answers")"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semmem.cli import exit_now, job_main  # noqa: E402

if __name__ == "__main__":
    exit_now(job_main("texts"))
