"""The function trainable: build the core from the trial's config, resume, report every epoch.

Faults:

* A crash (an exception, a killed worker process, a lost node) ends the attempt; Ray Tune starts a
  new one from the last reported checkpoint (``--max-failures`` times).  The checkpoint holds the
  trainer's full state (model, optimizer, balancing, RNG, epoch), so the retried attempt reports
  epoch k+1 next, exactly as an uninterrupted run would.
* A checkpoint that cannot be read (:class:`UnreadableCheckpointError`) ends the trial with that reason
  and is not retried either (the launcher's ``mtlsearch.faults`` callback).
* A loss that became NaN/inf (:class:`~mtlsearch.trainer.NonFiniteLossError`) would only come back
  from the same checkpoint, so it is not retrained: Ray Tune 2.60 cannot exempt an exception type from
  ``max_failures`` (``FailureConfig`` has no such filter), so the attempt that meets it leaves a marker
  in the trial's folder and any later attempt of that trial re-raises the same error at once.

Testing aid: with the environment variable ``MTLSEARCH_FAULT_AT_EPOCH=k`` set for the workers, an
attempt that started before epoch k raises :class:`InjectedFault` right after reporting epoch k (so a
retry from that checkpoint succeeds).  Nothing reads it otherwise.  (A test that must act while a trial
runs holds it with a method of its own, as a user's method file: tests/e2e/test_faults.py.)

Data and warm workers: a benchmark's in-memory splits are built once per search, kept in the search's
results folder (``data_cache/``) and in the worker's memory (:mod:`mtlsearch.benchmarks.cache`), and
the launcher lets Ray reuse a trial's worker for the next trial (``reuse_actors``), so a worker
imports torch and loads the data once, not once per trial.

Measuring aid: with ``MTLSEARCH_TIMINGS=FOLDER`` set for the workers, each attempt appends the wall-clock
times of its phases (entered, imports done, data ready, model built, and per epoch: trained,
checkpoint saved, reported) to ``FOLDER/<trial id>-<pid>.jsonl`` (``perf/search_time.py`` reads them).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

from ray import tune

from mtlsearch.errors import first_line

CHECKPOINT_FILE = "state.pt"
NONFINITE_MARKER = "nonfinite_loss.txt"
FAULT_ENV = "MTLSEARCH_FAULT_AT_EPOCH"
TIMINGS_ENV = "MTLSEARCH_TIMINGS"

# A reused worker (the launcher's reuse_actors) first waits for the previous trial's thread to end, 2 s
# by default, else that trial errors with "Could not re-use actor"; on a loaded machine give it longer.
os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")


class UnreadableCheckpointError(RuntimeError):
    """The trial's checkpoint cannot be loaded (corrupted, truncated): a retry from it fails the same way,
    so the launcher does not retry it (``mtlsearch.faults``); the trial's earlier results stay."""


class InjectedFault(RuntimeError):
    """The crash that ``MTLSEARCH_FAULT_AT_EPOCH`` asks for (tests of the retry path)."""


class _Timings:
    """Phase timestamps of one trial attempt (``MTLSEARCH_TIMINGS``); does nothing when it is unset."""

    def __init__(self) -> None:
        folder = os.environ.get(TIMINGS_ENV)
        self.path = None
        if folder:
            trial = tune.get_context().get_trial_id()
            self.path = os.path.join(folder, f"{trial}-{os.getpid()}.jsonl")
            self.mark("enter", pid=os.getpid(), warm="torch" in sys.modules)

    def mark(self, event: str, **extra: Any) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"event": event, "t": time.time(), **extra}) + "\n")


#: Trainers of trials that Ray stopped, kept alive rather than freed in the stopping thread.  When Tune
#: stops a trial (ASHA, or its last epoch), ``tune.report`` raises ``SystemExit`` in the trial's thread
#: and the worker process exits right after without waiting for it; freeing CUDA tensors there, while
#: the interpreter shuts down, aborted the worker on an H200 (``Fatal Python error: Aborted`` in
#: ``pybind11::gil_scoped_acquire``, a ~90-line trace in the driver's log).  A parked trainer is
#: freed with the process, or at the next trial's start if Ray reuses the worker.
_PARKED: list = []


def _search_folder() -> str | None:
    """The search's results folder in Ray's storage when it is a path on this machine (a local disk or a
    shared filesystem), the home of its data cache; None for a cloud storage URI."""
    try:
        import pyarrow.fs

        storage = tune.get_context().get_storage()
        if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem) and os.path.isdir(storage.experiment_fs_path):
            return storage.experiment_fs_path
    except Exception:  # a Ray without this developer API: the worker's memory still caches
        pass
    return None


def _trial_folder() -> str:
    """This trial's folder on this node, the same in a fresh worker and in a reused one: Ray 2.60's
    ``get_trial_dir()`` is the driver staging path in the first and the working directory in the second,
    so a retry in a reused worker would not find the marker its first attempt left."""
    context = tune.get_context()
    try:
        return context.get_storage().trial_driver_staging_path
    except Exception:  # a Ray without this developer API
        return context.get_trial_dir()


def train_mtl(config: dict, plugin_locations: dict[str, str] | None = None) -> None:
    """One trial; ``plugin_locations``: where the search's plugin names are (:func:`mtlsearch.plugins.with_locations`)."""
    timings = _Timings()
    if plugin_locations:
        from mtlsearch.plugins import register_locations

        register_locations(plugin_locations)
    import gc
    import logging

    import ray
    import torch

    from mtlsearch.benchmarks import cache
    from mtlsearch.config import TrialConfig
    from mtlsearch.multiseed import build_trainer
    from mtlsearch.trainer import NonFiniteLossError

    # A reused worker: free the previous trial's state here, on a thread that runs on (a stopped trial's
    # parked trainer, a finished one's reference cycles).  Then what is alive (torch's and Ray's modules,
    # the cached data) stays out of later collections: this one takes milliseconds in a reused worker,
    # not the ~0.3 s of a scan of torch's objects.
    _PARKED.clear()
    gc.collect()
    gc.freeze()
    timings.mark("imported")

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "checkpoint created" line per epoch
    from mtlsearch.console import quiet_trial_exit

    quiet_trial_exit()  # an ASHA stop is one line of the driver's, not a SystemExit report from this worker
    marker = os.path.join(_trial_folder(), NONFINITE_MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            raise NonFiniteLossError(f"{f.read()} (not retrained: the same checkpoint would diverge again)")

    config = dict(config)
    if config.get("device", "auto") == "auto":
        # Trials without a GPU share of their own see every GPU of the node: decide from Ray's assignment.
        config["device"] = "cuda" if ray.get_gpu_ids() else "cpu"
    resources = tune.get_context().get_trial_resources().required_resources
    cpus = resources.get("CPU", 1) or 1
    torch.set_num_threads(max(1, int(cpus)))
    gpus = float(resources.get("GPU", 0) or 0)

    # The benchmark's data, built once per search and reused (mtlsearch.benchmarks.cache).
    trial_config = TrialConfig.from_dict(config)
    splits = cache.load_splits(trial_config, _search_folder())
    timings.mark("data")
    # A fractional GPU (0.25: four trials on one GPU) bounds how much data this trial holds on it.
    # A config of several seeds (budget.seeds) trains them together and reports their mean (mtlsearch.multiseed).
    trainer = build_trainer(trial_config, device_share=gpus if 0 < gpus < 1 else 1.0, splits=splits)
    timings.mark("built")
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            try:
                trainer.load(os.path.join(folder, CHECKPOINT_FILE))
            except Exception as err:  # a pickle/zip/torch error, whatever the damage
                raise UnreadableCheckpointError(
                    f"checkpoint {checkpoint.path} cannot be read ({first_line(err, limit=200)}); "
                    "the trial's earlier epochs are kept, it is not retried"
                ) from None
    fault_at = int(os.environ.get(FAULT_ENV, 0) or 0)
    started_at = trainer.epoch
    timings.mark("ready", epoch=started_at)

    try:
        for result in trainer.run():
            timings.mark("trained", epoch=trainer.epoch)
            with tempfile.TemporaryDirectory() as folder:
                trainer.save(os.path.join(folder, CHECKPOINT_FILE))
                timings.mark("saved")
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
            timings.mark("reported")
            if fault_at and started_at < fault_at == trainer.epoch:
                raise InjectedFault(f"{FAULT_ENV}={fault_at}: crash after epoch {fault_at}")
    except NonFiniteLossError as err:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "w") as f:
            f.write(str(err))
        raise
    except SystemExit:
        _PARKED.append(trainer)  # Ray stops the trial: do not free CUDA state in a dying thread
        raise
    finally:
        timings.mark("exit")
