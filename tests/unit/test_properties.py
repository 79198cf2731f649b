"""Shared property checks of every gradient-level method, on random Jacobians (TorchJD's style).

The method list comes from the registry (``METHODS``), so a new gradient-level method is checked
as soon as it is registered.  Each property is a function of a method's output on random
Jacobians ``G`` (``[T, d]``, fixed seeds, T = 2..5, one case with T > d):

* structure (every method): weights ``[T]`` in ``float_dtype(G)`` or a direction ``[d]`` in
  ``G``'s dtype, finite, for float32 and float64;
* ``permutation``: permuting the tasks permutes the weights and leaves the direction unchanged
  (fresh instances, the same seed, one and three steps: per-task state is permuted along);
* ``non_conflicting``: ``<g_t, d> >= 0`` for every task (to ``1e-5 max_t ||g_t||^2``);
* ``equal_projections``: ``<g_t / ||g_t||, d>`` is the same for every task (IMTL-G's definition);
* ``homogeneous`` / ``scale_invariant``: ``d(cG) = c d(G)`` / ``d(cG) = d(G)`` for c = 0.1, 10;
* ``task_scale_invariant_direction``: scaling each task's gradient by its own ``s_t > 0`` leaves
  the direction unchanged up to a positive factor (on Jacobians of full row rank).

``CLAIMS`` says which method has which property at its default hyperparameters.  The table is
asserted both ways: a claimed property must hold on every case, and an unclaimed one must fail on
at least one case (so a method that gains or loses a property makes the table be updated, and an
exception is never silently skipped).  ``python tests/unit/test_properties.py`` prints the table.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's mtlsearch

from mtlsearch.balancing import METHODS, GradBalancing, GradResult
from mtlsearch.balancing._common import float_dtype

GRAD_METHODS = sorted(name for name, cls in METHODS.items() if issubclass(cls, GradBalancing))

#: Why a method is not permutation-equivariant (the rest are, which the test asserts).
NOT_PERMUTATION_EQUIVARIANT = {
    "pcgrad": "projects each task's gradient in a random order of the tasks: the same seed on permuted tasks visits them in another order",
    "gradvac": "visits the other tasks in a random order (as PCGrad), so permuted tasks are processed in another order",
}

#: Why a method has neither scale behaviour (the rest are homogeneous or scale-invariant).
NO_SCALE_BEHAVIOUR = {
    "sdmgrad": "homogeneous in exact arithmetic, but the 1e-8 in its Gramian normalisation, amplified by 20 "
    "projected momentum steps, moves the update by ~2e-3 (relative) at 0.1x the gradients",
}

#: Property -> the methods that claim it (at their default hyperparameters).
CLAIMS: dict[str, set[str]] = {
    "permutation": set(GRAD_METHODS) - set(NOT_PERMUTATION_EQUIVARIANT),
    # MGDA: the min-norm point of the hull; UPGrad: projections onto the dual cone; Nash-MTL and
    # FairGrad: (K w)_t = 1 / w_t resp. w_t^(-1/alpha) > 0.  CAGrad (c = 0.5), PCGrad for T > 2,
    # IMTL-G (equal projections, but negative on IMTL_G_CONFLICT), ... conflict on some cases.
    "non_conflicting": {"mgda", "upgrad", "nash_mtl", "fairgrad"},
    # IMTL-H on a fresh instance (s = 0) is IMTL-G.
    "equal_projections": {"imtl_g", "imtl_h"},
    # Weights that do not depend on the gradients' overall scale; the update norm follows the gradients'.
    "homogeneous": {
        "aligned_mtl",
        "cagrad",
        "db_mtl",
        "excess_mtl",
        "graddrop",
        "gradnorm",
        "gradvac",
        "imtl_g",
        "imtl_h",
        "mgda",
        "pcgrad",
        "upgrad",
    },
    # Nash-MTL: norm sqrt(T) before clipping; FairGrad (alpha = 1) is Nash-MTL's direction; MoCo
    # rescales each gradient to its loss.
    "scale_invariant": {"fairgrad", "moco", "nash_mtl"},
    # DB-MTL and MoCo normalise each gradient; the Nash-MTL / FairGrad equations hold with w_t / s_t;
    # IMTL-G's equal projections on the unit gradients fix the direction (METHODS.md).
    "task_scale_invariant_direction": {"db_mtl", "fairgrad", "imtl_g", "imtl_h", "moco", "nash_mtl"},
}


# ------------------------------------------------------------------------------------------ cases
IMTL_G_CONFLICT = [
    [1.1075743093115848, 0.6577959114975617, -0.04232130616101405],
    [0.4580395747027767, 0.14479984766508044, -1.419477861150362],
    [2.04391411380896, 0.9638077472303509, 0.3278113948462841],
]


def _cases(dtype: torch.dtype = torch.float64, full_rank: bool = False) -> list[tuple[Tensor, Tensor]]:
    """Random Jacobians and positive losses, fixed seeds; ``full_rank``: only those with T <= d."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for t, d in ((2, 5), (3, 8), (5, 20), (4, 3)):
        for _ in range(2):
            g = torch.randn(t, d, generator=gen, dtype=torch.float64).to(dtype)
            losses = (torch.rand(t, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
            if not full_rank or t <= d:
                out.append((g, losses))
    # Gradients on which IMTL-G's equal projections are all negative (its weights sum to 1 but the
    # update conflicts with every task): found by a search over random 3 x 3 Jacobians.
    g = torch.tensor(IMTL_G_CONFLICT, dtype=torch.float64).to(dtype)
    out.append((g, torch.ones(3, dtype=dtype)))
    return out


def _result(name: str, g: Tensor, losses: Tensor, steps: int = 1, seed: int = 0) -> GradResult:
    """A fresh instance's result after ``steps`` steps on the same ``(g, losses)`` (seeded)."""
    torch.manual_seed(seed)
    method = METHODS[name](g.shape[0])
    if g.dtype == torch.float64:
        method = method.double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a solver failure is counted, not the point here
        for _ in range(steps):
            result = method(g, losses)
    return result


def _direction(name: str, g: Tensor, losses: Tensor, steps: int = 1) -> Tensor:
    return _direction_of(_result(name, g, losses, steps), g)


def _direction_of(result: GradResult, g: Tensor) -> Tensor:
    if result.weights is not None:
        return result.weights @ g
    assert result.direction is not None
    return result.direction


def _close(a: Tensor, b: Tensor, tol: float, g: Tensor) -> bool:
    """``a`` equals ``b`` to ``tol`` relative to ``b``, plus 1e-9 of the gradients' scale (where a
    positive combination of the gradients vanishes, e.g. T > d, the update is ~0 and its entries
    are rounding: Nash-MTL's weights are then ~1e5 and ``w @ G`` cancels)."""
    return float((a - b).abs().max()) <= tol * float(b.abs().max()) + 1e-9 * float(g.abs().max())


# ------------------------------------------------------------------- properties (failing cases)
def _permutation(name: str) -> list[str]:
    failures = []
    for i, (g, losses) in enumerate(_cases()):
        p = torch.randperm(g.shape[0], generator=torch.Generator().manual_seed(i + 1))
        for steps in (1, 3):
            r, rp = _result(name, g, losses, steps), _result(name, g[p], losses[p], steps)
            d, dp = _direction_of(r, g), _direction_of(rp, g[p])
            if not _close(dp, d, 1e-5, g):
                failures.append(f"case {i} ({steps} steps): the direction changed")
            if r.weights is not None and rp.weights is not None and not _close(rp.weights, r.weights[p], 1e-5, r.weights):
                failures.append(f"case {i} ({steps} steps): the weights were not permuted with the tasks")
    return failures


def _non_conflicting(name: str) -> list[str]:
    failures = []
    for i, (g, losses) in enumerate(_cases()):
        d = _direction(name, g, losses)
        inner = g @ d
        # Relative to the gradients' scale, not to ||d||: where a positive combination of the
        # gradients vanishes, d is ~0 and its products are rounding (FairGrad, case 6).
        floor = -1e-5 * float(g.norm(dim=1).max()) ** 2
        if float(inner.min()) < floor:
            failures.append(f"case {i}: <g_t, d> = {inner.min().item():.3g} for some task")
    return failures


def _equal_projections(name: str) -> list[str]:
    failures = []
    for i, (g, losses) in enumerate(_cases()):
        proj = (g / g.norm(dim=1, keepdim=True)) @ _direction(name, g, losses)
        if float(proj.max() - proj.min()) > 1e-6 * max(float(proj.abs().max()), 1.0):
            failures.append(f"case {i}: projections {proj.tolist()}")
    return failures


def _scaling(degree: int) -> Callable[[str], list[str]]:
    def check(name: str) -> list[str]:
        failures = []
        for i, (g, losses) in enumerate(_cases()):
            d = _direction(name, g, losses)
            for c in (0.1, 10.0):
                if not _close(_direction(name, c * g, losses), c**degree * d, 1e-4, c**degree * g):
                    failures.append(f"case {i}: d({c} G) != {c}^{degree} d(G)")
        return failures

    return check


def _task_scale_invariant_direction(name: str) -> list[str]:
    failures = []
    for i, (g, losses) in enumerate(_cases(full_rank=True)):
        s = 0.1 + 10 * torch.rand(g.shape[0], generator=torch.Generator().manual_seed(i + 1), dtype=g.dtype)
        d, ds = _direction(name, g, losses), _direction(name, s[:, None] * g, losses)
        cos = float(d @ ds) / max(float(d.norm() * ds.norm()), 1e-300)
        if cos < 1 - 1e-6:
            failures.append(f"case {i}: cos(d, d_scaled) = {cos:.6g}")
    return failures


CHECKS: dict[str, Callable[[str], list[str]]] = {
    "permutation": _permutation,
    "non_conflicting": _non_conflicting,
    "equal_projections": _equal_projections,
    "homogeneous": _scaling(1),
    "scale_invariant": _scaling(0),
    "task_scale_invariant_direction": _task_scale_invariant_direction,
}


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", GRAD_METHODS)
def test_output_structure(name: str, dtype: torch.dtype):
    for g, losses in _cases(dtype):
        result = _result(name, g, losses)
        assert result.weights is not None or result.direction is not None, name
        if result.weights is not None:
            assert result.weights.shape == (g.shape[0],) and result.weights.dtype == float_dtype(g), name
            assert result.weights.isfinite().all(), name
        if result.direction is not None:
            assert result.direction.shape == (g.shape[1],) and result.direction.dtype == g.dtype, name
            assert result.direction.isfinite().all(), name


@pytest.mark.parametrize("prop", sorted(CHECKS))
@pytest.mark.parametrize("name", GRAD_METHODS)
def test_claimed_properties_hold_and_unclaimed_ones_fail(name: str, prop: str):
    failures = CHECKS[prop](name)
    if name in CLAIMS[prop]:
        assert not failures, f"{name} claims {prop}, but: {failures[:3]}"
    else:
        assert failures, f"{name} has {prop} on every case although CLAIMS does not say so: add it to CLAIMS[{prop!r}]"


def test_the_claims_table_names_registered_methods_and_a_scale_behaviour_for_each():
    for prop, names in CLAIMS.items():
        assert names <= set(GRAD_METHODS), f"{prop}: {sorted(names - set(GRAD_METHODS))} are not gradient-level methods"
    assert set(NOT_PERMUTATION_EQUIVARIANT) <= set(GRAD_METHODS)
    # Every method states how its update follows the gradients' overall scale (or is named here).
    assert CLAIMS["homogeneous"] | CLAIMS["scale_invariant"] | set(NO_SCALE_BEHAVIOUR) == set(GRAD_METHODS)
    assert not CLAIMS["homogeneous"] & set(NO_SCALE_BEHAVIOUR) and not CLAIMS["scale_invariant"] & set(NO_SCALE_BEHAVIOUR)


def table() -> str:
    props = sorted(CHECKS)
    rows = [["method", *props]]
    for name in GRAD_METHODS:
        rows.append([name, *("yes" if name in CLAIMS[p] else "-" for p in props)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines += ["", *(f"not permutation-equivariant: {k}: {v}" for k, v in NOT_PERMUTATION_EQUIVARIANT.items())]
    lines += [f"no scale behaviour: {k}: {v}" for k, v in NO_SCALE_BEHAVIOUR.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
