"""The shape of a peer check: one row per (method, mode), compared with an independent implementation.

``tests/test_peers.py`` runs every row on every case of :func:`cases` and fails for a registered method
(and mode) without a row.  Rows live in ``test_peers.py`` and, for the methods added later, in
``tests/peer_rows_*.py`` modules exporting ``ROWS: list[Peer]``.
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
