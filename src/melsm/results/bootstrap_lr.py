"""Bootstrap-calibrated profile-likelihood intervals: ``fit.conf_int(method="bootstrap",
kind="profile")`` (docs/architecture.md, 'Bootstrap intervals').

The profile interval {ψ : 2(ℓ̂ − pl(ψ)) ≤ z²}, pl the profile log-likelihood of
``melsm.results.profile`` and z = Φ⁻¹(1 − α/2), takes the likelihood-ratio statistic as
χ²₁. The parametric bootstrap estimates its mean instead, and rescales the cut-off by
it (the bootstrap Bartlett correction: Bickel & Ghosh 1990; Rocke 1989). Replicate b,
simulated from θ̂ and refitted to θ*_b with log L ℓ*_b, gets the signed root

    r*_b = sign(ψ*_b − ψ̂)·√(2(ℓ*_b − pl*_b(ψ̂))),

pl*_b(ψ̂) the replicate's log L maximised with ψ held at ψ̂, the value its data were
simulated from (``replicate_roots``: one constrained maximisation per parameter,
started from θ̂, which satisfies the constraint; the columns ``root:<name>`` of
``fit.bootstrap(signed_roots=...)``). With c = mean_b(r*_b²), the bootstrap estimate of
E[LR] (1 for an exact χ²₁), the interval is

    {ψ : 2(ℓ̂ − pl(ψ)) ≤ c·z²},

the profile interval with z·√c in place of z (``profile_intervals(levels=...)`` with
(z_low, z_high) = (z√c, z√c)); c = 1 gives the profile interval. Why the mean and not the
quantiles of the r*_b (DiCiccio & Efron 1996's {ψ : q*_a ≤ r(ψ) ≤ q*_{1−a}}): on the
study of bench/README.md ('bootstrap_coverage.py --roots') both calibrate the SDs and the
coefficients, but the quantiles covered the correlation 0.85 (0.87 with the quantile of
r*² instead), the mean 0.92. A correlation near ±1 piles up the replicates' ψ*_b at the
bound, which shortens one tail of the r*_b, and a 95% interval from B = 99 replicates
rests on the 2–5 most extreme roots of each tail; the mean uses all B and is pooled over
both tails. A parameter whose replicates' roots all have one sign (ψ̂ on the boundary:
an SD at 0, a correlation at ±1) gets no interval (NaN, with a warning): its LR is no
longer near χ²₁ and the rescaling has no ground. Failed constrained maximisations are NaN
roots, left out and counted like undefined values (``bootstrap_ci``).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.special

from melsm.errors import MelsmFitWarning, MelsmInputError
from melsm.estimate.profile import Profiler
from melsm.results.profile import _Context, _requested, profile_intervals

#: The level given to ``_Context`` for a replicate: only its objective, θ*_b and ℓ*_b are used.
_ANY_LEVEL = 0.95


def root_names(names) -> list[str]:
    """The replicates' columns of signed roots: ``root:<name>`` for each parameter."""
    return [f"root:{name}" for name in names]


def held_values(fit, signed_roots) -> dict[int, float]:
    """{k: ψ̂_k} of the parameters whose roots ``fit.bootstrap(signed_roots=...)`` records:
    True for every parameter, a name or a list of names of ``fit.names``; {} for False."""
    if signed_roots is False or signed_roots is None:
        return {}
    if signed_roots is True:
        names = list(fit.names)
    elif isinstance(signed_roots, str | list | tuple):
        try:
            names = _requested(fit, signed_roots)
        except MelsmInputError as err:
            raise MelsmInputError(f"signed_roots{str(err).removeprefix('parm')}") from None
    else:
        raise MelsmInputError(f"signed_roots must be True, False, a parameter name or a list of them, "
                              f"not {signed_roots!r}")
    estimates = fit.table()["estimate"].to_numpy(dtype=float)
    return {fit.names.index(name): float(estimates[fit.names.index(name)]) for name in names}


def replicate_roots(fit_b, theta_hat: np.ndarray, held: dict[int, float]) -> dict[int, float]:
    """r*_b (module docstring) of a converged refit ``fit_b`` for each reported parameter k
    of ``held`` = {k: ψ̂_k}: ψ_k held at ψ̂_k, log L maximised from θ̂ = ``theta_hat``
    (user units). NaN where the maximisation does not converge or ψ*_b is undefined."""
    context = _Context(fit_b, _ANY_LEVEL)
    start = context.units.to_internal(np.asarray(theta_hat, dtype=float))
    return {k: _root(context, k, start, value) for k, value in held.items()}


def _root(context: _Context, k: int, start: np.ndarray, value: float) -> float:
    target, rep = context.target(k)
    if not (np.isfinite(target.estimate) and np.isfinite(value)):
        return float("nan")
    # θ*_b as the template: entries the refit holds on a boundary stay there, as in its profile
    profiler = Profiler(context.objective, rep, context.theta)
    c = target.internal(value)
    phi = rep.phi(start)
    point = profiler.maximise(c, start=(phi, context._inverse_information(profiler, phi, c)))
    if not point.converged:
        return float("nan")
    lr = max(2 * (context.loglik - point.loglik), 0.0)  # a refit a hair short of its maximum
    return float(np.sign(target.estimate - value) * np.sqrt(lr))


def root_levels(names: list[str], roots: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    """{name: (z√c, z√c)}, c = mean(r*²) of the finite roots (replicates × ``names``): the
    values of ζ's roots for ``profile_intervals(levels=...)`` (module docstring); NaN for
    a column without finite roots or with roots of one sign only (ψ̂ on the boundary)."""
    z = float(scipy.special.ndtri(1 - (1 - level) / 2))
    out = {}
    for name, column in zip(names, roots.T, strict=True):
        finite = column[np.isfinite(column)]
        both_signs = (finite > 0).any() and (finite < 0).any()
        scaled = z * float(np.sqrt(np.mean(finite**2))) if both_signs else float("nan")
        out[name] = (scaled, scaled)
    return out


def calibrated_intervals(fit, level: float, roots: np.ndarray, names: list[str], progress=None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The intervals of ``names`` (others NaN) from their usable roots (replicates ×
    ``names``, NaN left out; columns with too few already dropped): profile intervals at
    the rescaled cut-off (module docstring)."""
    levels = root_levels(names, roots, level)
    bad = [name for name, (z_low, _) in levels.items() if not np.isfinite(z_low)]
    if bad:
        warnings.warn(f"no bootstrap-calibrated profile interval for {', '.join(bad)}: the replicates' signed "
                      "roots all have one sign (the parameter is estimated on the boundary: an SD at 0 or a "
                      "correlation at ±1)", MelsmFitWarning, stacklevel=5)
    usable = [name for name, (z_low, _) in levels.items() if np.isfinite(z_low)]
    if not usable:
        return np.full(len(fit.names), np.nan), np.full(len(fit.names), np.nan)
    return profile_intervals(fit, level, parm=usable, progress=progress,
                             levels={name: levels[name] for name in usable})
