"""Shared plumbing of the gradient-level methods: the float64 Gramian, weights back to torch,
and the solver-failure counter that solver-based methods expose through ``extra_metrics``.

Every gradient-level method here works on the ``T x T`` Gramian ``K = G G^T`` (cheap: one matmul
over ``d``), solved in float64 NumPy on the CPU where T is small; only GradDrop touches ``G``
elementwise.  The Gramian is formed in ``G``'s dtype (float32 for float32 / bf16 inputs, so no
float64 copy of a model-sized matrix is ever made) and then promoted to float64.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import GradBalancing


def gramian(grads: Tensor) -> np.ndarray:
    """``G G^T`` of a ``[T, d]`` gradient matrix as a float64 NumPy array (symmetrised)."""
    g = grads if grads.dtype in (torch.float32, torch.float64) else grads.float()
    k = (g @ g.T).detach().to("cpu", torch.float64).numpy()
    return 0.5 * (k + k.T)


def float_dtype(like: Tensor) -> torch.dtype:
    """float64 for float64 gradients, float32 otherwise (norms of bf16/fp16 gradients accumulate in
    float32): the dtype of norms and of returned weights, so that float32 and float64 both work."""
    return torch.float64 if like.dtype == torch.float64 else torch.float32


def to_weights(w: np.ndarray, like: Tensor) -> Tensor:
    """Weights as a ``[T]`` tensor on ``like``'s device (float32 unless ``like`` is float64)."""
    return torch.as_tensor(np.asarray(w, dtype=np.float64), dtype=float_dtype(like)).to(like.device)


class SolverMethod(GradBalancing):
    """A gradient-level method that runs a numerical solver every step.

    A solver that does not reach its tolerance is never silently replaced by stale weights: the
    step uses what the method's docstring says (usually the solver's last iterate), the failure is
    counted in the buffer ``solver_failures`` (checkpointed) and reported as
    ``<method>/solver_failures`` (cumulative), and a ``RuntimeWarning`` is issued.
    """

    # Buffers (registered in __init__; declared here for type checkers).
    solver_failures: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("solver_failures", torch.zeros((), dtype=torch.long))

    def _solver_failed(self, message: str) -> None:
        self.solver_failures += 1
        # One message text per kind of failure, so Python's default filter shows it once per
        # place; the counter has every occurrence.
        warnings.warn(f"{self.name}: {message}; counted in {self.name}/solver_failures", RuntimeWarning, stacklevel=3)

    def extra_metrics(self) -> dict[str, float]:
        return {f"{self.name}/solver_failures": float(self.solver_failures)}
