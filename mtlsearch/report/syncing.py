"""``python -m mtlsearch.report sync``: copy a Ray results folder into MLflow, idempotently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtlsearch import fairness, results, tracking
from mtlsearch.report.load import Search, load_results
from mtlsearch.tracking import STATUS_ERRORED, STATUS_RUNNING


def budget_warning(search: Search) -> str | None:
    """The launcher's warning when a method ended with less budget than the others (``runner._report``), from
    the trials a results folder holds (a method with no trial at all is not known there)."""
    if not search.max_epochs:
        return None
    rows = [(t.params[fairness.METHOD], t.epochs, t.status == STATUS_ERRORED) for t in search.trials if fairness.METHOD in t.params]
    return fairness.budget_warning(fairness.method_budget(rows, search.max_epochs))


def sync(results_folder: str | Path, tracking_uri: str, experiment: str | None = None) -> dict[str, Any]:
    """Copy a Ray results folder into MLflow, idempotently; returns counts of what was written."""
    search = load_results(results_folder)
    assert search.search_id is not None  # a Ray results folder's search id falls back to its path
    tracking.check_reachable(tracking_uri)
    experiment = experiment or search.experiment or search.name.rsplit("-", 2)[0]
    before = tracking.count_search_runs(tracking_uri, experiment, search.search_id)
    tracker = tracking.Tracker(tracking_uri, experiment, search.search_id, tolerant=False)
    info = search.info or {"params": {"objective_metric": search.metric, "objective_mode": search.mode, "max_epochs": search.max_epochs}}
    tracker.start_search_from(info, reopen=False)
    written = 0
    for t in search.trials:
        tracker.trial_run(t.trial_id, t.params)
        written += tracker.log_results(t.trial_id, t.params, t.results)
        if t.status != STATUS_RUNNING:
            tracker.end_trial(
                t.trial_id, t.params, t.status, error=t.error, checkpoint=t.checkpoint, epochs=t.epochs, time_total_s=t.time_total_s
            )
    if search.finished:
        # The same order as the launcher's table: completed trials by their mean over seeds, errored never best.
        ranked = results.rank_with_uncertainty(
            [
                {"trial": t.trial_id, "status": t.status, "_seeds": results.seed_values(t.final, search.metric), "_trial": t}
                for t in search.trials
                if search.metric in t.final or t.status == STATUS_ERRORED
            ],
            search.mode,
        )
        top = ranked[0]["_trial"] if ranked and ranked[0]["best"] else None
        best = {"trial_id": top.trial_id, "config": top.params, "metrics": top.final} if top is not None else None
        pareto = None
        if search.multi_objective:
            rows = [{"trial": t.trial_id, "epochs": t.epochs, "_metrics": t.final} for t in search.trials if t.status != STATUS_ERRORED]
            pareto = [r["trial"] for r in results.pareto_rows(rows, search.objectives, search.max_epochs)]
        tracker.end_search(best, pareto=pareto, standing=results.best_standing(ranked, search.metric))
        unequal = budget_warning(search)
        if unequal:
            tracker.tag_search(tracking.TAG_BUDGET_WARNING, unequal)
    after = tracker.count_search_runs()
    return {
        "runs_created": after - before,
        "metric_values": written,
        "trials": len(search.trials),
        "experiment": experiment,
        "parent_run_id": tracker.parent_run_id,
    }
