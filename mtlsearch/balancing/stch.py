"""Smooth Tchebycheff scalarization (STCH) of the task losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import HParam, LossBalancing, Range

#: Added inside the log, as in the released code.
EPS = 1e-20


class STCH(LossBalancing):
    """Smooth Tchebycheff scalarization of the nadir-normalised log-losses.

        After ``stch_warmup_epochs`` warm-up epochs,

            total = T * mu * logsumexp_t( log(L_t / z_t) / mu ),

        a smooth upper bound of ``T * max_t log(L_t / z_t)`` (``max <= total / T <= max + mu log T``):
        the effective weight on ``log(L_t / z_t)`` is ``T * softmax_t(log(L_t / z_t) / mu)``, which
        concentrates on the task furthest above its reference as ``mu -> 0`` and tends to equal weights
        as ``mu -> inf``.  The reference point ``z_t`` (the paper's "nadir" normalisation) is task t's
        mean training loss over the last warm-up epoch.  During the warm-up, ``total = sum_t log L_t``
        (and ``z`` is not used).  With ``stch_warmup_epochs = 0`` there is no warm-up and ``z = 1``.

        ``z`` and the epoch count are buffers (checkpointed); :meth:`on_epoch_end` sets ``z``.
        Losses must be positive.  Deviation: the released code logs ``L_t / z_t + 1e-20``, we log
        ``L_t + 1e-20`` and subtract ``log z_t`` (``z_t`` floored at 1e-20): equal for any loss that is
        not tiny.

        Reference: Xi Lin, Xiaoyuan Zhang, Zhiyuan Yang, Fei Liu, Zhenkun Wang & Qingfu Zhang, "Smooth
        Tchebycheff Scalarization for Multi-Objective Optimization", ICML 2024; released code
        github.com/Xi-L/STCH (``STCH_MTL/LibMTL/weighting/STCH.py``, defaults ``STCH_mu = 1.0``,
        ``STCH_warmup_epoch = 4``; LibMTL's STCH is the same).  The released code's
        ``STCH_warmup_epoch = 4`` trains epochs 0..4 on the log-sum and takes ``z`` from epoch 4, i.e.
        5 warm-up epochs: our default ``stch_warmup_epochs = 5`` is the same schedule.  The released
        code subtracts the max before the exp; ``torch.logsumexp`` does the equivalent (the released code's
    loss value omits the max; the gradient is the same).  TorchJD's ``scalarization.STCH(mu, weights=1,
    reference=log z)`` on the log-losses is ours divided by T (``tests/unit/test_peers.py``).
    """

    name = "stch"
    reference = "Lin et al., Smooth Tchebycheff Scalarization for Multi-Objective Optimization, ICML 2024"
    stch_mu = HParam(1.0, Range(gt=0), "smoothing parameter mu (-> 0: max of the normalised log-losses)")
    stch_warmup_epochs = HParam(5, Range(ge=0), "epochs on sum_t log L_t first; z_t: the last one's mean loss (0: z = 1)")
    # Buffers (registered in __init__; declared here for type checkers).
    nadir: Tensor
    epochs_seen: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("nadir", torch.ones(num_tasks))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def forward(self, losses: Tensor) -> Tensor:
        log_losses = torch.log(losses + EPS)
        normalised = log_losses - torch.log(self.nadir.clamp_min(EPS).to(losses.dtype))
        stch = self.num_tasks * self.stch_mu * torch.logsumexp(normalised / self.stch_mu, dim=0)
        # Both branches are a few scalar ops; selecting on the device avoids a host sync per step.
        return torch.where(self.epochs_seen < self.stch_warmup_epochs, log_losses.sum(), stch)

    def on_epoch_end(self, epoch: int, train_losses: Tensor) -> None:
        self.epochs_seen += 1
        if int(self.epochs_seen) == self.stch_warmup_epochs:
            self.nadir.copy_(train_losses.detach().to(self.nadir))
