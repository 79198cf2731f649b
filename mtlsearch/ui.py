"""``mtlsearch ui``: open a search's trial comparison in the MLflow UI.

The URL (:func:`mtlsearch.tracking.trials_url`) lands on the search's experiment in the UI's model-training
mode, in its chart view, on a saved view that the launcher wrote when the search started: the trial runs
(not collapsed under the parent run, every one plotted), sorted by the objective, with the method, the
searched parameters, the objective(s), the epochs and the trial status as columns, and charts of the
objective against each searched parameter, parallel coordinates and a contour over two numeric
parameters.  A second saved view holds the completed trials only; the lines printed under the URL
give the table's URL, the completed trials' and the way back to the model-training navigation.  For a search logged by an earlier version the view is
written here (its columns: the parameters whose values differ between the trials).

On a tracking server (``--tracking-uri http://...``) the command prints the URL and opens it.  On a local
store (a SQLite file) it starts ``mlflow server`` for that store on ``--host``/``--port`` and serves until
Ctrl-C, or reuses a server already there for the same store.

``mtlsearch ui --optuna`` opens the search's Optuna study instead (the optional extra ``dashboard``:
``pip install 'mtlsearch[dashboard]'``): it starts ``optuna-dashboard`` on the study's storage (the
parent run's ``optuna_storage`` param: a journal file beside the MLflow store, or ``--optuna-storage`` /
``$MTLSEARCH_OPTUNA_STORAGE``) on ``--host`` and a free port (or ``--port``), prints the study's URL and
serves until Ctrl-C.  Each trial there carries the user attributes ``mlflow_run_id``, ``ray_trial_id``,
``epochs`` and ``status`` (:mod:`mtlsearch.optuna_search`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import Any, Sequence

from mtlsearch import tracking
from mtlsearch.errors import ConfigError

EXIT_BAD_INPUT = 2
#: The MLflow UI's port when ``--port`` is not given (``--optuna`` takes a free one).
DEFAULT_PORT = 5000
#: Where the study's database may be named (as for the launcher, :data:`mtlsearch.studies.STORAGE_ENV`).
DASHBOARD_STORAGE_ENV = "MTLSEARCH_OPTUNA_STORAGE"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mtlsearch ui",
        description="Open a search's trial comparison in the MLflow UI: its trial runs with the method, the searched "
        "parameters and the objective as columns, sorted by the objective.",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="the MLflow store of the search (default: MLFLOW_TRACKING_URI, else sqlite:///$PWD/mlflow.db, as the launcher)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--experiment", help="the search's MLflow experiment (default: that of the latest search in the store)")
    which.add_argument("--space", help="the search space NAME or PATH the search ran (its experiment is the space's name)")
    p.add_argument("--host", default="127.0.0.1", help="where a local store's UI server listens (default: %(default)s)")
    p.add_argument("--port", type=int, default=None, help="its port (default: 5000; with --optuna a free port)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only, do not open a browser")
    p.add_argument(
        "--optuna",
        action="store_true",
        help="open the search's Optuna study in optuna-dashboard instead (pip install 'mtlsearch[dashboard]')",
    )
    p.add_argument(
        "--optuna-storage",
        default=None,
        help="the study's database, as given to the launcher (default: the one the search recorded in its MLflow "
        f"parent run; ${DASHBOARD_STORAGE_ENV} where that URL hides a password)",
    )
    return p


# ------------------------------------------------------------------------------------ the search
def trials_url(tracking_uri: str, experiment: str | None = None, base_url: str | None = None) -> str:
    """The URL of the trial comparison of ``experiment``'s latest search (the store's latest search if
    None) on the UI at ``base_url`` (default: the tracking server itself); writes the view if missing."""
    client = tracking.open_store(tracking_uri)
    exp, parent = tracking.find_search(client, experiment)
    tracking.ensure_trials_view(client, exp, parent)
    base = base_url or tracking_uri
    return tracking.trials_url(base, exp.experiment_id, parent.info.run_id)


# ------------------------------------------------------------------------------------ the server
def check_port_free(host: str, port: int) -> None:
    """The server can listen on ``host:port``: refuse a port another program holds (one that does not
    answer HTTP, which :func:`mtlsearch.tracking.serves_store` cannot tell from a free port) before ``mlflow server`` starts."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise ConfigError(f"cannot listen on {host!r} ({err}); give an address of this machine, e.g. 127.0.0.1", field="--host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is in use by another program (not an MLflow server of this store); pass another --port",
                    field="--port",
                ) from None
            if err.errno == errno.EACCES:
                raise ConfigError(f"port {port} needs privileges to listen on; pass a port above 1023", field="--port") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); give an address of this machine", field="--host") from None


def _open(url: str, no_browser: bool, help_lines: Sequence[str] = ()) -> None:
    print(url, flush=True)
    for line in help_lines:  # on stderr: stdout holds the URL alone, for scripts
        print(f"  {line}", file=sys.stderr, flush=True)
    if not no_browser:
        import webbrowser

        webbrowser.open(url)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session (``start_new_session``) and whatever it started."""
    import os
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _serve(proc: subprocess.Popen, ready: Any) -> None:
    """Wait for ``proc`` (a server) until it exits or Ctrl-C / SIGTERM, after ``ready()`` (which waits
    for it and prints its URL); stop it on the way out."""
    import signal

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # a TERM stops the server too (it runs in its own session)
    try:
        ready()
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop(proc)


# ------------------------------------------------------------------------------------ optuna-dashboard
def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` now (the kernel's choice)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def study_of(parent_params: dict[str, str], flag: str | None, experiment: str) -> tuple[str, str]:
    """``(storage URL, study name)`` of a search from its parent run's params; ``flag`` (else
    ``$MTLSEARCH_OPTUNA_STORAGE``) names the database instead, e.g. where the stored URL hides a password."""
    import os

    from mtlsearch import studies

    name = parent_params.get("optuna_study")
    if not name:
        raise ConfigError(
            f"the latest search of experiment {experiment!r} kept no Optuna study (its searcher is not optuna, or it "
            "ran with an in-memory study); open its trials with `mtlsearch ui`",
            field="--optuna",
        )
    stored = parent_params.get("optuna_storage") or ""
    url = flag or (stored if ":***@" not in stored else os.environ.get(DASHBOARD_STORAGE_ENV)) or stored
    if ":***@" in url:
        raise ConfigError(
            f"the search's study database {url} needs its password: pass --optuna-storage with the full URL",
            field="--optuna-storage",
        )
    studies.check_url(url, "--optuna-storage")
    return url, name


def dashboard_command(storage: str, host: str, port: int) -> list[str]:
    """``optuna-dashboard`` of this interpreter's environment (its ``main``, so no script on PATH is needed)."""
    return [
        sys.executable,
        "-c",
        "import sys; from optuna_dashboard._cli import main; sys.argv[0] = 'optuna-dashboard'; main()",
        storage,
        "--host",
        host,
        "--port",
        str(port),
        "--quiet",
    ]


def study_id(storage: str, name: str) -> int:
    """Optuna's id of study ``name`` (the dashboard's URLs use it); a ConfigError naming the studies there."""
    from mtlsearch import studies

    path = studies.file_of(storage)
    if path is not None and not path.is_file():
        what = "journal" if studies.is_journal(storage) else "database"
        raise ConfigError(f"the study's {what} {storage} does not exist (moved or deleted?); pass its URL", field="--optuna-storage")
    try:
        opened = studies.open_existing(storage)
        names = sorted(s.study_name for s in opened.get_all_studies())
    except Exception as err:  # an unreachable server, a file that is not an Optuna database or journal
        first = str(err).strip().splitlines()
        raise ConfigError(
            f"cannot open the study's database {studies.redacted(storage)}: {first[0] if first else type(err).__name__}",
            field="--optuna-storage",
        ) from None
    try:
        if name not in names:
            raise ConfigError(
                f"no study {name!r} in {storage}; its studies: {', '.join(repr(n) for n in names) or 'none'}", field="--optuna-storage"
            )
        return int(opened.get_study_id_from_name(name))
    finally:
        studies.close(opened)


def wait_answers(url: str, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200 or ``proc`` exits (a RuntimeError naming ``what``) or the deadline passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s")


def run_dashboard(args: argparse.Namespace, uri: str, experiment: str | None) -> int:
    """``mtlsearch ui --optuna``: optuna-dashboard on the search's study until Ctrl-C."""
    import importlib.util

    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ConfigError("optuna-dashboard is not installed; install the extra: pip install 'mtlsearch[dashboard]'", field="--optuna")
    client = tracking.open_store(uri)
    exp, parent = tracking.find_search(client, experiment)
    storage, name = study_of(dict(parent.data.params), args.optuna_storage, exp.name)
    sid = study_id(storage, name)
    port = args.port if args.port is not None else free_port(args.host)
    if args.port is not None:
        check_port_free(args.host, port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{port}"
    from mtlsearch import studies

    print(
        f"Starting optuna-dashboard for study {name!r} in {studies.redacted(storage)} at {base} (Ctrl-C stops it) ...",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.Popen(
        dashboard_command(storage, args.host, port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )

    def ready() -> None:
        wait_answers(f"{base}/api/studies/{sid}", proc, "optuna-dashboard")
        help_lines = [
            "each trial's user attributes hold its MLflow run (mlflow_run_id), Ray trial id (ray_trial_id), epochs and status",
            f"the MLflow view of the same trials: mtlsearch ui --tracking-uri {uri} --experiment {exp.name}",
        ]
        _open(f"{base}/dashboard/studies/{sid}", args.no_browser, help_lines)

    _serve(proc, ready)
    return 0


def run(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or tracking.default_tracking_uri()
    experiment = args.experiment
    if args.space:
        from mtlsearch.spaces import load_space

        experiment = load_space(args.space, validate=False).name
    if args.port is not None and not 0 < args.port < 65536:
        raise ConfigError(f"{args.port} is not a TCP port (1 to 65535)", field="--port")
    if args.optuna:
        return run_dashboard(args, uri, experiment)
    if args.optuna_storage:
        raise ConfigError("--optuna-storage names the study that --optuna opens; add --optuna", field="--optuna-storage")
    args.port = DEFAULT_PORT if args.port is None else args.port
    if not 0 < args.port < 65536:
        raise ConfigError(f"{args.port} is not a TCP port (1 to 65535)", field="--port")
    if uri.startswith(("http://", "https://")):
        client = tracking.open_store(uri)
        exp, parent = tracking.find_search(client, experiment)
        tracking.ensure_trials_view(client, exp, parent)
        url = tracking.trials_url(uri, exp.experiment_id, parent.info.run_id)
        _open(url, args.no_browser, tracking.ui_help(uri, exp.experiment_id, parent.info.run_id))
        return 0
    client = tracking.open_store(uri)
    exp, parent = tracking.find_search(client, experiment)
    tracking.ensure_trials_view(client, exp, parent)
    base = f"http://{args.host}:{args.port}"
    url = tracking.trials_url(base, exp.experiment_id, parent.info.run_id)
    serving = tracking.serves_store(base, exp.experiment_id, parent.info.run_id)
    if serving:
        print(f"The MLflow UI at {base} serves this store already.", file=sys.stderr, flush=True)
        _open(url, args.no_browser, tracking.ui_help(base, exp.experiment_id, parent.info.run_id))
        return 0
    if serving is False:
        raise ConfigError(f"{base} is in use by another server (not one of the store {uri}); pass another --port", field="--port")
    check_port_free(args.host, args.port)
    print(f"Starting the MLflow UI for {uri} at {base} (Ctrl-C stops it) ...", file=sys.stderr, flush=True)
    proc = tracking.start_server(uri, args.host, args.port)

    def ready() -> None:
        tracking.wait_ready(base, proc)
        _open(url, args.no_browser, tracking.ui_help(base, exp.experiment_id, parent.info.run_id))

    _serve(proc, ready)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
