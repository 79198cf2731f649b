"""``python -m mtlsearch.report``: compare the trials of a finished search.

Input: an MLflow experiment (``--experiment NAME [--tracking-uri URI] [--search ID]``, the latest
search of the experiment by default) or a Ray results folder (``--results DIR``).  Output:

* **Leaderboard**, one row per (method, optimizer, and the bucket of each hyperparameter whose method
  declares buckets: ``HParam(..., buckets=...)``, see :mod:`mtlsearch.hparams`).  GeMTL declares
  ``p``'s: ``p<0`` (weights grow as a task's loss shrinks: leans towards the *easiest* task; p -> -inf is
  the min), ``0<=p<1`` (from the geometric mean, p -> 0, up to the arithmetic mean) and ``p>=1``
  (the arithmetic mean = equal weighting at p = 1, leaning towards the *hardest* task, the max, as
  p grows).  In each row: the best configuration by the search's objective, where trials of one
  configuration that differ only in ``seed`` are pooled and shown as mean ± sample std (n = the
  number of seeds); its Δm and every task metric; the trials, epochs, GPU-hours and CPU-hours the
  row's trials spent (Ray's ``time_total_s`` x the resources per trial) and how many ASHA stopped.
  A configuration's statistics use only its trials that reached ``max_epochs``; a row whose trials
  were all stopped early shows the best partial one, marked ``(partial)``.
* **Pareto set** of all trials that reached ``max_epochs`` (ASHA-stopped trials carry partial values
  and are left out) on every validation task metric: the configurations that no other one beats or
  equals on every task metric while beating it on one.
* **Figures** (``--out DIR``, and logged to the search's parent run under ``report/``): Δm against
  each searched number (``delta_m_vs_<name>.png``; a method's hyperparameter over the trials of the
  methods that declare it), Δm per method (box + strip), per-task learning curves of the best trials,
  the AdaTask task-dominance heatmap where ``dominance/<layer>/<task>`` metrics exist, and the
  Pareto front for each pair of task metrics.
* The leaderboard as a terminal table, Markdown (``--markdown FILE``) and CSV (``--csv FILE``; mean
  and std in separate numeric columns).

``python -m mtlsearch.report sync --results DIR [--tracking-uri URI] [--experiment NAME]`` copies a
Ray results folder into MLflow (after a tracking outage, or into another store): runs are looked up
by tags and only missing (metric, epoch) points are written, so syncing twice changes nothing.

Modules: :mod:`~mtlsearch.report.load` (the data model, loading from MLflow or Ray),
:mod:`~mtlsearch.report.analysis` (leaderboard, task metrics, Pareto set),
:mod:`~mtlsearch.report.render` (tables, totals, CSV), :mod:`~mtlsearch.report.figures`,
:mod:`~mtlsearch.report.syncing` and :mod:`~mtlsearch.report.cli` (the command line).  Ranking, the
Pareto mask and table formatting are :mod:`mtlsearch.results`'; MLflow names are :mod:`mtlsearch.tracking`'s.
"""

from mtlsearch.report.analysis import leaderboard
from mtlsearch.report.cli import main, report
from mtlsearch.report.figures import make_figures
from mtlsearch.report.load import Search, Trial, load_mlflow, load_results
from mtlsearch.report.render import render
from mtlsearch.report.syncing import sync

__all__ = ["Search", "Trial", "leaderboard", "load_mlflow", "load_results", "main", "make_figures", "render", "report", "sync"]
