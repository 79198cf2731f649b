"""Every balancing method against an independent implementation (issue 11; CONTRIBUTING.md, "Trust before breadth").

One row (``peer_table.Peer``) per registered method and mode: ours and the peer on the standard
cases of ``peer_table.cases()`` (T = 2, 3, 5, 10; conflicting, nearly colinear, one task 100x
larger, identical rows, opposite rows; fixed seeds).  Peers: TorchJD 0.18's aggregators
(compared as update directions ``weights @ G``) and scalarizers (compared as values and as
effective weights ``d total / d L``), or, where TorchJD has none, the released code's formula
written out here.  Randomised methods are compared seed-matched; solver-based ones within the
solver's tolerance, with ours also shown at least as good on the method's own objective.  Every
remaining difference is named in the method's docstring and in the row's note, and asserted in the
row's ``compare`` (or in a test below).

``python tests/unit/test_peers.py`` (or ``pytest -s tests/unit/test_peers.py -k table``) prints the table:
method, mode, peer, max difference over the cases, tolerance, verdict.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the helpers package, for `python tests/unit/test_peers.py`
if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's mtlsearch

from helpers.peer_rows_baselines import ROWS as BASELINE_ROWS
from helpers.peer_table import Case, Peer, cases, rel_diff

from mtlsearch.balancing import METHODS, GradBalancing

import torchjd.aggregation as A
import torchjd.scalarization as S
from torchjd.linalg import QuadprogProjector

#: What the comparisons of the row being run (:func:`compare_row`) note on the way: cases where a peer's
#: solver did not converge (``observed``) and, for solver-based rows whose difference is measured beyond
#: the peer's suboptimality, the raw largest difference of the directions (``raw``).  Each row's notes
#: are kept with its own result, so the table does not depend on which tests ran before it.
_NOTES: list[dict] = []


def _observe(method: str, text: str) -> None:
    _NOTES[-1]["observed"].add(text)


def _raw(method: str, diff: float) -> None:
    _NOTES[-1]["raw"] = max(_NOTES[-1]["raw"] or 0.0, diff)


# --------------------------------------------------------------------------------------- helpers
def _ours(name: str, case: Case, grads: torch.Tensor | None = None, **hparams):
    """A fresh instance of our method, and its update direction on ``grads`` (default: the case's)."""
    g = case.grads if grads is None else grads
    method = METHODS[name](g.shape[0], **hparams)
    result = method(g, case.losses)
    return result.weights @ g if result.weights is not None else result.direction


def _floor(g: torch.Tensor) -> float:
    """Directions are compared relative to the larger of the two, but at least to 1e-6 of the
    gradients' scale: an update that should be 0 is compared with the gradients, not with rounding."""
    return 1e-6 * float(g.abs().max())


def _dir_diff(ours: torch.Tensor, peer: torch.Tensor, g: torch.Tensor) -> float:
    scale = max(float(ours.abs().max()), float(peer.abs().max()), _floor(g))
    return float((ours.double() - peer.double()).abs().max()) / scale


def _value_and_weights(fn: Callable[[torch.Tensor], torch.Tensor], losses: torch.Tensor):
    """``fn(L)`` and its gradient with respect to ``L`` (the effective task weights)."""
    l = losses.detach().clone().requires_grad_()
    total = fn(l)
    (weights,) = torch.autograd.grad(total, l)
    return total.detach(), weights


def _loss_diff(ours_fn, peer_fn, losses, factor: float = 1.0) -> float:
    """Relative difference of the values and of the effective weights (ours / factor vs the peer)."""
    v_o, w_o = _value_and_weights(ours_fn, losses)
    v_p, w_p = _value_and_weights(peer_fn, losses)
    return max(rel_diff(v_o / factor, v_p), rel_diff(w_o / factor, w_p))


_PEER_CACHE: dict[tuple[str, str], object] = {}


def _cached(key: str, case: Case, compute: Callable[[], object]):
    """A peer's result on a case, computed once for all modes of a method (the modes differ only in
    which gradients reach the method: the same function of G)."""
    k = (key, case.name)
    if k not in _PEER_CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cvxpy's DPP / inaccuracy notes: the comparison judges
            _PEER_CACHE[k] = compute()
    return _PEER_CACHE[k]


def _kind(case: Case) -> str:
    return case.name.split("-")[0]


def _rng(case: Case, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(case.seed * 7 + salt)


# ------------------------------------------------------------------------------- loss-level rows
def compare_ew(case: Case) -> float:
    ew = METHODS["ew"](len(case.losses))
    d = _loss_diff(ew, S.Sum(), case.losses)
    _, w = _value_and_weights(ew, case.losses)
    # torchjd's aggregators on G: Sum is our update, Mean the same divided by T
    d = max(d, rel_diff(w @ case.grads, A.Sum()(case.grads)))
    return max(d, rel_diff(w @ case.grads / len(w), A.Mean()(case.grads)))


def compare_gemtl(case: Case) -> float:
    worst = 0.0
    for p in (-3.0, -1.0, -0.5, 0.5, 1.0, 2.0, 4.0):
        ours = METHODS["gemtl"](len(case.losses), p=p)
        worst = max(worst, _loss_diff(ours, lambda l, p=p: l.pow(p).mean().pow(1.0 / p), case.losses))
    worst = max(worst, _loss_diff(METHODS["gemtl"](len(case.losses), p=1.0), S.Mean(), case.losses))
    return max(worst, _loss_diff(METHODS["gemtl"](len(case.losses), p=0.0), S.GeometricMean(), case.losses))


def compare_gls(case: Case) -> float:
    return _loss_diff(METHODS["gls"](len(case.losses)), S.GeometricMean(), case.losses)


def _log_scales(case: Case) -> torch.Tensor:
    return torch.randn(len(case.losses), generator=_rng(case, 1))


def compare_imtl_l(case: Case) -> float:
    t, s = len(case.losses), _log_scales(case)
    ours, peer = METHODS["imtl_l"](t), S.IMTLL(t)
    with torch.no_grad():
        ours.s.copy_(s)
        peer.log_scale.copy_(s)
    worst = _loss_diff(ours, peer, case.losses.float())
    # and the gradient with respect to the learned scales
    l = case.losses.float()
    (g_o,) = torch.autograd.grad(ours(l), ours.s)
    (g_p,) = torch.autograd.grad(peer(l), peer.log_scale)
    return max(worst, rel_diff(g_o, g_p))


def compare_uw(case: Case) -> float:
    """Ours is ``exp(-s) L + s``, torchjd's (the paper's regression form) half of it."""
    t, s = len(case.losses), _log_scales(case)
    ours, peer = METHODS["uw"](t), S.UW(t)
    with torch.no_grad():
        ours.log_vars.copy_(s)
        peer.log_var.copy_(s)
    l = case.losses.float()
    assert torch.allclose(ours(l), 2 * peer(l), rtol=1e-6, atol=0), "the factor 2 of the docstring"
    worst = _loss_diff(ours, peer, l, factor=2.0)
    (g_o,) = torch.autograd.grad(ours(l), ours.log_vars)
    (g_p,) = torch.autograd.grad(peer(l), peer.log_var)
    return max(worst, rel_diff(g_o / 2, g_p))


def _epochs_of_losses(case: Case, epochs: int = 4, batches: int = 3) -> list[list[torch.Tensor]]:
    """float32 per-batch losses falling at a different rate per task, with batch noise."""
    gen = _rng(case, 2)
    t = len(case.losses)
    rates = 0.5 + 0.5 * torch.rand(t, generator=gen, dtype=torch.float64)
    out = []
    for e in range(epochs):
        out.append(
            [(case.losses * rates**e * (1 + 0.1 * torch.rand(t, generator=gen, dtype=torch.float64))).float() for _ in range(batches)]
        )
    return out


def compare_dwa(case: Case) -> float:
    t = len(case.losses)
    ours, peer = METHODS["dwa"](t), S.DWA(temperature=2.0)
    worst = 0.0
    for e, batches in enumerate(_epochs_of_losses(case)):
        for l in batches:  # (each call of the peer also adds l to its epoch mean)
            worst = max(worst, _loss_diff(ours, peer, l))
        ours.on_epoch_end(e, torch.stack(batches).mean(0))
        peer.step()
    return worst


def compare_rlw(case: Case) -> float:
    """Seed-matched: both draw ``softmax(randn(T))`` from torch's global generator (float32 losses)."""
    l = case.losses.float()
    worst = 0.0
    for draw in range(3):
        torch.manual_seed(case.seed + draw)
        v_o, w_o = _value_and_weights(METHODS["rlw"](len(l)), l)
        torch.manual_seed(case.seed + draw)
        v_p, w_p = _value_and_weights(S.Random(), l)
        worst = max(worst, rel_diff(v_o, v_p), rel_diff(w_o, w_p))
    return worst


def compare_famo(case: Case) -> float:
    """torchjd's ``update`` fed the next step's losses: the logit update ours makes at the next step."""
    t = len(case.losses)
    # in float64 (both modules' state converted): in float32, Adam's normalisation turns the rounding
    # of a near-zero logit gradient into a full step of either sign, in ours and in torchjd's alike
    ours = METHODS["famo"](t).double()
    peer = S.FAMO(t, lr=ours.famo_lr, weight_decay=ours.famo_gamma).double()
    steps = [l.double() for batches in _epochs_of_losses(case, epochs=3, batches=3) for l in batches]
    worst = 0.0
    for k, l in enumerate(steps):
        if k > 0:
            peer.update(l)
        v_o, w_o = _value_and_weights(ours, l)
        v_p, w_p = _value_and_weights(peer, l)
        worst = max(worst, rel_diff(v_o, v_p), rel_diff(w_o, w_p))
    return worst


def compare_stch(case: Case) -> float:
    """After one warm-up epoch: T x torchjd's STCH on the log-losses (reference log z, unit
    preferences), and the gradient of the released code's formula (Xi-L/STCH, STCH.py)."""
    t = len(case.losses)
    worst = 0.0
    for mu in (1.0, 0.1):
        ours = METHODS["stch"](t, stch_mu=mu, stch_warmup_epochs=1).double()  # z in float64, as the peers'
        warm = [case.losses * (1 + 0.2 * torch.rand(t, generator=_rng(case, 3 + i), dtype=torch.float64)) for i in range(3)]
        for l in warm:  # warm-up: the sum of the log-losses, as the released code
            worst = max(worst, _loss_diff(ours, lambda x: torch.log(x + 1e-20).sum(), l))
        nadir = torch.stack(warm).mean(0)
        ours.on_epoch_end(0, nadir)
        peer = S.STCH(mu, weights=torch.ones(t, dtype=torch.float64), reference=torch.log(nadir))
        worst = max(worst, _loss_diff(ours, lambda x, peer=peer: peer(torch.log(x + 1e-20)), case.losses, factor=t))

        def released(x, mu=mu, nadir=nadir):
            x = torch.log(x / nadir + 1e-20)
            reg = x - x.detach().max()
            return mu * torch.log(torch.sum(torch.exp(reg / mu))) * t  # (its value omits T * max)

        _, w_o = _value_and_weights(ours, case.losses)
        _, w_r = _value_and_weights(released, case.losses)
        worst = max(worst, rel_diff(w_o, w_r))
    return worst


def compare_gradnorm(case: Case) -> float:
    """The paper's update written out with autograd: L_grad = sum_t |w_t n_t - mean(w n) r_t^alpha|
    (target held constant), w <- w - lr dL_grad/dw, then (the docstring's floor) max(w, 1e-3) and
    renormalised to sum T; L(0) = the first step's losses (``gradnorm_warmup_epochs = 0``)."""
    t = len(case.losses)
    alpha, lr = 1.5, 0.025
    ours = METHODS["gradnorm"](t, gradnorm_alpha=alpha, gradnorm_lr=lr, gradnorm_warmup_epochs=0).double()
    w = torch.ones(t, dtype=torch.float64)
    gen = _rng(case, 4)
    losses0 = None
    worst = 0.0
    for step in range(5):
        g = case.grads * (1 + 0.2 * torch.rand(t, 1, generator=gen, dtype=torch.float64))
        l = case.losses * (0.6 + 0.4 * torch.rand(t, generator=gen, dtype=torch.float64)) ** step
        losses0 = l if losses0 is None else losses0
        worst = max(worst, rel_diff(ours(g, l).weights, w))
        wv = w.clone().requires_grad_()
        gw = wv * g.norm(dim=1)
        ratio = l / losses0
        target = (gw.mean() * (ratio / ratio.mean()) ** alpha).detach()
        (grad,) = torch.autograd.grad((gw - target).abs().sum(), wv)
        w = (w - lr * grad).clamp_min(1e-3)
        w = t * w / w.sum()
    return worst


def compare_db_mtl(case: Case) -> float:
    """LibMTL's DB_MTL (the authors' code) written out; at ``db_mtl_beta = 0`` it is ours exactly
    (log(L + 1e-8) losses; weights max_i ||g_i|| / (||g_t|| + 1e-8)).  With beta > 0 LibMTL averages
    the gradient vectors, ours their norms: asserted in test_db_mtl_averages_norms_not_vectors."""
    t = len(case.losses)
    ours = METHODS["db_mtl"](t, db_mtl_beta=0.0).double()  # (float64 state, as LibMTL's buffer here)
    worst = rel_diff(ours.transform_losses(case.losses), torch.log(case.losses + 1e-8))
    gen = _rng(case, 5)
    for _ in range(3):
        g = case.grads * (1 + 0.3 * torch.rand(t, 1, generator=gen, dtype=torch.float64))
        buffer = g  # beta 0: grad_buffer = batch_grads
        u = buffer.norm(dim=-1)
        libmtl = sum((u.max() / (u + 1e-8))[i] * buffer[i] for i in range(t))
        worst = max(worst, _dir_diff(ours(g, case.losses).weights @ g, libmtl, g))
    return worst


# ------------------------------------------------------------------------------- gradient-level rows
def _imtl_g_peer(g: torch.Tensor, case: Case, method: str) -> torch.Tensor:
    """torchjd's IMTLG; on the singular "opposite" cases (T >= 3) the limit of torchjd's update at
    full-rank G' -> G, which is 0 (asserted: it shrinks in proportion to ||G' - G||), where torchjd's
    pseudo-inverse at G itself jumps to a non-zero update with unequal projections."""
    if _kind(case) == "opposite":
        noise = float(g.abs().max()) * torch.randn(g.shape, generator=_rng(case, 6), dtype=g.dtype)
        near = [float(A.IMTLG()(g + eps * noise).abs().max()) for eps in (1e-4, 1e-5)]
        assert near[1] < near[0] / 5 and near[0] < 1e-2 * float(g.abs().max()), near
        if float(A.IMTLG()(g).abs().max()) > 100 * near[0]:  # the jump at G
            _observe(
                method, "opposite rows: torchjd's pinv jumps to a non-zero update at the singular G; ours is its limit 0 from full-rank G"
            )
        return torch.zeros(g.shape[1], dtype=g.dtype)
    return A.IMTLG()(g)


def compare_imtl_g(case: Case) -> float:
    return _dir_diff(_ours("imtl_g", case), _imtl_g_peer(case.grads, case, "imtl_g"), case.grads)


def compare_imtl_h(case: Case) -> float:
    """IMTL-L's scaled losses (torchjd's IMTLL terms) and IMTL-G on their gradients ``e^s g``."""
    t, s = len(case.losses), _log_scales(case).double()
    ours = METHODS["imtl_h"](t).double()  # (the scales in float64, as the formula's)
    peer_l = S.IMTLL(t).double()
    with torch.no_grad():
        ours.s.copy_(s)
        peer_l.log_scale.copy_(s)
    l = case.losses
    scaled = ours.transform_losses(l)
    worst = rel_diff(scaled.sum(), peer_l(l))
    worst = max(worst, rel_diff(scaled, torch.exp(s) * l - s))
    g = torch.exp(s)[:, None] * case.grads  # the gradients of the scaled losses
    w_o = ours(g, case.losses).weights
    if _kind(case) == "identical":
        # scaled, the identical rows are parallel with different norms: every alpha with sum 1 that
        # weights them in any proportion has equal projections, so IMTL-G's weights are not unique.
        # Ours takes the min-norm solution of the bordered system, torchjd's pinv another: both
        # must have the defining property (asserted), the directions may differ.
        for w in (w_o, A.IMTLGWeighting()(g @ g.T)):
            proj = (g / g.norm(dim=1, keepdim=True)) @ (w @ g)
            assert float(w.sum()) == pytest.approx(1.0, abs=1e-9)
            assert float(proj.max() - proj.min()) <= 1e-9 * float(proj.abs().max())
        _observe(
            "imtl_h",
            "parallel scaled rows: IMTL-G's weights are not unique; ours and torchjd pick "
            "different ones, both with equal projections (asserted)",
        )
        return worst
    return max(worst, _dir_diff(w_o @ g, _imtl_g_peer(g, case, "imtl_h"), g))


def compare_mgda(case: Case) -> float:
    """torchjd's MGDA (Frank-Wolfe, its defaults: stops at a step below 1e-3 or after 100
    iterations) is up to 46 % away from the min-norm point on these cases; ours is the exact
    minimiser (NNLS).  Also for the released code's "l2" normalisation (min-norm weights of the unit
    gradients, applied to the raw ones).  Compared by what is unique and well-conditioned (the
    weights are not unique where rows are opposite, and the min-norm point is then 0):

    - ours on the simplex and optimal: the KKT conditions of ``min ||h^T w||^2`` over the simplex,
      ``h_i . d >= ||d||^2`` for every i (equality on ours' support), relative to ``max ||h_i||^2``;
    - the peer's objective no better than ours, and no worse than its Frank-Wolfe duality gap
      ``2 (||d_p||^2 - min_i h_i . d_p)`` certifies;
    - ``||d_p - d||^2 <= ||d_p||^2 - ||d||^2``, which holds for every point of the convex hull exactly
      when d is its min-norm point, so the whole difference is the peer's remaining suboptimality.

    Returned: the largest of ours' simplex and KKT violations and the unexplained part
    ``||d_p - d||^2 - (||d_p||^2 - ||d||^2) = -2 (d_p - d) . d``, each relative to ``max ||h_i||^2``
    (a squared scale, as these are).  Not its square root relative to ``|d|``, as before: on opposite
    rows (d = 0) that turned the rounding of ``||d_p||^2`` (1.4e-17 on opposite-T3) into 1.6e-3, and a
    1e-12 change of G into up to 0.18."""
    g = case.grads
    u = g / g.norm(dim=1, keepdim=True)
    worst = 0.0
    for norm, h in (("none", g), ("l2", u)):
        w_o = METHODS["mgda"](len(case.losses), mgda_normalization=norm)(g, case.losses).weights
        w_p = _cached(f"mgda-{norm}", case, lambda h=h: A.MGDAWeighting()(h @ h.T))
        d_o, d_p = w_o @ h, w_p @ h  # in the space where the min-norm problem is solved
        f_o, f_p = float(d_o @ d_o), float(d_p @ d_p)
        scale2 = float((h * h).sum(1).max())
        slack = 1e-12 * scale2
        simplex = max(float(-w_o.min()), abs(float(w_o.sum()) - 1.0))
        hd = h @ d_o
        kkt = max(f_o - float(hd.min()), float((hd[w_o > 0] - f_o).abs().max())) / scale2
        gap_p = 2 * (f_p - float((h @ d_p).min()))  # Frank-Wolfe gap: f_p - min f <= gap_p
        assert f_o <= f_p + slack, f"{norm}: the peer's objective {f_p:.3e} is below ours {f_o:.3e}"
        assert f_p - f_o <= gap_p + slack, f"{norm}: the peer is further from ours than its certificate {gap_p:.1e}"
        dist2 = float((d_p - d_o) @ (d_p - d_o))
        assert dist2 <= (f_p - f_o) + slack, f"{norm}: not explained by the peer's suboptimality"
        _raw("mgda", _dir_diff(w_o @ g, w_p @ g, g))
        worst = max(worst, simplex, kkt, max(dist2 - (f_p - f_o), 0.0) / scale2)
    return worst


def compare_pcgrad(case: Case) -> float:
    """Seed-matched: both draw one ``torch.randperm(T)`` per task."""
    torch.manual_seed(case.seed)
    d_o = _ours("pcgrad", case)
    torch.manual_seed(case.seed)
    d_p = A.PCGrad()(case.grads)
    return _dir_diff(d_o, d_p, case.grads)


def compare_graddrop(case: Case) -> float:
    """Seed-matched: both draw ``U = torch.rand(D)`` once; leak 0 (default) and 0.5 for every task."""
    worst = 0.0
    for leak in (0.0, 0.5):
        torch.manual_seed(case.seed)
        d_o = _ours("graddrop", case, graddrop_leak=leak)
        torch.manual_seed(case.seed)
        d_p = A.GradDrop(leak=None if leak == 0 else torch.full((len(case.losses),), leak, dtype=torch.float64))(case.grads)
        worst = max(worst, _dir_diff(d_o, d_p, case.grads))
    return worst


def compare_gradvac(case: Case) -> float:
    """Seed-matched (one ``torch.randperm(T - 1)`` per task), stateful: three steps on one instance
    each, so the EMA targets become non-zero and the correction acts.  torchjd adds ``eps`` to two
    denominators (default 1e-8): compared with ``eps = 0``, the formula of the paper and ours."""
    t, g = len(case.losses), case.grads
    worst = 0.0
    for beta in (0.01, 0.5):
        ours, peer = METHODS["gradvac"](t, gradvac_beta=beta), A.GradVac(beta=beta, eps=0.0)
        for step in range(3):
            if any(torch.isnan(b).any() for b in peer.buffers()):
                # a corrected g_i vanished (g_i + g_j = 0): torchjd's cosine 0/0 made its targets NaN;
                # ours skips a zero gradient's pairs and keeps its targets, as documented
                assert torch.isfinite(ours.targets).all()
                _observe(
                    "gradvac",
                    f"{case.name}: a corrected gradient vanishes; torchjd's targets become "
                    "0/0 (with eps: decay to 0), ours keeps them (compared up to there)",
                )
                break
            torch.manual_seed(case.seed + step)
            d_o = ours(g, case.losses).weights @ g
            torch.manual_seed(case.seed + step)
            d_p = peer(g)
            worst = max(worst, _dir_diff(d_o, d_p, g))
    return worst


def _cagrad_dual(k: torch.Tensor, c: float, w: torch.Tensor) -> float:
    """CAGrad's dual objective ``w^T K 1/T + c ||g0|| sqrt(w^T K w)`` (w on the simplex)."""
    t = k.shape[0]
    mean = torch.full((t,), 1.0 / t, dtype=k.dtype)
    return float(w @ k @ mean + c * torch.sqrt(mean @ k @ mean) * torch.sqrt((w @ k @ w).clamp_min(0)))


def compare_cagrad(case: Case) -> float:
    """torchjd's CAGrad (cvxpy/Clarabel) against ours with ``cagrad_rescale = 0`` (torchjd does not
    rescale; ours by default divides by 1 + c^2 as the released code: asserted).  Ours is also at
    least as good on the dual objective.  Where the optimal ``g_w`` vanishes torchjd returns a zero
    update; ours returns ``g0`` as the released code (``g0 + c ||g0|| g_w / (||g_w|| + 1e-8)``)."""
    g, t, c = case.grads, len(case.losses), 0.5
    k = g @ g.T
    w_o = METHODS["cagrad"](t, cagrad_c=c, cagrad_rescale=0)(g, case.losses).weights
    w_default = METHODS["cagrad"](t, cagrad_c=c)(g, case.losses).weights
    assert torch.allclose(w_default, w_o / (1 + c * c), rtol=1e-12, atol=0)
    w_p = _cached("cagrad", case, lambda: A.CAGradWeighting(c=c)(k))
    mean = torch.full((t,), 1.0 / t, dtype=torch.float64)
    if float(w_p.abs().max()) == 0.0:  # torchjd's "approximately on the Pareto front" branch
        _observe("cagrad", "opposite rows (T>=3): g_w = 0 at the optimum; torchjd returns 0, ours and the released code g0")
        return _dir_diff(w_o @ g, mean @ g, g)
    dual_o, dual_p = w_o - mean, w_p - mean  # both proportional to the dual solution
    if float(dual_o.sum()) > 0 and float(dual_p.sum()) > 0:
        f_o = _cagrad_dual(k, c, dual_o / dual_o.sum())
        f_p = _cagrad_dual(k, c, dual_p / dual_p.sum())
        assert f_o <= f_p + 1e-9 * (abs(f_p) + float(k.diagonal().max())), (f_o, f_p)
    return _dir_diff(w_o @ g, w_p @ g, g)


def _nash_residual(k: torch.Tensor, a: torch.Tensor) -> float:
    return float((k @ a - 1 / a).abs().max() / (1 / a).abs().max())


def compare_nash_mtl(case: Case) -> float:
    """torchjd's NashMTL (the released code's algorithm: sequential convex approximations with
    cvxpy/ECOS), unclipped (``max_norm = 0``).  Where it converges (relative residual of
    ``K alpha = 1/alpha`` on the raw Gramian <= 1e-6) the directions agree to its accuracy; on every
    case ours has the smaller residual (where no exact solution exists, opposite rows, both are
    limited by the ridge / solver).  Then the clipping of ``max_norm = 1``, as the released code."""
    g, t = case.grads, len(case.losses)
    k = g @ g.T
    w_o = METHODS["nash_mtl"](t, nash_max_norm=0.0)(g, case.losses).weights
    w_p = _cached("nash", case, lambda: A.NashMTL(n_tasks=t, max_norm=0.0).weighting(g))
    r_o, r_p = _nash_residual(k, w_o), _nash_residual(k, w_p)
    assert r_o <= max(r_p, 1e-8), f"ours has the larger residual: {r_o:.2e} > {r_p:.2e}"
    assert (w_o @ g).norm().item() == pytest.approx(math.sqrt(t), rel=1e-6) or _kind(case) == "opposite"
    clipped = METHODS["nash_mtl"](t)(g, case.losses).weights @ g
    norm = float((w_o @ g).norm())
    rounding = 1e-14 * float(w_o.abs().max() * g.abs().max())  # weights of 1e4 on opposite rows cancel
    assert torch.allclose(clipped, (w_o @ g) * min(1.0, 1.0 / max(norm, 1e-300)), rtol=1e-9, atol=rounding)
    _raw("nash_mtl", _dir_diff(w_o @ g, w_p @ g, g))
    if r_p > 1e-6:
        _observe("nash_mtl", f"{case.name}: the released solver stops at residual {r_p:.0e} (ours {r_o:.0e})")
        return 0.0 if r_o <= r_p else float("inf")
    return _dir_diff(w_o @ g, w_p @ g, g)


def compare_aligned_mtl(case: Case) -> float:
    """torchjd's AlignedMTL averages the aligned gradients (preferences 1/T), ours sums them as
    LibMTL: compared x T.  torchjd cuts the rank at lambda_max T eps of the Gramian's dtype (float64
    here), ours at float32's eps as LibMTL (``torch.finfo().eps``); where the two cuts keep different
    ranks the peer is LibMTL's formula (Aligned_MTL.py) written out."""
    g, t = case.grads, len(case.losses)
    k = g @ g.T
    d_o = _ours("aligned_mtl", case)
    lam = torch.linalg.eigvalsh(k)
    rank32 = int((lam > lam.max() * t * torch.finfo(torch.float32).eps).sum())
    rank64 = int((lam > lam.max() * t * torch.finfo(torch.float64).eps).sum())
    if rank32 == rank64:
        return _dir_diff(d_o, t * A.AlignedMTL()(g), g)
    _observe("aligned_mtl", f"{case.name}: torchjd keeps rank {rank64}, LibMTL and ours {rank32} (float32 eps cut)")
    # LibMTL: tol = max(lambda) * max(M.shape) * torch.finfo().eps; B = lambda_min^1/2 V Sigma^-1 V^T; alpha = B.sum(0)
    lmbda, v = torch.linalg.eigh(k)
    tol = torch.max(lmbda) * max(k.shape[-2:]) * torch.finfo().eps
    rank = int(sum(lmbda > tol))
    order = torch.argsort(lmbda, dim=-1, descending=True)
    lmbda, v = lmbda[order][:rank], v[:, order][:, :rank]
    b = lmbda[-1].sqrt() * ((v @ torch.diag(1 / lmbda.sqrt())) @ v.t())
    return _dir_diff(d_o, b.sum(0) @ g, g)


def compare_upgrad(case: Case) -> float:
    """torchjd's UPGrad with its ridge ``reg_eps`` at 1e-12 instead of 1e-4 (quadprog needs a
    positive definite matrix; ours is the exact NNLS solution).  That the default ridge explains the
    rest is asserted in test_upgrad_difference_from_torchjd_is_its_ridge."""
    g = case.grads
    d_p = _cached("upgrad", case, lambda: A.UPGrad(projector=QuadprogProjector(reg_eps=1e-12))(g))
    return _dir_diff(_ours("upgrad", case), d_p, g)


def _fairgrad_residual(k, w, alpha) -> float:
    target = w ** (-1.0 / alpha)
    return float((k @ w - target).abs().max() / target.abs().max())


def _update_rounding(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """A bound on the rounding of ``w @ g`` in float64, per entry: ``T eps sum_i |w_i| |g_ij|``."""
    return len(w) * torch.finfo(torch.float64).eps * (w.abs().double() @ g.abs().double())


def _fairgrad_has_no_solution(k: torch.Tensor) -> bool:
    """Whether ``K w = w^(-1/alpha)`` has no positive solution because K is singular with a
    one-signed null vector (opposite rows: ``K (e_0 + e_1) = 0``): along it K w does not grow
    while ``w^(-1/alpha)`` falls, so any solver's weights run off to infinity and stop wherever its
    stopping rule says.  (Identical rows: the null vector has both signs, a solution exists.)"""
    lam, v = torch.linalg.eigh(k)
    null = v[:, 0] / v[:, 0].abs().max()
    return bool(lam[0] <= 1e-12 * lam[-1] and ((null >= -1e-8).all() or (null <= 1e-8).all()))


def compare_fairgrad(case: Case) -> float:
    """torchjd's FairGrad (the released code: scipy least_squares from 1/T) for alpha = 1 (default),
    0.5 and 2; ours (Newton) has the smaller residual of ``K w = w^(-1/alpha)``.  The directions are
    compared beyond the rounding of ``w @ g`` (:func:`_update_rounding`).

    Opposite rows: the system has no solution (:func:`_fairgrad_has_no_solution`); the weights run
    off (1e2 to 7e5), each solver stops at its own residual (peer 2e-6 to 2e-3 for T >= 3, ~1 for T = 2)
    and only the limit of the update is defined.  There the directions are compared beyond the
    rounding plus the peer's own relative residual (how far its update is from satisfying the
    system).  Measured on this machine: a rounding-size change of K (1e-15 relative) moves the peer's
    update by up to 3.4e-6 (opposite-T5, alpha 2) and, for T = 2, where both updates are 0 up to the
    rounding of ``w @ g`` at weights 5e5 (1e-10), by 5e-3 of the 1e-6 floor; compared raw, as before,
    that gave 3e-5 on opposite-T2 here.  For T = 2 both updates are also asserted to vanish."""
    g, t = case.grads, len(case.losses)
    k = g @ g.T
    no_solution = _fairgrad_has_no_solution(k)
    worst = 0.0
    for alpha in (1.0, 0.5, 2.0):
        w_o = METHODS["fairgrad"](t, fairgrad_alpha=alpha)(g, case.losses).weights
        w_p = _cached(f"fairgrad{alpha}", case, lambda alpha=alpha: A.FairGradWeighting(alpha=alpha)(k))
        r_o, r_p = _fairgrad_residual(k, w_o, alpha), _fairgrad_residual(k, w_p, alpha)
        d_o, d_p = w_o @ g, w_p @ g
        scale = max(float(d_o.abs().max()), float(d_p.abs().max()), _floor(g))
        allowed = _update_rounding(w_o, g) + _update_rounding(w_p, g)
        if not no_solution or r_p < 0.5:
            assert r_o <= max(r_p, 1e-8), f"alpha={alpha}: ours has the larger residual {r_o:.1e} > {r_p:.1e}"
        if no_solution:
            _observe("fairgrad", f"{case.name}: no solution (opposite rows); compared beyond the peer's residual")
            if r_p >= 0.5:  # T = 2: K w = 0 for every w on the run-off line; the limit update is 0
                assert float(d_o.abs().max()) <= _floor(g), f"alpha={alpha}: ours {d_o.abs().max():.1e} is not 0"
            allowed = allowed + min(r_p, 1.0) * scale
        worst = max(worst, float(((d_o - d_p).abs() - allowed).clamp_min(0).max()) / scale)
    return worst


# ----------------------------------------------------------------------------------------- rows
def _rows(method: str, peer: str, tolerance: float, note: str, compare: Callable[[Case], float]) -> list[Peer]:
    cls = METHODS[method]
    modes = cls.modes if issubclass(cls, GradBalancing) else (None,)
    return [Peer(method, mode, peer, tolerance, note, compare) for mode in modes]


ROWS: list[Peer] = [
    *_rows("ew", "torchjd.scalarization.Sum; torchjd.aggregation.Sum, Mean (x T)", 1e-12, "", compare_ew),
    *_rows("gemtl", "formula ((1/T) sum L^p)^(1/p), p in [-3, 4]; torchjd Mean (p=1), GeometricMean (p=0)", 1e-12, "", compare_gemtl),
    *_rows("gls", "torchjd.scalarization.GeometricMean", 1e-12, "", compare_gls),
    *_rows("imtl_l", "torchjd.scalarization.IMTLL", 1e-6, "", compare_imtl_l),
    *_rows(
        "uw",
        "torchjd.scalarization.UW (x 2)",
        1e-6,
        "ours exp(-s) L + s is twice torchjd's 1/2 exp(-s) L + 1/2 s (same weights up to 2, same optimum)",
        compare_uw,
    ),
    *_rows("dwa", "torchjd.scalarization.DWA", 1e-6, "", compare_dwa),
    *_rows("rlw", "torchjd.scalarization.Random (seed-matched)", 1e-7, "", compare_rlw),
    *_rows(
        "famo",
        "torchjd.scalarization.FAMO (update() fed the next step's losses)",
        1e-12,
        "ours updates the logits with the next batch's losses (no extra forward); torchjd's update() given those losses is the same step",
        compare_famo,
    ),
    *_rows("stch", "torchjd.scalarization.STCH on log-losses (x T); released code formula (Xi-L/STCH)", 1e-12, "", compare_stch),
    *_rows(
        "gradnorm",
        "paper's update written out (autograd), with the docstring's floor",
        1e-12,
        "no official code; the floor at 1e-3 and the warm-up are documented deviations",
        compare_gradnorm,
    ),
    *_rows(
        "db_mtl",
        "LibMTL DB_MTL formula (authors' code) at beta = 0",
        1e-9,
        "with beta > 0 ours averages gradient norms, LibMTL gradient vectors (test_db_mtl_averages_norms_not_vectors)",
        compare_db_mtl,
    ),
    *_rows(
        "imtl_g",
        "torchjd.aggregation.IMTLG",
        1e-7,
        "singular G (opposite rows): torchjd's pinv jumps; ours is the limit of torchjd's from nearby G",
        compare_imtl_g,
    ),
    *_rows(
        "imtl_h",
        "torchjd.scalarization.IMTLL + torchjd.aggregation.IMTLG",
        1e-7,
        "as imtl_g; parallel rows of different norms: IMTL-G's weights are not unique, both satisfy it",
        compare_imtl_h,
    ),
    *_rows(
        "mgda",
        "torchjd.aggregation.MGDA (Frank-Wolfe, defaults); its weights with l2 normalisation",
        1e-6,
        "ours exact (NNLS): its simplex and KKT violations, and the difference beyond the peer's suboptimality "
        "(certified by its Frank-Wolfe gap), relative to max ||g_i||^2 (the weights are not unique on opposite rows)",
        compare_mgda,
    ),
    *_rows(
        "pcgrad",
        "torchjd.aggregation.PCGrad (seed-matched)",
        1e-12,
        "ours also visits j = i as the released code (test_pcgrad_visits_its_own_gradient_as_the_released_code)",
        compare_pcgrad,
    ),
    *_rows("graddrop", "torchjd.aggregation.GradDrop (seed-matched)", 1e-12, "", compare_graddrop),
    *_rows(
        "gradvac",
        "torchjd.aggregation.GradVac (seed-matched, eps = 0)",
        1e-9,
        "torchjd adds eps = 1e-8 to two denominators",
        compare_gradvac,
    ),
    *_rows(
        "cagrad",
        "torchjd.aggregation.CAGrad (cvxpy/Clarabel)",
        1e-3,
        "rescale 1/(1+c^2) (released code) vs none; g_w = 0 gives g0 (released code) vs 0 (torchjd); ours at least as good on the dual",
        compare_cagrad,
    ),
    *_rows(
        "nash_mtl",
        "torchjd.aggregation.NashMTL (released code's algorithm, ECOS)",
        1e-5,
        "where the released solver stalls, ours has the smaller residual",
        compare_nash_mtl,
    ),
    *_rows(
        "aligned_mtl",
        "torchjd.aggregation.AlignedMTL (x T); LibMTL formula where the rank cuts differ",
        1e-9,
        "sum (LibMTL) vs mean (torchjd); rank cut at float32 eps (LibMTL) vs the dtype's",
        compare_aligned_mtl,
    ),
    *_rows(
        "upgrad",
        "torchjd.aggregation.UPGrad (reg_eps 1e-12)",
        1e-7,
        "exact NNLS; torchjd's default 1e-4 ridge moves the update (test_upgrad_difference_from_torchjd_is_its_ridge)",
        compare_upgrad,
    ),
    *_rows(
        "fairgrad",
        "torchjd.aggregation.FairGrad (released code: scipy least_squares)",
        1e-6,
        "ours has the smaller residual; directions compared beyond the rounding of w @ g; opposite rows: no "
        "solution (weights run off, each solver stops at its own residual), compared beyond the peer's residual too",
        compare_fairgrad,
    ),
]

ALL_ROWS: list[Peer] = ROWS + list(BASELINE_ROWS)


def _row_id(row: Peer) -> str:
    return row.method if row.mode is None else f"{row.method}-{row.mode}"


@dataclass(frozen=True)
class RowResult:
    worst: float  # the largest difference over the standard cases
    where: str  # the case where it occurs
    observed: frozenset[str]  # what this row's comparisons noted (_observe)
    raw: float | None  # this row's raw largest difference, for solver-based rows (_raw)


_RESULTS: dict[str, RowResult] = {}


def compare_row(row: Peer) -> RowResult:
    """Run ``row``'s comparison on every standard case (not cached)."""
    worst, where = 0.0, ""
    _NOTES.append({"observed": set(), "raw": None})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # our solver notes: the row judges the result
            for case in cases():
                diff = row.compare(case)
                if not diff <= worst:
                    worst, where = diff, case.name
    finally:
        notes = _NOTES.pop()
    return RowResult(worst, where, frozenset(notes["observed"]), notes["raw"])


def run_row(row: Peer) -> RowResult:
    """:func:`compare_row`, run once per row for the whole session."""
    key = _row_id(row)
    if key not in _RESULTS:
        _RESULTS[key] = compare_row(row)
    return _RESULTS[key]


# ---------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("row", ALL_ROWS, ids=_row_id)
def test_peer(row: Peer):
    result = run_row(row)
    worst, where = result.worst, result.where
    print(f"\n{row.method:12} {str(row.mode):6} max diff {worst:.1e} ({where}) vs {row.peer}")
    assert worst <= row.tolerance, f"{row.method} ({row.mode}) differs from {row.peer} by {worst:.2e} on {where}"


def test_every_method_and_mode_has_a_peer_row():
    have = {(r.method, r.mode) for r in ALL_ROWS}
    want = set()
    for name, cls in METHODS.items():
        for mode in cls.modes if issubclass(cls, GradBalancing) else (None,):
            want.add((name, mode))
    assert not want - have, f"methods (and modes) without a peer row: {sorted(want - have, key=str)}"
    assert not have - want, f"peer rows of unknown methods or modes: {sorted(have - want, key=str)}"
    assert len(have) == len(ALL_ROWS), "a (method, mode) has two rows"


def test_cases_are_the_standard_ones():
    names = [c.name for c in cases()]
    assert len(names) == len(set(names)) == 20
    for c in cases():
        assert c.grads.dtype == torch.float64 and (c.losses > 0).all()
        if c.name.startswith("identical"):
            assert torch.equal(c.grads[0], c.grads[1])
        if c.name.startswith("opposite"):
            assert torch.equal(c.grads[0], -c.grads[1])
        if c.name.startswith("one_large"):
            norms = c.grads.norm(dim=1)
            assert norms[0] > 20 * norms[1:].max()
        if c.name.startswith("conflicting"):
            assert (c.grads @ c.grads.T).min() < 0


# ---------------------------------------------------------------- design choices, asserted
def test_upgrad_difference_from_torchjd_is_its_ridge():
    """torchjd adds reg_eps I to the trace-normalised Gramian (default 1e-4): the difference to ours
    shrinks in proportion to reg_eps, and where one task is 100x larger the default ridge (of the
    size of the small tasks' Gramian entries) moves the update by 10-20 % and makes it conflict with a
    task, which ours (the exact projection) never does."""
    from helpers.peer_table import make_case

    case = make_case("one_large", 5, seed=5002)
    g = case.grads
    d_o = _ours("upgrad", case)
    assert _dir_diff(d_o, A.UPGrad()(g), g) > 0.05
    diffs = [_dir_diff(d_o, A.UPGrad(projector=QuadprogProjector(reg_eps=r))(g), g) for r in (1e-6, 1e-8, 1e-10)]
    for bigger, smaller in zip(diffs, diffs[1:]):
        assert smaller == pytest.approx(bigger / 100, rel=0.2)
    d_default = A.UPGrad()(g)
    assert float((g @ d_default).min()) < 0  # torchjd's default update conflicts with a task
    assert float((g @ d_o).min()) >= -1e-12 * float(g.norm(dim=1).max() * d_o.norm())


def test_pcgrad_visits_its_own_gradient_as_the_released_code():
    """The released code shuffles all tasks (i included) for task i; torchjd skips j = i.  It matters
    when a projected g_i^PC conflicts with g_i itself (possible with T > D): ours equals the released
    loop, torchjd does not."""
    gen = torch.Generator().manual_seed(0)
    found = False
    for _ in range(50):
        g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
        seed = int(torch.randint(0, 10**6, (1,), generator=gen))
        torch.manual_seed(seed)
        orders = [torch.randperm(5).tolist() for _ in range(5)]
        released = torch.zeros(3, dtype=torch.float64)
        for i in range(5):  # PCGrad's released loop, on vectors, with these orders
            gi = g[i].clone()
            for j in orders[i]:
                dot = gi @ g[j]
                if dot < 0:
                    gi = gi - dot / (g[j] @ g[j]) * g[j]
            released += gi
        torch.manual_seed(seed)
        ours = METHODS["pcgrad"](5)(g, torch.ones(5)).weights @ g
        torch.testing.assert_close(ours, released, rtol=1e-12, atol=1e-12)
        torch.manual_seed(seed)
        if not torch.allclose(A.PCGrad()(g), released, rtol=1e-9, atol=1e-12):
            found = True
    assert found, "no case where visiting j = i matters"


def test_db_mtl_averages_norms_not_vectors():
    """The docstring's deviation from LibMTL: with beta > 0 ours keeps an EMA of ||g_t||, LibMTL of g_t.
    Equal when the directions do not change; for a task whose direction flips they differ."""
    t, beta = 2, 0.9
    ours = METHODS["db_mtl"](t, db_mtl_beta=beta)
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(t, 6, generator=gen, dtype=torch.float64)
    ema_norm = torch.zeros(t, dtype=torch.float64)
    buffer = torch.zeros(t, 6, dtype=torch.float64)
    for step in range(1, 6):
        g = base.clone()
        g[1] *= (-1) ** step  # task 1's direction flips every step, its norm does not
        ema_norm = g.norm(dim=1) + beta * (ema_norm - g.norm(dim=1))
        buffer = g + beta * (buffer - g)
        w = ours(g, torch.ones(t)).weights
        torch.testing.assert_close(w, ema_norm.max() / (ema_norm + 1e-8), rtol=1e-6, atol=0)
    u = buffer.norm(dim=1)
    libmtl = u.max() / (u + 1e-8)
    assert libmtl[1] > 2 * w[1]  # LibMTL up-weights the noisy task's shrunken average


def test_peer_table(capsys):
    """The table (method, mode, peer, max difference, tolerance, verdict); run with -s to see it.  One line
    per row in the rows' order, each agreeing with its peer and carrying its own row's notes only."""
    lines = table()
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [(c[0], c[1]) for c in cells] == [(r.method, r.mode or "-") for r in ALL_ROWS]
    assert [c[5] for c in cells if not c[5].startswith("agrees")] == []
    # A row's notes come from its own comparisons, whichever rows ran before: run afresh and alone, the
    # rows that note something give the result the table shows.
    noted = [r for r in ALL_ROWS if run_row(r).observed or run_row(r).raw is not None]
    assert noted, "no row notes anything: the check below would check nothing"
    for row in noted[:2]:
        assert compare_row(row) == run_row(row), (row.method, row.mode)


def verdict(row: Peer, result: RowResult) -> str:
    """The table's verdict cell: agrees (within tolerance) or fails, then the row's note and its own observations."""
    ok = result.worst <= row.tolerance
    text = ("agrees" if result.worst <= 1e-9 else "agrees within tolerance") if ok else f"FAILS on {result.where}"
    extra = [row.note] if row.note else []
    texts = sorted(result.observed)
    extra += texts[:1] + ([f"(+{len(texts) - 1} more)"] if len(texts) > 1 else [])
    if result.raw is not None:
        extra.append(f"raw max diff {result.raw:.1e}, all of it where the peer's solver is short of the optimum")
    return text + (": " + "; ".join(extra) if extra else "")


def table() -> list[str]:
    out = ["| method | mode | peer | max diff | tolerance | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for row in ALL_ROWS:
        result = run_row(row)
        out.append(f"| {row.method} | {row.mode or '-'} | {row.peer} | {result.worst:.1e} | {row.tolerance:.0e} | {verdict(row, result)} |")
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("\n".join(table()))
