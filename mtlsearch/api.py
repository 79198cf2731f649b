"""The Python API: the command line's search from a notebook or script, and its results as a DataFrame.

>>> import mtlsearch
>>> from my_tasks import MyBenchmark                      # defined in a .py file, not in the notebook
>>> trials = mtlsearch.search("examples/custom_mtl/space.yaml", benchmark=MyBenchmark,
...                           num_samples=4, max_epochs=5, params__lr={"loguniform": [1e-3, 1e-2]})
>>> trials.sort_values("val/delta_m", ascending=False).head()
>>> again = mtlsearch.load_results("custom_mtl")          # the latest search of that experiment, from MLflow

:func:`search` builds the same :class:`~mtlsearch.options.SearchOptions` as ``python -m mtlsearch.launch``
and runs the same code (:func:`mtlsearch.launch.execute`: the pre-flight, Ray Tune, MLflow); bad input raises
:class:`~mtlsearch.errors.ConfigError` instead of exiting.  It returns :func:`load_results` of the
search it ran: the trials read back from MLflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from mtlsearch.errors import ConfigError
from mtlsearch.options import SearchOptions

if TYPE_CHECKING:
    import pandas as pd

#: Keyword arguments of :func:`search` that are launcher flags (the rest are space keys, see ``search``).
FLAGS = {
    "data_root": "--data-root",
    "gpus_per_trial": "--gpus-per-trial",
    "cpus_per_trial": "--cpus-per-trial",
    "address": "--address",
    "storage": "--storage",
    "tracking_uri": "--tracking-uri",
    "optuna_storage": "--optuna-storage",
    "experiment": "--experiment",
    "name": "--name",
    "seed": "--seed",
    "max_failures": "--max-failures",
    "num_samples": "--num-samples",
    "max_epochs": "--max-epochs",
}


def _spec(value: Any) -> str:
    """A class (a user's benchmark or method) as ``module:Class`` or its file (the launcher then stores it
    under the space's own name for that class: :func:`mtlsearch.plugins.plugin_name`); a string unchanged."""
    if isinstance(value, type):
        from mtlsearch.plugins import spec_of

        return spec_of(value)
    return value


def _yaml(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


#: The type of each launcher flag's value (as the command line's parser converts it).
_FLAG_TYPES: dict[str, type] = {
    "seed": int,
    "max_failures": int,
    "num_samples": int,
    "max_epochs": int,
    "gpus_per_trial": float,
    "cpus_per_trial": float,
}
_SWITCHES = ("storage_is_shared", "resume", "quiet")


def _space_file(space: str | Mapping[str, Any], folder: str | None) -> str:
    """A space given as a dict is written to a file in ``folder`` (a temporary one by default): the
    search's record of its space, and what the command that resumes it names."""
    if not isinstance(space, Mapping):
        return str(space)
    import yaml

    folder = folder or tempfile.mkdtemp(prefix="mtlsearch_space_")
    path = Path(folder) / f"{space.get('name', 'search')}.yaml"
    path.write_text(yaml.safe_dump(dict(space), sort_keys=False))
    return str(path)


def _sets(method: Any, overrides: Mapping[str, Any]) -> list[str]:
    """The space keys among the keyword arguments as ``KEY.PATH=VALUE`` (what ``--set`` says)."""
    sets = [f"params.method={_yaml(_spec(method))}"] if method is not None else []
    for key, value in overrides.items():
        if value is not None and key not in FLAGS and key not in _SWITCHES:
            # a space key: budget__num_samples=50 or {"budget.num_samples": 50}; params__lr={"loguniform": [...]}
            sets.append(f"{key.replace('__', '.')}={_yaml(value)}")
    return sets


def _argv(space_path: str, benchmark: str | None, sets: list[str], overrides: Mapping[str, Any]) -> list[str]:
    argv = ["--space", space_path]
    if benchmark is not None:
        argv += ["--benchmark", benchmark]
    for key, value in overrides.items():
        if value is None:
            continue
        if key in FLAGS:
            argv += [FLAGS[key], str(value)]
        elif key in _SWITCHES and value:
            argv.append("--" + key.replace("_", "-"))
    for item in sets:
        argv += ["--set", item]
    return argv


def search_argv(
    space: str | Mapping[str, Any], benchmark: Any = None, method: Any = None, *, folder: str | None = None, **overrides: Any
) -> list[str]:
    """The ``python -m mtlsearch.launch`` arguments of :func:`search` (a dict space is written to ``folder``)."""
    return _argv(_space_file(space, folder), _spec(benchmark) if benchmark is not None else None, _sets(method, overrides), overrides)


def _flag_value(key: str, value: Any) -> Any:
    """A flag's value read as the command line reads its text (``5`` or ``"5"``; not ``5.5`` for an integer)."""
    convert = _FLAG_TYPES.get(key)
    if convert is None:
        return str(value)
    try:
        if isinstance(value, bool):
            raise TypeError(value)
        return convert(str(value))
    except (TypeError, ValueError):
        raise ConfigError(
            f"expected {'an integer' if convert is int else 'a number'}, got {value!r}", field=f"search(..., {key}=...)"
        ) from None


def search_options(space: str | Mapping[str, Any], benchmark: Any = None, method: Any = None, **overrides: Any) -> SearchOptions:
    """The options of :func:`search`: the launcher's flags by name, the other keywords as ``--set`` items."""
    space_path = _space_file(space, None)
    bench = _spec(benchmark) if benchmark is not None else None
    sets = _sets(method, overrides)
    flags: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None or not (key in FLAGS or key in _SWITCHES):
            continue
        if key in _SWITCHES:
            flags[key] = bool(value)
            continue
        flags[key] = _flag_value(key, value)
    argv = _argv(space_path, bench, sets, overrides)
    return SearchOptions(space=space_path, benchmark=bench, sets=tuple(sets), argv=tuple(argv), **flags)


def as_keyword_error(err: ConfigError) -> ConfigError:
    """A ``--set`` error of :func:`search` said in its terms: the keyword argument (``params__lr=...``)
    that became the ``--set``, and the launcher flags a keyword may also be."""
    field = err.field or ""
    if not field.startswith("--set"):
        return err
    item = field[len("--set") :].strip()
    if not item:  # apply_sets' own errors quote the item first: "'budgetz.x=1': unknown key ..."
        quoted = err.message.split("'")
        item = quoted[1] if len(quoted) > 2 else ""
    key = item.partition("=")[0].replace(".", "__")
    message = err.message
    if "unknown key" in message:
        message += f"; or a launcher option: {', '.join(sorted([*FLAGS, 'quiet', 'resume', 'storage_is_shared']))}"
    if key == "params__method":
        return ConfigError(message, field="search(method=...)")
    return ConfigError(message, field=f"search(..., {key}=...)" if key else "search()")


def search(space: str | Mapping[str, Any], benchmark: Any = None, method: Any = None, **overrides: Any) -> pd.DataFrame:
    """Run a search as ``python -m mtlsearch.launch`` does and return its trials (:func:`load_results`).

    ``space``: a space name, a YAML path, or the space as a dict.  ``benchmark`` / ``method``: a
    built-in name, ``module:Class`` / ``path/file.py:Class``, or the class itself (defined in a .py
    file, so that Ray's workers can import it).  ``overrides``: launcher flags by name (``num_samples``,
    ``max_epochs``, ``tracking_uri``, ``storage``, ``name``, ``experiment``, ``seed``, ``address``,
    ``data_root``, ``cpus_per_trial``, ``gpus_per_trial``, ``max_failures``), or keys of the space file
    with ``__`` for ``.`` (``budget__num_samples=50``, ``params__lr={"loguniform": [1e-4, 1e-2]}``,
    ``**{"scheduler.type": "fifo"}``), validated like the file; ``quiet=True`` prints only errors and the
    results (no progress line per epoch).  Raises :class:`ConfigError` on bad input (naming the keyword
    argument, e.g. ``search(..., budget__num_samples=...): must be > 0, got 0``) and ``RuntimeError`` if
    the search was interrupted."""
    from mtlsearch import launch

    options = search_options(space, benchmark, method, **overrides)
    try:
        result = launch.execute(options)
    except ConfigError as err:
        raise as_keyword_error(err) from None
    if not result.finished or result.experiment is None:
        raise RuntimeError(
            f"the search did not finish (exit code {result.exit_code}); resume it with python -m mtlsearch.launch "
            f"{' '.join(options.argv)} --resume"
        )
    return load_results(result.experiment, result.parent_run_id, tracking_uri=result.tracking_uri)


def load_results(experiment: str, search: str | None = None, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """A finished (or running) search read back from MLflow as a ``pandas.DataFrame``, one row per trial.

    ``experiment``: the MLflow experiment (by default the space's name); ``search``: a parent run id,
    search id or run name (default: the latest search of the experiment); ``tracking_uri``: default
    ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``.  Columns: ``trial``, ``status``, ``epochs``, the
    trial's config (``method``, ``lr``, ...), every metric's final value (``val/<task>/<metric>``,
    ``val/delta_m``, ...; a k-seed trial's are means over its seeds), and for each objective
    ``best/<metric>`` and ``best_epoch/<metric>`` (the best epoch's value).  How sure the ranking is, per
    configuration (the trials of one configuration pooled over seeds, the ``final`` stage's re-runs
    included): ``mean`` (of the objective over its seeds), ``ci95_low`` / ``ci95_high`` (95% t-interval,
    NaN for one seed), ``n_seeds``, ``rank`` (1 = best: completed configurations first), ``tied`` (True when
    the tie test cannot tell it from the best, None when untestable) and ``best``; an errored trial has
    none of them and is never best.  ``df.attrs`` holds the search's objective(s), id, parent run,
    ``ranking_test`` and ``interval`` (how ``tied`` and the interval are computed)."""
    import pandas as pd

    from mtlsearch import report, tracking, uncertainty
    from mtlsearch.report.analysis import config_standings

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or tracking.default_tracking_uri()
    found = report.load_mlflow(uri, experiment, search)
    standings, _ = config_standings(found)
    nan = float("nan")
    rows = []
    for trial in found.trials:
        row: dict[str, Any] = {"trial": trial.trial_id, "status": trial.status, "epochs": trial.epochs}
        standing = standings.get(trial.trial_id)
        low, high = standing["ci95"] if standing and standing["ci95"] else (nan, nan)
        row.update(
            {
                "mean": standing["mean"] if standing else nan,
                "ci95_low": low,
                "ci95_high": high,
                "n_seeds": standing["seeds"] if standing else 0,
                "rank": standing["rank"] if standing else None,
                "tied": standing["tied"] if standing else False,
                "best": bool(standing and standing["best"]),
            }
        )
        row.update(trial.params)
        row.update(trial.final)
        history = trial.history() if trial.final else {}
        for metric, mode in found.objectives:
            points = history.get(metric, [])
            if points:
                epoch, value = (min if mode == "min" else max)(points, key=lambda p: p[1])
                row[f"best/{metric}"] = value
                row[f"best_epoch/{metric}"] = epoch
        if trial.error:
            row["error"] = trial.error
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs.update(
        {
            "metric": found.metric,
            "mode": found.mode,
            "objectives": found.objectives,
            "search_id": found.search_id,
            "parent_run_id": found.parent_run_id,
            "experiment": experiment,
            "tracking_uri": uri,
            "ranking_test": uncertainty.TIE_TEST,
            "interval": uncertainty.INTERVAL_METHOD,
        }
    )
    return frame


__all__ = ["ConfigError", "load_results", "search", "search_argv"]
