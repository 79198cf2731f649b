import os
from pathlib import Path

import pytest
import torch

from helpers import ROOT

# The models under test are tiny: one thread avoids oversubscribing a 2-core CI machine (the real
# Ray workers and subprocesses started by tests choose their own threads).
torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent

#: Tiers: the folder a test file lives in is its tier, and this hook marks it from there (a marker
#: cannot be forgotten or leak).  ``python -m pytest tests/unit`` (the same tests as ``-m "not slow"``)
#: is the fast tier for development: no Ray, no child process, no MLflow server; tests/unit/conftest.py
#: fails a test there that leaves Ray initialised or a process running.  ``tests/integration``: a real
#: local Ray, MLflow store or child processes; ``tests/e2e``: whole searches, servers, clusters, a
#: browser.  Both are ``slow``; CI runs everything (docs/contributing-tests.md).
TIERS = ("unit", "integration", "e2e")


def tier_of(path: Path) -> str | None:
    """The tier folder ``path`` lies in (None: a test file outside the tiers)."""
    try:
        parts = Path(path).resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config, items):
    misplaced = sorted({str(item.path.relative_to(ROOT)) for item in items if tier_of(item.path) is None})
    if misplaced:
        raise pytest.UsageError(
            f"test files outside the tier folders: {', '.join(misplaced)}; move each into tests/unit (no Ray, "
            "no child process, no server), tests/integration (a real local Ray, MLflow store or child processes) "
            "or tests/e2e (whole searches, servers, clusters, a browser); see docs/contributing-tests.md"
        )
    marked = sorted({item.nodeid for item in items if tier_of(item.path) == "unit" and item.get_closest_marker("slow")})
    if marked:
        raise pytest.UsageError(f"tests marked slow in tests/unit: {', '.join(marked)}; a slow test goes in tests/integration")
    # The fast tier first (nothing of a slower tier has started Ray or a server yet), then the others.
    items.sort(key=lambda item: TIERS.index(tier_of(item.path)))
    for item in items:
        tier = tier_of(item.path)
        item.add_marker(getattr(pytest.mark, tier))
        if tier != "unit":
            item.add_marker(pytest.mark.slow)
        if "cluster" in getattr(item, "fixturenames", ()) or item.path.name == "test_cluster.py":
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
    """One real ``mlflow server`` on 127.0.0.1 for the suite (tests/helpers/shared_search.py)."""
    from helpers import shared_search as shared

    srv = shared.server(tmp_path_factory)
    yield srv
    shared.stop_all()


@pytest.fixture(scope="session")
def remote_search(tmp_path_factory, ray_session, mlflow_server):
    """A small search logged over HTTP to :func:`mlflow_server`, run once for the suite."""
    from helpers import shared_search as shared

    return shared.finished_search(tmp_path_factory)


@pytest.fixture(scope="module")
def cluster():
    """A local two-node Ray cluster started with ``ray start`` (tests/helpers/cluster.py), one per test module."""
    from helpers.cluster import LocalCluster

    c = LocalCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()
