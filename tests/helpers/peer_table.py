"""The shape of a peer check: one row per (method, mode), compared with an independent implementation.

``tests/unit/test_peers.py`` runs every row on every case of :func:`cases` and fails for a registered method
(and mode) without a row.  Rows live in ``test_peers.py`` and, for the methods added later, in
``tests/helpers/peer_rows_*.py`` modules exporting ``ROWS: list[Peer]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor


@dataclass(frozen=True)
class Case:
    """A random gradient matrix ``G`` ([T, D], float64) with positive losses ``[T]``, by fixed seed."""

    name: str
    grads: Tensor
    losses: Tensor
    seed: int


@dataclass(frozen=True)
class Peer:
    method: str  #: registry name (``mtlsearch.balancing.METHODS``)
    mode: str | None  #: grad_mode for gradient-level methods, None for loss-level ones
    peer: str  #: what we compare with: "torchjd.aggregation.UPGrad", "released code formula (repo, file)", ...
    tolerance: float  #: the largest allowed difference that ``compare`` may return
    note: str  #: the documented design choice behind any remaining difference ("" when none)
    #: Runs ours and the peer on one case and returns their largest absolute difference (or raises
    #: AssertionError for checks by defining property, e.g. of randomised methods).
    compare: Callable[[Case], float]


# ------------------------------------------------------------------------------- the standard cases
#: Numbers of tasks and kinds of gradient matrix of the standard cases (issue 11).
TASK_COUNTS = (2, 3, 5, 10)
KINDS = ("conflicting", "colinear", "one_large", "identical", "opposite")
#: Dimension of the gradients (larger than every T, so that generic G has full row rank).
DIM = 24


def make_case(kind: str, t: int, seed: int) -> Case:
    """One standard case: ``kind`` of ``KINDS``, ``t`` tasks, a fixed seed."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(t, DIM, generator=gen, dtype=torch.float64)
    if kind == "conflicting":  # task 0 pulls against the others' sum (every pair may conflict)
        if t > 1:
            g[0] = -g[1:].sum(0) / (t - 1) ** 0.5 + 0.3 * g[0]
    elif kind == "colinear":  # one direction, different lengths, 1 % noise
        scale = 0.5 + torch.rand(t, 1, generator=gen, dtype=torch.float64)
        g = scale * g[:1] + 0.01 * torch.randn(t, DIM, generator=gen, dtype=torch.float64)
    elif kind == "one_large":  # task 0's gradient 100x the others'
        g[0] *= 100.0
    elif kind == "identical":
        g[1] = g[0]
    elif kind == "opposite":
        g[1] = -g[0]
    else:
        raise ValueError(f"unknown case kind {kind!r}; choose one of {KINDS}")
    losses = torch.exp(torch.randn(t, generator=gen, dtype=torch.float64))  # positive, spread over ~e^±2
    return Case(name=f"{kind}-T{t}", grads=g, losses=losses, seed=seed)


_CASES: list[Case] = []


def cases() -> list[Case]:
    """The standard cases: every kind for every T of ``TASK_COUNTS`` (fixed seeds; built once)."""
    if not _CASES:
        _CASES.extend(make_case(kind, t, seed=1000 * t + i) for t in TASK_COUNTS for i, kind in enumerate(KINDS))
    return _CASES


def rel_diff(ours, peer) -> float:
    """Largest absolute difference of two tensors, relative to the larger of their largest entries
    (0 when both are 0): scale-free, so a 100x task does not hide or inflate a difference."""
    import torch

    a = torch.as_tensor(ours, dtype=torch.float64).detach().cpu()
    b = torch.as_tensor(peer, dtype=torch.float64).detach().cpu()
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    scale = max(float(a.abs().max()), float(b.abs().max())) if a.numel() else 0.0
    return 0.0 if scale == 0.0 else float((a - b).abs().max()) / scale
