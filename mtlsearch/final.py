"""The confirmation phase of a search: re-run the best configurations with more seeds.

A single seed flatters whichever configuration got lucky.  When a space has a ``final`` section,
the launcher takes, after the search, the best ``top`` trials of each group (``per: method`` gives
one group per method) and re-runs each of their configurations once per seed in ``seeds``, for the
full epoch budget and without early stopping.  The runs land in the same MLflow experiment under the
same parent run (tag ``mtlsearch.phase = final``), and the launcher prints mean ± std over seeds.
"""
from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

PHASE_TAG = "mtlsearch.phase"


def pick_configs(rows: Sequence[Mapping[str, Any]], space) -> list[tuple[str, dict[str, Any]]]:
    """``[(group, config)]``: the best ``top`` rows of each group (rows are sorted best first)."""
    per, top = space.final["per"], space.final["top"]
    chosen: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        cfg = dict(row["_config"])
        group = str(cfg.get(per)) if per else "all"
        if len(chosen.setdefault(group, [])) < top:
            chosen[group].append(cfg)
    return [(group, cfg) for group, cfgs in chosen.items() for cfg in cfgs]


def _without_seed(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != "seed"}


def summarize(results: Sequence[Mapping[str, Any]], picked: Sequence[tuple[str, dict[str, Any]]],
              keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of ``keys`` for each picked configuration."""
    rows = []
    for group, cfg in picked:
        runs = [r for r in results if _without_seed(r.get("config", {})) == _without_seed(cfg)]
        row: dict[str, Any] = {"group": group, "seeds": len(runs)}
        for key in keys:
            values = [r["metrics"][key] for r in runs if key in r["metrics"]]
            if values:
                mean = statistics.fmean(values)
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                row[key] = f"{mean:.4g} ± {std:.2g}"
        rows.append(row)
    return rows


def run_final(space, rows, trainable, make_run_config, tracker) -> list[dict[str, Any]]:
    """Run the confirmation trials; returns the summary rows (one per picked configuration)."""
    from ray import tune

    picked = pick_configs(rows, space)
    seeds = list(space.final["seeds"])
    print(f"\nConfirming the best configuration{'s' if len(picked) > 1 else ''} "
          f"({len(picked)} x seeds {seeds}): {len(picked) * len(seeds)} trials without early stopping")
    results = []
    for index, (_, cfg) in enumerate(picked):
        # One small grid per configuration: its seeds run in parallel, configurations one after another.
        tuner = tune.Tuner(
            trainable,
            param_space={**cfg, "seed": tune.grid_search(seeds)},
            tune_config=tune.TuneConfig(metric=space.metric, mode=space.mode,
                                        max_concurrent_trials=space.max_concurrent_trials),
            run_config=make_run_config(f"final{index}", len(seeds)),
        )
        for result in tuner.fit():
            trial_id = (result.metrics or {}).get("trial_id")
            if trial_id and trial_id in tracker.trial_runs:
                tracker.client.set_tag(tracker.trial_runs[trial_id], PHASE_TAG, "final")
            results.append({"config": result.config or {}, "metrics": result.metrics or {}})
    task_keys = sorted({k for r in results for k in r["metrics"] if k.startswith("val/") or k.startswith("test/")})
    return summarize(results, picked, task_keys)
