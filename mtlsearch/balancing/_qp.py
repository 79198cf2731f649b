"""Small dense solvers on T x T Gramians (float64 NumPy; no cvxpy, quadprog or scipy).

* :func:`nnls_gram`: ``min_x 1/2 x^T Q x - q^T x`` s.t. ``x >= 0`` with ``Q`` positive
  semi-definite, by the Lawson-Hanson active-set method written on the normal equations (so it
  needs only the Gramian).  Finite and exact up to rounding; rank-deficient ``Q`` (identical or
  zero gradients) is handled by least-squares solves on the passive set.  Used by MGDA (min-norm
  point of the convex hull) and UPGrad (projection onto the dual cone).
* :func:`min_norm_simplex`: ``min_{w in simplex} w^T K w`` through the exact reduction to one NNLS.
* :func:`project_simplex` and :func:`minimize_on_simplex`: accelerated projected gradient with
  backtracking and a Frank-Wolfe-gap certificate, finished by Newton steps on the optimal face when
  a Hessian is given, for smooth convex objectives (CAGrad's dual).
* :func:`solve_power_equation`: ``K w = w^(-1/a)``, ``w > 0`` (Nash-MTL: a = 1; FairGrad: any a > 0)
  by damped Newton on the strictly convex ``1/2 w^T K w - sum_i h(w_i)`` with ``h' = w^(-1/a)``.

Every solver returns ``(solution, converged)``; the callers count and report non-convergence.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _solve_sym(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a small symmetric PSD system; least squares (min-norm) where it is singular."""
    try:
        z = np.linalg.solve(a, b)
        res = a @ z - b
        if np.isfinite(res).all() and res @ res <= 1e-18 * (b @ b + 1e-300):
            return z
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(a, b, rcond=None)[0]


def nnls_gram(q_mat: np.ndarray, q: np.ndarray, max_iter: int | None = None) -> tuple[np.ndarray, bool]:
    """Lawson-Hanson NNLS in Gramian form: ``argmin_{x >= 0} 1/2 x^T Q x - q^T x``.

    With ``Q = A^T A`` and ``q = A^T y`` this is ``argmin_{x >= 0} ||A x - y||``.  Converged means
    the KKT conditions hold to rounding: ``w = q - Q x <= tol`` everywhere, ``|w| <= tol`` where x > 0.
    """
    n = q.shape[0]
    max_iter = 10 * n + 50 if max_iter is None else max_iter
    x = np.zeros(n)
    if n == 0:
        return x, True
    scale = max(float(np.max(np.abs(q_mat))), float(np.max(np.abs(q))))
    if scale == 0.0:
        return x, True
    passive = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)  # entered and left at once (dependent column): skip until x moves
    iters = 0

    q_max, q_mat_max = float(np.max(np.abs(q))), float(np.max(np.abs(q_mat)))

    def tolerance() -> float:  # rounding level of w = q - Q x
        return 1e-11 * n * (q_max + q_mat_max * float(np.max(x)))

    while True:
        w = q - q_mat @ x
        candidates = ~passive & ~blocked & (w > tolerance())
        if not candidates.any():
            break
        j = int(np.argmax(np.where(candidates, w, -np.inf)))
        passive[j] = True
        first = True
        while True:
            iters += 1
            if iters > max_iter:
                return x, False
            idx = np.flatnonzero(passive)
            z = np.zeros(n)
            z[idx] = _solve_sym(q_mat[np.ix_(idx, idx)], q[idx])
            if np.all(z[idx] > 0):
                x = z
                blocked[:] = False
                break
            bad = idx[z[idx] <= 0]
            ratios = x[bad] / np.maximum(x[bad] - z[bad], 1e-300)
            step = float(np.min(ratios))
            if first and step == 0.0:
                # The new column is (numerically) dependent on the passive ones: x cannot move.
                passive[j] = False
                blocked[j] = True
                break
            x = x + step * (z - x)
            leaving = passive & (x <= 1e-15 * float(np.max(np.abs(x))))
            leaving[bad[np.argmin(ratios)]] = True
            x[leaving] = 0.0
            passive &= ~leaving
            first = False
    w = q - q_mat @ x
    tol = 1e3 * tolerance()
    ok = bool(np.all(w <= tol) and np.all(np.abs(w[x > 0]) <= tol))
    return x, ok


def min_norm_simplex(k: np.ndarray) -> tuple[np.ndarray, bool]:
    """``argmin_{w >= 0, sum w = 1} w^T K w`` (the min-norm point of the gradients' convex hull).

    Exact reduction (Wolfe): with ``A = [G^T; 1^T]`` and ``y = e_{d+1}``, the NNLS solution is
    ``x = w* / (1 + m)`` with ``m = w*^T K w*``, because for ``sum x = t`` the objective is at least
    ``t^2 m + (t - 1)^2``, attained only along ``w*``.  In Gramian form ``Q = K + 1 1^T``, ``q = 1``.
    ``K`` is normalised by its largest diagonal entry first (the minimiser does not change).
    """
    n = k.shape[0]
    top = float(np.max(np.diag(k))) if n else 0.0
    if n == 1 or top <= 0.0:
        return np.full(n, 1.0 / max(n, 1)), True
    kn = k / top
    x, ok = nnls_gram(kn + 1.0, np.ones(n))
    total = float(x.sum())
    if not total > 0:
        return np.full(n, 1.0 / n), False
    return x / total, ok


def project_simplex(y: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{w >= 0, sum w = 1}`` (sort-based, exact)."""
    u = np.sort(y)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(y) + 1)
    rho = int(np.nonzero(u - css / k > 0)[0][-1])
    return np.maximum(y - css[rho] / (rho + 1), 0.0)


def _fw_gap(w: np.ndarray, g: np.ndarray) -> float:
    return float(w @ g - np.min(g))


def _polish_on_face(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    hess: Callable[[np.ndarray], np.ndarray],
    w: np.ndarray,
    tol: float,
    steps: int = 8,
) -> np.ndarray:
    """Newton steps on the face of the simplex that holds ``w``'s support (equality-constrained KKT
    system, least squares where the Hessian is singular), kept only while they stay on the simplex
    and shrink the Frank-Wolfe gap; stops once the gap is within ``tol``."""
    for _ in range(steps):
        f, g = fun(w)
        gap = _fw_gap(w, g)
        if gap <= tol * (1.0 + abs(f)):
            break
        idx = np.flatnonzero(w > 1e-12 * float(np.max(w)))
        m = len(idx)
        kkt = np.zeros((m + 1, m + 1))
        kkt[:m, :m] = hess(w)[np.ix_(idx, idx)]
        kkt[:m, m] = kkt[m, :m] = 1.0
        step = np.linalg.lstsq(kkt, np.concatenate([-g[idx], [0.0]]), rcond=None)[0][:m]
        w_new = w.copy()
        w_new[idx] += step
        if np.any(w_new < 0.0) or not np.all(np.isfinite(w_new)):
            break
        w_new = w_new / w_new.sum()
        if not _fw_gap(w_new, fun(w_new)[1]) < gap:
            break
        w = w_new
    return w


def minimize_on_simplex(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    w0: np.ndarray,
    tol: float = 1e-10,
    max_iter: int = 5000,
    hess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, bool]:
    """Minimise a smooth convex ``fun`` (returning value and gradient) over the simplex.

    FISTA with backtracking on the step size and function-value restarts.  Converged when the
    Frank-Wolfe gap ``w^T grad - min_j grad_j`` (an upper bound on ``f(w) - f*``) is at most
    ``tol * (1 + |f(w)|)``.  Descent on f alone cannot certify a gap much below
    ``sqrt(eps * |f| * curvature)`` (~1e-8): when FISTA stops short of ``tol`` and ``hess`` (the
    Hessian of f) is given, Newton steps on the face of the simplex that holds the iterate's support
    finish the job.  Returns the best iterate found either way.
    """
    w, ok = _fista_on_simplex(fun, w0, tol, max_iter)
    if not ok and hess is not None:
        w = _polish_on_face(fun, hess, w, tol)
        f, g = fun(w)
        ok = _fw_gap(w, g) <= tol * (1.0 + abs(f))
    return w, ok


def _fista_on_simplex(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]], w0: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, bool]:
    w = project_simplex(np.asarray(w0, dtype=np.float64))
    f_w, g_w = fun(w)
    y, f_y, g_y = w, f_w, g_w
    t_k, lip = 1.0, 1.0
    for _ in range(max_iter):
        if float(w @ g_w - np.min(g_w)) <= tol * (1.0 + abs(f_w)):
            return w, True
        while True:  # backtracking: the quadratic upper bound must hold at the new point
            w_new = project_simplex(y - g_y / lip)
            f_new, g_new = fun(w_new)
            diff = w_new - y
            if f_new <= f_y + g_y @ diff + 0.5 * lip * (diff @ diff) + 1e-14 * abs(f_y) or lip > 1e30:
                break
            lip *= 2.0
        if f_new > f_w:  # momentum overshot: restart from w with a plain projected-gradient step
            t_k = 1.0
            if y is w:
                break  # not even a plain step descends: stuck at rounding level
            y, f_y, g_y = w, f_w, g_w
            continue
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t_k * t_k))
        y = w_new + ((t_k - 1.0) / t_next) * (w_new - w)  # may leave the simplex; fun is defined there
        f_y, g_y = fun(y)
        w, f_w, g_w, t_k = w_new, f_new, g_new, t_next
        lip *= 0.9  # let the step grow again
    return w, float(w @ g_w - np.min(g_w)) <= tol * (1.0 + abs(f_w))


def solve_power_equation(k: np.ndarray, a: float, ridge: float = 1e-10, tol: float = 1e-10, max_iter: int = 200) -> tuple[np.ndarray, bool]:
    """Solve ``K w = w^(-1/a)`` with ``w > 0`` (a > 0): Nash-MTL for a = 1, FairGrad in general.

    It is the stationarity condition of the strictly convex ``f(w) = 1/2 w^T K w - sum_i h(w_i)``
    with ``h(w) = log w`` (a = 1) or ``w^(1 - 1/a) / (1 - 1/a)``; damped Newton on f (Hessian
    ``K + (1/a) diag(w^(-1/a - 1))``, always positive definite), Armijo backtracking that keeps
    ``w > 0``.  The equation is solved on ``K / s`` (s = largest diagonal entry) with its diagonal
    multiplied by ``1 + ridge``, so that a solution exists when a non-negative combination of the
    gradients vanishes (e.g. two opposite gradients; without it the weights diverge), and mapped
    back exactly: ``w = w~ s^(-a/(1+a))``.  The ridge leaves a relative residual of about
    ``ridge * K_tt w_t / w_t^(-1/a)`` (~1e-10 unless the gradients are degenerate).  Tasks with a
    zero gradient (no solution: ``0 = w^(-1/a)``) get weight 0 and are left out of the system.
    Negative eigenvalues of K (rounding, e.g. a float32 Gramian of dependent gradients) are
    clipped to 0 first, so that f is convex.
    """
    n = k.shape[0]
    p = 1.0 / a
    w_out = np.zeros(n)
    diag = np.diag(k)
    top = float(np.max(diag)) if n else 0.0
    if top <= 0.0:
        return w_out, True
    live = np.flatnonzero(diag > 1e-14 * top)
    kn = k[np.ix_(live, live)] / top
    lam, vec = np.linalg.eigh(kn)  # a Gramian formed in float32 can be slightly indefinite:
    kn = (vec * np.maximum(lam, 0.0)) @ vec.T  # clip to the PSD cone, so that f stays convex
    kn = kn + ridge * np.diag(np.diag(kn))  # relative ridge: K_tt -> (1 + ridge) K_tt

    def h(w: np.ndarray) -> float:
        return float(np.sum(np.log(w))) if p == 1.0 else float(np.sum(w ** (1.0 - p)) / (1.0 - p))

    def f(w: np.ndarray) -> float:
        return 0.5 * float(w @ kn @ w) - h(w)

    w = np.diag(kn) ** (-a / (1.0 + a))  # the exact solution when K is diagonal
    ok = False
    for _ in range(max_iter):
        target = w ** (-p)
        r = kn @ w - target
        # relative to the target, plus the rounding level of K w (which can involve cancellation)
        if np.all(np.abs(r) <= tol * target + 1e-14 * len(w) * (np.abs(kn) @ w)):
            ok = True
            break
        hess = kn + np.diag(p * w ** (-p - 1.0))
        dw = -_solve_sym(hess, r)
        # fraction to the boundary, then Armijo on f (or accept a step that shrinks the residual)
        neg = dw < 0
        t = min(1.0, 0.99 * float(np.min(-w[neg] / dw[neg]))) if neg.any() else 1.0
        f0, slope, r0 = f(w), float(r @ dw), float(np.linalg.norm(r))
        while t > 1e-12:
            w_new = w + t * dw
            if f(w_new) <= f0 + 1e-4 * t * slope or np.linalg.norm(kn @ w_new - w_new ** (-p)) < r0:
                break
            t *= 0.5
        else:
            break
        w = w_new
    w_out[live] = w * top ** (-a / (1.0 + a))
    return w_out, ok and bool(np.all(np.isfinite(w_out)))
