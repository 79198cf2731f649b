"""GradNorm: learned task weights that equalise the tasks' gradient norms, scaled by training rates."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import float_dtype
from .base import GradBalancing, GradResult, HParam, Range

#: Floor of a weight after the gradient step (before renormalising), so no task is switched off.
MIN_WEIGHT = 1e-3
#: Floor of the first-step losses in the loss ratios (task losses should be positive).
TINY = 1e-12


class GradNorm(GradBalancing):
    """Task weights ``w`` (sum T) adapted every step by a gradient step on the GradNorm loss.

    With ``n_t = ||dL_t/dW||`` (the rows of ``G``), ``G_t = w_t n_t``, ``Gbar = mean_t G_t``, the loss
    ratios ``Lt_t = L_t / L_t(0)`` and the relative inverse training rates ``r_t = Lt_t / mean(Lt)``:

        L_grad = sum_t | G_t - Gbar * r_t^alpha |      (the target Gbar * r^alpha held constant)
        w <- w - gradnorm_lr * dL_grad/dw = w - gradnorm_lr * sign(G_t - target_t) * n_t
        w <- T * w / sum(w)          (after flooring each weight at MIN_WEIGHT)

    A task that trains slowly (``r_t > 1``) or whose weighted gradient is small gets more weight;
    ``alpha = 0`` just equalises the weighted gradient norms.  The step uses the weights *before*
    this update (the paper's order: the network steps with ``w(t)``, then ``w(t+1)`` is computed);
    the result is ``weights = w(t)``, applied to the per-task gradients (a linear method).

    ``W`` is the shared representation ``z`` in "rep" mode (default: ``||dL_t/dz||`` over the batch,
    cheap) or all shared parameters in "param" mode; the paper uses the last shared layer's weights.
    ``L(0)``: with ``gradnorm_warmup_epochs = 0`` (the paper) the losses of the first step; by
    default (1, as LibMTL does) the network first trains ``gradnorm_warmup_epochs`` epochs with equal
    weights and ``L(0)`` is the first epoch's mean training loss.  Why the default: a first-step
    ``L(0)`` is dominated by the initial offset of regression outputs (on ``multidigits`` the count
    task starts at 102 and is at 11 after a few dozen steps), so that task's loss ratio collapses, its
    weight is driven to the floor within the first epoch and it never recovers (12 epochs at lr 3e-3,
    seeds 0 and 1: val Δm -20.8 / -19.7 with ``L(0)`` from the first step, -5.1 / -4.9 with the
    warm-up, ``ew`` -2.0 / -3.9).  A known failure mode remains: a task whose loss stops falling gets
    ever more weight, so at lr 1e-2 on ``multidigits``, where the classification features die in the
    first epoch, GradNorm starves the count task and stays at chance (-74 / -76) where ``ew``
    recovers (-17.5 / -10.0).  Weights, ``L(0)``, the flag and the epoch count are buffers
    (checkpointed); the weights are not ``nn.Parameter``s (their update is the method's own).

    Reference: Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018 (no official code).
    Deviations: the weights take a plain gradient step with their own ``gradnorm_lr`` (default
    0.025), floored at ``MIN_WEIGHT`` before renormalising (the paper leaves negative weights
    unaddressed); heads are trained on their own unweighted losses (the trainer's rule for
    gradient-level methods), not on ``w_t L_t``.  LibMTL instead parametrises ``w = T softmax(v)``,
    trains ``v`` with the model's optimizer and uses equal weights during the first epoch (the
    warm-up adopted here).


    Step cost relative to ``ew``: the README's method table (CPU) and its GPU table, both measured by
    ``python perf/step_time.py``.
    """

    name = "gradnorm"
    reference = "Chen et al., GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks, ICML 2018"
    gradnorm_alpha = HParam(1.5, Range(ge=0), "strength alpha of the pull towards equal training rates")
    gradnorm_lr = HParam(0.025, Range(gt=0), "learning rate of the task weights' own gradient step")
    gradnorm_warmup_epochs = HParam(1, Range(ge=0), "equal-weight epochs first; L(0): their mean loss (0: the first step's)")
    # Buffers (registered in __init__; declared here for type checkers).
    loss_weights: Tensor
    initial_losses: Tensor
    initialised: Tensor
    epochs_seen: Tensor
    linear = True
    modes = ("rep", "param")
    default_mode = "rep"

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__(num_tasks, **hparams)
        self.register_buffer("loss_weights", torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.ones(num_tasks))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def on_epoch_end(self, epoch: int, train_losses: Tensor) -> None:
        if self.gradnorm_warmup_epochs > 0 and int(self.epochs_seen) == 0:
            self.initial_losses.copy_(train_losses.detach().to(self.initial_losses))
            self.initialised.fill_(True)
        self.epochs_seen += 1

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:
        # During the warm-up: equal weights, no update (selected on the device: no host sync).
        warm = self.epochs_seen < self.gradnorm_warmup_epochs
        w = self.loss_weights.clone()
        losses = losses.detach().to(w)
        # Without a warm-up, the first call records L(0) (on the device: no host sync).
        self.initial_losses.copy_(torch.where(self.initialised | warm, self.initial_losses, losses))
        self.initialised.copy_(self.initialised | ~warm)
        norms = torch.linalg.vector_norm(grads.detach(), dim=1, dtype=float_dtype(grads)).to(w)
        weighted = w * norms
        loss_ratio = losses / self.initial_losses.clamp_min(TINY)
        inverse_rate = loss_ratio / loss_ratio.mean()
        target = weighted.mean() * inverse_rate**self.gradnorm_alpha
        step = torch.sign(weighted - target) * norms
        new = (w - self.gradnorm_lr * step).clamp_min(MIN_WEIGHT)
        self.loss_weights.copy_(torch.where(warm, w, self.num_tasks * new / new.sum()))
        return GradResult(weights=torch.where(warm, torch.ones_like(w), w).to(float_dtype(grads)))
