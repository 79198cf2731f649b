"""A local two-node Ray cluster for the tests (the ``cluster`` fixture of tests/conftest.py).

How the cluster is kept to itself (other Ray instances may run on the same machine: this suite's own
``ray_session``, other checkouts' tests), and stopped whatever happens:

* ``ray stop`` stops every Ray process on the machine, so it is never used.  Every process of this
  cluster inherits one environment variable, ``MTLSEARCH_TEST_CLUSTER=<random>`` (Ray passes the
  environment of ``ray start`` on to the raylet, its workers, the job supervisor and the job's
  entrypoint); the fixture's finalizer SIGKILLs exactly the live processes that carry it, and waits
  until they are gone.
* ``--temp-dir`` is a fresh folder, so the address file ``ray start`` writes (``ray_current_cluster``)
  does not redirect anyone's ``ray.init()``; every port with a fixed default (6379, 8265, 52365,
  10001) is a free one picked here.
* ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from replacing 127.0.0.1 by the machine's
  address, so everything listens on loopback only (checked below).  ``ray start`` then refuses to add
  a worker node, so the second node is started the way ``ray.cluster_utils.Cluster.add_node`` does
  (``ray._private.node.Node``, Ray's own multi-node-on-one-machine test tool).
* Token authentication with a token made up for this cluster (``RAY_AUTH_MODE=token``,
  ``RAY_AUTH_TOKEN``), as a user of Ray 2.60 meets it; nothing is written to ``~/.ray``.
* The head starts with this interpreter's ``bin`` first on PATH: a job's entrypoint runs with the
  PATH of the environment that started the head.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from helpers import ROOT
from helpers.shared_search import processes_with_env

BIN = Path(sys.executable).parent
EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "ray_results",
    "mlruns",
    "mlflow.db",
    "mtlsearch_results",
    "*.egg-info",
    ".pytest_cache",
    "build",
    "__pycache__",
]

WORKER_NODE = """
import sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams
from ray._private.services import wait_for_node

gcs, temp_dir, agent_port, metrics_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = RayParams(gcs_address=gcs, node_ip_address="127.0.0.1", num_cpus=1, num_gpus=0,
                   object_store_memory=150 * 2**20, min_worker_port=0, max_worker_port=0,
                   node_manager_port=0, include_log_monitor=False, temp_dir=temp_dir)
params.dashboard_agent_listen_port = agent_port
params.metrics_export_port = metrics_port
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
wait_for_node(gcs, node.plasma_store_socket_name, 120)
print("READY", flush=True)
while True:
    time.sleep(3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(pids) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the processes hold."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[8:-1]] = pid
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:  # 0A: LISTEN
                out.append((owner[fields[9]], fields[1]))
    return out


def is_loopback(hex_address: str) -> bool:
    host = hex_address.split(":")[0]
    if len(host) == 8:  # IPv4, little-endian: 0100007F = 127.0.0.1
        return host.endswith("7F")
    return host in ("0000000000000000FFFF00000100007F", "00000000000000000000000001000000")  # ::ffff:127.0.0.1, ::1


class LocalCluster:
    def __init__(self):
        self.temp = Path(tempfile.mkdtemp(prefix="mtlcl", dir="/tmp"))  # short: socket paths <= 107 bytes
        self.marker = f"MTLSEARCH_TEST_CLUSTER={uuid.uuid4().hex}"
        self.port, self.dashboard = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_TMPDIR")}
        self.env.update(
            {
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": secrets.token_hex(32),
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
                "RAY_USAGE_STATS_ENABLED": "0",
                self.marker.split("=")[0]: self.marker.split("=")[1],
            }
        )
        self.worker = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def job_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def start(self) -> None:
        head = subprocess.run(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--dashboard-host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dashboard-port",
                str(self.dashboard),
                "--dashboard-agent-listen-port",
                str(free_port()),
                "--ray-client-server-port",
                str(free_port()),
                "--metrics-export-port",
                str(free_port()),
                "--num-cpus",
                "1",
                "--num-gpus",
                "0",
                "--disable-usage-stats",
                "--temp-dir",
                str(self.temp),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            start_new_session=True,
        )
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        worker_dir = self.temp / "worker"  # its own runtime_resources: nodes must not share one
        worker_dir.mkdir()
        self.worker = subprocess.Popen(
            [sys.executable, "-c", WORKER_NODE, self.address, str(worker_dir), str(free_port()), str(free_port())],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        line = self.worker.stdout.readline()
        assert line.strip() == "READY", line + self.worker.stdout.read()[-2000:] if self.worker.poll() is not None else line

    def stop(self) -> None:
        deadline = time.time() + 30
        while time.time() < deadline:
            pids = processes_with_env(self.marker)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.worker is not None:
            self.worker.wait(10)
        assert processes_with_env(self.marker) == [], "cluster processes survived"
        shutil.rmtree(self.temp, ignore_errors=True)

    def ray_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit_job(self, job_id: str, entrypoint: list[str]) -> tuple[int, str]:
        """``ray job submit --working-dir <checkout>`` of ``entrypoint``; (exit code, stdout + stderr)."""
        command = [
            "job",
            "submit",
            "--address",
            self.job_address,
            "--submission-id",
            job_id,
            "--working-dir",
            str(ROOT),
            "--runtime-env-json",
            json.dumps({"excludes": EXCLUDES}),
            "--",
            *entrypoint,
        ]
        deadline = time.time() + 90
        while True:  # the head's job agent registers a little after `ray start` returns
            proc = self.ray_cli(*command, timeout=420)
            if "No available agent" not in proc.stderr + proc.stdout or time.time() > deadline:
                return proc.returncode, proc.stdout + proc.stderr
            time.sleep(2)
