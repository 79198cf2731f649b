"""The command line of ``python -m mtlsearch.report`` (and ``... report sync``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from mtlsearch import studies, tracking
from mtlsearch.errors import ConfigError
from mtlsearch.report.analysis import group_columns
from mtlsearch.report.figures import make_figures
from mtlsearch.report.param_figures import fig_importance, fig_joint, fig_parallel, joint_data, parallel_data
from mtlsearch.report.importance import importance_text, param_importance
from mtlsearch.report.load import load_mlflow, load_results
from mtlsearch.report.page import build_page
from mtlsearch.report.render import render, write_csv
from mtlsearch.report.syncing import sync
from mtlsearch.report.trials import searched_params, write_trials_csv

EXIT_BAD_INPUT = 2


def report(args: argparse.Namespace) -> int:
    if args.results:
        search = load_results(args.results)
    else:
        search = load_mlflow(args.tracking_uri or tracking.default_tracking_uri(), args.experiment, args.search)
    if not search.trials:
        raise ConfigError(f"search {search.name!r} has no trials yet", field="--experiment")
    text, rows, metrics = render(search)
    space_text = (search.info or {}).get("space_text")
    if space_text is None and search.parent_run_id and search.tracking_uri:
        space_text = tracking.read_space_text(search.tracking_uri, search.parent_run_id)
    searched = searched_params(search, space_text)
    importance = param_importance(search, searched)
    print(text + "\n" + importance_text(importance, search.metric))
    params = (search.info or {}).get("params") or {}
    if params.get("optuna_storage"):
        print(studies.describe(params["optuna_storage"], params.get("optuna_study")))
    if args.markdown:
        md, _, _ = render(search, markdown=True, wide=True)
        md += "\n" + importance_text(importance, search.metric, markdown=True) + "\n"
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(md)
        print(f"Markdown: {args.markdown}")
    if args.csv:
        write_csv(Path(args.csv), rows, metrics, group_columns(search))
        print(f"CSV: {args.csv}")
    if not args.no_figures:
        out = Path(args.out) if args.out else Path("mtlsearch_report") / search.name
        figures = make_figures(search, rows, out, searched)
        figures = [
            p
            for p in (
                fig_joint(joint_data(search, searched, importance), out),
                fig_parallel(parallel_data(search, searched), out),
                fig_importance(importance, search.metric, out),
            )
            if p is not None
        ] + figures
        trials_csv = write_trials_csv(out / "trials.csv", search, searched)
        page = out / "report.html"
        page.write_text(build_page(search, rows, metrics, importance, searched, figures))
        print(f"Figures in {out}: {', '.join(p.name for p in figures) or 'none'}")
        print(f"Report page: {page}; one row per trial: {trials_csv}")
        if search.parent_run_id and search.tracking_uri and not args.no_log:
            tracking.log_report(
                search.tracking_uri, search.parent_run_id, render(search, markdown=True, wide=True)[0], [*figures, page, trials_csv]
            )
            print(f"Logged to MLflow run {search.parent_run_id} (artifacts report/)")
    return 0


# ======================================================================================= CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.report",
        description="Leaderboard, Pareto set and figures of a search (from MLflow or a Ray results folder). "
        "`python -m mtlsearch.report sync --results DIR` copies a Ray results folder into MLflow.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", help="MLflow experiment of the search (the space's name by default in the launcher)")
    src.add_argument("--results", help="a Ray results folder (<storage>/<search name>) instead of MLflow")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--search", help="parent run id or search id within the experiment (default: the latest search)")
    p.add_argument(
        "--out",
        help="folder for the figures, the HTML page report.html and the per-trial trials.csv (default: mtlsearch_report/<search name>)",
    )
    p.add_argument("--markdown", help="write the leaderboard and Pareto set as Markdown to this file")
    p.add_argument("--csv", help="write the leaderboard as CSV to this file")
    p.add_argument("--no-figures", action="store_true", help="tables only (no figures, HTML page or trials.csv)")
    p.add_argument("--no-log", action="store_true", help="do not log the figures and the page to the search's parent run")
    return p


def build_sync_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.report sync",
        description="Copy a Ray results folder into MLflow: missing runs and (metric, epoch) points only.",
    )
    p.add_argument("--results", required=True, help="the Ray results folder of the search (<storage>/<name>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: the one the search was launched with)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["sync"]:
            args = build_sync_parser().parse_args(argv[1:])
            uri = args.tracking_uri or tracking.default_tracking_uri()
            counts = sync(args.results, uri, args.experiment)
            print(
                f"Synced {args.results} into {uri} (experiment {counts['experiment']!r}, parent run "
                f"{counts['parent_run_id']}): {counts['trials']} trials, {counts['runs_created']} runs created, "
                f"{counts['metric_values']} metric values written"
            )
            return 0
        return report(build_parser().parse_args(argv))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
