"""Maximum-likelihood estimation: starting values, optimiser, convergence checks.

Following lme4, the deviance function (``melsm.likelihood``) is separate from the
optimiser. The optimiser is a trust-region Newton method (scipy's ``trust-exact``) on
−log L with the exact gradient and Hessian from JAX; the adaptive quadrature nodes are
refreshed at every new θ and held fixed while differentiating.

Starting values are staged as in MIXREGLS: ordinary least squares for β and a
regression of log squared residuals for α; then the model without random scale effects
(closed-form likelihood); then the full model.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from . import _jax  # noqa: F401  (float64, compilation cache)
from ._compiled import compiled
from .errors import MelsmBoundaryWarning, MelsmConvergenceWarning
from .likelihood import ModelData, Nodes, find_nodes, loglik
from .params import ParamLayout

#: Default Gauss–Hermite points per scale dimension, chosen by measured accuracy
#: (bench/quadrature_accuracy.py): the log-likelihood is within 1e-4 of its limit.
DEFAULT_QUADRATURE = {1: 11, 2: 7}
#: Newton steps for the quadrature modes (warm-started, they converge in 3–4).
N_NEWTON = 6
#: Converged when every |∂ log L / ∂θ| is below this and −∇² log L is positive definite.
GRADIENT_TOLERANCE = 1e-3
#: From this many points on, derivatives hold the quadrature nodes fixed (cheaper to
#: run and to compile; the difference from differentiating through them is below the
#: quadrature error). Below it, and for the Laplace approximation, they move.
FIXED_NODES_FROM = 5
#: A random-effect SD below this fraction of its natural scale is reported as zero.
BOUNDARY_FRACTION = 1e-4


def default_quadrature(q_v: int) -> int:
    return DEFAULT_QUADRATURE.get(q_v, 5)


def _loglik_and_nodes(theta, data: ModelData, eta_start, layout: ParamLayout, n_quad: int,
                      nodes_move: bool):
    """log L(θ) with the quadrature nodes found at θ.

    ``nodes_move=True`` differentiates through the nodes (the exact derivative of the
    AGQ approximation); ``False`` holds them fixed, which is cheaper and differs from the
    exact derivative by the quadrature error's sensitivity to the nodes — negligible
    from ``FIXED_NODES_FROM`` points on, all of it for the Laplace approximation.
    """
    if not layout.q_v:
        return loglik(theta, data, None, layout, n_quad), None
    # Stopping the gradient of θ (not of the nodes) keeps autodiff out of the node search.
    at = theta if nodes_move else jax.lax.stop_gradient(theta)
    nodes = find_nodes(at, data, eta_start, layout, N_NEWTON, implicit=nodes_move)
    return loglik(theta, data, nodes, layout, n_quad), nodes


@compiled(static_argnames=("layout", "n_quad", "nodes_move"))
def value_grad_nodes(theta, data: ModelData, eta_start, layout: ParamLayout, n_quad: int,
                     nodes_move: bool = True):
    """log L(θ), its gradient and the quadrature nodes at θ."""
    (value, nodes), grad = jax.value_and_grad(_loglik_and_nodes, has_aux=True)(
        theta, data, eta_start, layout, n_quad, nodes_move)
    return value, grad, jax.lax.stop_gradient(nodes)


@compiled(static_argnames=("layout", "n_quad", "nodes_move"))
def derivatives(theta, data: ModelData, eta_start, layout: ParamLayout, n_quad: int,
                nodes_move: bool):
    """log L, its gradient and Hessian in θ (through the nodes if ``nodes_move``)."""
    def f(t):
        return _loglik_and_nodes(t, data, eta_start, layout, n_quad, nodes_move)[0]
    value, grad = jax.value_and_grad(f)(theta)
    return value, grad, jax.hessian(f)(theta)


@dataclass
class Optimum:
    theta: np.ndarray
    loglik: float
    grad: np.ndarray
    hessian: np.ndarray
    nodes: Nodes | None
    iterations: int
    converged: bool
    message: str
    boundary: list[int]


class _Objective:
    """−log L and its derivatives for scipy, caching the last point's nodes and Hessian."""

    def __init__(self, data, layout, n_quad, n_groups, nodes_move: bool):
        self.data, self.layout, self.n_quad = data, layout, n_quad
        self.nodes_move = nodes_move and layout.q_v > 0
        self.eta = np.zeros((n_groups, layout.q_v))
        self._point = None  # (θ bytes, value, grad, nodes)
        self._exact = None  # (θ bytes, value, grad, Hessian)

    def evaluate(self, x):
        key = x.tobytes()
        if self._point is None or self._point[0] != key:
            value, grad, nodes = value_grad_nodes(jnp.asarray(x), self.data, self.eta,
                                                  self.layout, self.n_quad, self.nodes_move)
            value = float(value)
            if nodes is not None and np.isfinite(value):
                self.eta = nodes.mode
            self._point = (key, value, np.asarray(grad), nodes)
        return self._point[1:]

    def exact(self, x):
        """(log L, gradient, Hessian) at x, consistent with ``evaluate``."""
        key = x.tobytes()
        if self._exact is None or self._exact[0] != key:
            self.evaluate(x)
            value, grad, hess = derivatives(jnp.asarray(x), self.data, self.eta, self.layout,
                                            self.n_quad, self.nodes_move)
            self._exact = (key, float(value), np.asarray(grad), np.asarray(hess))
        return self._exact[1:]

    def fun_and_grad(self, x):
        value, grad, _ = self.evaluate(x)
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return np.inf, np.zeros_like(x)
        return -value, -grad

    def fun(self, x):
        return self.fun_and_grad(x)[0]

    def exact_jac(self, x):
        return -self.exact(x)[1]

    def exact_hess(self, x):
        return -self.exact(x)[2]


def maximise(theta0: np.ndarray, data: ModelData, layout: ParamLayout, n_quad: int,
             n_groups: int, boundary_log_sd: np.ndarray, inverse_hessian0=None,
             max_iter: int = 1000) -> Optimum:
    """Maximise log L from θ0 and judge convergence.

    BFGS with the gradient does most of the work (a gradient costs about 1/40 of a
    Hessian for the London Model 6); the Hessian is computed once at the end for the
    convergence check and the standard errors. Where BFGS stops short, a trust-region
    Newton method with the Hessian takes over. Below ``FIXED_NODES_FROM`` points the
    derivatives run through the nodes (exact for the AGQ approximation; compiling them
    takes tens of seconds); from there on the nodes are held fixed, which changes the
    derivatives by less than the quadrature error (tests/test_quadrature_derivatives.py).
    """
    objective = _Objective(data, layout, n_quad, n_groups,
                           nodes_move=n_quad < FIXED_NODES_FROM)
    if not np.isfinite(objective.fun(theta0)):
        raise FloatingPointError("the log-likelihood is not finite at the starting values")
    options = {"gtol": 1e-6, "maxiter": max_iter}
    if inverse_hessian0 is not None:
        options["hess_inv0"] = inverse_hessian0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy.optimize.minimize(objective.fun_and_grad, theta0, jac=True,
                                         method="BFGS", options=options)
    theta, iterations = np.asarray(result.x), int(result.nit)
    opt = _judge(theta, objective, layout, boundary_log_sd, iterations, str(result.message))
    if not opt.converged and not opt.boundary:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = scipy.optimize.minimize(
                objective.fun, theta, jac=objective.exact_jac, hess=objective.exact_hess,
                method="trust-exact", options={"gtol": 1e-8, "maxiter": 200})
        opt = _judge(np.asarray(result.x), objective, layout, boundary_log_sd,
                     iterations + int(result.nit), str(result.message))
    return opt


def _judge(theta, objective: _Objective, layout, boundary_log_sd, iterations,
           optimiser_message) -> Optimum:
    nodes = objective.evaluate(theta)[2]
    value, grad, hess = objective.exact(theta)
    log_sd_positions = layout.log_sd_entries()
    boundary = [p for p, floor in zip(log_sd_positions, boundary_log_sd, strict=True)
                if theta[p] < floor]
    free = _identified(layout, boundary)
    sub = -hess[np.ix_(free, free)]
    positive_definite = bool(np.all(np.isfinite(sub))) and _is_positive_definite(sub)
    max_grad = float(np.max(np.abs(grad[free]), initial=0.0))
    small_gradient = max_grad < GRADIENT_TOLERANCE
    converged = positive_definite and small_gradient and bool(np.isfinite(value))
    if converged:
        message = "converged"
    elif not small_gradient:
        message = f"gradient not small (max |g| = {max_grad:.2g}); optimiser: {optimiser_message}"
    else:
        message = "Hessian of the log-likelihood is not negative definite"
    return Optimum(theta=theta, loglik=float(value), grad=grad, hessian=hess, nodes=nodes,
                   iterations=iterations, converged=converged, message=message,
                   boundary=boundary)


def _is_positive_definite(matrix: np.ndarray) -> bool:
    if matrix.size == 0:
        return True
    try:
        np.linalg.cholesky(0.5 * (matrix + matrix.T))
        return True
    except np.linalg.LinAlgError:
        return False


def _identified(layout: ParamLayout, boundary: list[int]) -> np.ndarray:
    """θ positions still identified when the L rows in ``boundary`` are zero.

    A random effect with zero variance has a zero row in L: its entries carry no
    information, so they are left out of the Hessian used for convergence and SEs.
    """
    offset = sum(layout.sizes[:3])
    dead_rows = {layout.chol_entries[p - offset][0] for p in boundary}
    keep = [k for k in range(offset)]
    keep += [offset + k for k, (r, _) in enumerate(layout.chol_entries) if r not in dead_rows]
    return np.asarray(keep, dtype=int)


def covariance(opt: Optimum, layout: ParamLayout) -> np.ndarray:
    """Covariance of θ̂: inverse of −∇² log L over the identified parameters (NaN elsewhere)."""
    n = layout.n_params
    cov = np.full((n, n), np.nan)
    free = _identified(layout, opt.boundary)
    sub = -opt.hessian[np.ix_(free, free)]
    try:
        inv = np.linalg.inv(0.5 * (sub + sub.T))
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(0.5 * (sub + sub.T))
    cov[np.ix_(free, free)] = inv
    return cov


# ---- starting values -----------------------------------------------------------------
def least_squares_start(design) -> tuple[np.ndarray, np.ndarray, float]:
    """β by OLS; α by regressing log squared residuals (+1.27 = −E log χ²₁) on W."""
    beta, *_ = np.linalg.lstsq(design.X, design.y, rcond=None)
    resid = design.y - design.X @ beta
    target = np.log(resid**2 + 1e-8 * np.var(design.y)) + 1.27
    alpha, *_ = np.linalg.lstsq(design.W, target, rcond=None)
    # Centre the intercept of the log variance on the residual variance itself.
    return beta, alpha, float(np.var(resid))


def _effect_scale(column: np.ndarray, name: str) -> float:
    return 1.0 if name == "Intercept" else float(np.std(column)) or 1.0


def initial_cholesky(design, layout: ParamLayout, resid_var: float) -> np.ndarray:
    """Diagonal L: location effects with SD 0.3·σ_e, scale effects with SD 0.3 (per unit z)."""
    diag = [0.3 / _effect_scale(design.Zv[:, k], n) for k, n in enumerate(layout.zv_names)]
    diag += [0.3 * np.sqrt(resid_var) / _effect_scale(design.Zu[:, k], n)
             for k, n in enumerate(layout.zu_names)]
    return np.diag(diag) if diag else np.zeros((0, 0))


def boundary_floors(design, layout: ParamLayout) -> np.ndarray:
    """log of the smallest SD still reported as non-zero, for each diagonal entry of L."""
    floors = []
    for r, c in layout.chol_entries:
        if r != c:
            continue
        if r < layout.q_v:
            scale = 1.0 / _effect_scale(design.Zv[:, r], layout.zv_names[r])
        else:
            k = r - layout.q_v
            scale = design.y_scale / _effect_scale(design.Zu[:, k], layout.zu_names[k])
        floors.append(np.log(BOUNDARY_FRACTION * scale))
    return np.asarray(floors)


def without_scale_effects(layout: ParamLayout) -> ParamLayout:
    return replace(layout, zv_names=(), independent_blocks=False)


def embed_start(theta_small: np.ndarray, small: ParamLayout, full: ParamLayout,
                design) -> np.ndarray:
    """Starting values for the full model from the fit without scale effects."""
    beta, alpha, kappa, _ = small.split(theta_small)
    L_small = small.cholesky(np.asarray(theta_small), xp=np)
    L = initial_cholesky(design, full, 1.0)
    q_v = full.q_v
    L[q_v:, q_v:] = L_small
    if full.between_row >= 0:
        L[full.between_row] /= max(L[full.between_row, full.between_row], 1e-12)
    return full.pack(beta, alpha, kappa, L)


def embed_inverse_hessian(opt_small: Optimum, small: ParamLayout, full: ParamLayout,
                          new_variance: float = 0.05) -> np.ndarray | None:
    """BFGS's first inverse Hessian for the full model: the small model's, plus a
    diagonal guess for the parameters of the scale effects."""
    try:
        inv_small = np.linalg.inv(-opt_small.hessian)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(inv_small)) or not _is_positive_definite(inv_small):
        return None
    n_fixed = sum(small.sizes[:3])
    index_small = list(range(n_fixed))
    index_full = list(range(n_fixed))
    full_pos = {rc: n_fixed + k for k, rc in enumerate(full.chol_entries)}
    for k, (r, c) in enumerate(small.chol_entries):
        index_small.append(n_fixed + k)
        index_full.append(full_pos[(r + full.q_v, c + full.q_v)])
    inv = np.eye(full.n_params) * new_variance
    inv[np.ix_(index_full, index_full)] = inv_small[np.ix_(index_small, index_small)]
    return 0.5 * (inv + inv.T)


def fit_ml(design, data: ModelData, layout: ParamLayout, n_quad: int | None = None,
           theta0: np.ndarray | None = None) -> tuple[Optimum, dict]:
    """Staged maximum-likelihood fit. Returns the optimum and timing/stage information."""
    started = time.perf_counter()
    n_quad = n_quad or default_quadrature(layout.q_v)
    info: dict = {"stages": []}
    inverse_hessian0 = None
    if theta0 is None:
        beta, alpha, resid_var = least_squares_start(design)
        small = without_scale_effects(layout)
        L0 = initial_cholesky(design, small, resid_var)
        kappa = np.zeros(len(small.g_names))
        if small.between_row >= 0:
            kappa[small.g_names.index("Intercept") if "Intercept" in small.g_names else 0] = \
                np.log(L0[small.between_row, small.between_row] ** 2)
        theta_small = small.pack(beta, alpha, kappa, L0)
        if layout.q_v:
            stage = maximise(theta_small, data, small, 1, design.n_groups,
                             boundary_floors(design, small))
            info["stages"].append({"name": "without random scale effects",
                                   "loglik": stage.loglik, "iterations": stage.iterations})
            theta0 = embed_start(stage.theta, small, layout, design)
            inverse_hessian0 = embed_inverse_hessian(stage, small, layout)
        else:
            theta0 = theta_small
    opt = maximise(np.asarray(theta0, float), data, layout, n_quad, design.n_groups,
                   boundary_floors(design, layout), inverse_hessian0)
    info["stages"].append({"name": "full model", "loglik": opt.loglik,
                           "iterations": opt.iterations})
    info["n_quad"] = n_quad
    info["seconds"] = time.perf_counter() - started
    if not opt.converged:
        warnings.warn(f"the fit did not converge: {opt.message}", MelsmConvergenceWarning,
                      stacklevel=3)
    if opt.boundary:
        warnings.warn("a random-effect variance is estimated at zero (on its boundary); "
                      "its SD is reported as 0 and LR tests use the chi-bar-squared mixture",
                      MelsmBoundaryWarning, stacklevel=3)
    return opt, info
