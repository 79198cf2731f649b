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
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from types import FrameType
from typing import Sequence

from mtlsearch import tracking
from mtlsearch.errors import ConfigError

EXIT_BAD_INPUT = 2


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
    p.add_argument("--port", type=int, default=5000, help="its port (default: %(default)s)")
    p.add_argument("--no-browser", action="store_true", help="print the URL only, do not open a browser")
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


def run(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or tracking.default_tracking_uri()
    experiment = args.experiment
    if args.space:
        from mtlsearch.spaces import load_space

        experiment = load_space(args.space, validate=False).name
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
    import os
    import signal

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # a TERM stops the server too (it runs in its own session)
    proc = tracking.start_server(uri, args.host, args.port)
    try:
        tracking.wait_ready(base, proc)
        _open(url, args.no_browser, tracking.ui_help(base, exp.experiment_id, parent.info.run_id))
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
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
