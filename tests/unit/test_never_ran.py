"""A search stopped before its trials ran is an interrupted search (exit 130 and the resume line), not a
finished one with an empty table: ``runner.never_ran`` counts Ray Tune's results that never reported."""

from ray.tune import Result

from mtlsearch.runner import never_ran


def _result(metrics, error=None):
    return Result(metrics=metrics, checkpoint=None, error=error, path="/nowhere")


def test_pending_trials_count_and_reported_or_failed_ones_do_not():
    pending = _result({"trial_id": "a"})  # what Ray Tune gives a trial that never started
    started = _result({"trial_id": "b", "pid": 7, "time_total_s": 0.0, "config": {}})  # auto-filled only
    reported = _result({"trial_id": "c", "training_iteration": 3, "val/delta_m": 1.0})
    failed = _result({"trial_id": "d"}, error=RuntimeError("diverged"))
    assert never_ran([pending, started, _result(None)]) == 3
    assert never_ran([reported, failed]) == 0
    assert never_ran([reported, failed, pending]) == 1
