"""Seeds inside a trial (``seeds: k``, a space's ``budget.seeds``): validation, the names a k-seed trial
reports, the loop against lone trainers (exactly), the batched path against the loop, checkpoints, and
one real search whose MLflow runs hold every seed's values."""

import math
import statistics
import textwrap

import pytest
import torch

from mtlsearch import Trainer, TrialConfig, spaces, tracking
from mtlsearch.benchmarks import cache, get_benchmark
from mtlsearch.errors import ConfigError
from mtlsearch.multiseed import MultiSeedTrainer, build_trainer, combine, loop_reason

from helpers.spaces import SEEDS_SPACE as SPACE

BASE = {"benchmark": "multidigits", "lr": 3e-3, "max_epochs": 2, "device": "cpu", "seed": 3}
GEMTL = {**BASE, "method": "gemtl", "p": 0.5}
RLW = {**BASE, "method": "rlw"}  # draws random weights every step: the seeds' random streams must stay apart


@pytest.fixture(scope="module")
def splits():
    """multidigits' splits, built once for the module and read by every trainer (as a search's cache does)."""
    cfg = TrialConfig.from_dict(BASE)
    return cache.build_splits(get_benchmark(cfg.benchmark), cfg)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("seeds", [1, 2, 16])
def test_a_trial_config_takes_seeds_from_1_to_16(seeds):
    assert TrialConfig.from_dict({**GEMTL, "seeds": seeds}).seeds == seeds
    assert TrialConfig.from_dict(GEMTL).seeds == 1


@pytest.mark.parametrize("seeds", [0, -1, 17, 2.0, "2", True])
def test_a_trial_config_refuses_other_seeds_naming_the_field_and_the_range(seeds):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({**GEMTL, "seeds": seeds})
    assert err.value.field == "seeds"
    assert "from 1 to 16" in str(err.value) or "integer" in str(err.value)


def test_a_lone_trainer_refuses_a_config_of_several_seeds(splits):
    with pytest.raises(ConfigError, match="build_trainer") as err:
        Trainer({**GEMTL, "seeds": 2}, splits=splits)
    assert err.value.field == "seeds"
    assert type(build_trainer(GEMTL, splits=splits)) is Trainer
    assert type(build_trainer({**GEMTL, "seeds": 2}, splits=splits)) is MultiSeedTrainer


def test_budget_seeds_in_a_space_file_and_with_set(tmp_path):
    one = spaces.load_space("imtl", sets=["budget.seeds=1"])
    assert one.seeds == 1 and "seeds" not in one.base_config()  # one seed: trial configs as before
    # The multidigits spaces ship with 3 seeds per trial: the embedded default and the AdaTask and IMTL ones.
    assert [spaces.load_space(name).seeds for name in ("gemtl_p", "adatask", "imtl")] == [3, 3, 3]
    space = spaces.load_space("imtl")
    assert space.seeds == 3 and space.base_config()["seeds"] == 3
    assert all(TrialConfig.from_dict(p).seeds == 3 for p in space.probe_configs())
    assert spaces.load_space("imtl", sets=["budget.seeds=2"]).seeds == 2
    path = tmp_path / "s.yaml"
    path.write_text(space.text.replace("seeds: 3}", "seeds: 2}") + "final: {seeds: [7, 8]}\n")
    space = spaces.load_space(str(path))
    assert space.seeds == 2 and space.final is not None and space.final["seeds"] == [7, 8]  # two different seeds keys


@pytest.mark.parametrize("value", ["0", "17", "1.5", "two", "true", "[2]"])
def test_budget_seeds_refused_with_the_field_and_the_valid_range(value):
    with pytest.raises(ConfigError) as err:
        spaces.load_space("gemtl_p", sets=[f"budget.seeds={value}"])
    assert err.value.field == f"--set budget.seeds={value}"  # the --set that wrote it (issue 25)
    assert "expected an integer from 1 to 16" in str(err.value) and "\n" not in str(err.value)


def test_seeds_is_a_budget_key_not_a_parameter(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(spaces.load_space("gemtl_p").text + "  seeds: 2\n")
    with pytest.raises(ConfigError, match="in budget") as err:
        spaces.load_space(str(path))
    assert err.value.field == "params.seeds"


# ------------------------------------------------------------------------------ what is reported
def test_combine_gives_the_mean_each_seed_and_the_spread_of_val_and_test_metrics():
    a = {"epoch": 1.0, "train/t/loss": 1.0, "weights/t": 0.5, "val/t/acc": 0.25, "test/delta_m": -2.0}
    b = {"epoch": 1.0, "train/t/loss": 3.0, "weights/t": 1.5, "val/t/acc": 0.75, "test/delta_m": 4.0, "val/extra": 9.0}
    out = combine([a, b], [7, 8])
    assert out["epoch"] == 1.0 and out["train/t/loss"] == 2.0 and out["weights/t"] == 1.0
    assert out["val/t/acc"] == 0.5 and out["test/delta_m"] == 1.0
    assert out["seed7/val/t/acc"] == 0.25 and out["seed8/val/t/acc"] == 0.75
    assert out["seed7/test/delta_m"] == -2.0 and out["seed8/test/delta_m"] == 4.0
    assert out["std/test/delta_m"] == pytest.approx(math.sqrt(18.0)) and out["sem/test/delta_m"] == pytest.approx(3.0)
    assert out["std/val/t/acc"] == pytest.approx(statistics.stdev([0.25, 0.75]))
    # Training metrics get no per-seed keys; a metric one seed lacks gets no mean and no spread.
    assert not any(k.startswith("seed") and "/train/" in k for k in out)
    assert out["seed8/val/extra"] == 9.0 and "val/extra" not in out and "std/val/extra" not in out


def test_the_tracking_filter_lets_the_seed_keys_through():
    for key in ("seed0/val/delta_m", "seed12/test/left/accuracy", "std/val/delta_m", "sem/test/delta_m"):
        assert tracking.is_metric(key, 1.0), key
    assert not tracking.is_metric("seedx/val/delta_m", 1.0) and not tracking.is_metric("std/val/delta_m", math.nan)


# ------------------------------------------------------------------------------ the loop, exactly
@pytest.mark.parametrize("cfg", [GEMTL, RLW], ids=["gemtl", "rlw"])
def test_the_loop_reports_exactly_two_lone_trainers_and_their_mean(cfg, splits):
    lone = {s: list(Trainer({**cfg, "seed": s}, splits=splits).run()) for s in (3, 4)}
    multi = MultiSeedTrainer({**cfg, "seeds": 2}, splits=splits, batched=False)
    assert multi.mode == "loop" and multi.seeds == [3, 4]
    results = list(multi.run())
    assert len(results) == 2
    for epoch, result in enumerate(results):
        a, b = lone[3][epoch], lone[4][epoch]
        assert set(a) == set(b)
        for key in a:
            assert result[key] == (a[key] + b[key]) / 2, key
            if key.startswith(("val/", "test/")):
                assert result[f"seed3/{key}"] == a[key] and result[f"seed4/{key}"] == b[key], key
                assert result[f"std/{key}"] == pytest.approx(statistics.stdev([a[key], b[key]]), rel=1e-12, abs=1e-15)
                assert result[f"sem/{key}"] == pytest.approx(result[f"std/{key}"] / math.sqrt(2))
        assert lone[3][epoch]["val/delta_m"] != lone[4][epoch]["val/delta_m"]  # two seeds, two results


# ------------------------------------------------------------------------------ batched against the loop
def _close(batched: dict, loop: dict) -> None:
    assert set(batched) == set(loop)
    for key, value in loop.items():
        # Accuracies count predictions: a rounding difference may flip one of the 1000 (0.001).
        tol = 1.5e-3 if key.endswith("accuracy") else 1e-4
        assert batched[key] == pytest.approx(value, rel=1e-4, abs=tol), key


@pytest.mark.parametrize(
    "cfg",
    [GEMTL, RLW, {**BASE, "method": "ew", "optimizer": "sgd", "lr": 0.002, "lr_step_size": 1, "weight_decay": 1e-4}],
    ids=["gemtl-adam", "rlw-adam", "ew-sgd-schedule"],
)
def test_batched_seeds_give_the_loops_metrics(cfg, splits):
    batched = MultiSeedTrainer({**cfg, "seeds": 2}, splits=splits, batched=True)
    loop = MultiSeedTrainer({**cfg, "seeds": 2}, splits=splits, batched=False)
    assert batched.mode == "batched"
    for b, lo in zip(batched.run(), loop.run(), strict=True):
        _close(b, lo)
    for tb, tl in zip(batched.trainers, loop.trainers):  # each seed's own model is the stacked one's slice
        for (name, pb), pl in zip(tb.model.named_parameters(), tl.model.parameters()):
            assert torch.allclose(pb, pl, rtol=1e-3, atol=1e-5), name


@pytest.mark.parametrize(
    "extra, why",
    [
        ({"method": "uw"}, "learns parameters"),
        ({"method": "imtl_g"}, "gradient-level"),
        ({"method": "ew", "optimizer": "adam_adatask"}, "per-task gradients"),
        ({"method": "ew", "dominance_interval": 1}, "dominance"),
    ],
)
def test_configs_the_batched_path_cannot_take_train_in_the_loop(extra, why, splits):
    multi = MultiSeedTrainer({**BASE, **extra, "seeds": 2}, splits=splits)
    assert multi.mode == "loop" and why in (multi.loop_reason or "")
    assert why in loop_reason(multi.trainers)
    with pytest.raises(ConfigError, match=why):
        MultiSeedTrainer({**BASE, **extra, "seeds": 2}, splits=splits, batched=True)


@pytest.mark.parametrize("batched", [False, True], ids=["loop", "batched"])
def test_a_seed_whose_loss_diverges_ends_the_trial_naming_the_seed(batched, splits):
    from mtlsearch.trainer import NonFiniteLossError

    multi = MultiSeedTrainer({**BASE, "method": "ew", "optimizer": "sgd", "lr": 1.0, "seeds": 2}, splits=splits, batched=batched)
    with pytest.raises(NonFiniteLossError, match=r"^seed 3: .* became non-finite \(nan or inf\) at epoch 1"):
        multi.train_epoch()


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("batched", [False, True], ids=["loop", "batched"])
def test_a_resumed_two_seed_trial_continues_every_seed_exactly(batched, splits, tmp_path):
    cfg = {**RLW, "seeds": 2}
    straight = list(MultiSeedTrainer(cfg, splits=splits, batched=batched).run())
    first = MultiSeedTrainer(cfg, splits=splits, batched=batched)
    before = list(first.run(1))
    first.save(str(tmp_path / "state.pt"))
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["seeds"] == [3, 4] and [s["config"]["seed"] for s in state["trainers"]] == [3, 4]
    assert not torch.equal(state["trainers"][0]["torch_rng"], state["trainers"][1]["torch_rng"])  # each seed's own stream
    resumed = MultiSeedTrainer(cfg, splits=splits, batched=batched)
    resumed.load(str(tmp_path / "state.pt"))
    assert resumed.epoch == 1
    assert before + list(resumed.run()) == straight


def test_a_batched_checkpoint_resumes_in_the_loop_and_bad_checkpoints_are_refused(splits, tmp_path):
    cfg = {**GEMTL, "seeds": 2}
    batched = MultiSeedTrainer(cfg, splits=splits, batched=True)
    list(batched.run(1))
    batched.save(str(tmp_path / "b.pt"))
    loop = MultiSeedTrainer(cfg, splits=splits, batched=False)
    loop.load(str(tmp_path / "b.pt"))
    _close(next(batched.run()), next(loop.run()))
    lone = Trainer(GEMTL, splits=splits)
    lone.save(str(tmp_path / "one.pt"))
    with pytest.raises(ValueError, match="one-seed checkpoint"):
        loop.load(str(tmp_path / "one.pt"))
    with pytest.raises(ValueError, match=r"seeds \[3, 4\].*seeds \[5, 6\]"):
        MultiSeedTrainer({**cfg, "seed": 5}, splits=splits).load(str(tmp_path / "b.pt"))


def test_a_dry_run_says_each_epoch_trains_the_seeds_and_times_them_all(tmp_path, monkeypatch, capsys):
    from mtlsearch.launch import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "seeds.yaml"
    path.write_text(textwrap.dedent(SPACE))
    assert main(["--space", str(path), "--dry-run", "--set", "budget.seeds=2"]) == 0
    out = capsys.readouterr().out
    assert "Epoch budget: 2 trials x 2 epochs = 4 epochs at most (each epoch trains 2 seeds together, budget.seeds)" in out, out
    assert "Estimated time: about " in out and sorted(p.name for p in tmp_path.iterdir()) == ["seeds.yaml"]


# ------------------------------------------------------------------------------ a real search
