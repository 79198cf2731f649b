"""FAMO: fast adaptive multitask optimization (O(1) per step: no per-task gradients)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import HParam, LossBalancing, Range

#: Added to every loss before the log, as in the released code (its ``min_losses`` are 0).
EPS = 1e-8
#: Adam constants of the logit optimizer (torch.optim.Adam's defaults, as in the released code).
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class FAMO(LossBalancing):
    """Weights ``z = softmax(xi)`` on the log-losses, with logits ``xi`` adapted from the losses' progress.

        total = c * sum_t z_t log L_t,     c = (sum_t z_t / L_t)^(-1)  (treated as a constant),

    so the effective weight on ``L_t`` is ``c z_t / L_t`` (the weights sum to 1) and rescaling a loss
    changes only the step's length, not its direction.  After each step the logits move so that the
    tasks whose log-loss fell least get more weight:

        delta_t = log L_t(before) - log L_t(after),   g = J_softmax(xi)^T delta + gamma * xi,
        xi <- Adam(xi, g; lr = famo_lr)      (gamma = famo_gamma: Adam's L2 weight decay)

    and ``J^T delta = z * (delta - <z, delta>)``: a task whose decrease is above the ``z``-weighted
    average loses weight.  Logits, Adam moments and the previous log-losses are buffers
    (checkpointed); they are not ``nn.Parameter``s, the model's optimizer never touches them.

    Reference: Bo Liu, Yihao Feng, Peter Stone & Qiang Liu, "FAMO: Fast Adaptive Multitask
    Optimization", NeurIPS 2023; released code github.com/Cranial-XIX/FAMO (``famo.py``; LibMTL's
    FAMO is the same).

    ``famo_same_batch`` (the released rule, default under the ``nashmtl`` protocol): "after" is the
    *same* batch re-evaluated after the optimizer step (the trainer's extra forward pass, in train mode
    and without gradients as in the released ``experiments/nyuv2/trainer.py`` lines 145-155, so
    BatchNorm statistics see the batch twice per step, as there), and ``xi`` moves right after each
    step.  Off (the default outside the protocol):

    * **"after" is the next step's batch.**  ``forward`` at step k+1 updates ``xi`` with
      ``delta = log L(step k) - log L(step k+1)``, the losses of two consecutive batches, which costs
      nothing but adds the batch-to-batch noise of the losses to ``delta`` (and the first step of an
      epoch compares with the last step of the previous one); at batch 2 (NYUv2) that noise swamps one
      step's improvement.  The update of ``xi`` thus happens one step later, just before the weights
      are used.

    Other deviations:

    * ``famo_gamma`` defaults to 0.001 (LibMTL's default and FAMO's NYUv2 ``run.sh``); the released
      trainers' default (``experiments/utils.py`` line 71) and its Cityscapes ``run.sh`` use 0.01 (the ``nashmtl`` protocol sets each).
    * The optional per-task minimum losses (``min_losses``, 0 by default in the released code) are 0.

    The released ``WeightMethod.backward`` calls ``clip_grad_norm_`` *before* ``loss.backward()``
    (``methods/weight_methods.py`` lines 77-80), when the gradients are still zero: it clips nothing,
    so there is no clipping here either and this is no deviation.

    TorchJD's ``scalarization.FAMO`` fed, through its ``update``, the next step's losses makes exactly
    our updates (``tests/unit/test_peers.py``).
    """

    name = "famo"
    reference = "Liu et al., FAMO: Fast Adaptive Multitask Optimization, NeurIPS 2023"
    famo_lr = HParam(0.025, Range(gt=0), "Adam learning rate of the task logits")
    famo_gamma = HParam(0.001, Range(ge=0), "weight decay (L2) of the task logits")
    famo_same_batch = HParam(False, help="measure the loss decrease on the same batch re-evaluated after the step (the released rule)")
    # Buffers (registered in __init__; declared here for type checkers).
    logits: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    adam_steps: Tensor
    prev_log_losses: Tensor
    has_prev: Tensor

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("logits", torch.zeros(num_tasks))
        self.register_buffer("exp_avg", torch.zeros(num_tasks))
        self.register_buffer("exp_avg_sq", torch.zeros(num_tasks))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("prev_log_losses", torch.zeros(num_tasks))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))

    def task_weights(self) -> Tensor:
        """``z = softmax(xi)``, the weights on the log-losses."""
        return torch.softmax(self.logits, dim=0)

    def update_logits(self, delta: Tensor, active: Tensor | bool = True) -> None:
        """One Adam step on ``xi`` for the observed log-loss decreases ``delta`` ``[T]``.

        Where ``active`` is false (a bool tensor in :meth:`forward`: selecting on the device avoids a
        host sync per step), the state is left exactly as it is.
        """
        active = torch.as_tensor(active, device=self.logits.device)
        z = self.task_weights()
        grad = z * (delta - (z * delta).sum()) + self.famo_gamma * self.logits
        steps = self.adam_steps + active.long()
        step = steps.clamp_min(1).to(grad.dtype)
        exp_avg = BETA1 * self.exp_avg + (1 - BETA1) * grad
        exp_avg_sq = BETA2 * self.exp_avg_sq + (1 - BETA2) * grad * grad
        denom = (exp_avg_sq / (1 - BETA2**step)).sqrt() + ADAM_EPS
        logits = self.logits - self.famo_lr * exp_avg / (1 - BETA1**step) / denom
        self.adam_steps.copy_(steps)
        self.exp_avg.copy_(torch.where(active, exp_avg, self.exp_avg))
        self.exp_avg_sq.copy_(torch.where(active, exp_avg_sq, self.exp_avg_sq))
        self.logits.copy_(torch.where(active, logits, self.logits))

    @property
    def needs_losses_after_step(self) -> bool:
        return self.famo_same_batch

    def after_step(self, losses: Tensor) -> None:
        """The released rule: ``delta = log L(before the step) - log L(after)`` on the same batch."""
        log_after = torch.log(losses.detach() + EPS).to(self.prev_log_losses)
        self.update_logits(self.prev_log_losses - log_after)

    def forward(self, losses: Tensor) -> Tensor:
        """The weighted loss of one training step (stateful: without ``famo_same_batch`` it first updates
        ``xi`` from the previous step's losses)."""
        log_now = torch.log(losses.detach() + EPS).to(self.prev_log_losses)
        if not self.famo_same_batch:
            # No update on the very first step: there is no previous loss to compare with.
            self.update_logits(self.prev_log_losses - log_now, active=self.has_prev)
        self.prev_log_losses.copy_(log_now)
        self.has_prev.fill_(True)
        z = self.task_weights().to(losses.dtype)
        shifted = losses + EPS
        c = 1.0 / (z / shifted.detach()).sum()
        return c * (z * torch.log(shifted)).sum()
