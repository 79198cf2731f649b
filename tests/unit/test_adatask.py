"""AdaTask optimizers (Yang et al., AAAI 2023) and the task-dominance (AU) metric: defining properties."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from mtlsearch.balancing import METHODS, GradBalancing, GradResult
from mtlsearch.config import TrialConfig
from mtlsearch.dominance import DominanceTracker, table_from_metrics
from mtlsearch.dominance.heatmap import draw_heatmaps
from mtlsearch.errors import ConfigError
from mtlsearch.optim import ADATASK_OPTIMIZERS, BASE_OPTIMIZERS, OPTIMIZERS, AdagradAdaTask, AdamAdaTask, RMSpropAdaTask, build_optimizer
from mtlsearch.trainer import Trainer

VARIANTS = {
    "adam": (AdamAdaTask, torch.optim.Adam, {"lr": 1e-2}),
    "rmsprop": (RMSpropAdaTask, torch.optim.RMSprop, {"lr": 1e-2}),
    "adagrad": (AdagradAdaTask, torch.optim.Adagrad, {"lr": 1e-1, "lr_decay": 0.05}),
}
SHAPES = [(5, 3), (3,), (2, 2, 2)]
HEAD_SHAPES = [(4, 2), (2,)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: one intra-op thread is faster and far less noisy on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_params(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).requires_grad_(True) for s in shapes]


def clone(params):
    return [p.detach().clone().requires_grad_(True) for p in params]


def random_grads(num_tasks, steps, seed, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(num_tasks, *s, generator=g) for s in shapes] for _ in range(steps)]


# ---------------------------------------------------------------------------- the optimizers
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [None, 4])  # 4: CPU foreach batches cutting parameters into blocks
def test_one_task_is_the_torch_optimizer(variant, weight_decay, chunk):
    cls, base, kw = VARIANTS[variant]
    shared, heads = make_params(SHAPES, 0), make_params(HEAD_SHAPES, 1)
    ref_shared, ref_heads = clone(shared), clone(heads)
    ours = cls(shared, heads, num_tasks=1, weight_decay=weight_decay, **kw)
    ours.cpu_chunk_numel = chunk
    ref = base([*ref_shared, *ref_heads], weight_decay=weight_decay, **kw)
    g = torch.Generator().manual_seed(2)
    for _ in range(6):
        task_grads = [torch.randn(1, *s, generator=g) for s in SHAPES]
        head_grads = [torch.randn(*s, generator=g) for s in HEAD_SHAPES]
        for p, hg in zip(heads, head_grads):
            p.grad = hg.clone()
        for p, tg in zip(ref_shared, task_grads):
            p.grad = tg[0].clone()
        for p, hg in zip(ref_heads, head_grads):
            p.grad = hg.clone()
        ours.step(task_grads=task_grads)
        ref.step()
    for a, b in zip([*shared, *heads], [*ref_shared, *ref_heads]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shared_step_is_the_sum_of_independent_base_optimizers(variant):
    cls, base, kw = VARIANTS[variant]
    num_tasks = 3
    shared = make_params(SHAPES, 0)
    start = [p.detach().clone() for p in shared]
    ours = cls(shared, num_tasks=num_tasks, **kw)
    ours.cpu_chunk_numel = 16  # several foreach chunks (the other tests run one)
    copies = [clone(shared) for _ in range(num_tasks)]  # task k's own base optimizer on its own copy
    refs = [base(c, **kw) for c in copies]
    for step, grads in enumerate(random_grads(num_tasks, 5, seed=3)):
        if step == 2:
            grads[1] = None  # no task reached this parameter: a zero gradient from every task
            grads[0][2].zero_()  # task 2 gave no gradient for parameter 0
        ours.step(task_grads=grads)
        for k in range(num_tasks):
            for i, p in enumerate(copies[k]):
                p.grad = torch.zeros_like(p) if grads[i] is None else grads[i][k].clone()
            refs[k].step()
    for i, p in enumerate(shared):
        summed = sum(copies[k][i].detach() - start[i] for k in range(num_tasks))
        torch.testing.assert_close(p.detach() - start[i], summed, rtol=1e-5, atol=1e-6)
    # The state keeps one set of accumulators per task, as [T, *p.shape]; one step counter per parameter.
    state = ours.state[shared[0]]
    assert float(state["step"]) == 5
    for name in ours.accumulators:
        assert state[name].shape == (num_tasks, *SHAPES[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_rescaling_one_task_leaves_the_shared_step_unchanged(variant):
    cls, base, kw = VARIANTS[variant]
    num_tasks, c = 3, 1e3
    grads = random_grads(num_tasks, 5, seed=4)
    scaled = [[g * torch.tensor([c, 1.0, 1.0]).view(-1, *[1] * (g.dim() - 1)) for g in step] for step in grads]

    def run(seq, adatask):
        params = make_params(SHAPES, 0)
        if adatask:
            opt = cls(params, num_tasks=num_tasks, **kw)
        else:  # the base optimizer on the summed gradient, for contrast
            opt = base(params, **kw)
        for step in seq:
            if adatask:
                opt.step(task_grads=step)
            else:
                for p, g in zip(params, step):
                    p.grad = g.sum(0)
                opt.step()
        return torch.cat([p.detach().flatten() for p in params])

    torch.testing.assert_close(run(grads, True), run(scaled, True), rtol=1e-5, atol=1e-6)
    # ... whereas the base optimizer on the summed gradient lets the scaled task take over.
    assert (run(grads, False) - run(scaled, False)).abs().max() > 1e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip(variant):
    cls, _, kw = VARIANTS[variant]
    grads = random_grads(2, 6, seed=5)
    head_grads = random_grads(1, 6, seed=6, shapes=HEAD_SHAPES)
    shared, heads = make_params(SHAPES, 0), make_params(HEAD_SHAPES, 1)
    opt = cls(shared, heads, num_tasks=2, weight_decay=0.01, **kw)

    def step(o, hs, k):
        for p, g in zip(hs, head_grads[k]):
            p.grad = g[0].clone()
        o.step(task_grads=grads[k])

    for k in range(3):
        step(opt, heads, k)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    shared2, heads2 = clone(shared), clone(heads)
    opt2 = cls(shared2, heads2, num_tasks=2, **kw)  # hyperparameters come back from the state dict
    buffer.seek(0)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt2.param_groups[0]["weight_decay"] == 0.01
    for k in range(3, 6):
        step(opt, heads, k)
        step(opt2, heads2, k)
    for a, b in zip([*shared, *heads], [*shared2, *heads2]):
        assert torch.equal(a, b)
    assert opt.state[heads[0]][next(iter(cls.accumulators))].shape == HEAD_SHAPES[0]  # heads: torch's layout


def test_bad_task_grads_are_refused():
    shared = make_params(SHAPES, 0)
    opt = AdamAdaTask(shared, num_tasks=2)
    with pytest.raises(ValueError, match="needs task_grads"):
        opt.step()
    with pytest.raises(ValueError, match=r"task_grads\[0\] has shape"):
        opt.step(task_grads=[torch.zeros(3, *s) for s in SHAPES])
    with pytest.raises(ValueError, match="for 3 shared parameters"):
        opt.step(task_grads=[torch.zeros(2, *SHAPES[0])])


def test_registered_under_their_names():
    shared, heads = make_params(SHAPES, 0), make_params(HEAD_SHAPES, 1)
    for name, cls in (("adam_adatask", AdamAdaTask), ("rmsprop_adatask", RMSpropAdaTask), ("adagrad_adatask", AdagradAdaTask)):
        assert name in ADATASK_OPTIMIZERS
        opt = build_optimizer(name, shared, heads, lr=0.5, weight_decay=0.0, num_tasks=3)
        assert isinstance(opt, cls) and opt.num_tasks == 3 and opt.param_groups[0]["lr"] == 0.5


def test_both_registries_call_their_factories_in_one_signature():
    """A factory of either registry takes (shared, specific, *, lr, weight_decay, num_tasks, fused) and
    builds an optimizer over every parameter with these settings."""
    shared, heads = make_params(SHAPES, 0), make_params(HEAD_SHAPES, 1)
    for registry in (BASE_OPTIMIZERS, ADATASK_OPTIMIZERS):
        for name, factory in registry.items():
            opt = factory(shared, heads, lr=0.25, weight_decay=0.01, num_tasks=3, fused=False)
            held = [p for group in opt.param_groups for p in group["params"]]
            assert sorted(map(id, held)) == sorted(map(id, shared + heads)), name
            assert {(g["lr"], g["weight_decay"]) for g in opt.param_groups} == {(0.25, 0.01)}, name
            assert callable(opt.step_tasks), name


# ---------------------------------------------------------------------------- task dominance
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_splits_its_own_step_over_the_tasks(name):
    """Every optimizer by name owns its update rule's per-task shares: ``step_tasks(shares=True)``
    takes the same step as without shares (torch's, on the summed gradient, for a base optimizer),
    and the shares sum to it."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    twin = copy.deepcopy(model)
    shared, twin_shared = list(model.parameters()), list(twin.parameters())
    opt = build_optimizer(name, shared, [], lr=1e-2, weight_decay=0.0, num_tasks=3)
    plain = build_optimizer(name, twin_shared, [], lr=1e-2, weight_decay=0.0, num_tasks=3)
    tracker = DominanceTracker(model, shared, ["a", "b", "c"], beta=0.5)
    assert tracker.layers == ["0", "2"]
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        task_grads = [torch.randn(3, *p.shape, generator=g) * torch.tensor([1.0, 10.0, 100.0]).view(3, *[1] * p.dim()) for p in shared]
        before = [p.detach().clone() for p in shared]
        opt.zero_grad(set_to_none=True)
        shares = opt.step_tasks(task_grads, shares=True)
        if name in ADATASK_OPTIMIZERS:
            assert plain.step_tasks([t.clone() for t in task_grads]) is None
        else:
            for p, tg in zip(twin_shared, task_grads):
                p.grad = tg.sum(0)
            plain.step()  # torch's own step
        tracker.update(shares)
        for p, q, b, u in zip(shared, twin_shared, before, shares):
            assert torch.equal(p, q)
            assert u.shape == (3, *p.shape)
            torch.testing.assert_close(u.sum(0), p.detach() - b, rtol=1e-4, atol=1e-7)
    rau = tracker.relative()
    for layer in rau.values():
        assert math.isclose(sum(layer.values()), 1.0, rel_tol=1e-9)


def synthetic(optimizer, **extra):
    return {"benchmark": "synthetic", "optimizer": optimizer, "max_epochs": 2, "device": "cpu", "seed": 0, **extra}


def test_trainer_runs_adatask_with_ew_and_gemtl():
    for method in ({"method": "ew"}, {"method": "gemtl", "p": 0.5}):
        trainer = Trainer(synthetic("adam_adatask", **method))
        results = list(trainer.run())
        assert len(results) == 2
        assert all(math.isfinite(v) for r in results for v in r.values())
        for task in trainer.task_names:
            assert results[1][f"train/{task}/loss"] < results[0][f"train/{task}/loss"]


@pytest.mark.parametrize("optimizer", ["adam_adatask", "adam"])
def test_trainer_checkpoint_continuity_with_dominance(tmp_path, optimizer):
    cfg = synthetic(optimizer, dominance_interval=1)
    straight = list(Trainer(cfg).run())
    first = Trainer(cfg)
    one = list(first.run(1))
    first.save(str(tmp_path / "ckpt.pt"))
    resumed = Trainer(cfg)
    resumed.load(str(tmp_path / "ckpt.pt"))
    two = list(resumed.run(1))
    assert one[0] == straight[0]
    assert two[0] == straight[1]  # optimizer (per-task moments), tracked moments and AU restored exactly


def test_dominance_under_adam_vs_adatask():
    """The paper's observation on tasks of loss scales 1, 10^2, 10^4: Adam's shared layers are
    dominated by the largest task; AdaTask's are not."""
    rau = {}
    for opt in ("adam", "adam_adatask"):
        result = list(Trainer(synthetic(opt, max_epochs=3, dominance_interval=3, dominance_beta=0.9)).run())
        assert not any(k.startswith("dominance/") for r in result[:2] for k in r)  # every 3 epochs only
        rau[opt] = table_from_metrics(result[-1])
    assert set(rau["adam"]) == {"encoder.0", "encoder.2"}
    for layer in rau["adam"]:
        assert rau["adam"][layer]["scale_100"] > 0.95
        assert min(rau["adam"][layer].values()) < 0.01
        # AdaTask: no task is starved (the remaining imbalance follows how far each task is from converging).
        assert rau["adam_adatask"][layer]["scale_100"] < 0.75
        assert min(rau["adam_adatask"][layer].values()) > 0.04


def test_dominance_plain_path_matches_plain_training():
    """Switching dominance on routes ew through per-task gradients: same training up to float error."""
    off = list(Trainer(synthetic("adam", max_epochs=1)).run())[0]
    on = list(Trainer(synthetic("adam", max_epochs=1, dominance_interval=1)).run())[0]
    for key, value in off.items():
        assert math.isclose(on[key], value, rel_tol=1e-3, abs_tol=1e-5), key


class EqualWeights(GradBalancing):
    """A linear gradient-level method with constant weights 1 (test-local): the dominance paths of
    gradient-level methods must then see exactly what ew under the same optimizer sees."""

    name = "test_equal_weights"

    def forward(self, grads, losses):
        return GradResult(weights=torch.ones(grads.shape[0], dtype=grads.dtype))


@pytest.mark.parametrize("optimizer", ["adam", "adam_adatask"])
def test_dominance_with_a_gradient_level_method(monkeypatch, optimizer):
    monkeypatch.setitem(METHODS, EqualWeights.name, EqualWeights)
    ew = list(Trainer(synthetic(optimizer, max_epochs=1, dominance_interval=1)).run())[0]
    for mode in ("rep", "param"):
        cfg = synthetic(optimizer, max_epochs=1, dominance_interval=1, method=EqualWeights.name, grad_mode=mode)
        result = list(Trainer(cfg).run())[0]
        for key, value in ew.items():
            if key.startswith("dominance/"):
                assert math.isclose(result[key], value, rel_tol=1e-3, abs_tol=1e-4), (mode, key)


def test_dominance_config_is_validated():
    with pytest.raises(ConfigError, match="dominance_interval"):
        TrialConfig.from_dict({"dominance_interval": -1})
    with pytest.raises(ConfigError, match="dominance_beta"):
        TrialConfig.from_dict({"dominance_beta": 1.0})
    assert TrialConfig.from_dict({}).dominance_interval == 0


def test_heatmap_is_written(tmp_path):
    path = tmp_path / "dom.png"
    table = {"encoder.0": {"a": 0.9, "b": 0.1}, "encoder.2": {"a": 0.5, "b": 0.5}}
    assert draw_heatmaps({"adam": table, "adam_adatask": copy.deepcopy(table)}, str(path), title="t") == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
