"""The tiny-model trainer memorizes what the stream repeats and not what it says once; stage train_model saves a
model the score stage can load, and skips retraining when nothing changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semmem.errors import ModelError
from semmem.scoring.memorization import score_tokens
from semmem.training.trainer import TrainParams, checkpoint_steps, train_model, windows_from_rows

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


def test_checkpoints_are_taken_at_fractions_of_training(trained):
    assert checkpoint_steps([0.25, 0.5, 1.0, 0.5], 10) == [3, 5, 10]
    rows, _, _ = synthetic_stream()
    saved = {}
    windows = windows_from_rows(rows, PARAMS.context_length)
    params = TrainParams(**{**PARAMS.__dict__, "epochs": 1})
    final, summary = train_model(windows, VOCAB, params, eod_id=EOD, on_checkpoint=(
        [2, summary_steps(windows, params)], lambda step, m, info: saved.update({step: (info, {
            k: v.clone() for k, v in m.state_dict().items()})})))
    assert sorted(saved) == [2, summary["steps"]]
    assert saved[2][0]["step"] == 2 and saved[2][0]["windows_seen"] == 2 * params.batch_size
    last = saved[summary["steps"]][1]
    assert all(torch.equal(last[k], v) for k, v in final.state_dict().items())  # the last checkpoint = the model


def summary_steps(windows, params) -> int:
    from semmem.training.trainer import total_steps

    return total_steps(len(windows), params)
