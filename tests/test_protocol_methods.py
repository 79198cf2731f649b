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
