"""Reachability of a store and of its UI server, and what a search records of the code that ran it (the
git commit, the package versions)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlsearch.errors import ConfigError
from mtlsearch.tracking.stores import sqlite_path

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`ConfigError` (field ``--tracking-uri``) if MLflow cannot be reached.

    HTTP(S): any HTTP answer from ``<uri>/health`` counts (a 401 still proves a server is there);
    a refused or timed-out connection does not.  SQLite: the database's folder must exist.  Other
    schemes (``databricks``, plugins) are left to MLflow.
    """
    if tracking_uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(
                f"MLflow tracking server {tracking_uri} is unreachable ({reason}); start it "
                "(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or pass another --tracking-uri",
                field="--tracking-uri",
            ) from None
    db = sqlite_path(tracking_uri)
    if db is not None and not db.parent.is_dir():
        raise ConfigError(f"the folder of the SQLite store {tracking_uri} does not exist ({db.parent})", field="--tracking-uri")


def configure_http(tracking_uri: str) -> None:
    """Shorter retries (see the module docstring); no "View run at ..." line per finished run (the
    launcher prints its own progress)."""
    if tracking_uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def open_store(tracking_uri: str) -> MlflowClient:
    """A client of an existing store (a missing SQLite file is an error, not a new empty store)."""
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ConfigError(
            f"no MLflow store at {tracking_uri} (no file {db}); run a search first or pass the store it used", field="--tracking-uri"
        )
    check_reachable(tracking_uri)
    import mlflow  # noqa: F401  (registers the stores)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def git_commit() -> str | None:
    here = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("mtlsearch", "torch", "ray", "optuna", "mlflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------------ a store's UI server
def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read() or b"{}")


def serves_store(base: str, experiment_id: str, parent_run_id: str) -> bool | None:
    """None: nothing answers at ``base``; True: a server of this store (it has the search's parent run in
    the same experiment); False: something else."""
    try:
        with urllib.request.urlopen(base + "/health", timeout=3):
            pass
    except (urllib.error.HTTPError, http.client.HTTPException):  # an HTTP error, or a reply that is not HTTP
        return False
    except (urllib.error.URLError, OSError):
        return None
    try:
        run = _get_json(f"{base}/api/2.0/mlflow/runs/get?" + urllib.parse.urlencode({"run_id": parent_run_id}))
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return run.get("run", {}).get("info", {}).get("experiment_id") == experiment_id


def start_server(tracking_uri: str, host: str, port: int, log: Path | None = None) -> subprocess.Popen:
    """``mlflow server`` for a local store (one worker: uvicorn's default of 4 is slow to start on small machines)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            tracking_uri,
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer at {base} within {timeout:.0f} s")
