"""Bootstrap confidence intervals from the replicates of ``melsm.results.bootstrap``
(``fit.conf_int(method="bootstrap", kind=...)``; docs/architecture.md, 'Bootstrap intervals').

At level 1 − α, with a = α/2, from the converged replicates (θ* their estimates, θ̂ the
fit's; quantiles are numpy's default, linear interpolation):

* ``kind="studentized"`` (bootstrap-t): on the scale where the Wald intervals are formed
  (``results.ml.wald_intervals``: ψ = θ for coefficients, log σ for an SD, Fisher's
  z = atanh ρ for a correlation), each replicate's t* = (ψ* − ψ̂)/se*, where se* is the
  refit's own delta-method SE on that scale (from the replicates' ``se:<name>`` columns:
  SE, SE/σ, SE/(1 − ρ²)). The interval is ψ̂ − t*₍₁₋ₐ₎·se, ψ̂ − t*₍ₐ₎·se (t*₍ₚ₎ the
  p-quantile of the t*, se the fit's SE on that scale), transformed back, so SD intervals
  stay > 0 and correlation intervals within (−1, 1). Replicates without a finite SE (an
  SD estimated at 0, a correlation at ±1 or undefined) are left out of that parameter's
  interval and counted in a warning; a parameter for which the fit itself has no finite
  SE (on the boundary) gets no interval (NaN), as for Wald intervals.
* ``kind="bc"`` (bias-corrected percentile): z₀ = Φ⁻¹(share of the θ* below θ̂, ties
  counting half), and the Φ(2z₀ − z) and Φ(2z₀ + z) quantiles of the θ*, z = Φ⁻¹(1 − a).
  NaN where every replicate lies on one side of θ̂ (z₀ infinite).
* ``kind="bca"`` (bias-corrected and accelerated, Efron 1987): z₀ as for BC, the
  acceleration a = Σ(θ̄ − θ₍ᵢ₎)³ / (6 [Σ(θ̄ − θ₍ᵢ₎)²]^{3/2}) from a jackknife over groups
  (``fit.jackknife()``, ``melsm.results.jackknife``; its failed refits left out, NaN above
  ``MAX_FAILED_SHARE``), and the Φ(z₀ + (z₀ ∓ z)/(1 − a(z₀ ∓ z))) quantiles (``bca_ends``).
* ``kind="percentile"``: the a and 1 − a quantiles of the θ*. SD intervals stay ≥ 0,
  correlation intervals within [−1, 1].
* ``kind="basic"``: 2θ̂ minus those quantiles, the other way round (it may leave the
  parameter space).
* ``kind="profile"``: the profile-likelihood interval with its cut-off rescaled by the
  bootstrap (Bartlett correction), {ψ : 2(ℓ̂ − pl(ψ)) ≤ c·z²}, c the mean of the
  replicates' squared signed roots r*_b² (the ``root:<name>`` columns), the
  likelihood-ratio statistics at ψ̂ (``melsm.results.bootstrap_lr``).

Refits that did not converge (or raised) are left out and counted in a
``MelsmFitWarning``; when more than ``MAX_FAILED_SHARE`` of them failed every interval is
NaN, with a warning: failures are seldom a random subset (they come from the awkward
data sets), so the rest would give intervals too narrow. A parameter's interval leaves
out the replicates where its value (a correlation of an effect whose SD is 0 there) or,
for studentized intervals, its t* is undefined, with a warning giving how many; above
``MAX_FAILED_SHARE`` of them its interval is NaN, by the same rule. Fewer than
``MIN_TAIL`` expected replicates beyond each nominal endpoint (n·a < 5 for n usable
replicates) warns: the endpoint is then interpolated between the few most extreme values.

Coverage of nominal 95% intervals (bench/bootstrap_coverage.py, bench/README.md: 30
groups of 10 rows, random intercepts in mean and log variance, 100 data sets × 99 refits;
Monte Carlo SE about 0.022 at 0.95, so 0.906–0.994 is within 2 SEs):

    parameter               studentized   bc     bca    percentile   basic   profile     Wald
    mean:Intercept          0.93          0.93   0.93   0.94         0.93    0.96        0.94
    mean:x                  0.94          0.91   0.91   0.94         0.95    0.96        0.96
    within:Intercept        0.92          0.93   0.93   0.89         0.89    0.95        0.92
    sd:mean:Intercept       0.90          0.91   0.91   0.90         0.95    0.95        0.95
    sd:within:Intercept     0.83          0.85   0.86   0.82         0.88    0.95        0.96
    corr (mean, within)     0.86 (44)     0.92   0.92   0.88         0.72    0.916 (95)  0.95 (95)

Only ``kind="profile"`` covers within Monte Carlo error for every parameter (its
calibration was chosen on this study; bench/README.md repeats it on fresh data sets). The
others all under-cover for the SD of the random scale effect, whose ML estimate is biased
down and whose log-scale SE grows as it shrinks, so not even t* is pivotal. The
studentized correlation interval was NaN in 56 of the 100 data sets (19% of the refits
put the correlation at ±1; without the 10% rule the rest covered 0.67).
``DEFAULT_KIND = "bc"`` is the closest to nominal of the kinds that need no constrained
refits (within 2 MC SEs for five of the six parameters, percentile for two, studentized
and basic for three); ``"profile"`` costs one more refit per parameter per replicate (7×
here). BCa ties BC (the same five; 0.86 on the scale SD) for J more refits. For SDs of
random scale effects with few groups prefer ``kind="profile"`` or the Wald intervals (log
scale).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.special

from melsm.errors import MelsmFitWarning, MelsmInputError
from melsm.results.bootstrap import bootstrap, se_names
from melsm.results.bootstrap_lr import calibrated_intervals, root_names
from melsm.results.profile import _requested

#: Replicates expected beyond each endpoint below which a warning says there are too few.
MIN_TAIL = 5
#: Replicates below which ``kind="profile"`` warns: the relative SE of its cut-off z·√c, c the
#: mean of n replicates' χ²₁-like statistics (variance 2), is about 1/√(2n), 5% at 200.
MIN_PROFILE_REPLICATES = 200
#: Above this share of failed refits (or of undefined values of a parameter), intervals are NaN.
MAX_FAILED_SHARE = 0.1
KINDS = ("studentized", "bc", "bca", "percentile", "basic", "profile")
#: Options of ``fit.jackknife`` that ``conf_int(kind="bca")`` passes on when it makes one.
JACKKNIFE_OPTIONS = ("scheduler", "workers", "progress")
#: The kind used unless ``kind=`` says otherwise: the closest to nominal coverage in the
#: study of the module docstring (none was within Monte Carlo error for every parameter).
DEFAULT_KIND = "bc"
#: warnings point at the caller of ``conf_int`` from functions that ``bootstrap_intervals`` calls
_STACK = 4


def root_parameters(fit, replicates: pd.DataFrame, parm) -> list[str]:
    """The parameters of ``kind="profile"``: ``parm`` (all of them needing their column
    ``root:<name>``), or every parameter with such a column."""
    names = _requested(fit, parm) if parm is not None else [
        name for name in fit.names if f"root:{name}" in replicates.columns]
    missing = [name for name in names if f"root:{name}" not in replicates.columns]
    if missing or not names:
        raise MelsmInputError(f"kind='profile' needs the replicates' signed roots: the column "
                              f"'root:{missing[0] if missing else '<name>'}' of a fit.bootstrap(signed_roots=...) "
                              "table")
    return names


def _profile_calibrated(fit, rows: pd.DataFrame, level: float, parm) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap-calibrated profile intervals (``melsm.results.bootstrap_lr``) from the
    converged replicates' signed roots; NaN roots (failed constrained refits) are left
    out and counted, as undefined values are."""
    names = root_parameters(fit, rows, parm)
    roots = rows[root_names(names)].to_numpy(dtype=float)
    keep = _usable(names, roots, level, "profile", "whose constrained refit failed (NaN signed root)")
    return calibrated_intervals(fit, level, roots[:, keep], [n for n, k in zip(names, keep, strict=True) if k])


def _checked_replicates(fit, replicates, kind: str) -> pd.DataFrame:
    needed = [*fit.names, "converged"]
    if not isinstance(replicates, pd.DataFrame) or any(c not in replicates.columns for c in needed):
        raise MelsmInputError("replicates must be this fit's fit.bootstrap() table (a DataFrame with a column "
                              "per parameter of fit.names and 'converged')")
    if kind == "studentized" and any(c not in replicates.columns for c in se_names(fit.names)):
        raise MelsmInputError("kind='studentized' needs the refits' standard errors: the columns 'se:<name>' "
                              "of a fit.bootstrap() table")
    if kind == "profile":
        root_parameters(fit, replicates, None)
    return replicates


def _converged(replicates: pd.DataFrame) -> pd.DataFrame | None:
    """The converged replicates, or None when more than ``MAX_FAILED_SHARE`` of the refits
    failed (module docstring)."""
    converged = replicates["converged"].to_numpy(dtype=bool)
    failed, total = int((~converged).sum()), len(converged)
    if failed > MAX_FAILED_SHARE * total:
        warnings.warn(f"{failed} of {total} bootstrap refits did not converge, more than "
                      f"{MAX_FAILED_SHARE:.0%}: no bootstrap intervals (NaN); the failures are not a random "
                      "subset of the replicates", MelsmFitWarning, stacklevel=_STACK)
        return None
    if failed:
        warnings.warn(f"{failed} of {total} bootstrap refits did not converge and are left out of the intervals",
                      MelsmFitWarning, stacklevel=_STACK)
    return replicates.loc[converged]


def _usable(names: list[str], values: np.ndarray, level: float, kind: str, why: str) -> np.ndarray:
    """Which columns of ``values`` (replicates × parameters ``names``) have enough finite
    values for an interval; a warning gives the replicates left out per parameter (``why``
    they are undefined) and another too few replicates beyond an endpoint."""
    total, tail = len(values), (1 - level) / 2
    n = np.isfinite(values).sum(axis=0)
    keep = (n > 0) & (n >= (1 - MAX_FAILED_SHARE) * total)
    left_out = [f"{name} {total - k}" + ("" if ok else " (no interval)")
                for name, k, ok in zip(names, n, keep, strict=True) if k < total]
    if left_out:
        warnings.warn(f"{kind} bootstrap intervals leave out the replicates {why}, out of {total}: "
                      f"{', '.join(left_out)}; with more than {MAX_FAILED_SHARE:.0%} left out there is no "
                      "interval (NaN)",
                      MelsmFitWarning, stacklevel=_STACK + 1)
    if kind == "profile":  # a mean, not tails: its Monte Carlo error is what matters
        if keep.any() and n[keep].min() < MIN_PROFILE_REPLICATES:
            fewest = int(n[keep].min())
            warnings.warn(f"only {fewest} usable bootstrap replicates for the profile calibration: its cut-off "
                          f"carries a Monte Carlo error of about {1 / np.sqrt(2 * fewest):.0%} (1/√(2n); "
                          f"n_boot={MIN_PROFILE_REPLICATES} gives 5%)", MelsmFitWarning, stacklevel=_STACK + 1)
    elif keep.any() and n[keep].min() * tail < MIN_TAIL - 1e-9:  # (1 − 0.95)/2 is not exactly 0.025
        needed = int(np.ceil(MIN_TAIL / tail - 1e-9))
        warnings.warn(f"only {int(n[keep].min())} usable bootstrap replicates for {level:.0%} intervals: "
                      f"{needed} or more put at least {MIN_TAIL} beyond each endpoint (n_boot={needed})",
                      MelsmFitWarning, stacklevel=_STACK + 1)
    return keep


UNDEFINED = "where the parameter is undefined (a correlation of an effect whose SD is 0)"


def _percentile(fit, values: np.ndarray, level: float, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Each parameter's (1 − level)/2 and (1 + level)/2 quantiles over its defined values."""
    tail = (1 - level) / 2
    keep = _usable(fit.names, values, level, kind, UNDEFINED)
    low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    if keep.any():
        low[keep], high[keep] = np.nanquantile(values[:, keep], [tail, 1 - tail], axis=0)
    return low, high


def acceleration(jack_values) -> float:
    """BCa's a = Σ(θ̄ − θ₍ᵢ₎)³ / (6 [Σ(θ̄ − θ₍ᵢ₎)²]^{3/2}) over the finite jackknife values
    (0 where they are all equal, NaN where there are none)."""
    t = np.asarray(jack_values, dtype=float)
    t = t[np.isfinite(t)]
    if not len(t):
        return float("nan")
    if np.ptp(t) == 0:  # all equal (their mean may differ from them by rounding)
        return 0.0
    d = t.mean() - t
    return float(np.sum(d ** 3) / (6 * float(np.sum(d ** 2)) ** 1.5))


def bca_ends(values, estimate: float, a: float, level: float) -> tuple[float, float]:
    """One parameter's BCa interval from its replicates ``values`` (finite ones), θ̂ and
    the acceleration ``a``: the Φ(z₀ + (z₀ ∓ z)/(1 − a(z₀ ∓ z))) quantiles, z₀ = Φ⁻¹(share
    below θ̂, ties half), z = Φ⁻¹((1 + level)/2); a = 0 is BC. An end where 1 − a(z₀ ∓ z)
    ≤ 0 is the extreme replicate on its side; NaN where every replicate lies on one side."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    share = (np.sum(v < estimate) + 0.5 * np.sum(v == estimate)) / len(v) if len(v) else 0.0
    if share in (0, 1) or not np.isfinite(a):
        return float("nan"), float("nan")
    z0, z = scipy.special.ndtri(share), scipy.special.ndtri((1 + level) / 2)
    w = z0 + np.array([-z, z])
    denominator = 1 - a * w
    with np.errstate(divide="ignore"):
        p = np.where(denominator > 0, scipy.special.ndtr(z0 + w / denominator), (w > 0).astype(float))
    low, high = np.quantile(v, p)
    return float(low), float(high)


def _bias_corrected(fit, values: np.ndarray, level: float, accel: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """BC intervals (``accel`` None: a = 0) or BCa intervals (``accel``: each parameter's
    a, NaN for no interval), by ``bca_ends``."""
    kind = "bc" if accel is None else "bca"
    accel = np.zeros(values.shape[1]) if accel is None else accel
    estimates = fit.table()["estimate"].to_numpy(dtype=float)
    keep = _usable(fit.names, values, level, kind, UNDEFINED) & np.isfinite(estimates)
    low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    one_sided = []
    for k in np.flatnonzero(keep):
        low[k], high[k] = bca_ends(values[:, k], estimates[k], accel[k], level)
        if np.isnan(low[k]) and np.isfinite(accel[k]):
            one_sided.append(fit.names[k])
    if one_sided:
        warnings.warn(f"no {kind.upper()} interval for {', '.join(one_sided)}: every bootstrap replicate lies on "
                      "one side of the estimate", MelsmFitWarning, stacklevel=_STACK)
    return low, high


def _accelerations(fit, jack) -> np.ndarray:
    """Each parameter's a from a ``fit.jackknife()`` table: its converged refits; NaN
    for every parameter when more than ``MAX_FAILED_SHARE`` of them failed."""
    if not isinstance(jack, pd.DataFrame) or any(c not in jack.columns for c in [*fit.names, "converged"]):
        raise MelsmInputError("jackknife must be this fit's fit.jackknife() table (a DataFrame with a column "
                              "per parameter of fit.names and 'converged')")
    converged = jack["converged"].to_numpy(dtype=bool)
    failed, total = int((~converged).sum()), len(converged)
    if failed > MAX_FAILED_SHARE * total or not total:
        warnings.warn(f"{failed} of {total} jackknife refits did not converge, more than {MAX_FAILED_SHARE:.0%}: "
                      "no BCa intervals (NaN)", MelsmFitWarning, stacklevel=_STACK + 1)
        return np.full(len(fit.names), np.nan)
    if failed:
        warnings.warn(f"{failed} of {total} jackknife refits did not converge and are left out of the "
                      "acceleration", MelsmFitWarning, stacklevel=_STACK + 1)
    values = jack.loc[converged, fit.names].to_numpy(dtype=float)
    return np.array([acceleration(values[:, k]) for k in range(values.shape[1])])


def wald_scale(values, ses, kinds) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and SEs (reported scale; rows of replicates or one row) on the scale of
    the Wald intervals: θ, log σ with SE/σ, atanh ρ with SE/(1 − ρ²). NaN where that is
    undefined (σ ≤ 0, |ρ| ≥ 1) or the SE is not finite and positive."""
    values, ses = np.array(values, dtype=float, ndmin=2), np.array(ses, dtype=float, ndmin=2)
    psi, se = values.copy(), ses.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, kind in enumerate(kinds):
            v = values[:, k]
            if kind == "sd":
                psi[:, k] = np.where(v > 0, np.log(np.where(v > 0, v, 1)), np.nan)
                se[:, k] = ses[:, k] / v
            elif kind == "corr":
                psi[:, k] = np.where(np.abs(v) < 1, np.arctanh(np.where(np.abs(v) < 1, v, 0)), np.nan)
                se[:, k] = ses[:, k] / (1 - v ** 2)
    bad = ~(np.isfinite(psi) & np.isfinite(se) & (se > 0))
    psi[bad], se[bad] = np.nan, np.nan
    return psi, se


def from_wald_scale(psi: np.ndarray, kinds) -> np.ndarray:
    """The inverse of ``wald_scale``'s transformation: θ, exp ψ, tanh ψ."""
    out = np.array(psi, dtype=float)
    for k, kind in enumerate(kinds):
        if kind == "sd":
            with np.errstate(over="ignore"):
                out[..., k] = np.exp(out[..., k])
        elif kind == "corr":
            out[..., k] = np.tanh(out[..., k])
    return out


def _studentized(fit, rows: pd.DataFrame, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap-t intervals on the Wald scale (module docstring)."""
    tail, table = (1 - level) / 2, fit.table()
    psi_hat, se_hat = (a[0] for a in wald_scale(table["estimate"], table["std_error"], fit.kinds))
    psi, se = wald_scale(rows[fit.names], rows[se_names(fit.names)], fit.kinds)
    t = (psi - psi_hat) / se
    has_se = np.isfinite(psi_hat)
    low_psi, high_psi = np.full(len(fit.names), np.nan), np.full(len(fit.names), np.nan)
    if not has_se.all():
        warnings.warn(f"no studentized interval for {', '.join(np.array(fit.names)[~has_se])}: the fit has no "
                      "finite standard error there (on the boundary)", MelsmFitWarning, stacklevel=_STACK)
    columns = np.flatnonzero(has_se)
    keep = _usable([fit.names[k] for k in columns], t[:, columns], level, "studentized",
                   "without a finite standard error (an SD at 0, a correlation at ±1 or undefined)")
    columns = columns[keep]
    if len(columns):
        t_low, t_high = np.nanquantile(t[:, columns], [tail, 1 - tail], axis=0)
        low_psi[columns] = psi_hat[columns] - t_high * se_hat[columns]
        high_psi[columns] = psi_hat[columns] - t_low * se_hat[columns]
    return from_wald_scale(low_psi, fit.kinds), from_wald_scale(high_psi, fit.kinds)


def _jackknife_for(fit, kind: str, jackknife, options: dict, given: bool) -> np.ndarray | None:
    """The accelerations for ``kind="bca"`` (from ``jackknife=`` or a jackknife made with
    the scheduler options); None for other kinds. Refuses options that do not fit."""
    if kind != "bca":
        if jackknife is not None:
            raise MelsmInputError(f"jackknife= is for kind='bca', not {kind!r}")
        return None
    if given and options and (jackknife is not None or any(k not in JACKKNIFE_OPTIONS for k in options)):
        raise MelsmInputError(f"give either replicates= and jackknife= or the options to make them "
                              f"({', '.join(options)}), not both")
    if jackknife is None:
        jackknife = fit.jackknife(**{k: options[k] for k in JACKKNIFE_OPTIONS if k in options})
    return _accelerations(fit, jackknife)


def bootstrap_intervals(fit, level: float, replicates: pd.DataFrame | None = None, kind: str = DEFAULT_KIND,
                        jackknife: pd.DataFrame | None = None, parm=None, **options
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap intervals at ``level`` for every parameter of ``fit.names``
    (``fit.conf_int(alpha, method="bootstrap", ...)``; module docstring). ``kind``:
    ``"bc"`` (default: bias-corrected percentile, the closest to 95% coverage in the
    study of the module docstring, though below it for the SD of a random scale effect),
    ``"bca"`` (bias-corrected and accelerated: a from ``jackknife=``, a ``fit.jackknife()``
    table, or from a jackknife made with ``scheduler``, ``workers`` and ``progress``),
    ``"studentized"`` (bootstrap-t on the Wald scale; needs the ``se:<name>`` columns),
    ``"percentile"``, ``"basic"`` or ``"profile"`` (bootstrap-calibrated profile likelihood,
    ``melsm.results.bootstrap_lr``: needs the ``root:<name>`` columns of
    ``fit.bootstrap(signed_roots=...)``; ``parm``: the parameters, default those with roots
    in ``replicates`` or all when it makes them; the others NaN).
    ``replicates``: a table from ``fit.bootstrap()`` to use (e.g. for several levels or
    kinds); otherwise one is made with ``options`` (``n_boot``, ``seed``, ``scheduler``,
    ``workers``, ``progress``), not kept."""
    if kind not in KINDS:
        raise MelsmInputError(f"kind must be one of {', '.join(map(repr, KINDS))}, not {kind!r}")
    if parm is not None and kind != "profile":
        raise MelsmInputError(f"parm= is for kind='profile', not {kind!r}")
    if replicates is not None and options and kind != "bca":
        raise MelsmInputError(f"give either replicates= or the options to make them ({', '.join(options)}), not both")
    if replicates is not None:
        _checked_replicates(fit, replicates, kind)
    accel = _jackknife_for(fit, kind, jackknife, options, replicates is not None)
    if replicates is None:
        roots = {"signed_roots": True if parm is None else parm} if kind == "profile" else {}
        replicates = bootstrap(fit, **options, **roots)
    rows = _converged(_checked_replicates(fit, replicates, kind))
    if rows is None:
        return np.full(len(fit.names), np.nan), np.full(len(fit.names), np.nan)
    if kind == "profile":
        return _profile_calibrated(fit, rows, level, parm)
    if kind == "studentized":
        return _studentized(fit, rows, level)
    values = rows[fit.names].to_numpy(dtype=float)
    if kind in ("bc", "bca"):
        return _bias_corrected(fit, values, level, accel)
    low, high = _percentile(fit, values, level, kind)
    if kind == "basic":
        estimates = fit.table()["estimate"].to_numpy(dtype=float)
        low, high = 2 * estimates - high, 2 * estimates - low
    return low, high
