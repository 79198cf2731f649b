"""The fast tier: no Ray, no child process, no MLflow server (docs/contributing-tests.md).

Every test here runs under :func:`helpers.guard.leak_guard`, which fails a test that leaves Ray
initialised or a child process running; the suite's Ray, server and cluster fixtures fail here at once,
even when asked for by name (``request.getfixturevalue``)."""

import pytest

from helpers.guard import WHERE, leak_guard  # noqa: F401  (an autouse fixture: importing it here applies it to this folder)


def _refused(name: str):
    @pytest.fixture(scope="session", name=name)
    def fixture():
        pytest.fail(f"`{name}` asked for in tests/unit: {WHERE}", pytrace=False)

    return fixture


ray_session = _refused("ray_session")
mlflow_server = _refused("mlflow_server")
remote_search = _refused("remote_search")
cluster = _refused("cluster")
