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

import pytest
import shared_search as shared

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
    url = capsys.readouterr().out.strip().splitlines()[-1]
    assert url.startswith(f"{uri}/#/experiments/{exp_id}/runs?"), url
    assert f"Open the runs in the MLflow UI:\n  {url}\n" in remote_search.output
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
            shutil.copy(shot, Path(__file__).resolve().parent.parent / "docs" / "mlflow_trials.png")
