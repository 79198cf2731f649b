"""The example of a user's own benchmark and method (examples/custom_mtl) end to end: through the
command line, through the Python API, and submitted with ``ray job submit`` to a local two-node head."""

import re
import uuid
from pathlib import Path

from mlflow.tracking import MlflowClient

from mtlsearch.tracking import TAG_KIND, TAG_STATUS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_mtl"
METHOD = "examples/custom_mtl/method.py:SoftMaxWeighting"
TINY = ["--num-samples", "1", "--max-epochs", "2"]


def trial_runs(uri: str, experiment: str = "custom_mtl"):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]


def test_example_through_the_command_line(tmp_path, ray_session, capsys, monkeypatch):
    """The README's command (from the checkout's root), both methods of the space once each."""
    from mtlsearch.launch import main

    monkeypatch.chdir(ROOT)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        [
            "--space",
            "examples/custom_mtl/space.yaml",
            *TINY,
            "--set",
            "searcher.type=random",
            "--set",
            f"params.method.grid=[ew, {METHOD}]",
            "--storage",
            str(tmp_path / "ray"),
            "--tracking-uri",
            uri,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(
        r"Best trials by val/delta_m \(max, value at each trial's last epoch, the mean over its seeds\); 2 trials \(\d completed, \d stopped early by ASHA, 0 errored\):",
        out,
    )
    assert "method.py:SoftMaxWeighting" in out  # the table shows the file, not the whole path
    client, trials = trial_runs(uri)
    methods = sorted(r.data.params["method"] for r in trials)
    assert methods == ["ew", METHOD]  # as the user wrote them, never an absolute machine path
    for run in trials:
        assert run.data.params["benchmark"] == "examples/custom_mtl/tasks.py:WineTasks"
        assert run.data.tags[TAG_STATUS] == "completed"
        # Δm against the references beside the user's module, every epoch
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/delta_m")] == [1, 2]
        assert {"val/cultivar/accuracy", "val/alcohol/mae", "val/color/mae", "test/delta_m"} <= set(run.data.metrics)
        assert ("temperature" in run.data.params) == (run.data.params["method"] != "ew")


def test_example_through_the_python_api(tmp_path, ray_session, monkeypatch):
    import mtlsearch

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from method import SoftMaxWeighting  # a user's classes, imported from their files
    from tasks import WineTasks

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trials = mtlsearch.search(
        "examples/custom_mtl/space.yaml",
        benchmark=WineTasks,
        method=SoftMaxWeighting,
        num_samples=2,
        max_epochs=2,
        params__temperature={"uniform": [0.5, 2.0]},
        tracking_uri=uri,
        storage=str(tmp_path / "ray"),
        name="api",
    )
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    # the classes are stored under the space file's own names for them, not their absolute paths
    assert set(trials["method"]) == {METHOD}
    assert set(trials["benchmark"]) == {"examples/custom_mtl/tasks.py:WineTasks"}
    assert str(ROOT) not in trials.to_csv()
    assert trials["temperature"].between(0.5, 2.0).all() and trials["hidden"].isin([32, 64]).all()
    for column in (
        "trial",
        "epochs",
        "lr",
        "val/delta_m",
        "test/delta_m",
        "val/cultivar/accuracy",
        "best/val/delta_m",
        "best_epoch/val/delta_m",
    ):
        assert column in trials.columns, column
    assert (trials["best/val/delta_m"] >= trials["val/delta_m"]).all()
    assert trials.attrs["metric"] == "val/delta_m"

    again = mtlsearch.load_results("custom_mtl", tracking_uri=uri)
    assert sorted(again["trial"]) == sorted(trials["trial"])
    assert again.set_index("trial")["val/delta_m"].to_dict() == trials.set_index("trial")["val/delta_m"].to_dict()


def test_names_relative_to_the_space_file_are_stored_as_written_and_found_by_the_trials(tmp_path, ray_session, monkeypatch):
    """A space beside the user's files names them ``./tasks.py:...``, launched from another folder: MLflow
    stores those names, and Ray's workers load them through the locations the search hands them."""
    import shutil

    from mtlsearch.launch import main

    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("tasks.py", "method.py", "WineTasks.references.json"):
        shutil.copy(EXAMPLE / name, proj / name)
    text = (EXAMPLE / "space.yaml").read_text().replace("examples/custom_mtl/", "./")
    (proj / "space.yaml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        "--space",
        str(proj / "space.yaml"),
        *TINY,
        "--set",
        "searcher.type=random",
        "--set",
        "params.method.grid=[ew, ./method.py:SoftMaxWeighting]",
    ]
    code = main([*argv, "--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--quiet"])
    assert code == 0
    _, trials = trial_runs(uri)
    assert sorted(r.data.params["method"] for r in trials) == ["./method.py:SoftMaxWeighting", "ew"]
    for run in trials:
        assert run.data.params["benchmark"] == "./tasks.py:WineTasks"
        assert run.data.tags[TAG_STATUS] == "completed"
        assert ("temperature" in run.data.params) == (run.data.params["method"] != "ew")  # when: holds
        assert str(tmp_path) not in repr(run.data.params)


def test_example_submitted_as_a_ray_job_to_a_local_head(cluster, tmp_path):
    """The README's ``ray job submit --working-dir .``: the user's files travel with the working directory,
    and trials on either node find them (and the references beside them) relative to it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job_id = f"mtlsearch-plugins-{uuid.uuid4().hex[:8]}"
    code, out = cluster.submit_job(
        job_id,
        [
            "python",
            "-m",
            "mtlsearch.launch",
            "--space",
            "examples/custom_mtl/space.yaml",
            "--num-samples",
            "2",
            "--max-epochs",
            "2",
            "--set",
            f"params.method={METHOD}",
            "--tracking-uri",
            uri,
            "--storage",
            str(tmp_path / "results"),
            "--storage-is-shared",
            "--name",
            "on_cluster",
        ],
    )
    assert code == 0 and f"Job '{job_id}' succeeded" in out, out[-6000:]
    assert re.search(
        r"Best trials by val/delta_m \(max, value at each trial's last epoch, the mean over its seeds\); 2 trials \(\d completed, \d stopped early by ASHA, 0 errored\):",
        out,
    ), out[-6000:]
    client, trials = trial_runs(uri)
    assert len(trials) == 2
    for run in trials:
        # relative to the job's working directory, which each node holds at its own path
        assert run.data.params["benchmark"] == "examples/custom_mtl/tasks.py:WineTasks"
        assert run.data.params["method"] == METHOD
        assert run.data.tags[TAG_STATUS] == "completed"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/delta_m")] == [1, 2]
