"""A user's own benchmark or balancing method, named ``module:Class`` or ``path/file.py:Class``.

A space file (``benchmark: my_pkg.tasks:MyBenchmark``, ``params: {method: ./my_method.py:MyMethod}``),
``--benchmark`` and the Python API name them this way; :func:`load_class` imports them for the
registries (:func:`mtlsearch.benchmarks.get_benchmark`, :func:`mtlsearch.balancing.get_method`), so
the rest of the code treats them like the built-in ones.

Before Ray starts, :func:`mtlsearch.plugin_checks.check_space` checks every plugin a search names, cheaply and on the CPU:
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

from mtlsearch.errors import ConfigError, first_line

if TYPE_CHECKING:
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


def user_frame(err: BaseException, files: Iterable[str]) -> str:
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
    return first_line(err, limit=None)


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
                    near = _did_you_mean(path.name, [f.name for f in _siblings(path)])
                    raise ConfigError(f"no such file (from {spec!r}){near}", source=target, field=what) from None
        else:
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as err:
                if err.name and (target == err.name or target.startswith(err.name + ".")):
                    raise ConfigError(
                        f"cannot import module {target!r} (from {spec!r}): no module named {err.name!r} "
                        f"on the Python path (run from the folder that holds it, or install it){_module_suggestion(err.name)}",
                        source=target,
                        field=what,
                    ) from None
                raise
            source = getattr(module, "__file__", None) or target
    except ConfigError:
        raise
    except BaseException as err:  # the user's module failed while importing
        if isinstance(err, KeyboardInterrupt):
            raise
        where = user_frame(err, [source]) or source
        raise ConfigError(f"importing it failed: {one_line(err)}", source=where, field=what) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            classes = sorted(
                k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, base) and v.__module__ == module.__name__
            )
            names = classes or sorted(k for k, v in vars(module).items() if isinstance(v, type))
            raise ConfigError(
                f"has no class {attr!r}; its {base.__name__} classes: {', '.join(classes) or 'none'}{_did_you_mean(part, names)}",
                source=source,
                field=what,
            )
    if not (isinstance(obj, type) and issubclass(obj, base)):
        kind = f"class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
        raise ConfigError(
            f"{attr!r} is a {kind}, not a subclass of {base.__module__.rsplit('.', 1)[0]}.{base.__name__}", source=source, field=what
        )
    _CACHE[key] = obj
    return obj


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the closest of ``candidates`` (difflib), else ``""``."""
    import difflib

    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _siblings(path: Path) -> list[Path]:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        return [f for f in folder.iterdir() if f.suffix == ".py"]
    except OSError:
        return []


def _module_suggestion(missing: str) -> str:
    """A module of that name's package (or a top-level one: the working directory's and the path's)
    whose name is close to ``missing``."""
    import pkgutil

    parent, _, leaf = missing.rpartition(".")
    if parent:
        try:
            package = importlib.import_module(parent)
        except Exception:  # a suggestion never raises
            return ""
        names = [f"{parent}.{m.name}" for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
        return _did_you_mean(missing, names)
    return _did_you_mean(leaf, [m.name for m in pkgutil.iter_modules([os.getcwd(), *sys.path])])


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


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a ``ray job submit`` (Ray sets this variable): its
    working directory is then Ray's temporary copy of ``--working-dir``."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
