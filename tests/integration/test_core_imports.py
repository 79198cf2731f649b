"""The core (trainer, balancing, optimizers, benchmarks, metrics) is plain PyTorch: importing it loads
neither Ray nor MLflow (docs/architecture.md), so a researcher's script can use it alone."""

import subprocess
import sys

from helpers import ROOT


def test_importing_the_core_loads_neither_ray_nor_mlflow():
    code = (
        "import sys\n"
        "import mtlsearch, mtlsearch.trainer, mtlsearch.balancing, mtlsearch.optim, mtlsearch.benchmarks, mtlsearch.metrics\n"
        "import mtlsearch.gradients, mtlsearch.config, mtlsearch.protocols, mtlsearch.plugins, mtlsearch.multiseed\n"
        "from mtlsearch import Trainer\n"
        "Trainer({'benchmark': 'synthetic', 'max_epochs': 1, 'device': 'cpu'})\n"
        "mtlsearch.multiseed.build_trainer({'benchmark': 'synthetic', 'max_epochs': 1, 'device': 'cpu', 'seeds': 2})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stdout
