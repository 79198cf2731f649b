"""A real search: local Ray, Optuna + ASHA, MLflow (SQLite) read back after the fact."""

import json
import re
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from mtlsearch import tracking, ui
from mtlsearch.launch import main
from mtlsearch.tracking import PARENT_TAG, TAG_KIND, TAG_STATUS, TAG_TRIAL, trial_run_name

SPACE = """
name: e2e_gemtl
benchmark: multidigits
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 4, max_epochs: 3}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: tpe, seed: 0}
resources: {cpus_per_trial: 1}
params:
  method: gemtl
  p: {uniform: [-1.0, 2.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  batch_size: 128
"""


def _not_progress_or_results(out: str) -> list[str]:
    """Console lines other than progress lines (``[k/N done, ...]``) and the results table."""
    lines, in_table = [], False
    for line in out.splitlines():
        if not line.strip():
            in_table = False
            continue
        if line.startswith("Best trials by "):
            in_table = True
        if not in_table and not re.match(r"\[\d+/\d+ done, \d+ running \| \d+/\d+ epochs", line):
            lines.append(line)
    return lines


def test_search_logs_every_trial_under_its_parent(tmp_path, ray_session, capfd):
    space = tmp_path / "e2e.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri])
    captured = capfd.readouterr()  # file descriptors: Ray's and MLflow's log handlers write there too
    out = captured.out + captured.err
    assert code == 0, out
    assert "Best trials by val/delta_m (max, value at each trial's last epoch, the mean over its seeds)" in out
    assert f"Open the runs in the MLflow UI:\n  python -m mtlsearch ui --tracking-uri {uri} --experiment e2e_gemtl\n" in out
    # A quiet console: no traceback (an ASHA stop is one line of ours), nothing of Ray's, MLflow's or Optuna's.
    assert "Traceback" not in out and "SystemExit" not in out, out
    noise = _not_progress_or_results(out)
    assert len(noise) <= 5, noise
    assert re.search(r"\[4/4 done, 0 running \| \d+/\d+ epochs.*\] \w+ (completed|stopped early by ASHA at epoch \d)", out), out

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("e2e_gemtl")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(TAG_KIND) == "search"]
    trials = [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]
    assert len(parents) == 1 and len(trials) == 4
    parent = parents[0]
    assert parent.data.params["objective_metric"] == "val/delta_m"
    assert parent.data.tags["best_trial_id"] in {t.data.tags[TAG_TRIAL] for t in trials}
    assert "best/val/delta_m" in parent.data.metrics
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id, "space")]
    assert artifacts == ["space/e2e.yaml"]
    # The UI's model-training kind and the search's trial view (tests/e2e/test_browser.py opens one in Chromium).
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    view = json.loads(json.loads(exp.tags[tracking.VIEW_TAG_PREFIX + tracking.trials_view_key(parent.info.run_id)])["state"])
    assert view == tracking.trials_view_state(parent.info.run_id, [["val/delta_m", "max"]], ["p", "lr"])
    assert ui.trials_url(uri, "e2e_gemtl", base_url="http://127.0.0.1:5000") == tracking.trials_url(
        "http://127.0.0.1:5000", exp.experiment_id, parent.info.run_id
    )
    _mtlsearch_ui_serves_the_store(uri, tracking.trials_url("http://127.0.0.1:{port}", exp.experiment_id, parent.info.run_id))

    statuses = set()
    for run in trials:
        assert run.data.tags[PARENT_TAG] == parent.info.run_id
        assert run.info.status == "FINISHED"
        statuses.add(run.data.tags[TAG_STATUS])
        params = run.data.params
        assert -1.0 <= float(params["p"]) <= 2.0 and 1e-3 <= float(params["lr"]) <= 1e-2
        assert params["method"] == "gemtl"
        # Readable in a list, e.g. "gemtl p=0.54 lr=5.9e-3 (1a2b3c4d)".
        assert run.info.run_name == trial_run_name(
            run.data.tags[TAG_TRIAL], {"method": "gemtl", "p": float(params["p"]), "lr": float(params["lr"])}, ["p", "lr"]
        ), run.info.run_name
        # Only the metric names of docs/metrics.md: no pid, timestamps, trial ids or config copies.
        for key in run.data.metrics:
            assert key.split("/")[0] in {"train", "val", "test", "weights"}, key
        epochs = len(client.get_metric_history(run.info.run_id, "val/delta_m"))
        assert epochs >= 1
        for task, metric in (("left", "accuracy"), ("right", "accuracy"), ("number", "mae")):
            for split in ("val", "test"):
                history = client.get_metric_history(run.info.run_id, f"{split}/{task}/{metric}")
                assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, epochs + 1))
            assert len(client.get_metric_history(run.info.run_id, f"train/{task}/loss")) == epochs
    assert statuses <= {"completed", "stopped early by ASHA"} and "completed" in statuses

    # The Optuna study is kept beside the SQLite store, named after the search, and optuna loads it:
    # one trial per Ray trial, the same parameters as MLflow's, its true state (a trial that reached the last
    # epoch COMPLETE with the objective at that epoch as its value, one ASHA stopped PRUNED, issue 22), and
    # every epoch's objective as an intermediate value.
    import optuna

    from mtlsearch import studies

    storage = str(tmp_path / "mlflow-optuna.journal")  # an Optuna journal file (mtlsearch.studies)
    assert parent.data.params["optuna_storage"] == storage and parent.data.params["optuna_study"] == parent.info.run_name
    assert f"{parent.info.run_name} (Optuna study of the same name: optuna-dashboard {storage})" in out
    study = optuna.load_study(study_name=parent.info.run_name, storage=studies.open_storage(storage))
    assert len(study.trials) == 4
    stored = sorted((round(t.params["p"], 12), round(t.params["lr"], 12)) for t in study.trials)
    assert stored == sorted((round(float(r.data.params["p"]), 12), round(float(r.data.params["lr"]), 12)) for r in trials)
    for t in study.trials:
        run = next(r for r in trials if float(r.data.params["p"]) == pytest.approx(t.params["p"], rel=1e-12))
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/delta_m")}
        last = max(history)
        if run.data.tags[TAG_STATUS] == "completed":
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == pytest.approx(history[last])
        else:
            assert t.state == optuna.trial.TrialState.PRUNED and last < 3
        assert t.intermediate_values == pytest.approx(history)

    # The data is built once per search and workers run several trials (trainables.mtl): one cache file
    # in the search's folder, fewer worker processes than trials.
    (folder,) = [d for d in (tmp_path / "ray").iterdir() if d.is_dir()]
    assert [f.name.split("-")[0] for f in (folder / "data_cache").glob("*.pt")] == ["multidigits"]
    pids = {json.loads(line)["pid"] for f in folder.glob("trial_*/result.json") for line in f.read_text().splitlines()}
    assert 1 <= len(pids) < 4, pids


FINAL_SPACE = """
name: e2e_final
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 3, max_epochs: 2}
scheduler: {type: fifo}
searcher: {type: optuna, sampler: random, seed: 1}
final: {seeds: [5, 6], per: method, top: 1}
params:
  method: {choice: [ew, gemtl]}
  p: {uniform: [0.0, 1.0], when: {method: gemtl}}
  lr: {loguniform: [3.0e-3, 3.0e-2]}
"""


def test_final_phase_reruns_best_config_per_method_with_seeds(tmp_path, ray_session, capsys):
    space = tmp_path / "final.yaml"
    space.write_text(textwrap.dedent(FINAL_SPACE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["--space", str(space), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "Mean ± 95% interval over seeds [5, 6] of the best configuration per method, ranked by val/delta_m (max):" in out

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("e2e_final")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TAG_KIND) == "trial"]
    search = [r for r in trials if r.data.tags.get("mtlsearch.phase") != "final"]
    final = [r for r in trials if r.data.tags.get("mtlsearch.phase") == "final"]
    methods = {r.data.params["method"] for r in search}
    assert len(search) == 3 and len(final) == 2 * len(methods)
    for method in methods:
        best = max((r for r in search if r.data.params["method"] == method), key=lambda r: r.data.metrics["val/delta_m"])
        reruns = [r for r in final if r.data.params["method"] == method]
        assert sorted(r.data.params["seed"] for r in reruns) == ["5", "6"]
        assert {r.data.params["lr"] for r in reruns} == {best.data.params["lr"]}
        assert all(len(client.get_metric_history(r.info.run_id, "val/delta_m")) == 2 for r in reruns)


def test_bundled_nyuv2_space_on_generated_data_with_a_relative_data_root(tmp_path, ray_session, capsys, monkeypatch):
    """The bundled ``nyuv2_gemtl_p`` space (dilated ResNet-50 + ASPP heads) end to end on tiny generated
    NYUv2-format data: references beside the data, then a 2-trial search whose ``--data-root`` is
    relative (trials run in their own working directories, so the launcher must pass it on absolute)."""
    from mtlsearch.benchmarks.generate import generate
    from mtlsearch.references.__main__ import main as references_main

    monkeypatch.chdir(tmp_path)
    generate("nyuv2", "data", train=12, test=3, size=(32, 48), seed=0)
    assert (
        references_main(
            [
                "--benchmark",
                "nyuv2",
                "--data-root",
                "data",
                "--epochs",
                "1",
                "--lrs",
                "1e-4",
                "--seeds",
                "0",
                "--batch-size",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        [
            "--space",
            "nyuv2_gemtl_p",
            "--data-root",
            "data",
            "--num-samples",
            "2",
            "--max-epochs",
            "1",
            "--gpus-per-trial",
            "0",
            "--cpus-per-trial",
            "1",
            "--storage",
            str(tmp_path / "ray"),
            "--tracking-uri",
            uri,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"; 2 trials \(\d completed, \d stopped early by ASHA, 0 errored\):", out), out
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("nyuv2_gemtl_p")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TAG_KIND) == "trial"]
    assert len(trials) == 2
    for run in trials:
        assert run.data.params["data_root"] == str(tmp_path / "data")
        assert run.data.params["backbone"] == "resnet50" and run.data.params["method"] == "gemtl"
        for key in ("val/segmentation/miou", "val/depth/abs_err", "val/normal/median", "val/delta_m", "test/delta_m"):
            assert key in run.data.metrics, key


def _mtlsearch_ui_serves_the_store(uri: str, url_form: str) -> None:
    """``mtlsearch ui`` on a local store starts ``mlflow server`` for it, prints the trials' URL and serves
    until stopped; a second one finds that server and only prints the URL; a TERM stops both."""
    import select
    import subprocess
    import sys
    from pathlib import Path

    from helpers import shared_search as shared

    port = shared.free_port()
    cmd = [sys.executable, "-m", "mtlsearch", "ui", "--no-browser", "--tracking-uri", uri, "--port", str(port)]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 240)  # the URL comes once the server answers
        assert ready, "mtlsearch ui printed no URL in 240 s"
        url = proc.stdout.readline().strip()
        assert url == url_form.format(port=port)
        base = f"http://127.0.0.1:{port}"
        assert shared.rest(base, "experiments/get-by-name", params={"experiment_name": "e2e_gemtl"})["experiment"]
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=240)
        assert again.returncode == 0 and again.stdout.strip() == url, again
        assert f"The MLflow UI at {base} serves this store already." in again.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert not shared.listening_addresses(port)  # the server went with it
