"""AdaTask: task-wise adaptive learning rates (Yang et al., AAAI 2023, arXiv 2211.15055).

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

Implementation (flat state): the accumulators of the shared group live in **one contiguous buffer per
accumulator, ``[T, N]``** (N = the group's values; row t, task t's moments, is contiguous), and
``state[p]["exp_avg"]`` etc. are views of it (``[T, *p.shape]``, with ``p``'s own strides, so a
channels_last weight's state is channels_last too).  A step gathers the per-task gradients into one
``[T, N]`` tensor (one ``cat``), runs the update as a handful of elementwise ops over the flat buffers
(the same ops, in the same order, as the per-parameter version, so the results are the same bits), sums
the task dimension once and adds the sum to the parameters with one ``torch._foreach_add_`` (one
multi-tensor kernel on CUDA); the shares of ``step_tasks(..., shares=True)`` are views of the same
``[T, N]`` update.  The group's step counter is one CPU tensor (``state[p]["step"]`` of every shared
parameter is that tensor; ``state_dict()`` gives each parameter its own copy).  On the CPU the flat
ops run over column blocks of about ``cpu_chunk_numel`` values (task dimension included), which keeps
temporaries in cache instead of allocating and page-faulting model-sized buffers every step; CUDA runs
them over all columns at once.  ``state_dict()`` keeps torch's per-parameter format (``[T, *p.shape]``
views of the flat buffers; ``torch.save`` writes each buffer once) and ``load_state_dict`` copies a
per-parameter state, flat or from the earlier per-parameter implementation, back into flat buffers, so
checkpoints load both ways.  A shared group whose parameters differ in dtype or device, or are not dense
in memory, falls back to the per-parameter path below.

Task-specific parameters (and that fallback) go through ``torch._foreach_*`` calls over the parameters
of a group with the task dimension leading each tensor (a leading dimension of one for task-specific
ones: torch's state layout), batched on the CPU as above (large parameters cut into blocks of views).
``step_tasks(task_grads, shares=True)`` steps and returns the per-task steps of the shared parameters
(a list of ``[T, *p.shape]``, the signed update ``Delta theta_t`` per task), the same method as the base
optimizers' (:mod:`.base`), which the task-dominance metric (:mod:`mtlsearch.dominance`) averages.

Deviations from the released code (``adatask.py``, Adam only): weight decay is applied as above instead
of ignored; ``amsgrad`` is not offered; a parameter a task does not reach gets a zero gradient from
that task instead of crashing; task weights are not an optimizer argument (the balancing method's
weights are already folded into ``task_grads`` by the trainer).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["AdaTaskOptimizer", "AdamAdaTask", "RMSpropAdaTask", "AdagradAdaTask", "TaskShares"]


class TaskShares(list):
    """The per-task shares of a step (``[T, *p.shape]`` per shared parameter, a list), with ``flat``: the
    ``[T, N]`` update they are views of, parameter after parameter of ``params`` (each in its memory
    order), so that per-parameter reductions (the dominance tracker's sums of squares) run over one tensor."""

    def __init__(self, shares: Iterable[Tensor], flat: Tensor, params: Sequence[Tensor]):
        super().__init__(shares)
        self.flat, self.params = flat, list(params)


def _memory_order(p: Tensor) -> tuple[int, ...] | None:
    """The permutation of ``p``'s dimensions that makes it contiguous (its memory order, e.g. NHWC for a
    channels_last weight), or None where ``p`` is not dense in memory."""
    if p.is_contiguous():
        return tuple(range(p.dim()))
    order = tuple(sorted(range(p.dim()), key=lambda d: (-p.stride()[d], -p.shape[d])))
    return order if p.permute(order).is_contiguous() else None


class _FlatShared:
    """The flat state of a shared group: for each accumulator one ``[T, N]`` buffer; parameter i owns
    columns ``offsets[i] : offsets[i] + numel_i`` in its memory order.  Built from the group's
    per-parameter state where there is one (a loaded checkpoint), else from the initial values."""

    def __init__(self, params: list[Tensor], orders: list[tuple[int, ...]], num_tasks: int, state: Any, inits: dict[str, float]):
        self.params, self.orders, self.num_tasks = params, orders, num_tasks
        self.inverse = [tuple(sorted(range(len(o)), key=o.__getitem__)) for o in orders]
        self.sizes = [p.numel() for p in params]
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.numel = self.offsets[-1]
        first = params[0]
        old = [state[p] if len(state[p]) else None for p in params]
        if any(o is not None for o in old):
            if any(o is None for o in old):
                raise ValueError("AdaTask: some shared parameters have optimizer state and others none; cannot build the flat state")
            steps = {float(o["step"]) for o in old if o is not None}
            if len(steps) != 1:
                raise ValueError(f"AdaTask: the shared parameters' step counters differ ({sorted(steps)}); they step together")
            self.step = torch.tensor(steps.pop(), dtype=torch.float32)
        else:
            self.step = torch.tensor(0.0, dtype=torch.float32)
        self.bufs: dict[str, Tensor] = {}
        for name, init in inits.items():
            if old[0] is None:
                self.bufs[name] = torch.full((num_tasks, self.numel), init, dtype=first.dtype, device=first.device)
                continue
            buf = torch.empty((num_tasks, self.numel), dtype=first.dtype, device=first.device)
            for i, o in enumerate(old):
                assert o is not None
                value = o[name]
                if tuple(value.shape) != (num_tasks, *params[i].shape):
                    raise ValueError(
                        f"AdaTask: state {name!r} of shared parameter {i} has shape {tuple(value.shape)}, "
                        f"expected {(num_tasks, *params[i].shape)}"
                    )
                self.view(buf, i).copy_(value)
            self.bufs[name] = buf
        for i, p in enumerate(params):  # the per-parameter state: views of the flat buffers
            state[p] = {"step": self.step, **{name: self.view(buf, i) for name, buf in self.bufs.items()}}

    def view(self, flat: Tensor, i: int) -> Tensor:
        """Parameter i's part of a flat ``[T, N]`` (or ``[N]``) tensor, shaped and strided as the parameter."""
        p, order = self.params[i], self.orders[i]
        part = flat[..., self.offsets[i] : self.offsets[i + 1]]
        lead = flat.dim() - 1
        shape = [p.shape[d] for d in order]
        return part.view(*part.shape[:lead], *shape).permute(*range(lead), *(lead + d for d in self.inverse[i]))

    def columns(self, t: Tensor, i: int) -> Tensor:
        """A ``[T, *p.shape]`` tensor of parameter i as ``[T, numel]`` in the parameter's memory order
        (a view when it has the parameter's layout, else a copy)."""
        order = self.orders[i]
        return t.permute(0, *(d + 1 for d in order)).reshape(t.shape[0], self.sizes[i])

    def param_flat(self, i: int) -> Tensor:
        """Parameter i's values in memory order (a view)."""
        return self.params[i].permute(*self.orders[i]).view(-1)


# ---------------------------------------------------------------------------- fused flat updates
# Each rule over the flat [T, N] buffers as one function for torch.compile (``fused_update``): inductor
# fuses the elementwise ops, so a step reads and writes each buffer about once.  The step-dependent
# factors come as 0-d tensors (no recompilation as the step counter grows).


def _adam_fused(
    g: Tensor, m: Tensor, v: Tensor, beta1: float, beta2: float, eps: float, step_size: Tensor, bc2_sqrt: Tensor
) -> tuple[Tensor, Tensor]:
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    update = m * step_size / (v.sqrt() / bc2_sqrt + eps)
    return update, update.sum(0)


def _rmsprop_fused(g: Tensor, v: Tensor, alpha: float, eps: float, neg_lr: Tensor) -> tuple[Tensor, Tensor]:
    v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
    update = g * neg_lr / (v.sqrt() + eps)
    return update, update.sum(0)


def _adagrad_fused(g: Tensor, total: Tensor, eps: float, neg_clr: Tensor) -> tuple[Tensor, Tensor]:
    total.addcmul_(g, g, value=1)
    update = g * neg_clr / (total.sqrt() + eps)
    return update, update.sum(0)


_COMPILED: dict[Callable, Callable] = {}


def _compiled(fn: Callable) -> Callable:
    """``fn`` through ``torch.compile`` (once per process; backend ``$MTLSEARCH_COMPILE_BACKEND``, default inductor)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, fullgraph=True, dynamic=False, backend=os.environ.get("MTLSEARCH_COMPILE_BACKEND") or "inductor")
    return _COMPILED[fn]


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
    #: The shared group on flat buffers (False: the per-parameter foreach path, kept for groups that
    #: cannot be flat and for timing; set it before the first step).
    flat: bool = True
    #: The flat step over all columns (CUDA's path) as one ``torch.compile``d function per rule, the
    #: elementwise ops fused (about one read and write of each buffer, near the memory-traffic floor);
    #: results within a few ulps of the eager ops, not the same bits.  Off until measured on a GPU.
    fused_update: bool = False

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
        #: id(group) -> the flat state of a shared group (built at its first step; rebuilt after a load)
        self._flat: dict[int, _FlatShared] = {}

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

    def _fused_steps(
        self, group: dict, g: Tensor, bufs: dict[str, Tensor], step: float
    ) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        """The per-task steps ``[T, N]`` and their sum ``[N]`` from the flat gradients and buffers, by the compiled rule."""
        raise NotImplementedError

    # ------------------------------------------------------------------ step
    def _shared_grads(self, task_grads: Sequence[Tensor | None] | None) -> list[Tensor | None]:
        """The shared parameters' per-task gradients, checked (None: no task reached the parameter)."""
        params = [p for g in self.param_groups if g["shared"] for p in g["params"]]
        if not params:
            return []
        if task_grads is None:
            raise ValueError(f"{type(self).__name__}.step needs task_grads: one [num_tasks, *p.shape] tensor per shared parameter")
        if len(task_grads) != len(params):
            raise ValueError(f"expected task_grads for {len(params)} shared parameters, got {len(task_grads)}")
        out: list[Tensor | None] = []
        for i, (p, g) in enumerate(zip(params, task_grads)):
            if g is not None and tuple(g.shape) != (self.num_tasks, *p.shape):
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

    # ------------------------------------------------------------------ flat shared groups
    def _flat_state(self, group: dict) -> _FlatShared | None:
        """The flat state of a shared group, built on first use; None where its parameters cannot share
        flat buffers (mixed dtypes or devices, not dense in memory): the per-parameter path then."""
        key = id(group)
        flat = self._flat.get(key)
        if flat is not None or not self.flat:
            return flat
        params = list(group["params"])
        orders = [_memory_order(p) for p in params]
        if any(o is None for o in orders) or len({(p.dtype, p.device) for p in params}) != 1:
            return None
        inits = {name: init(group) for name, init in self.accumulators.items()}
        flat = _FlatShared(params, [o for o in orders if o is not None], self.num_tasks, self.state, inits)
        self._flat[key] = flat
        return flat

    def _flat_step(self, group: dict, flat: _FlatShared, grads: list[Tensor | None], record: bool) -> list[Tensor] | None:
        """One step of a flat shared group.  All columns at once (CUDA, or the shares recorded): the
        gradients gathered into one ``[T, N]`` tensor and :meth:`_task_steps` over the flat buffers, one
        kernel per op.  CPU: column blocks of about ``cpu_chunk_numel`` values, each a foreach call over
        the parameters' pieces in the block (views of the gradients and of the flat buffers: no gather)."""
        num = self.num_tasks
        flat.step.add_(1.0)
        s = flat.step.item()
        cols = [flat.columns(g, i) if g is not None else None for i, g in enumerate(grads)]
        wd = group["weight_decay"]
        p0 = flat.params[0]
        if record or self.cpu_chunk_numel is None or p0.device.type != "cpu":
            parts = [p0.new_zeros((num, n)) if c is None else c for c, n in zip(cols, flat.sizes)]
            g = torch.cat(parts, dim=1)
            if wd != 0:
                # L2 once per parameter: wd * theta split equally over the tasks' gradients.
                theta = torch.cat([flat.param_flat(k) for k in range(len(flat.params))])
                (g,) = torch._foreach_add([g], [theta.unsqueeze(0)], alpha=wd / num)
            if self.fused_update:
                update, total = self._fused_steps(group, g, flat.bufs, s)
            else:
                (update,) = self._task_steps(group, [g], {name: [buf] for name, buf in flat.bufs.items()}, [s])
                total = update[0] if num == 1 else update.sum(0)
            torch._foreach_add_(flat.params, [flat.view(total, k) for k in range(len(flat.params))])
            return TaskShares((flat.view(update, k) for k in range(len(flat.params))), update, flat.params) if record else None
        block = max(1, self.cpu_chunk_numel // num)
        i = 0  # the first parameter overlapping the block
        for a in range(0, flat.numel, block):
            b = min(a + block, flat.numel)
            while flat.offsets[i + 1] <= a:
                i += 1
            targets: list[Tensor] = []
            piece_grads: list[Tensor] = []
            acc: dict[str, list[Tensor]] = {name: [] for name in flat.bufs}
            j = i
            while j < len(flat.params) and flat.offsets[j] < b:  # parameter j's columns lo:hi lie in the block
                lo, hi = max(a, flat.offsets[j]) - flat.offsets[j], min(b, flat.offsets[j + 1]) - flat.offsets[j]
                c = cols[j]
                piece_grads.append(p0.new_zeros((num, hi - lo)) if c is None else c[:, lo:hi])
                targets.append(flat.param_flat(j)[lo:hi])
                for name, buf in flat.bufs.items():
                    acc[name].append(buf[:, flat.offsets[j] + lo : flat.offsets[j] + hi])
                j += 1
            if wd != 0:
                piece_grads = list(torch._foreach_add(piece_grads, [t.unsqueeze(0) for t in targets], alpha=wd / num))
            updates = self._task_steps(group, piece_grads, acc, [s] * len(targets))
            torch._foreach_add_(targets, [u[0] if num == 1 else u.sum(0) for u in updates])
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Torch's per-parameter state (flat or from the per-parameter implementation); the flat buffers
        are rebuilt from it at the next step."""
        super().load_state_dict(state_dict)
        self._flat.clear()

    def state_dict(self) -> dict[str, Any]:
        """Torch's format: per parameter ``step`` and ``[T, *p.shape]`` accumulators (views of the flat
        buffers); each shared parameter gets its own copy of the group's step counter."""
        out = super().state_dict()
        for index, entry in out["state"].items():
            if isinstance(entry.get("step"), Tensor):
                out["state"][index] = {**entry, "step": entry["step"].clone()}
        return out

    @torch.no_grad()
    def _step(self, task_grads: Sequence[Tensor | None] | None, shares: bool) -> list[Tensor] | None:
        task_updates: list[Tensor] | None = [] if shares else None
        checked = self._shared_grads(task_grads)
        shared_grads: Iterator[Tensor | None] = iter(checked)
        for group in self.param_groups:
            if group["shared"]:
                params = list(group["params"])
                raw = [next(shared_grads) for _ in params]
                if not params:
                    continue
                flat = self._flat_state(group)
                if flat is not None:
                    recorded = self._flat_step(group, flat, raw, record=task_updates is not None)
                    if task_updates is not None and recorded is not None:
                        # The flat shares themselves (with their [T, N] update) when they are all the shares.
                        task_updates = recorded if not task_updates and len(recorded) == len(checked) else [*task_updates, *recorded]
                    continue
                grads = [g if g is not None else p.new_zeros((self.num_tasks, *p.shape)) for g, p in zip(raw, params)]
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

    def _fused_steps(self, group: dict, g: Tensor, bufs: dict[str, Tensor], step: float) -> tuple[Tensor, Tensor]:
        beta1, beta2 = group["betas"]
        step_size = torch.tensor(-(group["lr"] / (1 - beta1**step)), dtype=g.dtype, device=g.device)
        bc2_sqrt = torch.tensor((1 - beta2**step) ** 0.5, dtype=g.dtype, device=g.device)
        return _compiled(_adam_fused)(g, bufs["exp_avg"], bufs["exp_avg_sq"], beta1, beta2, group["eps"], step_size, bc2_sqrt)


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

    def _fused_steps(self, group: dict, g: Tensor, bufs: dict[str, Tensor], step: float) -> tuple[Tensor, Tensor]:
        neg_lr = torch.tensor(-group["lr"], dtype=g.dtype, device=g.device)
        return _compiled(_rmsprop_fused)(g, bufs["square_avg"], group["alpha"], group["eps"], neg_lr)


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

    def _fused_steps(self, group: dict, g: Tensor, bufs: dict[str, Tensor], step: float) -> tuple[Tensor, Tensor]:
        neg_clr = torch.tensor(-(group["lr"] / (1 + (step - 1) * group["lr_decay"])), dtype=g.dtype, device=g.device)
        return _compiled(_adagrad_fused)(g, bufs["sum"], group["eps"], neg_clr)
