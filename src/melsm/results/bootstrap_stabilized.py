"""Variance-stabilised bootstrap intervals from a double bootstrap (``kind="stabilized"``
of ``fit.conf_int(method="bootstrap")``; docs/architecture.md, 'Bootstrap intervals').

The basic interval on a scale where the estimator's spread does not depend on the
parameter (Tibshirani 1988, "Variance stabilization and the bootstrap", Biometrika 75),
with the spread's dependence estimated from one inner replicate per outer replicate
(``fit.bootstrap(double=True)``: 2B refits; a full double bootstrap would need B·C).
For one parameter, on the Wald intervals' scale ψ (θ, log σ, atanh ρ; an SD at 0 is
−∞, a correlation at ±1 is ±∞), with ψ̂ the fit's value, ψ*_b the outer replicates (data
simulated at θ̂) and ψ**_b the inner ones (data simulated at θ*_b):

1. ``variance_slope``: over the pairs with both finite, regress d_b = ψ**_b − ψ*_b on
   x_b = ψ*_b − ψ̂ (least squares with an intercept: the bias may change with the
   parameter), then fit e_b² ~ μ_b = exp(β₀ + β₁ x_b) to the residuals e_b (those equal
   to 0 left out) by maximum likelihood with e_b ~ N(0, μ_b) (a gamma GLM with log link,
   by IRLS from the least-squares fit of log e_b²); c = β₁/2 says the estimator's SD at ψ
   is s(ψ) ∝ exp(c (ψ − ψ̂)).
2. ``stabilize``: g(ψ) = (1 − exp(−c (ψ − ψ̂)))/c (ψ − ψ̂ for c = 0), so g′ = 1/s up to a
   constant, g(ψ̂) = 0, and g is increasing. For c > 0 its range is (−∞, 1/c), for c < 0
   (1/c, ∞).
3. ``stabilized_ends``: with g*_b = g(ψ*_b) over every finite-or-infinite outer value, the
   basic interval on that scale is (−Q(1 − a), −Q(a)) for Q the quantiles of the g*_b and
   a = (1 − level)/2; back to ψ by g⁻¹(v) = ψ̂ − log(1 − c v)/c, and where 1 − c v ≤ 0
   (beyond g's range) to the end of ψ's range (+∞ for c > 0, −∞ for c < 0: an SD
   interval starting at 0, a correlation interval at ±1).

Quantiles are numpy's default (linear interpolation); where both neighbours are the same
infinity the quantile is that infinity. For a coefficient c ≈ 0 and the interval is the
basic one. On the study of bench/bootstrap_coverage.py the SD of the random scale effect
has c ≈ −1.4 on average (its log-scale SD about four times larger at σ/2 than at σ)
(numbers in ``melsm.results.bootstrap_ci``).
"""

from __future__ import annotations

import numpy as np

#: At most this many IRLS steps for the variance's fit (``variance_slope``), until no
#: coefficient moves by more than ``IRLS_TOLERANCE``.
IRLS_STEPS = 100
IRLS_TOLERANCE = 1e-12


def to_psi(values, kind: str) -> np.ndarray:
    """Reported values on the Wald intervals' scale: θ, log σ (−∞ at 0), atanh ρ (±∞ at ±1);
    NaN stays NaN."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "sd":
            return np.log(v)
        if kind == "corr":
            return np.arctanh(v)
    return v.copy()


def quantiles(values, p) -> np.ndarray:
    """numpy's default quantiles of the non-NaN ``values``, infinities allowed: where linear
    interpolation between two equal infinities gives NaN, the infinity."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    with np.errstate(invalid="ignore"):
        q = np.quantile(v, p)
        return np.where(np.isnan(q), np.quantile(v, p, method="nearest"), q)


def variance_slope(outer, inner, psi_hat: float) -> float:
    """c of the module docstring, step 1, from the outer and inner replicates on the ψ
    scale; NaN with fewer than 3 usable pairs (or ψ̂ not finite), or when the fit of the
    variance does not converge."""
    outer, inner = np.asarray(outer, dtype=float), np.asarray(inner, dtype=float)
    ok = np.isfinite(outer) & np.isfinite(inner) & np.isfinite(psi_hat)
    x, d = outer[ok] - psi_hat, inner[ok] - outer[ok]
    if len(x) < 3 or np.ptp(x) == 0:
        return float("nan")
    design = np.column_stack([np.ones_like(x), x])
    squares = (d - design @ np.linalg.lstsq(design, d, rcond=None)[0]) ** 2
    design, squares = design[squares > 0], squares[squares > 0]
    if len(squares) < 3 or np.ptp(design[:, 1]) == 0:
        return float("nan")
    # IRLS of the gamma GLM (log link) of e² on x: its score equations Σ x_b (e_b²/μ_b − 1) = 0
    # are those of the normal likelihood of e_b ~ N(0, μ_b), more efficient than regressing log|e|
    beta = np.linalg.lstsq(design, np.log(squares), rcond=None)[0]
    for _ in range(IRLS_STEPS):
        eta = design @ beta
        new = np.linalg.lstsq(design, eta + squares * np.exp(-eta) - 1, rcond=None)[0]
        if not np.all(np.isfinite(new)):
            return float("nan")
        done, beta = np.max(np.abs(new - beta)) < IRLS_TOLERANCE, new
        if done:
            return float(beta[1] / 2)
    return float("nan")


def stabilize(psi, psi_hat: float, c: float) -> np.ndarray:
    """g(ψ) = (1 − exp(−c (ψ − ψ̂)))/c, ψ − ψ̂ for c = 0 (module docstring, step 2)."""
    u = np.asarray(psi, dtype=float) - psi_hat
    if c == 0:
        return u
    with np.errstate(over="ignore"):
        return -np.expm1(-c * u) / c


def unstabilize(v, psi_hat: float, c: float) -> np.ndarray:
    """g⁻¹(v) = ψ̂ − log(1 − c v)/c; beyond g's range (1 − c v ≤ 0) the end of ψ's range
    (+∞ for c > 0, −∞ for c < 0)."""
    v = np.asarray(v, dtype=float)
    if c == 0:
        return psi_hat + v
    w = 1 - c * v
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = psi_hat - np.log1p(-c * v) / c
    return np.where(w > 0, inside, np.inf if c > 0 else -np.inf)


def stabilized_ends(outer, inner, psi_hat: float, level: float) -> tuple[float, float]:
    """One parameter's interval on the ψ scale (module docstring): the basic interval
    (−Q(1 − a), −Q(a)) of the g(ψ*_b), mapped back by g⁻¹. NaN when ψ̂ is not finite or c
    cannot be estimated."""
    c = variance_slope(outer, inner, psi_hat) if np.isfinite(psi_hat) else float("nan")
    if not np.isfinite(c):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    q_low, q_high = quantiles(stabilize(outer, psi_hat, c), [a, 1 - a])
    low, high = unstabilize([-q_high, -q_low], psi_hat, c)
    return float(low), float(high)
