"""GeMTL's defining properties: the power mean, its limits and its implicit weights."""

import math

import pytest
import torch

from mtlsearch.balancing import GLS, GeMTL, NonPositiveLossError, power_mean
from mtlsearch.balancing.ew import EW


def _grad_direction(method, params):
    """Unit gradient of method(losses) w.r.t. shared params where L_t = ||A_t w||^2."""
    w = torch.nn.Parameter(params.clone())
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(4, w.numel(), generator=g, dtype=w.dtype) * s for s in (0.5, 1.0, 3.0)]
    losses = torch.stack([(m @ w).square().sum() for m in mats])
    method(losses).backward()
    return w.grad / w.grad.norm()


def test_p1_gives_equal_weighting_direction():
    x = torch.randn(6, dtype=torch.float64)
    g_gemtl = _grad_direction(GeMTL(3, p=1.0), x)
    g_ew = _grad_direction(EW(3), x)
    torch.testing.assert_close(g_gemtl, g_ew, rtol=1e-6, atol=1e-9)


def test_p1_is_arithmetic_mean_and_p_minus1_harmonic():
    losses = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)
    assert power_mean(losses, 1.0).item() == pytest.approx(losses.mean().item(), rel=1e-12)
    assert power_mean(losses, -1.0).item() == pytest.approx(3 / (1 / losses).sum().item(), rel=1e-12)


@pytest.mark.parametrize("p", [1e-3, 1e-5, 1e-8, 0.0, -1e-7])
def test_p_to_zero_is_geometric_mean(p):
    losses = torch.tensor([0.01, 1.0, 300.0], dtype=torch.float64)
    geo = losses.log().mean().exp().item()
    # The power mean approaches the geometric mean continuously: error O(|p| var(log L)).
    assert power_mean(losses, p).item() == pytest.approx(geo, rel=max(10 * abs(p), 1e-9) * 30)


@pytest.mark.parametrize("p", [-3.0, -0.5, 0.3, 2.0, 5.0])
def test_implicit_weights_follow_power_law(p):
    losses = torch.tensor([0.2, 1.5, 7.0], requires_grad=True, dtype=torch.float64)
    m = power_mean(losses, p)
    (grad,) = torch.autograd.grad(m, losses)
    expected = (losses.detach() / m.detach()) ** (p - 1) / 3
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=0)
    # p < 1 favours the smaller losses, p > 1 the larger ones.
    assert (grad[0] > grad[2]) == (p < 1)


@pytest.mark.parametrize("p", [1e3, -1e3, 1e6, -1e6])
def test_large_p_is_finite_and_tends_to_max_or_min(p):
    losses = torch.tensor([1e-4, 2.0, 5e3], requires_grad=True)
    m = power_mean(losses, p)
    (grad,) = torch.autograd.grad(m, losses)
    assert torch.isfinite(m) and torch.isfinite(grad).all()
    target = losses.max() if p > 0 else losses.min()
    assert m.item() == pytest.approx(target.item(), rel=0.01)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_non_positive_loss_is_a_clear_error(bad):
    with pytest.raises(NonPositiveLossError, match="positive task losses"):
        power_mean(torch.tensor([1.0, bad]), 0.5)


@pytest.mark.parametrize("method", [GeMTL(2, p=0.5), GLS(2)])
def test_deferred_positivity_check_fails_at_epoch_end_naming_the_task(method):
    """Off the CPU the per-step check would stall the GPU: the lowest losses are kept on the device and
    checked when the epoch ends (forced here with ``defer_check`` so that it runs on a CPU)."""
    method.defer_check = True
    method(torch.tensor([1.0, 2.0]))
    method.on_epoch_end(0, torch.tensor([1.0, 2.0]))  # all positive: no error, tracking starts again
    method(torch.tensor([1.0, -3.0]))  # no error (and no host sync) during the epoch
    method(torch.tensor([0.5, 2.0]))
    with pytest.raises(NonPositiveLossError, match=r"positive task losses.*\(1, -3\.0\)"):
        method.on_epoch_end(1, torch.tensor([0.7, -0.5]))
    method(torch.tensor([1.0, 2.0]))
    method.on_epoch_end(2, torch.tensor([1.0, 2.0]))  # a new epoch starts clean
