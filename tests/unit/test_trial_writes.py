"""The per-trial writes made cheaper (docs/speed.md, "Per-trial cost at scale") lose nothing.

The tracker remembers the runs it wrote (no read-back before a trial's start and end tags, the end tags in
one batch, no lookup of trial runs in a search it has just created); the Optuna searcher remembers the
steps it reported for the trials it asked (no storage read per result) and writes a trial's attributes in
one transaction.  Against a real SQLite MLflow store and a real SQLite Optuna study: everything is there,
a resumed tracker finds the same runs (no duplicates), and a run the tracker marked otherwise in between
ends with the right state.
"""

from __future__ import annotations

import optuna
import yaml

from mtlsearch import optuna_search, spaces, tracking
from mtlsearch.spaces import load_space

SPACE = """
name: writes
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 3, max_epochs: 2}
scheduler: {type: fifo}
searcher: {type: optuna, sampler: random, seed: 0}
params:
  method: gemtl
  p: {uniform: [0.0, 1.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


def _trial(tracker: tracking.Tracker, trial_id: str, config: dict, epochs: int, status: str) -> None:
    tracker.start_trial(trial_id, config)
    for epoch in range(1, epochs + 1):
        tracker.log_result(trial_id, config, {"epoch": epoch, "val/delta_m": -float(epoch), "train/loss": 1.0 / epoch})
    tracker.end_trial(trial_id, config, status, epochs=epochs, time_total_s=1.5, checkpoint="/ckpt" if epochs else None)


def test_every_trial_write_reaches_the_store_and_a_resumed_tracker_adds_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space("gemtl_p")
    search_id = str(tmp_path / "ray" / "writes-1")
    tracker = tracking.Tracker(uri, "writes", search_id, tolerant=False)
    tracker.start_search(space, {})
    configs = {f"t{i}": {"method": "gemtl", "p": 0.1 * (i + 1), "lr": 0.01, "seed": 0} for i in range(3)}
    _trial(tracker, "t0", configs["t0"], 2, tracking.STATUS_COMPLETED)
    _trial(tracker, "t1", configs["t1"], 1, tracking.STATUS_STOPPED)
    tracker.start_trial("t2", configs["t2"])
    tracker.log_result("t2", configs["t2"], {"epoch": 1, "val/delta_m": -1.0})
    tracker.mark_interrupted(["t2"], error="stopped by Ctrl-C")  # written beside the tracker's memory of the run
    tracker.start_trial("t2", configs["t2"])  # started again: RUNNING again, not what the tracker wrote first
    run = tracker.client.get_run(tracker.trial_runs["t2"])
    assert (run.info.status, run.data.tags[tracking.TAG_STATUS]) == ("RUNNING", tracking.STATUS_RUNNING)
    tracker.mark_interrupted(["t2"], error="stopped by Ctrl-C")

    # A resumed search: a new tracker on the same search finds the parent and the trial runs by their tags.
    again = tracking.Tracker(uri, "writes", search_id, tolerant=False)
    again.start_search(space, {})
    assert again.parent_run_id == tracker.parent_run_id
    assert again.log_results("t0", configs["t0"], [{"epoch": 1, "val/delta_m": -1.0}, {"epoch": 2, "val/delta_m": -2.0}]) == 0
    _trial(again, "t2", configs["t2"], 2, tracking.STATUS_COMPLETED)
    assert again.trial_runs == {k: tracker.trial_runs[k] for k in ("t0", "t2")}  # found, not made again

    search = tracking.read_search(uri, "writes")
    assert again.count_search_runs() == 4  # the parent and three trials, none twice
    by_id = {t["trial_id"]: t for t in search["trials"]}
    assert set(by_id) == {"t0", "t1", "t2"}
    expected = {"t0": (tracking.STATUS_COMPLETED, 2), "t1": (tracking.STATUS_STOPPED, 1), "t2": (tracking.STATUS_COMPLETED, 2)}
    for trial_id, (status, epochs) in expected.items():
        trial = by_id[trial_id]
        assert (trial["status"], trial["epochs"], trial["time_total_s"]) == (status, epochs, 1.5), trial
        assert trial["params"]["p"] == configs[trial_id]["p"] and trial["params"]["optimizer"] == "adam"
        history = trial["history"]()["val/delta_m"]
        assert history == [(e, -float(e)) for e in range(1, epochs + 1)], history
        run = again.client.get_run(trial["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags[tracking.PARENT_TAG] == again.parent_run_id
    assert by_id["t0"]["checkpoint"] == "/ckpt"


def test_a_trial_errored_before_its_first_result_ends_failed_with_its_error(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.Tracker(uri, "writes", str(tmp_path / "ray" / "writes-2"), tolerant=False)
    tracker.start_search(load_space("gemtl_p"), {})
    config = {"method": "gemtl", "p": 0.5, "lr": 0.01, "seed": 0}
    tracker.start_trial("e0", config)
    tracker.end_trial("e0", config, tracking.STATUS_ERRORED, error="Traceback ...\nValueError: boom", epochs=0)
    run = tracker.client.get_run(tracker.trial_runs["e0"])
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_STATUS] == tracking.STATUS_ERRORED and run.data.tags[tracking.TAG_ERROR].endswith("boom")
    assert run.data.params["p"] == "0.5"


def test_the_searcher_keeps_every_report_and_attribute_in_a_sqlite_study(tmp_path):
    space = spaces.parse_space(yaml.safe_load(SPACE), "writes.yaml", SPACE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = optuna_search.ResumableOptunaSearch(
        space=space.define_by_run(),
        sampler=optuna_search.make_sampler(space),
        metric=space.metric,
        mode=space.mode,
        storage=optuna.storages.RDBStorage(url),
        study_name="writes",
        max_epochs=space.max_epochs,
    )
    searcher.link_runs({"a": "run-a", "b": "run-b"})
    for trial_id in ("a", "b"):
        assert searcher.suggest(trial_id) is not None
    # The study as Ray's OptunaSearch builds it (Optuna's cache around the RDB storage): one transaction.
    assert optuna_search._set_user_attrs_at_once(searcher._ot_trials["a"], {"probe": 1, optuna_search.ATTR_TRIAL: "a"})
    for epoch in (1, 2):
        searcher.on_trial_result("a", {"val/delta_m": -float(epoch), "training_iteration": epoch})
        searcher.on_trial_result("a", {"val/delta_m": -float(epoch), "training_iteration": epoch})  # a repeat: kept once
    searcher.on_trial_complete("a", {"val/delta_m": -2.0, "training_iteration": 2})
    searcher.on_trial_result("b", {"val/delta_m": -7.0, "training_iteration": 1})
    searcher.on_trial_complete("b", {"val/delta_m": -5.0, "training_iteration": 2})  # stopped on a result not reported

    study = optuna.load_study(study_name="writes", storage=url)  # read back from the file
    a, b = sorted(study.get_trials(deepcopy=False), key=lambda t: t.user_attrs[optuna_search.ATTR_TRIAL])
    assert a.user_attrs["probe"] == 1 and "probe" not in b.user_attrs
    assert a.state == b.state == optuna.trial.TrialState.COMPLETE and (a.value, b.value) == (-2.0, -5.0)
    assert a.intermediate_values == {1: -1.0, 2: -2.0} and b.intermediate_values == {1: -7.0, 2: -5.0}
    for trial, trial_id in ((a, "a"), (b, "b")):
        assert {k: v for k, v in trial.user_attrs.items() if k != "probe"} == {
            optuna_search.ATTR_TRIAL: trial_id,
            optuna_search.ATTR_RUN: f"run-{trial_id}",
            optuna_search.ATTR_EPOCHS: 2,
            optuna_search.ATTR_STATUS: tracking.STATUS_COMPLETED,
        }
