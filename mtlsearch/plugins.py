"""A user's own benchmark or balancing method, named ``module:Class`` or ``path/file.py:Class``.

A space file (``benchmark: my_pkg.tasks:MyBenchmark``, ``params: {method: ./my_method.py:MyMethod}``),
``--benchmark`` and the Python API name them this way; :func:`load_class` imports them for the
registries (:func:`mtlsearch.benchmarks.get_benchmark`, :func:`mtlsearch.balancing.get_method`), so
the rest of the code treats them like the built-in ones.

Before Ray starts, :func:`check_space` checks every plugin a search names, cheaply and on the CPU:
importable, the right base class, tasks with metrics and directions, every split present, a first
training batch through the model with an output for every task, each task's loss a finite scalar,
the meters reporting the declared metrics, and one training step of each plugin method.  Anything
wrong is one :class:`~mtlsearch.errors.ConfigError` naming the user's file (exit 2 on the command line).

How the code reaches Ray's workers (:func:`runtime_env`): a local Ray shares this machine's files and
the driver's ``sys.path``; inside ``ray job submit --working-dir .`` a plugin under the working
directory travels with it; otherwise (a remote cluster, a plugin outside the job's working directory)
the plugin's file or top-level package is shipped with ``runtime_env={"py_modules": [...]}``, and a
worker that lacks the file path imports the module by name.  Installed packages (site-packages) are
left to the nodes' environments.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable

from mtlsearch.errors import ConfigError

if TYPE_CHECKING:
    from mtlsearch.config import TrialConfig
    from mtlsearch.spaces import SearchSpace

_CACHE: dict[str, type] = {}


def is_plugin(name: Any) -> bool:
    return isinstance(name, str) and ":" in name


def _split(spec: str, what: str) -> tuple[str, str, bool]:
    target, _, attr = spec.rpartition(":")
    if not target or not attr or not attr.replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"expected 'module:Class' or 'path/file.py:Class', got {spec!r}", field=what)
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    return target, attr, is_file


def absolute(spec: Any, also_in: Path | None = None, relative_to: Path | None = None) -> Any:
    """``./x.py:C`` -> ``/abs/x.py:C`` (trials run in their own working directories): relative to the
    current directory, else to ``also_in`` (a space file's folder) where the file is; modules unchanged.
    A file under ``relative_to`` (a Ray job's working directory, which every node has a copy of, each at
    its own path) stays relative to it: workers find it on their ``sys.path`` (see :func:`resolve_file`)."""
    if not is_plugin(spec):
        return spec
    target, attr, is_file = _split(spec, "plugin")
    if not is_file:
        return spec
    path = Path(target).expanduser()
    if not path.is_absolute() and not path.is_file() and also_in is not None and (also_in / path).is_file():
        path = also_in / path
    path = path.resolve()
    if relative_to is not None:
        base = Path(relative_to).resolve()
        if base in path.parents:
            return f"{path.relative_to(base).as_posix()}:{attr}"
    return f"{path}:{attr}"


def resolve_file(target: str) -> Path | None:
    """The file a plugin path names: absolute, or relative to the current directory, to the directory a
    Ray Tune trial started in (``TUNE_ORIG_WORKING_DIR``) or to an entry of ``sys.path`` (a Ray job's
    working directory on a worker node); None if there is none."""
    path = Path(target).expanduser()
    if path.is_absolute():
        return path.resolve() if path.is_file() else None
    bases = [os.getcwd(), os.environ.get("TUNE_ORIG_WORKING_DIR"), *sys.path]
    for base in bases:
        if base and (Path(base) / path).is_file():
            return (Path(base) / path).resolve()
    return None


def _user_frame(err: BaseException, files: Iterable[str]) -> str:
    """``file:line`` of the innermost traceback frame in one of ``files`` (the user's code), if any."""
    wanted = {str(Path(f).resolve()) for f in files if f}
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        try:
            if str(Path(frame.filename).resolve()) in wanted:
                where = f"{frame.filename}:{frame.lineno}"
        except OSError:
            continue
    return where


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _import_file(path: Path) -> ModuleType:
    """Import ``dir/name.py`` as module ``name`` with ``dir`` on ``sys.path``, so that its classes can
    be pickled (DataLoader workers) and imported again by name."""
    folder, stem = str(path.parent), path.stem
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = sys.modules.get(stem)
    if module is not None and Path(getattr(module, "__file__", "") or "").resolve() == path:
        return module
    if module is None:
        module = importlib.import_module(stem)
        if Path(getattr(module, "__file__", "") or "").resolve() == path:
            return module
    # ``stem`` names another module (e.g. a file called json.py): load it under a private name.
    name = f"_mtlsearch_plugin_{abs(hash(str(path)))}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_class(spec: str, base: type, what: str) -> type:
    """The class ``spec`` names, a subclass of ``base``; a :class:`ConfigError` naming the file otherwise."""
    key = f"{spec}|{base.__name__}|{os.getcwd() if not os.path.isabs(spec.rpartition(':')[0]) else ''}"
    if key in _CACHE:
        return _CACHE[key]
    target, attr, is_file = _split(spec, what)
    source = target
    try:
        if is_file:
            path = resolve_file(target)
            if path is not None:
                source = str(path)
                module = _import_file(path)
            else:
                path = Path(target)
                # On a Ray worker without this path, the file came as a py_modules entry: import it by name.
                try:
                    module = importlib.import_module(path.stem)
                except ModuleNotFoundError:
                    raise ConfigError(f"no such file (from {spec!r})", source=target, field=what) from None
        else:
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as err:
                if err.name and (target == err.name or target.startswith(err.name + ".")):
                    raise ConfigError(
                        f"cannot import module {target!r} (from {spec!r}): no module named {err.name!r} "
                        "on the Python path (run from the folder that holds it, or install it)",
                        source=target,
                        field=what,
                    ) from None
                raise
            source = getattr(module, "__file__", None) or target
    except ConfigError:
        raise
    except BaseException as err:  # noqa: BLE001 - the user's module failed while importing
        if isinstance(err, KeyboardInterrupt):
            raise
        where = _user_frame(err, [source]) or source
        raise ConfigError(f"importing it failed: {one_line(err)}", source=where, field=what) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            classes = sorted(
                k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, base) and v.__module__ == module.__name__
            )
            raise ConfigError(
                f"has no class {attr!r}; its {base.__name__} classes: {', '.join(classes) or 'none'}", source=source, field=what
            )
    if not (isinstance(obj, type) and issubclass(obj, base)):
        kind = f"class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
        raise ConfigError(
            f"{attr!r} is a {kind}, not a subclass of {base.__module__.rsplit('.', 1)[0]}.{base.__name__}", source=source, field=what
        )
    _CACHE[key] = obj
    return obj


def source_file(spec: str) -> str:
    """The file of the user's module (for error messages)."""
    target, _, is_file = _split(spec, "plugin")
    if is_file:
        path = resolve_file(target)
        if path is None and is_plugin(spec):
            module = sys.modules.get(Path(target).stem)  # shipped as a py_modules file
            path = getattr(module, "__file__", None)
        return str(path or target)
    found = importlib.util.find_spec(target.split(".")[0]) if target else None
    module = sys.modules.get(target)
    return getattr(module, "__file__", None) or (found.origin if found else None) or target


def spec_of(cls: type) -> str:
    """The ``path/file.py:Class`` (or ``module:Class`` for an installed package) naming ``cls``."""
    import inspect

    module = sys.modules.get(cls.__module__)
    if module is None or cls.__module__ == "__main__" or not getattr(module, "__file__", None):
        raise ConfigError(
            f"{cls.__qualname__} is defined in __main__ (a notebook or script); define it in a .py "
            "file and import it from there, so that Ray's workers can import it too",
            field="benchmark",
        )
    path = inspect.getfile(cls)
    if _installed(path):
        return f"{cls.__module__}:{cls.__qualname__}"
    return f"{Path(path).resolve()}:{cls.__qualname__}"


# ------------------------------------------------------------------------------ shipping to workers
def _installed(path: str) -> bool:
    parts = Path(path).resolve().parts
    return "site-packages" in parts or "dist-packages" in parts


def ship_paths(specs: Iterable[str]) -> list[str]:
    """The files or top-level package folders of these plugins that Ray's workers need (not installed ones)."""
    out: list[str] = []
    for spec in specs:
        if not is_plugin(spec):
            continue
        target, _, is_file = _split(spec, "plugin")
        path: str | None
        if is_file:
            path = str(Path(target).expanduser().resolve())
        else:
            top = target.split(".")[0]
            found = importlib.util.find_spec(top)
            if found is None:
                continue
            if found.submodule_search_locations:
                path = list(found.submodule_search_locations)[0]
            else:
                path = found.origin
        if path and not _installed(path) and path not in out:
            out.append(path)
    return out


def space_plugins(space: SearchSpace) -> list[str]:
    """Every ``module:Class`` a space names: its benchmark and any method values."""
    specs = [space.benchmark] if is_plugin(space.benchmark) else []
    for p in space.params:
        if p.name in ("method", "benchmark"):
            values = p.args if isinstance(p.args, list) else [p.args]
            specs += [v for v in values if is_plugin(v) and v not in specs]
    return specs


def runtime_env(space: SearchSpace, *, remote: bool, in_job: bool, cwd: str | None = None) -> dict[str, Any] | None:
    """``{"py_modules": [...]}`` for a remote cluster, or ``None`` when the workers see the files already."""
    if not remote:
        return None
    cwd = str(Path(cwd or os.getcwd()).resolve())
    paths = [p for p in ship_paths(space_plugins(space)) if not (in_job and (p == cwd or p.startswith(cwd + os.sep)))]
    return {"py_modules": paths} if paths else None


# ------------------------------------------------------------------------------ localising a space
def localize(space: SearchSpace, *, in_job: bool | None = None) -> SearchSpace:
    """The space with plugin file paths made absolute (trials run in their own working directories);
    inside a Ray job, paths under its working directory relative to it (see :func:`absolute`)."""
    import dataclasses

    from mtlsearch.spaces import Param

    folder = Path(space.path).parent
    if in_job is None:
        in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    base = Path.cwd() if in_job else None

    def fix(value: Any) -> Any:
        return [fix(v) for v in value] if isinstance(value, list) else absolute(value, folder, base)

    params = []
    for p in space.params:
        args = fix(p.args) if p.name == "method" and p.kind in ("value", "choice", "grid") else p.args
        when = {k: (fix(v) if k == "method" else v) for k, v in p.when.items()}
        params.append(Param(p.name, p.kind, args, when))
    return dataclasses.replace(space, benchmark=absolute(space.benchmark, folder, base), params=params)


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


def check_space(space: SearchSpace) -> None:
    """Check every plugin of the space's representative trial configs (see the module docstring)."""
    from mtlsearch.config import TrialConfig

    if not space_plugins(space):
        return
    seen_bench: set[str] = set()
    seen_step: set[str] = set()
    for probe in space.probe_configs():
        cfg = TrialConfig.from_dict(probe, source=str(space.path))
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
        raise _fail(spec, f"{cls.__name__}.hyperparams must be a dict {{name: HParam(...)}}", field="method")
    for key, value in hyperparams.items():
        if not isinstance(value, HParam):
            raise _fail(
                spec,
                f"{cls.__name__}.hyperparams[{key!r}] must be HParam(type, default, ...) so that it can "
                f"be validated and searched, got {value!r}",
                field="method",
            )


def _fail(spec: str, message: str, err: BaseException | None = None, field: str = "benchmark") -> ConfigError:
    source = source_file(spec)
    where = _user_frame(err, [source]) if err is not None else ""
    return ConfigError(message + (f" ({one_line(err)})" if err is not None else ""), source=where or source, field=field)


def check_benchmark(cfg: TrialConfig) -> None:
    """Tasks, splits, a first batch through the model with every task's output, losses and meters."""
    import torch

    from mtlsearch.benchmarks import as_model, as_split, get_benchmark

    spec = cfg.benchmark
    try:
        bench = get_benchmark(spec, data_root=cfg.data_root, **cfg.benchmark_options)
    except ConfigError as err:
        raise err.with_source(source_file(spec)) from None
    except Exception as err:  # noqa: BLE001
        raise _fail(spec, "constructing the benchmark failed", err) from None
    try:
        specs = list(bench.task_specs())
    except ConfigError as err:  # e.g. a metric without a direction: name the line of the user's file
        src = source_file(spec)
        raise ConfigError(err.message, source=_user_frame(err, [src]) or src, field=err.field) from None
    except Exception as err:  # noqa: BLE001
        raise _fail(spec, "task_specs() failed", err) from None
    from mtlsearch.benchmarks import TaskSpec

    if not specs or not all(isinstance(s, TaskSpec) for s in specs):
        raise _fail(spec, f"task_specs() must return a non-empty list of TaskSpec, got {specs!r}"[:300])
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise _fail(spec, f"task_specs() names a task twice: {names}")
    tasks = list(cfg.tasks) if cfg.tasks else names
    unknown = [t for t in tasks if t not in names]
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown}; the benchmark's tasks: {', '.join(names)}", field="tasks")
    try:
        splits = bench.load_splits(cfg.data_seed)
    except ConfigError as err:
        raise err.with_source(source_file(spec)) from None
    except Exception as err:  # noqa: BLE001
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
    except Exception as err:  # noqa: BLE001
        raise _fail(spec, "reading a first batch of the train split failed", err) from None
    if not isinstance(targets, dict):
        raise _fail(spec, f"a batch must be (inputs, {{task: target}}), got targets of type {type(targets).__name__}")
    missing = [t for t in tasks if t not in targets]
    if missing and not bench.multi_input:
        raise _fail(spec, f"the train split's batches have no target for task(s) {missing} (they have {sorted(targets)})")
    try:
        torch.manual_seed(cfg.seed)
        model = as_model(bench.build_model(tasks))
    except Exception as err:  # noqa: BLE001
        raise _fail(spec, "build_model() failed", err) from None
    shared = model.shared_parameters()
    if not shared:
        raise _fail(spec, "the model has no shared parameters (what every task trains)")
    model.train()
    try:
        outputs = model(x)
    except Exception as err:  # noqa: BLE001
        raise _fail(spec, f"a first training batch (inputs {_shape(x)}) through the model failed", err) from None
    if not isinstance(outputs, dict):
        raise _fail(spec, f"the model must return {{task: prediction}}, got {type(outputs).__name__}")
    missing = [t for t in tasks if t not in outputs and not (bench.multi_input and t not in targets)]
    if missing:
        raise _fail(spec, f"the model's outputs miss task(s) {missing} (it returned {sorted(outputs)}); return one prediction per task")
    by_name = {s.name: s for s in specs}
    for t in tasks:
        if t not in targets:
            continue
        pred, target = outputs[t], targets[t]
        try:
            loss = by_name[t].loss(pred, target)
        except Exception as err:  # noqa: BLE001
            raise _fail(
                spec, f"task {t!r}: the loss of a first batch (prediction {_shape(pred)}, target {_shape(target)}) failed", err
            ) from None
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise _fail(
                spec,
                f"task {t!r}: the loss must be a scalar tensor, got {_shape(loss)} (prediction {_shape(pred)}, target {_shape(target)})",
            )
        if not torch.isfinite(loss).all():
            raise _fail(spec, f"task {t!r}: the loss of a first batch is {loss.item()}")
        try:
            meter = by_name[t].new_meter()
            meter.update(pred.detach(), target)
            values = meter.compute()
        except Exception as err:  # noqa: BLE001
            raise _fail(
                spec, f"task {t!r}: its meter failed on a first batch (prediction {_shape(pred)}, target {_shape(target)})", err
            ) from None
        declared = set(by_name[t].metrics)
        if not isinstance(values, dict) or set(values) != declared:
            raise _fail(
                spec,
                f"task {t!r}: its meter reports {sorted(values) if isinstance(values, dict) else values!r} "
                f"but the task declares metrics {sorted(declared)}",
            )


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
    except Exception as err:  # noqa: BLE001
        raise _fail(culprit, f"building a trial (method {cfg.method!r}) failed", err, field) from None
    x, targets = next(iter(trainer.splits["train"].batches(min(cfg.batch_size, 8), shuffle=False)))
    try:
        losses, _ = trainer.train_step(*trainer._to_device(x, targets))
    except Exception as err:  # noqa: BLE001
        raise _fail(culprit, f"a first training step (method {cfg.method!r}, optimizer {cfg.optimizer!r}) failed", err, field) from None
    if not torch.isfinite(losses).all():
        raise _fail(culprit, f"a first training step gave non-finite losses {losses.tolist()}", field=field)
