"""The MLflow UI of a finished small search, in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium): the trial runs are there with their p and Δm.

Nothing is skipped: without chromium the test fails (``.ci/run`` installs it).  The UI is a React app,
so every check waits explicitly for the element it reads.
"""
from __future__ import annotations

import json
import shutil
import urllib.parse

import pytest
import shared_search as shared

from mtlsearch.tracking import TAG_KIND, TAG_TRIAL

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,1200"]


@pytest.fixture
def browser(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, ("headless Chromium is required: apt-get install -y chromium chromium-driver "
                                 "(.ci/run installs them)")
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
