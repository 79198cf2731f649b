"""The balancing interface: how per-task losses (or per-task gradients) become one update.

Two kinds of method:

* :class:`LossBalancing` maps the loss vector ``L`` (shape ``[T]``) to one differentiable scalar.
  The trainer back-propagates it once; the effective weight of task ``t`` is ``d total / d L_t``
  (computed by autograd, so learned and implicit weights are reported the same way).
* :class:`GradBalancing` receives the per-task gradients ``G`` (shape ``[T, d]``) of the shared
  parameters ("param" mode) or of the shared representation ("rep" mode) and returns either
  per-task weights ``alpha`` (the update direction is ``alpha @ G``: a *linear* method) or a
  direction of its own (``[d]``).  Heads always receive the gradient of their own task's loss
  (after :meth:`GradBalancing.transform_losses`, e.g. IMTL-H's scaled losses).

A method declares each hyperparameter once, as a class attribute ``name = HParam(default, rule,
help)`` (:mod:`mtlsearch.hparams`), so that configs are validated before a trial starts; the class's
``hyperparams`` maps each name to its declaration (a ``hyperparams`` dict of the earlier
``HParam(type, default, help, check, allowed)`` is still accepted).  A method may own learnable
parameters (``nn.Parameter``) and buffers, which the trainer optimises and checkpoints like the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from mtlsearch.hparams import Check, HParam, OneOf, Range  # re-exported by mtlsearch.balancing


@dataclass
class GradResult:
    """What a gradient-level method returns: weights (linear methods) and/or a direction."""

    weights: Tensor | None = None  # [T]
    direction: Tensor | None = None  # [d]


class Balancing(nn.Module):
    name: ClassVar[str] = ""
    level: ClassVar[str] = ""  # "loss" or "grad"
    #: name -> declaration: the class's ``HParam`` attributes (its parents' included), and the entries
    #: of a ``hyperparams`` dict written in the class body (the earlier form).
    hyperparams: ClassVar[dict[str, HParam[Any]]] = {}
    reference: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        own = vars(cls).get("hyperparams", cls.hyperparams)
        if not isinstance(own, dict):  # not a declaration at all: plugin_checks says so, naming the class
            return
        declared = {key: spec for key, spec in vars(cls).items() if isinstance(spec, HParam)}
        for key, spec in own.items():
            if isinstance(spec, HParam) and not spec.name:
                spec.name = key
        cls.hyperparams = {**own, **declared}

    def __init__(self, num_tasks: int, **hparams: Any):
        super().__init__()
        self.num_tasks = num_tasks
        unknown = set(hparams) - set(self.hyperparams)
        if unknown:
            raise TypeError(f"{self.name}: unknown hyperparameters {sorted(unknown)}")
        for key, spec in self.hyperparams.items():
            setattr(self, key, hparams.get(key, spec.default))

    def on_epoch_end(self, epoch: int, train_losses: Tensor) -> None:
        """Called once per epoch with the mean training loss of each task (``[T]``)."""

    @property
    def needs_losses_after_step(self) -> bool:
        """Whether the trainer re-evaluates the step's batch after the optimizer step and passes the
        losses to :meth:`after_step` (FAMO's released rule: one extra forward pass per step)."""
        return False

    def after_step(self, losses: Tensor) -> None:
        """The task losses ``[T]`` of the step's batch after the step (when :attr:`needs_losses_after_step`)."""

    def extra_metrics(self) -> dict[str, float]:
        """Method-specific scalars worth logging (none by default)."""
        return {}


class LossBalancing(Balancing):
    level = "loss"

    def forward(self, losses: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class GradBalancing(Balancing):
    level = "grad"
    #: Whether the result is always ``weights @ G`` (needed to combine with AdaTask).
    linear: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("rep", "param")
    default_mode: ClassVar[str] = "rep"

    def transform_losses(self, losses: Tensor) -> Tensor:
        """Losses that heads (and the method's own parameters) are trained on."""
        return losses

    def forward(self, grads: Tensor, losses: Tensor) -> GradResult:  # pragma: no cover
        raise NotImplementedError


__all__ = ["Balancing", "Check", "GradBalancing", "GradResult", "HParam", "LossBalancing", "OneOf", "Range"]
