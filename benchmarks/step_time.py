"""Step-time benchmark: what each balancing method and optimizer costs per training step (prints tables).

    python benchmarks/step_time.py [--threads 1] [--repeats 7] [--steps 20] [--cross] [--models resnet50 ...]

(a) One training step (``Trainer.train_step`` on a fixed batch of 64) on ``multidigits`` on the CPU,
    relative to ``ew`` + ``adam``: every method registered in ``mtlsearch.balancing.METHODS`` when this
    runs (gradient-level ones in each of their modes) under ``adam``, and ``ew`` under every optimizer
    (AdaTask variants included); ``--cross`` times every valid method x mode x optimizer combination.
    All trainers are built first, warmed up, then timed in rounds, each in a shuffled order; the figure is the median
    over rounds of the mean step time within a round.
(b) The AdaTask optimizer step alone (``AdamAdaTask``, vectorised with ``torch._foreach_*``) against a
    naive reference that loops in Python over parameters and tasks (the structure of the released code),
    on ResNet-50's parameter shapes (torchvision ``resnet50(weights=None)``, 161 tensors, 25.6M values)
    and EfficientNet-B0's (213 mostly small tensors, 5.3M values: where per-call overhead matters) with
    3 tasks, on the CPU and, when visible, on CUDA.  Both are checked to give the same parameters.
(c) With CUDA: the ``nyuv2`` model (if that benchmark is registered) under ew / adam_adatask / imtl_g /
    imtl_h; ``--nyuv2-root`` points at the data, else a few random samples in the documented layout are
    written to a temporary folder (step times do not depend on the pixel values).

This is a measurement script, not a test: figures depend on the machine and on its load.
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlsearch.balancing import METHODS, GradBalancing  # noqa: E402
from mtlsearch.errors import ConfigError  # noqa: E402
from mtlsearch.optim import OPTIMIZERS, AdamAdaTask  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(runners: dict[str, Callable[[], Any]], *, steps: int, repeats: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Seconds per call of each runner: median over rounds (each in a shuffled order) of the mean over ``steps`` calls."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # no configuration always runs first (or right after the same neighbour)
        for name in order:
            run = runners[name]
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                run()
            sync(device)
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


# ---------------------------------------------------------------------------- (a) training steps
def training_configs(cross: bool) -> list[dict[str, Any]]:
    def modes(method: str) -> list[str | None]:
        cls = METHODS[method]
        return list(cls.modes) if issubclass(cls, GradBalancing) else [None]

    configs = [{"method": "ew", "optimizer": "adam"}]
    optimizers = OPTIMIZERS if cross else ["adam"]
    for method in sorted(METHODS):
        for mode in modes(method):
            for opt in optimizers:
                cfg = {"method": method, "optimizer": opt, **({"grad_mode": mode} if mode else {})}
                if cfg not in configs:
                    configs.append(cfg)
    if not cross:
        configs += [{"method": "ew", "optimizer": opt} for opt in OPTIMIZERS if opt != "adam"]
    return configs


def label(cfg: dict[str, Any]) -> str:
    method = cfg["method"] + (f"[{cfg['grad_mode']}]" if cfg.get("grad_mode") else "")
    return f"{method:<18} {cfg['optimizer']:<16}"


def bench_training(args: argparse.Namespace, benchmark: str, device: str, configs: list[dict[str, Any]], batch_size: int) -> dict[str, float]:
    from mtlsearch.trainer import Trainer

    runners: dict[str, Callable[[], Any]] = {}
    for cfg in configs:
        full = {"benchmark": benchmark, "device": device, "batch_size": batch_size, "seed": 0, **cfg}
        if args.nyuv2_root and benchmark == "nyuv2":
            full["data_root"] = args.nyuv2_root
        try:
            trainer = Trainer(full)
        except (ConfigError, NotImplementedError, ValueError, OSError) as err:
            print(f"  skipped {label(cfg).strip()}: {err}")
            continue
        x, targets = next(trainer.splits["train"].batches(batch_size, shuffle=False))
        runners[label(cfg)] = (lambda tr=trainer, x=x, t=targets: tr.train_step(x, t))
    return median_times(runners, steps=args.steps, repeats=args.repeats, warmup=args.warmup, device=torch.device(device))


def print_relative(title: str, times: dict[str, float]) -> None:
    base = times[label({"method": "ew", "optimizer": "adam"})]
    print(f"\n{title}")
    print(f"{'method':<18} {'optimizer':<16} {'ms/step':>9} {'x ew':>7}")
    for name, t in times.items():
        print(f"{name} {t * 1e3:>9.2f} {t / base:>7.2f}")


# ---------------------------------------------------------------------------- (b) optimizer step alone
class NaiveAdamAdaTask:
    """Reference: Adam with AdaTask as a Python loop over parameters and tasks (same math, same eps)."""

    def __init__(self, params: list[torch.Tensor], num_tasks: int, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.num_tasks, self.lr, self.betas, self.eps = params, num_tasks, lr, betas, eps
        self.state = [
            {"step": 0, "m": [torch.zeros_like(p) for _ in range(num_tasks)], "v": [torch.zeros_like(p) for _ in range(num_tasks)]}
            for p in params
        ]

    @torch.no_grad()
    def step(self, task_grads: list[torch.Tensor]) -> None:
        beta1, beta2 = self.betas
        for p, g, st in zip(self.params, task_grads, self.state):
            st["step"] += 1
            bc1, bc2 = 1 - beta1 ** st["step"], 1 - beta2 ** st["step"]
            for t in range(self.num_tasks):
                m, v = st["m"][t], st["v"][t]
                m.mul_(beta1).add_(g[t], alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g[t], g[t], value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / bc1)


def bench_optimizer_step(args: argparse.Namespace, model: str, device: torch.device, num_tasks: int = 3) -> None:
    import torchvision

    shapes = [p.shape for p in getattr(torchvision.models, model)(weights=None).parameters()]
    numel = sum(math.prod(s) for s in shapes)
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(*s, generator=gen).to(device) for s in shapes]
    grads = [torch.randn(num_tasks, *s, generator=gen).to(device) for s in shapes]
    ours_params = [p.clone() for p in init]
    naive_params = [p.clone() for p in init]
    ours = AdamAdaTask(ours_params, num_tasks=num_tasks, lr=1e-3)
    naive = NaiveAdamAdaTask(naive_params, num_tasks=num_tasks, lr=1e-3)
    for _ in range(2):  # same math: check before timing
        ours.step(task_grads=grads)
        naive.step(grads)
    worst = max(float((a - b).abs().max()) for a, b in zip(ours_params, naive_params))
    del init
    times = median_times(
        {"AdamAdaTask (foreach)": lambda: ours.step(task_grads=grads), "naive loop (params x tasks)": lambda: naive.step(grads)},
        steps=args.opt_steps, repeats=args.repeats, warmup=1, device=device,
    )
    print(f"\n(b) AdaTask optimizer step alone, {model} shapes ({len(shapes)} tensors, {numel / 1e6:.1f}M values), "
          f"{num_tasks} tasks, {device.type}; max |difference| after 2 steps {worst:.1e}")
    print(f"{'implementation':<30} {'ms/step':>9} {'x foreach':>10}")
    base = times["AdamAdaTask (foreach)"]
    for name, t in times.items():
        print(f"{name:<30} {t * 1e3:>9.1f} {t / base:>10.2f}")


# ---------------------------------------------------------------------------- (c) NYUv2-sized model on CUDA
def fake_nyuv2(root: Path, n: int = 16) -> None:
    """A few random samples in the documented layout: {train,val}/{image,label,depth,normal}/<i>.npy, 288x384."""
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for kind in ("image", "label", "depth", "normal"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((288, 384, 3), dtype=np.float32))
            np.save(root / split / "label" / f"{i}.npy", rng.integers(-1, 13, (288, 384)).astype(np.float32))
            np.save(root / split / "depth" / f"{i}.npy", rng.random((288, 384, 1), dtype=np.float32))
            normal = rng.normal(size=(288, 384, 3)).astype(np.float32)
            np.save(root / split / "normal" / f"{i}.npy", normal / np.linalg.norm(normal, axis=-1, keepdims=True))


def bench_nyuv2(args: argparse.Namespace) -> None:
    from mtlsearch.benchmarks import BENCHMARKS

    if "nyuv2" not in BENCHMARKS:
        print("\n(c) skipped: the nyuv2 benchmark is not registered in mtlsearch.benchmarks")
        return
    configs = [{"method": "ew", "optimizer": "adam"}, {"method": "ew", "optimizer": "adam_adatask"}]
    configs += [{"method": m, "optimizer": "adam"} for m in ("imtl_g", "imtl_h") if m in METHODS]
    missing = [m for m in ("imtl_g", "imtl_h") if m not in METHODS]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.nyuv2_root:
            fake_nyuv2(Path(tmp))
            args.nyuv2_root = tmp
        times = bench_training(args, "nyuv2", "cuda", configs, batch_size=8)
    print_relative(f"(c) nyuv2 training step, batch 8, {torch.cuda.get_device_name()}", times)
    if missing:
        print(f"  (not registered: {', '.join(missing)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (default 1)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round in (a)")
    parser.add_argument("--opt-steps", type=int, default=3, help="optimizer steps per round in (b)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cross", action="store_true", help="(a): every method x mode x optimizer")
    parser.add_argument(
        "--models", nargs="*", default=["resnet50", "efficientnet_b0"],
        help="(b): torchvision models whose parameter shapes are used (none: skip (b))",
    )
    parser.add_argument("--nyuv2-root", default=None, help="(c): NYUv2 folder (default: random samples)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s); methods: {', '.join(sorted(METHODS))}; "
          f"optimizers: {', '.join(OPTIMIZERS)}")
    times = bench_training(args, "multidigits", "cpu", training_configs(args.cross), batch_size=64)
    print_relative(f"(a) multidigits training step, batch 64, CPU (median of {args.repeats} rounds of {args.steps} steps)", times)
    for model in args.models:
        bench_optimizer_step(args, model, torch.device("cpu"))
        if torch.cuda.is_available():
            bench_optimizer_step(args, model, torch.device("cuda"))
    if torch.cuda.is_available():
        bench_nyuv2(args)
    else:
        print("\n(c) skipped: no CUDA device")
    return 0


if __name__ == "__main__":
    sys.exit(main())
