"""MLflow conventions against a real tracking server over HTTP, read back through its REST API.

A real ``mlflow server`` (SQLite backend) on 127.0.0.1, a real search logged to it by the launcher, an
unreachable server at start (one error line, exit 2, before Ray), a server that goes away in the middle
of a (multi-objective) search, and ``report sync`` of Ray's results into MLflow, twice.
"""

from __future__ import annotations

import json
import pickle
import re
import textwrap
import threading
import time

import pytest
from helpers import shared_search as shared
from mlflow.tracking import MlflowClient

from mtlsearch import report, spaces, tracking
from mtlsearch.results import pareto_mask
from mtlsearch.launch import main
from mtlsearch.tracking import (
    PARENT_TAG,
    TAG_CHECKPOINT,
    TAG_EPOCHS,
    TAG_KIND,
    TAG_SEARCH,
    TAG_STATUS,
    TAG_TIME,
    TAG_TRIAL,
)

STATUSES = {tracking.STATUS_COMPLETED, tracking.STATUS_STOPPED}
TASKS = ("scale_1", "scale_10", "scale_100")


def test_server_listens_on_loopback_only(mlflow_server):
    assert shared.listening_addresses(mlflow_server.port) == {"127.0.0.1"}


def test_search_over_http_reads_back_through_rest(remote_search):
    uri = remote_search.uri
    assert remote_search.code == 0, remote_search.output
    runs = shared.search_runs(uri, remote_search.experiment_id)
    parents = [r for r in runs if shared.run_tags(r).get(TAG_KIND) == "search"]
    trials = [r for r in runs if shared.run_tags(r).get(TAG_KIND) == "trial"]
    assert len(parents) == 1 and len(trials) == 4
    parent = parents[0]
    pparams, ptags = shared.run_params(parent), shared.run_tags(parent)
    assert parent["info"]["status"] == "FINISHED"
    assert pparams["objective_metric"] == "val/delta_m" and pparams["objective_mode"] == "max"
    assert pparams["max_epochs"] == "2" and pparams["num_samples"] == "4" and pparams["benchmark"] == "synthetic"
    assert ptags["version.mlflow"] and ptags["version.ray"] and ptags[TAG_SEARCH] == str(remote_search.results_dir)
    listing = shared.rest(uri, "artifacts/list", params={"run_id": parent["info"]["run_id"], "path": "space"})
    assert [f["path"] for f in listing["files"]] == ["space/remote_small.yaml"]

    finals = {}
    for run in trials:
        tags, params, metrics = shared.run_tags(run), shared.run_params(run), shared.run_metrics(run)
        run_id = run["info"]["run_id"]
        assert tags[PARENT_TAG] == parent["info"]["run_id"] and run["info"]["status"] == "FINISHED"
        # Params: the full validated config, defaults included.
        for key in ("method", "optimizer", "lr", "seed", "benchmark", "batch_size", "max_epochs"):
            assert key in params, key
        assert params["optimizer"] == "adam" and params["benchmark"] == "synthetic" and params["seed"] in {"0", "1"}
        assert ("p" in params) == (params["method"] == "gemtl")
        # Status, epochs, time and checkpoint tags agree with each other and with the metric history.
        epochs = int(tags[TAG_EPOCHS])
        assert tags[TAG_STATUS] == (tracking.STATUS_COMPLETED if epochs == 2 else tracking.STATUS_STOPPED)
        assert float(tags[TAG_TIME]) > 0
        checkpoint = tags[TAG_CHECKPOINT]
        assert checkpoint.startswith(str(remote_search.results_dir / f"trial_{tags[TAG_TRIAL]}" / "checkpoint_"))
        assert (remote_search.results_dir / checkpoint.split(str(remote_search.results_dir) + "/")[1]).is_dir()
        for key in metrics:
            assert key.split("/")[0] in {"train", "val", "test", "weights"}, key
        for task in TASKS:
            history = shared.metric_history(uri, run_id, f"val/{task}/mse")
            assert [s for s, _ in history] == list(range(1, epochs + 1))
        if tags[TAG_STATUS] == tracking.STATUS_COMPLETED:  # a stopped trial's partial value never outranks a final one
            finals[tags[TAG_TRIAL]] = metrics["val/delta_m"]
    assert ptags["best_trial_id"] == max(finals, key=finals.get)
    assert shared.run_metrics(parent)["best/val/delta_m"] == pytest.approx(max(finals.values()))
    assert re.fullmatch(r"\d+ trials \(\d+ completed, \d+ stopped early by ASHA, 0 errored\)", ptags["trial_counts"]), ptags


SPACE_FOR_TRACKER = {
    "name": "dup",
    "benchmark": "synthetic",
    "budget": {"num_samples": 1, "max_epochs": 3},
    "params": {"method": "gemtl", "p": 0.5, "lr": 0.01},
}


def test_tracker_logs_the_same_trial_twice_into_one_run(tmp_path, monkeypatch):
    """A re-run / resume with the same search id finds its runs by tags and skips logged epochs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    space = spaces.parse_space(SPACE_FOR_TRACKER, "dup.yaml", "name: dup\n")
    config = {"benchmark": "synthetic", "max_epochs": 3, "method": "gemtl", "p": 0.5, "lr": 0.01}
    epoch = lambda e: {"epoch": e, "val/delta_m": -10.0 * e, "val/scale_1/mse": 1.0 / e, "pid": 1234, "time_total_s": e}

    first = tracking.Tracker(uri, "dup", "/results/dup-1", tolerant=False)
    first.start_search(space, {})
    first.start_trial("t1", config)
    first.log_result("t1", config, epoch(1))
    first.log_result("t1", config, epoch(2))
    first.log_result("t1", config, epoch(2))  # the same epoch twice in one session

    second = tracking.Tracker(uri, "dup", "/results/dup-1", tolerant=False)  # a resumed search
    second.start_search(space, {})
    second.start_trial("t1", config)
    second.log_result("t1", config, {**epoch(2), "val/delta_m": 99.0})  # re-reported after a restore
    second.log_result("t1", config, epoch(3))
    second.end_trial("t1", config, tracking.STATUS_COMPLETED, epochs=3, time_total_s=3.0)
    second.start_trial("t2", config)
    second.end_trial("t2", config, tracking.STATUS_ERRORED, error="Traceback ...\nValueError: boom", epochs=0)
    second.end_search(None)

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dup")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags[TAG_KIND] for r in runs) == ["search", "trial", "trial"]
    trial = next(r for r in runs if r.data.tags.get(TAG_TRIAL) == "t1")
    failed = next(r for r in runs if r.data.tags.get(TAG_TRIAL) == "t2")
    assert failed.info.status == "FAILED" and failed.data.tags[TAG_STATUS] == "errored"
    assert failed.data.tags["error"].endswith("ValueError: boom")
    history = sorted((m.step, m.value) for m in client.get_metric_history(trial.info.run_id, "val/delta_m"))
    assert history == [(1, -10.0), (2, -20.0), (3, -30.0)]
    assert "pid" not in trial.data.metrics and trial.data.tags[TAG_STATUS] == "completed"
    assert trial.data.params["optimizer"] == "adam" and trial.data.params["seed"] == "0"  # defaults logged
    # Artifacts of a SQLite store live beside the database, not in the working directory.
    assert (tmp_path / "store" / "mlruns").is_dir() and not (tmp_path / "mlruns").exists()


def test_unreachable_server_is_one_error_line_before_ray(tmp_path, capsys):
    port = shared.free_port()  # nothing listens there
    space = tmp_path / "s.yaml"
    space.write_text(textwrap.dedent(shared.SPACE_SINGLE))
    code = main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: --tracking-uri: MLflow tracking server ")
    assert f"http://127.0.0.1:{port} is unreachable" in err[0]
    assert not (tmp_path / "ray").exists()  # refused before Ray started: no results folder


def _dump(client: MlflowClient, experiment: str, search_id: str) -> dict:
    """Everything a user sees of a search in MLflow, keyed by trial id."""
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id], f"tags.`{TAG_SEARCH}` = '{search_id}'"):
        tags = {
            k: v for k, v in run.data.tags.items() if not k.startswith(("mlflow.", "version.", "git_commit")) and k not in ("best_run_id",)
        }
        key = tags.get(TAG_TRIAL, "search")
        history = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics}
        out[key] = {
            "params": dict(run.data.params),
            "tags": tags,
            "metrics": history,
            "status": run.info.status,
            "end_time": run.info.end_time,
        }
    return out


def test_sync_into_an_empty_store_reproduces_the_runs_and_twice_changes_nothing(remote_search, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'copy.db'}"
    args = ["sync", "--results", str(remote_search.results_dir), "--tracking-uri", uri]
    assert report.main(args) == 0
    assert "5 runs created" in capsys.readouterr().out  # the parent and 4 trials

    original = _dump(MlflowClient(tracking_uri=remote_search.uri), "remote_small", str(remote_search.results_dir))
    copy = _dump(MlflowClient(tracking_uri=uri), "remote_small", str(remote_search.results_dir))
    assert set(copy) == set(original) and len(copy) == 5
    for key in original:
        for part in ("params", "tags", "metrics", "status"):
            assert copy[key][part] == original[key][part], (key, part)

    assert report.main(args) == 0
    assert "0 runs created, 0 metric values written" in capsys.readouterr().out
    assert _dump(MlflowClient(tracking_uri=uri), "remote_small", str(remote_search.results_dir)) == copy


SPACE_MULTI = """
name: mo_small
benchmark: synthetic
objective: {metrics: tasks}        # val/scale_1/mse, val/scale_10/mse, val/scale_100/mse, all minimised
budget: {num_samples: 3, max_epochs: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
resources: {cpus_per_trial: 1}
params:
  method: gemtl
  p: {uniform: [-1.0, 2.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  batch_size: 128
"""


def test_multi_objective_search_survives_a_tracking_outage_and_resyncs(tmp_path, ray_session, mlflow_server, capsys):
    """Multi-objective (Optuna over every task metric, FIFO) logged through a proxy that goes away after
    the first trial result: the search finishes, says so once, and ``report sync`` completes MLflow."""
    proxy = shared.TcpProxy(mlflow_server.port)
    space = tmp_path / "mo_small.yaml"
    space.write_text(textwrap.dedent(SPACE_MULTI))
    cut = threading.Event()

    def cut_after_first_result():
        deadline = time.time() + 300
        while time.time() < deadline and not cut.is_set():
            try:
                exp = shared.rest(mlflow_server.uri, "experiments/get-by-name", params={"experiment_name": "mo_small"})
                runs = shared.search_runs(mlflow_server.uri, exp["experiment"]["experiment_id"], f"tags.`{TAG_KIND}` = 'trial'")
                if any("val/delta_m" in shared.run_metrics(r) for r in runs):
                    proxy.stop()
                    cut.set()
                    return
            except OSError:  # the experiment does not exist yet
                pass
            time.sleep(0.3)

    watcher = threading.Thread(target=cut_after_first_result, daemon=True)
    watcher.start()
    code = main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", proxy.uri, "--name", "mo"])
    watcher.join(timeout=5)
    out, err = capsys.readouterr()
    assert cut.is_set(), "the proxy was never cut: the outage was not exercised"
    assert code == 0, out + err
    assert len(re.findall(r"^warning: MLflow at ", err, flags=re.M)) == 1, err
    assert "warning: MLflow was unreachable from" in err and "python -m mtlsearch.report sync --results" in err

    results = tmp_path / "ray" / "mo"
    search = report.load_results(results)
    assert len(search.trials) == 3 and all(t.status == tracking.STATUS_COMPLETED for t in search.trials)  # FIFO
    objectives = [(f"val/{t}/mse", "min") for t in TASKS]
    assert search.objectives == objectives
    # Optuna searched all three metrics at once.
    state = pickle.loads(next(results.glob("searcher-state-*.pkl")).read_bytes())
    assert len(state["_ot_study"].directions) == 3
    # The Pareto set printed by the launcher is the non-dominated set of the trials' final metrics.
    table = out.split("Pareto set on ")[1]
    printed = set(re.findall(r"^([0-9a-f]{8}) ", table, flags=re.M))
    mask = pareto_mask([[t.final[m] for m, _ in objectives] for t in search.trials], ["min"] * 3)
    assert printed == {t.trial_id for t, keep in zip(search.trials, mask) if keep} and printed

    # MLflow missed the end of the search; sync (straight to the server) completes it.
    exp_id = shared.rest(mlflow_server.uri, "experiments/get-by-name", params={"experiment_name": "mo_small"})["experiment"][
        "experiment_id"
    ]
    parent = next(r for r in shared.search_runs(mlflow_server.uri, exp_id) if shared.run_tags(r).get(TAG_KIND) == "search")
    assert parent["info"]["status"] == "RUNNING"
    assert report.main(["sync", "--results", str(results), "--tracking-uri", mlflow_server.uri]) == 0
    runs = shared.search_runs(mlflow_server.uri, exp_id)
    parent = next(r for r in runs if shared.run_tags(r).get(TAG_KIND) == "search")
    trials = [r for r in runs if shared.run_tags(r).get(TAG_KIND) == "trial"]
    assert parent["info"]["status"] == "FINISHED" and len(trials) == 3
    ptags, pparams = shared.run_tags(parent), shared.run_params(parent)
    assert set(ptags["pareto_trial_ids"].split()) == printed
    assert json.loads(pparams["objective_metrics"]) == [m for m, _ in objectives]
    for run in trials:
        assert shared.run_tags(run)[TAG_STATUS] == tracking.STATUS_COMPLETED and run["info"]["status"] == "FINISHED"
        for task in TASKS:
            history = shared.metric_history(mlflow_server.uri, run["info"]["run_id"], f"val/{task}/mse")
            assert [s for s, _ in history] == [1, 2]
