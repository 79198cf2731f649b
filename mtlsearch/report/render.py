"""Rendering a search: the leaderboard and Pareto set as terminal or Markdown text, totals, CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from mtlsearch import results, uncertainty
from mtlsearch.report.analysis import group_columns, leaderboard, pareto_set, row_group_columns, searched_keys
from mtlsearch.report.load import Search, Trial
from mtlsearch.results import fmt, format_table, markdown_table
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_RUNNING, STATUS_STOPPED


def _cell(row: Mapping[str, Any], metric: str) -> str:
    """A metric of a leaderboard row: mean ± 95% interval over the row's pooled seeds (one value: alone)."""
    if metric not in row:
        return "-"
    return results.value_cell(row, metric)


def table_columns(search: Search, metrics: list[str], *, wide: bool = False) -> list[str]:
    """Columns of the terminal / Markdown table (``wide``: the test split's task metrics too)."""
    shown = [m for m in metrics if wide or not (m.startswith("test/") and m != "test/delta_m")]
    return [
        *group_columns(search),
        "config",
        "status",
        "seeds",
        *shown,
        "tied",
        "epochs",
        "trials",
        "ASHA-stopped",
        "errored",
        "epochs spent",
        # Cost columns only for the resources the trials used (no "GPU-h 0.000" on a CPU search).
        *(["GPU-h"] if search.gpus_per_trial > 0 else []),
        *(["CPU-h"] if search.cpus_per_trial > 0 else []),
    ]


def _row_cells(row: Mapping[str, Any], columns: list[str], metrics: list[str]) -> list[str]:
    out = []
    for c in columns:
        if c in metrics:
            out.append(_cell(row, c))
        elif c == "status":
            out.append(results.status_label(row.get("status", ""), row.get("epochs")))
        elif c == "tied":
            out.append(results.tie_mark(row))
        elif c == "config":
            out.append(row.get("config", "") or "-")
        elif c == "epochs":
            out.append(f"{row['epochs']}{' (partial)' if row.get('partial') else ''}" if "epochs" in row else "-")
        elif c == "ASHA-stopped":
            out.append(str(row["asha_stopped"]))
        elif c == "epochs spent":
            out.append(str(row["epochs_spent"]))
        elif c == "GPU-h":
            out.append(f"{row['gpu_hours']:.3f}")
        elif c == "CPU-h":
            out.append(f"{row['cpu_hours']:.3f}")
        else:
            out.append(str(row.get(c, "")) or "-")
    return out


def totals(search: Search) -> str:
    n = len(search.trials)
    count = lambda s: sum(t.status == s for t in search.trials)
    seconds = sum(t.time_total_s or 0.0 for t in search.trials)
    res = (
        f"{fmt(search.gpus_per_trial)} GPU and {fmt(search.cpus_per_trial)} CPU per trial"
        if search.resources_known
        else "resources per trial unknown: assumed 0 GPU, 1 CPU"
    )
    return (
        f"{n} trials ({count(STATUS_COMPLETED)} completed, {count(STATUS_STOPPED)} stopped early by ASHA, "
        f"{count(STATUS_ERRORED)} errored"
        + (f", {count(STATUS_RUNNING)} running" if count(STATUS_RUNNING) else "")
        + f"); {sum(t.epochs for t in search.trials)} epochs; "
        + (f"{seconds * search.gpus_per_trial / 3600:.3f} GPU-hours, " if search.gpus_per_trial > 0 else "")
        + f"{seconds * search.cpus_per_trial / 3600:.3f} CPU-hours ({res})"
    )


def leaderboard_notes(rows: list[dict[str, Any]]) -> list[str]:
    """The lines under the leaderboard: what ``±`` and ``tied`` mean, the order of statuses, and for a
    one-seed search that its ranking is untested (:func:`mtlsearch.results.table_notes`)."""
    return results.table_notes(rows, what="configuration")


def pareto_table(search: Search, *, markdown: bool = False) -> tuple[str, list[Trial]]:
    objectives, cands, mask = pareto_set(search)
    front = [t for t, keep in zip(cands, mask) if keep]
    if objectives:
        first, direction = objectives[0]
        front = results.rank(front, lambda t: t.final[first], direction)
    shown = searched_keys(search)
    delta = [m for m in ("val/delta_m",) if any(m in t.final for t in front)]
    header = ["trial", "method", "optimizer", "config", *[f"{m} ({d})" for m, d in objectives], *delta]
    body = [
        [
            t.trial_id,
            str(t.params.get("method", "")),
            str(t.params.get("optimizer", "")),
            " ".join(f"{k}={fmt(t.params[k])}" for k in shown if k in t.params) or "-",
            *[fmt(t.final[m]) for m, _ in objectives],
            *[fmt(t.final[m]) for m in delta],
        ]
        for t in front
    ]
    title = (
        f"Pareto set: {len(front)} of {len(cands)} trials that reached {search.max_epochs} epochs are not "
        f"dominated on {', '.join(m for m, _ in objectives) or '(no task metric)'}"
    )
    table = markdown_table(header, body) if markdown else format_table(header, body)
    gap = "\n\n" if markdown else "\n"
    return f"{title}{gap}{table}" if front else f"{title}{gap}(none)", front


def write_csv(path: Path, rows: list[dict[str, Any]], metrics: list[str], groups: Sequence[str] | None = None) -> None:
    """The leaderboard as CSV; ``groups``: its group columns (:func:`~mtlsearch.report.analysis.group_columns`;
    default: method, optimizer and the bucket columns the rows hold)."""
    base = [
        *(groups if groups is not None else row_group_columns(rows)),
        "config",
        "status",
        "best_trials",
        "seeds",
        "tied",
        "p_outperform_best",
        "epochs",
        "partial",
        "trials",
        "asha_stopped",
        "errored",
        "epochs_spent",
        "gpu_hours",
        "cpu_hours",
    ]
    header = base + [c for m in metrics for c in (m, m + " std", m + " ci95_low", m + " ci95_high")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            cells = dict(r)
            cells["tied"] = results.tie_mark(r)
            cells["p_outperform_best"] = r.get("p_best")
            for m in metrics:
                stats = uncertainty.interval(results.seed_values_of(r, m))
                if stats is not None and stats.low is not None:
                    cells[m + " ci95_low"], cells[m + " ci95_high"] = stats.low, stats.high
            w.writerow(["" if cells.get(c) is None else cells.get(c, "") for c in header])


def render(search: Search, *, markdown: bool = False, wide: bool = False) -> tuple[str, list[dict[str, Any]], list[str]]:
    """The report as text (terminal or Markdown): leaderboard, totals, Pareto set."""
    rows, metrics = leaderboard(search)
    columns = table_columns(search, metrics, wide=wide)
    body = [_row_cells(r, columns, metrics) for r in rows]
    objective = ", ".join(f"{m} ({d})" for m, d in search.objectives)
    head = (
        f"Search {search.name} ({search.source}); objective {objective}"
        + (f"; ranked by {search.metric} ({search.mode})" if search.multi_objective else "")
        + f"; max_epochs {search.max_epochs}"
    )
    notes = leaderboard_notes(rows)
    parts = []
    if markdown:
        parts += [f"**{head}**", "", markdown_table(columns, body), "", totals(search), "", *[f"{n}  " for n in notes], ""]
    else:
        parts += [head, "", format_table(columns, body), "", totals(search), *notes, ""]
    ptable, _ = pareto_table(search, markdown=markdown)
    parts += [ptable]
    if not search.finished:
        parts += ["", "Note: some trials are still running; their values are partial."]
    return "\n".join(parts) + "\n", rows, metrics
