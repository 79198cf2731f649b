"""Dynamic weight average (DWA): weights from the recent rate of change of each task's loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import HParam, LossBalancing, Range


class DWA(LossBalancing):
    """``total = sum_t w_t L_t`` with, in epoch ``k >= 2`` (0-based),

        r_t = Lbar_t(k-1) / Lbar_t(k-2),    w = T * softmax(r / temperature)

    where ``Lbar_t(j)`` is task t's mean training loss over epoch ``j``; ``w = 1`` in the first two
    epochs.  The weights sum to T; a task whose loss fell least (largest ratio) gets the largest
    weight; a large temperature tends to equal weighting.  Weights are constant within an epoch.

    The last two epochs' mean losses and the current weights live in buffers (``loss_history``,
    ``epochs_seen``, ``weights``), updated by :meth:`on_epoch_end`, so they are checkpointed with
    the method's state.

    Reference: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019
    (released code: github.com/lorenmt/mtan, temperature 2).  As in that code, ``Lbar`` is the mean
    of the per-batch training losses over the epoch.

    ``dwa_window = N > 0``: Nash-MTL's DWA (github.com/AvivNavon/nash-mtl, ``methods/weight_methods.py``
    lines 744-790, N = 25), which produced the Nash-MTL-protocol tables' DWA numbers.  The last 2N
    per-step losses (a buffer initialised to ones) give ``r = mean(last N) / mean(the N before)``; the
    weights ``T * softmax(r / temperature)`` are recomputed at every step once more than N steps were
    seen (the step's own losses included), ones before; and the total is the *mean* ``(1/T) sum_t w_t L_t``
    (the weights reported are thus ``w_t / T``).
    """

    name = "dwa"
    reference = "Liu, Johns & Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019"
    dwa_temperature = HParam(2.0, Range(gt=0), "softmax temperature T of the loss-ratio weights")
    dwa_window = HParam(0, Range(ge=0), "0: MTAN's epoch rule; N: Nash-MTL's rule over windows of N steps")
    # Buffers (registered in __init__; declared here for type checkers).
    loss_history: Tensor
    epochs_seen: Tensor
    weights: Tensor
    costs: Tensor
    steps_seen: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        #: Row 0: mean training losses of the second-to-last epoch; row 1: of the last epoch.
        self.register_buffer("loss_history", torch.ones(2, num_tasks))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        #: The weights of the current epoch (set at each epoch's end).
        self.register_buffer("weights", torch.ones(num_tasks))
        #: Windowed rule: the last 2N per-step losses (oldest first) and the steps seen.
        # Checkpointed only with the windowed rule (a checkpoint of the epoch rule keeps its old keys).
        windowed = self.dwa_window > 0
        self.register_buffer("costs", torch.ones(2 * self.dwa_window, num_tasks), persistent=windowed)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long), persistent=windowed)

    def forward(self, losses: Tensor) -> Tensor:
        if self.dwa_window == 0:
            return (self.weights.to(losses.dtype) * losses).sum()
        n = self.dwa_window
        self.costs.copy_(torch.cat([self.costs[1:], losses.detach().to(self.costs).view(1, -1)]))
        ratio = self.costs[n:].mean(0) / self.costs[:n].mean(0)
        fresh = self.num_tasks * torch.softmax(ratio / self.dwa_temperature, dim=0)
        self.weights.copy_(torch.where(self.steps_seen > n, fresh, self.weights))
        self.steps_seen += 1
        return (self.weights.to(losses.dtype) * losses).mean()

    def on_epoch_end(self, epoch: int, train_losses: Tensor) -> None:
        if self.dwa_window > 0:
            return
        latest = train_losses.detach().to(self.loss_history)
        self.loss_history.copy_(torch.stack([self.loss_history[1], latest]))
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            ratio = self.loss_history[1] / self.loss_history[0]
            self.weights.copy_(self.num_tasks * torch.softmax(ratio / self.dwa_temperature, dim=0))
