"""The report as one self-contained HTML page: the search's header, the tables, the figures inline.

Nothing on the page points outside it (no external ``src`` or ``href``): figures are embedded as base64
PNG, the style sheet is inline, so the file can be mailed, opened from MLflow's artifact view or archived.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

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
.scroll{overflow-x:auto}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


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
        f"<dl>{head}</dl>\n{body}</body></html>\n"
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
    from mtlsearch.report.trials import trial_table
    from mtlsearch.results import fmt

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
    sections.append(("Figures", "".join(figure(p, CAPTIONS.get(Path(p).name, "")) for p in figures) or "<p>none</p>"))
    header, body = trial_table(search, searched)
    cells = [[fmt(c) if isinstance(c, float) else c for c in row] for row in body]
    sections.append((f"Trials ({len(body)})", table(header, cells)))
    return html_page(search, sections=sections)


CAPTIONS = {
    "joint_params.png": "The objective over the two searched numbers (p x lr when both are searched); hollow: stopped early by ASHA",
    "parallel_coordinates.png": "Every searched parameter, one line per trial; faint: stopped early by ASHA",
    "param_importance.png": "Parameter importance: fANOVA and PED-ANOVA (Optuna)",
    "delta_m_vs_p.png": "Δm against GeMTL's p",
    "delta_m_vs_lr.png": "Δm against the learning rate",
    "delta_m_by_method.png": "Δm per method",
    "learning_curves.png": "Learning curves of the best trial of each leaderboard row",
    "task_dominance.png": "Task dominance of the shared layers",
    "pareto.png": "Pareto front of the task metrics",
}
