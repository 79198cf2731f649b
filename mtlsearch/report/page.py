"""The report as one self-contained HTML page: the search's header, the tables, the figures inline.

Nothing the page needs lies outside it (no external ``src``): figures are embedded as base64 PNG, the style
sheet and the table-sorting script are inline, so the file can be mailed, opened from MLflow's artifact view or
archived.  Its only links (``href``) are each trial's page in the MLflow UI.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_RUNNING, STATUS_STOPPED

if TYPE_CHECKING:
    from mtlsearch.report.importance import Importance
    from mtlsearch.report.load import Search
    from mtlsearch.report.trials import SearchedParam

STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dt{font-weight:bold}dd{margin:0}figure{margin:1em 0}figcaption{font-size:12px;color:#555}img{max-width:100%}
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;font-size:12px}.note{color:#555;font-size:13px}
.scroll{overflow-x:auto}table.sortable th{cursor:pointer}table.sortable th:hover{background:#e6e6e6}
"""

#: The trials table sorts itself on a click on a column's header (numbers as numbers, empty cells last);
#: inline, so the page stays one self-contained file.
SORT_SCRIPT = """<script>
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = th.dataset.order !== "asc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = asc ? "asc" : "desc";
      var key = function (row) { var c = row.cells[col]; return c.dataset.v !== undefined ? c.dataset.v : c.textContent; };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = parseFloat(x), ny = parseFloat(y);
        var d = (!isNaN(nx) && !isNaN(ny) && String(nx) === x.trim() && String(ny) === y.trim()) ? nx - ny : x.localeCompare(y);
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
</script>"""
#: A local store's runs open in the UI that ``mtlsearch ui`` serves (its default host and port).
LOCAL_UI = "http://127.0.0.1:5000"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def run_link(search: Search, run_id: str | None) -> str | None:
    """The MLflow UI page of a trial's run: on the tracking server, or on the UI ``mtlsearch ui`` serves for a
    local store; None when the search did not come from MLflow."""
    if not run_id or not search.experiment_id or not search.tracking_uri:
        return None
    base = search.tracking_uri if search.tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base.rstrip('/')}/#/experiments/{search.experiment_id}/runs/{run_id}"


def trials_section(search: Search, searched: Sequence[SearchedParam]) -> tuple[str, str]:
    """(title, HTML) of the per-trial table: best first (completed trials, then running, stopped, errored;
    within each by the objective), sortable by any column, each trial linked to its MLflow run."""
    from mtlsearch.report.trials import objective_value, trial_table
    from mtlsearch.results import fmt, sign

    header, body = trial_table(search, searched)
    by_id = {t.trial_id: t for t in search.trials}
    rank = {STATUS_COMPLETED: 0, STATUS_RUNNING: 1, STATUS_STOPPED: 2, STATUS_ERRORED: 3}

    def order(row: list[Any]) -> tuple[int, float]:
        t = by_id[row[0]]
        value = objective_value(search, t)
        return rank.get(t.status, 1), -sign(search.mode) * value if value is not None else math.inf

    body = sorted(body, key=order)
    run_col = header.index("run_id")
    cells = []
    for row in body:
        link = run_link(search, row[run_col] or None)
        out = []
        for i, c in enumerate(row):
            shown = esc(fmt(c) if isinstance(c, float) else c)
            raw = (
                f' data-v="{esc(repr(c) if isinstance(c, float) else c)}"'
                if isinstance(c, (int, float)) and not isinstance(c, bool)
                else ""
            )
            if i == 0 and link:
                shown = f'<a href="{esc(link)}">{shown}</a>'
            out.append(f"<td{raw}>{shown}</td>")
        cells.append("<tr>" + "".join(out) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    where = ""
    if (
        search.tracking_uri
        and not search.tracking_uri.startswith(("http://", "https://"))
        and any(run_link(search, t.run_id) for t in search.trials)
    ):
        where = f'<p class="note">Trial links open the MLflow UI at {LOCAL_UI}: start it with <code>python -m mtlsearch ui --tracking-uri {esc(search.tracking_uri)}</code>.</p>'
    html_table = f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(cells)}</tbody></table></div>'
    note = '<p class="note">Sorted best first: completed trials, then running, stopped early and errored ones, each by the objective; click a column header to sort by it.</p>'
    return f"Trials ({len(body)})", note + where + html_table


def figure(path: Path, caption: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = esc(caption or Path(path).stem)
    cap = f"<figcaption>{esc(caption)} ({esc(Path(path).name)})</figcaption>" if caption else ""
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{cap}</figure>'


def header_items(search: Search) -> list[tuple[str, str]]:
    """The search's header: space, benchmark, objective, budget, scheduler, searcher, sources."""
    params = dict((search.info or {}).get("params") or {})

    def get(key: str) -> Any:
        value = params.get(f"override.{key}") or params.get(key)
        if isinstance(value, str) and value[:1] in "[{":
            try:
                return json.loads(value.replace("'", '"'))
            except ValueError:
                return value
        return value

    def short(value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
        return "" if value is None else str(value)

    objective = ", ".join(f"{m} ({d})" for m, d in search.objectives)
    items = [
        ("search", search.name),
        ("space", short(get("space")) or "?"),
        ("benchmark", search.benchmark or "?"),
        ("objective", objective),
    ]
    if search.multi_objective:
        items.append(("ranked by", f"{search.metric} ({search.mode})"))
    num = get("num_samples")
    items.append(("budget", f"{num if num is not None else '?'} trials x up to {search.max_epochs} epochs"))
    for key in ("scheduler", "searcher", "resources"):
        if get(key):
            items.append((key, short(get(key))))
    if params.get("optuna_storage"):
        items.append(
            ("Optuna study", f"{params.get('optuna_study')} in {params['optuna_storage']} (optuna-dashboard {params['optuna_storage']})")
        )
    items.append(("source", search.source))
    if search.parent_run_id:
        items.append(("MLflow parent run", search.parent_run_id))
    items.append(("written", time.strftime("%Y-%m-%d %H:%M:%S %Z")))
    return items


def html_page(search: Search, *, sections: Sequence[tuple[str, str]]) -> str:
    """The page: the search's header, then ``sections`` ((title, HTML body), in order)."""
    head = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in header_items(search))
    body = "".join(f"<h2>{esc(title)}</h2>\n{content}\n" for title, content in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>mtlsearch report: {esc(search.name)}'
        f"</title><style>{STYLE}</style></head><body>\n<h1>mtlsearch report: {esc(search.name)}</h1>\n"
        f"<dl>{head}</dl>\n{body}{SORT_SCRIPT}\n</body></html>\n"
    )


def build_page(
    search: Search,
    rows: list[dict[str, Any]],
    metrics: list[str],
    importance: Importance,
    searched: Sequence[SearchedParam],
    figures: Sequence[Path],
) -> str:
    """The report page of a search: leaderboard and totals, parameter importance, Pareto set, every
    figure, and one row per trial."""
    from mtlsearch.report.importance import EVALUATORS, importance_rows
    from mtlsearch.report.render import _row_cells, leaderboard_notes, pareto_table, table_columns, totals

    columns = table_columns(search, metrics)
    sections = [
        (
            "Leaderboard",
            table(columns, [_row_cells(r, columns, metrics) for r in rows])
            + "".join(f'<p class="note">{esc(line)}</p>' for line in [totals(search), *leaderboard_notes(rows)]),
        )
    ]
    if importance.ok:
        header, body = importance_rows(importance)
        how = "".join(f"<li>{esc(label)}: <code>{esc(what)}</code></li>" for label, what in EVALUATORS)
        left = (
            '<p class="note">Left out: ' + esc("; ".join(f"{k} ({v})" for k, v in importance.left_out.items())) + "</p>"
            if importance.left_out
            else ""
        )
        sections.append(
            (
                "Parameter importance",
                f"<p>Optuna's evaluators on {esc(importance.basis(search.metric))}; "
                f"each column sums to 1.</p>{table(header, body)}<ul>{how}</ul>{left}",
            )
        )
    else:
        sections.append(("Parameter importance", f"<p>{esc(importance.note)}</p>"))
    sections.append(("Pareto set", f"<pre>{esc(pareto_table(search)[0])}</pre>"))
    sections.append(("Figures", "".join(figure(p, caption(Path(p).name, search, searched, importance)) for p in figures) or "<p>none</p>"))
    sections.append(trials_section(search, searched))
    return html_page(search, sections=sections)


CAPTIONS = {
    "parallel_coordinates.png": "Every searched parameter, one line per trial; faint: stopped early by ASHA",
    "param_importance.png": "Parameter importance: fANOVA and PED-ANOVA (Optuna)",
    "delta_m_by_method.png": "Δm per method",
    "learning_curves.png": "Learning curves of the best trial of each leaderboard row",
    "task_dominance.png": "Task dominance of the shared layers",
    "pareto.png": "Pareto front of the task metrics",
}


def caption(name: str, search: Search, searched: Sequence[SearchedParam], importance: Importance) -> str:
    """A figure's caption: :data:`CAPTIONS`, or worded from the parameters it shows (a method's
    hyperparameter by its owners, ``GeMTL's p``; a trial setting as :data:`mtlsearch.config.SETTING_NAMES` says)."""
    from mtlsearch.config import SETTING_NAMES
    from mtlsearch.report.analysis import method_params
    from mtlsearch.report.param_figures import joint_axes

    declared = method_params(search)
    if name == "joint_params.png":
        axes = joint_axes(searched, importance, declared)
        shown = f" ({axes[1].name} x {axes[0].name})" if axes else ""
        return f"The objective over the two searched numbers{shown}; hollow: stopped early by ASHA"
    if name.startswith("delta_m_vs_") and name.endswith(".png"):
        param = name[len("delta_m_vs_") : -len(".png")]
        if param in declared:
            return f"Δm against {'/'.join(declared[param].owners)}'s {param}"
        return f"Δm against {SETTING_NAMES.get(param, param)}"
    return CAPTIONS.get(name, "")
