"""Model scoring: the fast path equals generate() on every row, perplexities equal a float64 reference, the stage
writes one partition per model@revision. Tiny random GPT-NeoX models built from a config (no hub)."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from semmem.config import load_config, with_overrides
from semmem.errors import ConfigError, ModelError
from semmem.scoring.memorization import (MEMBERSHIP_FIELDS, matched_prefix_of, perplexities, score_numpy, score_tokens,
                                         teacher_forced)
from semmem.scoring.models import load_model, models_dir, parse_model_spec
from semmem.stages.registry import StageContext
from semmem.stages.scoring import score_stage
from semmem.tables import Warehouse
from tests.reference_scoring import (generate_continuations, membership_reference, memorization_reference,
                                     perplexity_reference)

VOCAB = 128


def tiny_model(seed: int = 0, eos: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, eos_token_id=eos, bos_token_id=eos,
                        pad_token_id=1, initializer_range=0.3)  # peaked logits: no near-ties between top tokens
    return GPTNeoXForCausalLM(cfg).eval()


def set_eos(model, eos: int) -> None:
    model.config.eos_token_id = eos
    model.config.bos_token_id = eos
    model.generation_config.eos_token_id = eos
    model.generation_config.bos_token_id = eos


def rows_with_known_structure(model, seed: int = 1) -> torch.Tensor:
    """Random rows plus rows built from the model's own greedy output: fully memorized, and first mismatch at
    0, 15, 31 and other positions (the truth differs from the greedy token exactly there)."""
    g = torch.Generator().manual_seed(seed)
    eos = model.config.eos_token_id
    prompts = torch.randint(2, VOCAB, (40, 64), generator=g)
    greedy = memorization_reference_tokens(model, prompts)
    rows = [prompts[:10]]  # random continuations (mostly matched_prefix 0)
    full = torch.cat([prompts[10:16, :32], greedy[10:16]], dim=1)
    rows.append(full)  # fully memorized
    for i, j in enumerate([0, 0, 15, 15, 31, 31, 1, 7, 22, 30, 29, 3]):
        r = torch.cat([prompts[16 + i, :32], greedy[16 + i]]).clone()
        r[32 + j] = (r[32 + j] + 1 + i) % (VOCAB - 2) + 2  # any other token
        if r[32 + j] == greedy[16 + i, j] or r[32 + j] == eos:
            r[32 + j] = 2 if greedy[16 + i, j] != 2 else 3
        rows.append(r[None])
    eod_rows = torch.cat([prompts[28:32, :32], greedy[28:32]], dim=1).clone()
    eod_rows[0, 40] = eos  # an EOD in the continuation can never be matched
    eod_rows[1, 32:] = eos
    eod_rows[2, 10] = eos  # EOD in the prompt
    rows.append(eod_rows)
    return torch.cat(rows)


def memorization_reference_tokens(model, tokens):
    return generate_continuations(model, tokens)


@pytest.fixture(scope="module")
def model():
    m = tiny_model()
    # Make EOS suppression matter: EOS := the token the model most often prefers (unmasked) on random rows.
    x = torch.randint(2, VOCAB, (64, 64), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        top = m(input_ids=x).logits[:, 31:63].argmax(-1)
    eos = int(torch.bincount(top.flatten(), minlength=VOCAB).argmax())
    set_eos(m, eos)
    return m


@pytest.fixture(scope="module")
def rows(model):
    return rows_with_known_structure(model)


def test_eos_suppression_is_exercised(model, rows):
    """Without the exclusion the greedy choice would be EOS somewhere: the test rows really test suppression."""
    with torch.no_grad():
        top = model(input_ids=rows).logits[:, 31:63].argmax(-1)
    assert int((top == model.config.eos_token_id).sum()) > 0


def test_full_mode_equals_generate_on_every_row(model, rows):
    ref = memorization_reference(model, rows)
    out = score_tokens(model, rows, mode="full")
    got = [{"memorization_score": float(s), "is_memorized": bool(m), "matched_prefix": int(p)}
           for s, m, p in zip(out["memorization_score"], out["is_memorized"], out["matched_prefix"])]
    assert got == ref
    prefixes = [r["matched_prefix"] for r in ref]
    assert {0, 15, 31, 32} <= set(prefixes)  # the constructed cases are really there
    assert sum(r["is_memorized"] for r in ref) >= 6


def test_flag_mode_gives_prefix_and_flag_without_score(model, rows):
    ref = memorization_reference(model, rows)
    out = score_tokens(model, rows, mode="flag")
    assert out["matched_prefix"].tolist() == [r["matched_prefix"] for r in ref]
    assert out["is_memorized"].tolist() == [r["is_memorized"] for r in ref]
    assert torch.isnan(out["memorization_score"]).all()


def test_micro_batches_and_row_order_do_not_change_results(model, rows):
    whole = score_numpy(model, rows.numpy(), batch_size=len(rows), device=torch.device("cpu"), mode="full")
    perm = np.random.default_rng(0).permutation(len(rows))
    small = score_numpy(model, rows.numpy()[perm], batch_size=5, device=torch.device("cpu"), mode="full")
    for k in ("memorization_score", "is_memorized", "matched_prefix"):
        np.testing.assert_array_equal(small[k], whole[k][perm])
    np.testing.assert_allclose(small["sequence_perplexity"], whole["sequence_perplexity"][perm], rtol=1e-5)
    assert small["matched_prefix"].dtype == np.int32 and small["is_memorized"].dtype == bool


@pytest.mark.parametrize("upstream", [False, True])
def test_perplexities_equal_float64_reference(model, rows, upstream):
    eod = model.config.eos_token_id
    extra = torch.full((1, 64), eod)  # all EOD: upstream N <= 0 -> NaN
    tokens = torch.cat([rows, extra])
    ref = perplexity_reference(model, tokens, upstream=upstream, eod_id=eod)
    out = score_tokens(model, tokens, mode="flag", upstream_perplexity=upstream, eod_id=eod)
    got = list(zip(out["prompt_perplexity"].tolist(), out["generation_perplexity"].tolist(),
                   out["sequence_perplexity"].tolist()))
    for g, r in zip(got, ref):
        for a, b in zip(g, r):
            if math.isnan(b):
                assert math.isnan(a)
            else:
                assert a == pytest.approx(b, rel=1e-5)
    if upstream:  # the upstream bug: every part divided by N, so sequence = prompt * generation
        p, g_, s = got[0]
        assert s == pytest.approx(p * g_, rel=1e-9)
        assert math.isnan(got[-1][0])


def test_matched_prefix_and_upstream_counts():
    pred = torch.tensor([[1] * 32, [2] + [1] * 31, [1] * 15 + [2] + [1] * 16, [1] * 31 + [2]])
    truth = torch.ones(4, 32, dtype=torch.long)
    assert matched_prefix_of(pred, truth).tolist() == [32, 0, 15, 31]
    nll = torch.ones(2, 63)
    tokens = torch.tensor([[5] * 64, [5] * 60 + [0] * 4])
    p, g, s = perplexities(nll, tokens, upstream=True, eod_id=0)
    # row 0: N = 63, m = 31 -> prompt exp(31/63), generation exp(32/63); row 1: N = 59, m = 29
    assert p.tolist() == pytest.approx([math.exp(31 / 63), math.exp(29 / 59)])
    assert g.tolist() == pytest.approx([math.exp(32 / 63), math.exp(30 / 59)])
    assert s.tolist() == pytest.approx([math.e, math.e])


CONTEXTS = (1, 8, 16, 24, 32)


@pytest.fixture(scope="module")
def graded_rows(model, rows):
    """The fixture's rows, plus rows whose continuation is the model's greedy output from the 8, 16 or 24 tokens
    before it: memorized at that k, seldom at 32; the last of each four differs from it at continuation token 10
    (past memorized_at_context's screen of 4 tokens)."""
    extra = torch.randint(2, VOCAB, (12, 64), generator=torch.Generator().manual_seed(3))
    for i, k in enumerate((8, 16, 24)):
        part = extra[4 * i:4 * i + 4]
        part[:, 32:] = generate_continuations(model, part[:, 32 - k:], prompt_length=k)
        part[3, 42] = part[3, 42] % (VOCAB - 2) + 2 if part[3, 42] != VOCAB - 1 else 2  # any other token
    return torch.cat([rows, extra])


def test_memorized_at_k_equals_generate_from_the_k_token_prompt(model, graded_rows):
    out = score_tokens(model, graded_rows, mode="flag", context_lengths=CONTEXTS)
    for k in CONTEXTS:  # generate() from tokens [32 - k, 32), EOS suppressed, against the continuation [32, 64)
        ref = [r["is_memorized"] for r in memorization_reference(model, graded_rows[:, 32 - k:], prompt_length=k)]
        assert out[f"memorized_at_{k}"].tolist() == ref, k
    at = {k: out[f"memorized_at_{k}"] for k in CONTEXTS}
    assert torch.equal(at[32], out["is_memorized"])
    for i, k in enumerate((8, 16, 24)):  # the constructed rows are there: memorized at k and not at 32, and the
        assert bool((at[k] & ~at[32]).any()) and bool((at[32] & ~at[k]).any()), k  # other way round
        assert not at[k][-12 + 4 * i + 3]


def test_membership_scores_equal_float64_reference(model, graded_rows):
    ref = membership_reference(model, graded_rows, fraction=0.2)
    out = score_tokens(model, graded_rows, mode="flag", membership=True, min_k_fraction=0.2)
    for f in MEMBERSHIP_FIELDS:
        np.testing.assert_allclose(out[f].numpy(), [r[f] for r in ref], rtol=1e-5, atol=1e-6, err_msg=f)
    # micro-batches: same numbers, numpy dtypes for predict_batch_udf
    small = score_numpy(model, graded_rows.numpy(), batch_size=7, device=torch.device("cpu"), mode="flag",
                        membership=True, context_lengths=(8, 32))
    np.testing.assert_allclose(small["min_k_plus_plus"], out["min_k_plus_plus"].numpy(), rtol=1e-5)
    assert small["memorized_at_8"].dtype == bool and small["loss"].dtype == np.float64


@pytest.mark.parametrize("lengths", ["[0, 8]", "[8, 33]", "[8, 8]", "[]"])
def test_context_lengths_outside_1_to_32_are_refused_at_load(lengths):
    with pytest.raises(ConfigError, match=r"^config key score.context_lengths = .*expected .*1\.\.32") as e:
        load_config(None, [f"score.context_lengths={lengths}"])
    assert "\n" not in str(e.value)


def test_teacher_forced_argmax_excludes_eos(model, rows):
    fwd = teacher_forced(model, rows, exclude_ids=[model.config.eos_token_id], keep_cache=False)
    assert not bool((fwd.pred == model.config.eos_token_id).any())


# ------------------------------------------------------------------------------------------------ model specs
def test_model_spec_forms(tmp_path):
    s = parse_model_spec("EleutherAI/pythia-1b-deduped@step143000")
    assert (s.model, s.revision, s.source, s.is_local) == ("EleutherAI/pythia-1b-deduped", "step143000",
                                                            "EleutherAI/pythia-1b-deduped", False)
    assert parse_model_spec("EleutherAI/pythia-70m").revision == "main"
    local = tmp_path / "m"
    local.mkdir()
    s = parse_model_spec(str(local))
    assert (s.model, s.revision, s.source, s.is_local) == (str(local), "local", str(local), True)
    checkpoint = Path(models_dir(tmp_path / "wh")) / "trained-s" / "step10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    s = parse_model_spec("trained-s@step10", tmp_path / "wh")
    assert (s.model, s.revision, s.source, s.is_local) == ("trained-s", "step10", str(checkpoint), True)
    with pytest.raises(ModelError, match="semmem train-model"):
        parse_model_spec("trained-s@step11", tmp_path / "wh")
    with pytest.raises(ModelError, match="semmem train-model"):
        parse_model_spec("trained", tmp_path / "other")
    with pytest.raises(ModelError, match="malformed"):
        parse_model_spec("EleutherAI/pythia-70m@")


def test_offline_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match=r"huggingface-cli download EleutherAI/pythia-14m --revision step1.*HF_HOME"):
        load_model(parse_model_spec("EleutherAI/pythia-14m@step1"), device=torch.device("cpu"))
    with pytest.raises(ModelError, match="config.json and weights"):
        load_model(parse_model_spec(str(tmp_path)), device=torch.device("cpu"))


def test_load_model_round_trip(model, rows, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(parse_model_spec(str(tmp_path / "m")), device=torch.device("cpu"), dtype="float32")
    assert loaded.config.eos_token_id == model.config.eos_token_id
    a = score_tokens(model, rows)
    b = score_tokens(loaded, rows)
    assert a["matched_prefix"].tolist() == b["matched_prefix"].tolist()
    assert a["memorization_score"].tolist() == b["memorization_score"].tolist()


# ------------------------------------------------------------------------------------------------- the stage
def _text(i: int) -> str:
    return f"row {i}: " + "ab" * i + "é"


def _sequences_df(spark, tokens: torch.Tensor):
    data = [(i * 7 + 3, [int(t) for t in row], _text(i), "", "x") for i, row in enumerate(tokens)]
    return spark.createDataFrame(data, "sequence_id long, tokens array<int>, text string, prompt_text string, "
                                       "pile_set_name string")


def test_score_stage_matches_reference_and_overwrites_one_partition(spark, base_cfg, tmp_path, model, rows):
    wh = Warehouse(spark, base_cfg.warehouse)
    wh.write(_sequences_df(spark, rows), "sequences")
    path_a = tmp_path / "model_a"
    model.save_pretrained(path_a)
    other = tiny_model(seed=5, eos=model.config.eos_token_id)
    other.save_pretrained(Path(models_dir(wh.root)) / "mine")
    cfg = with_overrides(base_cfg, [f"model.names=[{path_a}, mine]", "score.batch_size=8",
                                    "score.context_lengths=[8, 32]"])
    score_stage(StageContext(spark, cfg, wh))

    got = {(r.model, r.sequence_id): r for r in wh.read("memorization").collect()}
    assert len(got) == 2 * len(rows)
    for name, m in ((str(path_a), model), ("mine", other)):
        ref = memorization_reference(m, rows)
        ppl = perplexity_reference(m, rows)
        member = membership_reference(m, rows)
        at_8 = score_tokens(m, rows, mode="flag", context_lengths=(8,))["memorized_at_8"].tolist()  # tested above
        for i, (r, (pp, gp, sp)) in enumerate(zip(ref, ppl)):
            row = got[(name, i * 7 + 3)]
            assert row.revision == "local"
            assert (row.memorization_score, row.is_memorized, row.matched_prefix) == \
                (r["memorization_score"], r["is_memorized"], r["matched_prefix"])
            assert (row.prompt_perplexity, row.generation_perplexity, row.sequence_perplexity) == \
                pytest.approx((pp, gp, sp), rel=1e-5)
            # -log2 P of the 32 continuation tokens = 32 * ln(generation perplexity) / ln 2
            assert row.continuation_nll_bits == pytest.approx(32 * math.log(gp) / math.log(2), rel=1e-5)
            assert dict(row.memorized_at) == {8: at_8[i], 32: r["is_memorized"]}
            assert (row.loss, row.min_k_prob, row.min_k_plus_plus) == pytest.approx(
                (member[i]["loss"], member[i]["min_k_prob"], member[i]["min_k_plus_plus"]), rel=1e-5, abs=1e-6)
            assert row.zlib_ratio == pytest.approx(row.loss / len(zlib.compress(_text(i).encode("utf-8"))))

    # Re-running model A in flag mode replaces only A's partition.
    before_b = sorted((r.sequence_id, r.memorization_score) for r in wh.read("memorization").collect()
                      if r.model == "mine")
    score_stage(StageContext(spark, with_overrides(cfg, [f"model.names=[{path_a}]", "score.mode=flag"]), wh))
    after = wh.read("memorization").collect()
    assert len(after) == 2 * len(rows)
    assert all(r.memorization_score is None for r in after if r.model == str(path_a))
    assert sorted((r.sequence_id, r.memorization_score) for r in after if r.model == "mine") == before_b


def test_score_stage_needs_model_names(spark, base_cfg):
    wh = Warehouse(spark, base_cfg.warehouse)
    with pytest.raises(ConfigError, match="model.names is empty"):
        score_stage(StageContext(spark, base_cfg, wh))


# --------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_agrees_with_cpu(model, rows, dtype):
    cpu = score_tokens(model, rows, mode="full")
    gpu_model = tiny_model()
    gpu_model.load_state_dict(model.state_dict())
    set_eos(gpu_model, model.config.eos_token_id)
    gpu_model = gpu_model.to("cuda", dtype=dtype)
    gpu = {k: v.cpu() for k, v in score_tokens(gpu_model, rows.cuda(), mode="full").items()}
    if dtype == torch.float32:  # same numbers up to kernel rounding: identical greedy choices
        assert gpu["matched_prefix"].tolist() == cpu["matched_prefix"].tolist()
        assert gpu["memorization_score"].tolist() == cpu["memorization_score"].tolist()
        rtol = 1e-4
    else:  # bf16 can flip near-ties; nearly all rows agree, perplexities within bf16 precision
        agree = (gpu["matched_prefix"] == cpu["matched_prefix"]).float().mean()
        assert agree >= 0.9
        rtol = 5e-2
    for k in ("prompt_perplexity", "generation_perplexity", "sequence_perplexity"):
        torch.testing.assert_close(gpu[k], cpu[k], rtol=rtol, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_fast_path_equals_generate_in_the_same_dtype(model, rows, dtype):
    """On the GPU, in fp16 (the default) and bf16: the fast path against upstream's generate(use_cache=False) with
    the same weights in the same dtype, row by row. The two compute the same argmaxes in different orders (one
    teacher-forced pass + KV cache vs a full recompute per step), so a near-tie may flip: at most 5% of rows may
    differ, and the agreement is printed."""
    gpu_model = tiny_model()
    gpu_model.load_state_dict(model.state_dict())
    set_eos(gpu_model, model.config.eos_token_id)
    gpu_model = gpu_model.to("cuda", dtype=dtype).eval()
    ref = memorization_reference(gpu_model, rows.cuda(), use_cache=False)
    out = score_tokens(gpu_model, rows.cuda(), mode="full")
    got = [{"memorization_score": float(s), "is_memorized": bool(m), "matched_prefix": int(p)}
           for s, m, p in zip(out["memorization_score"].cpu(), out["is_memorized"].cpu(), out["matched_prefix"].cpu())]
    same = sum(g == r for g, r in zip(got, ref)) / len(ref)
    print(f"{dtype}: {same:.4f} of {len(ref)} rows identical to generate(use_cache=False)")
    assert same >= 0.95


def test_auto_dtype_is_fp16_on_a_gpu_and_fp32_on_cpu():
    from semmem.scoring.models import pick_dtype

    assert pick_dtype("auto", torch.device("cuda", 0)) is torch.float16  # upstream's .half()
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype("bfloat16", torch.device("cuda", 0)) is torch.bfloat16
    with pytest.raises(ModelError, match="model.dtype = 'half'"):
        pick_dtype("half", torch.device("cpu"))
