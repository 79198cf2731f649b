"""Where a search's time goes: the driver's phases and, per trial, the time before its first epoch, in
epochs, in per-epoch checkpointing and reporting, and after (prints tables).

    python perf/search_time.py [--space gemtl_p] [--num-samples N] [--max-epochs E] [-- LAUNCH ARGS ...]

Runs ``python -m mtlsearch.launch --space SPACE --quiet`` in this process, in a fresh temporary
folder (a new ``mlflow.db`` and ``ray_results``, as on a first run), and prints its results table and then:

* the driver: imports and pre-flight, Ray's start (``ray.init``), the MLflow store's creation with the
  search's parent run, ``Tuner.fit``, and what follows it (results, MLflow, Ray's shutdown);
* the trials, from the timestamps each trial records (``MTLSEARCH_TIMINGS``, see ``trainables.mtl``) and
  the driver's trial start and end (a Tune callback): from the start (Ray's actor is up) to the
  trainable's entry, imports, data, model (and restore), epochs (training and evaluation), the
  checkpoint's save, the report (``tune.report``: the checkpoint's copy into storage and the round trip
  through the driver), and from the last report to the trial's end in the driver; totals, per trial, per
  epoch and the share of the trials' time spent in epochs; the trial slots' time (concurrent trials x
  ``fit()``'s wall time) that no trial held (actors starting, gaps between trials).

The machine's load (``uptime``'s 1-minute average) before and after is in the header: figures are
wall-clock times and move with the load; compare shares and ratios, and measure more than once.
This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T0 = time.time()


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Clock:
    """Wraps functions to record (name, start, end) of each call."""

    def __init__(self):
        self.spans: list[tuple[str, float, float]] = []

    def wrap(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((name, start, time.time()))

        setattr(owner, attr, timed)

    def total(self, name: str) -> float:
        return sum(end - start for n, start, end in self.spans if n == name)

    def first(self, name: str) -> tuple[float, float] | None:
        found = [(s, e) for n, s, e in self.spans if n == name]
        return found[0] if found else None


def make_trial_clock():
    from ray.tune import Callback

    class TrialClock(Callback):
        def __init__(self):
            self.start: dict[str, float] = {}
            self.end: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.start.setdefault(trial.trial_id, time.time())

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.end[trial.trial_id] = time.time()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.end[trial.trial_id] = time.time()

    return TrialClock()


PHASES = [
    ("start", "start -> trainable entered (Ray)"),
    ("imports", "imports (torch, core); gc of the last trial"),
    ("data", "data (build or cache)"),
    ("model", "model, optimizer (+ data if not split)"),
    ("restore", "checkpoint restore"),
    ("epochs", "epochs (train + eval)"),
    ("save", "checkpoint save (per epoch)"),
    ("report", "report (per epoch)"),
    ("after", "last report -> trial end (driver)"),
]


def trial_phases(events: list[dict], start: float, end: float) -> dict[str, float]:
    """Seconds per phase of one trial from its timestamps (all attempts), adding up to end - start."""
    out = dict.fromkeys([p for p, _ in PHASES], 0.0)
    out["epochs_n"] = 0
    prev = start
    last_stamp = start
    for ev in sorted(events, key=lambda e: e["t"]):
        name, t = ev["event"], ev["t"]
        phase = {
            "enter": "start",
            "imported": "imports",
            "data": "data",
            "built": "model",
            "ready": "restore",
            "trained": "epochs",
            "saved": "save",
            "reported": "report",
        }.get(name)
        if phase is None:  # "exit": the teardown counts in "after"
            continue
        out[phase] += t - prev
        if name == "trained":
            out["epochs_n"] += 1
        prev = t
        last_stamp = t
    out["after"] = end - last_stamp
    return out


def fmt_row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def table(header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [fmt_row(header, widths), "  ".join("-" * w for w in widths)]
    lines += [fmt_row(r, widths) for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="gemtl_p")
    parser.add_argument("--num-samples", type=int)
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    parser.add_argument("launch_args", nargs="*", help="more launcher arguments (after --)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="search_time-"))
    timings = work / "timings"
    timings.mkdir()
    os.environ["MTLSEARCH_TIMINGS"] = str(timings)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    sys.path.insert(0, str(ROOT))
    os.chdir(work)
    load_before = load_average()

    launch_argv = ["--space", args.space, "--quiet"]
    if args.num_samples:
        launch_argv += ["--num-samples", str(args.num_samples)]
    if args.max_epochs:
        launch_argv += ["--max-epochs", str(args.max_epochs)]
    launch_argv += args.launch_args

    clock = Clock()
    main_start = time.time()
    from mtlsearch import launch, tracking

    import ray
    from ray import tune

    clock.wrap(ray, "init", "ray.init")
    clock.wrap(ray, "shutdown", "ray.shutdown")
    clock.wrap(tracking.Tracker, "__init__", "mlflow store")
    clock.wrap(tracking.Tracker, "start_search", "mlflow parent run")
    clock.wrap(tune.Tuner, "fit", "fit")
    trials = make_trial_clock()
    imports_done = time.time()
    code = launch.main(launch_argv, callbacks=[trials])
    main_end = time.time()
    load_after = load_average()
    if code != 0:
        print(f"the search exited with {code}", file=sys.stderr)
        return code

    # ---------------------------------------------------------------- the driver
    ray_init = clock.first("ray.init")
    fit = clock.first("fit")
    store = clock.total("mlflow store") + clock.total("mlflow parent run")
    fit_s = fit[1] - fit[0]
    driver = [
        ["python start + imports of this script", f"{main_start - T0:.1f}"],
        ["launcher imports (mtlsearch, ray)", f"{imports_done - main_start:.1f}"],
        ["pre-flight, up to ray.init", f"{ray_init[0] - imports_done:.1f}"],
        ["Ray start (ray.init)", f"{ray_init[1] - ray_init[0]:.1f}"],
        ["MLflow store + parent run", f"{store:.1f}"],
        ["other, up to Tuner.fit", f"{fit[0] - ray_init[1] - store:.1f}"],
        ["Tuner.fit", f"{fit_s:.1f}"],
        ["after fit (results, MLflow, Ray shutdown)", f"{main_end - fit[1]:.1f}"],
        ["  of which ray.shutdown", f"{clock.total('ray.shutdown'):.1f}"],
        ["total (wall)", f"{main_end - T0:.1f}"],
    ]

    # ---------------------------------------------------------------- the trials
    events: dict[str, list[dict]] = {}
    for path in timings.glob("*.jsonl"):
        trial = path.name.rsplit("-", 1)[0]
        events.setdefault(trial, []).extend(json.loads(line) for line in path.read_text().splitlines() if line)
    per_trial = {}
    for trial, start in trials.start.items():
        end = trials.end.get(trial)
        if end is None:
            continue
        per_trial[trial] = trial_phases(events.get(trial, []), start, end)
    warm = sum(1 for evs in events.values() if any(e["event"] == "enter" and e.get("warm") for e in evs))
    pids = {e["pid"] for evs in events.values() for e in evs if e["event"] == "enter"}
    n = len(per_trial)
    epochs_n = sum(p["epochs_n"] for p in per_trial.values())
    trial_total = sum(sum(p[k] for k, _ in PHASES) for p in per_trial.values())
    rows = []
    for key, label in PHASES:
        total = sum(p[key] for p in per_trial.values())
        per_epoch = f"{total / epochs_n:.3f}" if key in ("epochs", "save", "report") and epochs_n else ""
        rows.append([label, f"{total:.1f}", f"{100 * total / trial_total:.0f}%", f"{total / n:.2f}", per_epoch])
    rows.append(["trial time (start -> end)", f"{trial_total:.1f}", "100%", f"{trial_total / n:.2f}", ""])
    slots = max(1, int(os.cpu_count() // float(_cpus_per_trial(args))))
    slot_s = slots * fit_s
    before = [sum(p[k] for k in ("start", "imports", "data", "model", "restore")) for p in per_trial.values()]

    print()
    print(
        f"search_time: --space {args.space}{' ' + ' '.join(launch_argv[3:]) if launch_argv[3:] else ''}; "
        f"{n} trials, {epochs_n} epochs; {os.cpu_count()} CPUs; load average {load_before} before, {load_after} after"
    )
    print(table(["driver", "seconds"], driver))
    print()
    print(table(["trials (sum over trials)", "seconds", "share", "per trial", "per epoch"], rows))
    epochs_total = sum(p["epochs"] for p in per_trial.values())
    print()
    print(
        f"share of trial time in epochs: {100 * epochs_total / trial_total:.0f}%; of the {slots} trial slots x fit() "
        f"= {slot_s:.1f} s: {100 * epochs_total / slot_s:.0f}% in epochs, {slot_s - trial_total:.1f} s held by no trial; "
        f"before the first epoch: median {statistics.median(before):.2f} s per trial; "
        f"{len(pids)} worker processes, {warm} of {len(events)} trial attempts found torch already imported"
    )
    if args.keep:
        print(f"kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def _cpus_per_trial(args) -> float:
    from mtlsearch import spaces

    space = spaces.load_space(args.space, validate=False)
    return float(space.resources.get("cpus_per_trial", 1) or 1)


if __name__ == "__main__":
    sys.exit(main())
