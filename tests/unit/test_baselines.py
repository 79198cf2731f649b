"""The baselines of issue 11 (static, si, uw_so, go4align, ldc_mtl, moco, sdmgrad, excess_mtl): each
method's defining property, the identities between methods, their peer rows (tests/helpers/peer_rows_baselines.py)
on seeded gradient matrices, exact checkpoint continuity through the Trainer, and the search-space
layer they need (per-task weights on the simplex, the method grid derived from the registry)."""

import io
import math
import textwrap

import numpy as np
import pytest
import torch

from mtlsearch import Trainer, TrialConfig, spaces
from mtlsearch.balancing import METHODS, GradBalancing
from mtlsearch.balancing.go4align import kmeans_1d
from mtlsearch.errors import ConfigError
from helpers.peer_rows_baselines import ROWS
from helpers.peer_table import Case

BASELINES = ["static", "si", "uw_so", "go4align", "ldc_mtl", "moco", "sdmgrad", "excess_mtl"]


def _weights(method, losses):
    losses = losses.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(method(losses), losses)
    return grad


def _grads(t, d=12, seed=0):
    return torch.randn(t, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------------ properties
def test_static_weights_are_normalised_to_sum_t_and_default_to_ew():
    losses = torch.tensor([0.5, 2.0, 7.0])
    torch.testing.assert_close(_weights(METHODS["static"](3), losses), torch.ones(3))
    w = _weights(METHODS["static"](3, static_weights=[1.0, 3.0, 0.0]), losses)
    torch.testing.assert_close(w, torch.tensor([0.75, 2.25, 0.0]))
    with pytest.raises(ConfigError, match="static_weights: expected 3 weights"):
        METHODS["static"](3, static_weights=[1.0, 2.0])
    for bad in ([-1.0, 2.0], [0.0, 0.0], [1.0, float("nan")], "1,2"):
        with pytest.raises(ConfigError, match="static_weights"):
            TrialConfig.from_dict({"method": "static", "static_weights": bad})


def test_si_ignores_loss_scales_entirely():
    theta = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mats = _grads(3, 6, seed=1).view(3, 1, 6)

    def grad(scales):
        th = theta.clone().requires_grad_(True)
        losses = torch.stack([c * ((m @ th).square().sum() + 0.1) for c, m in zip(scales, mats)])
        return torch.autograd.grad(METHODS["si"](3)(losses), th)[0]

    torch.testing.assert_close(grad([1.0, 1.0, 1.0]), grad([1e-3, 5.0, 1e4]))  # direction *and* norm


def test_uw_so_is_a_softmax_of_inverse_losses():
    losses = torch.tensor([0.2, 1.0, 5.0])
    w = _weights(METHODS["uw_so"](3, uw_so_temperature=1.0), losses)
    assert w.sum().item() == pytest.approx(1.0) and w[0] > w[1] > w[2]
    hot = _weights(METHODS["uw_so"](3, uw_so_temperature=1e6), losses)
    torch.testing.assert_close(hot, torch.full((3,), 1 / 3), rtol=1e-5, atol=0)


def test_kmeans_1d_is_the_optimal_clustering():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, k = int(rng.integers(1, 9)), int(rng.integers(1, 4))
        x = rng.normal(size=n)
        out = kmeans_1d(x, k)
        assert len(set(out.round(12))) <= k
        best = min(  # brute force over every assignment of n points to k labels
            sum(((x[lab == c] - x[lab == c].mean()) ** 2).sum() for c in set(lab))
            for lab in (np.array(a) for a in np.ndindex(*([min(k, n)] * n)))
        )
        assert ((x - out) ** 2).sum() == pytest.approx(best, abs=1e-12)


def test_go4align_groups_tasks_with_similar_risk_indicators():
    losses = torch.tensor([0.1, 0.11, 5.0, 5.5])
    g = METHODS["go4align"](4, go4align_groups=2, go4align_step=0.0)
    w = _weights(g, losses)
    ind = losses.sum() / losses / 4
    torch.testing.assert_close(w, torch.stack([ind[:2].mean()] * 2 + [ind[2:].mean()] * 2))
    one = _weights(METHODS["go4align"](4, go4align_groups=1, go4align_step=0.0), losses)
    torch.testing.assert_close(one, ind.mean().expand(4))
    # The risk probabilities shrink for tasks with large losses and persist across steps.
    g = METHODS["go4align"](2, go4align_groups=2, go4align_step=0.5)
    for _ in range(3):
        g(torch.tensor([1.0, 2.0]))
    p = g.risk_probs
    torch.testing.assert_close(p[0] / p[1], torch.tensor(math.exp(1.5), dtype=torch.float64))


def test_ldc_mtl_penalises_discrepancy_and_trains_the_router():
    ldc = METHODS["ldc_mtl"](3, ldc_mtl_lambda=1.0)
    first = torch.tensor([2.0, 1.0, 4.0])
    total = ldc(first)  # normalised losses all equal 1 at the first step: no discrepancy
    assert total.item() == pytest.approx(1.0)
    torch.testing.assert_close(ldc.ratios, torch.tensor([2.0, 1.0, 4.0]))
    losses = torch.tensor([2.0, 3.0, 4.0])  # task 1 now lags: normalised (1, 3, 1)
    (dw,) = torch.autograd.grad(ldc(losses), ldc.router)
    assert dw[1] > 0  # gradient descent lowers the weight of the lagging task's term in the penalty
    assert [p is ldc.router for p in ldc.parameters()] == [True]


def test_moco_tracks_gradients_and_its_weights_stay_on_the_simplex():
    g = _grads(3)
    moco = METHODS["moco"](3, moco_beta=1.0, moco_beta_sigma=0.0)  # beta = 1: Y = this step's scaled G
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    d = moco(g, losses).direction
    y = g / g.norm(dim=1, keepdim=True) * losses.view(-1, 1)
    torch.testing.assert_close(moco.tracked, y, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(d, y.T @ moco.lambd)
    assert moco.lambd.sum().item() == pytest.approx(1.0) and (moco.lambd > 0).all()
    with pytest.raises(ConfigError, match="grad_mode"):
        TrialConfig.from_dict({"method": "moco", "grad_mode": "rep"})


def test_sdmgrad_lambda_interpolates_between_min_norm_and_mean():
    from mtlsearch.balancing._qp import min_norm_simplex

    g = _grads(3, seed=3)
    mean = METHODS["sdmgrad"](3, sdmgrad_lambda=1e6)(g, torch.ones(3)).weights
    torch.testing.assert_close(mean, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-5)
    # A small inner step so that the inner SGD converges (the released lr 5 need not).
    s = METHODS["sdmgrad"](3, sdmgrad_lambda=0.0, sdmgrad_niter=3000, sdmgrad_inner_lr=0.05)
    w = s(g, torch.ones(3)).weights.numpy()
    w_star, _ = min_norm_simplex((g @ g.T).numpy())
    assert np.linalg.norm(w @ g.numpy()) == pytest.approx(np.linalg.norm(w_star @ g.numpy()), rel=1e-4)
    torch.testing.assert_close(s.w, torch.from_numpy(w))  # warm start for the next step


def test_excess_mtl_moves_weight_to_the_task_far_from_its_optimum():
    ex = METHODS["excess_mtl"](2, excess_mtl_step=0.5)
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(ex(base, torch.ones(2)).weights, torch.ones(2, dtype=torch.float64))  # records e(0)
    w = ex(torch.tensor([[3.0, 0.0], [0.0, 0.1]], dtype=torch.float64), torch.ones(2)).weights
    assert w[0] > 1 > w[1] and w.sum().item() == pytest.approx(2.0)
    h = ex.grad_sq_sum
    torch.testing.assert_close(h, torch.tensor([[10.0, 0.0], [0.0, 1.01]], dtype=torch.float64))


# ------------------------------------------------------------------------------------ identities
@pytest.mark.parametrize("seed", range(3))
def test_gemtl_at_p_to_zero_gls_and_si_point_the_same_way(seed):
    losses = torch.rand(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3 + 0.05
    g = _grads(5, seed=seed)
    dirs = [_weights(m, losses) @ g for m in (METHODS["gemtl"](5, p=1e-9), METHODS["gls"](5), METHODS["si"](5))]
    for d in dirs[1:]:
        cos = torch.dot(d, dirs[0]) / (d.norm() * dirs[0].norm())
        assert cos.item() == pytest.approx(1.0, abs=1e-9)
    # GLS = SI scaled by the geometric mean / T.
    torch.testing.assert_close(dirs[1], dirs[2] * losses.log().mean().exp() / 5)


def test_gemtl_at_p_one_is_ew_over_t():
    losses = torch.tensor([0.3, 1.0, 9.0, 2.5], dtype=torch.float64)
    torch.testing.assert_close(_weights(METHODS["gemtl"](4, p=1.0), losses), _weights(METHODS["ew"](4), losses) / 4)
    assert METHODS["gemtl"](4, p=1.0)(losses).item() == pytest.approx(METHODS["ew"](4)(losses).item() / 4)


@pytest.mark.parametrize("t", [2, 3, 5])
def test_imtl_h_with_zero_scales_is_imtl_g(t):
    g, losses = _grads(t, seed=t), torch.rand(t, dtype=torch.float64) + 0.5
    h = METHODS["imtl_h"](t)
    assert torch.equal(h.s.detach(), torch.zeros(t))
    torch.testing.assert_close(h.transform_losses(losses), losses)  # e^0 L - 0
    torch.testing.assert_close(h(g, losses).weights, METHODS["imtl_g"](t)(g, losses).weights, rtol=0, atol=0)


# ------------------------------------------------------------------------------------- peer rows
def _cases():
    out = []
    for t in (2, 3, 5, 10):
        for kind in ("conflicting", "colinear", "one_large", "identical_opposite"):
            seed = 7 * t + len(kind)
            gen = torch.Generator().manual_seed(seed)
            g = torch.randn(t, 16, generator=gen, dtype=torch.float64)
            if kind == "colinear":
                g = g[:1] + 0.01 * g
            elif kind == "one_large":
                g[0] *= 100
            elif kind == "identical_opposite":
                g[1] = g[0] if t == 2 else -g[0]
                if t > 2:
                    g[2] = g[0]
            losses = torch.rand(t, generator=gen, dtype=torch.float64) * 2 + 0.1
            out.append(Case(f"{kind}-T{t}", g, losses, seed))
    return out


CASES = _cases()


def test_every_baseline_and_mode_has_a_peer_row():
    expected = {(m, mode) for m in BASELINES for mode in (METHODS[m].modes if issubclass(METHODS[m], GradBalancing) else (None,))}
    assert len(ROWS) == len(expected) and {(r.method, r.mode) for r in ROWS} == expected


@pytest.mark.parametrize("row", ROWS, ids=[r.method for r in ROWS])
def test_peer_rows_agree_on_every_case(row):
    worst = {c.name: row.compare(c) for c in CASES}
    assert all(math.isfinite(v) for v in worst.values()), worst
    assert max(worst.values()) <= row.tolerance, {k: v for k, v in worst.items() if v > row.tolerance}


# ---------------------------------------------------------------------------------- through Trainer
BASE = {"benchmark": "multidigits", "lr": 3e-3, "batch_size": 500, "device": "cpu", "max_epochs": 2}
CONTINUITY = [{"method": m} for m in BASELINES if m != "static"] + [{"method": "static", "static_weights": [0.2, 0.3, 0.5]}]


@pytest.mark.parametrize("method", CONTINUITY, ids=[c["method"] for c in CONTINUITY])
def test_trainer_checkpoint_restore_continues_exactly(method):
    cfg = {**BASE, **method}
    straight = list(Trainer(cfg).run())
    first = Trainer(cfg)
    head = list(first.run(1))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Trainer(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert head + list(resumed.run()) == straight
    assert all(math.isfinite(v) for v in straight[-1].values())
    if method["method"] == "static":
        assert [straight[-1][f"weights/{t}"] for t in ("left", "right", "number")] == pytest.approx([0.6, 0.9, 1.5])


# ---------------------------------------------------------------------------------- search spaces
SPACE = """\
name: simplex_test
benchmark: {benchmark}
objective: {{metric: val/delta_m, mode: max}}
budget: {{num_samples: 2, max_epochs: 1}}
searcher: {searcher}
params:
  method: {{choice: [ew, static]}}
  static_weights: {{simplex: {size}, when: {{method: static}}}}
  lr: 0.003
"""


def _space(tmp_path, benchmark="multidigits", searcher="{type: optuna, sampler: random, seed: 0}", size="tasks", extra=""):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(benchmark=benchmark, searcher=searcher, size=size) + extra)
    return path


def test_simplex_weights_through_rays_optuna_searcher(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    space = spaces.load_space(str(_space(tmp_path)))
    search = OptunaSearch(space=space.define_by_run(), metric="val/delta_m", mode="max", seed=0)
    configs = [search.suggest(f"t{i}") for i in range(8)]
    statics = [c for c in configs if c["method"] == "static"]
    assert statics and any(c["method"] == "ew" for c in configs)
    for c in configs:
        assert set(c) == {"benchmark", "max_epochs", "method", "lr"} | ({"static_weights"} if c["method"] == "static" else set())
        TrialConfig.from_dict(c)
    for c in statics:
        w = c["static_weights"]
        assert len(w) == 3 and min(w) >= 0 and sum(w) == pytest.approx(1.0)
    assert len({tuple(c["static_weights"]) for c in statics}) == len(statics)
    # A task subset, written after the simplex parameter: one weight per task of the subset.
    subset = spaces.load_space(str(_space(tmp_path, extra="  tasks: [left, number]\n")))
    search = OptunaSearch(space=subset.define_by_run(), metric="val/delta_m", mode="max", seed=0)
    statics = [c for c in (search.suggest(f"s{i}") for i in range(8)) if c["method"] == "static"]
    assert statics and all(len(c["static_weights"]) == 2 for c in statics)
    assert all(len(c["static_weights"]) == 2 for c in subset.probe_configs() if c["method"] == "static")


def test_simplex_weights_through_the_random_searcher_and_a_task_subset(tmp_path):
    from ray.tune.search.variant_generator import generate_variants

    path = _space(tmp_path, searcher="{type: random, seed: 0}", extra="  tasks: [left, number]\n")
    space = spaces.load_space(str(path))
    draws = [spec["config"] for _ in range(6) for _, spec in generate_variants({"config": space.tune_param_space()})]
    for c in draws:
        if c["method"] == "static":
            assert len(c["static_weights"]) == 2 and sum(c["static_weights"]) == pytest.approx(1.0)
        else:
            assert c["static_weights"] is None
        TrialConfig.from_dict(c)
    # Dirichlet(1, 1): the first weight is uniform on [0, 1]; mean 1/2 over many draws.
    import ray.tune as tune  # noqa: F401  (the sampler itself, without the generator's bookkeeping)

    sampler = spaces.ConditionalSample(next(p for p in space.params if p.kind == "simplex"), None, 0, 3)

    class Spec:
        config = {"method": "static"}

    first = [sampler(Spec)[0] for _ in range(4000)]
    assert np.mean(first) == pytest.approx(1 / 3, abs=0.02)  # three tasks: Dirichlet(1,1,1) marginal mean 1/3


def test_forty_task_celeba_samples_forty_weights_and_trains(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    from helpers.celeba import write_celeba

    folder, _, _ = write_celeba(tmp_path / "celeba")
    extra = "  verify_md5: false\n  image_size: 32\n  batch_size: 4\n"
    text = SPACE.format(benchmark="celeba", searcher="{type: optuna, sampler: random, seed: 0}", size="tasks") + extra
    text = text.replace("benchmark: celeba\n", f"benchmark: celeba\ndata_root: {folder}\n")
    path = tmp_path / "celeba.yaml"
    path.write_text(text)
    space = spaces.load_space(str(path))
    search = OptunaSearch(space=space.define_by_run(), metric="val/delta_m", mode="max", seed=1)
    cfg = next(c for c in (search.suggest(f"t{i}") for i in range(20)) if c["method"] == "static")
    assert len(cfg["static_weights"]) == 40 and sum(cfg["static_weights"]) == pytest.approx(1.0)
    trainer = Trainer({**cfg, "device": "cpu"})
    (result,) = list(trainer.run())
    w = [result[f"weights/{t}"] for t in trainer.task_names]
    assert len(w) == 40 and sum(w) == pytest.approx(40.0, rel=1e-5)
    assert w == pytest.approx([40 * x for x in cfg["static_weights"]], rel=1e-5)


def test_methods_space_runs_every_registered_method():
    space = spaces.load_space("methods")
    (method,) = [p for p in space.params if p.name == "method"]
    assert method.kind == "grid" and method.args == list(METHODS)
    probed = {c["method"] for c in space.probe_configs()}
    assert probed == set(METHODS)
    static = [c for c in space.probe_configs() if c["method"] == "static"]
    assert static and all(c["static_weights"] == [1 / 3] * 3 for c in static)
    from mtlsearch.results import fmt as _fmt  # progress lines and tables stay short with 40 weights

    assert _fmt([0.5, 0.25, 0.25]) == "[0.5,0.25,0.25]" and _fmt([0.025] * 40) == "[0.025,0.025,0.025,0.025,...(40)]"


@pytest.mark.parametrize(
    "text, field, words",
    [
        (
            SPACE.format(benchmark="multidigits", searcher="{type: optuna}", size="0"),
            "params.static_weights",
            ["simplex takes 'tasks'", "0"],
        ),
        (
            SPACE.format(benchmark="multidigits", searcher="{type: optuna}", size="task"),
            "params.static_weights",
            ["simplex takes 'tasks'", "'task'"],
        ),
        (
            SPACE.format(benchmark="multidigits", searcher="{type: optuna}", size="tasks").replace("lr: 0.003", "lr: {choice: all}"),
            "params.lr",
            ["applies only to params.method"],
        ),
        (
            SPACE.format(benchmark="multidigits", searcher="{type: optuna}", size="tasks").replace("lr: 0.003", "lr: {simplex: 2}"),
            "lr",
            ["expected a finite number", "[0.5, 0.5]"],
        ),
    ],
    ids=["zero", "typo", "all-not-method", "simplex-for-lr"],
)
def test_bad_simplex_and_all_exit_2_with_one_line(tmp_path, capsys, monkeypatch, text, field, words):
    from mtlsearch.launch import main

    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    monkeypatch.chdir(tmp_path)
    assert main(["--space", str(path), "--storage", str(tmp_path / "ray")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and f"{field}: " in line and str(path) in line, line
    for w in words:
        assert w in line, line
    assert not (tmp_path / "ray").exists()
