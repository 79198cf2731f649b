"""MLflow, written from the driver only: the one package that owns the naming conventions and speaks to MLflow.

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

One module per job: :mod:`~mtlsearch.tracking.names` (tags, statuses, metric roots, a search's and a
trial's params), :mod:`~mtlsearch.tracking.view` (the UI's saved views and their URL),
:mod:`~mtlsearch.tracking.writer` (:class:`Tracker`, :func:`log_report`),
:mod:`~mtlsearch.tracking.callbacks` (the Ray Tune callbacks around the tracker),
:mod:`~mtlsearch.tracking.reader` (the read side), :mod:`~mtlsearch.tracking.reach` (reachability, the
UI server of a local store, the git commit and versions), :mod:`~mtlsearch.tracking.stores` (which store a
URI names, the SQLite store's creation, schema and trash).  Their public names are re-exported here:
``from mtlsearch import tracking``; ``tracking.Tracker``.
"""

from __future__ import annotations

from mtlsearch.tracking.names import (
    TAG_SEARCH,
    TAG_TRIAL,
    TAG_STATUS,
    TAG_KIND,
    TAG_EPOCHS,
    TAG_TIME,
    TAG_CHECKPOINT,
    TAG_PROTOCOL,
    TAG_PHASE,
    TAG_ERROR,
    TAG_SEARCHER,
    TAG_BUDGET_WARNING,
    PARENT_TAG,
    METRIC_ROOTS,
    STATUS_RUNNING,
    STATUS_COMPLETED,
    STATUS_STOPPED,
    STATUS_ERRORED,
    STATUS_LOST,
    SEARCH_INFO_FILE,
    STUDY_PARAMS,
    is_metric,
    select_metrics,
    trial_status,
    param_value,
    parse_param,
    search_info,
    write_search_info,
    read_search_info,
    trial_run_name,
    trial_params,
)
from mtlsearch.tracking.stores import (
    TRACKING_SCHEMES,
    default_tracking_uri,
    tracking_store_schemes,
    uri_scheme,
    is_server,
    sqlite_path,
    store_lock,
    CREATING_PREFIX,
    create_sqlite_store,
    sqlite_store_schema,
    latest_schema_revision,
    deleted_experiment,
)
from mtlsearch.tracking.reach import (
    check_reachable,
    configure_http,
    open_store,
    git_commit,
    versions,
    serves_store,
    start_server,
    wait_ready,
)
from mtlsearch.tracking.reader import (
    find_search,
    search_objectives,
    search_runs,
    count_search_runs,
    read_search,
    read_space_text,
    metric_history,
)
from mtlsearch.tracking.view import (
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_KIND,
    UI_WORKFLOW,
    VIEW_TAG_PREFIX,
    NUMERIC_DISTRIBUTIONS,
    are_numbers,
    COMPLETED_VIEW,
    CHART_SECTION,
    CHART_RUNS,
    MAX_SCATTERS,
    trials_view_key,
    trials_view_charts,
    trials_view_state,
    trials_view_tag,
    trials_url,
    ui_help,
    ui_command,
    set_trials_view,
    ensure_trials_view,
)
from mtlsearch.tracking.writer import Tracker, log_report
from mtlsearch.tracking.callbacks import make_callback, make_resume_callback

__all__ = [
    "TAG_SEARCH",
    "TAG_TRIAL",
    "TAG_STATUS",
    "TAG_KIND",
    "TAG_EPOCHS",
    "TAG_TIME",
    "TAG_CHECKPOINT",
    "TAG_PROTOCOL",
    "TAG_PHASE",
    "TAG_ERROR",
    "TAG_SEARCHER",
    "TAG_BUDGET_WARNING",
    "PARENT_TAG",
    "METRIC_ROOTS",
    "STATUS_RUNNING",
    "STATUS_COMPLETED",
    "STATUS_STOPPED",
    "STATUS_ERRORED",
    "STATUS_LOST",
    "SEARCH_INFO_FILE",
    "STUDY_PARAMS",
    "is_metric",
    "select_metrics",
    "trial_status",
    "param_value",
    "parse_param",
    "search_info",
    "write_search_info",
    "read_search_info",
    "trial_run_name",
    "trial_params",
    "TRACKING_SCHEMES",
    "default_tracking_uri",
    "tracking_store_schemes",
    "uri_scheme",
    "is_server",
    "sqlite_path",
    "store_lock",
    "CREATING_PREFIX",
    "create_sqlite_store",
    "sqlite_store_schema",
    "latest_schema_revision",
    "deleted_experiment",
    "check_reachable",
    "configure_http",
    "open_store",
    "git_commit",
    "versions",
    "serves_store",
    "start_server",
    "wait_ready",
    "find_search",
    "search_objectives",
    "search_runs",
    "count_search_runs",
    "read_search",
    "read_space_text",
    "metric_history",
    "EXPERIMENT_KIND_TAG",
    "EXPERIMENT_KIND",
    "UI_WORKFLOW",
    "VIEW_TAG_PREFIX",
    "NUMERIC_DISTRIBUTIONS",
    "are_numbers",
    "COMPLETED_VIEW",
    "CHART_SECTION",
    "CHART_RUNS",
    "MAX_SCATTERS",
    "trials_view_key",
    "trials_view_charts",
    "trials_view_state",
    "trials_view_tag",
    "trials_url",
    "ui_help",
    "ui_command",
    "set_trials_view",
    "ensure_trials_view",
    "Tracker",
    "log_report",
    "make_callback",
    "make_resume_callback",
]
