"""``mtlsearch ui`` and the ``mtlsearch`` dispatcher without a browser or a server: the view the launcher
writes (tracking.trials_view_state), the URL and command it prints, bad input (one line, exit 2).
The UI itself is checked in headless Chromium by tests/e2e/test_browser.py."""

from __future__ import annotations

import json
from pathlib import Path

from mtlsearch import tracking
from mtlsearch.__main__ import SUBCOMMANDS
from mtlsearch.__main__ import main as mtlsearch_main

ROOT = Path(__file__).resolve().parents[2]


def test_trials_view_lists_the_search_trials_best_first_with_their_params_and_objective():
    state = tracking.trials_view_state("abc123", [["val/delta_m", "max"]], ["p", "lr", "method"])
    assert state["searchFilter"] == "tags.`mlflow.parentRunId` = 'abc123'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val/delta_m`", False)
    assert state["selectedColumns"] == [
        "params.`method`",
        "params.`p`",
        "params.`lr`",
        "metrics.`val/delta_m`",
        "tags.`mtlsearch.epochs`",
        "tags.`mtlsearch.status`",
    ]
    assert state["runsHiddenMode"] == "SHOW_ALL"  # every trial in the charts, not the UI's first 10
    assert state["columnOrder"] == ["attributes.`Run Name`", *state["selectedColumns"], "runDateAndNestInfo", "duration"]
    # A minimised objective sorts ascending; every objective of a multi-objective search is a column.
    two = tracking.trials_view_state("abc123", [["val/loss", "min"], ["val/acc", "max"]], [])
    assert (two["orderByKey"], two["orderByAsc"]) == ("metrics.`val/loss`", True)
    assert two["selectedColumns"] == [
        "params.`method`",
        "metrics.`val/loss`",
        "metrics.`val/acc`",
        "tags.`mtlsearch.epochs`",
        "tags.`mtlsearch.status`",
    ]
    # The second view: the same, of the completed trials only.
    done = tracking.trials_view_state("abc123", [["val/delta_m", "max"]], ["p"], completed_only=True)
    assert done["searchFilter"] == "tags.`mlflow.parentRunId` = 'abc123' and tags.`mtlsearch.status` = 'completed'"
    assert {k: v for k, v in done.items() if k != "searchFilter"} == {
        k: v for k, v in tracking.trials_view_state("abc123", [["val/delta_m", "max"]], ["p"]).items() if k != "searchFilter"
    }


def test_trials_view_charts_the_objective_against_the_searched_parameters():
    state = tracking.trials_view_state("abc123", [["val/delta_m", "max"]], ["method", "lr", "p", "seed"], numeric=["lr", "p", "seed"])
    charts = state["compareRunCharts"]
    # First the objective against p, the parallel coordinates and the lr x p contour (one row of the page), then the rest.
    assert [c["type"] for c in charts] == ["SCATTER", "PARALLEL", "CONTOUR", "SCATTER", "SCATTER", "SCATTER"]
    assert [(c["xaxis"], c["yaxis"]) for c in charts if c["type"] == "SCATTER"] == [
        ({"key": k, "type": "PARAM"}, {"key": "val/delta_m", "type": "METRIC"}) for k in ["p", "method", "lr", "seed"]
    ]
    parallel, contour = charts[1], charts[2]
    assert parallel["selectedParams"] == ["method", "lr", "p", "seed"] and parallel["selectedMetrics"] == ["val/delta_m"]
    assert parallel["showAllRuns"] is True
    assert [contour[a]["key"] for a in ("xaxis", "yaxis", "zaxis")] == ["lr", "p", "val/delta_m"]
    assert all(c["runsCountToCompare"] >= 1000 and c["metricSectionId"] == tracking.CHART_SECTION for c in charts)
    assert [s["uuid"] for s in state["compareRunSections"]] == [tracking.CHART_SECTION] and state["isAccordionReordered"] is True
    assert len({c["uuid"] for c in charts}) == len(charts)
    # One numeric parameter: no contour; a categorical one is on the scatters and the parallel axes only.
    one = tracking.trials_view_charts([["val/delta_m", "max"]], ["method", "lr"], numeric=["lr"])
    assert [(c["type"], c.get("xaxis", {}).get("key")) for c in one] == [("SCATTER", "lr"), ("PARALLEL", None), ("SCATTER", "method")]
    assert tracking.trials_view_charts([["val/delta_m", "max"]], []) == []
    # A conditional parameter is no parallel axis (MLflow leaves out the runs without it), but has its scatter.
    cond = tracking.trials_view_charts([["val/delta_m", "max"]], ["method", "p", "lr"], numeric=["p", "lr"], always=["method", "lr"])
    assert cond[1]["selectedParams"] == ["method", "lr"] and cond[0]["xaxis"]["key"] == "p"


def test_trials_view_tag_is_the_ui_saved_view_envelope():
    state = tracking.trials_view_state("abc123", [["val/delta_m", "max"]], ["p"])
    envelope = json.loads(tracking.trials_view_tag("Trials of s", state, created_ms=5))
    assert envelope == {"name": "Trials of s", "createdAt": 5, "updatedAt": 5, "state": json.dumps(state)}
    assert json.loads(envelope["state"]) == state


def test_url_and_command_the_launcher_prints():
    url = tracking.trials_url("http://127.0.0.1:5000/", "7", "abc123")
    base = "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey="
    assert url == base + "mtlsearch-trials-abc123&compareRunsMode=CHART"
    assert tracking.trials_url("http://127.0.0.1:5000", "7", "abc123", charts=False) == base + "mtlsearch-trials-abc123"
    assert (
        tracking.trials_url("http://127.0.0.1:5000", "7", "abc123", view="completed")
        == base + "mtlsearch-completed-abc123&compareRunsMode=CHART"
    )
    lines = tracking.ui_command("http://127.0.0.1:5000", "gemtl_p", "7", "abc123").split("\n  ")
    assert lines[0] == url
    assert base + "mtlsearch-trials-abc123" in lines[2] and base + "mtlsearch-completed-abc123&compareRunsMode=CHART" in lines[3]
    assert "click 'Model training'" in lines[4]
    assert tracking.ui_command("sqlite:////data/mlflow.db", "gemtl_p", "7", "abc123") == (
        "python -m mtlsearch ui --tracking-uri sqlite:////data/mlflow.db --experiment gemtl_p"
    )


def test_ui_without_a_store_is_one_line_and_exit_2(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    assert mtlsearch_main(["ui", "--no-browser", "--tracking-uri", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --tracking-uri: no MLflow store at ") and str(db) in err[0], err
    assert not db.exists()  # not created


def test_ui_bad_port_is_one_line_and_exit_2(tmp_path, capsys):
    assert mtlsearch_main(["ui", "--no-browser", "--port", "70000", "--tracking-uri", f"sqlite:///{tmp_path}/x.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --port: 70000 is not a TCP port (1 to 65535)"]


def test_dispatcher(capsys):
    assert mtlsearch_main(["bogus"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown subcommand 'bogus'; choose one of launch, ui, report, list"
    assert mtlsearch_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in SUBCOMMANDS)
    assert 'mtlsearch = "mtlsearch.__main__:main"' in (ROOT / "pyproject.toml").read_text()
