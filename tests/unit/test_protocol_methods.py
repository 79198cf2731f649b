"""Methods as their authors ran them (issue 23): ldc_mtl's step-0 weights as the released formula gives
in exact arithmetic, in float32 and float64."""

from fractions import Fraction

import pytest
import torch

from mtlsearch.balancing import METHODS


def _weights(method, losses):
    losses = losses.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(method(losses), losses)
    return grad


def _exact_step0_weights(losses: list[float]) -> list[Fraction]:
    """The released formula at step 0 in exact arithmetic: r_t = L_t / m (m = min L), so L_t / r_t = m for
    every task; the router weights s_t = sigmoid(1) are equal, so every s_t L_t / r_t is the same number and
    each |difference| of the penalty is exactly 0, where d|x|/dx = sign(0) = 0 (PyTorch's convention, used by
    the released code).  What remains is sum_t s_t L_t / r_t / sum_t s_t: d/dL_t = (1/T) / r_t = m / (T L_t)."""
    exact = [Fraction(v) for v in losses]
    m = min(exact)
    return [m / (len(exact) * v) for v in exact]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_ldc_mtl_step0_weights_are_the_released_formulas_in_exact_arithmetic(dtype):
    losses = [0.7, 0.3, 1.9]
    ldc = METHODS["ldc_mtl"](3, ldc_mtl_lambda=0.5)
    w = _weights(ldc, torch.tensor(losses, dtype=dtype))
    assert w.dtype == dtype and ldc.ratios.dtype == dtype
    # The values as the losses' dtype holds them: 1/7, 1/3, 1/19; the middle task gets 1/3 (not -0.398).
    expected = torch.tensor([float(v) for v in _exact_step0_weights([float(torch.tensor(v, dtype=dtype)) for v in losses])], dtype=dtype)
    torch.testing.assert_close(w, expected, rtol=4 * torch.finfo(dtype).eps, atol=0.0)
    assert w[1].item() == pytest.approx(1 / 3, rel=1e-6)
    # On the normalised losses L_t / r_t every task weighs 1/T.
    torch.testing.assert_close(w * ldc.ratios, torch.full((3,), 1 / 3, dtype=dtype), rtol=4 * torch.finfo(dtype).eps, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_ldc_mtl_step0_kink_never_decided_by_rounding(dtype):
    """At T=10 the naive float32 formula gave some task a negative step-0 weight in 129 of 300 random cases."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        losses = (torch.rand(10, generator=gen, dtype=torch.float64) * 3 + 0.01).to(dtype)
        w = _weights(METHODS["ldc_mtl"](10, ldc_mtl_lambda=0.5), losses)
        expected = torch.tensor([float(v) for v in _exact_step0_weights(losses.tolist())], dtype=dtype)
        torch.testing.assert_close(w, expected, rtol=8 * torch.finfo(dtype).eps, atol=0.0)
        assert (w > 0).all()


def test_ldc_mtl_after_step0_the_penalty_acts():
    ldc = METHODS["ldc_mtl"](3, ldc_mtl_lambda=0.5)
    ldc(torch.tensor([0.7, 0.3, 1.9], dtype=torch.float64))
    w = _weights(ldc, torch.tensor([0.7, 0.6, 1.9], dtype=torch.float64))  # task 1 now lags
    s = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))
    # normalised (0.3, 0.6, 0.3): d/dLt_1 = 1/3 + lambda * s * 2 (both neighbours below it)
    assert (w[1] * ldc.ratios[1]).item() == pytest.approx(1 / 3 + 0.5 * s.item() * 2)


# ------------------------------------------------------------------------------ per-method protocol settings
#: The released runs' settings, read in the released code (written out here independently of
#: mtlsearch.protocols): nash-mtl cce1840, FAMO 0a6ad06, OptMN-Lab/fairgrad 2b8cba1.  Gradient methods
#: use the shared parameters' gradients in every released trainer; every method's own parameters train
#: in a separate Adam group at lr 0.025 (nash-mtl experiments/nyuv2/trainer.py L87-92).
RELEASED = {
    "ew": {},
    "si": {},
    "uw": {},
    "rlw": {},
    "go4align": {},
    "ldc_mtl": {},
    "dwa": {"dwa_temperature": 2.0, "dwa_window": 25},
    "mgda": {"grad_mode": "param", "mgda_normalization": "none"},
    "pcgrad": {"grad_mode": "param"},
    "graddrop": {"grad_mode": "param"},
    "cagrad": {"grad_mode": "param", "cagrad_c": 0.4},
    "imtl_g": {"grad_mode": "param"},
    "moco": {"grad_mode": "param"},
    "nash_mtl": {"grad_mode": "param", "nash_update_every": 1, "nash_max_norm": 1.0},
    "aligned_mtl": {"grad_mode": "param"},
    "sdmgrad": {"grad_mode": "param"},
    "fairgrad": {"grad_mode": "param", "fairgrad_alpha": 2.0, "fairgrad_max_norm": 1.0},
    "famo": {"famo_same_batch": True, "famo_lr": 0.025, "famo_gamma": {"nyuv2": 0.001, "cityscapes": 0.01}},
}


def _published_rows():
    from mtlsearch.protocols import load_published

    return [
        (r["method"], r["benchmark"])
        for r in load_published("nashmtl")["results"]
        if r["method"] in METHODS and r["benchmark"] in ("nyuv2", "cityscapes")
    ]


@pytest.mark.parametrize("method,benchmark", _published_rows())
def test_effective_config_equals_the_released_runs_for_every_published_method(method, benchmark):
    import argparse

    from mtlsearch.balancing import GradBalancing
    from mtlsearch.config import TrialConfig
    from mtlsearch.reproduce import trial_config

    assert method in RELEASED, f"{method} has a published nashmtl@1 number but no released settings in this table"
    args = argparse.Namespace(
        protocol="nashmtl@1", benchmark=benchmark, method=method, epochs=None, data_root=None, last_k=None, override_values={}
    )
    cfg = TrialConfig.from_dict(trial_config(args, 0))
    expected = {k: (v[benchmark] if isinstance(v, dict) else v) for k, v in RELEASED[method].items()}
    grad_level = issubclass(METHODS[method], GradBalancing)
    assert cfg.effective_grad_mode == ("param" if grad_level else None)
    assert expected.pop("grad_mode", None) == cfg.effective_grad_mode
    assert cfg.balancing_lr == 0.025 and cfg.lr == 1e-4 and cfg.optimizer == "adam"
    assert {k: cfg.method_params[k] for k in expected} == expected


def test_block_diagonal_segnet_mtan_mgda_now_gets_the_shared_parameter_answer(tmp_path):
    """SegNet-MTAN: one attention branch per task, so rep-mode gradients are block-diagonal and MGDA gives
    w ~ 1/||g_t||^2; under the protocol it solves on the shared parameters' gradients, as released."""
    from mtlsearch.benchmarks.generate import generate
    from mtlsearch.protocols import get_protocol
    from mtlsearch.trainer import Trainer

    generate("nyuv2", tmp_path, train=2, test=1, size=(32, 64), seed=4)
    protocol = get_protocol("nashmtl")
    cfg = protocol.effective_settings("mgda", "nyuv2")
    cfg.update(image_size="32x64", mtan_width=0.125, benchmark="nyuv2", data_root=str(tmp_path), method="mgda", protocol=protocol.tag)
    cfg.update(max_epochs=1, seed=0, device="cpu", augment=False)
    trainer = Trainer(cfg)
    assert trainer.grad_mode == "param"
    x, targets = next(iter(trainer.splits["train"].batches(2, shuffle=False)))
    # Independently: the per-task gradients of the shared parameters, before the step.
    trainer.model.train()
    reps = trainer._encode(x)
    losses = trainer._losses(reps, targets)
    shared = trainer.model.shared_parameters()
    G = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)]) for loss in losses])
    expected = METHODS["mgda"](3)(G.double(), losses.detach().double()).weights
    # The representation's per-task gradients: block-diagonal, so MGDA degenerates to 1/||g||^2.
    rep_grads = [torch.autograd.grad(loss, z, retain_graph=True)[0].reshape(-1) for loss, z in zip(losses, reps)]
    block = torch.block_diag(*[g.view(1, -1) for g in rep_grads]).double()
    rep_w = METHODS["mgda"](3)(block, losses.detach().double()).weights
    inv = torch.stack([1 / g.double().pow(2).sum() for g in rep_grads])
    torch.testing.assert_close(rep_w, inv / inv.sum(), rtol=1e-4, atol=1e-6)

    _, weights = trainer.train_step(x, targets)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-3, atol=1e-5)
    assert (weights.double() - rep_w).abs().max() > 1e-2  # a different algorithm, not a variant


# ------------------------------------------------------------------------------ the released rules, one by one
def test_windowed_dwa_follows_nash_mtls_rule_step_by_step():
    """Nash-MTL's DWA (methods/weight_methods.py L744-790) written out in numpy, against ours over 80 steps."""
    import numpy as np

    n, t, temp = 25, 3, 2.0
    costs = np.ones((2 * n, t), dtype=np.float32)
    weights = np.ones(t, dtype=np.float32)
    dwa = METHODS["dwa"](t, dwa_temperature=temp, dwa_window=n)
    gen = torch.Generator().manual_seed(0)
    for step in range(80):
        losses = torch.rand(t, generator=gen) + 0.1 * (step % 7)
        costs[:-1] = costs[1:]
        costs[-1] = losses.numpy()
        if step > n:
            ws = costs[n:].mean(0) / costs[:n].mean(0)
            weights = t * np.exp(ws / temp) / np.exp(ws / temp).sum()
        w = _weights(dwa, losses)
        np.testing.assert_allclose(w.numpy(), weights / t, rtol=2e-5)  # the released total is the mean
    dwa.on_epoch_end(0, torch.ones(t))  # the epoch rule stays off
    np.testing.assert_allclose(dwa.weights.numpy(), weights, rtol=2e-5)


def test_fairgrad_max_norm_clips_the_update_like_clip_grad_norm():
    from mtlsearch.balancing.fairgrad import fairgrad_weights

    G = (
        torch.randn(3, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.01
    )  # small gradients: a long FairGrad update
    free = METHODS["fairgrad"](3, fairgrad_alpha=2.0)(G, torch.ones(3)).weights
    clipped = METHODS["fairgrad"](3, fairgrad_alpha=2.0, fairgrad_max_norm=1.0)(G, torch.ones(3)).weights
    w, ok = fairgrad_weights((G @ G.T).numpy(), 2.0)
    assert ok
    torch.testing.assert_close(free, torch.tensor(w))
    d = (free @ G).clone().requires_grad_(False)
    p = torch.nn.Parameter(torch.zeros(40, dtype=torch.float64))
    p.grad = d.clone()
    torch.nn.utils.clip_grad_norm_([p], 1.0)  # what the released backward does to the shared gradient
    assert d.norm() > 1.0
    torch.testing.assert_close(clipped @ G, p.grad)


def test_famo_same_batch_updates_the_logits_from_the_same_batch_after_the_step():
    famo = METHODS["famo"](3, famo_same_batch=True, famo_gamma=0.001)
    before = torch.tensor([1.0, 2.0, 3.0])
    famo(before)
    assert famo.needs_losses_after_step and torch.equal(famo.logits, torch.zeros(3))
    after = torch.tensor([0.5, 1.9, 3.0])
    famo.after_step(after)
    # Released update (FAMO methods/weight_methods.py: grad = J_softmax^T delta, Adam with weight_decay gamma):
    delta = torch.log(before + 1e-8) - torch.log(after + 1e-8)
    z = torch.softmax(torch.zeros(3), 0)
    grad = z * (delta - (z * delta).sum())
    # Adam's first step moves every logit by lr * g / (|g| + eps) (eps after bias correction).
    torch.testing.assert_close(famo.logits, -0.025 * grad / (grad.abs() + 1e-8), rtol=1e-5, atol=1e-7)
    # The task that improved most (task 0) loses weight.
    assert famo.task_weights()[0] < famo.task_weights()[2]
    # The next forward does not update again from consecutive batches.
    logits = famo.logits.clone()
    famo(torch.tensor([5.0, 5.0, 5.0]))
    assert torch.equal(famo.logits, logits)


def _multidigits(method, **extra):
    from mtlsearch.trainer import Trainer

    return Trainer({"benchmark": "multidigits", "method": method, "max_epochs": 1, "seed": 0, "device": "cpu", "lr": 1e-3, **extra})


def test_balancing_lr_gives_the_method_parameters_their_own_adam_group():
    base = _multidigits("uw")
    own = _multidigits("uw", balancing_lr=0.025, lr_step_size=1, lr_gamma=0.5)
    assert base.balancing_optimizer is None and own.balancing_optimizer is not None
    assert all(p is not own.balancing.log_vars for g in own.optimizer.param_groups for p in g["params"])
    x, targets = next(iter(own.splits["train"].batches(16, shuffle=False)))
    base.train_step(x, targets)
    own.train_step(x, targets)
    # Adam's first step moves each log-variance by its lr (the gradients are far from zero).
    torch.testing.assert_close(base.balancing.log_vars.detach().abs(), torch.full((3,), 1e-3), rtol=1e-3, atol=0)
    torch.testing.assert_close(own.balancing.log_vars.detach().abs(), torch.full((3,), 0.025), rtol=1e-3, atol=0)
    own.train_epoch()  # the schedule halves the balancing lr with the model's (the released StepLR acts on every group)
    assert own.balancing_optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)
    state = own.state_dict()
    again = _multidigits("uw", balancing_lr=0.025, lr_step_size=1, lr_gamma=0.5)
    again.load_state_dict(state)
    assert again.balancing_optimizer.state_dict()["state"][0]["step"] == state["balancing_optimizer"]["state"][0]["step"]


def test_trainer_re_evaluates_the_batch_after_the_step_for_famo_same_batch():
    trainer = _multidigits("famo", famo_same_batch=True)
    x, targets = next(iter(trainer.splits["train"].batches(16, shuffle=False)))
    trainer.train_step(x, targets)
    with torch.no_grad():
        after = trainer._losses(trainer._encode(x), targets).float()
    expected = METHODS["famo"](3, famo_same_batch=True)
    expected.prev_log_losses.copy_(trainer.balancing.prev_log_losses)
    expected.after_step(after)
    torch.testing.assert_close(trainer.balancing.logits, expected.logits)
    assert trainer.balancing.logits.abs().min() > 0  # moved after the first step (the consecutive-batch rule waits a step)
    assert torch.equal(_step_once(_multidigits("famo")).balancing.logits, torch.zeros(3))


def _step_once(trainer):
    x, targets = next(iter(trainer.splits["train"].batches(16, shuffle=False)))
    trainer.train_step(x, targets)
    return trainer


def test_windowed_dwa_state_is_checkpointed_and_the_epoch_rule_keeps_its_keys():
    gen = torch.Generator().manual_seed(3)
    dwa = METHODS["dwa"](3, dwa_window=5)
    for _ in range(8):
        dwa(torch.rand(3, generator=gen) + 0.5)
    restored = METHODS["dwa"](3, dwa_window=5)
    restored.load_state_dict(dwa.state_dict())
    losses = torch.rand(3, generator=gen) + 0.5
    torch.testing.assert_close(_weights(restored, losses), _weights(dwa, losses))
    assert set(METHODS["dwa"](3).state_dict()) == {"loss_history", "epochs_seen", "weights"}
