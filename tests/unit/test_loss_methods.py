"""The loss-level baselines (uw, dwa, gls, rlw, famo, stch) and the weight-learning gradient methods
(gradnorm, db_mtl): each method's defining property, then every method through the Trainer with
exact checkpoint continuity."""

import io
import math

import pytest
import torch

from mtlsearch import Trainer, TrialConfig
from mtlsearch.balancing import DBMTL, DWA, FAMO, GLS, METHODS, RLW, STCH, UW, GradNorm
from mtlsearch.errors import ConfigError


def _weights(method, losses):
    """Effective task weights d total / d L_t, as the trainer reports them."""
    losses = losses.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(method(losses), losses)
    return grad


def _shared_grad(method, scales, theta):
    """Gradient w.r.t. shared parameters theta of method(L) with L_t = scales_t * ||A_t theta - b_t||^2 + 0.1."""
    theta = theta.clone().requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(5, theta.numel(), generator=g, dtype=theta.dtype) for _ in scales]
    targets = [torch.randn(5, generator=g, dtype=theta.dtype) for _ in scales]
    losses = torch.stack([c * ((a @ theta - b).square().sum() + 0.1) for c, a, b in zip(scales, mats, targets)])
    (grad,) = torch.autograd.grad(method(losses), theta)
    return grad


# ---------------------------------------------------------------------------------------------- uw
def test_uw_weight_tends_to_inverse_loss():
    losses = torch.tensor([0.3, 2.0, 40.0])
    uw = UW(3)
    assert [p is uw.log_vars for p in uw.parameters()] == [True]
    torch.testing.assert_close(_weights(uw, losses), torch.ones(3))  # s = 0 at the start
    # The optimum over s: the gradient vanishes exactly at exp(-s) = 1/L ...
    with torch.no_grad():
        uw.log_vars.copy_(losses.log())
    (grad,) = torch.autograd.grad(uw(losses), uw.log_vars)
    torch.testing.assert_close(grad, torch.zeros(3), atol=1e-6, rtol=0)
    # ... and it is a minimum that gradient descent reaches from s = 0.
    uw = UW(3)
    opt = torch.optim.LBFGS(uw.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        total = uw(losses)
        total.backward()
        return total

    opt.step(closure)
    torch.testing.assert_close(_weights(uw, losses), 1 / losses, rtol=1e-4, atol=0)


# --------------------------------------------------------------------------------------------- dwa
def test_dwa_weights_follow_the_loss_ratios_of_the_last_two_epochs():
    dwa = DWA(3, dwa_temperature=2.0)
    losses = torch.tensor([1.0, 5.0, 50.0])
    torch.testing.assert_close(_weights(dwa, losses), torch.ones(3))
    dwa.on_epoch_end(0, torch.tensor([2.0, 4.0, 100.0]))
    torch.testing.assert_close(_weights(dwa, losses), torch.ones(3))  # still 1 in the second epoch
    dwa.on_epoch_end(1, torch.tensor([1.0, 3.0, 90.0]))  # ratios 0.5, 0.75, 0.9
    w = _weights(dwa, losses)
    assert w.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert w[0] < w[1] < w[2]  # the task whose loss fell least gets the most weight
    ratio = torch.tensor([0.5, 0.75, 0.9])
    torch.testing.assert_close((w / w[0]).log(), (ratio - ratio[0]) / 2.0)  # softmax of r / T
    # Only the last two epochs count.
    dwa.on_epoch_end(2, torch.tensor([0.9, 1.5, 90.0]))  # ratios 0.9, 0.5, 1.0
    w = _weights(dwa, losses)
    assert w[1] < w[0] < w[2]
    # A high temperature tends to equal weights.
    hot = DWA(3, dwa_temperature=1e6)
    for e, l in enumerate(([2.0, 4.0, 100.0], [1.0, 3.0, 90.0])):
        hot.on_epoch_end(e, torch.tensor(l))
    torch.testing.assert_close(_weights(hot, losses), torch.ones(3), rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------- gls
def test_gls_direction_is_invariant_to_loss_rescaling():
    theta = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g1 = _shared_grad(GLS(3), [1.0, 1.0, 1.0], theta)
    scales = [0.01, 3.0, 500.0]
    g2 = _shared_grad(GLS(3), scales, theta)
    # Same direction; the norm is scaled by the geometric mean of the scales.
    torch.testing.assert_close(g2, g1 * math.prod(scales) ** (1 / 3), rtol=1e-9, atol=1e-12)
    # Under equal weighting, rescaling changes the direction.
    ew = METHODS["ew"](3)
    e1, e2 = _shared_grad(ew, [1.0] * 3, theta), _shared_grad(ew, scales, theta)
    assert torch.dot(e1, e2) / (e1.norm() * e2.norm()) < 0.999
    losses = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)
    assert GLS(3)(losses).item() == pytest.approx(2.0)
    torch.testing.assert_close(_weights(GLS(3), losses), 2.0 / (3 * losses))


# --------------------------------------------------------------------------------------------- rlw
def test_rlw_weights_are_random_softmax_weights_reproducible_from_the_seed():
    losses = torch.tensor([1.0, 5.0, 50.0])

    def draws(seed, n):
        torch.manual_seed(seed)
        rlw = RLW(3)
        return torch.stack([_weights(rlw, losses) for _ in range(n)])

    first = draws(7, 2000)
    torch.testing.assert_close(first, draws(7, 2000), rtol=0, atol=0)
    assert not torch.equal(first[:10], draws(8, 10))
    assert (first > 0).all()
    torch.testing.assert_close(first.sum(1), torch.ones(2000))
    assert len({tuple(row.tolist()) for row in first[:50]}) == 50  # new weights every step
    # Exchangeable: every task has weight 1/T on average (std of this mean ~0.004).
    torch.testing.assert_close(first.mean(0), torch.full((3,), 1 / 3), atol=0.02, rtol=0)
    # The weights are the softmax of standard normal draws.
    torch.manual_seed(3)
    eps = torch.randn(3)
    torch.manual_seed(3)
    torch.testing.assert_close(_weights(RLW(3), losses), torch.softmax(eps, 0))


# ---------------------------------------------------------------------------------------- gradnorm
def _gradnorm_step(gn, norms, losses):
    grads = torch.diag(torch.tensor(norms))  # orthogonal task gradients with the given norms
    return gn(grads, torch.tensor(losses)).weights


def test_gradnorm_gives_slow_tasks_more_weight_and_keeps_the_sum():
    gn = GradNorm(3, gradnorm_warmup_epochs=0)  # the paper: L(0) from the first step
    w0 = _gradnorm_step(gn, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0])  # step 0: records L(0)
    torch.testing.assert_close(w0, torch.ones(3))
    torch.testing.assert_close(gn.loss_weights, torch.ones(3))  # equal rates, equal norms: no change
    # Task 0 trains fastest: inverse training rates r = (0.5, 0.8, 1.0) / mean = (0.65, 1.04, 1.30).
    used = _gradnorm_step(gn, [1.0, 1.0, 1.0], [1.0, 1.6, 2.0])
    torch.testing.assert_close(used, torch.ones(3))  # this step uses the weights before the update
    w = gn.loss_weights.clone()
    assert w[0] < 1 < w[1] <= w[2]  # (the L1 loss moves every task with r > 1 by the same step)
    assert w.sum().item() == pytest.approx(3.0, rel=1e-6)
    # Without the rate term (alpha = 0), the same losses change nothing.
    flat = GradNorm(3, gradnorm_alpha=0.0, gradnorm_warmup_epochs=0)
    _gradnorm_step(flat, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    _gradnorm_step(flat, [1.0, 1.0, 1.0], [1.0, 1.6, 2.0])
    torch.testing.assert_close(flat.loss_weights, torch.ones(3))


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5])
def test_gradnorm_drives_weighted_gradient_norms_to_the_rate_targets(alpha):
    """Targets ``G_t = Gbar r_t^alpha`` are consistent (mean r^alpha = 1) for alpha in {0, 1}: then they
    are reached; for other alpha the weighted norms still follow the inverse training rates."""
    gn = GradNorm(3, gradnorm_alpha=alpha, gradnorm_lr=0.002, gradnorm_warmup_epochs=0)
    norms = torch.tensor([1.0, 4.0, 2.0])
    _gradnorm_step(gn, norms.tolist(), [2.0, 2.0, 2.0])
    losses = torch.tensor([1.0, 1.6, 2.0])
    for _ in range(1500):
        w = _gradnorm_step(gn, norms.tolist(), losses.tolist())
    assert w.sum().item() == pytest.approx(3.0, rel=1e-6)
    weighted = w * norms
    rate = losses / losses.mean()
    if alpha in (0.0, 1.0):
        torch.testing.assert_close(weighted / weighted.mean(), rate**alpha, rtol=0.01, atol=0)
    else:
        assert weighted.argsort().tolist() == [0, 1, 2]


def test_gradnorm_warmup_trains_with_equal_weights_then_takes_l0_from_the_first_epoch_mean():
    gn = GradNorm(3)  # default: one warm-up epoch (LibMTL's rule)
    for losses in ([9.0, 2.0, 2.0], [1.0, 2.0, 2.0]):  # epoch 0: equal weights, nothing learned
        torch.testing.assert_close(_gradnorm_step(gn, [5.0, 1.0, 1.0], losses), torch.ones(3))
    torch.testing.assert_close(gn.loss_weights, torch.ones(3))
    gn.on_epoch_end(0, torch.tensor([5.0, 2.0, 2.0]))  # the trainer passes the epoch's mean losses
    torch.testing.assert_close(gn.initial_losses, torch.tensor([5.0, 2.0, 2.0]))
    # Epoch 1: ratios against the epoch mean, not against the first step's 9: task 0 (ratio 0.8 vs
    # 1.0, 1.0) trains fastest and its gradient is largest, so its weight goes down, the others up.
    _gradnorm_step(gn, [5.0, 1.0, 1.0], [4.0, 2.0, 2.0])
    w = gn.loss_weights
    assert w[0] < 1 < w[1] and w[1] == w[2]
    assert w.sum().item() == pytest.approx(3.0, rel=1e-6)
    # The warm-up state is checkpointed: a restored copy continues identically.
    copy = GradNorm(3)
    copy.load_state_dict(gn.state_dict())
    torch.testing.assert_close(_gradnorm_step(copy, [5.0, 1.0, 1.0], [3.0, 2.0, 2.0]), _gradnorm_step(gn, [5.0, 1.0, 1.0], [3.0, 2.0, 2.0]))


# -------------------------------------------------------------------------------------------- famo
def test_famo_weights_sum_to_one_and_direction_ignores_loss_scales():
    famo = FAMO(3)
    with torch.no_grad():
        famo.logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    losses = torch.tensor([0.5, 3.0, 40.0])
    w = _weights(famo, losses)
    z = torch.softmax(torch.tensor([0.3, -0.2, 0.5]), 0)
    assert w.sum().item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(w / (z / losses), torch.full((3,), (w / (z / losses))[0].item()))
    theta = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def grad(scales):
        fresh = FAMO(3).double()
        with torch.no_grad():
            fresh.logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
        return _shared_grad(fresh, scales, theta)

    g1, g2 = grad([1.0, 1.0, 1.0]), grad([0.01, 3.0, 500.0])
    assert torch.dot(g1, g2) / (g1.norm() * g2.norm()) > 1 - 1e-6


def test_famo_moves_weight_to_the_tasks_that_improve_least():
    famo = FAMO(3)
    famo(torch.tensor([1.0, 1.0, 1.0]))  # first step: nothing to compare with
    torch.testing.assert_close(famo.logits, torch.zeros(3))
    assert int(famo.adam_steps) == 0
    # Log-losses fall by 0.1, 0.04 and 0 per step: the first task improves more than the
    # z-weighted average (0.047) and loses weight, the other two gain.
    famo(torch.tensor([math.exp(-0.1), math.exp(-0.04), 1.0]))
    assert famo.logits[0] < 0 < famo.logits[1] and 0 < famo.logits[2]
    for k in range(2, 40):
        famo(torch.tensor([math.exp(-0.1 * k), math.exp(-0.04 * k), 1.0]))
    z = famo.task_weights()
    assert z.argmax() == 2 and z[0] < 1 / 3 < z[2]  # the stalled task gets the most weight
    assert int(famo.adam_steps) == 39


def test_famo_logit_update_matches_torch_adam_on_the_softmax_gradient():
    """Our in-buffer Adam step is the released code's: Adam(lr, weight_decay=gamma) on J^T delta."""
    gen = torch.Generator().manual_seed(1)
    seq = torch.rand(12, 4, generator=gen) * 5 + 0.1
    famo = FAMO(4, famo_lr=0.05, famo_gamma=0.01)
    w = torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05, weight_decay=0.01)
    for k, losses in enumerate(seq):
        famo(losses)
        if k:
            delta = (seq[k - 1] + 1e-8).log() - (losses + 1e-8).log()
            (d,) = torch.autograd.grad(torch.softmax(w, -1), w, grad_outputs=delta)
            opt.zero_grad()
            w.grad = d
            opt.step()
    torch.testing.assert_close(famo.logits, w.detach(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ db_mtl
def test_db_mtl_scales_every_gradient_to_the_largest_norm():
    grads = torch.randn(3, 20, generator=torch.Generator().manual_seed(0)) * torch.tensor([[0.1], [1.0], [30.0]])
    db = DBMTL(3, db_mtl_beta=0.0)
    alpha = db(grads, torch.ones(3)).weights
    scaled = (alpha[:, None] * grads).norm(dim=1)
    torch.testing.assert_close(scaled, torch.full((3,), grads.norm(dim=1).max().item()), rtol=1e-5, atol=0)
    # With an EMA, constant gradients give the same weights ...
    ema = DBMTL(3, db_mtl_beta=0.9)
    for _ in range(5):
        a = ema(grads, torch.ones(3)).weights
    torch.testing.assert_close(a, alpha, rtol=1e-5, atol=0)
    # ... and the weights follow the EMA of the norms: a one-step 100x spike of task 0's gradient
    # raises its smoothed norm only by 0.9 + 0.1 * 100 (the max, task 2's, is unchanged).
    for _ in range(80):
        a = ema(grads, torch.ones(3)).weights
    spike = grads.clone()
    spike[0] *= 100
    assert (a[0] / ema(spike, torch.ones(3)).weights[0]).item() == pytest.approx(0.9 + 0.1 * 100, rel=1e-3)
    assert (alpha[0] / db(spike, torch.ones(3)).weights[0]).item() == pytest.approx(100, rel=1e-4)


def test_db_mtl_log_losses_make_gradients_scale_free():
    db = DBMTL(3)
    theta = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def log_loss_grads(scales):
        t = theta.clone().requires_grad_(True)
        losses = torch.stack([c * ((t * (i + 1)).sin().square().sum() + 0.1) for i, c in enumerate(scales)])
        return torch.stack([torch.autograd.grad(l, t, retain_graph=True)[0] for l in db.transform_losses(losses)])

    # Exact up to the eps inside the log (1e-8, against losses >= 1e-3 here).
    torch.testing.assert_close(log_loss_grads([1.0, 1.0, 1.0]), log_loss_grads([1e-2, 1.0, 1e3]), rtol=1e-5, atol=0)


# -------------------------------------------------------------------------------------------- stch
def test_stch_warmup_then_smooth_max_of_normalised_log_losses():
    stch = STCH(3, stch_mu=0.5, stch_warmup_epochs=2)
    losses = torch.tensor([0.5, 3.0, 40.0])
    assert stch(losses).item() == pytest.approx(losses.log().sum().item(), rel=1e-6)  # warm-up: log-sum
    torch.testing.assert_close(_weights(stch, losses), 1 / losses)
    stch.on_epoch_end(0, torch.tensor([9.0, 9.0, 9.0]))
    stch.on_epoch_end(1, torch.tensor([1.0, 2.0, 20.0]))  # the last warm-up epoch sets z
    torch.testing.assert_close(stch.nadir, torch.tensor([1.0, 2.0, 20.0]))
    stch.on_epoch_end(2, torch.tensor([0.1, 0.1, 0.1]))  # later epochs do not move z
    torch.testing.assert_close(stch.nadir, torch.tensor([1.0, 2.0, 20.0]))
    normalised = (losses / stch.nadir).log()  # -0.69, 0.41, 0.69
    total = stch(losses).item() / 3
    assert normalised.max() <= total <= normalised.max() + 0.5 * math.log(3) + 1e-6
    # Weights on the normalised log-losses: T * softmax(. / mu), so w_t L_t sums to T.
    w = _weights(stch, losses)
    torch.testing.assert_close(w * losses, 3 * torch.softmax(normalised / 0.5, 0))
    # mu -> 0: all weight on the task furthest above its reference.
    sharp = STCH(3, stch_mu=1e-3, stch_warmup_epochs=0)
    sharp.nadir.copy_(stch.nadir)
    w = _weights(sharp, losses) * losses
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 3.0]), atol=1e-6, rtol=0)


def test_stch_is_invariant_to_task_loss_scales_once_normalised():
    scales = torch.tensor([1e-2, 1.0, 1e3])
    losses = torch.tensor([0.5, 3.0, 40.0])
    plain, scaled = STCH(3, stch_warmup_epochs=1), STCH(3, stch_warmup_epochs=1)
    plain.on_epoch_end(0, torch.tensor([1.0, 2.0, 20.0]))
    scaled.on_epoch_end(0, torch.tensor([1.0, 2.0, 20.0]) * scales)
    assert scaled(losses * scales).item() == pytest.approx(plain(losses).item(), rel=1e-5)
    torch.testing.assert_close(_weights(scaled, losses * scales) * scales, _weights(plain, losses))


# ------------------------------------------------------------------------------------ configuration
def test_hyperparameter_names_are_unique_and_validated():
    common = set(TrialConfig.__dataclass_fields__)
    seen: dict[str, str] = {}
    for name, cls in METHODS.items():
        for key in cls.hyperparams:
            assert key not in common, f"{name}.{key} shadows a common config key"
            assert key not in seen, f"{key} declared by both {seen[key]} and {name}"
            seen[key] = name
    with pytest.raises(ConfigError, match="dwa_temperature"):
        TrialConfig.from_dict({"method": "dwa", "dwa_temperature": 0.0})
    with pytest.raises(ConfigError, match="db_mtl_beta"):
        TrialConfig.from_dict({"method": "db_mtl", "db_mtl_beta": 1.0})
    with pytest.raises(ConfigError, match="famo_lr"):  # another method's key
        TrialConfig.from_dict({"method": "dwa", "famo_lr": 0.1})
    assert TrialConfig.from_dict({"method": "gradnorm"}).effective_grad_mode == "rep"
    assert TrialConfig.from_dict({"method": "db_mtl"}).effective_grad_mode == "param"


# ---------------------------------------------------------------------------------- through Trainer
BASE = {"benchmark": "multidigits", "lr": 3e-3, "batch_size": 500, "device": "cpu"}

#: (method config, epochs before the checkpoint, total epochs): every method's state is exercised
#: (DWA's weights only move from the third epoch; STCH leaves its warm-up after the first).
CONTINUITY = [
    ({"method": "uw"}, 1, 2),
    ({"method": "dwa"}, 2, 3),
    ({"method": "gls"}, 1, 2),
    ({"method": "rlw"}, 1, 2),
    ({"method": "gradnorm"}, 1, 2),
    ({"method": "famo"}, 1, 2),
    ({"method": "db_mtl"}, 1, 2),
    ({"method": "stch", "stch_warmup_epochs": 1}, 1, 2),
]


def _state_after_a_step(name):
    """A method's checkpointed state (parameters and buffers) after one step and one epoch end, 3 tasks."""
    from mtlsearch.balancing import GradBalancing

    cls = METHODS[name]
    extra = {"static_weights": [1.0, 2.0, 3.0]} if "static_weights" in cls.hyperparams else {}
    method = cls(3, **extra)
    losses = torch.tensor([1.0, 2.0, 3.0])
    if issubclass(cls, GradBalancing):
        method(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), losses)
    else:
        method(losses.clone().requires_grad_(True))
    method.on_epoch_end(0, losses)
    return method.state_dict()


def test_every_registered_method_is_documented_and_every_stateful_one_has_a_restore_case():
    """Derived from the registry: a new method with state (learned weights, running averages) cannot
    land without a test that a checkpoint restores it exactly."""
    import test_baselines
    import test_grad_methods
    import test_trainer

    covered = {c["method"] for c, _, _ in CONTINUITY} | {c["method"] for c in test_baselines.CONTINUITY}
    covered |= {c["method"] for c in _param_values(test_grad_methods.test_stateful_and_random_methods_restore_exactly)}
    covered |= {c["method"] for c in _param_values(test_trainer.test_checkpoint_restore_continues_exactly)}
    for name, cls in METHODS.items():
        assert cls.__doc__ and cls.reference, f"{name}: no docstring or reference"
        if _state_after_a_step(name):
            assert name in covered, f"{name} keeps state but has no checkpoint-restore test"


def _param_values(test):
    """The values of a test function's single ``@pytest.mark.parametrize``."""
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    return mark.args[1]


@pytest.mark.parametrize("method,split,total", CONTINUITY, ids=[c["method"] for c, _, _ in CONTINUITY])
def test_trainer_runs_and_checkpoint_restore_continues_exactly(method, split, total):
    cfg = {**BASE, **method, "max_epochs": total}
    straight = list(Trainer(cfg).run())
    first = Trainer(cfg)
    head = list(first.run(split))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Trainer(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    tail = list(resumed.run())
    assert head + tail == straight
    last = straight[-1]
    tasks = ("left", "right", "number")
    assert all(math.isfinite(v) for v in last.values())
    weights = [last[f"weights/{t}"] for t in tasks]
    expected_sum = {"dwa": 3.0, "gradnorm": 3.0, "rlw": 1.0, "famo": 1.0}.get(method["method"])
    if expected_sum is not None:  # epoch means of per-step weights with a fixed sum
        assert sum(weights) == pytest.approx(expected_sum, rel=1e-5)
    if method["method"] == "dwa":
        assert weights != [1.0, 1.0, 1.0]  # the third epoch used the loss ratios


@pytest.mark.parametrize(
    "extra",
    [
        {"method": "gradnorm", "grad_mode": "param"},
        {"method": "db_mtl", "grad_mode": "rep"},
        {"method": "gradnorm", "optimizer": "adam_adatask"},
        {"method": "uw", "optimizer": "adam_adatask"},
    ],
    ids=lambda e: "-".join(str(v) for v in e.values()),
)
def test_other_modes_and_adatask_run(extra):
    trainer = Trainer({**BASE, **extra, "max_epochs": 1})
    (result,) = list(trainer.run())
    assert all(math.isfinite(v) for v in result.values())
    if extra["method"] == "uw":  # the log-variances are trained (through the AdaTask optimizer's heads group)
        assert not torch.equal(trainer.balancing.log_vars.detach(), torch.zeros(3))
