"""AdaTask with flat state: the same bits as the per-parameter implementation it replaced (kept in
``tests/helpers/adatask_reference.py``), and checkpoints that load both ways."""

from __future__ import annotations

import io
import math

import pytest
import torch

from helpers import adatask_reference as reference
from mtlsearch.optim import AdagradAdaTask, AdamAdaTask, RMSpropAdaTask

VARIANTS = {
    "adam": (AdamAdaTask, reference.AdamAdaTask, {"lr": 1e-2}),
    "rmsprop": (RMSpropAdaTask, reference.RMSpropAdaTask, {"lr": 1e-2}),
    "adagrad": (AdagradAdaTask, reference.AdagradAdaTask, {"lr": 1e-1, "lr_decay": 0.05}),
}
# A conv weight (channels_last in some cases), odd sizes that cut vector widths and CPU blocks anywhere.
SHAPES = [(8, 3, 5, 5), (64,), (30, 20), (33,), (17, 5, 3, 3), (100,), (7,)]
HEAD_SHAPES = [(4, 2), (2,)]


def make(cls, kw, num_tasks, weight_decay=0.0, chunk=None, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    shared = [torch.randn(*s, generator=g) for s in SHAPES]
    if channels_last:
        shared[0] = shared[0].contiguous(memory_format=torch.channels_last)
    shared = [p.requires_grad_(True) for p in shared]
    heads = [torch.randn(*s, generator=g).requires_grad_(True) for s in HEAD_SHAPES]
    opt = cls(shared, heads, num_tasks=num_tasks, weight_decay=weight_decay, **kw)
    opt.cpu_chunk_numel = chunk
    return opt, shared, heads


def batches(num_tasks, steps, seed=1):
    """Per-task gradients of very different scales, a parameter no task reached (None) at step 2 and a
    task that gave no gradient; head gradients, one head without a gradient at step 3."""
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** torch.arange(num_tasks, dtype=torch.float32)
    out = []
    for k in range(steps):
        grads = [torch.randn(num_tasks, *s, generator=g) * scale.view(-1, *[1] * len(s)) for s in SHAPES]
        if k == 2:
            grads[1] = None
            grads[2][0].zero_()
        heads = [torch.randn(*s, generator=g) for s in HEAD_SHAPES]
        if k == 3:
            heads[1] = None
        out.append((grads, heads))
    return out


def step(opt, heads, batch, shares=False):
    grads, head_grads = batch
    for p, hg in zip(heads, head_grads):
        p.grad = None if hg is None else hg.clone()
    return opt.step_tasks([None if g is None else g.clone() for g in grads], shares=shares)


def same_bits(a, b):
    return all(torch.equal(x.detach(), y.detach()) for x, y in zip(a, b))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [None, 2**18, 300, 7])  # all at once (CUDA's path), CPU blocks of every size
def test_flat_is_bit_identical_to_the_per_parameter_version(variant, num_tasks, weight_decay, chunk):
    flat_cls, ref_cls, kw = VARIANTS[variant]
    channels_last = chunk == 300
    flat, shared, heads = make(flat_cls, kw, num_tasks, weight_decay, chunk, channels_last)
    ref, ref_shared, ref_heads = make(ref_cls, kw, num_tasks, weight_decay, chunk, channels_last)
    data = batches(num_tasks, 6)
    for k, batch in enumerate(data):
        last = k == len(data) - 1
        shares, ref_shares = step(flat, heads, batch, shares=last), step(ref, ref_heads, batch, shares=last)
    assert flat._flat, "the shared group runs on flat buffers"
    assert same_bits(shared, ref_shared) and same_bits(heads, ref_heads)
    assert same_bits(shares, ref_shares)  # the shares of the last step too
    for p, q in zip(shared, ref_shared):
        for name in flat.accumulators:
            assert torch.equal(flat.state[p][name], ref.state[q][name])


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_is_flat_and_keeps_torchs_format(variant):
    cls, _, kw = VARIANTS[variant]
    opt, shared, heads = make(cls, kw, 3, channels_last=True)
    for batch in batches(3, 2):
        step(opt, heads, batch)
    for name in cls.accumulators:
        views = [opt.state[p][name] for p in shared]
        base = views[0]._base
        assert base is not None and base.shape == (3, sum(p.numel() for p in shared)) and base.is_contiguous()
        assert all(v._base is base for v in views)  # one [T, N] buffer per accumulator: row t is task t's state
        for p, v in zip(shared, views):
            assert v.shape == (3, *p.shape) and v.stride()[1:] == p.stride()  # a channels_last weight's state is channels_last
    packed = opt.state_dict()["state"]
    steps = [packed[i]["step"] for i in range(len(shared))]
    assert all(float(s) == 2 for s in steps) and len({id(s) for s in steps}) == len(steps)  # each its own counter
    assert packed[len(shared)][next(iter(cls.accumulators))].shape == HEAD_SHAPES[0]  # heads: torch's layout


def save_load(opt, into):
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    into.load_state_dict(torch.load(buffer, weights_only=True))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("direction", ["per-parameter to flat", "flat to per-parameter", "flat to flat"])
def test_checkpoints_load_both_ways(variant, direction):
    """A checkpoint of one implementation, loaded into the other after 3 steps: the next 3 steps are
    those of an uninterrupted run, bit for bit."""
    flat_cls, ref_cls, kw = VARIANTS[variant]
    first_cls, second_cls = {
        "per-parameter to flat": (ref_cls, flat_cls),
        "flat to per-parameter": (flat_cls, ref_cls),
        "flat to flat": (flat_cls, flat_cls),
    }[direction]
    data = batches(3, 6)
    straight, straight_shared, straight_heads = make(first_cls, kw, 3, weight_decay=0.01, chunk=300)
    for batch in data:
        step(straight, straight_heads, batch)
    first, shared, heads = make(first_cls, kw, 3, weight_decay=0.01, chunk=300)
    for batch in data[:3]:
        step(first, heads, batch)
    second = second_cls(shared, heads, num_tasks=3, **kw)  # weight decay comes back from the checkpoint
    second.cpu_chunk_numel = 300
    save_load(first, second)
    assert second.param_groups[0]["weight_decay"] == 0.01
    for batch in data[3:]:
        step(second, heads, batch)
    assert same_bits(shared, straight_shared) and same_bits(heads, straight_heads)
    # Saved again, its state is the uninterrupted run's.
    resaved = second.state_dict()["state"]
    for i, (a, b) in enumerate(zip(resaved.values(), straight.state_dict()["state"].values())):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (i, key)


def test_a_checkpoint_of_another_shape_is_refused():
    opt, shared, heads = make(AdamAdaTask, {}, 3)
    for batch in batches(3, 1):
        step(opt, heads, batch)
    saved = opt.state_dict()
    saved["state"][0] = {**saved["state"][0], "exp_avg": saved["state"][0]["exp_avg"][:2]}  # 2 tasks, not 3
    other, _, other_heads = make(AdamAdaTask, {}, 3)
    other.load_state_dict(saved)
    with pytest.raises(ValueError, match=r"state 'exp_avg' of shared parameter 0 has shape \(2, 8, 3, 5, 5\), expected \(3, 8, 3, 5, 5\)"):
        step(other, other_heads, batches(3, 1)[0])


# ---------------------------------------------------------------------------- step options: compile
def synthetic(**extra):
    return {"benchmark": "synthetic", "max_epochs": 2, "device": "cpu", "seed": 0, **extra}


@pytest.mark.parametrize("method", [{"method": "ew"}, {"method": "gemtl", "p": 0.5}])
def test_compiled_encoder_leaves_results_unchanged(monkeypatch, method):
    """``compile: encoder`` through the real torch.compile (dynamo capture and AOT autograd; the
    aot_eager backend skips inductor's code generation, which takes minutes on a loaded CPU)."""
    from mtlsearch.trainer import COMPILE_BACKEND_ENV, Trainer

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    torch._dynamo.reset()
    plain = list(Trainer(synthetic(**method)).run())
    trainer = Trainer(synthetic(compile="encoder", **method))
    compiled = list(trainer.run())
    assert trainer.model.encoder._compiled_call_impl is not None  # the encoder really went through torch.compile
    for a, b in zip(plain, compiled):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert math.isclose(b[key], value, rel_tol=1e-5, abs_tol=1e-6), key


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"optimizer": "adam_adatask"}, "compile: 'encoder' cannot apply: optimizer 'adam_adatask' needs each task's gradient"),
        ({"method": "nash_mtl", "grad_mode": "param"}, "compile: 'encoder' cannot apply: method 'nash_mtl' in grad_mode 'param'"),
        ({"dominance_interval": 1}, "compile: 'encoder' cannot apply: dominance_interval > 0"),
        ({"compile": "encoder_graphs"}, "compile: 'encoder_graphs' captures CUDA graphs and the device is the CPU"),
        ({"compile": "yes"}, "unknown compile 'yes'; choose one of"),
    ],
)
def test_compile_is_refused_in_one_line_where_it_cannot_apply(extra, message):
    from mtlsearch.config import TrialConfig
    from mtlsearch.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict(synthetic(**{"compile": "encoder", **extra}))
    assert err.value.field == "compile" and message in str(err.value) and "\n" not in str(err.value)
    TrialConfig.from_dict(synthetic(**{**extra, "compile": "off"}))  # the same trial without it is fine


def test_cuda_graphs_are_refused_where_auto_resolves_to_the_cpu():
    from mtlsearch.errors import ConfigError
    from mtlsearch.trainer import Trainer

    if torch.cuda.is_available():  # this test is about a machine without CUDA; there device auto is CUDA
        assert Trainer(synthetic(device="auto", compile="off")).device.type == "cuda"
        return
    with pytest.raises(ConfigError, match="compile: 'encoder_graphs' captures CUDA graphs and the device is the CPU"):
        Trainer(synthetic(device="auto", compile="encoder_graphs"))


def test_dominance_reduces_the_flat_update_at_once():
    """The shares of a flat step carry the ``[T, N]`` update they are views of; the tracker's one
    reduction over it gives what its per-parameter sums give."""
    from mtlsearch.dominance import DominanceTracker

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)).to(memory_format=torch.channels_last)
    shared = list(model.parameters())
    opt = AdamAdaTask(shared, num_tasks=3, lr=1e-2)
    fast, slow = (DominanceTracker(model, shared, ["a", "b", "c"], beta=0.5) for _ in range(2))
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(3, *p.shape, generator=g) * torch.tensor([1.0, 10.0, 100.0]).view(3, *[1] * p.dim()) for p in shared]
        shares = opt.step_tasks(grads, shares=True)
        assert shares.flat.shape == (3, sum(p.numel() for p in shared))
        assert all(s._base is shares.flat for s in shares)  # views, no copy
        fast.update(shares)
        slow.update(list(shares))  # a plain list: one reduction per parameter
    torch.testing.assert_close(fast.au, slow.au, rtol=1e-12, atol=0)
    assert fast.au.min() > 0


@pytest.mark.parametrize("variant, backend", [("adam", "inductor"), ("rmsprop", "aot_eager"), ("adagrad", "aot_eager")])
def test_fused_update_is_the_flat_update_within_a_few_ulps(monkeypatch, variant, backend):
    """``fused_update``: the rule over the flat buffers as one compiled function (inductor fuses it; the
    aot_eager backend, for the other rules, checks the function's math without code generation)."""
    from mtlsearch.optim import adatask

    monkeypatch.setenv("MTLSEARCH_COMPILE_BACKEND", backend)
    monkeypatch.setattr(adatask, "_COMPILED", {})
    cls, _, kw = VARIANTS[variant]
    fused, shared, heads = make(cls, kw, 3, weight_decay=0.1, chunk=None, channels_last=True)
    fused.fused_update = True
    eager, eager_shared, eager_heads = make(cls, kw, 3, weight_decay=0.1, chunk=None, channels_last=True)
    data = batches(3, 5)
    for k, batch in enumerate(data):
        last = k == len(data) - 1
        shares, eager_shares = step(fused, heads, batch, shares=last), step(eager, eager_heads, batch, shares=last)
    assert adatask._COMPILED, "the compiled rule ran"
    for a, b in zip([*shared, *shares], [*eager_shared, *eager_shares]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7)
