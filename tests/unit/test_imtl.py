"""IMTL's defining properties: equal projections (IMTL-G), s_t -> -log L_t (IMTL-L), scale
invariance once s_t has adapted (IMTL-H), finite weights in singular cases, and training runs."""

import math

import pytest
import torch

from mtlsearch import Trainer
from mtlsearch.balancing import IMTLG, IMTLH, IMTLL


def _random_grads(t, d=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-2, 2, t, dtype=torch.float64)[torch.randperm(t, generator=g)]
    return torch.randn(t, d, generator=g, dtype=torch.float64) * scales[:, None]


def _projections(alpha, grads, rows=None):
    """Projections of the update ``alpha @ G`` on the unit gradients (of ``rows``, default all)."""
    update = alpha @ grads
    on = grads if rows is None else grads[rows]
    return on @ update / on.norm(dim=1)


@pytest.mark.parametrize("t", range(2, 9))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imtl_g_gives_equal_projections_and_unit_sum(t, seed):
    grads = _random_grads(t, seed=seed)
    alpha = IMTLG(t)(grads, torch.ones(t)).weights
    assert alpha.dtype == torch.float64
    proj = _projections(alpha, grads)
    assert proj.mean() > 0
    torch.testing.assert_close(proj, proj.mean().expand(t), rtol=1e-5, atol=0)
    assert alpha.sum().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("t", [2, 3, 5])
def test_imtl_g_matches_the_papers_closed_form(t):
    grads = _random_grads(t, seed=7)
    units = grads / grads.norm(dim=1, keepdim=True)
    d_mat, u_mat = grads[:1] - grads[1:], units[:1] - units[1:]
    tail = grads[0] @ u_mat.T @ torch.linalg.inv(d_mat @ u_mat.T)
    paper = torch.cat([1 - tail.sum().view(1), tail])
    torch.testing.assert_close(IMTLG(t)(grads, torch.ones(t)).weights, paper, rtol=1e-7, atol=1e-10)


def _check_singular(grads, nonzero):
    t = grads.shape[0]
    with torch.autograd.set_detect_anomaly(False):
        method = IMTLG(t)
        alpha = method(grads, torch.ones(t)).weights
    assert torch.isfinite(alpha).all()
    assert alpha.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert method.extra_metrics() == {"imtl_g/solver_failures": 0.0}
    proj = _projections(alpha, grads, nonzero)
    scale = grads.norm(dim=1).max()
    assert (proj - proj.mean()).abs().max() <= 1e-9 * scale
    return alpha


def test_imtl_g_singular_cases_are_finite():
    g = _random_grads(3, d=6, seed=3)
    # Two identical gradients share their weight equally.
    alpha = _check_singular(torch.stack([g[0], g[1], g[1]]), [0, 1, 2])
    assert alpha[1].item() == pytest.approx(alpha[2].item(), rel=1e-9)
    # Two parallel gradients of different norms (D U^T singular in the paper's form).
    _check_singular(torch.stack([g[0], 3 * g[1], g[1], g[2]]), [0, 1, 2, 3])
    # A zero gradient gets weight 0; the others keep equal projections.
    alpha = _check_singular(torch.stack([g[0], torch.zeros_like(g[0]), g[2]]), [0, 2])
    assert alpha[1].item() == 0.0
    # Opposite gradients: equal weights, a zero update (the only equal projection).
    alpha = _check_singular(torch.stack([g[0], -g[0]]), [0, 1])
    torch.testing.assert_close(alpha, torch.tensor([0.5, 0.5], dtype=torch.float64))
    # T = 1, all zero, more tasks than dimensions.
    assert IMTLG(1)(g[:1], torch.ones(1)).weights.tolist() == [1.0]
    assert torch.isfinite(IMTLG(3)(torch.zeros(3, 4), torch.ones(3)).weights).all()
    alpha = IMTLG(6)(torch.randn(6, 3, dtype=torch.float64), torch.ones(6)).weights
    assert torch.isfinite(alpha).all() and alpha.sum().item() == pytest.approx(1.0)


def test_imtl_g_falls_back_and_counts_when_no_solution_exists():
    # Unit directions whose equal-projection combination K^-1 n has mixed signs; norms chosen so
    # that its weights sum to 0: no alpha with sum(alpha) = 1 has equal projections.
    units = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]], dtype=torch.float64), dim=1)
    units = torch.cat([units, torch.tensor([[0.1], [0.0], [-0.1]], dtype=torch.float64)], dim=1)
    units = torch.nn.functional.normalize(units, dim=1)
    v = torch.linalg.solve(units @ units.T, torch.ones(3, dtype=torch.float64))  # beta for unit norms
    assert (v > 0).any() and (v < 0).any()
    pos, neg = v[v > 0].sum(), -v[v < 0].sum()
    norms = torch.where(v > 0, torch.ones_like(v), neg / pos)  # sum_t v_t / n_t = pos - pos = 0
    assert abs((v / norms).sum().item()) < 1e-12
    grads = units * norms[:, None]
    method = IMTLG(3)
    with pytest.warns(RuntimeWarning, match="imtl_g"):
        alpha = method(grads, torch.ones(3)).weights
    torch.testing.assert_close(alpha, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert method.extra_metrics() == {"imtl_g/solver_failures": 1.0}


def _problem(scale_last=1.0):
    """Shared parameters theta and three quadratic task losses of very different sizes."""
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(5, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    targets = [torch.randn(5, generator=g, dtype=torch.float64) * s for s in (1.0, 10.0, 0.1)]
    theta = torch.randn(8, generator=g, dtype=torch.float64)

    def losses(th):
        out = torch.stack([(m @ th - y).square().mean() for m, y in zip(mats, targets)])
        return out * torch.tensor([1.0, 1.0, scale_last], dtype=torch.float64)

    return theta, losses


def _shared_update(method, scale_last, adapt_s):
    theta, losses_fn = _problem(scale_last)
    theta = theta.clone().requires_grad_(True)
    raw = losses_fn(theta)
    if adapt_s:
        with torch.no_grad():
            method.s.copy_(-raw.detach().log())
    scaled = method.transform_losses(raw)
    grads = torch.stack([torch.autograd.grad(scaled[t], theta, retain_graph=True)[0] for t in range(3)])
    alpha = method(grads, scaled.detach()).weights
    return alpha @ grads


def test_imtl_g_keeps_direction_but_not_norm_when_a_loss_is_rescaled():
    base = _shared_update(IMTLG(3), 1.0, adapt_s=False)
    scaled = _shared_update(IMTLG(3), 100.0, adapt_s=False)
    cos = (base @ scaled) / (base.norm() * scaled.norm())
    assert cos.item() == pytest.approx(1.0, abs=1e-10)
    assert abs(scaled.norm().item() / base.norm().item() - 1.0) > 0.01


def test_imtl_h_is_scale_invariant_once_s_has_adapted():
    base = _shared_update(IMTLH(3).double(), 1.0, adapt_s=True)
    for factor in (1e-3, 100.0):
        scaled = _shared_update(IMTLH(3).double(), factor, adapt_s=True)
        torch.testing.assert_close(scaled, base, rtol=1e-8, atol=1e-12)  # direction and norm
    # Without adapted scales (s = 0) the update does depend on the loss scale.
    unadapted = _shared_update(IMTLH(3).double(), 100.0, adapt_s=False)
    assert not torch.allclose(unadapted, _shared_update(IMTLH(3).double(), 1.0, adapt_s=False), rtol=1e-3)


def test_imtl_h_scale_gradient_vanishes_at_s_equal_minus_log_loss():
    method = IMTLH(3)
    losses = torch.tensor([0.5, 20.0, 3e-3])
    with torch.no_grad():
        method.s.copy_(-losses.log())
    method.transform_losses(losses).sum().backward()
    torch.testing.assert_close(method.s.grad, torch.zeros(3), atol=1e-6, rtol=0)
    assert method.transform_losses(losses)[0].item() == pytest.approx(1 + math.log(0.5), rel=1e-6)


def test_imtl_l_learns_s_equal_minus_log_loss_and_weights_exp_s():
    losses = torch.tensor([0.2, 5.0, 80.0])
    method = IMTLL(3)
    opt = torch.optim.LBFGS(method.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        total = method(losses)
        total.backward()
        return total

    opt.step(closure)
    torch.testing.assert_close(method.s.detach(), -losses.log(), atol=1e-3, rtol=0)
    # The effective task weights are e^{s_t}: every scaled loss is 1 at the optimum.
    x = losses.clone().requires_grad_(True)
    (w,) = torch.autograd.grad(method(x), x)
    torch.testing.assert_close(w * losses, torch.ones(3), atol=1e-2, rtol=0)


BASE = {"benchmark": "multidigits", "lr": 3e-3, "max_epochs": 2, "device": "cpu", "batch_size": 256}


@pytest.mark.parametrize(
    "method, mode, optimizer",
    [
        ("imtl_l", None, "adam"),
        ("imtl_l", None, "adam_adatask"),
        ("imtl_g", "rep", "adam"),
        ("imtl_g", "param", "adam"),
        ("imtl_g", "rep", "adam_adatask"),
        ("imtl_g", "param", "adam_adatask"),
        ("imtl_h", "rep", "adam"),
        ("imtl_h", "param", "adam"),
        ("imtl_h", "rep", "adam_adatask"),
        ("imtl_h", "param", "adam_adatask"),
    ],
)
def test_imtl_trains_end_to_end(method, mode, optimizer):
    cfg = {**BASE, "method": method, "optimizer": optimizer, **({"grad_mode": mode} if mode else {})}
    trainer = Trainer(cfg)
    results = list(trainer.run())
    assert len(results) == 2
    for r in results:
        assert all(math.isfinite(v) for v in r.values())
    last = results[-1]
    # The dominant regression loss falls from the first to the second epoch.
    assert last["train/number/loss"] < results[0]["train/number/loss"]
    weights = [last[f"weights/{t}"] for t in trainer.task_names]
    if method == "imtl_l":
        # weights e^{s_t}; s of the large regression loss went down, as -log L_t does
        assert weights[2] < 1.0 and min(weights) > 0
    else:
        assert sum(weights) == pytest.approx(1.0, abs=1e-4)  # mean over steps of sum(alpha) = 1
        assert last[f"{method}/solver_failures"] == 0.0
    if method in ("imtl_l", "imtl_h"):
        s = trainer.balancing.s.detach()
        assert s[2] < 0 and not torch.equal(s, torch.zeros(3))


@pytest.mark.parametrize("mode", ["rep", "param"])
def test_trainer_gives_imtl_h_heads_and_scales_their_own_scaled_loss_gradients(mode):
    import copy

    trainer = Trainer({**BASE, "method": "imtl_h", "grad_mode": mode})
    with torch.no_grad():
        trainer.balancing.s.copy_(torch.tensor([0.3, -0.2, -2.0]))
    x, targets = next(iter(trainer.splits["train"].batches(64, shuffle=False)))
    model, s = copy.deepcopy(trainer.model), trainer.balancing.s.detach().clone()
    trainer.train_step(x, targets)

    # Recompute on the pre-step copy: scaled losses e^s L - s, their per-task gradients.
    z = model.encoder(x)
    losses = torch.stack([spec.loss(model.heads[spec.name](z), targets[spec.name]) for spec in trainer.tasks])
    scaled = torch.exp(s) * losses - s
    torch.testing.assert_close(trainer.balancing.s.grad, torch.exp(s) * losses.detach() - 1)
    for t, spec in enumerate(trainer.tasks):
        head = list(model.heads[spec.name].parameters())
        expected = torch.autograd.grad(scaled[t], head, retain_graph=True)
        got = [p.grad for p in trainer.model.heads[spec.name].parameters()]
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)  # not alpha-weighted
    # Shared part: alpha from IMTL-G on the scaled losses' gradients (w.r.t. z or the encoder).
    enc = list(model.encoder.parameters())
    wrt = [z] if mode == "rep" else enc
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(scaled[t], wrt, retain_graph=True)]) for t in range(3)]
    alpha = IMTLG(3)(torch.stack(rows), scaled.detach()).weights
    expected = torch.autograd.grad((alpha.detach() * scaled).sum(), enc)
    for e, p in zip(expected, trainer.model.encoder.parameters()):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)
