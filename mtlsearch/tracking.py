"""MLflow, written from the driver only: the one module that owns the naming conventions.

* One experiment per search name (``--experiment`` overrides it).  On a SQLite store the artifacts go
  to ``mlruns/`` beside the database file (not into whatever folder the command ran in).  Experiment
  tags: ``mlflow.experimentKind`` (model training) and, per search, a saved view of the UI's runs table
  (``mlflow.sharedViewState.mtlsearch-trials-<parent run id>``: its trials, sorted by the objective;
  :func:`trials_url` opens it; ``mtlsearch ui``).
* One parent run per search (tags ``mtlsearch.kind = search``, ``mtlsearch.search_id`` = the Ray
  results folder): the space file (artifact ``space/<file>``), objective, budget, scheduler, searcher
  and resources (params), the project's git commit and package versions (tags ``git_commit``,
  ``version.<pkg>``), and at the end the best trial (tags ``best_trial_id``, ``best_run_id``,
  ``best_config``, metrics ``best/<metric>``), how sure that is (tags ``best_interval``: the objective's
  mean ± 95% interval over the best configuration's seeds, ``tied_with_best``: the trial ids the tie test
  cannot tell from it, ``ranking_test``, ``trial_counts``; metrics ``best_ci95_low/<metric>``,
  ``best_ci95_high/<metric>``, ``best_seeds``; :func:`mtlsearch.results.best_standing`; the same
  of the confirmation phase under ``final_best_...`` and ``final_tied_with_best``) and, for a
  multi-objective search, ``pareto_trial_ids``.  An errored trial is never the best.
* One nested run per trial (tag ``mlflow.parentRunId``): its full validated config as params
  (``method``, ``optimizer``, ``p``, ``lr``, ``seed``, ``benchmark``, ... defaults included), tags
  ``mtlsearch.trial_id``, ``mtlsearch.status`` (``running``, then ``completed`` when it reached
  ``max_epochs``, ``stopped early by ASHA`` when the scheduler ended it sooner, or ``errored``),
  ``mtlsearch.epochs``, ``mtlsearch.time_total_s`` (Ray's wall time of the trial), ``checkpoint``
  (the final checkpoint's path in Ray's storage) and ``error``; every reported metric at every epoch
  (``step = epoch``).  Only the metric names of docs/metrics.md are logged, not Tune's bookkeeping.
* Runs are looked up by tags (search id, trial id) before they are created, and a metric value is
  written only if that (metric, epoch) is not there yet, so a re-run, a resumed search or a
  re-sync (``python -m mtlsearch.report sync``) never duplicates runs or metric points.

Workers never talk to MLflow, so they need no credentials, and a SQLite store has one writer.

No other module reads or writes these names: the report reads a search back through :func:`read_search`
(and :func:`parse_param`, :func:`search_runs`), logs its figures through :func:`log_report`; the launcher
marks runs through named :class:`Tracker` methods (``mark_interrupted``, ``mark_phase`` for the
confirmation phase's ``mtlsearch.phase = final``, ``fail_running_runs``).

Failure handling: :func:`check_reachable` is called before Ray starts (an unreachable server is one
error line and exit code 2).  During a search the :class:`Tracker` is *tolerant*: the first MLflow
failure prints one warning and the tracker goes offline for the rest of the search; the trials go
on and every result stays in Ray's storage, from where ``python -m mtlsearch.report sync`` copies
them into MLflow later.  Over HTTP the launcher lowers MLflow's retry defaults (7 retries with
exponential backoff, about 4 minutes per failed call) to 2 retries and a 20 s timeout unless
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``_TIMEOUT`` / ``_BACKOFF_FACTOR`` are set.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
import typing
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping, Sequence, TypeVar

from mtlsearch.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Run
    from mlflow.tracking import MlflowClient
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    from mtlsearch.spaces import SearchSpace

F = TypeVar("F", bound=Callable[..., Any])

TAG_SEARCH = "mtlsearch.search_id"
TAG_TRIAL = "mtlsearch.trial_id"
TAG_STATUS = "mtlsearch.status"
TAG_KIND = "mtlsearch.kind"  # "search" or "trial"
TAG_EPOCHS = "mtlsearch.epochs"
TAG_TIME = "mtlsearch.time_total_s"
TAG_CHECKPOINT = "checkpoint"
#: ``NAME@VERSION`` of the published protocol a search and its trials follow (mtlsearch.protocols).
TAG_PROTOCOL = "mtlsearch.protocol"
TAG_PHASE = "mtlsearch.phase"  # "final" on the confirmation phase's trial runs (mtlsearch.confirm)
TAG_ERROR = "error"
TAG_SEARCHER = "mtlsearch.searcher"  # the sampler and its settings (mtlsearch.optuna_search.describe_settings)
TAG_BUDGET_WARNING = "mtlsearch.budget_warning"  # a method with less budget than the others (mtlsearch.fairness)
PARENT_TAG = "mlflow.parentRunId"
METRIC_ROOTS = ("train", "val", "test", "weights", "dominance", "std", "sem")
#: A trial of several seeds (``budget.seeds``) also reports each seed's values as ``seed<s>/<metric>``.
_SEED_ROOT = re.compile(r"seed\d+")

STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped early by ASHA"
STATUS_ERRORED = "errored"
#: A trial run of a resumed search whose trial Ray had not saved (:meth:`Tracker.drop_lost_trials`).
STATUS_LOST = "lost"

#: The search's description written beside Ray's results (read back by ``report sync``).
SEARCH_INFO_FILE = "mtlsearch.json"
#: Params of the parent run (and mtlsearch.json) saying where the search's Optuna study is (mtlsearch.studies).
STUDY_PARAMS = ("optuna_storage", "optuna_study")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def ui_command(tracking_uri: str, experiment: str | None = None, experiment_id: str | None = None, parent_run_id: str | None = None) -> str:
    """What opens a search's trial comparison in the MLflow UI: on a tracking server, its URL
    (:func:`trials_url`) and, on the lines below it, :func:`ui_help`; on a local store, the ``mtlsearch ui``
    command that serves it (and prints the same)."""
    if tracking_uri.startswith(("http://", "https://")):
        if experiment_id and parent_run_id:
            return "\n  ".join(
                [trials_url(tracking_uri, experiment_id, parent_run_id), *ui_help(tracking_uri, experiment_id, parent_run_id)]
            )
        return f"open {tracking_uri} in a browser"
    return f"python -m mtlsearch ui --tracking-uri {tracking_uri}" + (f" --experiment {experiment}" if experiment else "")


# ------------------------------------------------------------------------------------ the UI's view
# Read from MLflow 3.17.2's UI (mlflow/server/js/build): the experiment page takes its mode from the URL
# parameter ``workflowType`` (else the browser's localStorage, default GenAI); MLflow UIs without that
# switch read the experiment tag ``mlflow.experimentKind``.  The runs table takes its search (filter, sort)
# and table state (columns) from a saved view, an experiment tag ``mlflow.sharedViewState.<key>`` holding
# ``{"name", "createdAt", "state"}`` (state: JSON text), opened by ``?viewStateShareKey=<key>``; the view is
# also listed under the page's "Views" menu.  Filtering on the parent run lists the trial runs flat (the
# parent is not among the results, so nothing is collapsed under it).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # the UI's "Machine learning" / "Model training" kind
UI_WORKFLOW = "machine_learning"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
NUMERIC_DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint")


def _numbers(values: Any) -> bool:
    return (
        isinstance(values, (list, tuple)) and bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    )


COMPLETED_VIEW = "completed"  # the second saved view: the trials that reached max_epochs only
# The charts of a saved view (``compareRunCharts``, ``compareRunSections``: read from MLflow 3.17.2's
# ``RunsChartsCardConfig`` classes): ``type`` BAR/LINE/SCATTER/CONTOUR/PARALLEL/...; a SCATTER has
# ``xaxis``/``yaxis`` ``{"key", "type": "PARAM"|"METRIC"}``, a CONTOUR also ``zaxis``, a PARALLEL
# ``selectedParams``/``selectedMetrics``/``showAllRuns``; every card has ``uuid``, ``metricSectionId``,
# ``runsCountToCompare``, ``deleted``, ``isGenerated``.  Charts plot the runs the runs list does not hide:
# ``runsHiddenMode: SHOW_ALL`` shows every trial (the UI's default hides all but the first 10).  With
# ``isAccordionReordered`` the UI keeps our section first and appends the per-metric charts it generates
# below it.  MLflow 3.17 offers log scales on line charts only: scatter, contour and parallel axes are
# linear (a log-uniform parameter such as ``lr`` is drawn on a linear axis).
CHART_SECTION = "mtlsearch-search-charts"
CHART_RUNS = 1000  # runsCountToCompare: more than any search's trials, so no chart keeps only the first few
MAX_SCATTERS = 12  # one scatter per searched parameter, at most this many (the view's tag holds 20,000 characters)


def trials_view_key(parent_run_id: str, view: str = "trials") -> str:
    return f"mtlsearch-{view}-{parent_run_id}"


def _chart(kind: str, uuid: str, **fields: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "type": kind,
        "runsCountToCompare": CHART_RUNS,
        "metricSectionId": CHART_SECTION,
        "deleted": False,
        "isGenerated": False,
        **fields,
    }


def trials_view_charts(
    objectives: Sequence[Sequence[str]],
    params: Sequence[str],
    numeric: Sequence[str] | None = None,
    always: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The view's charts: the (first) objective against each searched parameter (scatter), parallel
    coordinates of every searched parameter and the objectives, and a contour of the objective over two
    numeric parameters (``p`` x ``lr`` when both are searched).  ``numeric``: the searched parameters with
    numbers for values (default: every one but ``method``); ``always``: those every trial has (default: all).
    MLflow's parallel coordinates leave out a run that lacks one of its axes, so a conditional parameter
    (``p`` only ``when: {method: gemtl}``) is not an axis there: it would hide every other method's trials."""
    metric = objectives[0][0]
    searched = list(dict.fromkeys(params))
    nums = [k for k in searched if k != "method"] if numeric is None else [k for k in searched if k in set(numeric)]
    first = "p" if "p" in nums else (nums[0] if nums else (searched[0] if searched else None))
    order = ([first] if first else []) + [k for k in searched if k != first]
    scatters = [
        _chart("SCATTER", f"mtlsearch-scatter-{k}", xaxis={"key": k, "type": "PARAM"}, yaxis={"key": metric, "type": "METRIC"})
        for k in order[:MAX_SCATTERS]
    ]
    # In this order, so that a 1600-pixel-wide window shows the first three without scrolling: the objective
    # against p (else the first numeric parameter), the parallel coordinates, the contour, then the other scatters.
    charts = scatters[:1]
    if searched:
        charts.append(
            _chart(
                "PARALLEL",
                "mtlsearch-parallel",
                selectedParams=[k for k in searched if always is None or k in set(always)][:MAX_SCATTERS],
                selectedMetrics=[m for m, _ in objectives],
                showAllRuns=True,
            )
        )
    if len(nums) >= 2:
        x, y = ("lr", "p") if {"lr", "p"} <= set(nums) else (nums[0], nums[1])
        charts.append(
            _chart(
                "CONTOUR",
                "mtlsearch-contour",
                xaxis={"key": x, "type": "PARAM"},
                yaxis={"key": y, "type": "PARAM"},
                zaxis={"key": metric, "type": "METRIC"},
            )
        )
    charts += scatters[1:]
    return charts


def trials_view_state(
    parent_run_id: str,
    objectives: Sequence[Sequence[str]],
    params: Sequence[str],
    *,
    numeric: Sequence[str] | None = None,
    always: Sequence[str] | None = None,
    completed_only: bool = False,
) -> dict[str, Any]:
    """The runs page of one search: its trial runs (children of ``parent_run_id``; ``completed_only``: those
    that reached ``max_epochs``), sorted by the first objective (best first), with the method, the searched
    params, the objectives, the epochs and the status as columns, every trial shown, and the charts of
    :func:`trials_view_charts` (the page's "Chart" mode: ``compareRunsMode=CHART`` in the URL)."""
    metric, mode = objectives[0]
    names = list(dict.fromkeys(["method", *params]))[:40]  # the tag holding the view takes 20,000 characters
    columns = (
        [f"params.`{k}`" for k in names] + [f"metrics.`{m}`" for m, _ in objectives] + [f"tags.`{TAG_EPOCHS}`", f"tags.`{TAG_STATUS}`"]
    )
    search_filter = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    if completed_only:
        search_filter += f" and tags.`{TAG_STATUS}` = '{STATUS_COMPLETED}'"
    return {
        "searchFilter": search_filter,
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": mode == "min",
        "selectedColumns": columns,
        # the table's column ids: the run name, our columns in this order, then the UI's start time and duration
        "columnOrder": ["attributes.`Run Name`", *columns, "runDateAndNestInfo", "duration"],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": trials_view_charts(objectives, params, numeric, always),
        "compareRunSections": [
            {"uuid": CHART_SECTION, "name": "Search", "display": True, "isReordered": False, "deleted": False, "isGenerated": False}
        ],
        "isAccordionReordered": True,
    }


def trials_view_tag(name: str, state: Mapping[str, Any], created_ms: int | None = None) -> str:
    """The experiment tag's value: the UI's saved-view envelope around ``state``."""
    now = int(time.time() * 1000) if created_ms is None else created_ms
    return json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


def trials_url(base_url: str, experiment_id: str, parent_run_id: str, *, view: str = "trials", charts: bool = True) -> str:
    """The URL that opens a search's trials (its view tag must exist: :func:`set_trials_view`): on the
    charts (``charts``) or the table; ``view``: ``trials`` (every trial) or ``completed``."""
    return (
        f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType={UI_WORKFLOW}"
        f"&viewStateShareKey={trials_view_key(parent_run_id, view)}" + ("&compareRunsMode=CHART" if charts else "")
    )


def ui_help(base_url: str, experiment_id: str, parent_run_id: str) -> list[str]:
    """The lines printed under the trials' URL: the table, the completed trials, and the way back to the
    model-training navigation when MLflow switches to its GenAI one."""
    return [
        "That page shows the trials' charts (objective vs each searched parameter, parallel coordinates, a contour);",
        f"the same trials as a table: {trials_url(base_url, experiment_id, parent_run_id, charts=False)}",
        f"the completed trials only: {trials_url(base_url, experiment_id, parent_run_id, view=COMPLETED_VIEW)}",
        "If MLflow switches to its GenAI navigation (after Compare or a trial's page), click 'Model training' at the",
        "top of the left-hand navigation, or open the URL again.",
    ]


def set_trials_view(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    search_name: str,
    objectives: Sequence[Sequence[str]],
    params: Sequence[str],
    numeric: Sequence[str] | None = None,
    always: Sequence[str] | None = None,
) -> str:
    """Write (or update) the experiment tags of a search's two views, every trial and the completed ones;
    returns the first's key."""
    tags = client.get_experiment(experiment_id).tags
    for view, label, completed in (("trials", "Trials", False), (COMPLETED_VIEW, "Completed trials", True)):
        state = trials_view_state(parent_run_id, objectives, params, numeric=numeric, always=always, completed_only=completed)
        key = VIEW_TAG_PREFIX + trials_view_key(parent_run_id, view)
        current = tags.get(key)
        created = None
        if current:
            try:
                old = json.loads(current)
                if json.loads(old["state"]) == state:
                    continue
                created = int(old["createdAt"])
            except (ValueError, KeyError, TypeError):
                created = None
        client.set_experiment_tag(experiment_id, key, trials_view_tag(f"{label} of {search_name}", state, created))
    return VIEW_TAG_PREFIX + trials_view_key(parent_run_id)


# ------------------------------------------------------------------------------------ finding a search
def open_store(tracking_uri: str) -> MlflowClient:
    """A client of an existing store (a missing SQLite file is an error, not a new empty store)."""
    db = _sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ConfigError(
            f"no MLflow store at {tracking_uri} (no file {db}); run a search first or pass the store it used", field="--tracking-uri"
        )
    check_reachable(tracking_uri)
    import mlflow  # noqa: F401  (registers the stores)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _latest_search(client: MlflowClient, experiment_ids: list[str]) -> Run | None:
    runs = client.search_runs(
        experiment_ids, filter_string=f"tags.`{TAG_KIND}` = 'search'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def find_search(client: MlflowClient, experiment: str | None) -> tuple[Experiment, Run]:
    """(experiment, parent run) of ``experiment``'s latest search, else of the store's latest search."""
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ConfigError(
                f"no experiment {experiment!r} in this store; its experiments: {', '.join(repr(n) for n in names) or 'none'}",
                field="--experiment",
            )
        parent = _latest_search(client, [exp.experiment_id])
        if parent is None:
            raise ConfigError(
                f"experiment {experiment!r} holds no mtlsearch search (no run tagged {TAG_KIND}=search)", field="--experiment"
            )
        return exp, parent
    ids = [e.experiment_id for e in client.search_experiments()]
    parent = _latest_search(client, ids) if ids else None
    if parent is None:
        raise ConfigError("this store holds no mtlsearch search; run one first or pass the store it used", field="--tracking-uri")
    return client.get_experiment(parent.info.experiment_id), parent


def search_objectives(parent: Run) -> list[list[str]]:
    """``[[metric, mode], ...]`` of a search from its parent run's params (:func:`search_info`)."""
    params = parent.data.params
    if "objective_metrics" in params:
        return [list(o) for o in zip(json.loads(params["objective_metrics"]), json.loads(params["objective_modes"]))]
    return [[params.get("objective_metric", "val/delta_m"), params.get("objective_mode", "max")]]


def ensure_trials_view(client: MlflowClient, experiment: Experiment, parent: Run) -> None:
    """The launcher writes the view as the search starts; a search from an earlier version gets it here."""
    tags = client.get_experiment(experiment.experiment_id).tags
    key = VIEW_TAG_PREFIX + trials_view_key(parent.info.run_id)
    if key in tags and VIEW_TAG_PREFIX + trials_view_key(parent.info.run_id, COMPLETED_VIEW) in tags:
        return
    trials = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'", max_results=1000)
    values: dict[str, set[str]] = {}
    for run in trials:
        for k, v in run.data.params.items():
            values.setdefault(k, set()).add(v)
    varying = [k for k in sorted(values) if len(values[k]) > 1 and k != "method"]
    numeric = [k for k in varying if all(_is_number(v) for v in values[k])]
    always = [k for k in varying if all(k in run.data.params for run in trials)]
    set_trials_view(
        client, experiment.experiment_id, parent.info.run_id, parent.info.run_name, search_objectives(parent), varying, numeric, always
    )


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def is_metric(key: str, value: Any) -> bool:
    """Whether a reported key is one of ours (``<root>/...`` with a finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    root = key.split("/", 1)[0]
    ours = root in METRIC_ROOTS or _SEED_ROOT.fullmatch(root) is not None or key.endswith("/solver_failures")
    return "/" in key and ours and math.isfinite(value)


def select_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if is_metric(k, v)}


def trial_status(epochs: int, max_epochs: int, *, errored: bool = False) -> str:
    """``errored``, ``completed`` (reached ``max_epochs``) or ``stopped early by ASHA``."""
    if errored:
        return STATUS_ERRORED
    return STATUS_COMPLETED if epochs >= max_epochs else STATUS_STOPPED


# ------------------------------------------------------------------------------------ reachability
def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).expanduser().resolve()


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`ConfigError` (field ``--tracking-uri``) if MLflow cannot be reached.

    HTTP(S): any HTTP answer from ``<uri>/health`` counts (a 401 still proves a server is there);
    a refused or timed-out connection does not.  SQLite: the database's folder must exist.  Other
    schemes (``databricks``, plugins) are left to MLflow.
    """
    if tracking_uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(
                f"MLflow tracking server {tracking_uri} is unreachable ({reason}); start it "
                "(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or pass another --tracking-uri",
                field="--tracking-uri",
            ) from None
    db = _sqlite_path(tracking_uri)
    if db is not None and not db.parent.is_dir():
        raise ConfigError(f"the folder of the SQLite store {tracking_uri} does not exist ({db.parent})", field="--tracking-uri")


def _configure_http(tracking_uri: str) -> None:
    """Shorter retries (see the module docstring); no "View run at ..." line per finished run (the
    launcher prints its own progress)."""
    if tracking_uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


# ------------------------------------------------------------------------------------ search info
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("mtlsearch", "torch", "ray", "optuna", "mlflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def search_info(space: SearchSpace, overrides: Mapping[str, Any], study: tuple[str, str] | None = None) -> dict[str, Any]:
    """What a search is, in plain JSON: the parent run's params and the space file; also written to
    :data:`SEARCH_INFO_FILE` in the Ray results folder so that ``report sync`` can recreate the run."""
    params: dict[str, Any] = {
        "space": space.name,
        "benchmark": space.benchmark,
        "num_samples": space.num_samples,
        "max_epochs": space.max_epochs,
        "scheduler": space.scheduler,
        "searcher": space.searcher,
        "resources": space.resources,
    }
    if getattr(space, "multi_objective", False):
        objectives = space.objectives()
        params["objective_metrics"] = [m for m, _ in objectives]
        params["objective_modes"] = [m for _, m in objectives]
        params["scalar_metric"], params["scalar_mode"] = space.metric, space.mode
    else:
        objectives = [(space.metric, space.mode)]
        params["objective_metric"], params["objective_mode"] = space.metric, space.mode
    params.update({f"override.{k}": v for k, v in overrides.items() if v is not None})
    if study is not None:  # where the Optuna study is kept (mtlsearch.studies): storage URL and study name
        params.update(zip(STUDY_PARAMS, study))
    if getattr(space, "protocol", None):
        params["protocol"] = space.protocol
    return {
        "params": params,
        "space_file": Path(str(space.path)).name,
        "space_text": space.text,
        "metric": space.metric,
        "mode": space.mode,
        "objectives": [list(o) for o in objectives],
        "max_epochs": space.max_epochs,
        "resources": dict(space.resources),
        "benchmark": space.benchmark,
    }


def write_search_info(folder: Path, info: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (SEARCH_INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1, default=str))
    tmp.replace(folder / SEARCH_INFO_FILE)


def read_search_info(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / SEARCH_INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _short(value: Any) -> str:
    """2 significant digits, exponents without padding: 0.54, 5.9e-3, 12."""
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            mantissa, exp = f"{value:.1e}".split("e")
            return f"{mantissa}e{int(exp)}"
        return f"{value:.2g}"
    if isinstance(value, (list, tuple)):
        return f"[{len(value)}]"
    text = str(value)
    return text.rsplit(":", 1)[-1] if ":" in text and "/" in text else text  # a user's path/file.py:Class


def trial_run_name(trial_id: str, config: Mapping[str, Any], searched: Sequence[str] = ()) -> str:
    """A trial run's name that reads in a list: ``gemtl p=0.54 lr=5.9e-3 (1a2b3c4d)``: the method, the
    searched parameters that apply to it, the trial id (Ray's, as the console prints it)."""
    parts = [str(config.get("method", ""))]
    parts += [f"{k}={_short(config[k])}" for k in searched if k != "method" and config.get(k) is not None]
    return f"{' '.join(p for p in parts if p)} ({trial_id})"


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's full validated config (defaults included: ``optimizer``, ``seed``, ...), so every
    run shows the same params whether or not the space searched them; the raw config if invalid."""
    try:
        from mtlsearch.config import TrialConfig

        full = TrialConfig.from_dict(dict(config)).to_dict()
    except Exception:  # an errored trial's config may be invalid: log what it was given
        full = dict(config)
    return {k: v for k, v in full.items() if v is not None}


# ------------------------------------------------------------------------------------ the writer
class _store_lock:
    """For a SQLite store: an exclusive ``flock`` on the database's folder while MLflow creates or
    migrates its tables and our experiment.  Two launchers started at once on a new ``mlflow.db``
    otherwise run the migrations together and leave a half-migrated store.  Nothing is created."""

    def __init__(self, tracking_uri: str):
        self.db = _sqlite_path(tracking_uri)
        self.fd: int | None = None

    def __enter__(self) -> _store_lock:
        if self.db is not None and self.db.parent.is_dir():
            import fcntl

            self.fd = os.open(self.db.parent, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
        return False


#: The prefix of a SQLite store being created (:func:`create_sqlite_store`), beside the store's file.
CREATING_PREFIX = ".creating-"


def create_sqlite_store(db: Path) -> None:
    """Create MLflow's SQLite store ``db`` as one step: its tables are made and migrated in a temporary file
    beside it, which is then linked into place (atomic, and never over a store made meanwhile).  A process
    killed while MLflow migrates the tables thus leaves no half-made ``db`` (whose next use fails for
    good: ``duplicate column name``), only a temporary file that the next creation deletes.  Call it
    under :class:`_store_lock` (one creator per folder); a store that exists is left alone."""
    if db.exists() or not db.parent.is_dir():
        return
    for stale in db.parent.glob(f".{db.name}{CREATING_PREFIX}*"):  # left by a creator killed midway (we hold the lock)
        stale.unlink(missing_ok=True)
    tmp = db.parent / f".{db.name}{CREATING_PREFIX}{os.getpid()}"
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)  # as MLflow makes a new store
        store.engine.dispose()
        if os.environ.get("MTLSEARCH_FAULT_BEFORE_STORE_LINK"):  # a testing aid: die as a killed driver would
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # made meanwhile by a process that does not take our lock: keep it
    finally:
        tmp.unlink(missing_ok=True)


def _tolerant(method: F) -> F:
    """Tolerant mode: the first failure warns once and turns the tracker off; the search goes on."""

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        if self.offline_since is not None:
            self.missed += 1
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # MlflowException, requests' ConnectionError, sqlite errors, ...
            if not self.tolerant:
                raise
            self._go_offline(err)
            return None

    return typing.cast(F, wrapper)


class Tracker:
    """Driver-side MLflow writer for one search (``search_id`` = its Ray results folder)."""

    def __init__(self, tracking_uri: str, experiment: str, search_id: str, *, tolerant: bool = True):
        import mlflow  # noqa: F401  (registers the stores)
        from mlflow.tracking import MlflowClient

        _configure_http(tracking_uri)
        self.tracking_uri = tracking_uri
        with _store_lock(tracking_uri):  # the client opens (and creates or migrates) a SQLite store at once
            db = _sqlite_path(tracking_uri)
            if db is not None:
                create_sqlite_store(db)  # all at once or not at all (see create_sqlite_store)
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self._find_or_create_experiment(experiment)
        self.experiment = experiment
        self.search_id = search_id
        self.tolerant = tolerant
        self.parent_run_id: str | None = None
        self.searched: list[str] = []  # the searched parameters, named in the trial runs' names
        self.trial_runs: dict[str, str] = {}
        self._steps: dict[str, dict[str, set[int]]] = {}  # run id -> metric -> epochs already logged
        self.offline_since: float | None = None
        self.missed = 0  # tracker calls skipped while offline

    def _find_or_create_experiment(self, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        for attempt in range(3):
            # Two searches started at once on a new store: both create its tables or the experiment, and
            # the slower one fails on what the other made; looking again then finds it.
            try:
                exp = self.client.get_experiment_by_name(experiment)
                if exp is not None:
                    self.experiment_id = exp.experiment_id
                    if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an earlier mtlsearch
                        self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                else:
                    db = _sqlite_path(self.tracking_uri)
                    location = (db.parent / "mlruns").as_uri() if db is not None else None
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                    )
                break
            except Exception:  # artifacts out of reach: the report infers the space from the trials
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
                self.client = MlflowClient(tracking_uri=self.tracking_uri)

    # -------------------------------------------------------------- helpers
    def _go_offline(self, err: Exception) -> None:
        self.offline_since = time.time()
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        print(
            f"warning: MLflow at {self.tracking_uri} failed ({type(err).__name__}: {first}); the search goes on "
            f"without it and every result stays in Ray's storage. Copy them into MLflow later with:\n  "
            f"{self.sync_command()}",
            file=sys.stderr,
            flush=True,
        )

    def sync_command(self) -> str:
        return (
            f"python -m mtlsearch.report sync --results {self.search_id} --tracking-uri {self.tracking_uri} --experiment {self.experiment}"
        )

    def _find_run(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def _logged_steps(self, run_id: str) -> dict[str, set[int]]:
        """Epochs already in MLflow per metric (read once per run that existed before us)."""
        if run_id not in self._steps:
            steps: dict[str, set[int]] = {}
            for key in self.client.get_run(run_id).data.metrics:
                steps[key] = {m.step for m in self.client.get_metric_history(run_id, key)}
            self._steps[run_id] = steps
        return self._steps[run_id]

    def _finish(self, run_id: str, status: str) -> None:
        if self.client.get_run(run_id).info.status != status:
            self.client.set_terminated(run_id, status=status)

    # -------------------------------------------------------------- the search
    def start_search(
        self,
        space: SearchSpace,
        overrides: Mapping[str, Any],
        results_dir: Path | None = None,
        study: tuple[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create (or find again, on resume) the parent run; write the search's description beside
        Ray's results when they are on a local disk (``tags`` too, so ``report sync`` recreates them).
        Not tolerant: failing here stops the launch."""
        info = search_info(space, overrides, study)
        if tags:
            info["tags"] = dict(tags)
        self.searched = [p.name for p in space.params if p.kind != "value"]
        numeric = [p.name for p in space.params if p.kind in NUMERIC_DISTRIBUTIONS or (p.kind in ("choice", "grid") and _numbers(p.args))]
        if results_dir is not None:
            write_search_info(
                Path(results_dir), {**info, "experiment": self.experiment, "tracking_uri": self.tracking_uri, "search_id": self.search_id}
            )
        run_id = self.start_search_from(info)
        always = [p.name for p in space.params if p.kind != "value" and not p.when]
        set_trials_view(
            self.client, self.experiment_id, run_id, Path(self.search_id).name, info["objectives"], self.searched, numeric, always
        )
        return run_id

    def start_search_from(self, info: Mapping[str, Any], *, reopen: bool = True) -> str:
        """Find or create the parent run from :func:`search_info`; ``reopen``: mark a found one RUNNING
        (a resumed search), else leave it as it is (a re-sync)."""
        run_id = self._find_run(**{TAG_SEARCH: self.search_id, TAG_KIND: "search"})
        if run_id is None:
            commit = _git_commit()
            run = self.client.create_run(
                self.experiment_id,
                run_name=Path(self.search_id).name,
                tags={
                    TAG_SEARCH: self.search_id,
                    TAG_KIND: "search",
                    **({"git_commit": commit} if commit else {}),
                    **({TAG_PROTOCOL: info["params"]["protocol"]} if info.get("params", {}).get("protocol") else {}),
                    **{f"version.{k}": v for k, v in _versions().items()},
                    **{k: str(v)[:4900] for k, v in (info.get("tags") or {}).items()},
                },
            )
            run_id = run.info.run_id
            self._log_params(run_id, info.get("params", {}))
            if info.get("space_text"):
                self.client.log_text(run_id, info["space_text"], f"space/{info.get('space_file') or 'space.yaml'}")
        elif reopen and self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    @_tolerant
    def tag_search(self, key: str, value: str) -> None:
        """Set one tag of the search's parent run (tags, unlike params, may change on resume)."""
        if self.parent_run_id is not None:
            self.client.set_tag(self.parent_run_id, key, value[:4900])

    @_tolerant
    def end_search(
        self,
        best: Mapping[str, Any] | None,
        status: str = "FINISHED",
        *,
        pareto: Iterable[str] | None = None,
        standing: Mapping[str, Any] | None = None,
    ) -> None:
        """The search's parent run ends with its ``best`` trial (``trial_id``, ``config``, ``metrics``,
        ``run_id``), the Pareto set's trial ids, and ``standing`` (:func:`mtlsearch.results.best_standing`:
        the best configuration's interval, the trials tied with it, the test, the trial counts)."""
        if self.parent_run_id is None:
            return
        run = self.client.get_run(self.parent_run_id)
        tags = {}
        standing_metrics: dict[str, float] = {}
        if standing:
            for key in ("best_interval", "tied_with_best", "ranking_test", "trial_counts"):
                if standing.get(key) is not None:
                    tags[key] = str(standing[key])[:4900]
            metric = standing.get("metric")
            if standing.get("ci95") is not None and metric:
                low, high = standing["ci95"]
                standing_metrics.update({f"best_ci95_low/{metric}": float(low), f"best_ci95_high/{metric}": float(high)})
            if standing.get("seeds"):
                standing_metrics["best_seeds"] = float(standing["seeds"])
        if best:
            tags["best_trial_id"] = str(best["trial_id"])
            run_id = best.get("run_id") or self.trial_runs.get(str(best["trial_id"]))
            if run_id:
                tags["best_run_id"] = run_id
            tags["best_config"] = json.dumps(trial_params(best["config"]), sort_keys=True, default=str)[:4900]
        if pareto is not None:
            tags["pareto_trial_ids"] = " ".join(pareto)[:4900]
        for key, value in tags.items():
            if run.data.tags.get(key) != value:
                self.client.set_tag(self.parent_run_id, key, value)
        if best:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            values = {f"best/{k}": v for k, v in select_metrics(best["metrics"]).items()} | standing_metrics
            new = [Metric(k, v, now, 0) for k, v in values.items() if run.data.metrics.get(k) != v]
            if new:
                self.client.log_batch(self.parent_run_id, metrics=new)
        self._finish(self.parent_run_id, status)

    @_tolerant
    def record_final(self, standing: Mapping[str, Any], config: Mapping[str, Any] | None) -> None:
        """After the confirmation phase (:mod:`mtlsearch.confirm`): its ranking on the parent run, beside
        the search's own best: tags ``final_best_config``, ``final_best_interval``, ``final_tied_with_best``
        (the confirmed configurations tied with it); metrics ``final_best_ci95_low/<metric>``,
        ``final_best_ci95_high/<metric>``, ``final_best_seeds``."""
        if self.parent_run_id is None:
            return
        from mlflow.entities import Metric

        tags = {"final_best_interval": standing.get("best_interval"), "final_tied_with_best": standing.get("tied_with_best")}
        if config is not None:
            tags["final_best_config"] = json.dumps(trial_params(config), sort_keys=True, default=str)
        for key, value in tags.items():
            if value is not None:
                self.client.set_tag(self.parent_run_id, key, str(value)[:4900])
        metrics = {}
        if standing.get("ci95") is not None and standing.get("metric"):
            low, high = standing["ci95"]
            metrics.update(
                {f"final_best_ci95_low/{standing['metric']}": float(low), f"final_best_ci95_high/{standing['metric']}": float(high)}
            )
        if standing.get("seeds"):
            metrics["final_best_seeds"] = float(standing["seeds"])
        if metrics:
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])

    def report_offline(self) -> None:
        """At the end of a search: say again what was not logged and how to catch up."""
        if self.offline_since is not None:
            print(
                f"warning: MLflow was unreachable from {time.strftime('%H:%M:%S', time.localtime(self.offline_since))} "
                f"on ({self.missed} updates not logged). Copy the results into MLflow with:\n  {self.sync_command()}",
                file=sys.stderr,
                flush=True,
            )

    # -------------------------------------------------------------- trials
    def trial_run(self, trial_id: str, config: Mapping[str, Any]) -> str:
        """The trial's run: cached, else found by tags, else created with its params."""
        if trial_id in self.trial_runs:
            return self.trial_runs[trial_id]
        run_id = self._find_run(**{TAG_SEARCH: self.search_id, TAG_TRIAL: trial_id})
        if run_id is None:
            name = trial_run_name(trial_id, config, self.searched)
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={
                    **({PARENT_TAG: self.parent_run_id} if self.parent_run_id else {}),
                    TAG_SEARCH: self.search_id,
                    TAG_TRIAL: trial_id,
                    TAG_KIND: "trial",
                    TAG_STATUS: STATUS_RUNNING,
                    **({TAG_PROTOCOL: str(config["protocol"])} if config.get("protocol") else {}),
                },
            )
            run_id = run.info.run_id
            self._steps[run_id] = {}
            self._log_params(run_id, trial_params(config))
        self.trial_runs[trial_id] = run_id
        return run_id

    @_tolerant
    def start_trial(self, trial_id: str, config: Mapping[str, Any]) -> None:
        """A trial starts or resumes: its run is RUNNING with status ``running``."""
        run_id = self.trial_run(trial_id, config)
        run = self.client.get_run(run_id)
        if run.data.tags.get(TAG_STATUS) != STATUS_RUNNING:
            self.client.set_tag(run_id, TAG_STATUS, STATUS_RUNNING)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    @_tolerant
    def log_result(self, trial_id: str, config: Mapping[str, Any], result: Mapping[str, Any]) -> int:
        return self.log_results(trial_id, config, [result])

    def log_results(self, trial_id: str, config: Mapping[str, Any], results: Iterable[Mapping[str, Any]]) -> int:
        """Log epoch results (``step = epoch``), skipping (metric, epoch) pairs already in MLflow;
        returns how many values were written."""
        from mlflow.entities import Metric

        run_id = self.trial_run(trial_id, config)
        logged = self._logged_steps(run_id)
        metrics = []
        for result in results:
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            ts = int(1000 * float(result.get("timestamp", time.time())))
            for key, value in select_metrics(result).items():
                if step not in logged.setdefault(key, set()):
                    metrics.append(Metric(key, value, ts, step))
                    logged[key].add(step)
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])
        return len(metrics)

    @_tolerant
    def end_trial(
        self,
        trial_id: str,
        config: Mapping[str, Any],
        status: str,
        *,
        error: str | None = None,
        checkpoint: str | None = None,
        epochs: int | None = None,
        time_total_s: float | None = None,
    ) -> None:
        run_id = self.trial_run(trial_id, config)
        tags = {TAG_STATUS: status}
        if error:
            tags[TAG_ERROR] = error[-4900:]
        if checkpoint:
            tags[TAG_CHECKPOINT] = str(checkpoint)
        if epochs is not None:
            tags[TAG_EPOCHS] = str(int(epochs))
        if time_total_s is not None:
            tags[TAG_TIME] = f"{float(time_total_s):.3f}"
        current = self.client.get_run(run_id)
        for key, value in tags.items():
            if current.data.tags.get(key) != value:
                self.client.set_tag(run_id, key, value)
        self._finish(run_id, "FAILED" if status == STATUS_ERRORED else "FINISHED")

    def mark_phase(self, trial_id: str, phase: str) -> None:
        """Tag a trial's run with the search phase it belongs to (``final``: the confirmation phase)."""
        if trial_id in self.trial_runs:
            self.client.set_tag(self.trial_runs[trial_id], TAG_PHASE, phase)

    def mark_interrupted(self, trial_ids: Iterable[str], *, error: str | None = None) -> None:
        """After Ctrl-C: the runs of the trials that had not ended are KILLED, status ``interrupted``
        (``error``: why the launcher stopped them, as their ``error`` tag)."""
        for trial_id in sorted(trial_ids):
            if trial_id in self.trial_runs:
                run_id = self.trial_runs[trial_id]
                self.client.set_tag(run_id, TAG_STATUS, "interrupted")
                if error:
                    self.client.set_tag(run_id, TAG_ERROR, error[-4900:])
                self.client.set_terminated(run_id, status="KILLED")

    def set_search_error(self, error: str) -> None:
        """Why the search ended early, as the parent run's ``error`` tag."""
        if self.parent_run_id is not None:
            self.client.set_tag(self.parent_run_id, TAG_ERROR, error[-4900:])

    def fail_running_runs(self, reason: str) -> None:
        """The search's runs still RUNNING (a start that failed) end FAILED with ``reason`` as their error."""
        for run_id in [*self.trial_runs.values(), self.parent_run_id]:
            if run_id and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_tag(run_id, TAG_ERROR, reason[-4900:])
                if run_id != self.parent_run_id:
                    self.client.set_tag(run_id, TAG_STATUS, STATUS_ERRORED)
                self.client.set_terminated(run_id, status="FAILED")

    @_tolerant
    def drop_lost_trials(self, known: Iterable[str]) -> list[str]:
        """A resumed search: the trial runs of this search whose trial Ray's saved state does not hold are
        marked lost and moved to MLflow's deleted runs (restorable from its UI), so that the search keeps
        one run per trial.  Such a trial started in a driver killed before Ray next saved its state (Ray
        saves it every few seconds): Ray never continues it and samples its place again under a new id.
        Returns their trial ids."""
        known = set(known)
        query = f"tags.`{TAG_SEARCH}` = '{self.search_id}' and tags.`{TAG_KIND}` = 'trial'"
        lost = []
        for run in search_runs(self.client, [self.experiment_id], query):
            trial_id = run.data.tags.get(TAG_TRIAL)
            if not trial_id or trial_id in known or run.data.tags.get(TAG_PHASE):
                continue
            run_id = run.info.run_id
            self.client.set_tag(run_id, TAG_STATUS, STATUS_LOST)
            self.client.set_tag(
                run_id, TAG_ERROR, "lost: started just before the driver was killed, after Ray last saved the search's state"
            )
            if run.info.status == "RUNNING":
                self.client.set_terminated(run_id, status="KILLED")
            self.client.delete_run(run_id)
            self.trial_runs.pop(trial_id, None)
            lost.append(trial_id)
        return lost

    def count_search_runs(self) -> int:
        """How many runs (parent and trials) this search has in the experiment."""
        return len(search_runs(self.client, [self.experiment_id], f"tags.`{TAG_SEARCH}` = '{self.search_id}'"))


def make_callback(tracker: Tracker, metric: str, max_epochs: int) -> Callback:
    """A Ray Tune callback that mirrors trial events into MLflow through ``tracker``.

    ``tracker`` is tolerant (see the module docstring): an MLflow failure never stops the search.
    """
    from ray.tune import Callback

    class MLflowTrials(Callback):
        def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            tracker.start_trial(trial.trial_id, trial.config)

        def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
            tracker.log_result(trial.trial_id, trial.config, result)

        def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            last = trial.last_result or {}
            epochs = int(last.get("epoch", 0))
            checkpoint = getattr(trial, "checkpoint", None)
            tracker.end_trial(
                trial.trial_id,
                trial.config,
                trial_status(epochs, max_epochs),
                checkpoint=getattr(checkpoint, "path", None),
                epochs=epochs,
                time_total_s=last.get("time_total_s"),
            )

        def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            err = None
            error_file = getattr(trial, "error_file", None)
            if error_file and os.path.exists(error_file):
                from mtlsearch.faults import strip_ansi

                err = strip_ansi(Path(error_file).read_text())  # a plain-text tag: no terminal colour codes
            last = trial.last_result or {}
            checkpoint = getattr(trial, "checkpoint", None)
            tracker.end_trial(
                trial.trial_id,
                trial.config,
                STATUS_ERRORED,
                error=err,
                checkpoint=getattr(checkpoint, "path", None),
                epochs=int(last.get("epoch", 0)),
                time_total_s=last.get("time_total_s"),
            )

    return MLflowTrials()


def make_resume_callback(tracker: Tracker) -> Callback:
    """For a resumed search only: at the first step of the restored Tuner (its trials are then exactly those
    of Ray's saved state), the runs of trials Ray lost go (:meth:`Tracker.drop_lost_trials`)."""
    from ray.tune import Callback

    class DropLostTrials(Callback):
        def __init__(self) -> None:
            self.done = False

        def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
            if self.done:
                return
            self.done = True
            lost = tracker.drop_lost_trials(t.trial_id for t in trials)
            for trial_id in lost or []:
                print(
                    f"note: trial {trial_id} started just before the search was stopped and Ray had not saved it; "
                    "its MLflow run is moved to the deleted runs and its place in the search is sampled again",
                    flush=True,
                )

    return DropLostTrials()


# ======================================================================================= read side
def parse_param(text: str) -> Any:
    """A param as logged (``_param_value``) back to a Python value: bools, None, numbers, JSON lists."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def search_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list[Run]:
    """Every run matching ``filter_string`` (all pages)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def count_search_runs(tracking_uri: str, experiment: str, search_id: str) -> int:
    """How many runs (parent and trials) of search ``search_id`` the experiment holds (0 if it does not exist)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    return len(search_runs(client, [exp.experiment_id], f"tags.`{TAG_SEARCH}` = '{search_id}'"))


def read_search(tracking_uri: str, experiment: str, search: str | None = None) -> dict[str, Any]:
    """A search as the tracker wrote it: ``search`` = a parent run id, search id or run name (default:
    the latest search of the experiment).  Returns plain values: the parent's ``name``, ``search_id``,
    ``parent_run_id``, objective (``metric``, ``mode``, ``objectives``), ``max_epochs``, ``resources``
    (None if not logged), ``benchmark``, and ``trials``: one dict per trial run (``trial_id``,
    ``run_id``, ``params``, ``status``, ``final`` metrics, ``epochs`` (None while running),
    ``time_total_s``, ``checkpoint``, ``error``, ``metric_keys`` and ``history()``: ``{metric: [(epoch,
    value), ...]}`` fetched when called)."""
    client = open_store(tracking_uri)  # a missing SQLite file is refused, not created
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ConfigError(f"no experiment {experiment!r} at {tracking_uri}; there are: {', '.join(names) or 'none'}", field="--experiment")
    parents = search_runs(client, [exp.experiment_id], f"tags.`{TAG_KIND}` = 'search'", order_by=["attributes.start_time DESC"])
    if search:
        parents = [r for r in parents if search in (r.info.run_id, r.data.tags.get(TAG_SEARCH), r.info.run_name)]
    if not parents:
        raise ConfigError(
            f"experiment {experiment!r} has no search{f' {search!r}' if search else ''} (parent run tagged {TAG_KIND}=search)",
            field="--search" if search else "--experiment",
        )
    parent = parents[0]
    params = parent.data.params
    search_id = parent.data.tags[TAG_SEARCH]
    metric = params.get("objective_metric") or params.get("scalar_metric") or "val/delta_m"
    mode = params.get("objective_mode") or params.get("scalar_mode") or "max"
    if "objective_metrics" in params:
        objectives = list(zip(json.loads(params["objective_metrics"]), json.loads(params["objective_modes"])))
    else:
        objectives = [(metric, mode)]

    trials = []
    for run in search_runs(client, [exp.experiment_id], f"tags.`{TAG_SEARCH}` = '{search_id}' and tags.`{TAG_KIND}` = 'trial'"):
        tags = run.data.tags
        run_id = run.info.run_id
        keys = list(run.data.metrics)

        def history(run_id: str = run_id, keys: list[str] = keys) -> dict[str, list[tuple[int, float]]]:
            return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}

        trials.append(
            {
                "trial_id": tags.get(TAG_TRIAL, run_id),
                "run_id": run_id,
                "params": {k: parse_param(v) for k, v in run.data.params.items()},
                "status": tags.get(TAG_STATUS, STATUS_RUNNING),
                "final": dict(run.data.metrics),
                "metric_keys": keys,
                "epochs": int(tags[TAG_EPOCHS]) if TAG_EPOCHS in tags else None,
                "time_total_s": float(tags[TAG_TIME]) if TAG_TIME in tags else None,
                "checkpoint": tags.get(TAG_CHECKPOINT),
                "error": tags.get(TAG_ERROR),
                "history": history,
            }
        )
    return {
        "name": parent.info.run_name or Path(search_id).name,
        "search_id": search_id,
        "experiment_id": exp.experiment_id,
        "parent_run_id": parent.info.run_id,
        "metric": metric,
        "mode": mode,
        "objectives": objectives,
        "max_epochs": int(params.get("override.max_epochs") or params.get("max_epochs") or 0),
        "resources": json.loads(params["resources"] or "{}") if "resources" in params else None,
        "benchmark": params.get("override.benchmark") or params.get("benchmark"),
        "trials": trials,
        "params": dict(params),
    }


def read_space_text(tracking_uri: str, run_id: str) -> str | None:
    """The space file a search ran (its parent run's ``space/`` artifact, ``--set`` lines included), or None."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no "Downloading artifacts" bar in the report
    try:
        files = [a.path for a in client.list_artifacts(run_id, "space") if not a.is_dir]
        if not files:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, files[0], tmp)).read_text()
    except Exception:
        return None
    finally:
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """One metric of one run: ``[(epoch, value), ...]`` sorted by epoch."""
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=tracking_uri).get_metric_history(run_id, key))


def log_report(tracking_uri: str, run_id: str, markdown: str, figures: Iterable[Path]) -> None:
    """The report of a search, logged to its parent run: ``report/leaderboard.md`` and the files under
    ``report/`` (the figures, the HTML page ``report.html``, the per-trial ``trials.csv``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_text(run_id, markdown, "report/leaderboard.md")
    for path in figures:
        client.log_artifact(run_id, str(path), "report")
