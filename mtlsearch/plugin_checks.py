"""Checks of a search's plugins before Ray starts (see :mod:`mtlsearch.plugins` for what a plugin is).

Apart from :mod:`mtlsearch.plugins` because these checks build what the core builds (the registries,
a trial config, a trainer): the loaders there are imported by the registries themselves, so the two
halves in one module made an import circle through the whole core (config -> balancing -> plugins ->
config).  :func:`prepare` localises a space and checks its plugin classes; :func:`check_space` runs
each plugin once on the CPU (a first batch, each task's loss, one training step).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mtlsearch.errors import ConfigError
from mtlsearch.plugins import (
    absolute,
    in_ray_job,
    is_plugin,
    locate,
    one_line,
    plugin_name,
    register_locations,
    source_file,
    space_plugins,
    user_frame,
)

if TYPE_CHECKING:
    from mtlsearch.benchmarks.base import Benchmark, TaskSpec
    from mtlsearch.config import TrialConfig
    from mtlsearch.spaces import SearchSpace


# ------------------------------------------------------------------------------ localising a space
def localize(space: SearchSpace, *, in_job: bool | None = None) -> SearchSpace:
    """The space with each plugin under its one name (:func:`~mtlsearch.plugins.plugin_name`: as written
    in the space file, never an absolute path; a class the API passed under the space's own name for it),
    and where each name is loaded from registered (:func:`~mtlsearch.plugins.register_locations`): an
    absolute path, as trials run in their own working directories; inside a Ray job, a path under its
    working directory relative to it (see :func:`~mtlsearch.plugins.absolute`)."""
    import dataclasses

    from mtlsearch.spaces import Param

    folder = Path(space.path).parent
    if in_job is None:
        in_job = in_ray_job()
    base = Path.cwd() if in_job else None
    known = _spellings(space) + [k for k in _file_spellings(space) if k not in _spellings(space)]
    locations: dict[str, str] = {}

    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return [fix(v) for v in value]
        if not is_plugin(value):
            return value
        name = plugin_name(value, folder, known)
        locations.setdefault(name, absolute(locate(value), folder, base))
        return name

    params = []
    for p in space.params:
        args = fix(p.args) if p.name == "method" and p.kind in ("value", "choice", "grid") else p.args
        when = {k: (fix(v) if k == "method" else v) for k, v in p.when.items()}
        params.append(Param(p.name, p.kind, args, when))
    benchmark = fix(space.benchmark)
    register_locations(locations)
    return dataclasses.replace(space, benchmark=benchmark, params=params)


def _file_spellings(space: SearchSpace) -> list[str]:
    """The plugin specs of the space file itself, before ``--set`` / ``--benchmark`` (the API's classes
    replace its values: they keep the names the file gives them)."""
    from mtlsearch.spaces import load_space

    try:
        return _spellings(load_space(str(space.path), validate=False))
    except (ConfigError, OSError):  # a space not from a file: nothing more to match
        return []


def _spellings(space: SearchSpace) -> list[str]:
    """The plugin specs the space names, in file order: its own spellings first (the benchmark, the
    methods, the ``when:`` conditions), so that one class named twice gets the first of its names."""
    out: list[str] = []

    def add(value: Any) -> None:
        for v in value if isinstance(value, list) else [value]:
            if is_plugin(v) and v not in out:
                out.append(v)

    add(space.benchmark)
    for p in space.params:
        if p.name == "method" and p.kind in ("value", "choice", "grid"):
            add(p.args)
        add(p.when.get("method"))
    return out


# ------------------------------------------------------------------------------ checks before any trial
def prepare(space: SearchSpace) -> SearchSpace:
    """:func:`localize` the space and check its plugin classes (importable, right base class, declared
    hyperparameters) before its trial configs are validated against them."""
    space = localize(space)
    for spec in space_plugins(space):
        if spec == space.benchmark:
            from mtlsearch.benchmarks import benchmark_class

            benchmark_class(spec)
        else:
            check_method(spec)
    return space


def check_space(space: SearchSpace, configs: Sequence[TrialConfig] | None = None) -> None:
    """Check every plugin of the space's representative trial configs (see the module docstring);
    ``configs``: those configs where the caller built them (:class:`mtlsearch.preflight.Preflight`)."""
    from mtlsearch.config import TrialConfig

    if not space_plugins(space):
        return
    if configs is None:
        configs = [TrialConfig.from_dict(probe, source=str(space.path)) for probe in space.probe_configs()]
    seen_bench: set[str] = set()
    seen_step: set[str] = set()
    for cfg in configs:
        bench_key = repr((cfg.benchmark, cfg.data_root, sorted(cfg.benchmark_options.items()), cfg.tasks))
        if is_plugin(cfg.benchmark) and bench_key not in seen_bench:
            seen_bench.add(bench_key)
            check_benchmark(cfg)
        step_key = repr((bench_key, cfg.method, cfg.optimizer, cfg.effective_grad_mode))
        if (is_plugin(cfg.method) or is_plugin(cfg.benchmark)) and step_key not in seen_step and len(seen_step) < 8:
            seen_step.add(step_key)
            check_step(cfg)


def check_method(spec: str) -> None:
    """A user's method: a LossBalancing or GradBalancing whose hyperparameters are declared as HParam."""
    from mtlsearch.balancing import GradBalancing, HParam, LossBalancing, get_method

    cls = get_method(spec)
    if not issubclass(cls, (LossBalancing, GradBalancing)):
        raise _fail(
            spec,
            f"{cls.__name__} must subclass LossBalancing (losses -> one scalar) or GradBalancing "
            "(per-task gradients -> weights or a direction)",
            field="method",
        )
    hyperparams = getattr(cls, "hyperparams", None)
    if not isinstance(hyperparams, dict):
        raise _fail(
            spec,
            f"{cls.__name__}.hyperparams must be a dict {{name: HParam(...)}} (or left out, each declared as `name = HParam(...)`)",
            field="method",
        )
    for key, value in hyperparams.items():
        if not isinstance(value, HParam):
            raise _fail(
                spec,
                f"{cls.__name__}.hyperparams[{key!r}] must be HParam(...) so that it can be validated and "
                f"searched (declare it in the class as `{key} = HParam(default, rule, help)`), got {value!r}",
                field="method",
            )


def _fail(spec: str, message: str, err: BaseException | None = None, field: str = "benchmark") -> ConfigError:
    source = source_file(spec)
    where = user_frame(err, [source]) if err is not None else ""
    return ConfigError(message + (f" ({one_line(err)})" if err is not None else ""), source=where or source, field=field)


def check_benchmark(cfg: TrialConfig) -> None:
    """Tasks, splits, a first batch through the model with every task's output, losses and meters."""
    spec = cfg.benchmark
    bench = _construct(spec, cfg)
    specs = _task_specs(spec, bench)
    names = [s.name for s in specs]
    tasks = list(cfg.tasks) if cfg.tasks else names
    unknown = [t for t in tasks if t not in names]
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown}; the benchmark's tasks: {', '.join(names)}", field="tasks")
    x, targets = _first_batch(spec, bench, cfg, tasks)
    outputs = _first_outputs(spec, bench, cfg, tasks, x, targets)
    by_name = {s.name: s for s in specs}
    for t in tasks:
        if t in targets:
            _check_task(spec, by_name[t], outputs[t], targets[t])


def _construct(spec: str, cfg: TrialConfig) -> Benchmark:
    from mtlsearch.benchmarks import get_benchmark

    try:
        return get_benchmark(spec, data_root=cfg.data_root, **cfg.benchmark_options)
    except ConfigError as err:
        raise err.with_source(source_file(spec)) from None
    except Exception as err:
        raise _fail(spec, "constructing the benchmark failed", err) from None


def _task_specs(spec: str, bench: Benchmark) -> list[TaskSpec]:
    from mtlsearch.benchmarks import TaskSpec

    try:
        specs = list(bench.task_specs())
    except ConfigError as err:  # e.g. a metric without a direction: name the line of the user's file
        src = source_file(spec)
        raise ConfigError(err.message, source=user_frame(err, [src]) or src, field=err.field) from None
    except Exception as err:
        raise _fail(spec, "task_specs() failed", err) from None
    if not specs or not all(isinstance(s, TaskSpec) for s in specs):
        raise _fail(spec, f"task_specs() must return a non-empty list of TaskSpec, got {specs!r}"[:300])
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise _fail(spec, f"task_specs() names a task twice: {names}")
    return specs


def _first_batch(spec: str, bench: Benchmark, cfg: TrialConfig, tasks: list[str]) -> tuple[Any, dict[str, Any]]:
    """The train split's first batch (its splits checked on the way)."""
    from mtlsearch.benchmarks import as_split

    try:
        splits = bench.load_splits(cfg.data_seed)
    except ConfigError as err:
        raise err.with_source(source_file(spec)) from None
    except Exception as err:
        raise _fail(spec, "load_splits() failed", err) from None
    if not isinstance(splits, dict) or not {"train", "val"} <= set(splits):
        raise _fail(
            spec,
            f"load_splits() must return a dict with 'train', 'val' (and 'test') splits, got "
            f"{sorted(splits) if isinstance(splits, dict) else type(splits).__name__}",
        )
    try:
        split = as_split(splits["train"], 0)
        x, targets = next(iter(split.batches(2, shuffle=False)))
    except StopIteration:
        raise _fail(spec, "the train split is empty") from None
    except Exception as err:
        raise _fail(spec, "reading a first batch of the train split failed", err) from None
    if not isinstance(targets, dict):
        raise _fail(spec, f"a batch must be (inputs, {{task: target}}), got targets of type {type(targets).__name__}")
    missing = [t for t in tasks if t not in targets]
    if missing and not bench.multi_input:
        raise _fail(spec, f"the train split's batches have no target for task(s) {missing} (they have {sorted(targets)})")
    return x, targets


def _first_outputs(spec: str, bench: Benchmark, cfg: TrialConfig, tasks: list[str], x: Any, targets: dict[str, Any]) -> dict[str, Any]:
    """The model built and a first batch through it: one prediction per task."""
    import torch

    from mtlsearch.benchmarks import as_model

    try:
        torch.manual_seed(cfg.seed)
        model = as_model(bench.build_model(tasks))
    except Exception as err:
        raise _fail(spec, "build_model() failed", err) from None
    if not model.shared_parameters():
        raise _fail(spec, "the model has no shared parameters (what every task trains)")
    model.train()
    try:
        outputs = model(x)
    except Exception as err:
        raise _fail(spec, f"a first training batch (inputs {_shape(x)}) through the model failed", err) from None
    if not isinstance(outputs, dict):
        raise _fail(spec, f"the model must return {{task: prediction}}, got {type(outputs).__name__}")
    missing = [t for t in tasks if t not in outputs and not (bench.multi_input and t not in targets)]
    if missing:
        raise _fail(spec, f"the model's outputs miss task(s) {missing} (it returned {sorted(outputs)}); return one prediction per task")
    return outputs


def _check_task(spec: str, task: TaskSpec, pred: Any, target: Any) -> None:
    """One task's loss (a finite scalar, no broadcasting) and meter (its declared metrics) on a first batch."""
    import torch

    t = task.name
    try:
        loss, broadcast = _loss_broadcasts(task.loss, pred, target)
    except Exception as err:
        raise _fail(
            spec, f"task {t!r}: the loss of a first batch (prediction {_shape(pred)}, target {_shape(target)}) failed", err
        ) from None
    if broadcast:
        raise _fail(
            spec,
            f"output and target shapes of task {t!r} differ: {_dims(pred)} vs {_dims(target)} and its loss only works by "
            f"broadcasting them ({broadcast}), which gives a wrong loss; make the model's output and the target the same shape "
            "(e.g. squeeze the output's last dimension, or unsqueeze the target)",
        )
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise _fail(
            spec,
            f"task {t!r}: the loss must be a scalar tensor, got {_shape(loss)} (prediction {_shape(pred)}, target {_shape(target)})",
        )
    if not torch.isfinite(loss).all():
        raise _fail(spec, f"task {t!r}: the loss of a first batch is {loss.item()}")
    try:
        meter = task.new_meter()
        meter.update(pred.detach(), target)
        values = meter.compute()
    except Exception as err:
        raise _fail(
            spec, f"task {t!r}: its meter failed on a first batch (prediction {_shape(pred)}, target {_shape(target)})", err
        ) from None
    declared = set(task.metrics)
    if not isinstance(values, dict) or set(values) != declared:
        raise _fail(
            spec,
            f"task {t!r}: its meter reports {sorted(values) if isinstance(values, dict) else values!r} "
            f"but the task declares metrics {sorted(declared)}",
        )


def _dims(value: Any) -> str:
    return str(list(value.shape)) if hasattr(value, "shape") else type(value).__name__


def _loss_broadcasts(loss_fn: Any, pred: Any, target: Any) -> tuple[Any, str]:
    """A task's loss on a first batch, and how it broadcast its inputs ('' if it did not): an operation
    whose result is larger than each of its tensor inputs (``[2, 1] - [2]`` gives ``[2, 2]``), or torch's
    own warning that a loss's target size differs from its input size (``mse_loss``, ``l1_loss``, ...)."""
    import warnings

    import torch
    from torch.overrides import TorchFunctionMode

    found: list[str] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if (
                not found
                and len(tensors) >= 2
                and isinstance(out, torch.Tensor)
                and len({tuple(a.shape) for a in tensors}) > 1
                and out.numel() > max(a.numel() for a in tensors)
            ):
                shapes = " and ".join(str(list(a.shape)) for a in tensors)
                found.append(f"{getattr(func, '__name__', 'an operation')} of {shapes} gave {list(out.shape)}")
            return out

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Watch():
            loss = loss_fn(pred, target)
    for w in caught:
        text = str(w.message)
        if not found and "broadcast" in text:
            found.append(text.split(". ")[0])
        elif "broadcast" not in text:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return loss, found[0] if found else ""


def _shape(value: Any) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in value.items()) + "}"
    return type(value).__name__


def check_step(cfg: TrialConfig) -> None:
    """One training step of the trial config on the CPU (a user's method, or a user's model under a method)."""
    import dataclasses

    import torch

    from mtlsearch.trainer import Trainer

    culprit, field = (cfg.method, "method") if is_plugin(cfg.method) else (cfg.benchmark, "benchmark")
    probe = dataclasses.replace(cfg, device="cpu", max_epochs=1, dominance_interval=0)
    try:
        trainer = Trainer(probe)
    except ConfigError as err:
        raise err.with_source(source_file(culprit)) from None
    except Exception as err:
        raise _fail(culprit, f"building a trial (method {cfg.method!r}) failed", err, field) from None
    x, targets = next(iter(trainer.splits["train"].batches(min(cfg.batch_size, 8), shuffle=False)))
    try:
        losses, _ = trainer.train_step(*trainer._to_device(x, targets))
    except Exception as err:
        raise _fail(culprit, f"a first training step (method {cfg.method!r}, optimizer {cfg.optimizer!r}) failed", err, field) from None
    if not torch.isfinite(losses).all():
        raise _fail(culprit, f"a first training step gave non-finite losses {losses.tolist()}", field=field)
