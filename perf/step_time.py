"""Step-time benchmark: what each balancing method and optimizer costs per training step (prints tables).

    python perf/step_time.py [--parts a b c d e f] [--threads 1] [--repeats 7] [--steps 20] [--cross]

(a) One training step (``Trainer.train_step`` on a fixed batch of 64) on ``multidigits`` on the CPU,
    relative to ``ew`` + ``adam``: every method registered in ``mtlsearch.balancing.METHODS`` when this
    runs (gradient-level ones in each of their modes) under ``adam``, and ``ew`` under every optimizer
    (AdaTask variants included); ``--cross`` times every valid method x mode x optimizer combination.
    All trainers are built first, warmed up, then timed in rounds, each in a shuffled order; the figure is the median
    over rounds of the mean step time within a round.
(b) The AdaTask optimizer step alone: ``AdamAdaTask`` on its flat buffers, the same optimizer on its
    per-parameter ``torch._foreach_*`` path (the implementation before the flat state; the two are checked
    to give the same bits), and a naive reference that loops in Python over parameters and tasks (the
    structure of the released code); with the memory-traffic floor of the step (the bytes it must move
    at a measured copy bandwidth),
    on ResNet-50's parameter shapes (torchvision ``resnet50(weights=None)``, 161 tensors, 25.6M values)
    and EfficientNet-B0's (213 mostly small tensors, 5.3M values: where per-call overhead matters) with
    3 tasks, on the CPU and, when visible, on CUDA.  Both are checked to give the same parameters.
(c) The ``nyuv2`` model (dilated ResNet-50, three ASPP heads, batch 8 at 288x384) under ew / adam_adatask /
    imtl_g / imtl_h, plus the plain AdaTask implementation to beat (one backward pass per task, the
    per-parameter loop of (b)), all with the default GPU settings, relative to ew (issue targets:
    IMTL-G/H <= 1.25x, AdaTask-Adam <= 2.2x).
(d) The default ew step (bf16 autocast, channels_last, cuDNN autotuning, fused Adam, data on the GPU)
    against a plain fp32 PyTorch step of the same model as the reference implementations write it
    (contiguous tensors, no autotuning, torch's default Adam, each batch copied from host memory, one
    backward pass of the summed losses), and bf16 alone in between (target: default <= 0.65x plain); with
    ``--step-options`` also the default step with ``compile: encoder`` / ``encoder_graphs`` (torch.compile,
    CUDA graphs), at each batch size of ``--precision-batches``.
(e) Metrics after a short run (``--short-epochs`` on generated, learnable NYUv2-format data) with the
    default step and with the plain fp32 step, and the plain step with another seed for the noise.
(f) Memory and throughput with 1, 2 and 4 trials sharing the device: that many worker processes, each
    a default ew trainer given a 1/k share of the device (as Ray's fractional GPUs give it), started
    together; steps/s per trial and in all, peak memory per trial.
(g) Every registered method on the ``nyuv2`` model relative to ``ew`` (default GPU settings, adam):
    gradient-level ones in each of their modes (rep and param), loss-level ones once.  Each configuration
    is built, warmed up, timed and freed in turn (they do not all fit at once); ``ew`` is timed first and
    last, so drift shows.  Beside the published ratios of ../shared/PROTOCOLS.md (e.g. Nash-MTL 2.34x,
    FAMO 1.19x, GO4Align 1.02x on NYUv2, their implementations, their GPU).

(c)-(g) run on CUDA (``--device cuda``, the default when visible); ``--device cpu --size 32x64
--backbone resnet18`` runs them on tiny inputs on the CPU, only to check that the script works.
``--nyuv2-root`` points at real data for (c), (d), (f) and (g), else data in the NYUv2 layout is generated
into a temporary folder (:mod:`mtlsearch.benchmarks.generate`; step times do not depend on pixel values).

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

from mtlsearch.balancing import METHODS, GradBalancing
from mtlsearch.benchmarks.generate import parse_size, generate
from mtlsearch.errors import ConfigError
from mtlsearch.optim import OPTIMIZERS, AdamAdaTask


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


def first_batch(trainer, batch_size: int, on_device: bool = True):
    """The first training batch (unshuffled), moved to the trainer's device unless ``on_device`` is false."""
    batch = next(trainer.splits["train"].batches(batch_size, shuffle=False))
    return trainer._to_device(*batch) if on_device else batch


def bench_training(
    args: argparse.Namespace, benchmark: str, device: str, configs: list[dict[str, Any]], batch_size: int
) -> dict[str, float]:
    from mtlsearch.trainer import Trainer

    runners: dict[str, Callable[[], Any]] = {}
    for cfg in configs:
        full = {"benchmark": benchmark, "device": device, "batch_size": batch_size, "seed": 0, **cfg}
        try:
            trainer = Trainer(full)
        except (ConfigError, NotImplementedError, ValueError, OSError) as err:
            print(f"  skipped {label(cfg).strip()}: {err}")
            continue
        x, targets = first_batch(trainer, batch_size, on_device=False)
        runners[label(cfg)] = lambda tr=trainer, x=x, t=targets: tr.train_step(x, t)
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


def memory_bandwidth(device: torch.device, mib: int = 256) -> float:
    """Bytes per second of a large device-to-device copy (read + write), the best of a few."""
    src = torch.ones(mib * 2**18, device=device)
    dst = torch.empty_like(src)
    best = math.inf
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best


def bench_optimizer_step(args: argparse.Namespace, model: str, device: torch.device, num_tasks: int = 3) -> None:
    """AdamAdaTask on flat buffers, the same on its per-parameter foreach path (the implementation
    before the flat state) and the naive loop; and the memory-traffic floor of the step."""
    import torchvision

    shapes = [p.shape for p in getattr(torchvision.models, model)(weights=None).parameters()]
    numel = sum(math.prod(s) for s in shapes)
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(*s, generator=gen).to(device) for s in shapes]
    grads = [torch.randn(num_tasks, *s, generator=gen).to(device) for s in shapes]
    flat_params = [p.clone() for p in init]
    foreach_params = [p.clone() for p in init]
    naive_params = [p.clone() for p in init]
    flat = AdamAdaTask(flat_params, num_tasks=num_tasks, lr=1e-3)
    foreach = AdamAdaTask(foreach_params, num_tasks=num_tasks, lr=1e-3)
    foreach.flat = False
    naive = NaiveAdamAdaTask(naive_params, num_tasks=num_tasks, lr=1e-3)
    for _ in range(2):  # same math: check before timing
        flat.step(task_grads=grads)
        foreach.step(task_grads=grads)
        naive.step(grads)
    worst = max(float((a - b).abs().max()) for a, b in zip(flat_params, naive_params))
    same = all(torch.equal(a, b) for a, b in zip(flat_params, foreach_params))
    names = {"flat": "AdamAdaTask (flat)", "foreach": "per-parameter foreach", "naive": "naive loop (params x tasks)"}
    runners: dict[str, Callable[[], Any]] = {
        names["flat"]: lambda: flat.step(task_grads=grads),
        names["foreach"]: lambda: foreach.step(task_grads=grads),
        names["naive"]: lambda: naive.step(grads),
    }
    fused_note = ""
    if device.type == "cuda":  # the compiled rule (fused_update): CUDA's whole-buffer path only
        fused_params = [p.clone() for p in init]
        fused = AdamAdaTask(fused_params, num_tasks=num_tasks, lr=1e-3)
        fused.fused_update = True
        try:
            start = time.perf_counter()
            for _ in range(2):
                fused.step(task_grads=grads)
            sync(device)
            fused_worst = max(float((a - b).abs().max()) for a, b in zip(fused_params, flat_params))
            fused_note = f"; fused compiled in {time.perf_counter() - start:.0f} s, max |fused - flat| {fused_worst:.1e}"
            runners["AdamAdaTask (flat, fused)"] = lambda: fused.step(task_grads=grads)
        except Exception as err:  # a measurement script: report and go on without the row
            fused_note = f"; fused failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    del init
    times = median_times(
        runners,
        steps=args.opt_steps,
        repeats=args.repeats,
        warmup=1,
        device=device,
    )
    # The least memory traffic of an AdaTask-Adam step: read the T gradients, read and write m_t and
    # v_t, read and write the parameters (4-byte floats); at the measured copy bandwidth.
    moved = (num_tasks * (1 + 2 * len(AdamAdaTask.accumulators)) + 2) * numel * 4
    bandwidth = memory_bandwidth(device)
    floor = moved / bandwidth
    print(
        f"\n(b) AdaTask optimizer step alone, {model} shapes ({len(shapes)} tensors, {numel / 1e6:.1f}M values), "
        f"{num_tasks} tasks, {device_name_of(device, args)}; flat = per-parameter foreach bit for bit: {same}; "
        f"max |flat - loop| after 2 steps {worst:.1e}"
    )
    if fused_note:
        print(f"    {fused_note[2:]}")
    print(f"    memory-traffic floor: {moved / 1e9:.2f} GB per step at {bandwidth / 1e9:.1f} GB/s (a measured copy) = {floor * 1e3:.2f} ms")
    print(f"{'implementation':<30} {'ms/step':>9} {'x flat':>8} {'x floor':>8}")
    base = times[names["flat"]]
    for name, t in times.items():
        print(f"{name:<30} {t * 1e3:>9.1f} {t / base:>8.2f} {t / floor:>8.1f}")
    print(
        f"    naive loop / flat = {times[names['naive']] / base:.1f}x (GPU target >= 10x); flat / floor = {base / floor:.1f}x (target <= 3x)"
    )


def device_name_of(device: torch.device, args: argparse.Namespace) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({args.threads} thread(s))"


# ---------------------------------------------------------------------------- (c)-(f) the NYUv2-sized model
def nyuv2_config(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    cfg = {
        "benchmark": "nyuv2",
        "data_root": args.nyuv2_root,
        "device": args.device,
        "batch_size": args.batch_size,
        "seed": 0,
        "method": "ew",
        "optimizer": "adam",
        "lr": 1e-4,
        "backbone": args.backbone,
    }
    return {**cfg, **overrides}


def naive_adatask_runner(args: argparse.Namespace) -> Callable[[], Any]:
    """The implementation to beat: one backward pass per task through the whole network for the
    shared parameters' per-task gradients, then the per-parameter x per-task loop of (b)."""
    from mtlsearch.trainer import Trainer

    trainer = Trainer(nyuv2_config(args))  # for its model, data and losses; its own optimizer is unused
    model, shared = trainer.model, trainer.shared
    heads = [p for p in model.parameters() if all(p is not q for q in shared)]
    head_opt = torch.optim.Adam(heads, lr=1e-4)
    naive = NaiveAdamAdaTask(shared, len(trainer.task_names), lr=1e-4)
    x, targets = first_batch(trainer, args.batch_size)

    def step() -> None:
        model.train()
        head_opt.zero_grad(set_to_none=True)
        with trainer._autocast():
            z = model.encoder(x)
            losses = trainer._losses([z] * len(trainer.task_names), targets).float()
        per_task = [torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True) for loss in losses]
        per_param = [[g if g is not None else torch.zeros_like(p) for g in gs] for p, gs in zip(shared, zip(*per_task))]
        losses.sum().backward(inputs=heads)
        head_opt.step()
        naive.step(per_param)

    return step


def bench_methods_nyuv2(args: argparse.Namespace) -> None:
    configs = [
        {"method": "ew", "optimizer": "adam"},
        {"method": "ew", "optimizer": "adam_adatask"},
        {"method": "imtl_g", "optimizer": "adam"},
        {"method": "imtl_h", "optimizer": "adam"},
    ]
    runners = {}
    from mtlsearch.trainer import Trainer

    for cfg in configs:
        trainer = Trainer(nyuv2_config(args, **cfg))
        x, targets = first_batch(trainer, args.batch_size)
        runners[label(cfg)] = lambda tr=trainer, x=x, t=targets: tr.train_step(x, t)
    runners[f"{'plain adatask':<18} {'(T backwards, loop)':<16}"] = naive_adatask_runner(args)
    times = median_times(runners, steps=args.gpu_steps, repeats=args.repeats, warmup=args.warmup, device=torch.device(args.device))
    print_relative(f"(c) nyuv2 training step by method, batch {args.batch_size}, {device_name(args)}", times)


def plain_reference_runner(args: argparse.Namespace, batch_size: int | None = None) -> Callable[[], Any]:
    """A plain fp32 PyTorch step of the same model, written as the reference implementations write it:
    contiguous tensors, no autotuning, ``torch.optim.Adam`` with its default kernels, the batch copied
    from host memory, the sum of the task losses, one backward pass."""
    from mtlsearch.trainer import Trainer

    batch_size = batch_size or args.batch_size
    trainer = Trainer(nyuv2_config(args, amp="off", gpu_speedups=False, batch_size=batch_size))  # the model and the data only
    model, device, tasks = trainer.model, trainer.device, trainer.tasks
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, targets = first_batch(trainer, batch_size, on_device=False)  # a disk split: host tensors

    def step() -> None:
        torch.backends.cudnn.benchmark = False
        xb, tb = x.to(device), {k: v.to(device) for k, v in targets.items()}
        model.train()
        optimizer.zero_grad()
        preds = model(xb)
        loss = sum(spec.loss(preds[spec.name], tb[spec.name]) for spec in tasks)
        loss.backward()
        optimizer.step()

    return step


def bench_precision(args: argparse.Namespace) -> None:
    """(d) at each of ``--precision-batches``: the default step, bf16 alone, the default with each step
    option of ``--step-options`` (``compile: encoder`` / ``encoder_graphs``), and the plain fp32 step."""
    from mtlsearch.trainer import Trainer

    settings: dict[str, dict[str, Any]] = {"default (bf16, speedups)": {}, "bf16 only": {"gpu_speedups": False}}
    for option in args.step_options:
        settings[f"default + compile {option}"] = {"compile": option}
    for batch_size in args.precision_batches:
        runners: dict[str, Callable[[], Any]] = {}
        for name, extra in settings.items():
            try:
                trainer = Trainer(nyuv2_config(args, batch_size=batch_size, **extra))
            except (ConfigError, NotImplementedError, ValueError) as err:
                print(f"  skipped {name}: {err}")
                continue
            fast = trainer.config.gpu_speedups
            x, targets = first_batch(trainer, batch_size, on_device=fast)  # held on the GPU when fast

            def run(tr=trainer, x=x, t=targets, fast=fast):
                torch.backends.cudnn.benchmark = fast  # process-wide: set per runner
                tr.train_step(*tr._to_device(x, t))  # a no-op move when held, a host copy otherwise

            runners[name] = run
        runners["plain fp32 (reference)"] = plain_reference_runner(args, batch_size)
        start = time.perf_counter()
        times = median_times(runners, steps=args.gpu_steps, repeats=args.repeats, warmup=args.warmup, device=torch.device(args.device))
        base = times["plain fp32 (reference)"]
        print(
            f"\n(d) nyuv2 ew step by precision and settings, batch {batch_size}, {device_name(args)} (target: default <= 0.65x plain); "
            f"{time.perf_counter() - start:.0f} s with warm-up and compilation"
        )
        print(f"{'setting':<34} {'ms/step':>9} {'x plain fp32':>13}")
        for name, t in times.items():
            print(f"{name:<34} {t * 1e3:>9.2f} {t / base:>13.2f}")


def bench_short_run(args: argparse.Namespace) -> None:
    from mtlsearch.trainer import Trainer

    runs = {
        "default, seed 0": {},
        "plain fp32, seed 0": {"amp": "off", "gpu_speedups": False},
        "plain fp32, seed 1": {"amp": "off", "gpu_speedups": False, "seed": 1},
    }
    with tempfile.TemporaryDirectory() as tmp:
        generate("nyuv2", tmp, train=args.short_train, test=args.short_train // 4, size=args.size, seed=0)
        finals = {}
        for name, extra in runs.items():
            start = time.perf_counter()
            trainer = Trainer(nyuv2_config(args, data_root=tmp, max_epochs=args.short_epochs, lr=1e-3, **extra))
            torch.backends.cudnn.benchmark = trainer.config.gpu_speedups
            *_, result = trainer.run()
            finals[name] = {k: v for k, v in result.items() if k.startswith("val/") and k != "val/delta_m"}
            finals[name]["seconds"] = time.perf_counter() - start
    keys = list(next(iter(finals.values())))
    print(
        f"\n(e) val metrics after {args.short_epochs} epochs on {args.short_train} generated NYUv2-format examples "
        f"({device_name(args)}); compare default vs plain with plain seed 0 vs seed 1 (the noise)"
    )
    print(f"{'metric':<30}" + "".join(f"{name:>20}" for name in finals))
    for key in keys:
        print(f"{key:<30}" + "".join(f"{finals[name][key]:>20.4f}" for name in finals))


def worker(args: argparse.Namespace) -> int:
    """One trial of (f): wait for the others, time ``--gpu-steps`` default ew steps, print one JSON line."""
    import json

    from mtlsearch.trainer import Trainer

    trainer = Trainer(nyuv2_config(args), device_share=1 / args.worker_count)
    x, targets = first_batch(trainer, args.batch_size)
    for _ in range(args.warmup):
        trainer.train_step(x, targets)
    sync(trainer.device)
    ready = Path(args.worker_dir) / f"ready-{args.worker}"
    ready.touch()
    while len(list(Path(args.worker_dir).glob("ready-*"))) < args.worker_count:
        time.sleep(0.01)
    start = time.perf_counter()
    for _ in range(args.gpu_steps):
        trainer.train_step(x, targets)
    sync(trainer.device)
    elapsed = time.perf_counter() - start
    out = {"steps_per_s": args.gpu_steps / elapsed}
    if trainer.device.type == "cuda":
        out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    else:  # the process's peak resident memory (Linux reports KiB)
        import resource

        out["peak_allocated_gib"] = out["peak_reserved_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(out), flush=True)
    return 0


def bench_sharing(args: argparse.Namespace) -> None:
    import json
    import subprocess

    print(
        f"\n(f) k trials sharing one device ({device_name(args)}), default ew step, batch {args.batch_size}; "
        "peak memory per process: PyTorch's on CUDA (plus about 0.5 GiB of CUDA context each), resident memory on the CPU"
    )
    print(f"{'trials':>6} {'steps/s per trial':>18} {'steps/s in all':>15} {'peak alloc GiB':>15} {'peak reserved GiB':>18}")
    for k in args.share:
        with tempfile.TemporaryDirectory() as sync_dir:
            cmd = [
                sys.executable,
                __file__,
                "--device",
                args.device,
                "--nyuv2-root",
                args.nyuv2_root,
                "--batch-size",
                str(args.batch_size),
                "--backbone",
                args.backbone,
                "--gpu-steps",
                str(args.gpu_steps),
                "--warmup",
                str(args.warmup),
                "--threads",
                str(args.threads),
                "--worker-dir",
                sync_dir,
                "--worker-count",
                str(k),
            ]
            procs = [subprocess.Popen([*cmd, "--worker", str(i)], stdout=subprocess.PIPE, text=True) for i in range(k)]
            results = []
            for proc in procs:
                stdout, _ = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"(f): a worker failed (exit {proc.returncode})")
                results.append(json.loads(stdout.strip().splitlines()[-1]))
        rates = [r["steps_per_s"] for r in results]
        alloc = max((r.get("peak_allocated_gib", math.nan) for r in results), default=math.nan)
        reserved = max((r.get("peak_reserved_gib", math.nan) for r in results), default=math.nan)
        print(f"{k:>6} {statistics.mean(rates):>18.2f} {sum(rates):>15.2f} {alloc:>15.2f} {reserved:>18.2f}")


def bench_all_methods_nyuv2(args: argparse.Namespace) -> None:
    from mtlsearch.trainer import Trainer

    configs: list[dict[str, Any]] = [{"method": "ew", "optimizer": "adam"}]
    for method in sorted(METHODS):
        cls = METHODS[method]
        modes = list(cls.modes) if issubclass(cls, GradBalancing) else [None]
        configs += [{"method": method, "optimizer": "adam", **({"grad_mode": m} if m else {})} for m in modes]
    configs = [c for c in configs if c != {"method": "ew", "optimizer": "adam"}]
    configs = [{"method": "ew", "optimizer": "adam"}, *configs, {"method": "ew", "optimizer": "adam", "again": True}]
    device = torch.device(args.device)
    times: dict[str, float] = {}
    for cfg in configs:
        name = f"{'ew (again)':<18} {'adam':<16}" if cfg.pop("again", False) else label(cfg)
        try:
            trainer = Trainer(nyuv2_config(args, **cfg))
        except (ConfigError, NotImplementedError, ValueError) as err:
            print(f"  skipped {name.strip()}: {err}")
            continue
        x, targets = first_batch(trainer, args.batch_size)
        times[name] = median_times(
            {name: lambda tr=trainer, x=x, t=targets: tr.train_step(x, t)},
            steps=args.method_steps,
            repeats=args.repeats,
            warmup=2,
            device=device,
        )[name]
        del trainer, x, targets
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = times[label({"method": "ew", "optimizer": "adam"})]
    print(
        f"\n(g) nyuv2 training step of every method, batch {args.batch_size}, {device_name(args)}, relative to ew "
        f"(first ew row); each timed alone, median of {args.repeats} rounds of {args.method_steps} steps"
    )
    print(f"{'method':<18} {'optimizer':<16} {'ms/step':>9} {'x ew':>7}")
    for name, t in times.items():
        print(f"{name} {t * 1e3:>9.2f} {t / base:>7.2f}")


def device_name(args: argparse.Namespace) -> str:
    if args.device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({args.threads} thread(s), smoke-test sizes)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        nargs="*",
        default=list("abcdefg"),
        choices=list("abcdefg"),
        help="which tables (default all; (c)-(g) are skipped without CUDA unless --device cpu)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU (default 1)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per round in (a)")
    parser.add_argument("--opt-steps", type=int, default=3, help="optimizer steps per round in (b)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cross", action="store_true", help="(a): every method x mode x optimizer")
    parser.add_argument(
        "--models",
        nargs="*",
        default=["resnet50", "efficientnet_b0"],
        help="(b): torchvision models whose parameter shapes are used (none: skip (b))",
    )
    parser.add_argument("--opt-devices", nargs="*", default=["cpu", "cuda"], choices=["cpu", "cuda"], help="(b): where (cuda when visible)")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else None,
        choices=["cuda", "cpu"],
        help="(c)-(g): where the NYUv2-sized model runs (default cuda when visible)",
    )
    parser.add_argument("--nyuv2-root", default=None, help="(c), (d), (f): NYUv2 folder (default: generated data)")
    parser.add_argument("--size", type=parse_size, default=None, help="(c)-(f): HxW of generated data (default 288x384)")
    parser.add_argument("--backbone", default="resnet50", help="(c)-(f): dilated ResNet encoder (default resnet50)")
    parser.add_argument("--batch-size", type=int, default=8, help="(c)-(f): batch size (default 8)")
    parser.add_argument("--precision-batches", nargs="*", type=int, default=None, help="(d): batch sizes (default: --batch-size only)")
    parser.add_argument(
        "--step-options",
        nargs="*",
        default=[],
        choices=["encoder", "encoder_graphs"],
        help="(d): also time the default step with these compile options (torch.compile takes a while the first step)",
    )
    parser.add_argument("--gpu-steps", type=int, default=10, help="(c), (d): steps per round; (f): timed steps per trial")
    parser.add_argument("--method-steps", type=int, default=5, help="(g): steps per round")
    parser.add_argument("--short-epochs", type=int, default=8, help="(e): epochs of each short run")
    parser.add_argument("--short-train", type=int, default=160, help="(e): generated training examples")
    parser.add_argument("--share", nargs="*", type=int, default=[1, 2, 4], help="(f): trials sharing the device")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.precision_batches = args.precision_batches or [args.batch_size]
    torch.set_num_threads(args.threads)
    if args.worker is not None:
        return worker(args)

    print(
        f"torch {torch.__version__}, {args.threads} CPU thread(s); methods: {', '.join(sorted(METHODS))}; "
        f"optimizers: {', '.join(OPTIMIZERS)}"
    )
    if "a" in args.parts:
        times = bench_training(args, "multidigits", "cpu", training_configs(args.cross), batch_size=64)
        print_relative(f"(a) multidigits training step, batch 64, CPU (median of {args.repeats} rounds of {args.steps} steps)", times)
    if "b" in args.parts:
        for model in args.models:
            for device in args.opt_devices:
                if device == "cpu" or torch.cuda.is_available():
                    bench_optimizer_step(args, model, torch.device(device))
    gpu_parts = [p for p in "cdefg" if p in args.parts]
    if gpu_parts and args.device is None:
        print(f"\n({')('.join(gpu_parts)}) skipped: no CUDA device (--device cpu runs them on tiny inputs)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if not args.nyuv2_root:  # step times do not depend on the pixel values: a few examples suffice
            generate("nyuv2", tmp, train=max(2 * max(args.batch_size, *args.precision_batches) + 2, 8), test=2, size=args.size, seed=0)
            args.nyuv2_root = tmp
        # The short training run (e) comes last: it takes longest and its figures matter least.
        if "c" in args.parts:
            bench_methods_nyuv2(args)
        if "d" in args.parts:
            bench_precision(args)
        if "f" in args.parts:
            bench_sharing(args)
        if "g" in args.parts:
            bench_all_methods_nyuv2(args)
        if "e" in args.parts:
            bench_short_run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
