"""Maximum-likelihood estimation: starting values, optimiser, convergence checks.

Following lme4, the deviance function (``melsm.engine.likelihood``) is separate from the
optimiser. BFGS maximises log L with its exact gradient (JAX autodiff); where it stops
short, a trust-region Newton method (scipy's ``trust-exact``) takes over. The Hessian (for
the convergence test, those Newton steps and the SEs) is the central difference of the
exact gradient (``_Objective.second_order``). The adaptive quadrature nodes are refreshed
at every new θ and held fixed while differentiating (from ``FIXED_NODES_FROM`` points on).

Starting values are staged as in MIXREGLS: ordinary least squares for β and a
regression of log squared residuals for α; then the model without random scale effects
(closed-form likelihood); then the full model.

Boundaries. Random-effect SDs enter θ through the log-diagonal of the Cholesky factor
L, so a variance of zero (or a singular Σ, e.g. a correlation of ±1) lies at θ = −∞:
the optimiser can only approach it, and near it the likelihood is flat in θ (∂ℓ/∂ log σ
= σ² ∂ℓ/∂σ², so the gradient vanishes long before σ does). BFGS therefore either runs
down to a tiny σ or stalls at a small positive one with a small gradient and a nearly
singular Hessian; in the second case the old floor rule (σ < 10⁻⁴ of its natural scale)
missed the boundary and the fit was reported as converged with an SD of, say, 1e-4 ±
0.12 and inflated SEs elsewhere. ``_settle_boundary`` decides each boundary explicitly,
as lme4 does by constraining L's diagonal to [0, ∞):

* a diagonal entry of L below the floor is a *zero pivot*: the random effect is an exact
  linear combination of the ones before it. If its whole row is below the floor too its
  variance is zero (``sd:... = 0``), otherwise Σ is singular (for two effects: a
  correlation of ±1);
* at a stationary point, every other random effect is screened: if removing it (or
  zeroing its pivot) with the other parameters unchanged costs less than
  ``BOUNDARY_SCREEN`` in log L, the model is refitted with it held at the boundary, and
  the boundary fit is kept when its log L is within ``BOUNDARY_TOLERANCE`` of the
  interior one (the likelihood profile is flat down to 0, so 0 is the estimate);
* a boundary the optimiser ran into is checked from the other side: the model is
  refitted from that SD set back to ``STEP_OFF_FRACTION`` of its scale, and a higher
  log L there wins (from a poor start BFGS can run a needed effect down to 0).

A held zero pivot sits at ``HELD_FRACTION`` of its natural scale (the likelihood differs
from that of an exact zero by ~10⁻¹⁶), its column of L is held at 0 (otherwise the
column would trade variance with the next diagonal entry: a flat direction), and for a
zero variance its row as well. Held entries are not identified: convergence (gradient
and positive-definite −Hessian) is judged, and SEs are computed, over the others, i.e.
conditionally on the boundary, as in lme4 and Stata.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from melsm.engine import jax_config as _jax  # noqa: F401  (float64, compilation cache)
from melsm.engine.compiled import compiled
from melsm.engine.likelihood import ModelData, Nodes, find_nodes, loglik, nested_nodes
from melsm.errors import MelsmBoundaryWarning, MelsmConvergenceWarning
from melsm.model.association import Association
from melsm.model.params import ParamLayout, is_intercept

#: Default Gauss–Hermite points per scale dimension, chosen by measured accuracy
#: (bench/quadrature_accuracy.py): the log-likelihood is within 1e-5 of its limit.
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
#: A diagonal entry of L held at the boundary sits at this fraction of its natural scale.
HELD_FRACTION = 1e-8
#: Screen: a random effect whose removal, other parameters unchanged, costs less than this
#: in log L is refitted at the boundary (a cheap filter; the refit decides).
BOUNDARY_SCREEN = 1.0
#: Only random effects whose log-SD pivot has an SE above this are screened (see
#: ``_flat_rows``); near a boundary the SE of log σ grows without bound.
FLAT_LOG_SE = 1.0
#: The boundary fit is kept when its log L is within this of the interior optimum.
BOUNDARY_TOLERANCE = 1e-6
#: A boundary the optimiser ran into is checked by refitting from an SD of this fraction
#: of its natural scale (the size of the starting values, ``initial_cholesky``).
STEP_OFF_FRACTION = 0.3
#: Step of the central differences of the gradient that give the Hessian, relative to
#: max(1, |θ_k|) on the standardised scale (``_Objective.second_order``).
HESSIAN_STEP = 1e-4
#: Default cap on the iterations of each optimiser run.
DEFAULT_MAX_ITER = 1000
#: Cap on the iterations of the trust-region fallback (each needs a Hessian).
TRUST_REGION_MAX_ITER = 200
#: Newton steps tried after the optimisers stop short (``_polish``), and the largest loss
#: of log L accepted for them (far below any quadrature error that matters).
POLISH_STEPS = 5
POLISH_TOLERANCE = 1e-3
#: Newton steps after convergence (``_refine``), until every |∂ log L/∂θ| is below this.
REFINE_STEPS = 3
REFINE_GRADIENT = 1e-8


def default_quadrature(layout: ParamLayout) -> int:
    """Points per dimension (``DEFAULT_QUADRATURE``); the quadratic association's nested
    rule: 11 outer points (×41 inner), within 1e-4 of its limit on the Riesby data."""
    return 11 if layout.association.nested_rule else DEFAULT_QUADRATURE.get(layout.n_agq, 5)


def newton_steps(layout: ParamLayout) -> int:
    """Newton steps for the quadrature modes: the quadratic association's joint posterior of
    (η_v, η_u) need not be log-concave away from the mode, and from a cold start (η = 0)
    Newton took up to 16 steps on the Riesby data."""
    return N_NEWTON if layout.association.location_exact else 2 * N_NEWTON + 4


def _loglik_and_nodes(theta, data: ModelData, eta_start, node_theta, layout: ParamLayout, n_quad: int,
                      nodes_move: bool):
    """log L(θ) with the quadrature nodes found at θ (``nodes_move``) or at ``node_theta``.

    ``nodes_move=True`` differentiates through the nodes (the exact derivative of the
    AGQ approximation); ``False`` holds them fixed where they are at ``node_theta``
    (normally θ itself), which is cheaper and differs from the exact derivative by the
    quadrature error's sensitivity to the nodes — negligible from ``FIXED_NODES_FROM``
    points on, all of it for the Laplace approximation. (``_Objective.second_order``
    differentiates the gradient at θ ± h with the nodes of θ.)
    """
    params = layout.params(theta)
    if not layout.n_agq:
        return loglik(params, data, None, layout, n_quad), None
    # Stopping the gradient of θ (not of the nodes) keeps autodiff out of the node search.
    at = params if nodes_move else layout.params(jax.lax.stop_gradient(node_theta))
    nodes = find_nodes(at, data, eta_start, layout, newton_steps(layout), implicit=nodes_move)
    if layout.association.nested_rule:
        nodes = nested_nodes(at, data, nodes, layout, n_quad)
    return loglik(params, data, nodes, layout, n_quad), nodes


@compiled(static_argnames=("layout", "n_quad", "nodes_move"))
def value_grad_nodes(theta, data: ModelData, eta_start, node_theta, layout: ParamLayout, n_quad: int,
                     nodes_move: bool = True):
    """log L(θ), its gradient and the quadrature nodes (found at ``node_theta`` when they
    are held fixed, normally θ itself)."""
    (value, nodes), grad = jax.value_and_grad(_loglik_and_nodes, has_aux=True)(
        theta, data, eta_start, node_theta, layout, n_quad, nodes_move)
    return value, grad, jax.lax.stop_gradient(nodes)


def derivatives(theta, data: ModelData, eta_start, layout: ParamLayout, n_quad: int, nodes_move: bool):
    """log L, its gradient and its Hessian in θ by automatic differentiation (through the
    nodes if ``nodes_move``): the reference for ``_Objective.second_order``'s differences.
    Its program takes several times as long to compile as the gradient's, which is why
    fits do not use it."""
    def f(t):
        return _loglik_and_nodes(t, data, eta_start, t, layout, n_quad, nodes_move)[0]
    return jax.jit(lambda t: (*jax.value_and_grad(f)(t), jax.hessian(f)(t)))(theta)


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
    #: Rows of L (internal random-effect index) with a zero pivot: the effect is an
    #: exact linear combination of the effects before it (Σ singular).
    pivots: frozenset = frozenset()
    #: The subset of ``pivots`` whose whole row is zero: the effect's variance is zero.
    zero_rows: frozenset = frozenset()
    #: Every |∂ log L / ∂θ| over the identified parameters is below the tolerance.
    small_gradient: bool = False


class _Objective:
    """−log L and its derivatives for scipy, caching the last point's nodes and Hessian."""

    def __init__(self, data, layout, n_quad, n_groups, nodes_move: bool):
        self.data, self.layout, self.n_quad = data, layout, n_quad
        self.nodes_move = nodes_move and layout.n_agq > 0
        self.eta = np.zeros((n_groups, layout.n_agq))
        self._point = None  # (θ bytes, value, grad, nodes)
        self._second = None  # (θ bytes, value, grad, Hessian)

    def evaluate(self, x):
        """(log L, gradient, nodes) at x, the node search warm-started from the last good point's
        modes. A point where the warm start fails (a non-finite value or gradient) is tried
        again from η = 0, and only a point finite in both becomes the next warm start: one bad
        trial step of the line search must not poison every later evaluation."""
        key = x.tobytes()
        if self._point is None or self._point[0] != key:
            value, grad, nodes = self._at(x, self.eta)
            if not _finite(value, grad) and self.layout.n_agq:
                value, grad, nodes = self._at(x, np.zeros_like(self.eta))
            if nodes is not None and _finite(value, grad):
                self.eta = nodes.mode
            self._point = (key, value, grad, nodes)
        return self._point[1:]

    def _at(self, x, eta_start, node_theta=None):
        node_theta = x if node_theta is None else node_theta
        value, grad, nodes = value_grad_nodes(jnp.asarray(x), self.data, eta_start, jnp.asarray(node_theta),
                                              self.layout, self.n_quad, self.nodes_move)
        return float(value), np.asarray(grad), nodes

    def second_order(self, x):
        """(log L, gradient, Hessian) at x. The Hessian is the central difference of the
        autodiff gradient, column k from θ ± h_k e_k with h_k = ``HESSIAN_STEP``·max(1, |θ_k|)
        (on the standardised scale), with the quadrature nodes held where they are at x
        (or moving with θ under ``nodes_move``), then symmetrised: the derivative of the
        gradient that the optimiser uses, accurate to ~1e-7 relative, and no second
        compiled program (an autodiff Hessian, ``derivatives``, took 1.5-2 times as long to
        compile as the gradient)."""
        key = x.tobytes()
        if self._second is None or self._second[0] != key:
            value, grad, _ = self.evaluate(x)
            self._second = (key, value, grad, self._hessian(x))
        return self._second[1:]

    def _hessian(self, x) -> np.ndarray:
        columns = []
        for k in range(len(x)):
            h = HESSIAN_STEP * max(1.0, abs(x[k]))
            step = np.zeros_like(x)
            step[k] = h
            up, down = self._at(x + step, self.eta, node_theta=x), self._at(x - step, self.eta, node_theta=x)
            columns.append((up[1] - down[1]) / (2 * h))
        hessian = np.stack(columns, axis=1) if columns else np.zeros((0, 0))
        return 0.5 * (hessian + hessian.T)

    def fun_and_grad(self, x):
        value, grad, _ = self.evaluate(x)
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return np.inf, np.zeros_like(x)
        return -value, -grad

    def fun(self, x):
        return self.fun_and_grad(x)[0]

    def exact_jac(self, x):
        return -self.second_order(x)[1]

    def exact_hess(self, x):
        return -self.second_order(x)[2]


def _finite(value: float, grad: np.ndarray) -> bool:
    return bool(np.isfinite(value)) and bool(np.all(np.isfinite(grad)))


class _Subspace:
    """The objective over the free entries of θ, the others held at ``template``'s values."""

    def __init__(self, objective: _Objective, template: np.ndarray, free: np.ndarray):
        self.objective, self.template, self.free = objective, np.asarray(template, float), free

    def full(self, x) -> np.ndarray:
        theta = self.template.copy()
        theta[self.free] = x
        return theta

    def fun_and_grad(self, x):
        value, grad = self.objective.fun_and_grad(self.full(x))
        return value, grad[self.free]

    def fun(self, x):
        return self.fun_and_grad(x)[0]

    def jac(self, x):
        return self.objective.exact_jac(self.full(x))[self.free]

    def hess(self, x):
        return self.objective.exact_hess(self.full(x))[np.ix_(self.free, self.free)]


def maximise(theta0: np.ndarray, data: ModelData, layout: ParamLayout, n_quad: int,
             n_groups: int, boundary_log_sd: np.ndarray, inverse_hessian0=None,
             max_iter: int = DEFAULT_MAX_ITER) -> Optimum:
    """Maximise log L from θ0, settle the boundaries and judge convergence.

    BFGS with the gradient does most of the work; the Hessian (2·dim θ gradients,
    ``_Objective.second_order``) is computed at the end for the convergence check and
    the standard errors. Where BFGS stops short, a trust-region
    Newton method with the Hessian takes over. Below ``FIXED_NODES_FROM`` points the
    derivatives run through the nodes (exact for the AGQ approximation; compiling them
    takes tens of seconds); from there on the nodes are held fixed, which changes the
    derivatives by less than the quadrature error (tests/test_quadrature_derivatives.py).
    Random effects at the boundary are then decided by ``_settle_boundary`` (module
    docstring). ``max_iter`` caps the iterations of every optimiser run (BFGS, and the
    trust-region fallback, which stops at ``TRUST_REGION_MAX_ITER`` in any case).
    """
    # Under the quadratic association the quadrature error is larger and more sensitive
    # to the nodes' placement, so fixed-node derivatives would not match the value.
    objective = _Objective(data, layout, n_quad, n_groups,
                           nodes_move=n_quad < FIXED_NODES_FROM or layout.association.nested_rule)
    if not np.isfinite(objective.fun(theta0)):
        raise FloatingPointError("the log-likelihood is not finite at the starting values")
    floors = _floors_by_row(layout, boundary_log_sd)
    opt = _optimise(objective, np.asarray(theta0, float), layout, floors, frozenset(), frozenset(),
                    max_iter, inverse_hessian0)
    return _refine(_settle_boundary(opt, objective, layout, floors, max_iter), objective, layout, floors)


def _refine(opt: Optimum, objective: _Objective, layout: ParamLayout, floors: dict) -> Optimum:
    """Newton steps from a converged optimum until every |∂ log L/∂θ| < ``REFINE_GRADIENT``.

    The convergence test stops BFGS where |g| < 1e-3, which leaves θ̂ within about
    1e-3·SE² of the maximum, on a path that depends on rounding; from there Newton
    converges quadratically (the Hessian is already at hand), so fits of the same data in
    other units, or from other starting values, agree to ~1e-9 instead of ~1e-6. A step
    is kept only while the fit stays converged, on the same boundary, and log L does not
    fall by more than ``BOUNDARY_TOLERANCE``."""
    if not opt.converged:
        return opt
    space = _Subspace(objective, opt.theta, _identified(layout, opt.pivots, opt.zero_rows))
    for _ in range(REFINE_STEPS):
        if np.max(np.abs(opt.grad[space.free]), initial=0.0) < REFINE_GRADIENT:
            break
        x = opt.theta[space.free]
        try:  # the subspace's jac and hess are those of −log L
            x = x - np.linalg.solve(space.hess(x), space.jac(x))
        except np.linalg.LinAlgError:
            break
        trial = _judge(space.full(x), objective, layout, floors, opt.pivots, opt.zero_rows, opt.iterations,
                       "converged")
        if not trial.converged or trial.pivots != opt.pivots or trial.loglik < opt.loglik - BOUNDARY_TOLERANCE:
            break
        opt = trial
    return opt


def _optimise(objective: _Objective, theta0: np.ndarray, layout: ParamLayout, floors: dict,
              pivots: frozenset, zero_rows: frozenset, max_iter: int,
              inverse_hessian0=None) -> Optimum:
    """BFGS (then trust-region Newton if needed) over θ with the boundary entries of
    ``pivots``/``zero_rows`` held at their values in θ0."""
    free = _identified(layout, pivots, zero_rows)
    space = _Subspace(objective, theta0, free)
    options = {"gtol": 1e-6, "maxiter": max_iter}
    if inverse_hessian0 is not None and len(inverse_hessian0) == len(free):
        options["hess_inv0"] = inverse_hessian0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy.optimize.minimize(space.fun_and_grad, theta0[free], jac=True,
                                         method="BFGS", options=options)
    iterations = int(result.nit)
    opt = _judge(space.full(result.x), objective, layout, floors, pivots, zero_rows, iterations,
                 str(result.message))
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
        opt = _judge(space.full(result.x), objective, layout, floors, pivots, zero_rows,
                     iterations + int(result.nit), str(result.message))
        if not opt.converged and opt.pivots == pivots:
            opt = _polish(opt, space, objective, layout, floors, pivots, zero_rows)
    return opt


def _polish(opt: Optimum, space: _Subspace, objective: _Objective, layout: ParamLayout, floors: dict,
            pivots: frozenset, zero_rows: frozenset) -> Optimum:
    """Plain Newton steps θ ← θ + (−H)⁻¹g with the fixed-node derivatives, for a fit the
    line-search optimisers left with a gradient just above the tolerance.

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
    x = opt.theta[space.free]
    for _ in range(POLISH_STEPS):
        try:  # the subspace's jac and hess are those of −log L
            x = x - np.linalg.solve(space.hess(x), space.jac(x))
        except np.linalg.LinAlgError:
            return opt
        polished = _judge(space.full(x), objective, layout, floors, pivots, zero_rows, opt.iterations,
                          "Newton steps")
        if polished.loglik < opt.loglik - POLISH_TOLERANCE or polished.pivots != pivots:
            return opt
        if polished.converged:
            return polished
    return opt


def _settle_boundary(opt: Optimum, objective: _Objective, layout: ParamLayout, floors: dict,
                     max_iter: int) -> Optimum:
    """Decide which random effects sit on the boundary and refit with them held there.

    First every zero pivot the optimiser ran into (diagonal of L below its floor) is held
    (as a zero variance if holding the whole row costs nothing, else as a singular Σ) and
    the rest refitted. Then, at a stationary point, each remaining random effect is
    screened: zero variance first, then a zero pivot (Σ singular). A candidate is refitted
    at the boundary and kept if its log L is within ``BOUNDARY_TOLERANCE`` of the current
    fit's. The loop ends when nothing more is held; each round holds one more effect.
    See the module docstring for why log-parameterised SDs need this.
    """
    held_p, held_z = frozenset(), frozenset()
    iterations = opt.iterations
    rejected: set = set()
    released: set = set()
    rows = sorted(floors)
    while True:
        base, accepted = opt, None
        forced = sorted(base.pivots - held_p)

        def screened(kind, r, base=base, held=(held_p, held_z)):
            return _screen(objective, base, layout, floors, *_structure(*held, kind, r))

        if forced:
            # The optimiser ran into this zero pivot: hold it, as a zero variance if that
            # costs nothing, else as a singular Σ (the last trial is taken regardless).
            r = forced[0]
            if r in base.zero_rows or not _has_free_row(layout, r, held_p):
                trials = [("zero", r)]
            else:
                trials = [("zero", r)] if screened("zero", r) < BOUNDARY_SCREEN else []
                trials.append(("pivot", r))
        elif base.small_gradient:
            candidates = []
            flat = _flat_rows(base, layout, floors)
            for r in rows:
                if r in held_p or r not in flat:
                    continue
                for kind in ["zero"] + (["pivot"] if _has_free_row(layout, r, held_p) else []):
                    if (kind, r) not in rejected and (drop := screened(kind, r)) < BOUNDARY_SCREEN:
                        candidates.append((drop, kind, r))
            trials = [(kind, r) for _, kind, r in sorted(candidates)]
        else:
            trials = []
        for k, (kind, r) in enumerate(trials):
            p, z = _structure(held_p, held_z, kind, r)
            start = _restrict(base.theta, layout, floors, p, z)
            trial = _optimise(objective, start, layout, floors, p, z, max_iter,
                              _inverse_start(base, layout, p, z))
            iterations += trial.iterations
            last_forced = bool(forced) and k == len(trials) - 1
            as_good = trial.loglik >= base.loglik - BOUNDARY_TOLERANCE
            if last_forced or (as_good and (trial.small_gradient or not base.small_gradient)):
                accepted = trial
                held_p, held_z = p, z
                break
            rejected.add((kind, r))
        if accepted is None:
            break
        if forced and r not in released and accepted.small_gradient:
            # The optimiser's path may have run into the boundary from a poor start: step
            # off it (this effect's SD back to a moderate size, the rest at the boundary
            # fit) and refit; a higher log L there means the boundary was not the maximum.
            released.add(r)
            free_p, free_z = held_p - {r}, held_z - {r}
            release = _optimise(objective, _step_off(accepted.theta, layout, floors, r), layout, floors,
                                free_p, free_z, max_iter)
            iterations += release.iterations
            if release.loglik > accepted.loglik + BOUNDARY_TOLERANCE:
                accepted, held_p, held_z = release, free_p, free_z
        opt = accepted
    opt.iterations = iterations
    return opt


def _flat_rows(opt: Optimum, layout: ParamLayout, floors: dict) -> set:
    """Rows of L whose log-diagonal is so poorly determined (SE above ``FLAT_LOG_SE``)
    that the likelihood may be flat all the way to the boundary. A well-determined
    pivot (say σ = 0.12 ± 0.04, SE of log σ 0.35) cannot have its maximum at 0, and
    screening it would cost a refit for nothing."""
    cov = covariance(opt, layout)
    out = set()
    for r, (position, _) in floors.items():
        variance = cov[position, position]
        if not np.isfinite(variance) or variance < 0 or np.sqrt(variance) > FLAT_LOG_SE:
            out.add(r)
    return out


def _step_off(theta: np.ndarray, layout: ParamLayout, floors: dict, r: int) -> np.ndarray:
    """θ with the diagonal entry of L in row r set to STEP_OFF_FRACTION of its scale."""
    p = layout.params(np.asarray(theta, float), xp=np)
    L = p.chol.copy()
    L[r, r] = np.exp(floors[r][1]) * STEP_OFF_FRACTION / BOUNDARY_FRACTION
    return layout.theta(p._replace(chol=L))


def _screen(objective: _Objective, base: Optimum, layout: ParamLayout, floors: dict,
            pivots: frozenset, zero_rows: frozenset) -> float:
    """Loss of log L from moving ``base`` onto a boundary, other parameters unchanged."""
    value = objective.evaluate(_restrict(base.theta, layout, floors, pivots, zero_rows))[0]
    return base.loglik - value if np.isfinite(value) else np.inf


def _structure(held_p: frozenset, held_z: frozenset, kind: str, r: int):
    return held_p | {r}, (held_z | {r}) if kind == "zero" else held_z


def _has_free_row(layout: ParamLayout, r: int, held_p: frozenset) -> bool:
    """Whether row r of L has off-diagonal entries that could carry variance."""
    return any(rr == r and c != r and c not in held_p for rr, c in layout.chol_entries)


def _floors_by_row(layout: ParamLayout, boundary_log_sd: np.ndarray) -> dict:
    """{row of L: (θ position of its log-diagonal, log floor)}."""
    offset = sum(layout.sizes[:3])
    diag = [(offset + k, r) for k, (r, c) in enumerate(layout.chol_entries) if r == c]
    return {r: (pos, float(floor)) for (pos, r), floor in zip(diag, boundary_log_sd, strict=True)}


def _restrict(theta: np.ndarray, layout: ParamLayout, floors: dict, pivots: frozenset,
              zero_rows: frozenset) -> np.ndarray:
    """θ moved onto the boundary given by ``pivots``/``zero_rows``, Σ otherwise kept.

    Σ = L Lᵀ loses the rows and columns of ``zero_rows`` and is factored again with a
    zero pivot at each row of ``pivots`` (so that effect becomes the linear combination
    of the earlier ones given by its row of L, and its column of L is zero); the held
    diagonal entries are set to ``HELD_FRACTION`` of their natural scale.
    """
    p = layout.params(np.asarray(theta, float), xp=np)
    sigma = p.chol @ p.chol.T
    for r in zero_rows:
        sigma[r, :] = 0.0
        sigma[:, r] = 0.0
    q = len(sigma)
    L = np.zeros_like(sigma)
    for j in range(q):
        if j in pivots:
            L[j, j] = np.exp(floors[j][1]) * HELD_FRACTION / BOUNDARY_FRACTION
            continue
        d = sigma[j, j] - L[j, :j] @ L[j, :j]
        tiny = (np.exp(floors[j][1]) * HELD_FRACTION / BOUNDARY_FRACTION) if j in floors else 1e-8
        L[j, j] = np.sqrt(max(d, tiny**2))
        for i in range(j + 1, q):
            L[i, j] = (sigma[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    return layout.theta(p._replace(chol=L))


def _inverse_start(opt: Optimum, layout: ParamLayout, pivots: frozenset, zero_rows: frozenset):
    """BFGS's first inverse Hessian for a refit: −H⁻¹ over its free entries, if usable."""
    free = _identified(layout, pivots, zero_rows)
    sub = -opt.hessian[np.ix_(free, free)]
    if not (np.all(np.isfinite(sub)) and _is_positive_definite(sub)):
        return None
    inv = np.linalg.inv(0.5 * (sub + sub.T))
    return 0.5 * (inv + inv.T) if np.all(np.isfinite(inv)) else None


def _judge(theta, objective: _Objective, layout: ParamLayout, floors: dict, held_p: frozenset,
           held_z: frozenset, iterations: int, optimiser_message: str) -> Optimum:
    """Convergence: small gradient and positive-definite −Hessian over the identified θ.

    A free diagonal entry of L below its floor is a zero pivot being approached (and a
    zero variance if its whole row is below the floor); its entries are left out of the
    check, like the held ones.
    """
    nodes = objective.evaluate(theta)[2]
    value, grad, hess = objective.second_order(theta)
    L = layout.cholesky(np.asarray(theta), xp=np)
    pivots, zero_rows = set(held_p), set(held_z)
    for r, (pos, floor) in floors.items():
        if r not in pivots and theta[pos] < floor:
            pivots.add(r)
            if 0.5 * np.log(L[r] @ L[r]) < floor:
                zero_rows.add(r)
    free = _identified(layout, frozenset(pivots), frozenset(zero_rows))
    sub = -hess[np.ix_(free, free)]
    positive_definite = bool(np.all(np.isfinite(sub))) and _is_positive_definite(sub)
    max_grad = float(np.max(np.abs(grad[free]), initial=0.0))
    small_gradient = max_grad < GRADIENT_TOLERANCE and bool(np.isfinite(value))
    converged = positive_definite and small_gradient
    if converged:
        message = "converged"
    elif not small_gradient:
        message = f"gradient not small (max |g| = {max_grad:.2g}); optimiser: {optimiser_message}"
    else:
        message = "Hessian of the log-likelihood is not negative definite"
    return Optimum(theta=np.asarray(theta), loglik=float(value), grad=grad, hessian=hess,
                   nodes=nodes, iterations=iterations, converged=converged, message=message,
                   pivots=frozenset(pivots), zero_rows=frozenset(zero_rows),
                   small_gradient=small_gradient)


def _is_positive_definite(matrix: np.ndarray) -> bool:
    if matrix.size == 0:
        return True
    try:
        np.linalg.cholesky(0.5 * (matrix + matrix.T))
        return True
    except np.linalg.LinAlgError:
        return False


def _held_positions(layout: ParamLayout, pivots, zero_rows) -> list[int]:
    """θ positions not identified on the boundary: the diagonal and the column below each
    zero pivot, and the whole row of a zero-variance effect."""
    offset = sum(layout.sizes[:3])
    return [offset + k for k, (r, c) in enumerate(layout.chol_entries)
            if c in pivots or r in zero_rows]


def _identified(layout: ParamLayout, pivots, zero_rows) -> np.ndarray:
    """θ positions still identified on the boundary (see ``_held_positions``)."""
    held = set(_held_positions(layout, pivots, zero_rows))
    return np.asarray([k for k in range(layout.n_params) if k not in held], dtype=int)


def covariance(opt: Optimum, layout: ParamLayout) -> np.ndarray:
    """Covariance of θ̂: inverse of −∇² log L over the identified parameters (NaN elsewhere)."""
    n = layout.n_params
    cov = np.full((n, n), np.nan)
    free = _identified(layout, opt.pivots, opt.zero_rows)
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
    """The model without random scale effects (and without their level-2 functions,
    whose coefficients come last in κ and G)."""
    functions = tuple(f for f in layout.g_functions if f[0].startswith("mean:"))
    n_kappa = functions[-1][2] if functions else 0
    return replace(layout, zv_names=(), association=Association.CORRELATED, g_names=layout.g_names[:n_kappa],
                   g_functions=functions)


def _function_intercepts(kappa: np.ndarray, layout: ParamLayout, L: np.ndarray) -> np.ndarray:
    """κ with each level-2 function's intercept (else its first coefficient) at the log
    variance of its row of L, log Σ_rr = log |L_r|²; other coefficients unchanged."""
    kappa = np.array(kappa, dtype=float)
    for row, a, b in layout.function_rows:
        names = layout.g_names[a:b]
        k = a + next((i for i, n in enumerate(names) if is_intercept(n)), 0)
        kappa[k] = np.log(max(np.sum(L[row] ** 2), 1e-12))
    return kappa


def embed_start(theta_small: np.ndarray, small: ParamLayout, full: ParamLayout,
                design) -> np.ndarray:
    """Starting values for the full model from the fit without scale effects."""
    p = small.params(np.asarray(theta_small), xp=np)
    kappa_small = p.kappa
    L = initial_cholesky(design, full, 1.0)
    q_v = full.q_v
    L[q_v:, q_v:] = p.chol
    # the scale effects' functions start at the initial variances, covariates at 0
    kappa = _function_intercepts(np.zeros(len(full.g_names)), full, L)
    kappa[:len(kappa_small)] = kappa_small
    for b in full.between_rows:
        L[b] /= max(L[b, b], 1e-12)
    return full.pack(p.beta, p.alpha, kappa, L)


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
    n_fixed = sum(small.sizes[:3])  # β, α and the location functions' κ: the same places in both
    index_small = list(range(n_fixed))
    index_full = list(range(n_fixed))
    full_pos = {rc: sum(full.sizes[:3]) + k for k, rc in enumerate(full.chol_entries)}
    for k, (r, c) in enumerate(small.chol_entries):
        if (r + full.q_v, c + full.q_v) not in full_pos:  # e.g. a correlation that is a function in full
            return None
        index_small.append(n_fixed + k)
        index_full.append(full_pos[(r + full.q_v, c + full.q_v)])
    inv = np.eye(full.n_params) * new_variance
    inv[np.ix_(index_full, index_full)] = inv_small[np.ix_(index_small, index_small)]
    return 0.5 * (inv + inv.T)


def fit_ml(design, data: ModelData, layout: ParamLayout, n_quad: int | None = None,
           theta0: np.ndarray | None = None, max_iter: int | None = None) -> tuple[Optimum, dict]:
    """Staged maximum-likelihood fit. Returns the optimum and timing/stage information.

    ``max_iter`` caps the iterations of every optimiser run (default ``DEFAULT_MAX_ITER``).
    Warns ``MelsmConvergenceWarning`` (with the reason) when the fit did not converge
    (``warn_boundary`` names the parameters on the boundary, once the fit is in the
    user's units).
    """
    started = time.perf_counter()
    n_quad = n_quad or default_quadrature(layout)
    max_iter = DEFAULT_MAX_ITER if max_iter is None else int(max_iter)
    info: dict = {"stages": []}
    inverse_hessian0 = None
    if theta0 is None:
        beta, alpha, resid_var = least_squares_start(design)
        small = without_scale_effects(layout)
        L0 = initial_cholesky(design, small, resid_var)
        kappa = _function_intercepts(np.zeros(len(small.g_names)), small, L0)
        theta_small = small.pack(beta, alpha, kappa, L0)
        if layout.q_v:
            stage = maximise(theta_small, data, small, 1, data.G.shape[0],
                             boundary_floors(design, small), max_iter=max_iter)
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
    opt = maximise(np.asarray(theta0, float), data, layout, n_quad, data.G.shape[0],
                   boundary_floors(design, layout), inverse_hessian0, max_iter=max_iter)
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
