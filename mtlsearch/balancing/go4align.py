"""GO4Align: group optimisation for multi-task alignment (risk-guided weights, clustered into groups)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import HParam, LossBalancing, Range


def kmeans_1d(x: np.ndarray, k: int) -> np.ndarray:
    """The optimal k-means clustering of 1-D values ``x``: each value replaced by its cluster's mean.

    In one dimension an optimal clustering splits the sorted values into contiguous runs, so dynamic
    programming over split points finds the global optimum exactly (O(k n^2), n = number of tasks).
    Ties are broken towards fewer, earlier splits, so the result is deterministic.
    """
    n = len(x)
    k = max(1, min(k, n))
    order = np.argsort(x, kind="stable")
    s = x[order].astype(np.float64)
    c1 = np.concatenate([[0.0], np.cumsum(s)])
    c2 = np.concatenate([[0.0], np.cumsum(s * s)])

    def sse(i: int, j: int) -> float:  # values s[i:j]
        m = j - i
        tot = c1[j] - c1[i]
        return max(c2[j] - c2[i] - tot * tot / m, 0.0)

    cost = np.full((k + 1, n + 1), np.inf)
    split = np.zeros((k + 1, n + 1), dtype=int)
    cost[0, 0] = 0.0
    for g in range(1, k + 1):
        for j in range(g, n + 1):
            for i in range(g - 1, j):
                c = cost[g - 1, i] + sse(i, j)
                if c < cost[g, j]:  # strict: the earliest split wins a tie
                    cost[g, j], split[g, j] = c, i
    out = np.empty(n)
    j = n
    for g in range(k, 0, -1):
        i = split[g, j]
        out[order[i:j]] = s[i:j].mean()
        j = i
    return out


class GO4Align(LossBalancing):
    """Risk-guided task indicators, averaged within groups of similar tasks.

    Every step, with ``L`` the (detached) losses of the batch:

        p_t <- p_t exp(-eta L_t) / sum_j p_j exp(-eta L_j)     (p starts at 1/T; eta = go4align_step)
        v_t = (sum_j L_j / L_t) p_t                            (the task's group indicator)
        w   = k-means of the v_t into go4align_groups groups, each task weighted by its group's mean
        total = sum_t w_t L_t

    so tasks whose loss is small relative to the others (and, through ``p``, whose accumulated risk
    is small) get large indicators, and tasks with similar indicators share one weight.  With one
    group every task gets ``mean(v)`` (equal weighting, rescaled); with ``T`` groups ``w = v``.
    ``p`` is a buffer (checkpointed).  The clustering runs on the CPU (T numbers; on a GPU one small
    copy per step).

    Reference: Shen, Wang, Wang, Gong & Zhen, "GO4Align: Group Optimization for Multi-Task
    Alignment", NeurIPS 2024; released code github.com/autumn9999/GO4Align (``methods/cluster_methods.py``,
    ``GO4ALIGN``; ``robust_step_size`` 1e-4 by default).  Deviations:

    * **exact 1-D k-means.**  The released code clusters the indicators with Lloyd's k-means from
      random initial centres (``kmeans_pytorch``), which may stop at a local optimum and makes the
      weights random; here the optimal clustering of the 1-D indicators is computed exactly
      (:func:`kmeans_1d`), so the weights are deterministic.  Where Lloyd's algorithm finds the
      global optimum (well separated indicators), the two agree.
    * ``go4align_groups`` defaults to 2 (the released script's default is 1, which is equal
      weighting rescaled by ``mean(v)``); with fewer tasks than groups each task is its own group.
    """

    name = "go4align"
    reference = "Shen et al., GO4Align: Group Optimization for Multi-Task Alignment, NeurIPS 2024"
    go4align_groups = HParam(2, Range(ge=1), "number of task groups (k of the k-means)")
    go4align_step = HParam(1e-4, Range(ge=0), "step size eta of the exponentiated risk update")
    # Buffers (registered in __init__; declared here for type checkers).
    risk_probs: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("risk_probs", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))

    def group_weights(self, losses: Tensor) -> Tensor:
        """Update the risk probabilities with this step's losses and return the grouped weights ``[T]``."""
        loss = losses.detach().to(self.risk_probs)
        probs = self.risk_probs * torch.exp(-self.go4align_step * loss)
        self.risk_probs.copy_(probs / probs.sum())
        indicators = loss.sum() / loss * self.risk_probs
        if self.go4align_groups == 1:
            w = indicators.mean().expand_as(indicators)
        else:
            w = torch.from_numpy(kmeans_1d(indicators.cpu().numpy(), self.go4align_groups)).to(indicators)
        return w.to(losses.dtype)

    def forward(self, losses: Tensor) -> Tensor:
        return (self.group_weights(losses) * losses).sum()
