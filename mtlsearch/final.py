"""The final stage of a search (the space's `final:` section): re-run the best configurations with more seeds.

A single seed flatters whichever configuration got lucky.  When a space has a ``final`` section,
the launcher takes, after the search, the best ``top`` trials of each group (``per: method`` gives
one group per method) and re-runs each of their configurations once per seed in ``seeds``, for the
full epoch budget and without early stopping.  The runs land in the same MLflow experiment under the
same parent run (tag ``mtlsearch.phase = final``), and the launcher prints, for each configuration,
the mean ± 95% interval over its seeds, ranked, with the configurations tied with the best marked
(:func:`mtlsearch.results.rank_with_uncertainty`).  An errored trial is never picked.

No Ray here: the launcher (:mod:`mtlsearch.runner`) passes the function that trains a configuration's
seeds (``fit(index, config, seeds)`` -> one ``{"trial_id", "config", "metrics", "error"}`` per trial).
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from mtlsearch import results as ranking
from mtlsearch.tracking import TAG_PHASE  # noqa: F401 - the tag these runs get (named there)

if TYPE_CHECKING:
    from mtlsearch.spaces import SearchSpace
    from mtlsearch.tracking import Tracker

PHASE = "final"

Fit = Callable[[int, dict[str, Any], list[int]], list[dict[str, Any]]]


def pick_configs(rows: Sequence[Mapping[str, Any]], space: SearchSpace) -> list[tuple[str, dict[str, Any]]]:
    """``[(group, config)]``: the best ``top`` rows of each group (rows are sorted best first)."""
    assert space.final is not None  # the confirmation phase runs for a space with a final section
    per, top = space.final["per"], space.final["top"]
    chosen: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == ranking.ERRORED:  # never confirm a trial that failed
            continue
        cfg = dict(row["_config"])
        group = str(cfg.get(per)) if per else "all"
        if len(chosen.setdefault(group, [])) < top:
            chosen[group].append(cfg)
    return [(group, cfg) for group, cfgs in chosen.items() for cfg in cfgs]


def _without_seed(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != "seed"}


def summarize(
    results: Sequence[Mapping[str, Any]],
    picked: Sequence[tuple[str, dict[str, Any]]],
    keys: Sequence[str],
    metric: str = "val/delta_m",
    mode: str = "max",
    shown: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per picked configuration, ranked by the mean of ``metric`` over its seeds (every run of the
    configuration, and every seed inside a k-seed run), with the tie test against the best
    (:func:`mtlsearch.results.rank_with_uncertainty`); ``keys``: the metrics shown (the mean in the row,
    the seeds' results in ``_seed_metrics`` for ``mean ± interval`` cells); ``shown``: the config keys
    of the ``config`` column.  Errored runs are left out; a configuration whose every run errored is
    ``errored``."""
    rows = []
    for group, cfg in picked:
        runs = [r for r in results if _without_seed(r.get("config", {})) == _without_seed(cfg)]
        ok = [r["metrics"] for r in runs if not r.get("error") and metric in r["metrics"]]
        row: dict[str, Any] = {
            "group": group,
            "config": " ".join(f"{k}={ranking.fmt(cfg[k])}" for k in shown if k in cfg) or "-",
            "status": ranking.COMPLETED if ok else ranking.ERRORED,
            "_seed_metrics": ok,
            "_seeds": [v for m in ok for v in ranking.seed_values(m, metric)],
            "_config": cfg,
        }
        for key in keys:
            values = [v for m in ok for v in ranking.seed_values(m, key)]
            if values:
                row[key] = statistics.fmean(values)
        rows.append(row)
    return ranking.rank_with_uncertainty(rows, mode)


def run_confirmation(space: SearchSpace, rows: Sequence[Mapping[str, Any]], fit: Fit, tracker: Tracker) -> list[dict[str, Any]]:
    """Run the confirmation trials through ``fit``, one configuration after another; tag their runs
    through ``tracker``; returns the summary rows (one per picked configuration)."""
    picked = pick_configs(rows, space)
    assert space.final is not None
    seeds = list(space.final["seeds"])
    print(
        f"\nConfirming the best configuration{'s' if len(picked) > 1 else ''} "
        f"({len(picked)} x seeds {seeds}): {len(picked) * len(seeds)} trials without early stopping"
    )
    results = []
    for index, (_, cfg) in enumerate(picked):
        for result in fit(index, cfg, seeds):
            if result.get("trial_id"):
                tracker.mark_phase(result["trial_id"], PHASE)
            results.append({"config": result["config"], "metrics": result["metrics"], "error": result.get("error")})
    task_keys = sorted(
        {k for r in results for k in r["metrics"] if (k.startswith("val/") or k.startswith("test/")) and not ranking.SEED_KEY.match(k)}
    )
    shown = [p.name for p in space.params if p.kind != "value" and p.name not in ("seed", space.final["per"])]
    return summarize(results, picked, task_keys, space.metric, space.mode, shown)
