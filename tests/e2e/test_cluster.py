"""A real two-node Ray cluster on 127.0.0.1: ``ray start --head``, a second node, ``ray job submit``.

The cluster itself (tests/helpers/cluster.py) keeps to itself and is stopped whatever happens.
"""

import json
import secrets
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from helpers.cluster import is_loopback, listening_addresses
from helpers.shared_search import processes_with_env

from mtlsearch.tracking import TAG_KIND, TAG_STATUS

ROOT = Path(__file__).resolve().parents[2]
SPACE = """
name: cluster_smoke
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 2}
scheduler: {type: fifo}
searcher: {type: optuna, sampler: random, seed: 0}
resources: {cpus_per_trial: 1}
params:
  method: gemtl
  p: {uniform: [0.0, 1.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
"""


def test_cluster_has_two_nodes_listening_on_loopback_only(cluster):
    pids = processes_with_env(cluster.marker)
    sockets = listening_addresses(pids)
    assert len(sockets) >= 4, sockets  # GCS, raylets, dashboard, agents
    assert [s for s in sockets if not is_loopback(s[1])] == []


def test_local_storage_on_a_multi_node_cluster_is_refused(cluster, tmp_path):
    """The launcher connects to the running cluster (RAY_ADDRESS) and refuses, before any trial or MLflow
    store exists, a local --storage that the second node cannot reach."""
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlsearch.launch",
            "--space",
            str(space),
            "--storage",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--storage: " in errors[0] and "the cluster has 2 nodes" in errors[0], proc.stderr
    assert "--storage-is-shared" in errors[0] and "s3://" in errors[0]
    assert "Connecting to the Ray cluster at" in proc.stdout and "Starting a local Ray" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_more_cpus_per_trial_than_any_node_is_refused_after_waiting_for_one(cluster, tmp_path):
    """On a running cluster nodes may still be joining: the launcher waits (here 2 s) for a node that
    fits a trial, then refuses with the nodes it saw."""
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    env = {**cluster.env, "PYTHONPATH": str(ROOT), "MTLSEARCH_NODE_WAIT_S": "2"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlsearch.launch",
            "--space",
            str(space),
            "--address",
            cluster.address,
            "--cpus-per-trial",
            "2",
            "--storage",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Waiting up to 2 s (MTLSEARCH_NODE_WAIT_S) for a node with 2 CPU and 0 GPU" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: --cpus-per-trial: a trial asks for 2 CPU but no node of the cluster has more than 1 (after waiting 2 s)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_a_driver_without_the_clusters_token_gets_one_line_saying_so(cluster, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    env = {
        **cluster.env,
        "PYTHONPATH": str(ROOT),
        "RAY_AUTH_TOKEN": secrets.token_hex(32),  # not this cluster's
        "RAY_gcs_server_port_wait_time_s": "1",
    }  # one connection attempt, not ~20
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlsearch.launch",
            "--space",
            str(space),
            "--address",
            cluster.address,
            "--storage",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --address: cannot connect to the Ray cluster at '{cluster.address}'")
    assert "RAY_AUTH_MODE=token" in errors[0] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_search_submitted_as_a_ray_job_succeeds_and_reaches_mlflow(cluster, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job_id = f"mtlsearch-test-{uuid.uuid4().hex[:8]}"
    code, out = cluster.submit_job(
        job_id,
        [
            "python",
            "-m",
            "mtlsearch.launch",
            "--space",
            str(space),
            "--tracking-uri",
            uri,
            "--storage",
            str(tmp_path / "results"),
            "--storage-is-shared",
            "--name",
            "on_cluster",
        ],
    )
    assert code == 0 and f"Job '{job_id}' succeeded" in out, out[-6000:]
    assert "Connecting to the Ray cluster at" in out and "Starting a local Ray" not in out  # no second Ray
    assert re.search(
        r"Best trials by val/delta_m \(max, value at each trial's last epoch, the mean over its seeds\); 2 trials \(\d completed, \d stopped early by ASHA, 0 errored\):",
        out,
    )

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("cluster_smoke")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]
    assert len(trials) == 2 and len([r for r in runs if r.data.tags.get(TAG_KIND) == "search"]) == 1
    for run in trials:
        assert run.data.tags[TAG_STATUS] == "completed"
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/delta_m")) == [1, 2]
    assert sorted(p.name for p in (tmp_path / "results" / "on_cluster").glob("trial_*")) != []


# ------------------------------------------------------------------------------ deploy/ files
def launcher_args(entrypoint: str):
    """Parse ``python -m mtlsearch.launch ...`` with the launcher's own parser; the space must exist."""
    import shlex

    from mtlsearch import spaces
    from mtlsearch.launch import build_parser

    words = shlex.split(entrypoint)
    assert words[:3] == ["python", "-m", "mtlsearch.launch"] and "--space" in words, words
    args = build_parser().parse_args(words[3:])
    space = spaces.load_space(args.space)  # a bundled space, valid
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else space.resources["gpus_per_trial"]
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else space.resources["cpus_per_trial"]
    assert args.storage and (args.storage_is_shared or "://" in args.storage), "multi-node storage must be shared"
    return args, gpus, cpus


def test_cluster_launcher_yaml_is_valid_and_runs_the_launcher_on_gpu_nodes():
    import jsonschema
    import ray.autoscaler
    import yaml

    path = ROOT / "deploy" / "cluster-aws.yaml"
    text = path.read_text()
    config = yaml.safe_load(text)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema check is not vacuous
        jsonschema.validate({**config, "max_worker": 4}, schema)

    assert config["provider"]["type"] == "aws" and config["head_node_type"] in config["available_node_types"]
    gpu_types = {name: t for name, t in config["available_node_types"].items() if t.get("resources", {}).get("GPU", 0) >= 1}
    assert gpu_types, "no GPU node type"
    for node_type in gpu_types.values():
        assert node_type["node_config"]["InstanceType"].split(".")[0] in {"g4dn", "g5", "g6", "g6e", "p3", "p4d", "p5"}
        assert node_type["max_workers"] >= 1
    # The nodes get this checkout and install it; Ray starts from the project's venv.
    assert "." in config["file_mounts"].values()
    assert any("pip install ~/mtlsearch" in c for c in config["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("~/mtl/bin/activate" in c and "ray start" in c for c in config[key]), key

    # The documented submission runs the launcher with a request that fits one GPU node.
    submit = next(line for line in text.splitlines() if "ray job submit" in line)
    assert "--working-dir ." in submit
    args, gpus, cpus = launcher_args(submit.split(" -- ", 1)[1])
    assert any(gpus <= t["resources"]["GPU"] and cpus <= t["resources"]["CPU"] for t in gpu_types.values())


def test_rayjob_manifest_runs_the_launcher_on_gpu_workers_with_the_project_image():
    import re

    import yaml

    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    args, gpus, cpus = launcher_args(job["spec"]["entrypoint"])
    cluster_spec = job["spec"]["rayClusterSpec"]
    head = cluster_spec["headGroupSpec"]
    workers = cluster_spec["workerGroupSpecs"]
    pods = [head["template"]["spec"]] + [w["template"]["spec"] for w in workers]
    images = {c["image"] for pod in pods for c in pod["containers"]}
    assert len(images) == 1, images  # one image, built from deploy/Dockerfile

    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-gpu$", dockerfile, re.M)
    assert base and base.group(1) == cluster_spec["rayVersion"]
    assert re.search(r"^COPY .*mtlsearch ", dockerfile, re.M) and "pip install --no-cache-dir -c constraints.txt ." in dockerfile
    assert re.search(r"^COPY .*constraints.txt", dockerfile, re.M)  # the versions CI tested

    assert head["rayStartParams"].get("num-cpus") == "0"  # the head runs the driver only
    gpu_workers = [w for w in workers if int(w["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1]
    assert gpu_workers
    for group in gpu_workers:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert gpus <= int(limits["nvidia.com/gpu"]) and cpus <= int(limits["cpu"])
        assert group["maxReplicas"] >= 1
    # Storage and data are at the same paths on the head and on every worker (shared volumes).
    for pod in pods:
        mounts = [m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])]
        for needed in (args.storage, args.data_root):
            assert any(needed.startswith(m.rstrip("/") + "/") for m in mounts), (needed, mounts)
