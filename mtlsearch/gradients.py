"""Per-task gradients, computed in one place for every method that needs them.

This is where the cost of gradient-level methods and AdaTask lives, so it is written once:

* **rep mode**: the gradient of each task's loss w.r.t. the shared representation ``z``.  Every head
  reads its own detached copy (a leaf) of ``z``, so *one* backward pass through the heads yields each
  head's parameter gradients and every ``dL_t/dz`` at once.  The encoder is then back-propagated once,
  with the combined cotangent.
* **param mode**: the gradient of each task's loss w.r.t. every shared parameter.  Obtained as T
  vector-Jacobian products of the encoder with the rep-mode cotangents, batched into one vmapped
  backward pass (``is_grads_batched``) where the encoder's ops support it, else one pass per task.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor, nn


class RepLeaves:
    """Per-task detached copies of the shared representation(s).

    ``sources[t]`` is the encoder output task ``t`` reads (the same tensor for every task of a
    single-input benchmark), ``leaves[t]`` the leaf its head is applied to.
    """

    def __init__(self, sources: Sequence[Tensor]):
        self.sources = list(sources)
        self.leaves = [s.detach().requires_grad_(True) for s in self.sources]
        self.shared_source = all(s is self.sources[0] for s in self.sources)

    def grads(self) -> list[Tensor]:
        """``dL_t/dz`` for each task (zeros for a task whose loss did not reach its leaf)."""
        return [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in self.leaves]

    def backward(self, cotangents: Sequence[Tensor]) -> None:
        """Back-propagate ``sum_t <cotangent_t, z_t>`` through the encoder (one pass)."""
        if self.shared_source:
            total = torch.stack(list(cotangents)).sum(0)
            self.sources[0].backward(total)
        else:
            torch.autograd.backward(self.sources, list(cotangents))


_BATCHED_OK: dict[int, bool] = {}


def per_task_param_grads(leaves: RepLeaves, cotangents: Sequence[Tensor], params: Sequence[nn.Parameter], key: int = 0) -> list[Tensor]:
    """For each shared parameter, its per-task gradients stacked as ``[T, *param.shape]``.

    ``cotangents[t]`` is task t's gradient w.r.t. its representation (``dL_t/dz``, possibly weighted).
    Parameters a task does not reach get zeros.  ``key`` identifies the model, so that the fallback
    decision (vmapped backward unsupported) is taken once.
    """
    params = list(params)
    num_tasks = len(cotangents)
    if leaves.shared_source and _BATCHED_OK.get(key, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grads = torch.autograd.grad(
                    leaves.sources[0],
                    params,
                    grad_outputs=torch.stack(list(cotangents)),
                    is_grads_batched=True,
                    allow_unused=True,
                    # Keep the graph on the first try, so the per-task fallback can still run.
                    retain_graph=key not in _BATCHED_OK,
                )
            _BATCHED_OK[key] = True
            return [g if g is not None else p.new_zeros((num_tasks, *p.shape)) for g, p in zip(grads, params)]
        except RuntimeError:
            _BATCHED_OK[key] = False
    per_task: list[Sequence[Tensor | None]] = []
    for t in range(num_tasks):
        per_task.append(
            torch.autograd.grad(
                leaves.sources[t],
                params,
                grad_outputs=cotangents[t],
                retain_graph=t < num_tasks - 1 or not leaves.shared_source,
                allow_unused=True,
            )
        )
    return [torch.stack([gi if (gi := g[i]) is not None else p.new_zeros(p.shape) for g in per_task]) for i, p in enumerate(params)]


def flatten_task_grads(task_grads: Sequence[Tensor]) -> Tensor:
    """``[T, d]`` matrix from per-parameter ``[T, *shape]`` gradients."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in task_grads], dim=1)


def as_grad(p: Tensor, g: Tensor) -> Tensor:
    """``g`` with ``p``'s dtype and memory layout (a copy only where they differ): fused optimizers
    refuse a contiguous gradient for a channels_last convolution weight."""
    if g.dtype == p.dtype and g.stride() == p.stride():
        return g
    return torch.empty_like(p).copy_(g)


def set_flat_grad(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    """Write a flat direction ``[d]`` into ``param.grad`` (accumulating onto existing grads)."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view(p.shape)
        p.grad = torch.empty_like(p).copy_(g) if p.grad is None else p.grad.add_(g)
        offset += n


def weighted_sum(weights: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """``[w_t * x_t]`` for per-task tensors (weights broadcast over each tensor)."""
    return [w * x for w, x in zip(weights.to(tensors[0].dtype).unbind(0), tensors)]
