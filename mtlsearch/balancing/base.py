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

A method declares its hyperparameters in ``hyperparams`` so that configs are validated before a
trial starts; it may own learnable parameters (``nn.Parameter``) and buffers, which the trainer
optimises and checkpoints like the model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from torch import Tensor, nn


@dataclass(frozen=True)
class HParam:
    """A method hyperparameter: its type, default and a validity check."""

    type: type
    default: Any
    help: str = ""
    check: Callable[[Any], bool] | None = None
    allowed: str = ""  # human-readable description of the valid values

    def validate(self, name: str, value: Any) -> Any:
        from mtlsearch.errors import ConfigError

        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, self.type) or isinstance(value, bool) and self.type is not bool:
            raise ConfigError(f"expected {self.type.__name__}, got {value!r}", field=name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {value!r}", field=name)
        if self.check is not None and not self.check(value):
            raise ConfigError(f"invalid value {value!r}; allowed: {self.allowed}", field=name)
        return value


@dataclass
class GradResult:
    """What a gradient-level method returns: weights (linear methods) and/or a direction."""

    weights: Tensor | None = None  # [T]
    direction: Tensor | None = None  # [d]


class Balancing(nn.Module):
    name: ClassVar[str] = ""
    level: ClassVar[str] = ""  # "loss" or "grad"
    hyperparams: ClassVar[dict[str, HParam]] = {}
    reference: ClassVar[str] = ""

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
