"""Dynamic weight average (DWA): weights from the recent rate of change of each task's loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import HParam, LossBalancing


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
    """

    name = "dwa"
    reference = "Liu, Johns & Davison, End-to-End Multi-Task Learning with Attention, CVPR 2019"
    hyperparams = {
        "dwa_temperature": HParam(
            float, 2.0, "softmax temperature T of the loss-ratio weights", check=lambda v: v > 0, allowed="a number > 0"
        ),
    }
    # Set by Balancing.__init__ from ``hyperparams`` (declared here for type checkers).
    dwa_temperature: float
    # Buffers (registered in __init__; declared here for type checkers).
    loss_history: Tensor
    epochs_seen: Tensor
    weights: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        #: Row 0: mean training losses of the second-to-last epoch; row 1: of the last epoch.
        self.register_buffer("loss_history", torch.ones(2, num_tasks))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        #: The weights of the current epoch (set at each epoch's end).
        self.register_buffer("weights", torch.ones(num_tasks))

    def forward(self, losses: Tensor) -> Tensor:
        return (self.weights.to(losses.dtype) * losses).sum()

    def on_epoch_end(self, epoch: int, train_losses: Tensor) -> None:
        latest = train_losses.detach().to(self.loss_history)
        self.loss_history.copy_(torch.stack([self.loss_history[1], latest]))
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            ratio = self.loss_history[1] / self.loss_history[0]
            self.weights.copy_(self.num_tasks * torch.softmax(ratio / self.dwa_temperature, dim=0))
