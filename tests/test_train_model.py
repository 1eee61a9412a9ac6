"""The tiny-model trainer memorizes what the stream repeats and not what it says once; stage train_model saves a
model the score stage can load, and skips retraining when nothing changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semmem.config import with_overrides
from semmem.errors import ModelError
from semmem.scoring.memorization import score_tokens
from semmem.scoring.models import load_model, models_dir, parse_model_spec
from semmem.scoring.train import TRAIN_INFO, TrainParams, train_model, windows_from_rows
from semmem.stages.registry import StageContext
from semmem.stages.scoring import train_model_stage
from semmem.tables import Warehouse

VOCAB = 256
EOD = 0
ROW = 256
PARAMS = TrainParams(hidden_size=64, num_layers=2, num_heads=4, context_length=64, epochs=8, batch_size=16,
                     learning_rate=3e-3, seed=1234)


def synthetic_stream(seed: int = 0, docs: int = 150, licence_every: int = 3):
    """Rows of ROW tokens packing documents separated by EOD: every `licence_every`-th document starts with the same
    96-token licence, the others are random ("rare") text. Returns (rows, licence, rare windows)."""
    rng = np.random.default_rng(seed)
    licence = rng.integers(2, VOCAB, 96)
    stream, rare = [], []
    for d in range(docs):
        body = rng.integers(2, VOCAB, int(rng.integers(80, 300)))
        if d % licence_every == 0:
            doc = np.concatenate([licence, body[:40]])
        else:
            doc = body
            if len(body) >= 64:
                rare.append(body[:64])
        stream.extend(doc.tolist() + [EOD])
    n = len(stream) // ROW
    rows = np.asarray(stream[:n * ROW]).reshape(n, ROW)
    return rows, licence, np.stack(rare)


@pytest.fixture(scope="module")
def trained():
    rows, licence, rare = synthetic_stream()
    model, summary = train_model(windows_from_rows(rows, PARAMS.context_length), VOCAB, PARAMS, eod_id=EOD)
    return model, summary, licence, rare


def test_repeated_text_is_memorized_and_rare_text_is_not(trained):
    model, summary, licence, rare = trained
    lic_windows = torch.as_tensor(np.stack([licence[o:o + 64] for o in (0, 8, 16, 24, 32)]))
    out = score_tokens(model, lic_windows, mode="full")
    assert out["is_memorized"].all(), out["memorization_score"]
    out_rare = score_tokens(model, torch.as_tensor(rare[:40]), mode="full")
    assert not out_rare["is_memorized"].any()
    assert float(out_rare["memorization_score"].max()) <= 0.25
    # and the perplexity tells the same story
    assert float(out["generation_perplexity"].max()) < 1.5 < float(out_rare["generation_perplexity"].min())
    assert summary["epoch_loss"][-1] < summary["epoch_loss"][0]


def test_training_is_deterministic(trained):
    model, _, _, _ = trained
    rows, _, _ = synthetic_stream()
    again, _ = train_model(windows_from_rows(rows, PARAMS.context_length), VOCAB, PARAMS, eod_id=EOD)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_windows_and_errors():
    rows = [np.arange(10), np.arange(3)]
    np.testing.assert_array_equal(windows_from_rows(rows, 4), [[0, 1, 2, 3], [4, 5, 6, 7]])
    with pytest.raises(ModelError, match="context_length"):
        windows_from_rows([np.arange(3)], 4)
    with pytest.raises(ModelError, match="vocab size"):
        train_model(np.full((2, 8), 300), VOCAB, PARAMS)


def test_train_model_stage_saves_a_loadable_model_and_skips_when_unchanged(spark, base_cfg):
    rows, licence, _ = synthetic_stream(docs=40)
    wh = Warehouse(spark, base_cfg.warehouse)
    df = spark.createDataFrame([(i, [int(t) for t in r]) for i, r in enumerate(rows)], "row_id long, tokens array<int>")
    wh.write(df, "token_rows")
    cfg = with_overrides(base_cfg, ["model.names=[trained]", "train_model.hidden_size=32", "train_model.epochs=1",
                                    "train_model.batch_size=16"])
    ctx = StageContext(spark, cfg, wh)
    train_model_stage(ctx)
    out = models_dir(wh.root) / "trained"
    info = json.loads((out / TRAIN_INFO).read_text())
    assert info["params"]["hidden_size"] == 32 and info["windows"] == len(rows) * (rows.shape[1] // 64)
    model = load_model(parse_model_spec("trained", wh.root), device=torch.device("cpu"))
    assert model.config.vocab_size == int(rows.max()) + 1 and model.config.eos_token_id == EOD
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    train_model_stage(ctx)  # same params, same stream version: nothing to do
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    train_model_stage(StageContext(spark, with_overrides(cfg, ["model.names=[EleutherAI/pythia-70m]"]), wh))
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime  # not used by model.names: skipped
