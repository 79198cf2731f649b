"""perf/overhead.py's bare child as a real process (the scripts' other tests: tests/unit/test_perf_scripts.py)."""

import json
import subprocess
import sys

from helpers import ROOT

PERF = ROOT / "perf"


def test_bare_child_times_every_epoch(tmp_path):
    config = {
        "benchmark": "multidigits",
        "method": "gemtl",
        "p": 1.0,
        "lr": 0.003,
        "optimizer": "adam",
        "batch_size": 64,
        "seed": 0,
        "max_epochs": 2,
    }
    out = subprocess.run(
        [sys.executable, str(PERF / "overhead.py"), "--bare-config", json.dumps(config), "--bare-nice", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(child["epochs_at"]) == 2 and child["epochs_at"][1] > child["epochs_at"][0]
    assert child["nice"] >= 5  # the Ray worker's priority, as asked
    assert not list(tmp_path.iterdir())  # nothing written where it ran
