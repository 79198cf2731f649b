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

Names (:func:`plugin_name`, the one naming function): a search stores each plugin under the name the
user wrote in the space file (``module:Class``, or a path as written there), a path relative to the
space file where it was absolute (a class passed to :func:`mtlsearch.search`, a ``--set``), and a class
passed to the API under the name the space gives the same class (same file and class), so that ``when:``
conditions hold for it.  Those names are what trial configs carry, hence what MLflow, Optuna, Ray's
results and the report show.  Where a name does not resolve by itself (a path relative to the space
file), :func:`locate` finds the file the search registered for it (:func:`register_locations`: on the
driver by :func:`mtlsearch.plugin_checks.localize`, on Ray's workers by the trainable, which gets the
search's locations through :func:`with_locations`).

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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from mtlsearch.errors import ConfigError, first_line

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace

_CACHE: dict[str, type] = {}
#: plugin name -> where to load it from (an absolute ``path.py:Class``, or one relative to a Ray job's
#: working directory) for names that do not resolve by themselves; see :func:`locate`.
_LOCATIONS: dict[str, str] = {}


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


def register_locations(locations: Mapping[str, str] | None) -> None:
    """Remember where each plugin name of a search is loaded from (see :func:`locate`)."""
    _LOCATIONS.update(locations or {})


def locate(spec: str) -> str:
    """The spec to load for plugin name ``spec``: itself where it resolves here (a module, an absolute
    path, a path relative to the working directory or the trial's origin), else the location a search
    registered for it (a path relative to its space file)."""
    where = _LOCATIONS.get(spec)
    if where is None or where == spec:
        return spec
    target, _, is_file = _split(spec, "plugin")
    if is_file and resolve_file(target) is not None:
        return spec
    return where


def _class_file(cls: type) -> str | None:
    import inspect

    try:
        return str(Path(inspect.getfile(cls)).resolve())
    except (TypeError, OSError):
        return None


def _identity(spec: str, also_in: Path | None) -> tuple[str, str] | None:
    """(source file, class path) that a spec names, without importing it; None if it names no file here."""
    target, attr, is_file = _split(spec, "plugin")
    if is_file:
        path = Path(absolute(locate(spec), also_in).rpartition(":")[0])
        return (str(path.resolve()), attr) if path.is_file() else None
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError):  # a parent package missing or failing: no identity, the loader says why
        return None
    return (str(Path(found.origin).resolve()), attr) if found is not None and found.origin else None


def _importable_here(module_name: str, file: str) -> bool:
    """Whether ``module_name`` is imported from ``file`` by the launcher's working directory or an installed package."""
    if _installed(file) or module_name == "__main__" or module_name.startswith("_mtlsearch_plugin_"):
        return _installed(file)
    rel = Path(*module_name.split("."))
    cwd = Path.cwd().resolve()
    return Path(file) in (cwd / rel.with_suffix(".py"), cwd / rel / "__init__.py")


def _relative(path: str, attr: str, space_dir: Path | None) -> str:
    """``path.py:Class`` relative to the space file's folder (or the working directory where the file is
    under it and not under that folder): never an absolute path."""
    folder = Path(space_dir or Path.cwd()).resolve()
    file = Path(path).resolve()
    cwd = Path.cwd().resolve()
    if folder not in file.parents and cwd in file.parents:
        folder = cwd
    return f"{os.path.relpath(file, folder)}:{attr}"


def plugin_name(value: Any, space_dir: Path | None = None, known: Iterable[str] = ()) -> Any:
    """The one name under which a search runs and stores a plugin: ``value`` is a class (the Python API's
    ``benchmark=`` / ``method=``) or a spec string; anything else is returned unchanged.

    * a spelling among ``known`` (the space's own names, in file order) that names the same class (same
      source file and class path), so that the API's class and the space's ``when:`` agree;
    * else a spec as the user wrote it (``module:Class``, a relative path), an absolute path made
      relative to ``space_dir`` (the space file's folder);
    * else, for a class: ``module:Class`` where the launcher's working directory or an installed package
      imports its module, otherwise its file relative to ``space_dir``.

    A class defined in ``__main__`` (a notebook) has no name Ray's workers can import: a ConfigError."""
    if isinstance(value, type):
        default = _class_spec(value)
        identity: tuple[str, str] | None = (str(_class_file(value)), value.__qualname__)
    elif is_plugin(value):
        identity = _identity(value, space_dir)
        default = value
    else:
        return value
    if identity is not None:
        for spelling in known:
            if is_plugin(spelling) and not _is_absolute(spelling) and _identity(spelling, space_dir) == identity:
                return spelling
    if _is_absolute(default):
        target, attr, _ = _split(default, "plugin")
        return _relative(target, attr, space_dir)
    return default


def _class_spec(cls: type) -> str:
    """``module:Class`` where the working directory or an installed package imports it, else ``/abs/file.py:Class``."""
    file = _class_file(cls)
    if file is None or cls.__module__ == "__main__":
        raise ConfigError(
            f"{cls.__qualname__} is defined in __main__ (a notebook or script); define it in a .py "
            "file and import it from there, so that Ray's workers can import it too",
            field="benchmark",
        )
    if _importable_here(cls.__module__, file):
        return f"{cls.__module__}:{cls.__qualname__}"
    return f"{file}:{cls.__qualname__}"


def _is_absolute(spec: str) -> bool:
    target, _, is_file = _split(spec, "plugin")
    return is_file and Path(target).expanduser().is_absolute()


def with_locations(trainable: Callable[..., Any], space: SearchSpace) -> Callable[..., Any]:
    """``trainable`` given the locations of the space's plugin names that need one (``plugin_locations=``,
    through ``tune.with_parameters``), so that Ray's workers load what the driver checked."""
    locations = {name: _LOCATIONS[name] for name in space_plugins(space) if _LOCATIONS.get(name, name) != name}
    if not locations:
        return trainable
    from ray import tune

    return tune.with_parameters(trainable, plugin_locations=locations)


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
    _split(spec, what)  # a malformed spec: the error names it as written
    spec = locate(spec)
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
    spec = locate(spec)
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
    """A class passed to the Python API as a spec for the launcher: ``module:Class`` where the working
    directory or an installed package imports it, else its absolute file, which the launcher names
    relative to the space (or by the space's own name for that class: :func:`plugin_name`)."""
    return _class_spec(cls)


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
        target, _, is_file = _split(locate(spec), "plugin")
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
