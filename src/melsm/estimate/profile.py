"""Profile likelihood: log L maximised with one reported parameter held at a value, and the
ends of its likelihood-ratio interval (docs/architecture.md, 'Profile-likelihood intervals').

For a reported parameter ψ = g(θ) (a coefficient, an SD √Σ_rr or a correlation
Σ_rs/√(Σ_rr Σ_ss)) the profile log-likelihood is pl(c) = max {log L(θ) : g(θ) = c}. The
constraint is removed by a reparameterisation θ = θ(φ, c) whose image is exactly
{θ : g(θ) = c} (``Reparam``), so pl(c) = max_φ log L(θ(φ, c)) is an unconstrained
maximisation over φ (BFGS with the exact gradient ∂θ/∂φᵀ ∇ℓ, warm-started from the last
point's φ and inverse Hessian):

* a coefficient (β, α, κ, τ_q) is one entry of θ: that entry is c, φ the others;
* an SD: row r of L is c·a/|a| with a = (a_0, …, 1) (its free entries, the diagonal
  fixed at 1: a direction, as rows with a level-2 variance function are), φ the a_k;
* a correlation of rows i < j: row j of L is s·(ρ e_i + √(1 − ρ²) w), e_i = L_i/|L_i|
  and w the unit vector of a − (a·e_i) e_i, a = (a_0, …, a_j = 1) with a_i = 0 over row
  j's free columns (so w_j > 0: L_jj > 0), φ = (a_k, log s).

Every other entry of θ is copied from φ, except those held on a boundary by the fit.
The interval end is the root of the signed root ζ(c) = sign(c − ψ̂)·√(2(ℓ̂ − pl(c))) at
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

from melsm.estimate.convergence import GRADIENT_TOLERANCE, is_positive_definite
from melsm.estimate.objective import Objective
from melsm.model.params import ParamLayout

#: BFGS's gradient tolerance for each profile point (in φ, standardised units): ℓ is then
#: within ~g²/(2λ_min) ≈ 1e-12 of its constrained maximum.
PROFILE_GTOL = 1e-7
#: A profile point counts as maximised when every |∂ℓ/∂φ| is below this (the fit's own
#: convergence tolerance).
PROFILE_CONVERGED = GRADIENT_TOLERANCE
#: Newton steps (differenced Hessian in φ) after BFGS when its gradient is not yet small.
PROFILE_NEWTON = 4
#: Root-finding stops when 2(ℓ̂ − pl(c)) is this close to the χ² quantile.
LR_TOLERANCE = 1e-8
#: Cap on ζ evaluations for one end (expansion and root-finding together).
MAX_EVALUATIONS = 40


@dataclass(frozen=True)
class Reparam:
    """θ = θ(φ, c) over {θ : g(θ) = c} for one reported parameter (module docstring).

    ``kind``: "coef" (θ[target] = c), "sd" (row ``row`` of L has length c) or "corr"
    (rows ``pair`` = (i, j), i < j, correlate c). ``copied``: θ positions taken from
    φ[:len(copied)]; ``row_pos``: (column, θ position) of the free entries of the row the
    constraint rewrites (sd: row r, corr: row j; the diagonal included unless the row has
    a level-2 variance function); ``extra``: the columns whose a_k follow in φ."""

    layout: ParamLayout
    kind: str
    copied: tuple[int, ...]
    target: int = -1
    row: int = -1
    pair: tuple[int, int] = (-1, -1)
    row_pos: tuple[tuple[int, int], ...] = ()
    extra: tuple[int, ...] = ()

    @property
    def scaled_row(self) -> bool:
        """Whether the rewritten row has its length in θ (False: a level-2 function's row)."""
        return self.kind == "corr" and any(c == self.pair[1] for c, _ in self.row_pos)

    @property
    def dim(self) -> int:
        return len(self.copied) + len(self.extra) + int(self.scaled_row)

    def theta(self, phi, c, template):
        """θ(φ, c) (JAX-traceable); ``template`` gives the entries held on a boundary."""
        theta = jnp.asarray(template).at[jnp.asarray(self.copied, int)].set(phi[:len(self.copied)])
        rest = phi[len(self.copied):]
        if self.kind == "coef":
            return theta.at[self.target].set(c)
        if self.kind == "sd":
            return self._sd_row(theta, rest, c)
        return self._corr_row(theta, rest, c)

    def _sd_row(self, theta, rest, c):
        a = dict(zip(self.extra, rest, strict=True))
        values = [a.get(col, 1.0) for col, _ in self.row_pos]  # the diagonal is 1
        norm = jnp.sqrt(sum(v * v for v in values))
        for (col, pos), v in zip(self.row_pos, values, strict=True):
            theta = theta.at[pos].set(jnp.log(c / norm) if col == self.row else c * v / norm)
        return theta

    def _corr_row(self, theta, rest, rho):
        i, j = self.pair
        q = self.layout.q
        L = self.layout.cholesky(theta)  # row i does not depend on row j
        e = L[i] / jnp.sqrt(L[i] @ L[i])
        a = jnp.zeros(q).at[j].set(1.0)
        if self.extra:
            a = a.at[jnp.asarray(self.extra, int)].set(rest[:len(self.extra)])
        w = a - (a @ e) * e
        d = rho * e + jnp.sqrt(1 - rho * rho) * w / jnp.sqrt(w @ w)
        for col, pos in self.row_pos:
            if not self.scaled_row:  # a level-2 function's row: a direction, diagonal 1
                theta = theta.at[pos].set(d[col] / d[j])
            elif col == j:
                theta = theta.at[pos].set(rest[-1] + jnp.log(d[j]))
            else:
                theta = theta.at[pos].set(jnp.exp(rest[-1]) * d[col])
        return theta

    def phi(self, theta: np.ndarray, fresh: bool = False) -> np.ndarray:
        """φ of a θ on the constraint's surface (numpy): θ(φ(θ), g(θ)) = θ. ``fresh``: the
        rewritten row is on a boundary (an SD at 0): start its direction at the diagonal."""
        theta = np.asarray(theta, float)
        head = theta[list(self.copied)]
        if self.kind == "coef":
            return head
        L = self.layout.cholesky(theta, xp=np)
        if self.kind == "sd":
            r = self.row
            tail = np.zeros(len(self.extra)) if fresh else L[r, list(self.extra)] / L[r, r]
            return np.concatenate([head, tail])
        return np.concatenate([head, self._corr_phi(L)])

    def _corr_phi(self, L: np.ndarray) -> np.ndarray:
        i, j = self.pair
        e = L[i] / np.linalg.norm(L[i])
        length = np.linalg.norm(L[j])
        d = L[j] / length
        rho = d @ e
        a = np.zeros(len(d))
        a[j] = 1.0
        if 1 - rho * rho > 1e-12:
            w = (d - rho * e) / np.sqrt(1 - rho * rho)
            a = w / w[j]
            a = a - a[i] / e[i] * e
        tail = list(a[list(self.extra)])
        return np.asarray(tail + ([np.log(length)] if self.scaled_row else []), float)


def reparam(layout: ParamLayout, kind: str, free: np.ndarray, target: int = -1,
            rows: tuple[int, ...] = ()) -> Reparam:
    """The ``Reparam`` of a coefficient at θ position ``target`` or of the SD of row
    ``rows[0]`` / correlation of rows ``rows`` (internal rows of L), over the identified
    θ positions ``free``."""
    if kind == "coef":
        return Reparam(layout, "coef", tuple(int(k) for k in free if k != target), target=target)
    r = max(rows)
    offset = sum(layout.sizes[:3])
    row_pos = tuple((c, offset + k) for k, (rr, c) in enumerate(layout.chol_entries) if rr == r)
    rewritten = {pos for _, pos in row_pos}
    copied = tuple(int(k) for k in free if k not in rewritten)
    if kind == "sd":
        extra = tuple(c for c, _ in row_pos if c != r)
        return Reparam(layout, "sd", copied, row=r, row_pos=row_pos, extra=extra)
    i, j = min(rows), r
    extra = tuple(c for c, _ in row_pos if c not in (i, j))
    return Reparam(layout, "corr", copied, pair=(i, j), row_pos=row_pos, extra=extra)


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

    def maximise(self, c: float, phi0: np.ndarray, hess_inv0: np.ndarray | None = None) -> Point:
        """pl(c) from φ0: BFGS, then Newton steps while the gradient is not yet small."""
        def fun(phi):
            value, grad, _ = self.value_and_grad(phi, c)
            return (value, grad) if np.isfinite(value) and np.all(np.isfinite(grad)) else (np.inf, 0 * grad)

        options = {"gtol": PROFILE_GTOL, "maxiter": 500}
        if hess_inv0 is not None and hess_inv0.shape == (len(phi0),) * 2:
            hess_inv0 = 0.5 * (hess_inv0 + hess_inv0.T)
            if is_positive_definite(hess_inv0):
                options["hess_inv0"] = hess_inv0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = scipy.optimize.minimize(fun, np.asarray(phi0, float), jac=True, method="BFGS", options=options)
        phi, hess_inv = result.x, getattr(result, "hess_inv", None)
        value, grad, theta = self.value_and_grad(phi, c)
        for _ in range(PROFILE_NEWTON if np.max(np.abs(grad), initial=0.0) > PROFILE_GTOL else 0):
            try:
                step = np.linalg.solve(self.hessian(phi, c), grad)
            except np.linalg.LinAlgError:
                break
            trial = self.value_and_grad(phi - step, c)
            if not np.isfinite(trial[0]) or trial[0] > value + 1e-9:
                break
            phi, (value, grad, theta) = phi - step, trial
            if np.max(np.abs(grad), initial=0.0) <= PROFILE_GTOL:
                break
        point = Point(float(c), phi, theta, -float(value), float(np.max(np.abs(grad), initial=0.0)), hess_inv)
        self.points.append(point)
        return point

    def nearest(self, c: float) -> Point | None:
        """The maximised point closest to c (its φ and inverse Hessian warm-start the next)."""
        done = [p for p in self.points if p.converged]
        return min(done, key=lambda p: abs(p.c - c)) if done else None


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
    edge of the parameter space in u (None: unbounded), checked before giving up. Then
    safeguarded secant steps (Illinois) until |ζ² − z²| < ``LR_TOLERANCE``."""
    sign = 1.0 if first > start else -1.0
    lo, f_lo = start, -z  # f(u) = sign·ζ(u) − z: negative inside the interval
    hi, f_hi = None, None
    u = first
    evaluations = 0
    while hi is None:
        value = zeta(u)
        evaluations += 1
        if not np.isfinite(value):
            return End(float("nan"), "failed")
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
