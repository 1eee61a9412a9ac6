"""Controlled experiments: a trained family with checkpoints on a planted-duplicate stream (Spark tasks), scored and
forecast against a hand count; memorized bits against a reference model; capacity on random data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semmem.config import ModelShape, load_config, with_overrides
from semmem.errors import ConfigError
from semmem.ingest.tokenizer import saved_tokenizer_path
from semmem.training import capacity as cap
from semmem.scoring.models import models_dir
from semmem.stages.registry import StageContext, run_stages
from semmem.tables import Warehouse
from semmem.taxonomy.stats import memorization_forecast
from tests.corpus import small_tokenizer
from tests.test_train_model import synthetic_stream

FAMILY = ["model.names=[trained]", "train_model.epochs=8", "train_model.batch_size=16",
          "train_model.checkpoints=[0.25, 1.0]",
          "train_model.sizes=[{name: a, hidden_size: 16, num_layers: 1, num_heads: 2}, "
          "{name: b, hidden_size: 64, num_layers: 2, num_heads: 4}]"]


@pytest.fixture(scope="module")
def family(spark, tmp_path_factory):
    """A stream whose every third document opens with the same 96-token licence; its rows' first 64 tokens are the
    sequences; the family of FAMILY trained and scored."""
    from semmem.config import load_config
    from tests.conftest import TEST_OVERRIDES

    root = tmp_path_factory.mktemp("family") / "wh"
    wh = Warehouse(spark, root)
    rows, _, _ = synthetic_stream()
    wh.write(spark.createDataFrame([(i, [int(t) for t in r]) for i, r in enumerate(rows)],
                                   "row_id long, tokens array<int>"), "token_rows")
    wh.write(spark.createDataFrame([(i, [int(t) for t in r[:64]], "", "", None) for i, r in enumerate(rows)],
                                   "sequence_id long, tokens array<int>, text string, prompt_text string, "
                                   "pile_set_name string"), "sequences")
    Path(saved_tokenizer_path(root)).parent.mkdir(parents=True)
    small_tokenizer(Path(saved_tokenizer_path(root)))
    cfg = load_config(None, [*TEST_OVERRIDES, f"warehouse={root}", *FAMILY])
    ctx = StageContext(spark, cfg, wh)
    run_stages(ctx, ["train_model", "score"])
    return ctx, rows


def test_family_exposures_equal_a_brute_force_count_over_the_recorded_order(family):
    """The recorded order trains every 64-token window once per epoch, batch_size windows per step; family_exposures
    counts, per step, the occurrences of each continuation lying wholly inside a window trained at that step."""
    ctx, rows = family
    windows = len(rows) * (rows.shape[1] // 64)
    per_epoch = math.ceil(windows / 16)
    got = {(r.model, r.sequence_id, r.step): r.occurrences for r in ctx.warehouse.read("family_exposures").collect()}
    for model in ("trained-a", "trained-b"):
        order = pd.read_parquet(Path(ctx.warehouse.side_file("model_family", f"model:{model}")) /
                                "training_order.parquet")
        assert sorted(order.groupby(["row_id", "offset"]).size().unique()) == [8]  # 8 epochs, each window once each
        assert set(order.offset) == set(range(0, rows.shape[1] - 63, 64))
        assert order.groupby("step").size().max() == 16 and order.step.max() == 8 * per_epoch - 1
        sequences: dict[tuple, list[int]] = {}  # continuation -> the sequences that have it
        for sid, r in enumerate(rows):
            sequences.setdefault(tuple(r[32:64].tolist()), []).append(sid)
        want: dict = {}
        for w in order.itertuples():
            piece = rows[w.row_id][w.offset:w.offset + 64].tolist()
            for o in range(33):  # every 32-token span wholly inside the trained window
                for sid in sequences.get(tuple(piece[o:o + 32]), []):
                    want[(model, sid, w.step)] = want.get((model, sid, w.step), 0) + 1
        assert want and {k: v for k, v in got.items() if k[0] == model} == want


def memorized_sets(ctx) -> dict[tuple[str, str], set[int]]:
    out: dict[tuple[str, str], set[int]] = {}
    for r in ctx.warehouse.read("memorization").collect():
        out.setdefault((r.model, r.revision), set())
        if r.is_memorized:
            out[(r.model, r.revision)].add(r.sequence_id)
    return out


def test_family_checkpoints_and_table(family):
    ctx, rows = family
    fam = ctx.warehouse.read("model_family").toPandas().sort_values(["model", "step"])
    windows = len(rows) * (rows.shape[1] // 64)
    total = math.ceil(windows / 16) * 8
    assert fam[["model", "revision", "step", "steps"]].values.tolist() == [
        ["trained-a", f"step{math.ceil(total / 4)}", math.ceil(total / 4), total],
        ["trained-a", f"step{total}", total, total],
        ["trained-b", f"step{math.ceil(total / 4)}", math.ceil(total / 4), total],
        ["trained-b", f"step{total}", total, total]]
    a, b = fam.groupby("model")["num_parameters"].first()
    assert b > 2 * a
    for model in ("trained-a", "trained-b"):
        folder = Path(ctx.warehouse.side_file("model_family", f"model:{model}"))  # <models>/<model>/<fingerprint>
        assert folder.parent == Path(models_dir(ctx.warehouse.root)) / model
        saved = sorted(p.name for p in folder.iterdir())
        assert saved == sorted([f"step{math.ceil(total / 4)}", f"step{total}", "semmem_family.json",
                                "training_order.parquet"])
    scored = ctx.warehouse.read("memorization").select("model", "revision").distinct().collect()
    assert {(r.model, r.revision) for r in scored} == set(zip(fam.model, fam.revision))


def test_bigger_and_longer_trained_memorize_a_superset_and_forecast_matches_a_hand_count(family):
    ctx, rows = family
    mem = memorized_sets(ctx)
    steps = sorted({int(r[4:]) for _, r in mem})
    big_final = mem[("trained-b", f"step{steps[-1]}")]
    licence_rows = {i for i, r in enumerate(rows) if (r[:64] == rows[0][:64]).all()}
    assert licence_rows and licence_rows <= big_final  # the planted duplicate is memorized by the end
    for key, got in mem.items():
        assert got <= big_final, key  # smaller and earlier models memorize a subset
    fc = memorization_forecast(ctx.warehouse.read("memorization")).set_index(
        ["model_a", "revision_a", "model_b", "revision_b"])
    for (ma, ra), a in mem.items():
        for (mb, rb), b in mem.items():
            if (ma, ra) == (mb, rb):
                continue
            row = fc.loc[(ma, ra, mb, rb)]
            assert (row.n_memorized_a, row.n_memorized_b, row.n_memorized_both) == (len(a), len(b), len(a & b))
            if a:
                assert row.precision == len(a & b) / len(a)
            if b:
                assert row.recall == len(a & b) / len(b)


def test_checkpoints_score_deterministically(family):
    ctx, _ = family
    before = sorted(tuple(r) for r in ctx.warehouse.read("memorization").collect())
    run_stages(ctx, ["score"])
    assert sorted(tuple(r) for r in ctx.warehouse.read("memorization").collect()) == before


def test_unchanged_family_is_not_retrained_and_a_changed_one_is(family, caplog):
    ctx, _ = family
    folder = Path(ctx.warehouse.side_file("model_family", "model:trained-a"))
    mtime = (folder / "semmem_family.json").stat().st_mtime_ns
    run_stages(ctx, ["train_model"])
    assert (folder / "semmem_family.json").stat().st_mtime_ns == mtime
    changed = StageContext(ctx.spark, with_overrides(ctx.cfg, ["train_model.checkpoints=[1.0]",
                                                               "train_model.sizes=[{name: a, hidden_size: 16, "
                                                               "num_layers: 1, num_heads: 2}]"]), ctx.warehouse)
    run_stages(changed, ["train_model"])
    new = Path(ctx.warehouse.side_file("model_family", "model:trained-a"))
    assert new != folder and new.parent == folder.parent  # trained beside the published version, never over it
    assert len([p for p in new.iterdir() if p.name.startswith("step")]) == 1
    assert folder.is_dir()  # the version published before stays until the next training
    fam = ctx.warehouse.read("model_family").toPandas()
    assert fam.model.tolist() == ["trained-a"]
    with pytest.raises(ConfigError, match="checkpoints"):
        run_stages(StageContext(ctx.spark, with_overrides(ctx.cfg, ["train_model.checkpoints=[0]"]), ctx.warehouse),
                   ["train_model"])
    run_stages(ctx, ["train_model"])  # back to the fixture's family for the other tests


def test_memorized_bits_against_the_smallest_final_model(family):
    ctx, _ = family
    run_stages(StageContext(ctx.spark, with_overrides(ctx.cfg, ["combine.allow_missing=true"]), ctx.warehouse),
               ["combine"])
    mem = ctx.warehouse.read("memorization").toPandas()
    steps = sorted({int(r[4:]) for r in mem.revision})
    ref = mem[(mem.model == "trained-a") & (mem.revision == f"step{steps[-1]}")].set_index("sequence_id")
    got = ctx.warehouse.read("combined").toPandas()
    assert ctx.warehouse.commit_metadata("combined")["reference_model"] == f"trained-a@step{steps[-1]}"
    for r in got.itertuples():
        mine = mem[(mem.model == r.model) & (mem.revision == r.revision) & (mem.sequence_id == r.sequence_id)]
        want = max(0.0, ref.loc[r.sequence_id, "continuation_nll_bits"] - mine.continuation_nll_bits.iloc[0])
        assert r.memorized_bits == pytest.approx(want, abs=1e-9)
    lic = got[(got.model == "trained-b") & (got.revision == f"step{steps[-1]}")]
    assert lic.memorized_bits.max() > 10  # the big model knows the licence far better than the small one


# -------------------------------------------------------------------------------------------------------- capacity
@pytest.fixture
def one_torch_thread():
    """Capacity models are tiny: on a busy 2-core machine one torch thread trains them ~15x faster than two (measured:
    1.0 s against 18 s for test_capacity_small_dataset_is_stored_whole's run), as run_capacity's tasks do."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_capacity_nll_and_bits_against_a_hand_computation(one_torch_thread):
    shape = ModelShape("t", 8, 1, 2)
    data = cap.random_dataset(3, 5, 7, seed=1)
    model = cap.build(shape, 7, 5, seed=1).eval()
    nll = cap.token_nll_bits(model, data, 7)
    with torch.no_grad():
        for i, seq in enumerate(data):
            inp = torch.tensor([[7, *seq[:-1]]])
            logp = torch.log_softmax(model(input_ids=inp).logits[0].double(), dim=-1)
            want = [-float(logp[t, seq[t]]) / math.log(2) for t in range(5)]
            np.testing.assert_allclose(nll[i], want, rtol=1e-5)
    # memorized bits: per sequence max(0, L log2 V - sum NLL)
    hand = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [0.1, 0.1, 0.1, 0.1, 0.1], [9.0, 9.0, 9.0, 9.0, 9.0]])
    cap_bits = 5 * math.log2(7)
    assert cap_bits < 15  # the first sequence costs more than its entropy: it counts 0, not a negative
    assert cap.memorized_bits(hand, 7) == pytest.approx(0.0 + (cap_bits - 0.5) + 0.0)
    # per token: max(0, log2 V - NLL_t) summed; log2 7 = 2.807 > 1, 2 but < 3, 4, 5
    per_tok = (math.log2(7) - 1) + (math.log2(7) - 2) + 5 * (math.log2(7) - 0.1)
    assert cap.memorized_bits_per_token(hand, 7) == pytest.approx(per_tok)


def test_capacity_stopping_rule_on_a_synthetic_loss_curve():
    rng = np.random.default_rng(0)
    t = np.arange(6000)
    curve = 1 + 3 * np.exp(-t / 400) + rng.normal(0, 0.02, len(t))  # 4 bits/token of entropy, down to 1 + noise

    def first_stop(losses, tolerance, entropy=4.0):
        return next((s for s in range(200, len(losses) + 1, 200)
                     if cap.stalled(losses[:s], 200, tolerance, entropy)), None)

    # stops once a window of 200 steps stores < 1% more: 3 exp(-s/400) (1 - exp(-1/2)) < 0.01 (3 - 3 exp(-s/400))
    # -> exp(-s/400) < 0.025 -> s > 1,480 (+ one window: s is the end of the later window)
    stop = first_stop(curve, 0.01)
    assert stop is not None and 1400 <= stop <= 2000
    assert first_stop(curve, 0.001) > stop  # a smaller tolerance trains longer
    assert first_stop(4 - t / 2000, 0.01) is None  # a loss falling steadily never stalls
    # relative to the bits stored, not to the loss: a large N's loss falls by 1% in all, yet it is far from done
    assert first_stop(4 - 0.04 * (1 - np.exp(-t / 4000)), 0.01) is None
    assert not cap.stalled(curve[:300], 200, 0.5, 4.0)  # two whole windows first
    assert not cap.stalled(np.full(400, 4.2), 200, 0.01, 4.0)  # above the entropy, nothing stored yet: no stall


def test_capacity_plateau_detector_on_rising_flat_and_noisy_series():
    assert cap.detect_plateau([100, 200, 400, 800], 0.05) == (None, cap.STILL_RISING)
    assert cap.detect_plateau([100, 500, 1000, 1010, 995], 0.05) == (2, "plateau")
    assert cap.detect_plateau([100, 450, 960, 1000, 930, 985], 0.1) == (2, "plateau")  # noise within 10%
    assert cap.detect_plateau([100, 450, 960, 1000, 930, 985], 0.06)[0] == 4  # within 6%: the last two only
    assert cap.detect_plateau([100, 450, 960, 1000, 930, 985], 0.05) == (None, cap.STILL_RISING)
    assert cap.detect_plateau([100, 900, 1000, 1200], 0.1) == (None, cap.STILL_RISING)
    start, why = cap.detect_plateau([100, 1000, 600], 0.1)
    assert start is None and "falls" in why
    # mark_plateau: unconverged runs left out (said), capacity = plateau mean / params with its spread over seeds
    runs = pd.DataFrame([{"model": "m", "params": 100, "dtype": "float32", "seed": seed, "dataset_sequences": n,
                          "memorized_bits": bits + seed, "bits_per_param": (bits + seed) / 100, "converged": ok,
                          "control_bits": 0.0} for n, bits, ok in [(8, 100, True), (16, 300, True), (32, 310, True),
                                                                    (64, 305, True), (128, 900, False)]
                         for seed in (0, 1)])
    for c in cap.RUN_COLUMNS:
        runs[c] = runs.get(c, 0)
    got = cap.mark_plateau(runs, 0.05)
    assert got[got.in_plateau].dataset_sequences.unique().tolist() == [16, 32, 64]
    assert got.capacity_bits_per_param.iloc[0] == pytest.approx((300 + 310 + 305) / 3 / 100 + 0.005)
    assert got.capacity_bits_per_param_std.iloc[0] == pytest.approx(np.std([3.05, 3.06], ddof=1))
    assert "2 of 10 runs unconverged" in got.capacity_note.iloc[0]
    rising = cap.mark_plateau(runs[runs.dataset_sequences <= 16], 0.05)
    assert rising.capacity_bits_per_param.isna().all() and not rising.in_plateau.any()
    assert cap.plateau(rising).note.iloc[0] == cap.STILL_RISING


def test_capacity_small_dataset_is_stored_whole(one_torch_thread):
    # 4 sequences of 8 tokens over 4 symbols = 64 bits, far below what 3,800 parameters hold. Which sequence follows
    # BOS is not in the prefix: the best a model can do is 1/N each, so it can store N (L log2 V - log2 N) = 56 bits;
    # a run trained until its loss stalls stores nearly all of them
    row = cap.run_one(ModelShape("t", 16, 1, 2), 4, 0, vocab=4, length=8, max_steps=400, window=25,
                      tolerance=0.02, batch_size=4, learning_rate=2e-2, rotary_pct=1.0, dtype="float32",
                      device=torch.device("cpu"))
    assert row["converged"] and row["steps"] < 400 and row["dataset_bits"] == 64
    assert row["memorized_bits"] >= 0.9 * 4 * (8 * 2 - 2)
    assert row["control_bits"] < 0.1 * row["dataset_bits"]


def test_capacity_configs_load_and_refuse_bad_values():
    gpu = load_config(Path(__file__).parents[1] / "conf" / "capacity-gpu.yaml").capacity
    assert (gpu.vocab_size, gpu.sequence_length, gpu.dtypes) == (2048, 64, ["float32", "bfloat16"])
    for bad, key in [("capacity.tolerance=1", "capacity.tolerance"), ("capacity.window=0", "capacity.window"),
                     ("capacity.rotary_pct=0", "capacity.rotary_pct"), ("capacity.dtypes=[]", "capacity.dtypes")]:
        with pytest.raises(ConfigError, match=key):
            load_config(None, [bad])


def test_capacity_stage(spark, base_cfg, one_torch_thread):
    cfg = with_overrides(base_cfg, ["capacity.sizes=[{name: t, hidden_size: 8, num_layers: 1, num_heads: 2}]",
                                    "capacity.dataset_sequences=[4, 16]", "capacity.seeds=[0, 1]",
                                    "capacity.max_steps=30", "capacity.window=10", "capacity.vocab_size=8",
                                    "capacity.sequence_length=6", "capacity.dtypes=[float32]"])
    wh = Warehouse(spark, cfg.warehouse)
    run_stages(StageContext(spark, cfg, wh), ["capacity"])
    got = wh.read("capacity").toPandas().sort_values(["dataset_sequences", "seed"])
    assert got.dataset_sequences.tolist() == [4, 4, 16, 16] and got.seed.tolist() == [0, 1, 0, 1]
    assert (got.dataset_bits == got.dataset_sequences * 6 * 3.0).all()
    np.testing.assert_allclose(got.bits_per_param, got.memorized_bits / got.params)
    again = cap.run_one(ModelShape("t", 8, 1, 2), 4, 0, vocab=8, length=6, max_steps=30, window=10, tolerance=0.002,
                        batch_size=128, learning_rate=1e-2, rotary_pct=1.0, dtype="float32",
                        device=torch.device("cpu"))
    assert again["memorized_bits"] == pytest.approx(got.memorized_bits.iloc[0], rel=1e-4)
    assert again["control_bits"] == pytest.approx(got.control_bits.iloc[0], rel=1e-4)  # float32 sums, threads differ
    assert again["steps"] == got.steps.iloc[0] and list(got.loss_tail.iloc[0]) == pytest.approx(again["loss_tail"])
    assert (got.memorized_bits_per_token >= 0).all() and (got.control_bits >= 0).all()
    assert (got.steps <= 30 + 10).all() and got.converged.dtype == bool
    # whatever the runs reached, each row says its model's capacity or why there is none
    assert got.capacity_note.notna().all() and (got.capacity_bits_per_param.isna() == ~got.in_plateau.any()).all()
    assert (Path(wh.root) / "report" / "capacity.png").is_file()
    assert len(cap.plateau(got)) == 1
