"""The MLflow UI's saved views of a search: the runs table and its charts (experiment tags), their URL,
the lines printed under it and the command that opens it (``mtlsearch ui``)."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from mtlsearch.tracking.names import PARENT_TAG, STATUS_COMPLETED, TAG_EPOCHS, TAG_STATUS
from mtlsearch.tracking.reader import search_objectives
from mtlsearch.tracking.stores import is_server

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Run
    from mlflow.tracking import MlflowClient


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


def are_numbers(values: Any) -> bool:
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


def ui_command(tracking_uri: str, experiment: str | None = None, experiment_id: str | None = None, parent_run_id: str | None = None) -> str:
    """What opens a search's trial comparison in the MLflow UI: on a tracking server, its URL
    (:func:`trials_url`) and, on the lines below it, :func:`ui_help`; on a local store, the ``mtlsearch ui``
    command that serves it (and prints the same)."""
    if is_server(tracking_uri):
        if experiment_id and parent_run_id:
            return "\n  ".join(
                [trials_url(tracking_uri, experiment_id, parent_run_id), *ui_help(tracking_uri, experiment_id, parent_run_id)]
            )
        return f"open {tracking_uri} in a browser"
    return f"python -m mtlsearch ui --tracking-uri {tracking_uri}" + (f" --experiment {experiment}" if experiment else "")


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
