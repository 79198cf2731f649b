"""Optimizers by name: the torch base optimizers, and (as they are added) their AdaTask variants.

``build_optimizer`` gets the shared parameters and the task-specific ones (heads and any learnable
parameters of the balancing method) separately: AdaTask optimizers treat them differently, the base
optimizers do not.  An AdaTask optimizer's ``step(task_grads=...)`` takes, for each shared parameter,
its per-task gradients stacked as ``[T, *param.shape]``; plain ones use ``param.grad``.  Every optimizer
built here also has ``step_tasks(task_grads, shares=...)``: a step from per-task gradients that can
return each task's share of the update (the base optimizers' rules in :mod:`.base`).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from mtlsearch.errors import ConfigError, choices

from .adatask import AdagradAdaTask, AdamAdaTask, AdaTaskOptimizer, RMSpropAdaTask  # public names
from .base import SGD, Adagrad, Adam, RMSprop, TaskStepMixin  # public names

BaseFactory = Callable[..., TaskStepMixin]

#: name -> factory(params, lr, weight_decay, fused, shared): torch's optimizers (``shared``: the
#: parameters that ``step_tasks`` gets per-task gradients for)
BASE_OPTIMIZERS: dict[str, BaseFactory] = {
    # Fused Adam on CUDA (unless fused=False); fused=None lets torch pick its foreach kernels.
    "adam": lambda params, lr, weight_decay, fused=True, shared=(): Adam(
        params,
        lr=lr,
        weight_decay=weight_decay,
        fused=True if fused and params and params[0].is_cuda else None,
        shared=shared,
    ),
    "rmsprop": lambda params, lr, weight_decay, fused=True, shared=(): RMSprop(params, lr=lr, weight_decay=weight_decay, shared=shared),
    "adagrad": lambda params, lr, weight_decay, fused=True, shared=(): Adagrad(params, lr=lr, weight_decay=weight_decay, shared=shared),
    "sgd": lambda params, lr, weight_decay, fused=True, shared=(): SGD(
        params, lr=lr, momentum=0.9, weight_decay=weight_decay, shared=shared
    ),
}

#: name -> factory(shared, specific, lr, weight_decay, num_tasks) for optimizers needing per-task grads
ADATASK_OPTIMIZERS: dict[str, Callable[..., AdaTaskOptimizer]] = {
    "adam_adatask": lambda shared, specific, lr, weight_decay, num_tasks, **kw: AdamAdaTask(
        shared, specific, num_tasks=num_tasks, lr=lr, weight_decay=weight_decay, **kw
    ),
    "rmsprop_adatask": lambda shared, specific, lr, weight_decay, num_tasks, **kw: RMSpropAdaTask(
        shared, specific, num_tasks=num_tasks, lr=lr, weight_decay=weight_decay, **kw
    ),
    "adagrad_adatask": lambda shared, specific, lr, weight_decay, num_tasks, **kw: AdagradAdaTask(
        shared, specific, num_tasks=num_tasks, lr=lr, weight_decay=weight_decay, **kw
    ),
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
    **kwargs: Any,
) -> TaskStepMixin | AdaTaskOptimizer:
    """``fused=False``: torch's default (foreach) Adam kernels on CUDA instead of the fused one."""
    check_optimizer(name)
    if name in ADATASK_OPTIMIZERS:
        return ADATASK_OPTIMIZERS[name](shared, specific, lr=lr, weight_decay=weight_decay, num_tasks=num_tasks, **kwargs)
    return BASE_OPTIMIZERS[name]([*shared, *specific], lr, weight_decay, fused=fused, shared=shared)
