"""A hand-made gemtl_p search (16 trials, known scores) for the report's tests (no Ray, no MLflow)."""

import math
import textwrap

from mtlsearch.report.load import Search, Trial
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_ERRORED, STATUS_STOPPED

SPACE = textwrap.dedent("""
    name: gemtl_p
    benchmark: multidigits
    objective: {metric: val/delta_m, mode: max}
    budget: {num_samples: 16, max_epochs: 12}
    scheduler: {type: asha, grace_period: 3, reduction_factor: 3}
    searcher: {type: optuna, sampler: tpe, seed: 0}
    params:
      method: gemtl
      p: {uniform: [-2.0, 4.0]}
      lr: {loguniform: [3.0e-4, 3.0e-2]}
      batch_size: 64
      seed: 0
    # --set params.p.uniform=[-2.0, 3.0]
    """)


def _score(lr: float, epoch: int) -> float:
    """Δm that depends on lr only (best at lr = 3e-3) and grows with the epochs."""
    return -80.0 / epoch - 30.0 * (math.log10(lr) + 2.5) ** 2


def _search(n=16, space=SPACE):
    out = []
    for i in range(n):
        lr = 3e-4 * 100 ** ((i * 7 % n) / (n - 1))
        p = -2.0 + 5.0 * ((i * 5 % n) / (n - 1))
        status, epochs = (
            (STATUS_ERRORED, 1) if i == 0 else (STATUS_COMPLETED, 12) if i % 3 == 1 else (STATUS_STOPPED, 9 if i % 3 == 2 and i < 6 else 3)
        )
        history = {"val/delta_m": [(e, _score(lr, e)) for e in range(1, epochs + 1)]}
        final = {
            "val/delta_m": history["val/delta_m"][-1][1],
            "test/delta_m": history["val/delta_m"][-1][1] - 1,
            "val/left/accuracy": 0.9,
            "val/number/mae": 1.5,
            "test/left/accuracy": 0.8,
        }
        out.append(
            Trial(
                trial_id=f"t{i:02d}",
                status=status,
                epochs=epochs,
                final=final,
                time_total_s=10.0 + i,
                params={"method": "gemtl", "p": p, "lr": lr, "batch_size": 64, "seed": 0, "optimizer": "adam"},
                _history=history,
            )
        )
    return Search(
        name="gemtl_p-x",
        source="hand-made",
        search_id="x",
        metric="val/delta_m",
        mode="max",
        objectives=[("val/delta_m", "max")],
        max_epochs=12,
        gpus_per_trial=0.0,
        cpus_per_trial=1.0,
        benchmark="multidigits",
        trials=out,
        info={
            "params": {
                "space": "gemtl_p",
                "num_samples": 16,
                "max_epochs": 12,
                "scheduler": {"type": "asha", "grace_period": 3},
                "optuna_storage": "sqlite:////x/o.db",
                "optuna_study": "gemtl_p-x",
            },
            "space_text": space,
        },
    )
