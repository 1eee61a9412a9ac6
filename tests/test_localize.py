"""Where in the model (stage localize): layer rewinding on a planted one-layer difference, per-sequence gradient
norms against a hand computation with torch.autograd, the gradient shares' interval from its definition, and the
bad inputs (single checkpoint, rewind_to not earlier, different shapes, unknown layouts)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from semmem.config import load_config
from semmem.errors import ConfigError, ModelError
from semmem.scoring.localization import (gradient_norms, gradient_shares, layer_blocks, rewind_weights,
                                         rewound_memorized)
from semmem.scoring.models import ModelSpec
from semmem.stages.localize import rewinding_plans
from tests.reference_scoring import memorization_reference

VOCAB = 64


def neox(layers: int = 3, hidden: int = 32, seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=64, eos_token_id=0, bos_token_id=0)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def reciter():
    """A 3-layer model trained until it recites 4 random 64-token sequences, and those sequences."""
    tokens = torch.randint(1, VOCAB, (4, 64), generator=torch.Generator().manual_seed(3))
    model = neox().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model(input_ids=tokens, labels=tokens).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert all(r["is_memorized"] for r in memorization_reference(model, tokens))
    return model, tokens


def planted(model: GPTNeoXForCausalLM) -> GPTNeoXForCausalLM:
    """A copy of `model` that differs in layer 1's MLP only (large random weights there)."""
    other = neox()
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in other.gpt_neox.layers[1].mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return other


def test_rewinding_the_planted_layer_loses_the_memorized_and_no_other_block_does(reciter):
    model, tokens = reciter
    before = {k: v.clone() for k, v in model.state_dict().items()}
    earlier = planted(model)
    blocks = layer_blocks(model)
    assert [(b.layer, b.block) for b in blocks] == [(i, b) for i in range(3) for b in ("layer", "attention", "mlp")]
    flags = rewound_memorized(model, rewind_weights(model, earlier, blocks), tokens.numpy(), blocks, batch_size=3,
                              device=torch.device("cpu"))
    for b, still in flags.items():
        if (b.layer, b.block) in ((1, "layer"), (1, "mlp")):
            assert not still.any(), b  # the planted difference: every memorized sequence lost
        else:
            assert still.all(), b  # identical weights: nothing changes
    # the flags are memorization by its definition (greedy generate()) of the model with that block swapped
    swapped = neox()
    swapped.load_state_dict(model.state_dict())
    swapped.gpt_neox.layers[1].mlp.load_state_dict(earlier.gpt_neox.layers[1].mlp.state_dict())
    mlp = next(b for b in blocks if (b.layer, b.block) == (1, "mlp"))
    assert flags[mlp].tolist() == [r["is_memorized"] for r in memorization_reference(swapped, tokens)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights restored


def test_gradient_norms_equal_a_hand_computation_with_autograd(reciter):
    model, tokens = reciter
    rows = torch.cat([tokens[:2], torch.randint(1, VOCAB, (1, 64), generator=torch.Generator().manual_seed(4))])
    blocks = layer_blocks(model)
    got = gradient_norms(model, rows.numpy(), blocks, device=torch.device("cpu"))
    for i, row in enumerate(rows):
        logp = torch.log_softmax(model(input_ids=row[None]).logits[0].double(), dim=-1)
        loss = -logp[31:63].gather(1, row[32:, None]).mean()  # mean NLL of the 32 continuation tokens
        for j, b in enumerate(blocks):
            module = model.gpt_neox.layers[b.layer]
            module = module if b.block == "layer" else getattr(module, b.block)
            params = list(module.parameters())
            grads = torch.autograd.grad(loss, params, retain_graph=True)
            want = float(torch.sqrt(sum(g.double().square().sum() for g in grads)))
            assert got[i, j] == pytest.approx(want, rel=1e-4), (i, b)
    assert got[2].sum() > got[0].sum()  # a sequence it never saw pulls harder than a recited one
    assert all(p.requires_grad for p in model.parameters())  # left as found


def test_gradient_shares_and_their_interval_from_per_sequence_norms():
    rng = np.random.default_rng(0)
    norms = {True: rng.gamma(2.0, 1.0, 7), False: rng.gamma(2.0, 3.0, 11)}
    sums = pd.DataFrame([{"model": "m", "layer": 0, "block": "mlp", "category": "recitation", "memorized": k,
                          "norm_sum": v.sum(), "norm_sq_sum": np.square(v).sum(), "n": len(v)}
                         for k, v in norms.items()])
    got = gradient_shares(sums, 0.95).set_index("memorized")
    s, o = norms[True].sum(), norms[False].sum()
    assert got.loc[True, "share"] == pytest.approx(s / (s + o))
    assert got["share"].sum() == pytest.approx(1.0)
    assert got.loc[True, "mean_norm"] == pytest.approx(norms[True].mean())
    var_s, var_o = len(norms[True]) * norms[True].var(ddof=1), len(norms[False]) * norms[False].var(ddof=1)
    sd = np.sqrt((o ** 2 * var_s + s ** 2 * var_o) / (s + o) ** 4)
    assert (got.loc[True, "ci_low"], got.loc[True, "ci_high"]) == pytest.approx((s / (s + o) - 1.959964 * sd,
                                                                                 s / (s + o) + 1.959964 * sd))
    alone = gradient_shares(sums[sums["memorized"]], 0.95)  # no other group: share 1, no interval
    assert alone["share"].tolist() == [1.0] and alone["ci_low"].isna().all()


def test_unknown_layouts_and_other_shapes_are_model_errors(reciter):
    with pytest.raises(ModelError, match="cannot find the transformer layers of Linear"):
        layer_blocks(torch.nn.Linear(2, 2))
    model, _ = reciter
    with pytest.raises(ModelError, match="cannot rewind gpt_neox.layers.0.*one architecture"):
        rewind_weights(model, neox(hidden=16), layer_blocks(model))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Saved checkpoints step1, step2, step3 of one shape and step4 of another: {revision: folder}."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for step, hidden in ((1, 32), (2, 32), (3, 32), (4, 16)):
        neox(layers=2, hidden=hidden).save_pretrained(root / f"step{step}")
        out[f"step{step}"] = str(root / f"step{step}")
    return out


def specs(checkpoints, model: str, revisions: list[str]) -> list[ModelSpec]:
    return [ModelSpec(model, r, checkpoints[r], True) for r in revisions]


def config(**localize):
    return load_config(None, [f"localize.{k}={v}" for k, v in localize.items()] +
                       ["model.names=[trained]", "train_model.name=trained"])


def test_plans_rewind_the_final_checkpoint_to_the_first_or_a_named_one(checkpoints):
    plans = rewinding_plans(config(), specs(checkpoints, "trained-l", ["step3", "step1", "step2"]))
    p = plans["trained-l"]
    assert (p.final.revision, p.earlier.revision, p.layers) == ("step3", "step1", 2)
    p = rewinding_plans(config(rewind_to="step2"), specs(checkpoints, "trained-l", ["step1", "step2", "step3"]))
    assert p["trained-l"].earlier.revision == "step2"
    other = rewinding_plans(config(models="[mine]"), specs(checkpoints, "mine", ["step1", "step2"]))
    assert list(other) == ["mine"]


def test_plans_refuse_bad_inputs_in_one_line(checkpoints, caplog):
    with caplog.at_level(logging.WARNING):
        assert rewinding_plans(config(), specs(checkpoints, "trained-s", ["step1"])) == {}
    assert "trained-s has a single scored checkpoint (step1): nothing to rewind to; skipped" in caplog.text
    with pytest.raises(ConfigError, match="rewind_to = step3 is not earlier than trained-l's final checkpoint step3"):
        rewinding_plans(config(rewind_to="step3"), specs(checkpoints, "trained-l", ["step1", "step3"]))
    with pytest.raises(ConfigError, match="rewind_to = step9 is not earlier"):
        rewinding_plans(config(rewind_to="step9"), specs(checkpoints, "trained-l", ["step1", "step3"]))
    with pytest.raises(ConfigError, match="trained-l is not scored at that checkpoint"):
        rewinding_plans(config(rewind_to="step2"), specs(checkpoints, "trained-l", ["step1", "step3"]))
    with pytest.raises(ConfigError, match="localize.models names 'other', which model.names does not score"):
        rewinding_plans(config(models="[other]"), specs(checkpoints, "trained-l", ["step1", "step3"]))
    with pytest.raises(ModelError, match=r"different shapes \(hidden_size 16 vs 32\)"):
        rewinding_plans(config(), specs(checkpoints, "trained-l", ["step1", "step4"]))
    with pytest.raises(ConfigError, match="localize.rewind_to = 'last'; expected first"):
        config(rewind_to="last")
