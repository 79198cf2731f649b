"""``python -m mtlsearch.reproduce``: run a published protocol's seeds and set the result beside the paper's.

    python -m mtlsearch.reproduce --protocol nashmtl --benchmark nyuv2 --method famo --data-root DIR \\
        [--seeds 0 1 2] [--epochs E] [--last-k K] [--set KEY=VALUE ...] [--gpus-per-trial F] \\
        [--cpus-per-trial C] [--tracking-uri URI] [--storage PATH] [--experiment NAME] [--address ADDR] [--time-only]

1. Checks everything first (protocol, benchmark, method, data folder and its image size, overrides):
   bad input is one line and exit code 2.
2. Prints the budget: trials (one per seed), epochs, and an estimate of the device hours from one
   timed epoch (training + evaluation) run here, on the device a trial would use.  ``--time-only``
   stops after it.
3. Runs the seeds as trials of one search through the launcher (:mod:`mtlsearch.launch`: Ray Tune,
   FIFO, GPU trials with ``--gpus-per-trial``, fractions allowed; one MLflow parent run with a nested
   run per seed, each tagged with the protocol).  Nothing is selected: every seed runs to the end.
4. Prints ours against the published numbers: per metric, the mean over seeds of each seed's mean of
   its last-k epochs' test metrics, beside the single-task reference and the published value in our
   units with the table it was read in (or "missing", and why), and the Δm% those published values
   give, within the rounding of their printed digits, against the published Δm%; then both Δm
   conventions, each labelled (ours ``test/delta_m``: per-task mean, higher is better; the
   protocol's, e.g. ``delta_m_nashmtl``: all metrics, lower is better), and the verdict: the seeds'
   95% t-interval against the published value, **TIE** when it holds the published value, else
   **BETTER** or **WORSE** (in the protocol's direction), naming the published value's source table
   and how it was sourced (the method's own paper, the protocol's paper, secondary, read off an
   image, unverified).
   No verdict (the numbers are still printed) when a protocol setting was overridden (``--epochs``,
   ``--last-k``, any ``--set`` but ``pretrained``), with one seed (no interval), when the published
   value is marked suspect, or when the pretrained weights the protocol needs are missing (then a
   warning comes first: e.g. ``libmtl@1`` without its ResNet-50 file trains from random weights).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import yaml

from mtlsearch.errors import ConfigError

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from mtlsearch.config import TrialConfig
    from mtlsearch.protocols import Protocol

EXIT_BAD_INPUT = 2
#: ``--set`` keys that do not change what the protocol computes (where the data or weights are, how it runs).
NOT_OVERRIDES = frozenset({"pretrained", "num_workers", "device"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtlsearch.reproduce", description="Reproduce a published result under its protocol and compare."
    )
    p.add_argument("--protocol", required=True, help="nashmtl or libmtl (NAME or NAME@VERSION)")
    p.add_argument("--benchmark", help="a benchmark the protocol covers (nyuv2, cityscapes); with --dry-run: default every one it covers")
    p.add_argument("--method", required=True, help="a balancing method (ew, famo, nash_mtl, cagrad, ...)")
    p.add_argument("--data-root", help="the dataset folder (default: $MTLSEARCH_DATA_ROOT)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one trial per seed (default 0 1 2)")
    p.add_argument("--epochs", type=int, help="override the protocol's epochs")
    p.add_argument("--last-k", type=int, help="override the protocol's number of averaged final epochs")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        help="override a protocol setting or set a method hyperparameter (YAML values), e.g. image_size=64x96; "
        "repeat for several (--set a=1 --set b=2); any but pretrained=FILE means no verdict",
    )
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (default: 1 when a GPU is visible, else 0)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage", help="Ray Tune storage (default: ./ray_results)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment (default: reproduce-PROTOCOL-BENCHMARK)")
    p.add_argument("--time-only", action="store_true", help="print the budget (one timed epoch) and stop")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the effective settings of the method under the protocol (and where the released code sets them) and stop",
    )
    return p


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", field="--set")
        out[key] = yaml.safe_load(value)
    return out


def trial_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The full trial config of one seed (validated by the caller)."""
    from mtlsearch.protocols import get_protocol

    protocol = get_protocol(args.protocol)
    cfg: dict[str, Any] = protocol.settings(args.benchmark)
    cfg.update(protocol.method_settings(args.method, args.benchmark))
    cfg.update(
        benchmark=args.benchmark,
        method=args.method,
        protocol=protocol.tag,
        seed=seed,
        max_epochs=args.epochs or protocol.epochs(args.benchmark),
    )
    if args.data_root:
        cfg["data_root"] = args.data_root
    if args.last_k:
        cfg["last_k"] = args.last_k
    cfg.update(args.override_values)
    return cfg


def dry_run_lines(args: argparse.Namespace) -> list[str]:
    """The effective per-method settings of ``args.method`` under the protocol, per benchmark, with
    their sources in the released code; nothing is run and no data folder is needed."""
    from mtlsearch.balancing import get_method
    from mtlsearch.config import TrialConfig
    from mtlsearch.protocols import get_protocol

    try:
        protocol = get_protocol(args.protocol)
    except ConfigError as err:
        raise ConfigError(err.message, field="--protocol") from None
    try:
        get_method(args.method)
    except ConfigError as err:
        raise ConfigError(err.message, field="--method") from None
    if args.benchmark is not None and not protocol.covers(args.benchmark):
        raise ConfigError(
            f"protocol {protocol.name!r} does not cover benchmark {args.benchmark!r}; it covers {', '.join(protocol.benchmarks)}",
            field="--benchmark",
        )
    benchmarks = [args.benchmark] if args.benchmark else list(protocol.benchmarks)
    lines = [f"Effective settings of {args.method} under {protocol.tag} (nothing run):"]
    for bench in benchmarks:
        cfg = TrialConfig.from_dict(
            {**protocol.effective_settings(args.method, bench), "benchmark": bench, "method": args.method, "protocol": protocol.tag},
            source=f"{protocol.tag} on {bench}",
        )
        own = protocol.method_settings(args.method, bench)
        params = ", ".join(f"{k} {v}" for k, v in cfg.method_params.items()) or "none"
        lines += [
            f"{bench}:",
            f"  method: grad_mode {cfg.effective_grad_mode or '- (loss level)'}; hyperparameters: {params}; "
            f"balancing parameters' lr: {cfg.balancing_lr or 'as the model'}",
            f"  set by the protocol for {args.method}: {', '.join(f'{k}={v}' for k, v in own.items()) or 'nothing (defaults)'}",
            f"  shared: {', '.join(f'{k}={v}' for k, v in protocol.settings(bench).items())}",
        ]
    for key in (args.method, "balancing_lr"):
        if key in protocol.sources:
            lines.append(f"source ({key}): {protocol.sources[key]}")
    return lines


def overridden(args: argparse.Namespace) -> list[str]:
    """The protocol settings this run overrides (each a reason to give no verdict)."""
    out = [f"{flag} {value}" for flag, value in (("--epochs", args.epochs), ("--last-k", args.last_k)) if value is not None]
    out += [f"--set {item}" for item in args.overrides if item.partition("=")[0] not in NOT_OVERRIDES]
    return [f"the protocol was overridden ({', '.join(out)})"] if out else []


def check(args: argparse.Namespace) -> tuple[Protocol, TrialConfig]:
    """Every refusal before anything runs; returns (protocol, validated config of the first seed)."""
    from mtlsearch.balancing import get_method
    from mtlsearch.benchmarks import get_benchmark
    from mtlsearch.config import TrialConfig
    from mtlsearch.protocols import get_protocol

    try:
        protocol = get_protocol(args.protocol)
    except ConfigError as err:
        raise ConfigError(err.message, field="--protocol") from None
    if not protocol.covers(args.benchmark):
        raise ConfigError(
            f"protocol {protocol.name!r} does not cover benchmark {args.benchmark!r}; it covers {', '.join(protocol.benchmarks)}",
            field="--benchmark",
        )
    try:
        get_method(args.method)
    except ConfigError as err:
        raise ConfigError(err.message, field="--method") from None
    for flag, value in (("--epochs", args.epochs), ("--last-k", args.last_k)):
        if value is not None and value < 1:
            raise ConfigError(f"must be >= 1, got {value}", field=flag)
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"expected distinct seeds, got {args.seeds}", field="--seeds")
    args.data_root = args.data_root or os.environ.get("MTLSEARCH_DATA_ROOT")
    if args.data_root:
        args.data_root = os.path.abspath(os.path.expanduser(args.data_root))
    args.overrides = args.overrides or []
    args.override_values = parse_overrides(args.overrides)
    cfg = TrialConfig.from_dict(trial_config(args, args.seeds[0]), source="--set")
    # The data folder (layout and the protocol's image size): one line and exit 2 when it is wrong.
    get_benchmark(cfg.benchmark, data_root=cfg.data_root, **cfg.benchmark_options)
    return protocol, cfg


# ------------------------------------------------------------------------------ budget
#: Training and test images of the real datasets (MTAN's preprocessed folders), for the estimate of a
#: full reproduction whatever folder was timed.
REAL_SIZES = {"nyuv2": (795, 654), "cityscapes": (2975, 500)}


def time_one_epoch(cfg: TrialConfig) -> dict[str, Any]:
    """Two training epochs, each with its evaluation; the **second** is timed (training and evaluation
    apart) on the device a trial would use: the first is mostly warm-up on small folders (allocator,
    cuDNN autotuning, caches), e.g. 7.9 s against 0.4-0.6 s for the next ones."""
    import torch

    from mtlsearch.trainer import Trainer

    trainer = Trainer(cfg)
    cuda = trainer.device.type == "cuda"
    device = f"cuda ({torch.cuda.get_device_name(trainer.device)})" if cuda else str(trainer.device)

    def now() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    warm = now()
    trainer.epoch_result(trainer.train_epoch())
    start = now()
    train = trainer.train_epoch()
    middle = now()
    trainer.epoch_result(train)
    end = now()
    n_train = len(trainer.splits["train"])
    n_eval = sum(len(v) for k, v in trainer.splits.items() if k != "train")
    steps = max(1, math.ceil(n_train / cfg.batch_size))
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "seconds": end - start,
        "first_seconds": start - warm,
        "timed_epoch": 2,
        "device": device,
        "step_s": (middle - start) / steps,
        "steps": steps,
        "eval_image_s": (end - middle) / max(n_eval, 1),
        "n_train": n_train,
        "n_eval": n_eval,
    }


def budget_lines(protocol: Protocol, args: argparse.Namespace, cfg: TrialConfig, timing: dict[str, Any] | None) -> list[str]:
    trials, epochs = len(args.seeds), cfg.max_epochs
    lines = [
        f"Reproduce {args.method} on {args.benchmark} under {protocol.tag}: {protocol.description}",
        f"Budget: {trials} trial(s) (seeds {' '.join(map(str, args.seeds))}) x {epochs} epochs = {trials * epochs} epochs; "
        f"batch {cfg.batch_size}, lr {cfg.lr:g}, score {protocol.score} on the mean of the last "
        f"{cfg.last_k or protocol.last_k} epochs",
    ]
    if timing is None:
        return lines + [
            "No GPU on this driver to time an epoch on (a cluster's head): no estimate; the progress "
            "lines and the trials' MLflow tag mtlsearch.time_total_s give the time per epoch"
        ]
    seconds = timing["seconds"]
    unit = "GPU-hours" if timing["device"].startswith("cuda") else "CPU-hours (no GPU here)"
    lines += [
        f"The second epoch ({timing['n_train']} training images in {timing['steps']} step{'s' if timing['steps'] != 1 else ''}, "
        f"{timing['n_eval']} evaluated; the first, {timing['first_seconds']:.1f} s of mostly warm-up, is not used) took "
        f"{seconds:.1f} s on {timing['device']} ({timing['step_s'] * 1000:.0f} ms per step, "
        f"{timing['eval_image_s'] * 1000:.1f} ms per evaluated image): estimated {seconds * epochs * trials / 3600:.2f} "
        f"{unit} in all, {seconds * epochs / 3600:.2f} h per trial",
    ]
    opts = cfg.benchmark_options
    full_size = opts.get("image_size") == protocol.image_size(args.benchmark) and opts.get("mtan_width", 1.0) == 1.0
    if args.benchmark in REAL_SIZES and full_size:
        n_train, n_test = REAL_SIZES[args.benchmark]
        epoch_s = math.ceil(n_train / cfg.batch_size) * timing["step_s"] + n_test * timing["eval_image_s"]
        lines.append(
            f"On the real {args.benchmark} ({n_train} training, {n_test} test images) at these per-step times: "
            f"{epoch_s:.0f} s per epoch, {epoch_s * epochs * trials / 3600:.2f} {unit} for {trials} x {epochs} epochs"
        )
    return lines


# ------------------------------------------------------------------------------ the comparison
#: How a published value was sourced (the ``source_kind`` of mtlsearch/references/published/*.json).
SOURCE_KINDS = {
    "primary": "from the method's own paper",
    "protocol": "from the protocol's paper, which ran this baseline",
    "secondary": "secondary: copied by a later paper's table from the original",
    "read_off_image": "read off a figure, not a table",
    "unverified": "unverified: its origin could not be checked",
    "suspect": "suspect",
}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


#: Student's t 0.975 quantiles for 1..30 degrees of freedom (the two-sided 95% interval).
_T975: tuple[float, ...] = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145)
_T975 += (2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t 0.975 quantile (a table to 30 degrees of freedom, then the Cornish-Fisher expansion)."""
    if df < 1:
        raise ValueError("a t quantile needs df >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def interval95(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(mean, low, high): the 95% Student-t interval of the mean over seeds; None with one seed."""
    if len(values) < 2:
        return None
    mean, std = _mean_std(values)
    half = t975(len(values) - 1) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


def verdict(
    values: Sequence[float], published: float, higher_is_better: bool, refusals: Sequence[str] = ()
) -> tuple[str | None, tuple[float, float, float] | None]:
    """``TIE`` when the seeds' 95% interval holds the published value, else ``BETTER`` or ``WORSE`` in the
    protocol's direction; None (no verdict) when there is a reason to refuse or no interval (one seed)."""
    ci = interval95(values)
    if refusals or ci is None:
        return None, ci
    _, low, high = ci
    if low <= published <= high:
        return "TIE", ci
    above = low > published
    return ("BETTER" if above == higher_is_better else "WORSE"), ci


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.4e}"


def compare(
    protocol: Protocol,
    benchmark: str,
    method: str,
    tasks_metrics: dict[str, dict[str, bool]],
    per_seed: dict[int, list[dict[str, float]]],
    last_k: int,
    data_root: str | None,
    refusals: Sequence[str] = (),
    published: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The comparison table and its figures from each seed's per-epoch results (all epochs, in order).
    ``refusals``: reasons to give no verdict (overridden settings, missing weights); the numbers are
    printed all the same.  ``published``: the published row (default: the protocol's stored one)."""
    from mtlsearch.protocols import mean_metrics, published_delta_m_check, published_metric_values, published_result, reference_for, score

    reference = reference_for(protocol, benchmark, list(tasks_metrics), data_root)
    if published is None:
        published = published_result(protocol.name, benchmark, method)
    seeds = sorted(per_seed)
    last = {s: [{t: {m: r[f"test/{t}/{m}"] for m in ms} for t, ms in tasks_metrics.items()} for r in per_seed[s][-last_k:]] for s in seeds}
    averaged = {s: mean_metrics(last[s]) for s in seeds}
    scores = {s: score(protocol, averaged[s], reference, tasks_metrics) for s in seeds} if reference else {}
    rows = [("metric", "ours (mean ± std)", "single-task", "published", "ours - published", "published in")]
    pub_metrics = (published_metric_values(protocol.name, published) if published else None) or {}
    # The table the per-metric values were read in, named on every metric's row ("Nash-MTL Table 2").
    pub_table = str((published or {}).get("metrics_table", "")).partition(",")[0]
    for t, ms in tasks_metrics.items():
        for m, lower in ms.items():
            mean, std = _mean_std([averaged[s][t][m] for s in seeds])
            pub = pub_metrics.get(t, {}).get(m)
            ref = reference[t][m] if reference else None
            rows.append(
                (
                    f"{t}/{m} ({'min' if lower else 'max'})",
                    f"{_fmt(mean)} ± {_fmt(std, 2)}",
                    _fmt(ref),
                    _fmt(pub) if pub is not None else ("missing" if published else "–"),
                    _fmt(mean - pub) if pub is not None else "–",
                    pub_table if pub is not None else "–",
                )
            )
    figures: dict[str, Any] = {"seeds": seeds, "published": published["value"] if published else None, "verdict": None}
    direction = "higher" if protocol.higher_is_better else "lower"
    name = protocol.score.split("/", 1)[1]
    # Ours (the project's Δm: per-task mean against the folder's single-task runs, higher is better),
    # when every seed has it; labelled apart from the protocol's, whose sign convention is opposite.
    ours_dm = [per_seed[s][-1].get("test/delta_m") for s in seeds]
    if all(v is not None for v in ours_dm):
        mean, std = _mean_std([float(v) for v in ours_dm if v is not None])
        rows.append(("test/delta_m % (ours: per-task mean, higher is better)", f"{mean:.2f} ± {std:.2f}", "0", "–", "–", "–"))
    if scores:
        mean, std = _mean_std([scores[s] for s in seeds])
        figures.update(ours=mean, std=std, per_seed=scores)
        pub = published["value"] if published else None
        rows.append(
            (
                f"{name} % (protocol's: {'per-task mean' if protocol.average == 'per_task' else 'all metrics'}, {direction} is better)",
                f"{mean:.2f} ± {std:.2f}",
                "0",
                _fmt(pub),
                f"{mean - pub:+.2f}" if pub is not None else "–",
                published["table"].partition(" (")[0] if published else "–",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"Ours vs published: {method} on {benchmark} under {protocol.tag}, seeds {' '.join(map(str, seeds))}; "
        f"each seed's mean of its last {last_k} epochs' test metrics, then mean ± std over seeds"
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if published:
        kind = published.get("source_kind", "primary")
        lines.append(
            f"Published {name}: {published['value']:.2f}, {published['table']} ({SOURCE_KINDS.get(kind, kind)}); {published['source']}"
        )
        if not pub_metrics:
            lines.append(f"Published per-metric values: missing ({published.get('metrics_missing', 'not stored')})")
        else:
            lines.append(f"Published per-metric values: {published['metrics_table']} ({SOURCE_KINDS.get(kind, kind)})")
            whole = all(t in tasks_metrics and set(v) <= set(tasks_metrics[t]) for t, v in published["metrics"].items())
            check = (
                published_delta_m_check(protocol.name, published, tasks_metrics) if protocol.average == "all_metrics" and whole else None
            )
            if check is not None:
                value, low, high, agrees = check
                lines.append(
                    f"Their {name}: {value:.2f} ({low:.2f} to {high:.2f} within the rounding of the printed digits), "
                    + (
                        f"which holds the published {published['value']:.2f}"
                        if agrees
                        else f"NOT the published {published['value']:.2f}: the source's own numbers disagree "
                        "(the verdict is against the published value)"
                    )
                )
    if not scores:
        lines.append(
            f"No {name}: no single-task reference for {benchmark} under {protocol.name} "
            "(a score is never computed against a made-up reference); no verdict"
        )
        return "\n".join(lines), figures
    if published is None:
        lines.append(f"No published {name} for {method} on {benchmark} under {protocol.name}: nothing to compare with; no verdict")
        return "\n".join(lines), figures
    reasons = list(refusals)
    if published.get("source_kind") == "suspect":
        reasons.append(f"the published value is suspect: {published.get('suspect', 'see the published file')}")
    values = [scores[s] for s in seeds]
    word, ci = verdict(values, published["value"], protocol.higher_is_better, reasons)
    figures["difference"] = figures["ours"] - published["value"]
    if ci is not None:
        figures["interval"] = (ci[1], ci[2])
    interval = f"95% interval [{ci[1]:.2f}, {ci[2]:.2f}] over {len(values)} seeds" if ci else "one seed: no interval (use --seeds 0 1 2)"
    head = f"{name} {figures['ours']:.2f} ({interval}) vs published {published['value']:.2f} ({published['table']})"
    if word is None:
        why = "; ".join(reasons) if reasons else "one seed gives no interval to test"
        lines.append(f"No verdict: {why}. {head}")
    else:
        figures["verdict"] = word
        meaning = {
            "TIE": "the interval holds the published value",
            "BETTER": f"the whole interval is {direction} than the published value",
            "WORSE": f"the whole interval is on the worse side of the published value ({direction} is better)",
        }[word]
        lines.append(f"Verdict: {word}: {head}: {meaning}")
    return "\n".join(lines), figures


# ------------------------------------------------------------------------------ the run
def make_collector() -> Any:
    """A Ray Tune callback keeping every result of every trial (the launcher runs the Tuner): its
    ``results`` (trial id -> results) and ``seeds`` (trial id -> seed).  Typed ``Any``: the class is
    made here so that Ray is imported only when a run starts."""
    from ray.tune import Callback

    class Collector(Callback):
        def __init__(self) -> None:
            self.results: dict[str, list[dict[str, Any]]] = {}
            self.seeds: dict[str, int] = {}

        def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
            self.results.setdefault(trial.trial_id, []).append(dict(result))
            self.seeds[trial.trial_id] = int(trial.config.get("seed", 0))

    return Collector()


def space_text(args: argparse.Namespace, protocol: Protocol, cfg: TrialConfig, first_task: str) -> str:
    params = {"method": args.method, "seed": {"grid": list(args.seeds)}, **args.override_values}
    if args.last_k:
        params["last_k"] = args.last_k
    space = {
        "name": f"reproduce-{protocol.name}-{args.benchmark}-{args.method}".replace("_", "-"),
        "description": f"{args.method} on {args.benchmark} under {protocol.tag}, seeds {args.seeds} "
        "(python -m mtlsearch.reproduce; nothing is selected: every seed runs to the end)",
        "benchmark": args.benchmark,
        "protocol": protocol.tag,
        # Tune needs a metric to order its table; no trial is selected or stopped on it.
        "objective": {"metric": f"train/{first_task}/loss", "mode": "min"},
        "budget": {"num_samples": 1, "max_epochs": cfg.max_epochs},
        "scheduler": {"type": "fifo"},
        "searcher": {"type": "random", "seed": 0},
        "params": params,
    }
    return yaml.safe_dump(space, sort_keys=False)


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        print("\n".join(dry_run_lines(args)))
        return 0
    if args.benchmark is None:
        raise ConfigError("required (a benchmark the protocol covers, e.g. nyuv2)", field="--benchmark")
    protocol, cfg = check(args)
    refusals = overridden(args)
    missing = protocol.missing_pretrained(cfg.benchmark, cfg.benchmark_options)
    if missing:
        print(f"warning: {missing}; no verdict will be given", file=sys.stderr, flush=True)
        refusals.append("the pretrained weights the protocol starts from are missing")
    import torch

    if (args.address or os.environ.get("RAY_ADDRESS")) and not torch.cuda.is_available() and not args.time_only:
        # A cluster's head often has no GPU: an epoch timed on its CPU would take long and say little.
        print("\n".join(budget_lines(protocol, args, cfg, None)), flush=True)
    else:
        timing = time_one_epoch(cfg)
        print("\n".join(budget_lines(protocol, args, cfg, timing)), flush=True)
    if args.time_only:
        return 0

    from mtlsearch import launch
    from mtlsearch.options import SearchOptions

    gpus = args.gpus_per_trial
    if gpus is None:
        import torch

        gpus = 1.0 if torch.cuda.is_available() else 0.0
    folder = Path(tempfile.mkdtemp(prefix="mtlsearch-reproduce-"))
    space_file = folder / f"reproduce-{protocol.name}-{args.benchmark}-{args.method}.yaml"
    from mtlsearch.benchmarks import get_benchmark

    bench = get_benchmark(cfg.benchmark, data_root=cfg.data_root, **cfg.benchmark_options)
    tasks = {t.name: dict(t.metrics) for t in bench.task_specs() if not cfg.tasks or t.name in cfg.tasks}
    space_file.write_text(space_text(args, protocol, cfg, next(iter(tasks))))
    argv = [
        "--space",
        str(space_file),
        "--gpus-per-trial",
        str(gpus),
        "--cpus-per-trial",
        str(args.cpus_per_trial),
        "--experiment",
        args.experiment or f"reproduce-{protocol.name}-{args.benchmark}",
    ]
    if args.data_root:
        argv += ["--data-root", args.data_root]
    for flag, value in (("--address", args.address), ("--storage", args.storage), ("--tracking-uri", args.tracking_uri)):
        if value:
            argv += [flag, value]
    options = SearchOptions(
        space=str(space_file),
        gpus_per_trial=gpus,
        cpus_per_trial=args.cpus_per_trial,
        experiment=args.experiment or f"reproduce-{protocol.name}-{args.benchmark}",
        data_root=args.data_root or None,
        address=args.address or None,
        storage=args.storage or None,
        tracking_uri=args.tracking_uri or None,
        argv=tuple(argv),
    )
    collector = make_collector()
    code = launch.execute(options, callbacks=[collector]).exit_code
    if code != 0:
        return code

    # One result per epoch (a trial retried from its checkpoint reports its later epochs again).
    per_seed = {
        collector.seeds[tid]: [r for _, r in sorted({int(r["epoch"]): r for r in rs}.items())] for tid, rs in collector.results.items()
    }
    incomplete = [s for s, rs in per_seed.items() if not rs or rs[-1]["epoch"] < cfg.max_epochs]
    if incomplete or len(per_seed) < len(args.seeds):
        print(
            f"error: seed(s) {incomplete or sorted(set(args.seeds) - set(per_seed))} did not reach {cfg.max_epochs} epochs; no comparison",
            file=sys.stderr,
        )
        return 1
    table, _ = compare(protocol, cfg.benchmark, cfg.method, tasks, per_seed, cfg.last_k or protocol.last_k, cfg.data_root, refusals)
    print()
    print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
