"""The benchmark API: tasks (loss, metrics and their directions), data splits and a model.

Built-in benchmarks and a user's own (``benchmark: my_pkg.tasks:MyBenchmark`` or
``benchmark: ./my_tasks.py:MyBenchmark`` in a space file, see :mod:`mtlsearch.plugins`) implement the
same three methods of :class:`Benchmark`:

* ``task_specs()``: one :class:`TaskSpec` per task: its name, its loss ``(prediction, target) ->
  scalar``, its metrics each with a direction (``{"accuracy": "max", "mae": "min"}``; ``True`` /
  ``False`` = lower is better also works) and a factory of the meter that computes them over a split
  (:class:`~mtlsearch.metrics.AccuracyMeter`, :class:`~mtlsearch.metrics.RegressionMeter`,
  :class:`~mtlsearch.metrics.MeanMeter` for per-example functions, or your own ``update``/``compute``).
* ``load_splits(data_seed)``: ``{"train": ..., "val": ..., "test": ...}``, each split either
  a ``torch.utils.data.Dataset`` whose items are ``(input, {task: target})`` (read through a
  ``DataLoader`` with the benchmark option ``num_workers`` worker processes), in-memory tensors
  ``(inputs, {task: targets})`` (batched by slicing), or a :class:`TensorSplit`.  Trials are selected
  on ``val`` and reported on ``test``.  Each split iterates over ``(inputs, {task: target})``
  batches; ``inputs`` is one tensor shared by every task, or, for multi-input benchmarks, a dict
  ``{task: tensor}``.
* ``build_model(task_names)``: an :class:`HPSModel` (a shared encoder and one head per task), or any
  ``nn.Module`` whose forward returns ``{task: prediction}`` and that says which parameters are
  shared, by a ``shared_parameters()`` method or by wrapping it as ``OutputsModel(net, shared=...)``.
  Gradient-level methods of such a model use ``grad_mode: param`` (there is no single shared
  representation to take gradients at).

Options a config may set for the benchmark are declared in ``options``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from mtlsearch.metrics import Meter

Batch = tuple["Tensor | dict[str, Tensor]", dict[str, Tensor]]


DIRECTIONS = {"min": True, "max": False}


@dataclass(frozen=True)
class TaskSpec:
    """One task: ``metrics`` maps each metric name to its direction, ``"min"`` or ``"max"`` (or the
    bool *lower is better*); it is stored as ``{metric: lower_is_better}``.  ``new_meter()`` returns a
    fresh meter whose ``compute()`` reports exactly these metrics."""

    name: str
    loss: Callable[[Tensor, Tensor], Tensor]  # (prediction, target) -> scalar mean loss
    metrics: Mapping[str, bool]  # metric name -> lower_is_better
    new_meter: Callable[[], Meter]

    def __post_init__(self) -> None:
        from mtlsearch.errors import ConfigError

        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ConfigError(f"a task name is a non-empty string without '/', got {self.name!r}", field="task_specs")
        if not isinstance(self.metrics, Mapping) or not self.metrics:
            raise ConfigError(
                f"task {self.name!r}: metrics must map each metric name to its direction ('min' or 'max'), got {self.metrics!r}",
                field="task_specs",
            )
        lower = {}
        for metric, direction in self.metrics.items():
            if isinstance(direction, bool):
                lower[metric] = direction
            elif direction in DIRECTIONS:
                lower[metric] = DIRECTIONS[direction]
            else:
                raise ConfigError(
                    f"task {self.name!r}: metric {metric!r} has direction {direction!r}; give 'min' (lower is better) or 'max'",
                    field="task_specs",
                )
        object.__setattr__(self, "metrics", lower)
        for what in ("loss", "new_meter"):
            if not callable(getattr(self, what)):
                raise ConfigError(f"task {self.name!r}: {what} must be callable, got {getattr(self, what)!r}", field="task_specs")


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


class _IdentityHeads:
    """``heads[task](z) = z`` for every task (no parameters)."""

    def __getitem__(self, task: str) -> Callable[[Tensor], Tensor]:
        return _identity


def _identity(z: Tensor) -> Tensor:
    return z


class OutputsModel(nn.Module):
    """Any ``nn.Module`` whose forward returns ``{task: prediction}``, seen as the trainer sees an
    :class:`HPSModel`: ``shared`` (default: ``net.shared_parameters()``) are the parameters every task
    updates, the others are task-specific (each gets only its own task's gradient).  Its "encoder"
    output is each task's prediction, so gradient-level methods run in ``param`` mode."""

    outputs_per_task = True

    def __init__(self, net: nn.Module, shared: Iterable[nn.Parameter] | None = None):
        super().__init__()
        self.net = net
        if shared is None:
            shared_parameters = getattr(net, "shared_parameters", None)
            if not callable(shared_parameters):
                raise TypeError(
                    f"{type(net).__name__} returns one output per task but does not say which parameters are "
                    "shared: give it a shared_parameters() method, or return OutputsModel(net, shared=...)"
                )
            shared = shared_parameters()
        self._shared_ids = {id(p) for p in shared}
        if not self._shared_ids:
            raise TypeError(f"{type(net).__name__}: no shared parameters (shared_parameters() is empty)")
        self.heads = _IdentityHeads()  # predictions come out of ``net`` whole

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if id(p) in self._shared_ids and p.requires_grad]

    def task_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if id(p) not in self._shared_ids and p.requires_grad]

    def forward(self, x: Any) -> Any:
        return self.net(x)


def as_model(model: nn.Module) -> HPSModel | OutputsModel:
    """The model a benchmark built, in the form the trainer uses (an :class:`HPSModel` unchanged)."""
    if isinstance(model, (HPSModel, OutputsModel)):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_model must return an nn.Module, got {type(model).__name__}")
    return OutputsModel(model)


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


def as_split(split: Any, num_workers: int = 0) -> Any:
    """A split as the trainer iterates it (``len`` and ``batches(batch_size, shuffle, generator)``):
    a ``Dataset`` goes through a ``DataLoader`` (:class:`~mtlsearch.benchmarks.folder.LoaderSplit`),
    ``(inputs, {task: targets})`` tensors become a :class:`TensorSplit`; others are kept."""
    from torch.utils.data import Dataset

    if hasattr(split, "batches"):
        return split
    if isinstance(split, Dataset):
        from .folder import LoaderSplit

        return LoaderSplit(split, num_workers=num_workers)
    if isinstance(split, (tuple, list)) and len(split) == 2 and isinstance(split[1], Mapping):
        inputs, targets = split
        if isinstance(inputs, Tensor) and all(isinstance(v, Tensor) for v in targets.values()):
            sizes = {k: v.shape[0] for k, v in targets.items()}
            if any(n != inputs.shape[0] for n in sizes.values()):
                raise ValueError(f"inputs hold {inputs.shape[0]} examples but the targets {sizes}")
            return TensorSplit(inputs, dict(targets))
    raise TypeError(
        f"a split is a torch Dataset of (input, {{task: target}}) items, a tuple (inputs, {{task: targets}}) of "
        f"tensors or a TensorSplit, got {type(split).__name__}"
    )


class Benchmark:
    """Base class of benchmarks; subclasses implement the three methods below (see the module doc)."""

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
