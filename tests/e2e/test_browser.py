"""The MLflow UI of a finished small search, in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium): the trial runs are there with their p and Δm.

Nothing is skipped: without chromium the test fails (``.ci/run`` installs it).  The UI is a React app,
so every check waits explicitly for the element it reads.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from helpers import shared_search as shared

from mtlsearch import tracking
from mtlsearch.tracking import TAG_KIND, TAG_TRIAL

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1200",
]


@pytest.fixture
def browser(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "headless Chromium is required: apt-get install -y chromium chromium-driver (.ci/run installs them)"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def _row_cells(drv, label: str) -> list[str]:
    """Texts of the cells of the table row whose header cell reads ``label``."""
    from selenium.webdriver.common.by import By

    row = drv.find_element(By.XPATH, f"//tr[./*[1][normalize-space()='{label}']]")
    return [c.get_attribute("textContent").strip() for c in row.find_elements(By.XPATH, "./*")][1:]


def test_mlflow_ui_shows_trial_runs_with_p_and_delta_m(remote_search, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    uri, exp_id = remote_search.uri, remote_search.experiment_id
    trials = [r for r in shared.search_runs(uri, exp_id) if shared.run_tags(r).get(TAG_KIND) == "trial"]
    assert len(trials) == 4
    ids = [r["info"]["run_id"] for r in trials]
    names = {r["info"]["run_id"]: r["info"]["run_name"] for r in trials}
    # Readable in a list: the method, its searched parameters, the trial id (tracking.trial_run_name).
    for i, r in zip(ids, trials):
        method = {p["key"]: p["value"] for p in r["data"].get("params", [])}["method"]
        assert names[i].startswith(method + " ") and names[i].endswith(f"({shared.run_tags(r)[TAG_TRIAL]})"), names[i]
    wait = WebDriverWait(browser, 60)
    try:
        # 1. The experiment's runs page lists the search (its parent run, named after the Ray folder).
        browser.get(f"{uri}/#/experiments/{exp_id}/runs")
        wait.until(lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='remote']"))

        # 2. "Compare runs" of all trials: one column per trial run, with its p (GeMTL) or none (EW).
        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp_id])})
        browser.get(f"{uri}/#/compare-runs?{query}")
        wait.until(lambda d: d.find_elements(By.XPATH, "//tr[./*[1][normalize-space()='Run Name:']]"))
        columns = _row_cells(browser, "Run Name:")
        assert sorted(columns) == sorted(names.values())
        by_name = {names[r["info"]["run_id"]]: r for r in trials}
        gemtl = [r for r in trials if shared.run_params(r)["method"] == "gemtl"]
        if gemtl:
            p_cells = _row_cells(browser, "p")
            for name, cell in zip(columns, p_cells):
                params = shared.run_params(by_name[name])
                if "p" in params:
                    assert float(cell) == pytest.approx(float(params["p"]), rel=1e-12)
                else:
                    assert cell == ""

        # 3. Each trial's own page shows val/delta_m (and p for GeMTL) with the logged values.
        for run in trials:
            browser.get(f"{uri}/#/experiments/{exp_id}/runs/{run['info']['run_id']}")
            xpath = "//*[normalize-space(text())='val/delta_m']/ancestor::*[@role='row' or self::tr][1]"
            wait.until(lambda d, xpath=xpath: d.find_elements(By.XPATH, xpath))
            label, value = browser.find_element(By.XPATH, xpath).text.split("\n")[:2]
            assert label == "val/delta_m"
            assert float(value) == pytest.approx(shared.run_metrics(run)["val/delta_m"], rel=1e-12)
            params = shared.run_params(run)
            if "p" in params:
                row = browser.find_element(By.XPATH, "//*[normalize-space(text())='p']/ancestor::*[@role='row' or self::tr][1]")
                assert float(row.text.split("\n")[1]) == pytest.approx(float(params["p"]), rel=1e-12)
    finally:
        browser.save_screenshot(str(tmp_path / "mlflow_ui.png"))


# ------------------------------------------------------------------------------ mtlsearch ui
#: The table's rows, in display order: run name (left pinned part) and the cells (centre part) by column id.
_ROWS_JS = """
const byIndex = {};
for (const part of ['.ag-pinned-left-cols-container', '.ag-center-cols-container']) {
  for (const row of document.querySelectorAll(part + ' .ag-row')) {
    const i = Number(row.getAttribute('row-index'));
    byIndex[i] = byIndex[i] || {};
    for (const cell of row.querySelectorAll('.ag-cell[col-id]')) {
      const id = cell.getAttribute('col-id');  // the run name is the cell's link (the cell also holds its colour's code)
      byIndex[i][id] = ((id === 'attributes.`Run Name`' && cell.querySelector('a')) || cell).textContent.trim();
    }
  }
}
return Object.keys(byIndex).map(Number).sort((a, b) => a - b).map(i => byIndex[i]);
"""
_HEADERS_JS = """
return Array.from(document.querySelectorAll('.ag-header-cell[col-id]')).map(e => [e.getAttribute('col-id'), e.textContent.trim()]);
"""
#: Entries of the experiment's side navigation that only the UI's GenAI mode shows (MLflow 3.17.2).
GENAI_ONLY_NAV = {"Overview", "Sessions", "Judges", "Review", "Evaluation runs", "Agent versions"}


def test_mtlsearch_ui_opens_the_trial_comparison(remote_search, browser, tmp_path, capsys):
    """``mtlsearch ui --no-browser`` prints a URL that opens, on first load in a fresh browser profile, the
    search's trial runs (not the parent run), best val/delta_m first, with method, p, lr and val/delta_m
    as columns, in the model-training view (the side navigation has none of the GenAI mode's entries).

    Not asserted: MLflow's assistant panel.  MLflow 3.17.2 opens it once per browser profile whenever the
    page's host is localhost/127.0.0.1 (a localStorage flag, ``mlflow.assistant.fab.autoOpenedOnFirstLoad_v1``);
    no URL parameter, experiment tag or server option turns that off, so the screenshot shows it.
    """
    import os

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mtlsearch.__main__ import main as mtlsearch_main

    uri, exp_id = remote_search.uri, remote_search.experiment_id
    runs = shared.search_runs(uri, exp_id)
    parent = next(r for r in runs if shared.run_tags(r).get(TAG_KIND) == "search")
    # The launcher wrote the experiment's kind and the search's view as the search started ...
    exp_tags = {
        t["key"]: t["value"] for t in shared.rest(uri, "experiments/get", params={"experiment_id": exp_id})["experiment"].get("tags", [])
    }
    assert exp_tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    assert tracking.VIEW_TAG_PREFIX + tracking.trials_view_key(parent["info"]["run_id"]) in exp_tags
    # ... and printed the URL that `mtlsearch ui` prints.
    assert mtlsearch_main(["ui", "--no-browser", "--tracking-uri", uri, "--experiment", remote_search.experiment]) == 0
    printed = capsys.readouterr()
    charts_url = printed.out.strip().splitlines()[-1]
    assert charts_url.startswith(f"{uri}/#/experiments/{exp_id}/runs?"), charts_url
    assert f"Open the runs in the MLflow UI:\n  {charts_url}\n" in remote_search.output
    # The lines under the URL give the table's URL (this test's) and the way back to model training.
    (url,) = [line.split(": ", 1)[1] for line in printed.err.splitlines() if "the same trials as a table: " in line]
    assert url == tracking.trials_url(uri, exp_id, parent["info"]["run_id"], charts=False)
    assert "click 'Model training'" in printed.err and "click 'Model training'" in remote_search.output
    trials = [r for r in runs if shared.run_tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(trials) == 4
    value = {r["info"]["run_name"]: shared.run_metrics(r).get("val/delta_m") for r in trials}
    # The objective is maximised: best first, runs without a value last (MLflow's order for a missing metric).
    expected = sorted(value, key=lambda n: (value[n] is None, -(value[n] or 0.0)))

    wait = WebDriverWait(browser, 120)
    try:
        browser.get(url)
        # The first rows can be the default view's (every run, by start time): wait for the trial view's rows.
        wait.until(lambda d: {r.get("attributes.`Run Name`") for r in d.execute_script(_ROWS_JS)} == set(value))
        rows = browser.execute_script(_ROWS_JS)
        headers = dict(browser.execute_script(_HEADERS_JS))
        for col, label in [
            ("params.`method`", "method"),
            ("params.`p`", "p"),
            ("params.`lr`", "lr"),
            ("metrics.`val/delta_m`", "val/delta_m"),
        ]:
            assert headers.get(col) == label, headers
        assert [r["attributes.`Run Name`"] for r in rows] == expected
        assert parent["info"]["run_name"] not in [r["attributes.`Run Name`"] for r in rows]
        by_name = {r["info"]["run_name"]: r for r in trials}
        for row in rows:
            run = by_name[row["attributes.`Run Name`"]]
            params = shared.run_params(run)
            assert row["params.`method`"] == params["method"]
            assert float(row["params.`lr`"]) == pytest.approx(float(params["lr"]), rel=1e-12)
            if "p" in params:  # GeMTL's; the UI shows "-" for a run without it (EW)
                assert float(row["params.`p`"]) == pytest.approx(float(params["p"]), rel=1e-12)
            else:
                assert row["params.`p`"] in ("-", "")
            if value[row["attributes.`Run Name`"]] is not None:
                assert float(row["metrics.`val/delta_m`"]) == pytest.approx(value[row["attributes.`Run Name`"]], rel=1e-12)
        nav = {e.text.strip() for e in browser.find_elements(By.XPATH, "//aside//a") if e.text.strip()}
        assert "Runs" in nav and not nav & GENAI_ONLY_NAV, nav
        assert "workflowType=machine_learning" in browser.current_url
    finally:
        shot = tmp_path / "mlflow_trials.png"
        browser.save_screenshot(str(shot))
        if os.environ.get("MTLSEARCH_DOCS_SCREENSHOT"):  # refresh the README's copy: MTLSEARCH_DOCS_SCREENSHOT=1
            shutil.copy(shot, Path(__file__).resolve().parents[2] / "docs" / "mlflow_trials.png")


#: The charts on the page: plotly's scatter and contour plots (their traces' data) and the parallel
#: coordinates (an SVG drawn from the data its React component gets: read from the component's props).
_CHARTS_JS = """
const cards = [];
for (const h of document.querySelectorAll('h4[title]')) {
  // The chart's card: the largest ancestor that holds one card's drag handle only.
  const handles = e => e.querySelectorAll('[data-testid="experiment-view-compare-runs-card-drag-handle"]').length;
  let card = h;
  while (card.parentElement && handles(card.parentElement) <= 1) card = card.parentElement;
  const box = card.getBoundingClientRect();
  const entry = {title: h.getAttribute('title'), onScreen: box.top >= 0 && box.bottom <= window.innerHeight && box.left >= 0 && box.right <= window.innerWidth};
  const plot = card.querySelector('.js-plotly-plot');
  if (plot) entry.traces = (plot.data || []).map(t => ({type: t.type, x: Array.from(t.x || [], Number), y: Array.from(t.y || [], Number), z: Array.from(t.z || [])}));
  const dims = card.querySelector('svg g.dimension');
  if (dims) {
    const svg = dims.ownerSVGElement;
    entry.axes = Array.from(svg.querySelectorAll('text.label')).map(e => e.textContent);
    let node = svg;  // d3 draws the SVG: the nearest element React rendered holds the component's fiber
    while (node && !Object.keys(node).some(k => k.startsWith('__reactFiber'))) node = node.parentElement;
    let f = node && node[Object.keys(node).find(k => k.startsWith('__reactFiber'))];
    for (let i = 0; i < 60 && f; i++, f = f.return) {
      const props = f.memoizedProps || {};
      if (Array.isArray(props.data) && Array.isArray(props.selectedParams)) { entry.runs = props.data.length; break; }
    }
  }
  cards.push(entry);
}
return cards;
"""


def test_mtlsearch_ui_charts_every_trial_on_each_open(remote_search, browser, tmp_path, capsys):
    """The URL that ``mtlsearch ui`` and the launcher print opens, with no click, the search's charts: the
    objective against p (a scatter), the parallel coordinates of the searched parameters and the objective,
    and the objective's contour over lr x p, all three on a 1600x1200 screen, every trial plotted with its
    logged values; and they are there again when the URL is opened a second time (the view is saved in the
    experiment, not in the browser).  The second saved view lists the completed trials only."""
    import os

    from selenium.webdriver.support.ui import WebDriverWait

    from mtlsearch.__main__ import main as mtlsearch_main

    uri, exp_id = remote_search.uri, remote_search.experiment_id
    runs = shared.search_runs(uri, exp_id)
    parent = next(r for r in runs if shared.run_tags(r).get(TAG_KIND) == "search")
    trials = [r for r in runs if shared.run_tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(trials) == 4
    assert mtlsearch_main(["ui", "--no-browser", "--tracking-uri", uri, "--experiment", remote_search.experiment]) == 0
    url = capsys.readouterr().out.strip().splitlines()[-1]
    assert url == tracking.trials_url(uri, exp_id, parent["info"]["run_id"]) and url.endswith("&compareRunsMode=CHART")

    scored = [r for r in trials if "val/delta_m" in shared.run_metrics(r)]
    with_p = [r for r in scored if "p" in shared.run_params(r)]
    lrs = sorted(float(shared.run_params(r)["lr"]) for r in scored)
    ps = sorted(float(shared.run_params(r)["p"]) for r in with_p)
    objective = sorted(shared.run_metrics(r)["val/delta_m"] for r in scored)
    objective_p = sorted(shared.run_metrics(r)["val/delta_m"] for r in with_p)
    wait = WebDriverWait(browser, 120)
    shot = tmp_path / "mlflow_charts.png"
    try:
        for visit in (1, 2):
            browser.get("about:blank")
            browser.get(url)
            on_screen = {"p vs. val/delta_m", "Parallel Coordinates", "lr vs. p vs. val/delta_m"}  # with no scrolling
            wanted = on_screen | {"lr vs. val/delta_m"}

            def drawn(d: Any, wanted: set[str] = wanted) -> dict[str, Any] | bool:
                # the cards of the one reading in which every wanted chart is drawn (a later reading may catch a re-render)
                cards = {c["title"]: c for c in d.execute_script(_CHARTS_JS) if c.get("traces") or c.get("runs") is not None}
                return cards if wanted <= set(cards) else False

            cards = wait.until(drawn)
            for title in on_screen:
                assert cards[title]["onScreen"], (visit, title, cards[title])
            (scatter,) = [t for t in cards["p vs. val/delta_m"]["traces"] if t["type"] == "scatter"]
            assert sorted(scatter["x"]) == pytest.approx(ps, rel=1e-9) and sorted(scatter["y"]) == pytest.approx(objective_p, rel=1e-9)
            (points,) = [t for t in cards["lr vs. val/delta_m"]["traces"] if t["type"] == "scatter"]
            assert sorted(points["x"]) == pytest.approx(lrs, rel=1e-9) and sorted(points["y"]) == pytest.approx(objective, rel=1e-9)
            contour = [t for t in cards["lr vs. p vs. val/delta_m"]["traces"] if t["type"] == "scatter"]
            assert [sorted(contour[0]["x"]), sorted(contour[0]["y"])] == [
                pytest.approx(sorted(float(shared.run_params(r)["lr"]) for r in with_p), rel=1e-9),
                pytest.approx(ps, rel=1e-9),
            ]
            parallel = cards["Parallel Coordinates"]
            # p is conditional (GeMTL's): not an axis, as MLflow would leave out every trial without it.
            assert parallel["axes"] == ["method", "lr", "seed", "val/delta_m"], parallel["axes"]
            assert parallel["runs"] == len(scored), parallel
            assert "workflowType=machine_learning" in browser.current_url
            if visit == 1:
                browser.save_screenshot(str(shot))

        # The second view: the trials that reached max_epochs only.
        completed = {r["info"]["run_name"] for r in trials if shared.run_tags(r).get(tracking.TAG_STATUS) == tracking.STATUS_COMPLETED}
        assert completed  # ASHA lets the first trial to reach each milestone go on
        browser.get(tracking.trials_url(uri, exp_id, parent["info"]["run_id"], view=tracking.COMPLETED_VIEW, charts=False))
        wait.until(lambda d: {r.get("attributes.`Run Name`") for r in d.execute_script(_ROWS_JS)} == completed)
        headers = dict(browser.execute_script(_HEADERS_JS))
        assert headers.get(f"tags.`{tracking.TAG_EPOCHS}`") == tracking.TAG_EPOCHS, headers
    finally:
        if not shot.exists():
            browser.save_screenshot(str(shot))
        if os.environ.get("MTLSEARCH_DOCS_SCREENSHOT"):  # refresh the docs' copy: MTLSEARCH_DOCS_SCREENSHOT=1
            shutil.copy(shot, Path(__file__).resolve().parents[2] / "docs" / "mlflow_charts.png")
