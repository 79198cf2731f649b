import os
from pathlib import Path

import pytest
import torch

# The models under test are tiny: one thread avoids oversubscribing a 2-core CI machine (the real
# Ray workers and subprocesses started by tests choose their own threads).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent

#: Tiers (pyproject.toml registers the markers): ``python -m pytest -m "not slow"`` is the fast tier for
#: development (about a minute: no Ray, no MLflow server, no browser); CI runs everything.
#: A test is ``slow`` when it uses one of these fixtures or lives in one of these files, so a new Ray test
#: is tiered without anyone remembering to mark it.
SLOW_FIXTURES = {"ray_session", "remote_search", "mlflow_server", "cluster"}
SLOW_FILES = {
    "test_faults.py",
    "test_search_e2e.py",
    "test_plugins_e2e.py",
    "test_step_time_script.py",
    "test_cluster.py",
    "test_browser.py",
    "test_mlflow_server.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
        if "cluster" in fixtures or item.path.name == "test_cluster.py":
            item.add_marker(pytest.mark.cluster)
        if item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray for the whole suite (starting one costs seconds)."""
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        # Workers must import this checkout's packages whether or not the project is installed.
        env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real ``mlflow server`` on 127.0.0.1 for the suite (tests/shared_search.py)."""
    import shared_search as shared

    srv = shared.server(tmp_path_factory)
    yield srv
    shared.stop_all()


@pytest.fixture(scope="session")
def remote_search(tmp_path_factory, ray_session, mlflow_server):
    """A small search logged over HTTP to :func:`mlflow_server`, run once for the suite."""
    import shared_search as shared

    return shared.finished_search(tmp_path_factory)


@pytest.fixture(scope="module")
def cluster():
    """A local two-node Ray cluster started with ``ray start`` (tests/test_cluster.py), one per test module."""
    from test_cluster import LocalCluster

    c = LocalCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()
