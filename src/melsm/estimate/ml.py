"""Maximum-likelihood estimation: the staged fit and its optimiser runs (docs/architecture.md,
'Maximum likelihood').

Following lme4, the deviance function (``melsm.engine.likelihood``) is separate from the
optimiser. Each run is BFGS on log L with its exact gradient (JAX autodiff,
``melsm.estimate.objective``) first; where BFGS stops short of convergence, a trust-region
Newton method (scipy's ``trust-exact``) takes over, and where that stops too, plain Newton
steps (``_polish``). The Hessian, for that trust region, the convergence test and the SEs,
is the central difference of the autodiff gradient (``Objective.second_order``). The
adaptive quadrature nodes are refreshed at every new θ and held fixed while differentiating
(from ``FIXED_NODES_FROM`` points on).

The modules of a fit, one job each:

- ``melsm.estimate.start``: starting values, staged as in MIXREGLS (least squares, then the
  model without random scale effects, then the full model);
- ``melsm.estimate.objective``: −log L, its gradient and Hessian for scipy;
- ``melsm.estimate.boundary``: random effects on the boundary (zero variance or singular
  Σ), decided explicitly because they sit at θ = −∞ in the log-diagonal of L;
- ``melsm.estimate.convergence``: the convergence test and the covariance of θ̂;
- this module: ``fit_ml`` and ``maximise``, which run them.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.optimize

from melsm.engine.blocks import Blocks, group_slots
from melsm.engine.rows import ModelData
from melsm.errors import MelsmBoundaryWarning, MelsmConvergenceWarning
from melsm.estimate.boundary import (
    BOUNDARY_TOLERANCE,
    boundary_floors,
    floors_by_row,
    settle_boundary,
)
from melsm.estimate.convergence import GRADIENT_TOLERANCE, Optimum, covariance, identified, judge
from melsm.estimate.objective import (
    DEFAULT_QUADRATURE,
    FIXED_NODES_FROM,
    Objective,
    Subspace,
    default_quadrature,
    derivatives,
    newton_steps,
    value_grad_nodes,
)
from melsm.estimate.start import (
    embed_inverse_hessian,
    embed_start,
    function_intercepts,
    initial_cholesky,
    least_squares_start,
    without_scale_effects,
)
from melsm.model.params import ParamLayout
from melsm.progress import Progress

__all__ = ["DEFAULT_QUADRATURE", "GRADIENT_TOLERANCE", "Optimum", "covariance", "default_quadrature",
           "derivatives", "fit_ml", "maximise", "newton_steps", "value_grad_nodes", "warn_boundary"]

# Older names of the objective and the identified positions, for callers that reach in.
_Objective = Objective
_identified = identified

#: Default cap on the iterations of each optimiser run.
DEFAULT_MAX_ITER = 1000
#: Cap on the iterations of the trust-region fallback (each needs a Hessian).
TRUST_REGION_MAX_ITER = 200
#: Newton steps tried after the optimisers stop short (``_polish``), and the largest loss
#: of log L accepted for them (far below any quadrature error that matters).
POLISH_STEPS = 5
POLISH_TOLERANCE = 1e-3
#: Quasi-Newton steps with BFGS's inverse Hessian where it stopped short (``_steered``).
STEERED_STEPS = 16
#: Newton steps after convergence (``_refine``), until every |∂ log L/∂θ| is below this.
REFINE_STEPS = 3
REFINE_GRADIENT = 1e-8
#: Where BFGS stops short with every |∂ log L/∂θ| below this, Newton steps (``_polish``)
#: are tried before the trust region (measured, 30k rows with random slopes in both
#: functions: BFGS stopped at |g| = 1.7e-3, the trust region then spent 7 Hessians to fail
#: where one Newton step converged).
NEWTON_FIRST = 1e-2
#: BFGS stops once this many evaluations in a row lie within ``STALL_STEP`` (relative) of
#: its current iterate (``_BFGSRun``).
STALL_TRIALS = 5
STALL_STEP = 1e-8


class _Stalled(Exception):
    """BFGS's line search is probing the rounding error of log L."""


class _BFGSRun:
    """``Subspace.fun_and_grad`` for one BFGS run, stopping it where its line search has
    stalled: ``STALL_TRIALS`` evaluations in a row within ``STALL_STEP``·max(1, |x_k|) of
    the current iterate x_k. log L is a sum over the rows (about −1.2e6 at a million rows,
    rounding error ~1e-10) while a step's gain near the optimum is ~g²/H, so with many
    rows the sufficient-decrease test fails by rounding alone; scipy's BFGS then spends
    tens of evaluations (measured: 45 of a fit's 67 at 1M rows) before it gives up with
    "precision loss" at x_k anyway. The trust region and Newton steps that follow
    (``_optimise``, ``_refine``) finish from x_k, as they did after scipy's own stop."""

    def __init__(self, space: Subspace, x0: np.ndarray, inverse_hessian0=None):
        self.space, self.x, self.near, self.iterations = space, np.array(x0, float), 0, 0
        #: BFGS's inverse-Hessian estimate of −log L at x, rebuilt as scipy builds it
        #: (``inverse_hessian``), so that it survives a stall
        self.inverse_hessian = np.eye(len(x0)) if inverse_hessian0 is None else np.array(inverse_hessian0, float)
        self._seen: dict[bytes, tuple[float, np.ndarray]] = {}  # this iteration's evaluations
        self.value, self.grad = None, None  # −log L and its gradient at x, once known

    def fun_and_grad(self, x):
        if np.all(np.abs(x - self.x) <= STALL_STEP * np.maximum(1.0, np.abs(self.x))):
            self.near += 1
            if self.near >= STALL_TRIALS:
                raise _Stalled
        else:
            self.near = 0
        value, grad = self.space.fun_and_grad(x)
        self._seen[np.asarray(x, float).tobytes()] = (value, np.array(grad, float))
        if self.grad is None and np.array_equal(x, self.x):
            self.value, self.grad = value, np.array(grad, float)
        return value, grad

    def callback(self, xk):
        xk = np.array(xk, float)
        value, grad = self._seen.get(xk.tobytes(), (None, None))
        if grad is not None and self.grad is not None:
            self.inverse_hessian = bfgs_update(self.inverse_hessian, xk - self.x, grad - self.grad)
        self.value, self.grad, self._seen = value, grad, {}
        self.x, self.near, self.iterations = xk, 0, self.iterations + 1


def bfgs_update(inverse_hessian: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The BFGS update of an inverse Hessian H for the step s and the gradient change y,
    H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ with ρ = 1/(yᵀs), as scipy's BFGS makes it
    (skipped where yᵀs ≤ 0: the curvature condition fails)."""
    curvature = float(y @ s)
    if not curvature > 0:
        return inverse_hessian
    rho = 1.0 / curvature
    left = np.eye(len(s)) - rho * np.outer(s, y)
    return left @ inverse_hessian @ left.T + rho * np.outer(s, s)


def maximise(theta0: np.ndarray, data: ModelData | Blocks, layout: ParamLayout, n_quad: int,
             n_groups: int, boundary_log_sd: np.ndarray, inverse_hessian0=None,
             max_iter: int = DEFAULT_MAX_ITER) -> Optimum:
    """Maximise log L from θ0, settle the boundaries and judge convergence.

    BFGS with the gradient does most of the work; the Hessian (2·dim θ gradients,
    ``Objective.second_order``) is computed at the end for the convergence check and
    the standard errors. Where BFGS stops short, a trust-region
    Newton method with the Hessian takes over. Below ``FIXED_NODES_FROM`` points the
    derivatives run through the nodes (exact for the AGQ approximation; compiling them
    takes tens of seconds); from there on the nodes are held fixed, which changes the
    derivatives by less than the quadrature error (tests/test_quadrature_derivatives.py).
    Random effects at the boundary are then decided by ``boundary.settle_boundary``.
    ``max_iter`` caps the iterations of every optimiser run (BFGS, and the
    trust-region fallback, which stops at ``TRUST_REGION_MAX_ITER`` in any case).
    """
    # Under the quadratic association the quadrature error is larger and more sensitive
    # to the nodes' placement, so fixed-node derivatives would not match the value.
    objective = Objective(data, layout, n_quad, n_groups,
                           nodes_move=n_quad < FIXED_NODES_FROM or layout.association.nested_rule)
    if not np.isfinite(objective.fun(theta0)):
        raise FloatingPointError("the log-likelihood is not finite at the starting values")
    floors = floors_by_row(layout, boundary_log_sd)
    opt = _optimise(objective, np.asarray(theta0, float), layout, floors, frozenset(), frozenset(),
                    max_iter, inverse_hessian0)
    return _refine(_settle_boundary(opt, objective, layout, floors, max_iter), objective, layout, floors)


def _settle_boundary(opt: Optimum, objective: Objective, layout: ParamLayout, floors: dict,
                     max_iter: int) -> Optimum:
    """``boundary.settle_boundary`` with this module's optimiser runs (``_optimise``)."""
    return settle_boundary(opt, objective, layout, floors, max_iter, _optimise)


def _refine(opt: Optimum, objective: Objective, layout: ParamLayout, floors: dict) -> Optimum:
    """Newton steps from a converged optimum until every |∂ log L/∂θ| < ``REFINE_GRADIENT``.

    The convergence test stops BFGS where |g| < 1e-3, which leaves θ̂ within about
    1e-3·SE² of the maximum, on a path that depends on rounding; from there Newton
    converges quadratically, so fits of the same data in other units, or from other
    starting values, agree to ~1e-9 instead of ~1e-6. The steps hold the optimum's Hessian
    (``_held_newton``: a gradient call each, not a Hessian's 2·dim θ), and the end point
    is judged once, with its own Hessian for the SEs. It is kept only while the fit stays
    converged, on the same boundary, and log L does not fall by more than
    ``BOUNDARY_TOLERANCE``."""
    if not opt.converged:
        return opt
    space = Subspace(objective, opt.theta, identified(layout, opt.pivots, opt.zero_rows))
    if np.max(np.abs(opt.grad[space.free]), initial=0.0) < REFINE_GRADIENT:
        return opt
    x = _held_newton(space, opt.theta[space.free], opt.hessian, REFINE_STEPS)
    if x is None:
        return opt
    trial = judge(space.full(x), objective, layout, floors, opt.pivots, opt.zero_rows, opt.iterations,
                  "converged")
    if not trial.converged or trial.pivots != opt.pivots or trial.loglik < opt.loglik - BOUNDARY_TOLERANCE:
        return opt
    return trial


def _held_newton(space: Subspace, x: np.ndarray, hessian: np.ndarray, steps: int) -> np.ndarray | None:
    """At most ``steps`` Newton steps x ← x + (−H)⁻¹g with H, the Hessian of log L where they
    start, held, until every |g| < ``REFINE_GRADIENT``; None where H is singular or log L not
    finite. Near the optimum the steps move θ by ~|g|·SE², so H changes by as little and
    the iteration converges almost as fast as Newton's (measured: |g| 2e-3 → 1e-10 in two
    steps), at one gradient call a step instead of a Hessian's 2·dim θ."""
    neg_hessian = -hessian[np.ix_(space.free, space.free)]
    return _steps(space, x, lambda grad: np.linalg.solve(neg_hessian, grad), steps)


def _steps(space: Subspace, x: np.ndarray, direction, steps: int) -> np.ndarray | None:
    """At most ``steps`` steps x ← x − direction(g), g the gradient of −log L, until every
    |g| < ``REFINE_GRADIENT``; None where log L is not finite or the direction cannot be
    solved for (a singular matrix)."""
    for _ in range(steps):
        value, grad = space.fun_and_grad(x)  # of −log L
        if not np.isfinite(value):
            return None
        if np.max(np.abs(grad), initial=0.0) < REFINE_GRADIENT:
            break
        try:
            x = x - direction(grad)
        except np.linalg.LinAlgError:
            return None
    return x


def _optimise(objective: Objective, theta0: np.ndarray, layout: ParamLayout, floors: dict,
              pivots: frozenset, zero_rows: frozenset, max_iter: int,
              inverse_hessian0=None) -> Optimum:
    """BFGS (then trust-region Newton if needed) over θ with the boundary entries of
    ``pivots``/``zero_rows`` held at their values in θ0."""
    free = identified(layout, pivots, zero_rows)
    space = Subspace(objective, theta0, free)
    options = {"gtol": 1e-6, "maxiter": max_iter}
    if inverse_hessian0 is not None and len(inverse_hessian0) == len(free):
        options["hess_inv0"] = inverse_hessian0
    run = _BFGSRun(space, theta0[free], options.get("hess_inv0"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = scipy.optimize.minimize(run.fun_and_grad, theta0[free], jac=True, method="BFGS",
                                             options=options, callback=run.callback)
        x, iterations, message = result.x, int(result.nit), str(result.message)
    except _Stalled:
        x, iterations, message = run.x, run.iterations, "line search stalled at the rounding error of log L"
    if run.grad is not None and np.array_equal(x, run.x) and 1e-3 <= np.max(np.abs(run.grad)) < NEWTON_FIRST:
        steered = _steered(space, run, objective, layout, floors, pivots, zero_rows)
        if steered is not None:
            return steered
    opt = judge(space.full(x), objective, layout, floors, pivots, zero_rows, iterations, message)
    if not opt.converged and opt.pivots == pivots and np.max(np.abs(opt.grad[free])) < NEWTON_FIRST:
        # Stopped just short (held-node derivatives vs the value, or rounding): Newton
        # steps cost a gradient call each; the trust region a Hessian per iteration.
        polished = _polish(opt, space, objective, layout, floors, pivots, zero_rows)
        if polished.converged:
            return polished
    if not opt.converged and opt.pivots == pivots:
        # Not where a new boundary is being approached (there the Hessian is singular
        # and Newton steps run off towards −∞; _settle_boundary holds it instead).
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                result = scipy.optimize.minimize(
                    space.fun, opt.theta[free], jac=space.jac, hess=space.hess, method="trust-exact",
                    options={"gtol": 1e-8, "maxiter": min(max_iter, TRUST_REGION_MAX_ITER)})
        except (UnboundLocalError, ValueError, np.linalg.LinAlgError):
            # scipy's trust-region subproblem fails outright on a non-finite Hessian
            # (UnboundLocalError in scipy 1.x): keep the BFGS point and its verdict.
            return opt
        opt = judge(space.full(result.x), objective, layout, floors, pivots, zero_rows,
                     iterations + int(result.nit), str(result.message))
        if not opt.converged and opt.pivots == pivots:
            opt = _polish(opt, space, objective, layout, floors, pivots, zero_rows)
    return opt


def _steered(space: Subspace, run: _BFGSRun, objective: Objective, layout: ParamLayout, floors: dict,
             pivots: frozenset, zero_rows: frozenset) -> Optimum | None:
    """Where BFGS stopped just short (1e-3 ≤ max |g| < ``NEWTON_FIRST``: not converged by
    the gradient test): quasi-Newton steps x ← x − B g with B its own inverse-Hessian
    estimate (``_BFGSRun.inverse_hessian``), until every |g| < ``REFINE_GRADIENT`` (at
    most ``STEERED_STEPS``), then one judgement with the end point's Hessian. This spares
    the Hessian (2·dim θ gradient calls) that ``_polish`` computes at the stopping point
    only to steer its steps. Kept if it converged on the same boundary with log L within
    ``POLISH_TOLERANCE`` of the stopping point's; otherwise None, and the usual path runs
    (the steps' gradient calls are then lost)."""
    x = _steps(space, run.x, lambda grad: run.inverse_hessian @ grad, STEERED_STEPS)
    if x is None:
        return None
    opt = judge(space.full(x), objective, layout, floors, pivots, zero_rows, run.iterations, "quasi-Newton steps")
    if not opt.converged or opt.pivots != pivots or -opt.loglik > run.value + POLISH_TOLERANCE:
        return None
    return opt


def _polish(opt: Optimum, space: Subspace, objective: Objective, layout: ParamLayout, floors: dict,
            pivots: frozenset, zero_rows: frozenset) -> Optimum:
    """Newton steps θ ← θ + (−H)⁻¹g with the fixed-node derivatives (H held, ``_held_newton``),
    for a fit the line-search optimisers left with a gradient just above the tolerance.

    With held quadrature nodes the derivatives are those of a slightly different function
    than the value (whose nodes move with θ); the two stationary points differ by the
    quadrature error's sensitivity. In small groups (5 rows) that can leave |g| ≈ 0.002 at
    the point where BFGS and the trust region, which both test the value, stop ("a bad
    approximation caused failure to predict improvement"), although the Newton step is a
    few thousandths of an SE. Newton steps ignore the value and reach the derivatives'
    stationary point; it is kept if the log-likelihood there is within
    ``POLISH_TOLERANCE`` of the current one (both are the optimum to within the quadrature
    error), else the fit stays as it was.
    """
    x = _held_newton(space, opt.theta[space.free], opt.hessian, POLISH_STEPS)
    if x is None:
        return opt
    polished = judge(space.full(x), objective, layout, floors, pivots, zero_rows, opt.iterations,
                     "Newton steps")
    if polished.loglik < opt.loglik - POLISH_TOLERANCE or polished.pivots != pivots or not polished.converged:
        return opt
    return polished


def fit_ml(design, data: ModelData | Blocks, layout: ParamLayout, n_quad: int | None = None,
           theta0: np.ndarray | None = None, max_iter: int | None = None,
           reporter: Progress | None = None) -> tuple[Optimum, dict]:
    """Staged maximum-likelihood fit. Returns the optimum and timing/stage information.

    ``max_iter`` caps the iterations of every optimiser run (default ``DEFAULT_MAX_ITER``).
    ``reporter``: a ``melsm.progress.Progress`` that gets each stage as a step.
    Warns ``MelsmConvergenceWarning`` (with the reason) when the fit did not converge
    (``warn_boundary`` names the parameters on the boundary, once the fit is in the
    user's units).
    """
    started = time.perf_counter()
    reporter = reporter or Progress(False)
    n_quad = n_quad or default_quadrature(layout)
    max_iter = DEFAULT_MAX_ITER if max_iter is None else int(max_iter)
    info: dict = {"stages": []}
    inverse_hessian0 = None
    if theta0 is None:
        beta, alpha, resid_var = least_squares_start(design)
        small = without_scale_effects(layout)
        L0 = initial_cholesky(design, small, resid_var)
        kappa = function_intercepts(np.zeros(len(small.g_names)), small, L0)
        theta_small = small.pack(beta, alpha, kappa, L0)
        if layout.q_v:
            stage = reporter.step("fitting without random scale effects", lambda: maximise(
                theta_small, data, small, 1, group_slots(data), boundary_floors(design, small), max_iter=max_iter))
            info["stages"].append({"name": "without random scale effects",
                                   "loglik": stage.loglik, "iterations": stage.iterations})
            theta_stage = stage.theta
            if stage.pivots:
                # Let the full model start those location effects away from the boundary
                # (in log σ the way back from 10⁻⁸ is long and flat).
                p = small.params(theta_stage, xp=np)
                L_stage = p.chol.copy()
                for r in stage.pivots:
                    L_stage[r, r] = L0[r, r]
                theta_stage = small.theta(p._replace(chol=L_stage))
            theta0 = embed_start(theta_stage, small, layout, design)
            inverse_hessian0 = None if stage.pivots else embed_inverse_hessian(stage, small, layout)
        else:
            theta0 = theta_small
    opt = reporter.step("fitting the full model", lambda: maximise(
        np.asarray(theta0, float), data, layout, n_quad, group_slots(data), boundary_floors(design, layout),
        inverse_hessian0, max_iter=max_iter))
    info["stages"].append({"name": "full model", "loglik": opt.loglik,
                           "iterations": opt.iterations})
    info["n_quad"] = n_quad
    info["seconds"] = time.perf_counter() - started
    if not opt.converged:
        warnings.warn(f"the fit did not converge: {opt.message}", MelsmConvergenceWarning,
                      stacklevel=3)
    return opt, info


def warn_boundary(boundary_values: dict) -> None:
    """``MelsmBoundaryWarning`` naming the parameters on the boundary, if any."""
    if not boundary_values:
        return
    labels = [f"{name} = {value:.4g}" if np.isfinite(value) else f"{name} (singular covariance matrix)"
              for name, value in boundary_values.items()]
    warnings.warn("random-effect parameters estimated on the boundary of the parameter space: "
                  + ", ".join(labels) + " (no SEs for them; test them with lrtest, "
                  "which uses the chi-bar-squared mixture for one random effect)",
                  MelsmBoundaryWarning, stacklevel=3)
