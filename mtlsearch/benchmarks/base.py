"""What a benchmark provides: tasks (loss, metrics and their directions), data splits and a model.

A benchmark yields three splits, ``train``, ``val`` and ``test``: trials are selected on ``val`` and
reported on ``test``.  Each split iterates over ``(inputs, {task: target})`` batches; ``inputs`` is
one tensor shared by every task, or, for multi-input benchmarks, a dict ``{task: tensor}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping

import torch
from torch import Tensor, nn

from mtlsearch.metrics import Meter

Batch = tuple["Tensor | dict[str, Tensor]", dict[str, Tensor]]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    loss: Callable[[Tensor, Tensor], Tensor]  # (prediction, target) -> scalar mean loss
    metrics: Mapping[str, bool]  # metric name -> lower_is_better
    new_meter: Callable[[], Meter]


class HPSModel(nn.Module):
    """Hard parameter sharing: one shared encoder, one head per task.

    ``encoder`` maps inputs to the shared representation ``z``; ``heads[t]`` maps ``z`` to task t's
    prediction.  The encoder's parameters are the *shared* ones, the heads' the task-specific ones.
    """

    def __init__(self, encoder: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def task_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.heads.parameters() if p.requires_grad]

    def forward(self, x: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
        if isinstance(x, Mapping):  # multi-input: a task absent from the batch gets no prediction
            return {t: head(self.encoder(x[t])) for t, head in self.heads.items() if t in x}
        z = self.encoder(x)
        if isinstance(z, (list, tuple)):  # one representation per task (e.g. MTAN's attention)
            return {t: head(zt) for (t, head), zt in zip(self.heads.items(), z)}
        return {t: head(z) for t, head in self.heads.items()}


@dataclass
class TensorSplit:
    """A split held in memory as tensors; batches are index slices (no DataLoader overhead)."""

    inputs: Tensor
    targets: dict[str, Tensor]

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def to(self, device: torch.device) -> "TensorSplit":
        return TensorSplit(self.inputs.to(device), {k: v.to(device) for k, v in self.targets.items()})

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Batch]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.inputs.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.inputs[idx], {k: v[idx] for k, v in self.targets.items()}


class Benchmark:
    """Base class of benchmarks; subclasses set ``name`` and implement the three methods below."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    multi_input: ClassVar[bool] = False
    #: Options a config may set for this benchmark: name -> default, or name -> ``HParam`` (then
    #: validated like method hyperparameters; a ``None`` default means "unset" and is allowed).
    #: A trial config takes them as flat keys beside the common ones (see ``TrialConfig``).
    options: ClassVar[dict[str, Any]] = {}
    #: Batch size of evaluation passes; ``None``: the trainer's default.
    eval_batch_size: int | None = None

    def __init__(self, data_root: str | None = None, **options: Any):
        self.data_root = data_root
        self.opts = self.check_options(options)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """All options with defaults filled in; unknown names and bad values raise ``ConfigError``."""
        from mtlsearch.balancing.base import HParam
        from mtlsearch.errors import ConfigError

        out = {}
        for key in options:
            if key not in cls.options:
                allowed = ", ".join(sorted(cls.options)) or "none"
                raise ConfigError(f"unknown option {key!r} for benchmark {cls.name!r}; its options: {allowed}", field=key)
        for key, spec in cls.options.items():
            if isinstance(spec, HParam):
                value = options.get(key, spec.default)
                out[key] = value if value is None and spec.default is None else spec.validate(key, value)
            else:
                out[key] = options.get(key, spec)
        return out

    def task_specs(self) -> list[TaskSpec]:
        raise NotImplementedError

    def load_splits(self, data_seed: int) -> dict[str, Any]:
        """``{"train": split, "val": split, "test": split}``; deterministic for ``data_seed``."""
        raise NotImplementedError

    def build_model(self, task_names: list[str]) -> HPSModel:
        raise NotImplementedError

    # Convenience
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.task_specs()]
