"""Shared by test_mlflow_server.py, test_report.py and test_browser.py (not a test module itself).

One real ``mlflow server`` bound to 127.0.0.1 (SQLite backend, artifacts in a temporary folder) and one
small search logged to it over HTTP by the launcher, each started at most once per pytest process:
starting the server costs about 30 s on 2 cores and the search about a minute.  The server is stopped
by the session fixtures' finalizers (:func:`stop_all`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

# A small search on the built-in synthetic benchmark (the fastest to build): GeMTL with p on both
# sides of 0 and 1 against equal weighting, two learning rates and two seeds; ASHA may stop trials.
SPACE_SINGLE = """
name: remote_small
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 4, max_epochs: 2}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
searcher: {type: optuna, sampler: random, seed: 3}
resources: {cpus_per_trial: 1}
params:
  method: {choice: [gemtl, ew]}
  p: {uniform: [-1.0, 2.0], when: {method: gemtl}}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  seed: {choice: [0, 1]}
  batch_size: 128
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """IP addresses with a listening TCP socket on ``port`` (Linux ``/proc/net/tcp*``)."""
    out = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, hexport = local.split(":")
            if state != "0A" or int(hexport, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            if v6:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                out.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
            else:
                out.add(socket.inet_ntoa(raw[::-1]))
    return out


def rest(uri: str, endpoint: str, payload: dict | None = None, params: dict | None = None) -> dict:
    """Plain HTTP against MLflow's REST API (``/api/2.0/mlflow/...``): POST with a JSON payload, else GET."""
    url = f"{uri}/api/2.0/mlflow/{endpoint}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def search_runs(uri: str, experiment_id: str, filter_string: str = "") -> list[dict]:
    runs, token = [], None
    while True:
        payload = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}
        if token:
            payload["page_token"] = token
        page = rest(uri, "runs/search", payload)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


def run_tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def run_params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def run_metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    page = rest(uri, "metrics/get-history", params={"run_id": run_id, "metric_key": key})
    return sorted((int(m.get("step", 0)), m["value"]) for m in page.get("metrics", []))


class MlflowServer:
    """``mlflow server --host 127.0.0.1`` on a free port, with its own SQLite store (or ``backend``, e.g. a
    PostgreSQL URL) and artifact folder."""

    def __init__(self, root: Path, backend: str | None = None):
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db = root / "mlflow.db"
        self.artifacts = root / "artifacts"
        self.log = root / "server.log"
        self._log_file = open(self.log, "w")
        # --workers 1: uvicorn's default of 4 workers takes a minute to start on 2 cores.
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                backend or f"sqlite:///{self.db}",
                "--artifacts-destination",
                str(self.artifacts),
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 240.0) -> "MlflowServer":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the server's process group (the CLI and its uvicorn worker): TERM, then KILL."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log_file.close()


class TcpProxy:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target; :meth:`stop` makes the address unreachable
    (listener and open connections closed): a tracking server that goes away, with the real one behind."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.sockets: list[socket.socket] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.stopped.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped.set()
        try:  # shutdown (not only close) stops listening and wakes the thread blocked in accept()
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


# ------------------------------------------------------------------------------ processes
def processes_with_env(assignment: str) -> list[int]:
    """Live processes whose environment holds ``assignment`` (``NAME=value``): every process of a Ray
    that a test started with that variable inherits it, whatever its command line; nobody else's does."""
    needle = assignment.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            found.append(int(entry))
    return found


# ------------------------------------------------------------------------------ process-wide state
_STATE: dict[str, object] = {}


def server(tmp_path_factory) -> MlflowServer:
    if "server" not in _STATE:
        _STATE["server"] = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    return _STATE["server"].wait_ready()  # type: ignore[union-attr]


class FinishedSearch:
    def __init__(self, uri, experiment, experiment_id, results_dir, output, code, space_path):
        self.uri, self.experiment, self.experiment_id = uri, experiment, experiment_id
        self.results_dir, self.output, self.code, self.space_path = results_dir, output, code, space_path


def finished_search(tmp_path_factory, capsys=None) -> FinishedSearch:
    """SPACE_SINGLE run by the launcher, logged over HTTP to :func:`server` (once per process)."""
    if "search" in _STATE:
        return _STATE["search"]  # type: ignore[return-value]
    import io
    from contextlib import redirect_stdout

    from mtlsearch.launch import main

    srv = server(tmp_path_factory)
    root = tmp_path_factory.mktemp("remote_search")
    space = root / "remote_small.yaml"
    space.write_text(textwrap.dedent(SPACE_SINGLE))
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["--space", str(space), "--storage", str(root / "ray"), "--tracking-uri", srv.uri, "--name", "remote"])
    exp = rest(srv.uri, "experiments/get-by-name", params={"experiment_name": "remote_small"})["experiment"]
    result = FinishedSearch(srv.uri, "remote_small", exp["experiment_id"], root / "ray" / "remote", buf.getvalue(), code, space)
    _STATE["search"] = result
    return result


def stop_all() -> None:
    srv = _STATE.pop("server", None)
    if srv is not None:
        srv.stop()  # type: ignore[union-attr]
