"""The AdaTask optimizers as they were before the flat state (commit 41b9f52, ``mtlsearch/optim/adatask.py``),
kept unchanged as the reference the flat implementation is tested against (same outputs, and checkpoints
loading both ways).  Test support only; the docstring of the original follows.

AdaTask: task-wise adaptive learning rates (Yang et al., AAAI 2023, arXiv 2211.15055).

Under an adaptive optimizer run on the summed loss, the accumulated squared gradients of a shared
parameter are dominated by the task with the largest gradients, so every other task gets a tiny
effective learning rate.  AdaTask keeps **one set of accumulators per task** for each shared parameter
and steps by the *sum* of the base optimizer's steps, each computed from one task's gradient ``g_t``
and that task's own accumulators (elementwise, one step counter ``s`` per parameter)::

    Adam      m_t <- b1 m_t + (1-b1) g_t ;  v_t <- b2 v_t + (1-b2) g_t^2
              theta <- theta - sum_t lr/(1-b1^s) * m_t / (sqrt(v_t)/sqrt(1-b2^s) + eps)
    RMSProp   v_t <- a v_t + (1-a) g_t^2 ;       theta <- theta - sum_t lr * g_t / (sqrt(v_t) + eps)
    AdaGrad   G_t <- G_t + g_t^2 ;               theta <- theta - sum_t clr_s * g_t / (sqrt(G_t) + eps)

with ``eps`` placed exactly as in ``torch.optim.Adam`` / ``RMSprop`` / ``Adagrad`` (defaults included:
RMSprop ``alpha=0.99, eps=1e-8``, Adagrad ``eps=1e-10``, ``clr_s = lr / (1 + (s-1) lr_decay)``).  So with
one task each optimizer *is* its torch counterpart; with T tasks the shared step is the sum of T
independent base optimizers each fed one task's gradients, and rescaling task t's loss by c > 0 leaves
task t's contribution unchanged up to eps.

Two kinds of parameter group:

* ``shared=True`` (the encoder): :meth:`step` takes ``task_grads``, one ``[T, *p.shape]`` tensor per
  shared parameter in group order (``None``, or a task's zero slice, means "this task gave no
  gradient": it counts as a zero gradient).  State per parameter: ``step`` (a CPU float tensor, as in
  torch) and the accumulators with a leading task dimension, e.g. ``exp_avg[t]`` is ``m_t``.
* ``shared=False`` (heads, a method's learnable parameters): the plain base optimizer on ``p.grad``
  (parameters without a gradient are skipped, as torch does); state laid out exactly as torch's.

Weight decay (L2, as torch's non-decoupled ``weight_decay``): the regulariser's gradient ``wd * theta``
is added **once** to the summed gradient, split equally over the tasks, i.e. each task's gradient
becomes ``g_t + (wd / T) * theta``; with one task this is torch's ``grad + wd * theta``.  (The released
code accepts ``weight_decay`` and ignores it.)  Heads get torch's plain ``grad + wd * theta``.

Implementation: every update is a handful of ``torch._foreach_*`` calls over the parameters of a
group, with the task dimension leading each tensor (no Python loop over tasks); the only
per-parameter Python work is the sum over tasks and reading the step counters.  On CUDA the calls
run over all parameters at once; on the CPU over batches of about ``cpu_chunk_numel`` values (large
parameters cut into blocks of views), which keeps temporaries in cache and avoids allocating and
page-faulting model-sized buffers every step (``perf/step_time.py`` measures it).
Task-specific parameters go through the same code with a leading dimension of one.
``step_tasks(task_grads, shares=True)`` steps and returns the per-task steps of the shared parameters
(a list of ``[T, *p.shape]``, the signed update ``Delta theta_t`` per task), the same method as the base
optimizers' (:mod:`.base`), which the task-dominance metric (:mod:`mtlsearch.dominance`) averages.

Deviations from the released code (``adatask.py``, Adam only): weight decay is applied as above instead
of ignored; ``amsgrad`` is not offered; a parameter a task does not reach gets a zero gradient from
that task instead of crashing; task weights are not an optimizer argument (the balancing method's
weights are already folded into ``task_grads`` by the trainer).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["AdaTaskOptimizer", "AdamAdaTask", "RMSpropAdaTask", "AdagradAdaTask"]


class AdaTaskOptimizer(Optimizer):
    """Common machinery: groups, state, weight decay, summing the per-task steps.

    Subclasses name their accumulators in ``accumulators`` (name -> initial value from the group) and
    implement :meth:`_task_steps`, which updates the accumulators in place and returns the signed
    per-task steps ``[T, *p.shape]`` (T = 1 for task-specific parameters).
    """

    accumulators: dict[str, Callable[[dict], float]] = {}
    #: On the CPU, the foreach calls run over batches of about this many values (task dimension
    #: included; large parameters cut into blocks), so that temporaries stay in cache and in the heap
    #: instead of being allocated model-sized, and page-faulted, on every step (1.5-2x slower on
    #: ResNet-50 shapes); None = all at once.  CUDA: always all at once (multi-tensor kernels).
    cpu_chunk_numel: int | None = 2**18

    def __init__(
        self,
        shared_params: Iterable[Tensor],
        task_params: Iterable[Tensor] = (),
        *,
        num_tasks: int,
        defaults: dict[str, Any],
    ):
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
        if defaults.get("lr", 0.0) < 0.0:
            raise ValueError(f"invalid learning rate: {defaults['lr']}")
        if defaults.get("weight_decay", 0.0) < 0.0:
            raise ValueError(f"invalid weight_decay value: {defaults['weight_decay']}")
        self.num_tasks = num_tasks
        groups = [
            {"params": params, "shared": shared} for params, shared in ((list(shared_params), True), (list(task_params), False)) if params
        ]
        super().__init__(groups, {**defaults, "shared": False})

    # ------------------------------------------------------------------ state
    def _state(self, p: Tensor, group: dict, lead: tuple[int, ...]) -> dict[str, Tensor]:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            for name, init in self.accumulators.items():
                state[name] = torch.full((*lead, *p.shape), init(group), dtype=p.dtype, device=p.device)
        return state

    def _task_steps(
        self, group: dict, grads: list[Tensor], acc: dict[str, list[Tensor]], steps: list[float]
    ) -> Sequence[Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    # ------------------------------------------------------------------ step
    def _shared_grads(self, task_grads: Sequence[Tensor | None] | None) -> list[Tensor]:
        params = [p for g in self.param_groups if g["shared"] for p in g["params"]]
        if not params:
            return []
        if task_grads is None:
            raise ValueError(f"{type(self).__name__}.step needs task_grads: one [num_tasks, *p.shape] tensor per shared parameter")
        if len(task_grads) != len(params):
            raise ValueError(f"expected task_grads for {len(params)} shared parameters, got {len(task_grads)}")
        out = []
        for i, (p, g) in enumerate(zip(params, task_grads)):
            if g is None:
                g = p.new_zeros((self.num_tasks, *p.shape))
            elif tuple(g.shape) != (self.num_tasks, *p.shape):
                raise ValueError(f"task_grads[{i}] has shape {tuple(g.shape)}, expected {(self.num_tasks, *p.shape)}")
            out.append(g)
        return out

    def _pieces(
        self, params: list[Tensor], grads: list[Tensor], acc: dict[str, list[Tensor]], steps: list[float], whole: bool
    ) -> Iterator[tuple[list[Tensor], list[Tensor], dict[str, list[Tensor]], list[float]]]:
        """The foreach batches: all parameters at once (CUDA, or ``whole``), else on the CPU batches of
        about ``cpu_chunk_numel`` values, a large parameter being cut into blocks of its flattened
        elements (views: the in-place updates land in the parameter and its state)."""
        if whole or self.cpu_chunk_numel is None or params[0].device.type != "cpu":
            yield params, grads, acc, steps
            return
        limit = self.cpu_chunk_numel
        batch: tuple[list, list, dict, list] = ([], [], {k: [] for k in acc}, [])
        size = 0
        for i, (p, g) in enumerate(zip(params, grads)):
            num = g.shape[0]
            items = [(p, g, {k: v[i] for k, v in acc.items()})]
            if g.numel() > limit and p.is_contiguous() and all(v[i].is_contiguous() for v in acc.values()):
                flat_p, flat_g = p.view(-1), g.reshape(num, -1)
                flat_acc = {k: v[i].view(num, -1) for k, v in acc.items()}
                block = max(1, limit // num)
                items = [
                    (flat_p[j : j + block], flat_g[:, j : j + block], {k: v[:, j : j + block] for k, v in flat_acc.items()})
                    for j in range(0, p.numel(), block)
                ]
            for piece_p, piece_g, piece_acc in items:
                if batch[0] and size + piece_g.numel() > limit:
                    yield batch
                    batch, size = ([], [], {k: [] for k in acc}, []), 0
                batch[0].append(piece_p)
                batch[1].append(piece_g)
                for k, v in piece_acc.items():
                    batch[2][k].append(v)
                batch[3].append(steps[i])
                size += piece_g.numel()
        if batch[0]:
            yield batch

    @torch.no_grad()
    def step(  # type: ignore[override]  # also takes the per-task gradients (torch's step: closure only)
        self, task_grads: Sequence[Tensor | None] | None = None, closure: Callable[[], Any] | None = None
    ) -> Any:
        """One step; ``task_grads[i]`` is ``[T, *p.shape]`` for the i-th shared parameter."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step(task_grads, shares=False)
        return loss

    def step_tasks(self, task_grads: Sequence[Tensor | None], *, shares: bool = False) -> list[Tensor] | None:
        """One step from the shared parameters' per-task gradients (as :meth:`step`); with ``shares``,
        return each task's step of each shared parameter, ``[T, *p.shape]`` (they sum to its update)."""
        return self._step(task_grads, shares=shares)

    @torch.no_grad()
    def _step(self, task_grads: Sequence[Tensor | None] | None, shares: bool) -> list[Tensor] | None:
        shared_grads = iter(self._shared_grads(task_grads))
        task_updates: list[Tensor] | None = [] if shares else None
        for group in self.param_groups:
            if group["shared"]:
                params = list(group["params"])
                grads = [next(shared_grads) for _ in params]
                lead: tuple[int, ...] = (self.num_tasks,)
            else:
                params = [p for p in group["params"] if p.grad is not None]
                grads = [p.grad.unsqueeze(0) for p in params]
                lead = ()
            if not params:
                continue
            states = [self._state(p, group, lead) for p in params]
            # Accumulators as [T, *shape] (task-specific ones viewed with a leading 1: same storage).
            acc = {name: [s[name] if lead else s[name].unsqueeze(0) for s in states] for name in self.accumulators}
            step_ts = [s["step"] for s in states]
            torch._foreach_add_(step_ts, 1.0)
            steps = [s.item() for s in step_ts]
            record = group["shared"] and task_updates is not None
            for piece_params, piece_grads, piece_acc, piece_steps in self._pieces(params, grads, acc, steps, whole=record):
                if group["weight_decay"] != 0:
                    # L2 once per parameter: wd * theta split equally over the tasks' gradients.
                    piece_grads = list(
                        torch._foreach_add(
                            piece_grads, [p.unsqueeze(0) for p in piece_params], alpha=group["weight_decay"] / piece_grads[0].shape[0]
                        )
                    )
                updates = self._task_steps(group, piece_grads, piece_acc, piece_steps)
                torch._foreach_add_(piece_params, [u[0] if u.shape[0] == 1 else u.sum(0) for u in updates])
                if record and task_updates is not None:  # record implies a list
                    task_updates.extend(updates)
        return task_updates


class AdamAdaTask(AdaTaskOptimizer):
    """Adam with AdaTask.  State per shared parameter: ``step`` (s), ``exp_avg[t]`` (m_t), ``exp_avg_sq[t]`` (v_t).

    ``theta <- theta - sum_t lr/(1-b1^s) * m_t / (sqrt(v_t)/sqrt(1-b2^s) + eps)``; defaults as
    ``torch.optim.Adam`` (the released code's Cityscapes script uses lr 1e-4).
    """

    accumulators = {"exp_avg": lambda group: 0.0, "exp_avg_sq": lambda group: 0.0}

    def __init__(
        self,
        shared_params: Iterable[Tensor],
        task_params: Iterable[Tensor] = (),
        *,
        num_tasks: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas: {betas}")
        if eps < 0.0:
            raise ValueError(f"invalid eps: {eps}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(shared_params, task_params, num_tasks=num_tasks, defaults=defaults)

    def _task_steps(self, group: dict, grads: list[Tensor], acc: dict[str, list[Tensor]], steps: list[float]) -> Sequence[Tensor]:
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        m, v = acc["exp_avg"], acc["exp_avg_sq"]
        torch._foreach_lerp_(m, grads, 1 - beta1)  # m_t <- b1 m_t + (1-b1) g_t
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1 - beta2)  # v_t <- b2 v_t + (1-b2) g_t^2
        denom = torch._foreach_sqrt(v)  # sqrt(v_t)/sqrt(1-b2^s) + eps
        torch._foreach_div_(denom, [(1 - beta2**s) ** 0.5 for s in steps])
        torch._foreach_add_(denom, eps)
        updates = torch._foreach_mul(m, [-(lr / (1 - beta1**s)) for s in steps])
        torch._foreach_div_(updates, denom)
        return updates


class RMSpropAdaTask(AdaTaskOptimizer):
    """RMSProp with AdaTask (the paper's Algorithm 2).  State: ``step``, ``square_avg[t]`` (v_t).

    ``v_t <- alpha v_t + (1-alpha) g_t^2 ;  theta <- theta - sum_t lr * g_t / (sqrt(v_t) + eps)``;
    defaults as ``torch.optim.RMSprop`` (no momentum, not centered).
    """

    accumulators = {"square_avg": lambda group: 0.0}

    def __init__(
        self,
        shared_params: Iterable[Tensor],
        task_params: Iterable[Tensor] = (),
        *,
        num_tasks: int,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if not 0.0 <= alpha < 1.0 or eps < 0.0:
            raise ValueError(f"invalid alpha {alpha} or eps {eps}")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay)
        super().__init__(shared_params, task_params, num_tasks=num_tasks, defaults=defaults)

    def _task_steps(self, group: dict, grads: list[Tensor], acc: dict[str, list[Tensor]], steps: list[float]) -> Sequence[Tensor]:
        alpha, lr, eps = group["alpha"], group["lr"], group["eps"]
        v = acc["square_avg"]
        torch._foreach_mul_(v, alpha)
        torch._foreach_addcmul_(v, grads, grads, 1 - alpha)  # v_t <- a v_t + (1-a) g_t^2
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, eps)
        updates = torch._foreach_mul(grads, -lr)
        torch._foreach_div_(updates, denom)
        return updates


class AdagradAdaTask(AdaTaskOptimizer):
    """AdaGrad with AdaTask (the paper's Algorithm 2).  State: ``step``, ``sum[t]`` (G_t).

    ``G_t <- G_t + g_t^2 ;  theta <- theta - sum_t clr * g_t / (sqrt(G_t) + eps)`` with
    ``clr = lr / (1 + (s-1) lr_decay)``; defaults as ``torch.optim.Adagrad`` (eps 1e-10).
    """

    accumulators = {"sum": lambda group: group["initial_accumulator_value"]}

    def __init__(
        self,
        shared_params: Iterable[Tensor],
        task_params: Iterable[Tensor] = (),
        *,
        num_tasks: int,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
    ):
        if lr_decay < 0.0 or initial_accumulator_value < 0.0 or eps < 0.0:
            raise ValueError(f"invalid lr_decay {lr_decay}, initial_accumulator_value {initial_accumulator_value} or eps {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, initial_accumulator_value=initial_accumulator_value, eps=eps, weight_decay=weight_decay)
        super().__init__(shared_params, task_params, num_tasks=num_tasks, defaults=defaults)

    def _task_steps(self, group: dict, grads: list[Tensor], acc: dict[str, list[Tensor]], steps: list[float]) -> Sequence[Tensor]:
        lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
        g_sum = acc["sum"]
        torch._foreach_addcmul_(g_sum, grads, grads, 1)  # G_t <- G_t + g_t^2
        denom = torch._foreach_sqrt(g_sum)
        torch._foreach_add_(denom, eps)
        updates = torch._foreach_mul(grads, [-(lr / (1 + (s - 1) * lr_decay)) for s in steps])
        torch._foreach_div_(updates, denom)
        return updates
