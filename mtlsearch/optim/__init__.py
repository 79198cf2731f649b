"""Optimizers by name: the torch base optimizers, and (as they are added) their AdaTask variants.

``build_optimizer`` gets the shared parameters and the task-specific ones (heads and any learnable
parameters of the balancing method) separately, and every factory of both registries takes them in
one signature (:class:`OptimizerFactory`): AdaTask optimizers treat them differently, the base
optimizers do not.  An AdaTask optimizer's ``step(task_grads=...)`` takes, for each shared parameter,
its per-task gradients stacked as ``[T, *param.shape]``; plain ones use ``param.grad``.  Every optimizer
built here also has ``step_tasks(task_grads, shares=...)``: a step from per-task gradients that can
return each task's share of the update (the base optimizers' rules in :mod:`.base`).
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from mtlsearch.errors import ConfigError, choices

from .adatask import AdagradAdaTask, AdamAdaTask, AdaTaskOptimizer, RMSpropAdaTask  # public names
from .base import SGD, Adagrad, Adam, RMSprop, TaskStepMixin  # public names

#: An optimizer built here: torch's (with ``step_tasks``) or an AdaTask one.
TaskOptimizer = TaskStepMixin | AdaTaskOptimizer


class OptimizerFactory(Protocol):
    """The one signature of both registries: the shared parameters (those ``step_tasks`` and AdaTask
    get per-task gradients for), the task-specific ones, and the trial's settings.  A factory uses what
    its optimizer needs (``num_tasks``: AdaTask's accumulators; ``fused``: torch's fused Adam on CUDA)."""

    def __call__(
        self, shared: list[nn.Parameter], specific: list[nn.Parameter], *, lr: float, weight_decay: float, num_tasks: int, fused: bool
    ) -> TaskOptimizer: ...


def _adam(shared: list[nn.Parameter], specific: list[nn.Parameter], *, lr: float, weight_decay: float, num_tasks: int, fused: bool) -> Adam:
    params = [*shared, *specific]
    # Fused Adam on CUDA (unless fused=False); fused=None lets torch pick its foreach kernels.
    use_fused = True if fused and params and params[0].is_cuda else None
    return Adam(params, lr=lr, weight_decay=weight_decay, fused=use_fused, shared=shared)


def _rmsprop(
    shared: list[nn.Parameter], specific: list[nn.Parameter], *, lr: float, weight_decay: float, num_tasks: int, fused: bool
) -> RMSprop:
    return RMSprop([*shared, *specific], lr=lr, weight_decay=weight_decay, shared=shared)


def _adagrad(
    shared: list[nn.Parameter], specific: list[nn.Parameter], *, lr: float, weight_decay: float, num_tasks: int, fused: bool
) -> Adagrad:
    return Adagrad([*shared, *specific], lr=lr, weight_decay=weight_decay, shared=shared)


def _sgd(shared: list[nn.Parameter], specific: list[nn.Parameter], *, lr: float, weight_decay: float, num_tasks: int, fused: bool) -> SGD:
    return SGD([*shared, *specific], lr=lr, momentum=0.9, weight_decay=weight_decay, shared=shared)


def _adatask(cls: type[AdamAdaTask] | type[RMSpropAdaTask] | type[AdagradAdaTask]) -> OptimizerFactory:
    def factory(
        shared: list[nn.Parameter], specific: list[nn.Parameter], *, lr: float, weight_decay: float, num_tasks: int, fused: bool
    ) -> AdaTaskOptimizer:
        return cls(shared, specific, num_tasks=num_tasks, lr=lr, weight_decay=weight_decay)

    return factory


#: torch's optimizers by name (one parameter group; ``step_tasks`` from per-task gradients of ``shared``)
BASE_OPTIMIZERS: dict[str, OptimizerFactory] = {"adam": _adam, "rmsprop": _rmsprop, "adagrad": _adagrad, "sgd": _sgd}

#: the optimizers that keep per-task accumulators of the shared parameters (AdaTask), by name
ADATASK_OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam_adatask": _adatask(AdamAdaTask),
    "rmsprop_adatask": _adatask(RMSpropAdaTask),
    "adagrad_adatask": _adatask(AdagradAdaTask),
}

OPTIMIZERS = sorted([*BASE_OPTIMIZERS, *ADATASK_OPTIMIZERS])


def is_adatask(name: str) -> bool:
    return name in ADATASK_OPTIMIZERS


def check_optimizer(name: str) -> None:
    if name not in BASE_OPTIMIZERS and name not in ADATASK_OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {name!r}; choose one of {choices([*BASE_OPTIMIZERS, *ADATASK_OPTIMIZERS])}",
            field="optimizer",
        )


def build_optimizer(
    name: str,
    shared: list[nn.Parameter],
    specific: list[nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    num_tasks: int,
    fused: bool = True,
) -> TaskOptimizer:
    """The optimizer ``name`` over the shared and the task-specific parameters (``fused=False``: torch's
    default (foreach) Adam kernels on CUDA instead of the fused one)."""
    check_optimizer(name)
    factory = ADATASK_OPTIMIZERS.get(name) or BASE_OPTIMIZERS[name]
    return factory(shared, specific, lr=lr, weight_decay=weight_decay, num_tasks=num_tasks, fused=fused)
