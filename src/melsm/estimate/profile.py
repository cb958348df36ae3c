"""Profile likelihood: log L maximised with one reported parameter held at a value, and the
ends of its likelihood-ratio interval (docs/architecture.md, 'Profile-likelihood intervals').

pl(c) = max {log L(θ) : g(θ) = c} = max_φ log L(θ(φ, c)) with the reparameterisations
of ``melsm.estimate.constraint``: an unconstrained maximisation over φ with the exact
gradient (∂θ/∂φ)ᵀ∇ℓ (``Profiler``), warm-started from the points already done. The
interval's end is the root of the signed root ζ(c) = sign(c − ψ̂)·√(2(ℓ̂ − pl(c))) at
±z (``find_end``). Works on the fit's internal (standardised) θ: log L differs from the
user's by a constant, so ζ is the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from melsm.estimate.constraint import Reparam
from melsm.estimate.convergence import GRADIENT_TOLERANCE, is_positive_definite
from melsm.estimate.objective import Objective

#: The gradient each profile point's maximisation aims for (max |∂ℓ/∂φ|, standardised
#: units): ℓ is then within ~g²/(2λ_min) ≈ 1e-12 of its constrained maximum.
PROFILE_GTOL = 1e-7
#: Below this the next stage of ``Profiler.maximise`` is not tried.
PROFILE_GOOD = 1e-5
#: A profile point counts as maximised when every |∂ℓ/∂φ| is below this (the fit's own
#: convergence tolerance).
PROFILE_CONVERGED = GRADIENT_TOLERANCE
#: Newton steps (differenced Hessian in φ) after BFGS when its gradient is not yet small.
PROFILE_NEWTON = 4
#: Quasi-Newton steps for one profile point, the largest step (Euclidean, in φ), and the
#: loss of log L a step may cause (the gradient with held nodes is not quite the value's).
QN_STEPS = 25
MAX_STEP = 3.0
QN_SLACK = 1e-6
#: Root-finding stops when 2(ℓ̂ − pl(c)) is this close to the χ² quantile.
LR_TOLERANCE = 1e-8
#: Cap on ζ evaluations for one end (expansion and root-finding together), and on the
#: retries closer to the last good point after a failed one while the bracket grows.
MAX_EVALUATIONS = 40
NAN_RETRIES = 3


def _theta_jacobian(rep: Reparam):
    """The compiled θ(φ, c) and ∂θ/∂φ of ``rep`` (one program per reparameterisation)."""
    def both(phi, c, template):
        return rep.theta(phi, c, template), jax.jacfwd(rep.theta)(phi, c, template)
    return jax.jit(both)


@dataclass
class Point:
    """One profile point: pl(c) = log L(θ) at θ = θ(φ, c) (internal units)."""

    c: float
    phi: np.ndarray
    theta: np.ndarray
    loglik: float
    max_grad: float
    hess_inv: np.ndarray | None = None

    @property
    def converged(self) -> bool:
        return bool(np.isfinite(self.loglik)) and self.max_grad < PROFILE_CONVERGED


@dataclass
class Profiler:
    """pl(c) for one reported parameter (internal units): θ(φ, c) of ``rep``, maximised over φ."""

    objective: Objective
    rep: Reparam
    template: np.ndarray
    points: list[Point] = field(default_factory=list)

    def __post_init__(self):
        self._map = _theta_jacobian(self.rep)

    def value_and_grad(self, phi, c):
        """(−ℓ, −∂ℓ/∂φ) at θ(φ, c), and θ."""
        theta, jac = self._map(jnp.asarray(phi), float(c), jnp.asarray(self.template))
        theta, jac = np.asarray(theta), np.asarray(jac)
        value, grad = self.objective.fun_and_grad(theta)
        return value, jac.T @ grad, theta

    def hessian(self, phi, c, step: float = 1e-4) -> np.ndarray:
        """Central differences of −∂ℓ/∂φ (the objective's nodes are refreshed at each point)."""
        columns = []
        for k in range(len(phi)):
            h = step * max(1.0, abs(phi[k]))
            e = np.zeros(len(phi))
            e[k] = h
            columns.append((self.value_and_grad(phi + e, c)[1] - self.value_and_grad(phi - e, c)[1]) / (2 * h))
        hess = np.stack(columns, axis=1) if columns else np.zeros((0, 0))
        return 0.5 * (hess + hess.T)

    def maximise(self, c: float, start: tuple[np.ndarray, np.ndarray | None] | None = None) -> Point:
        """pl(c), warm-started from the points already maximised (``starts``) or from
        ``start`` = (φ0, inverse Hessian or None): quasi-Newton steps on the gradient
        (``_quasi_newton``); where they stall, Newton steps with a differenced Hessian
        (``_newton``) from the best point reached; where those fail, BFGS with a line
        search, then Newton steps again (``_fallback``)."""
        starts = self.starts(c) if start is None else [start]
        tried = [self._quasi_newton(c, *starts[0])]
        if not tried[-1].max_grad < PROFILE_GOOD:
            best = tried[-1] if np.isfinite(tried[-1].loglik) else None
            tried.append(self._newton(c, *((best.phi, best.hess_inv) if best else starts[-1])))
        if not tried[-1].max_grad < PROFILE_GOOD:
            tried.append(self._fallback(c, starts[-1][0]))
        point = min(tried, key=lambda p: p.max_grad)
        self.points.append(point)
        return point

    def starts(self, c: float) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(φ0, inverse Hessian) to start pl(c) from: φ extrapolated linearly in c from the
        two maximised points nearest c, then the nearest point's φ."""
        done = sorted((p for p in self.points if p.converged), key=lambda p: abs(p.c - c))
        if not done:
            return [(self.points[0].phi, None)]
        near = done[0]
        hess_inv = next((p.hess_inv for p in done if p.hess_inv is not None), None)
        out = [(near.phi, hess_inv)]
        other = next((p for p in done[1:] if p.c != near.c), None)
        if other is not None:
            guess = near.phi + (c - near.c) * (near.phi - other.phi) / (near.c - other.c)
            if np.all(np.isfinite(guess)):
                out.insert(0, (guess, hess_inv))
        return out

    def _quasi_newton(self, c: float, phi0: np.ndarray, hess_inv0: np.ndarray | None) -> Point:
        """Full quasi-Newton steps φ ← φ − B∇ with BFGS updates of B, judged by the gradient
        (halved while the step leaves ℓ's domain or loses more than ``QN_SLACK`` of log L).
        With quadrature nodes held while differentiating, the gradient is not exactly the
        value's, and line searches on the value stall short of |∇| < 1e-3 (as BFGS does in
        ``estimate.ml``, hence its ``_polish``); steps on the gradient do not."""
        phi = np.asarray(phi0, float)
        B = hess_inv0 if hess_inv0 is not None and is_positive_definite(hess_inv0) else np.eye(len(phi))
        value, grad, theta = self.value_and_grad(phi, c)
        for _ in range(QN_STEPS if np.isfinite(value) else 0):
            if np.max(np.abs(grad), initial=0.0) <= PROFILE_GTOL:
                break
            step = -B @ grad
            step *= min(1.0, MAX_STEP / max(np.linalg.norm(step), 1e-300))
            for _ in range(8):
                trial = self.value_and_grad(phi + step, c)
                if np.isfinite(trial[0]) and np.all(np.isfinite(trial[1])) and trial[0] <= value + QN_SLACK:
                    break
                step = step / 2
            else:
                break
            s, y = step, trial[1] - grad
            phi, (value, grad, theta) = phi + step, trial
            if s @ y > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
                rho, eye = 1.0 / (s @ y), np.eye(len(phi))
                B = (eye - rho * np.outer(s, y)) @ B @ (eye - rho * np.outer(y, s)) + rho * np.outer(s, s)
        max_grad = float(np.max(np.abs(grad), initial=0.0)) if np.isfinite(value) else np.inf
        return Point(float(c), phi, theta, -float(value), max_grad, B)

    def _newton(self, c: float, phi0: np.ndarray, hess_inv=None) -> Point:
        """Newton steps with the differenced Hessian in φ (shifted to be positive definite,
        halved while they lose more than ``QN_SLACK`` of log L)."""
        phi = np.asarray(phi0, float)
        value, grad, theta = self.value_and_grad(phi, c)
        for _ in range(PROFILE_NEWTON if np.isfinite(value) else 0):
            if np.max(np.abs(grad), initial=0.0) <= PROFILE_GTOL:
                break
            hess = self.hessian(phi, c)
            if not np.all(np.isfinite(hess)):
                break
            low = np.linalg.eigvalsh(hess)[0]
            step = -np.linalg.solve(hess + max(0.0, 1e-6 - low) * np.eye(len(phi)), grad)
            for _ in range(8):
                trial = self.value_and_grad(phi + step, c)
                if np.isfinite(trial[0]) and trial[0] <= value + QN_SLACK:
                    break
                step = step / 2
            else:
                break
            phi, (value, grad, theta) = phi + step, trial
            hess_inv = None
        max_grad = float(np.max(np.abs(grad), initial=0.0)) if np.isfinite(value) else np.inf
        return Point(float(c), phi, theta, -float(value), max_grad, hess_inv)

    def _fallback(self, c: float, phi0: np.ndarray) -> Point:
        """BFGS with a line search from φ0, then ``_newton``."""
        def fun(phi):
            value, grad, _ = self.value_and_grad(phi, c)
            return (value, grad) if np.isfinite(value) and np.all(np.isfinite(grad)) else (np.inf, 0 * grad)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = scipy.optimize.minimize(fun, np.asarray(phi0, float), jac=True, method="BFGS",
                                             options={"gtol": PROFILE_GTOL, "maxiter": 500})
        return self._newton(c, result.x, getattr(result, "hess_inv", None))


@dataclass
class End:
    """One end of a profile interval: ``value`` (NaN when not found), ``status``: "found",
    "limit" (ζ stays below z up to the parameter space's edge), "failed" (a profile point
    did not converge) or "diverged" (no bracket within the evaluations allowed)."""

    value: float
    status: str
    lr: float = float("nan")  # 2(ℓ̂ − pl) at value


def find_end(zeta: Callable[[float], float], start: float, first: float, z: float,
             limit: float | None) -> End:
    """The u beyond ``start`` (ζ(start) = 0) in the direction of ``first`` with ζ(u) = ±z,
    on a scale u where ζ is close to linear (module docstring). ``zeta`` returns NaN for a
    point that failed. The bracket grows by secant steps from ``first``; ``limit`` is the
    edge of the parameter space in u (None: unbounded), checked before giving up; a failed
    point is retried halfway back to the last good one (``NAN_RETRIES`` times). Then
    safeguarded secant steps (Illinois) until |ζ² − z²| < ``LR_TOLERANCE``."""
    sign = 1.0 if first > start else -1.0
    lo, f_lo = start, -z  # f(u) = sign·ζ(u) − z: negative inside the interval
    hi, f_hi = None, None
    u = first
    evaluations = 0
    retries = 0
    while hi is None:
        value = zeta(u)
        evaluations += 1
        if not np.isfinite(value):  # a failed point: retry closer to the last good one
            if retries == NAN_RETRIES or evaluations >= MAX_EVALUATIONS:
                return End(float("nan"), "failed")
            retries, u = retries + 1, lo + (u - lo) / 2
            continue
        f = sign * value - z
        if f >= 0:
            hi, f_hi = u, f
            break
        if limit is not None and u == limit:
            return End(u, "limit")
        if evaluations >= MAX_EVALUATIONS:
            return End(float("nan"), "diverged")
        lo, f_lo = u, f
        slope = (f - (-z)) / (u - start) if u != start else 0.0
        target = start + (u - start) * 4 if slope * sign <= 0 else u - f / slope
        step = np.clip(target - u, 0.1 * (u - start), 3 * (u - start)) if sign > 0 else \
            np.clip(target - u, 3 * (u - start), 0.1 * (u - start))
        u = u + step * 1.05
        if limit is not None and (u - limit) * sign >= 0:
            u = limit
    return _bracketed(zeta, (lo, f_lo), (hi, f_hi), z, sign, MAX_EVALUATIONS - evaluations)


def _bracketed(zeta, low, high, z: float, sign: float, budget: int) -> End:
    """Illinois regula falsi on f = sign·ζ − z between ``low`` (f < 0) and ``high`` (f ≥ 0)."""
    (a, fa), (b, fb) = low, high
    side = 0
    best = End(b, "found", (fb + z) ** 2)
    for _ in range(budget):
        if abs(best.lr - z * z) < LR_TOLERANCE:
            return best
        u = b - fb * (b - a) / (fb - fa)
        if not (min(a, b) < u < max(a, b)):
            u = 0.5 * (a + b)
        value = zeta(u)
        if not np.isfinite(value) and u != 0.5 * (a + b):
            u = 0.5 * (a + b)  # a failed point: try the middle of the bracket instead
            value = zeta(u)
        if not np.isfinite(value):
            return End(float("nan"), "failed")
        f = sign * value - z
        candidate = End(u, "found", (f + z) ** 2)
        if abs(candidate.lr - z * z) < abs(best.lr - z * z):
            best = candidate
        if f >= 0:
            b, fb = u, f
            fa, side = (fa / 2, side) if side == 1 else (fa, 1)
        else:
            a, fa = u, f
            fb, side = (fb / 2, side) if side == -1 else (fb, -1)
    return best if abs(best.lr - z * z) < 1e3 * LR_TOLERANCE else End(float("nan"), "diverged", best.lr)
