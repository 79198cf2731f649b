"""Task dominance of shared layers: the AU metric of AdaTask (Yang et al., AAAI 2023, arXiv 2211.15055).

For each shared layer (the module owning the parameters, e.g. ``encoder.0``) and each task t, an
exponentially decaying average of the squared update *attributable to task t*::

    AU_t <- beta * AU_t + (1 - beta) * mean over the layer's elements of (Delta theta_t)^2
    rAU_t = AU_t / sum_j AU_j

``rAU_t`` near 1 means task t dominates the layer's updates; ``1/T`` everywhere is perfect balance.
The attributable update ``Delta theta_t`` is the optimizer's actual step split linearly over the tasks
(its parts sum to the step, up to the weight-decay term, which no task owns):

* AdaTask optimizers: the per-task step from task t's own accumulators (``optimizer.task_updates``).
* Adam: ``lr/(1-b1^s) * m_t / (sqrt(v)/sqrt(1-b2^s) + eps)`` with the common ``v`` of the optimizer and
  per-task first moments ``m_t <- b1 m_t + (1-b1) g_t`` tracked here (``m`` is linear in the gradients,
  so ``sum_t m_t = m``).
* RMSProp / AdaGrad: ``lr * g_t / (sqrt(v) + eps)`` with the common ``v`` (AdaGrad: ``clr`` and the sum
  of squares); SGD with momentum: ``lr * buf_t`` with per-task momentum buffers tracked here.

``g_t`` is the gradient the optimizer received from task t, i.e. already multiplied by the balancing
method's weight.  ``beta`` is a setting (``dominance_beta``, default 0.9): the paper's constant is not
public (the released code has no AU).  Deviation to know: the paper defines AU per parameter element;
here it is averaged over the layer's elements before the ratio is taken (one number per layer and task).

``python -m mtlsearch.dominance --benchmark synthetic --epochs 30 --out docs/dominance.png`` trains EW
under Adam and under Adam+AdaTask and draws both heatmaps side by side (the paper's observation: under
Adam the shared layers are dominated by the largest-scale task; under AdaTask they are balanced).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from mtlsearch.optim.adatask import AdaTaskOptimizer


def layer_of(param_name: str) -> str:
    """``encoder.0.weight`` -> ``encoder.0`` (the module owning the parameter)."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


class DominanceTracker:
    """AU / rAU per shared layer and task, updated after every optimizer step.

    Call :meth:`update` right after ``optimizer.step`` with the per-task gradients of the shared
    parameters that produced the step (``[T, *p.shape]`` each, in ``shared`` order).
    """

    def __init__(
        self,
        model: nn.Module,
        shared: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        task_names: Sequence[str],
        beta: float = 0.9,
    ):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"dominance beta must be in [0, 1), got {beta}")
        self.shared = list(shared)
        self.optimizer = optimizer
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
        numel = torch.zeros(len(self.layers), dtype=torch.float64)
        for i, p in zip(index, self.shared):
            numel[i] += p.numel()
        self.layer_numel = numel.to(device)
        self.au = torch.zeros(len(self.layers), len(self.task_names), dtype=torch.float64, device=device)
        self._group = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self.kind = self._kind(optimizer)
        #: per-task first moments (Adam) or momentum buffers (SGD), [T, *p.shape] per shared parameter
        self.buffers: list[Tensor] | None = None
        if isinstance(optimizer, AdaTaskOptimizer):
            optimizer.keep_task_updates = True

    @staticmethod
    def _kind(optimizer: torch.optim.Optimizer) -> str:
        if isinstance(optimizer, AdaTaskOptimizer):
            return "adatask"
        for cls, kind in ((torch.optim.Adam, "adam"), (torch.optim.RMSprop, "rmsprop"),
                          (torch.optim.Adagrad, "adagrad"), (torch.optim.SGD, "sgd")):
            if isinstance(optimizer, cls):
                if kind == "rmsprop" and any(g["momentum"] or g["centered"] for g in optimizer.param_groups):
                    raise ValueError("task dominance under RMSprop with momentum or centered=True is not implemented")
                return kind
        raise ValueError(f"task dominance: no attribution rule for {type(optimizer).__name__}")

    # ------------------------------------------------------------------ attribution
    @torch.no_grad()
    def task_updates(self, task_grads: Sequence[Tensor]) -> list[Tensor]:
        """The step each task is responsible for, ``[T, *p.shape]`` per shared parameter.

        Call once per step, after ``optimizer.step`` (it advances the tracked per-task moments)."""
        if self.kind == "adatask":
            updates = self.optimizer.task_updates
            if updates is None:
                raise RuntimeError("the AdaTask optimizer did not keep its per-task updates")
            return updates
        grads = [g.detach() for g in task_grads]
        groups = [self._group[id(p)] for p in self.shared]
        states = [self.optimizer.state[p] for p in self.shared]
        if self.kind == "adam":
            if self.buffers is None:
                self.buffers = [torch.zeros_like(g) for g in grads]
            torch._foreach_lerp_(self.buffers, grads, 1 - groups[0]["betas"][0])  # m_t, as Adam's m
            out = []
            for m_t, g, st in zip(self.buffers, groups, states):
                beta1, beta2 = g["betas"]
                s = float(st["step"])
                v = st["max_exp_avg_sq"] if g.get("amsgrad") else st["exp_avg_sq"]
                denom = (v.sqrt() / (1 - beta2**s) ** 0.5).add_(g["eps"])
                out.append(m_t * (-(g["lr"] / (1 - beta1**s))) / denom)
            return out
        if self.kind == "rmsprop":
            return [-g["lr"] * gr / (st["square_avg"].sqrt() + g["eps"]) for gr, g, st in zip(grads, groups, states)]
        if self.kind == "adagrad":
            return [
                -(g["lr"] / (1 + (float(st["step"]) - 1) * g["lr_decay"])) * gr / (st["sum"].sqrt() + g["eps"])
                for gr, g, st in zip(grads, groups, states)
            ]
        # SGD: buf_t <- mu buf_t + (1 - dampening) g_t (the first step copies g_t, as torch does)
        first = self.buffers is None
        if first:
            self.buffers = [g.clone() for g in grads]
        out = []
        for i, (gr, g) in enumerate(zip(grads, groups)):
            mu = g["momentum"]
            if mu == 0:
                out.append(-g["lr"] * gr)
                continue
            if not first:
                self.buffers[i].mul_(mu).add_(gr, alpha=1 - g["dampening"])
            direction = gr + mu * self.buffers[i] if g["nesterov"] else self.buffers[i]
            out.append(-g["lr"] * direction)
        return out

    @torch.no_grad()
    def update(self, task_grads: Sequence[Tensor]) -> list[Tensor]:
        """Fold one step into AU; returns the attributed updates ``[T, *p.shape]`` per shared parameter."""
        updates = self.task_updates(task_grads)
        num_tasks = len(self.task_names)
        sq = torch.stack([u.double().pow(2).reshape(num_tasks, -1).sum(1) for u in updates])  # [params, T]
        per_layer = torch.zeros_like(self.au).index_add_(0, self.layer_index, sq) / self.layer_numel[:, None]
        self.au.mul_(self.beta).add_(per_layer, alpha=1 - self.beta)
        return updates

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
        return {"au": self.au.clone(), "buffers": None if self.buffers is None else [b.clone() for b in self.buffers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.au.copy_(state["au"])
        buffers = state.get("buffers")
        self.buffers = None if buffers is None else [b.to(p.device, p.dtype) for b, p in zip(buffers, self.shared)]


def table_from_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{layer: {task: rAU}}`` from an epoch result's ``dominance/<layer>/<task>`` entries."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("dominance/"):
            _, layer, task = key.split("/", 2)
            out.setdefault(layer, {})[task] = value
    return out


def plot_heatmaps(panels: Mapping[str, Mapping[str, Mapping[str, float]]], path: str, title: str | None = None) -> None:
    """Draw one layers x tasks rAU heatmap per panel (title -> {layer: {task: rAU}}), side by side, to a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    titles = list(panels)
    first = panels[titles[0]]
    layers = list(first)
    tasks = list(next(iter(first.values())))
    fig = Figure(figsize=(2.2 + 1.0 * len(tasks) * len(titles), 1.6 + 0.55 * len(layers)), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(titles), squeeze=False)[0]
    image = None
    for ax, panel in zip(axes, titles):
        data = [[panels[panel][layer][task] for task in tasks] for layer in layers]
        image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(panel)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
        ax.set_yticks(range(len(layers)), layers if ax is axes[0] else [""] * len(layers))
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=9)
    fig.colorbar(image, ax=list(axes), label="rAU")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtlsearch.dominance",
        description="Train one balancing method under several optimizers and draw the task dominance (rAU) of the shared layers.",
    )
    parser.add_argument("--benchmark", default="synthetic")
    parser.add_argument("--method", default="ew")
    parser.add_argument("--optimizers", nargs="+", default=["adam", "adam_adatask"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beta", type=float, default=0.9, help="AU decay (dominance_beta)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="dominance.png", help="PNG path")
    args = parser.parse_args(argv)

    from mtlsearch.errors import ConfigError
    from mtlsearch.trainer import Trainer

    panels: dict[str, dict[str, dict[str, float]]] = {}
    finals: dict[str, dict[str, float]] = {}
    for opt in args.optimizers:
        config = {
            "benchmark": args.benchmark, "method": args.method, "optimizer": opt, "lr": args.lr,
            "max_epochs": args.epochs, "seed": args.seed, "device": args.device,
            "dominance_interval": args.epochs, "dominance_beta": args.beta,
        }
        try:
            trainer = Trainer(config)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        result: dict[str, float] = {}
        for result in trainer.run():  # noqa: B007 - the last epoch's result is kept
            pass
        panels[f"{args.method} + {opt}"] = table_from_metrics(result)
        finals[opt] = result

    titles = list(panels)
    first = panels[titles[0]]
    tasks = list(next(iter(first.values())))
    print(f"rAU per shared layer (beta={args.beta}) after {args.epochs} epochs of {args.method} on {args.benchmark}")
    header = f"{'layer':<12} {'task':<14}" + "".join(f"{o:>16}" for o in args.optimizers)
    print(header)
    for layer in first:
        for task in tasks:
            print(f"{layer:<12} {task:<14}" + "".join(f"{panels[t][layer][task]:>16.3f}" for t in titles))
    metric_keys = [k for k in finals[args.optimizers[0]] if k.startswith("test/") and k != "test/delta_m"]
    print("\ntest metrics")
    for key in metric_keys + (["test/delta_m"] if "test/delta_m" in finals[args.optimizers[0]] else []):
        print(f"{key:<27}" + "".join(f"{finals[o][key]:>16.4g}" for o in args.optimizers))
    plot_heatmaps(
        panels, args.out,
        title=f"task dominance (rAU, beta={args.beta}) of the shared layers, {args.benchmark}, {args.epochs} epochs, lr={args.lr:g}",
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
