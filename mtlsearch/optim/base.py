"""The base optimizers: torch's Adam, RMSprop, Adagrad and SGD, able to step from per-task gradients
and to say which part of their step each task is responsible for.

``step_tasks(task_grads, shares=...)`` takes, for each shared parameter, its per-task gradients
``[T, *p.shape]`` (already multiplied by the balancing method's weights), adds their sum to
``p.grad`` and takes torch's own step: the update is exactly torch's.  With ``shares=True`` it also
returns each task's share of the update, ``Delta theta_t`` (``[T, *p.shape]`` per shared parameter,
signed): the step split linearly over the tasks, so the shares sum to the step up to the
weight-decay term, which no task owns.  The AdaTask optimizers (:mod:`.adatask`) have the same
method; their step *is* a sum of per-task steps.  The shares are what the task-dominance metric
(:mod:`mtlsearch.dominance`) averages.

* Adam: ``lr/(1-b1^s) * m_t / (sqrt(v)/sqrt(1-b2^s) + eps)`` with the common ``v`` and per-task first
  moments ``m_t <- b1 m_t + (1-b1) g_t`` (state ``task_exp_avg``, ``[T, *p.shape]``; ``m`` is linear in
  the gradients, so ``sum_t m_t = m``).
* RMSprop (no momentum, not centered) / Adagrad: ``lr * g_t / (sqrt(v) + eps)`` with the common ``v``
  (Adagrad: ``clr_s`` and the sum of squares).
* SGD with momentum: ``lr * buf_t`` with per-task momentum buffers ``buf_t <- mu buf_t + (1 - dampening)
  g_t`` (state ``task_momentum_buffer``; the first step copies ``g_t``, as torch does).

The per-task state lives in the optimizer's ``state`` (so ``state_dict`` saves it), and only once
shares were asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from mtlsearch.gradients import as_grad

__all__ = ["TaskStepMixin", "Adam", "RMSprop", "Adagrad", "SGD"]

if TYPE_CHECKING:  # the mixin is always combined with a torch optimizer (its step, param_groups, state)
    _Optimizer = torch.optim.Optimizer
else:
    _Optimizer = object


class TaskStepMixin(_Optimizer):
    """``step_tasks`` for a torch optimizer; ``shared`` names the parameters the tasks share (the
    others, heads and a method's parameters, step from their ``p.grad`` as usual)."""

    def __init__(self, params: Any, *args: Any, shared: Sequence[Tensor] = (), **kwargs: Any):
        super().__init__(params, *args, **kwargs)
        self.shared_params = list(shared)

    def step_tasks(self, task_grads: Sequence[Tensor], *, shares: bool = False) -> list[Tensor] | None:
        """Step from ``task_grads[i]`` (``[T, *p.shape]``, the i-th shared parameter's per-task
        gradients); with ``shares``, return each task's share of the update."""
        for p, g in zip(self.shared_params, task_grads):
            p.grad = as_grad(p, g.sum(0)) if p.grad is None else p.grad.add_(g.sum(0))
        self.step()
        return self.task_shares([g.detach() for g in task_grads]) if shares else None

    def _groups_and_states(self) -> tuple[list[dict], list[dict]]:
        group_of = {id(p): g for g in self.param_groups for p in g["params"]}
        return [group_of[id(p)] for p in self.shared_params], [self.state[p] for p in self.shared_params]

    def task_shares(self, grads: list[Tensor]) -> list[Tensor]:  # pragma: no cover - interface
        """The shares of the step just taken from ``grads`` (advances the per-task state)."""
        raise NotImplementedError


class Adam(TaskStepMixin, torch.optim.Adam):
    @torch.no_grad()
    def task_shares(self, grads: list[Tensor]) -> list[Tensor]:
        groups, states = self._groups_and_states()
        moments = []
        for st, grad in zip(states, grads):
            if "task_exp_avg" not in st:
                st["task_exp_avg"] = torch.zeros_like(grad)
            moments.append(st["task_exp_avg"])
        torch._foreach_lerp_(moments, grads, 1 - groups[0]["betas"][0])  # m_t, as Adam's m
        out = []
        for m_t, g, st in zip(moments, groups, states):
            beta1, beta2 = g["betas"]
            s = float(st["step"])
            v = st["max_exp_avg_sq"] if g.get("amsgrad") else st["exp_avg_sq"]
            denom = (v.sqrt() / (1 - beta2**s) ** 0.5).add_(g["eps"])
            out.append(m_t * (-(g["lr"] / (1 - beta1**s))) / denom)
        return out


class RMSprop(TaskStepMixin, torch.optim.RMSprop):
    @torch.no_grad()
    def task_shares(self, grads: list[Tensor]) -> list[Tensor]:
        groups, states = self._groups_and_states()
        if any(g["momentum"] or g["centered"] for g in groups):
            raise ValueError("task shares under RMSprop with momentum or centered=True are not implemented")
        return [-g["lr"] * gr / (st["square_avg"].sqrt() + g["eps"]) for gr, g, st in zip(grads, groups, states)]


class Adagrad(TaskStepMixin, torch.optim.Adagrad):
    @torch.no_grad()
    def task_shares(self, grads: list[Tensor]) -> list[Tensor]:
        groups, states = self._groups_and_states()
        return [
            -(g["lr"] / (1 + (float(st["step"]) - 1) * g["lr_decay"])) * gr / (st["sum"].sqrt() + g["eps"])
            for gr, g, st in zip(grads, groups, states)
        ]


class SGD(TaskStepMixin, torch.optim.SGD):
    @torch.no_grad()
    def task_shares(self, grads: list[Tensor]) -> list[Tensor]:
        groups, states = self._groups_and_states()
        out = []
        for gr, g, st in zip(grads, groups, states):
            mu = g["momentum"]
            if mu == 0:
                out.append(-g["lr"] * gr)
                continue
            buf = st.get("task_momentum_buffer")
            if buf is None:
                buf = st["task_momentum_buffer"] = gr.clone()
            else:
                buf.mul_(mu).add_(gr, alpha=1 - g["dampening"])
            direction = gr + mu * buf if g["nesterov"] else buf
            out.append(-g["lr"] * direction)
        return out
