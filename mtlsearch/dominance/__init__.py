"""Task dominance of shared layers: the AU metric of AdaTask (Yang et al., AAAI 2023, arXiv 2211.15055).

For each shared layer (the module owning the parameters, e.g. ``encoder.0``) and each task t, an
exponentially decaying average of the squared update *attributable to task t*::

    AU_t <- beta * AU_t + (1 - beta) * mean over the layer's elements of (Delta theta_t)^2
    rAU_t = AU_t / sum_j AU_j

``rAU_t`` near 1 means task t dominates the layer's updates; ``1/T`` everywhere is perfect balance.
The attributable update ``Delta theta_t`` is the optimizer's actual step split linearly over the
tasks; the optimizer that owns the update rule computes it (``step_tasks(task_grads, shares=True)``,
see :mod:`mtlsearch.optim.base` for each rule), and :class:`DominanceTracker` averages it.

``g_t``, the gradient the optimizer received from task t, is already multiplied by the balancing
method's weight.  ``beta`` is a setting (``dominance_beta``, default 0.9): the paper's constant is not
public (the released code has no AU).  Deviation to know: the paper defines AU per parameter element;
here it is averaged over the layer's elements before the ratio is taken (one number per layer and task).

``python -m mtlsearch.dominance --benchmark synthetic --epochs 30 --out docs/dominance.png`` (the
command, :mod:`mtlsearch.dominance.__main__`) trains EW under Adam and under Adam+AdaTask and draws
both heatmaps side by side (:mod:`mtlsearch.dominance.heatmap`, which the report draws with too).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn


def layer_of(param_name: str) -> str:
    """``encoder.0.weight`` -> ``encoder.0`` (the module owning the parameter)."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


class DominanceTracker:
    """AU / rAU per shared layer and task.

    Call :meth:`update` after every optimizer step with the per-task shares of the update the
    optimizer returned (``[T, *p.shape]`` each, in ``shared`` order); AdaTask's come with the flat
    ``[T, N]`` update they are views of (:class:`mtlsearch.optim.adatask.TaskShares`), reduced at once.
    """

    def __init__(self, model: nn.Module, shared: Sequence[nn.Parameter], task_names: Sequence[str], beta: float = 0.9):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"dominance beta must be in [0, 1), got {beta}")
        self.shared = list(shared)
        self.task_names = list(task_names)
        self.beta = beta
        names = {id(p): n for n, p in model.named_parameters()}
        self.layers: list[str] = []
        index = []
        for p in self.shared:
            layer = layer_of(names[id(p)])
            if layer not in self.layers:
                self.layers.append(layer)
            index.append(self.layers.index(layer))
        device = self.shared[0].device if self.shared else torch.device("cpu")
        self.layer_index = torch.tensor(index, dtype=torch.long, device=device)
        self.param_numel = torch.tensor([p.numel() for p in self.shared], dtype=torch.long, device=device)
        numel = torch.zeros(len(self.layers), dtype=torch.float64)
        for i, p in zip(index, self.shared):
            numel[i] += p.numel()
        self.layer_numel = numel.to(device)
        self.au = torch.zeros(len(self.layers), len(self.task_names), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, shares: Sequence[Tensor]) -> None:
        """Fold one step's per-task shares of the update into AU."""
        num_tasks = len(self.task_names)
        flat = getattr(shares, "flat", None)  # AdaTask's flat update: one reduction instead of one per parameter
        params = getattr(shares, "params", ())
        if flat is not None and len(params) == len(self.shared) and all(p is q for p, q in zip(params, self.shared)):
            lengths = self.param_numel.expand(num_tasks, -1)
            sq = torch.segment_reduce(flat.double().pow(2), "sum", lengths=lengths, axis=1).T  # [params, T]
        else:
            sq = torch.stack([u.double().pow(2).reshape(num_tasks, -1).sum(1) for u in shares])  # [params, T]
        per_layer = torch.zeros_like(self.au).index_add_(0, self.layer_index, sq) / self.layer_numel[:, None]
        self.au.mul_(self.beta).add_(per_layer, alpha=1 - self.beta)

    # ------------------------------------------------------------------ results
    def relative(self) -> dict[str, dict[str, float]]:
        """``{layer: {task: rAU}}`` (NaN for a layer that has not moved yet)."""
        total = self.au.sum(1, keepdim=True)
        rau = torch.where(total > 0, self.au / total.clamp_min(1e-300), torch.full_like(self.au, float("nan")))
        rows = rau.tolist()
        return {layer: dict(zip(self.task_names, row)) for layer, row in zip(self.layers, rows)}

    def metrics(self) -> dict[str, float]:
        """``dominance/<layer>/<task>`` -> rAU."""
        return {f"dominance/{layer}/{task}": v for layer, row in self.relative().items() for task, v in row.items()}

    def state_dict(self) -> dict[str, Any]:
        # The per-task moments behind the shares are optimizer state (saved with the optimizer).
        return {"au": self.au.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.au.copy_(state["au"])


def table_from_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{layer: {task: rAU}}`` from an epoch result's ``dominance/<layer>/<task>`` entries."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("dominance/") and key.count("/") >= 2:
            layer, task = key[len("dominance/") :].rsplit("/", 1)
            out.setdefault(layer, {})[task] = value
    return out
