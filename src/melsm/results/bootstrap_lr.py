"""Bootstrap-calibrated profile-likelihood intervals: ``fit.conf_int(method="bootstrap",
kind="profile")`` (docs/architecture.md, 'Bootstrap intervals').

The signed root is taken here as r(ψ) = sign(ψ̂ − ψ)·√(2(ℓ̂ − pl(ψ))), pl the profile
log-likelihood of ``melsm.results.profile`` (r = −ζ there); r decreases in ψ and is
close to N(0, 1) at the true ψ, which the plain profile interval {ψ : −z ≤ r(ψ) ≤ z}
assumes. The parametric bootstrap estimates its distribution instead (DiCiccio & Efron
1996): replicate b, simulated from θ̂ and refitted to θ*_b with log L ℓ*_b, gets

    r*_b = sign(ψ*_b − ψ̂)·√(2(ℓ*_b − pl*_b(ψ̂))),

pl*_b(ψ̂) the replicate's log L maximised with ψ held at ψ̂, the value its data were
simulated from (``replicate_roots``: one constrained maximisation per parameter,
started from θ̂, which satisfies the constraint; the columns ``root:<name>`` of
``fit.bootstrap(signed_roots=...)``). With a = α/2 and q*_p the p-quantile of the r*_b,
the interval is

    {ψ : q*_a ≤ r(ψ) ≤ q*_{1−a}}.

As r decreases, the lower end ψ_L solves r(ψ_L) = q*_{1−a} (the upper quantile) and the
upper end ψ_U solves r(ψ_U) = q*_a; in ζ = −r: ζ(ψ_L) = −q*_{1−a}, ζ(ψ_U) = −q*_a,
found by the profile's own root-finding (``profile_intervals(levels=...)`` with
(z_low, z_high) = (q*_{1−a}, −q*_a)). With q*_a = −z and q*_{1−a} = z it is the profile
interval. Both must be > 0 (ψ̂ inside the interval); otherwise that parameter gets no
interval (NaN, with a warning): so does a parameter estimated on the boundary (an SD at
0), whose r(ψ) has one sign only, as have its replicates' roots. Failed constrained
maximisations are NaN roots, left out and counted like undefined values (``bootstrap_ci``).
"""

from __future__ import annotations

import warnings

import numpy as np

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
    """{name: (q*_{1−a}, −q*_a)} from the finite roots (replicates × ``names``): the
    values of ζ's roots for ``profile_intervals(levels=...)`` (module docstring)."""
    tail = (1 - level) / 2
    out = {}
    for name, column in zip(names, roots.T, strict=True):
        finite = column[np.isfinite(column)]
        low, high = np.quantile(finite, [tail, 1 - tail]) if len(finite) else (np.nan, np.nan)
        out[name] = (float(high), float(-low))
    return out


def calibrated_intervals(fit, level: float, roots: np.ndarray, names: list[str], progress=None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The intervals of ``names`` (others NaN) from their usable roots (replicates ×
    ``names``, NaN left out; columns with too few already NaN): profile intervals at the
    bootstrap quantiles (module docstring)."""
    levels = root_levels(names, roots, level)
    bad = [name for name, (z_low, z_high) in levels.items() if np.isfinite(z_low + z_high)
           and not (z_low > 0 and z_high > 0)]
    if bad:
        warnings.warn(f"no bootstrap-calibrated profile interval for {', '.join(bad)}: the quantiles of the "
                      "signed roots do not bracket 0 (as for a parameter estimated on the boundary, whose "
                      "replicates' roots all have one sign)", MelsmFitWarning, stacklevel=5)
    usable = [name for name, (z_low, z_high) in levels.items() if z_low > 0 and z_high > 0]
    if not usable:
        return np.full(len(fit.names), np.nan), np.full(len(fit.names), np.nan)
    return profile_intervals(fit, level, parm=usable, progress=progress,
                             levels={name: levels[name] for name in usable})
