"""Profile-likelihood confidence intervals of an ML fit: ``fit.conf_int(method="profile")``
(docs/architecture.md, 'Profile-likelihood intervals').

For a reported parameter ψ_k = g_k(θ) with estimate ψ̂_k, the profile log-likelihood is
pl(c) = max {log L(θ) : g_k(θ) = c} and the interval at ``level`` is

    {c : 2(ℓ̂ − pl(c)) ≤ χ²₁(level)},

found as the two roots of the signed root ζ(c) = sign(c − ψ̂)·√(2(ℓ̂ − pl(c))) = ±z,
z = Φ⁻¹((1 + level)/2), starting from the Wald interval's ends and warm-starting each
constrained maximisation from the last (``melsm.estimate.profile``). ζ is followed on
the scale on which the Wald interval is built (log σ for an SD, atanh ρ for a
correlation, the coefficient itself otherwise), where it is nearly linear.

Edges of the parameter space: an SD whose profile has not fallen by χ²₁(level) at
``SD_FLOOR``·σ̂ gets the lower end 0; a correlation whose profile has not fallen by then
at ±(1 − ``CORR_EDGE``) gets ±1; a parameter on the boundary at the fit
(``fit.boundary_params``: an SD at 0, a correlation at ±1) gets that value as one end and
the profile for the other. Entries of θ held on a boundary by the fit stay there while
the other parameters are profiled (as the SEs are conditional on them). A profile point
whose maximisation does not converge makes that end NaN with a ``MelsmFitWarning``
naming the parameter, never a silently wrong number.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import scipy.special

from melsm.engine.blocks import group_slots
from melsm.errors import MelsmFitWarning, MelsmInputError
from melsm.estimate.constraint import reparam
from melsm.estimate.objective import FIXED_NODES_FROM, Objective
from melsm.estimate.profile import End, Point, Profiler, find_end
from melsm.progress import Progress, interactive_only

__all__ = ["profile_intervals"]

#: An SD's profile is followed down to this fraction of its estimate; not below χ²₁ there
#: means a lower end of 0.
SD_FLOOR = 1e-6
#: A correlation's profile is followed to ±(1 − CORR_EDGE); not below χ²₁ there: ±1.
CORR_EDGE = 1e-7
#: With ``progress=None`` a bar appears only once the profile has run this long (seconds).
PROGRESS_DELAY = 2.0
#: First step from an SD estimated at 0, in units of that effect's scale in the data.
BOUNDARY_FIRST_STEP = 0.1
#: The largest first step on the log scale of an SD or the atanh scale of a correlation
#: (the Wald end of an SD near 0 can be 10²⁸; the bracket grows from there if needed).
MAX_FIRST_STEP = 2.0


@dataclass
class _Target:
    """One reported parameter to profile, and the scale u on which ζ is followed."""

    index: int
    name: str
    kind: str  # "coef", "sd" or "corr"
    estimate: float
    scale: float  # internal c = (user c − shift) / scale
    shift: float
    at_boundary: bool

    def u(self, c: float) -> float:
        if self.at_boundary or self.kind == "coef":
            return c
        if self.kind == "sd":
            return np.log(c) if c > 0 else -np.inf
        return np.arctanh(c) if abs(c) < 1 else np.sign(c) * np.inf

    def c(self, u: float) -> float:
        if self.at_boundary or self.kind == "coef":
            return u
        return np.exp(u) if self.kind == "sd" else np.tanh(u)

    def internal(self, c: float) -> float:
        return (c - self.shift) / self.scale


def profile_intervals(fit, level: float, parm=None, progress=None,
                      levels: dict[str, tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Profile-likelihood intervals (module docstring) of the parameters named in ``parm``
    (a name or a list of names of ``fit.names``; default all); the others are NaN.
    ``levels``: per name, the values (z_low, z_high) of ζ's roots in place of (z, z): the
    lower end solves ζ(c) = −z_low, the upper ζ(c) = z_high (both > 0; the
    bootstrap-calibrated intervals of ``melsm.results.bootstrap_lr``).
    ``progress``: one count per parameter, as ``melsm.progress.Progress`` shows it (None:
    a bar in a terminal or notebook once the profile has run ``PROGRESS_DELAY`` s, nothing
    in a log, as for ML fits; True: a bar; False: nothing; a callable ``(done, total)``)."""
    names = _requested(fit, parm)
    low, high = np.full(len(fit.names), np.nan), np.full(len(fit.names), np.nan)
    if not fit.converged:
        warnings.warn("profile intervals need a converged fit (the profile is relative to the maximum): "
                      "all NaN", MelsmFitWarning, stacklevel=4)
        return low, high
    context = _Context(fit, level)
    with Progress(interactive_only(progress), total=len(names), desc="profile", unit="parameter",
                  delay=PROGRESS_DELAY if progress is None else 0.0) as report:
        for name in names:
            k = fit.names.index(name)
            low[k], high[k] = context.interval(k, None if levels is None else levels[name])
            report.advance()
    return low, high


def _requested(fit, parm) -> list[str]:
    if parm is None:
        return list(fit.names)
    parm = [parm] if isinstance(parm, str) else list(parm)
    unknown = [p for p in parm if p not in fit.names]
    if unknown:
        raise MelsmInputError(f"parm: no parameter {unknown[0]!r}; the fit has {', '.join(fit.names)}")
    return list(dict.fromkeys(parm))


class _Context:
    """What every parameter's profile shares: the objective, θ̂ (internal) and ℓ̂."""

    def __init__(self, fit, level: float):
        model = fit.model
        self.fit, self.layout, self.units = fit, model.layout, model.units
        data = fit._data  # the fit's arrays, in its blocks for large data (engine.blocks)
        n_quad = fit.n_quad or 1
        self.objective = Objective(data, self.layout, n_quad, group_slots(data),
                                   nodes_move=n_quad < FIXED_NODES_FROM or self.layout.association.nested_rule)
        self.theta = self.units.to_internal(fit.theta)
        self.loglik = self.objective.evaluate(self.theta)[0]
        self.z = float(scipy.special.ndtri((1 + level) / 2))
        self.wald = fit._intervals(level)
        opt = fit._opt
        self.pivots, self.zero_rows = opt.pivots, opt.zero_rows
        # −∇²ℓ at θ̂ in internal units (the fit's is in the user's)
        slope = self.units.slope
        self.information = -np.asarray(opt.hessian) * np.outer(slope, slope)

    def target(self, k: int):
        """The ``_Target`` and ``Reparam`` of reported parameter k."""
        pid, layout = self.fit.ids[k], self.layout
        at_boundary = pid in self.fit.boundary_params
        estimate = float(self.fit.estimates[k])
        rep = reparam(layout, k, self.pivots, self.zero_rows)
        if rep.kind == "coef":
            scale, shift = self.units.slope[rep.target], self.units.offset[rep.target]
        elif rep.kind == "sd":  # the user's L is T L*: row r times t_r
            scale, shift = self.units.effect_scales[rep.row], 0.0
        else:  # correlations do not change with the units
            scale, shift = 1.0, 0.0
            at_boundary = at_boundary and abs(estimate) == 1.0  # a pivot: ρ̂ = ±1 exactly
        target = _Target(k, self.fit.names[k], pid.category, estimate, float(scale), float(shift), at_boundary)
        return target, rep

    def interval(self, k: int, levels: tuple[float, float] | None = None) -> tuple[float, float]:
        """(lower, upper) of reported parameter k, user units: ζ = −z_low and ζ = z_high
        with ``levels`` = (z_low, z_high), default (z, z)."""
        target, rep = self.target(k)
        if not np.isfinite(target.estimate):
            return np.nan, np.nan  # e.g. the correlation of an effect with variance 0
        profiler = self._profiler(target, rep)
        ends = []
        for direction in (-1, 1):
            if target.at_boundary and (direction == -1) == (target.kind == "sd" or target.estimate < 0):
                ends.append(target.estimate)  # the side of the boundary itself
                continue
            z = self.z if levels is None else levels[0 if direction < 0 else 1]
            ends.append(self._end(target, profiler, direction, z))
        return ends[0], ends[1]

    def _profiler(self, target: _Target, rep) -> Profiler:
        """The parameter's ``Profiler``, seeded with θ̂ as its first point."""
        profiler = Profiler(self.objective, rep, self.theta)
        fresh = target.at_boundary and target.kind == "sd"
        phi = rep.phi(self.theta, fresh=fresh)
        c_hat = target.internal(target.estimate)
        hess_inv = None if target.at_boundary else self._inverse_information(profiler, phi, c_hat)
        profiler.points.append(Point(c_hat, phi, self.theta, self.loglik, 0.0, hess_inv))
        return profiler

    def _inverse_information(self, profiler: Profiler, phi, c) -> np.ndarray | None:
        """(Jᵀ I J)⁻¹ with J = ∂θ/∂φ at θ̂ (there ∇ℓ = 0, so it is −∇²_φ ℓ): BFGS's first
        inverse Hessian. None where it is not positive definite."""
        _, jac = profiler._map(jnp.asarray(phi), float(c), jnp.asarray(self.theta))
        jac = np.asarray(jac)
        used = np.any(jac != 0, axis=1)
        info = np.where(np.outer(used, used), np.nan_to_num(self.information), 0.0)
        h = jac.T @ info @ jac
        try:
            np.linalg.cholesky(h)
            inverse = np.linalg.inv(h)
        except np.linalg.LinAlgError:
            return None
        return 0.5 * (inverse + inverse.T)

    def _end(self, target: _Target, profiler: Profiler, direction: int, z: float) -> float:
        u_hat = target.u(target.estimate)
        first, limit = self._first_and_limit(target, direction)

        def zeta(u: float) -> float:
            c = target.c(u)
            point = profiler.maximise(target.internal(c))
            if not point.converged:
                return np.nan
            lr = max(2 * (self.loglik - point.loglik), 0.0)
            return float(np.sign(c - target.estimate) * np.sqrt(lr))

        end = find_end(zeta, u_hat, first, z, limit)
        return self._value(target, end, direction)

    def _first_and_limit(self, target: _Target, direction: int) -> tuple[float, float | None]:
        """The first u to try (the Wald end, or a step from a boundary) and the edge of the
        parameter space in u."""
        wald = self.wald[0 if direction < 0 else 1][target.index]
        u_hat = target.u(target.estimate)
        if target.at_boundary:  # u = c: SD at 0 or correlation at ±1
            if target.kind == "sd":
                return BOUNDARY_FIRST_STEP * target.scale, None
            return target.estimate + 0.2 * direction, -target.estimate * (1 - CORR_EDGE)
        if target.kind == "sd" and direction < 0:
            limit = target.u(target.estimate * SD_FLOOR)
        elif target.kind == "corr":
            limit = target.u(direction * (1 - CORR_EDGE))
        else:
            limit = None
        first = target.u(wald) if np.isfinite(wald) and (target.u(wald) - u_hat) * direction > 0 else np.nan
        if not np.isfinite(first):
            first = u_hat + direction * (1.0 if target.kind != "coef" else max(abs(u_hat), 1.0))
        if target.kind != "coef" and abs(first - u_hat) > MAX_FIRST_STEP:  # an SD near 0 has a vast SE
            first = u_hat + direction * MAX_FIRST_STEP
        if limit is not None and (first - limit) * direction > 0:
            first = limit
        return first, limit

    def _value(self, target: _Target, end: End, direction: int) -> float:
        if end.status == "found":
            return target.c(end.value)
        if end.status == "limit":
            return 0.0 if target.kind == "sd" else float(direction)
        reason = ("a constrained maximisation did not converge" if end.status == "failed"
                  else "the profile did not reach the level within the evaluations allowed")
        warnings.warn(f"profile interval of {target.name}: {reason}; its {'lower' if direction < 0 else 'upper'} "
                      "end is NaN", MelsmFitWarning, stacklevel=7)  # the caller of conf_int
        return np.nan
