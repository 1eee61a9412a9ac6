"""tools/gpu_check.py's cheap parts: the no-CUDA exit, the table from canned bench JSON, a failing step's row. The
steps themselves need a GPU (or minutes of CPU with --allow-cpu --quick) and are not run here."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "tools" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)  # dataclasses look their module up
_spec.loader.exec_module(gpu_check)

SCORING = {"shape": "1b", "dtype": "float16", "batch_size": 512, "flag_seq_per_s": 12345.678, "full_seq_per_s": 6000.0,
           "generate_seq_per_s": 400.3, "flag_vs_generate": 30.84, "full_vs_generate": 14.99,
           "graded_time_vs_full": 1.4321, "full_equals_generate": True, "flag_fraction_of_h100_bf16_peak": 0.4567}
NEAR = {"embed": {"distinct_texts": 2497, "stage_texts_per_s": 9876.54, "plain_texts_per_s": 5432.1,
                  "encode_alone_texts_per_s": 8000.0, "stage_vs_plain": 1.818},
        "semantic": {"vectors": 40000, "torch_kernel": "cuda float16", "torch_kernel_pairs_per_s": 1.234e11,
                     "numpy_kernel_pairs_per_s": 1.5e8, "stage_kernel": "torch cuda",
                     "stage_counts_pairs_per_s": 3.21e9}}
FAMILY = {"device": "cuda", "masters": {"local[3]": {"wall_s": 41.234, "checkpoints": 12}}}
LOCALIZE = {"shape": "160m", "dtype": "float16", "sequences": 512, "blocks": 36, "flag_seq_per_s": 20000.04,
            "rewind_all_blocks_s": 1.234, "rewind_vs_blocks_x_flag": 1.0412, "gradient_seq_per_s": 150.55}

EXPECTED = """gpu-check on NVIDIA H100 80GB HBM3 (torch 2.13.0, CUDA 12.8)

| check | figure | value |
|---|---|---|
| pytest -m gpu | result | 2 passed, 900 deselected in 12.34s |
| scoring 1b float16 (batch 512) | flag seq/s | 12,345.7 |
| scoring 1b float16 (batch 512) | full seq/s | 6,000.0 |
| scoring 1b float16 (batch 512) | generate seq/s | 400.3 |
| scoring 1b float16 (batch 512) | flag / generate | 30.8x |
| scoring 1b float16 (batch 512) | full / generate | 14.99x |
| scoring 1b float16 (batch 512) | graded time / full | 1.43x |
| scoring 1b float16 (batch 512) | full == generate on every row | True |
| scoring 1b float16 (batch 512) | flag MFU vs H100 bf16 peak | 45.7% |
| embed, 2,497 texts | stage texts/s | 9,876.5 |
| embed, 2,497 texts | plain SentenceTransformer texts/s (with load) | 5,432.1 |
| embed, 2,497 texts | plain encode alone texts/s | 8,000.0 |
| embed, 2,497 texts | stage / plain | 1.82x |
| semantic, 40,000 x 40,000 | torch kernel (cuda float16) pairs/s | 1.234e+11 |
| semantic, 40,000 x 40,000 | numpy kernel (CPU) pairs/s | 1.500e+08 |
| semantic, 40,000 x 40,000 | stage, torch cuda kernel, counts pairs/s | 3.210e+09 |
| family trainer (cuda) | train_model wall s, local[3], 12 checkpoints | 41.2 |
| localize 160m float16, 512 sequences, 36 blocks | flag seq/s | 20,000.0 |
| localize 160m float16, 512 sequences, 36 blocks | rewinding every block s | 1.23 |
| localize 160m float16, 512 sequences, 36 blocks | rewinding / (blocks x flag) | 1.04x |
| localize 160m float16, 512 sequences, 36 blocks | gradient norms seq/s | 150.6 |
| scoring 70m | failed | exit 1: a \\| b |"""


def test_no_cuda_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert capsys.readouterr().out == (f"gpu-check: no CUDA device here (torch {torch.__version__}): nothing to "
                                       "measure; run it where a GPU is\n")


def test_table_from_canned_json():
    rows = [*gpu_check.pytest_figures("..\n2 passed, 900 deselected in 12.34s\n"),
            *gpu_check.scoring_figures(SCORING), *gpu_check.near_figures(NEAR), *gpu_check.family_figures(FAMILY),
            *gpu_check.localize_figures(LOCALIZE), ("scoring 70m", "failed", "exit 1: a | b")]
    assert gpu_check.table("gpu-check on NVIDIA H100 80GB HBM3 (torch 2.13.0, CUDA 12.8)", rows) == EXPECTED


def test_failing_or_unrun_step_is_a_row_not_a_traceback():
    fail = gpu_check.Step("boom", [sys.executable, "-c", "raise SystemExit('it broke')"], 30, "none.json", dict)
    rows, ok = gpu_check.run_step(fail, time.monotonic() + 60)
    assert not ok and rows[0] == ("boom", "failed", "exit 1: it broke") and rows[1][1] == "time"
    assert gpu_check.run_step(fail, time.monotonic()) == ([("boom", "not run", "the 8-minute budget is spent")], False)
