"""``perf/search_time.py``: its per-trial accounting splits a trial's time, from the driver's start to
its end, into phases that add up to it (the script itself runs a whole search: not run here)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "perf" / "search_time.py"


def _script():
    spec = importlib.util.spec_from_file_location("search_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trial_phases_add_up_to_the_trials_time():
    st = _script()
    marks = [
        ("enter", 10.5),
        ("imported", 14.0),
        ("data", 16.0),
        ("built", 17.0),
        ("ready", 17.1),
        ("trained", 18.0),
        ("saved", 18.1),
        ("reported", 18.3),  # epoch 1
        ("trained", 19.0),
        ("saved", 19.1),
        ("exit", 19.2),
    ]  # epoch 2, then stopped in its report
    phases = st.trial_phases([{"event": e, "t": t} for e, t in marks], start=10.0, end=20.0)
    assert phases["epochs_n"] == 2
    assert phases["epochs"] == pytest.approx(0.9 + 0.7)  # ready -> trained, reported -> trained
    assert phases["save"] == pytest.approx(0.2) and phases["report"] == pytest.approx(0.2)
    assert phases["start"] == pytest.approx(0.5) and phases["imports"] == pytest.approx(3.5)
    assert phases["data"] == pytest.approx(2.0) and phases["model"] == pytest.approx(1.0)
    assert phases["after"] == pytest.approx(0.9)  # from the last save: the stop and the driver's end
    assert sum(phases[k] for k, _ in st.PHASES) == pytest.approx(10.0)
