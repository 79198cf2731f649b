"""What the launcher does when a search goes wrong after the pre-flight passed.

* :func:`no_retry_after_nonfinite`: a Ray Tune callback that lets a trial whose loss became NaN/inf
  be retried at most once more (the retry re-raises at once from the trial's marker, see
  ``trainables.mtl``), even with ``--max-failures -1`` (retry forever), so such a trial ends ERRORED
  and the search finishes.
* :func:`all_errored`: a search in which every trial errored ends FAILED in MLflow, prints one
  summary of the distinct errors and exits non-zero.
* :func:`end_runs_failed`: a start that failed after MLflow runs were created (an exception out of
  Ray Tune, Ctrl-C while it starts) ends those runs FAILED rather than leaving them RUNNING.
* :class:`StartError`: a local Ray or an MLflow store that fails while the search starts is one line
  (exit 1), with the runs already created ended FAILED.
* :func:`claim_folder`: two searches started in the same second get different folders.
* :class:`StorageWatch`: results that cannot be saved while the search runs (a full disk, a storage
  folder made read-only) end the search the way SIGTERM does: the launcher stops the trials, marks the
  runs, says where, why and what to do, prints the resume command and exits 1.
* :class:`StopWatchdog`: after SIGTERM/Ctrl-C the launcher waits a bounded time for Ray Tune's own
  stop; when Ray itself was signalled too (a job scheduler signals the whole process group, so the
  local Ray's GCS and raylet die with the driver's request) Tune would wait a minute for the GCS;
  the watchdog then marks the runs, prints the resume command and exits 130.  Ray Tune saved the
  search's state at most ``TUNE_GLOBAL_CHECKPOINT_S`` before, so ``--resume`` continues from there.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ray.tune import Callback, ResultGrid
    from ray.tune.experiment import Trial

    from mtlsearch.spaces import SearchSpace
    from mtlsearch.tracking import Tracker

EXIT_ALL_ERRORED = 1
EXIT_START_FAILED = 1
EXIT_STORAGE_FAILED = 1


class StartError(RuntimeError):
    """The search could not start for a reason that is not the user's input (a local Ray that did not
    come up, an MLflow store that failed): one line on stderr and exit code 1, no traceback."""


STOP_TIMEOUT_ENV = "MTLSEARCH_STOP_TIMEOUT_S"
#: Errors a retry from the same checkpoint would meet again (their class names, as Ray reports them).
NOT_RETRIED = ("NonFiniteLossError", "UnreadableCheckpointError")


def no_retry_after_nonfinite() -> Callback:
    """A callback: a trial that failed with a non-finite loss or an unreadable checkpoint gets no retry
    beyond the one Ray already started (which re-raises at once)."""
    from ray.tune import Callback

    class NoRetryAfterNonFinite(Callback):
        def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
            error_file = getattr(trial, "error_file", None)
            try:
                text = Path(error_file).read_text() if error_file else ""
            except OSError:
                return
            last = text.rsplit("Failure #", 1)[-1]
            if any(name in last for name in NOT_RETRIED):
                # Trial.should_recover(): num_failures <= max_failures or max_failures < 0.  The retry now
                # under way re-raises at once from the marker; the next failure then ends the trial.
                trial.max_failures = trial.run_metadata.num_failures

    return NoRetryAfterNonFinite()


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (Ray colours the tracebacks it saves in a trial's error file)."""
    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)


def error_line(error: Any) -> str:
    """The last ``Type: message`` line of a trial's error (Ray wraps it in a traceback)."""
    text = str(error)
    found = re.findall(r"^\s*((?:[\w.]+\.)?\w*(?:Error|Exception|Interrupt|Fault)\b.*)$", text, re.M)
    line = found[-1].strip() if found else (text.strip().splitlines() or [type(error).__name__])[-1]
    line = re.sub(r"^(?:[a-z_]+\.)+", "", line)  # mtlsearch.trainer.NonFiniteLossError -> NonFiniteLossError
    return re.sub(r" \([^()]*\)$", "", line)[:300]  # the trial's own values, e.g. "(method=ew, lr=100.0)"


def all_errored(tracker: Tracker, grid: ResultGrid, space: SearchSpace) -> int:
    """Every trial errored: MLflow's parent run FAILED, one summary line per distinct error, exit 1."""
    # ResultGrid iterates through __getitem__/__len__; Ray's class declares no __iter__ for type checkers.
    counts = Counter(error_line(r.error) for r in grid if r.error is not None)  # type: ignore[attr-defined]
    tracker.end_search(None, status="FAILED")
    print(
        f"error: all {len(grid)} trials of the search errored; nothing to rank. Errors ({', '.join(f'{n} x' for n in counts.values())}):",
        file=sys.stderr,
    )
    for line, n in counts.most_common():
        print(f"  {n} x {line}", file=sys.stderr)
    print(
        f"Each trial's traceback: its error.txt under the Ray results and tag 'error' of its MLflow run "
        f"(experiment {tracker.experiment!r}).",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_ALL_ERRORED


def end_runs_failed(tracker: Tracker | None, reason: str) -> None:
    """Best effort: the search's runs still RUNNING (a start that failed) end FAILED with ``reason``."""
    if tracker is None:
        return
    try:
        tracker.fail_running_runs(reason)
    except Exception as err:  # MLflow itself may be what failed
        print(f"warning: could not mark the search's MLflow runs FAILED ({type(err).__name__}: {err})", file=sys.stderr, flush=True)


class StopWatchdog:
    """Armed by the first SIGTERM/SIGINT: if Ray Tune has not stopped within the timeout, run
    ``on_stuck`` (mark runs, print the resume command) and leave with exit code 130."""

    def __init__(self, on_stuck: Callable[[], int], timeout_s: float | None = None):
        self.on_stuck = on_stuck
        self.timeout_s = float(os.environ.get(STOP_TIMEOUT_ENV) or 15) if timeout_s is None else timeout_s
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def arm(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._watch, daemon=True, name="mtlsearch-stop-watchdog")
            self.thread.start()

    def disarm(self) -> None:
        self.done.set()

    def _watch(self) -> None:
        if self.done.wait(self.timeout_s):
            return
        print(
            f"\nRay did not stop within {self.timeout_s:g} s ({STOP_TIMEOUT_ENV}; its processes were probably "
            "signalled too); stopping without it.",
            file=sys.stderr,
            flush=True,
        )
        code = 130
        try:
            code = self.on_stuck()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


LOCK_FILE = ".mtlsearch.lock"


def claim_folder(storage: Path, name: str, *, numbered: bool) -> tuple[str, IO[str]]:
    """Claim ``storage/name`` for this driver: ``(name, lock)``; keep ``lock`` open while the search runs.

    The claim is an exclusive ``flock`` on a file in the folder (released by the kernel when the process
    ends, however it ends), so two searches, or two ``--resume`` of one, never run in one folder at once.
    A new search with a default (timestamped) name, ``numbered``, whose folder another search made in the
    same second gets ``name-2``, ``-3``, ...; an explicit ``--name`` in use is refused."""
    import fcntl

    from mtlsearch.errors import ConfigError

    storage.mkdir(parents=True, exist_ok=True)
    for i in range(1, 100):
        candidate = name if i == 1 else f"{name}-{i}"
        folder = storage / candidate
        try:
            folder.mkdir()
        except FileExistsError:
            if numbered:
                continue
        lock = open(folder / LOCK_FILE, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            if numbered:
                continue
            raise ConfigError(
                f"another search is running in {folder} right now; wait for it to end or choose another --name", field="--name"
            ) from None
        return candidate, lock
    raise StartError(f"no free search folder {name}-N under {storage}")


#: Errors that mean the search's results cannot be saved (not a trial's own fault).
STORAGE_ERRNOS = {"ENOSPC": "no space left on the device", "EDQUOT": "the disk quota is used up", "EROFS": "the file system is read-only"}
#: The same as they appear in a trial's error text (its checkpoint could not be written).
_STORAGE_TEXTS = {
    "No space left on device": "ENOSPC",
    "Disk quota exceeded": "EDQUOT",
    "Read-only file system": "EROFS",
}
STORAGE_CHECK_S = 2.0


class StorageWatch:
    """A Ray Tune callback watching the search's folder on a local (or mounted) disk: every
    ``STORAGE_CHECK_S`` seconds of the driver's loop, and at once when a trial errors, it writes and
    removes a small file there.  When that fails because the disk is full or the folder cannot be
    written (or a trial's error says so), it records why in :attr:`failure` and calls ``stop`` once
    (the launcher's SIGTERM path: Ray Tune stops the trials and the launcher reports)."""

    def __init__(self, folder: Path, stop: Callable[[], None], check_s: float = STORAGE_CHECK_S):
        from ray.tune import Callback

        self.folder = Path(folder)
        self.stop = stop
        self.check_s = check_s
        self.failure: str | None = None  # "the file system is read-only (EROFS) at PATH"
        self.failed_trials: set[str] = set()
        self._next = 0.0
        watch = self

        class _Callback(Callback):
            def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
                watch.check()

            def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
                watch.trial_errored(trial)

            def __reduce__(self) -> tuple[Callable[[], Callback], tuple[()]]:
                # Ray Tune pickles a Tuner's callbacks with its state; this one holds the launcher's stop
                # (a lock, a signal handler) and only means something in this driver: an inert one instead.
                return (_inert_callback, ())

        self.callback = _Callback()

    def probe(self) -> str | None:
        """Why the folder cannot take new results now, or None."""
        import errno
        import time

        path = self.folder / f".mtlsearch-write-check-{os.getpid()}"
        try:
            with open(path, "wb") as f:
                f.write(b"x" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            name = errno.errorcode.get(err.errno or 0, "")
            if name in STORAGE_ERRNOS or name in ("EACCES", "EPERM"):
                why = STORAGE_ERRNOS.get(name, "the folder cannot be written (permission denied)")
                return f"{why} ({name}: {err.filename or self.folder})"
            return None  # another problem (the folder removed, ...): Ray reports its own
        finally:
            self._next = time.monotonic() + self.check_s
            try:
                path.unlink()
            except OSError:
                pass
        return None

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            _quiet_expected_storage_errors()
            self.stop()

    def check(self) -> None:
        import time

        if self.failure is None and time.monotonic() >= self._next:
            why = self.probe()
            if why:
                self._fail(why)

    def trial_errored(self, trial: Trial) -> None:
        """A trial errored: a failure to save (its error says so, or the folder fails the probe now)
        ends the search; the trial counts as one that failed to save."""
        if self.failure is not None:
            self.failed_trials.add(trial.trial_id)
            return
        error_file = getattr(trial, "error_file", None)
        text = ""
        try:
            text = Path(error_file).read_text() if error_file else ""
        except OSError:
            pass
        why = self.probe() or _storage_error(text, f"seen by trial {trial.trial_id}")
        if why:
            self.failed_trials.add(trial.trial_id)
            self._fail(why)

    def explain(self, err: BaseException) -> str | None:
        """An exception out of Ray Tune (writing a trial's error file or its state on the failed storage):
        the storage failure it stands for, recorded in :attr:`failure`, or None for any other exception."""
        if self.failure is None:
            why = self.probe() or _storage_error(f"{type(err).__name__}: {err}", "seen by Ray Tune")
            if why:
                self.failure = why
                _quiet_expected_storage_errors()
        return self.failure


def _storage_error(text: str, where: str) -> str | None:
    """The storage failure an error's text reports ("No space left on device", ...), or None."""
    for needle, name in _STORAGE_TEXTS.items():
        if needle in text:
            return f"{STORAGE_ERRNOS[name]} ({name}, {where})"
    return None


def _quiet_expected_storage_errors() -> None:
    """Once the launcher knows the storage failed (and says so in one message): Ray's tracebacks of the
    same failure (its experiment state not saved, the stopped trials' failed checkpoints reported as
    "Unhandled error") are dropped from the console; other errors still show."""
    import logging

    class Expected(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            text = record.getMessage()
            return not (text.startswith("Unhandled error") or text.startswith("Saving experiment state"))

    for name in ("ray._private.worker", "ray.tune.execution.experiment_state"):
        logger = logging.getLogger(name)
        if not any(type(f).__name__ == "Expected" for f in logger.filters):
            logger.addFilter(Expected())


def _inert_callback() -> Callback:
    """What a pickled :class:`StorageWatch` callback becomes (a resumed search makes its own)."""
    from ray.tune import Callback

    return Callback()
