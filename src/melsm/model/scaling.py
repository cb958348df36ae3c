"""Units: the fit works on standardised data and maps its estimates back exactly.

A location-scale model is equivariant: if the response is measured in other units
(y → a + s·y) or a covariate is rescaled (x → x/d), the maximum-likelihood estimates
change by a known affine map and log L by −N log s. The optimiser and its convergence
test are not: a gradient tolerance of 1e-3 means something else when y is in grams or in
tonnes. So the estimators see the data standardised,

    y* = (y − m) / s,   every column of X, W, Zu, Zv, G divided by its root mean square d,

(m = mean(y) when the mean function has an intercept, s = SD(y) when the variance
function has one; otherwise 0 and 1), which is the same for any units of the inputs,
and every result is mapped back. With T = diag(t_r) the scale of each random effect
(t = 1/d for a scale effect's column, s/d for a location effect's), the map from the
internal θ* to the user's θ is affine with a diagonal slope:

    β = (s/d_x)·β* + m·e,   α = α*/d_w + 2 log s·e,   κ_k = κ*_k/d_g + 2 log t_k·e,
    L = T L*: log-diagonal + log t_r, off-diagonal × t_r (rows with a level-2 function
    are directions: unchanged), τ_q = t_v·τ*_q,

where e solves (design) e = 1, the constant in the coefficients. So
θ = slope·θ* + offset, ∇ℓ = ∇*ℓ / slope, ∇²ℓ = ∇*²ℓ / (slope slopeᵀ), and
log L = log L* − N log s. The quadrature nodes live in the standardised effects
η (b = L η), which the map leaves unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from melsm.model.design import Design
from melsm.model.params import ParamLayout

#: A design spans the constant vector when its least-squares fit of 1 is this close.
CONSTANT_TOLERANCE = 1e-9


def _rms(matrix: np.ndarray) -> np.ndarray:
    """Root mean square of each column (1 for an all-zero column, which the design refuses anyway)."""
    if matrix.shape[1] == 0:
        return np.ones(0)
    scale = np.sqrt(np.mean(matrix**2, axis=0))
    return np.where(scale > 0, scale, 1.0)


def _constant_coefficients(matrix: np.ndarray) -> np.ndarray | None:
    """e with matrix·e = 1 (the coefficients that add a constant), or None if no such e."""
    if matrix.shape[1] == 0 or matrix.shape[0] == 0:
        return None
    ones = np.ones(matrix.shape[0])
    e, *_ = np.linalg.lstsq(matrix, ones, rcond=None)
    return e if np.max(np.abs(matrix @ e - ones)) < CONSTANT_TOLERANCE else None


@dataclass(frozen=True)
class Units:
    """The standardised design and the map θ = slope·θ* + offset back to the user's units."""

    design: Design  # the standardised design the estimators see
    slope: np.ndarray
    offset: np.ndarray
    y_shift: float
    y_scale: float
    effect_scales: np.ndarray  # t_r for each internal random effect (row of L): b = t·b*

    def to_user(self, theta_internal):
        return self.slope * theta_internal + self.offset

    def to_internal(self, theta) -> np.ndarray:
        return (np.asarray(theta, float) - self.offset) / self.slope

    def loglik_to_user(self, loglik_internal: float) -> float:
        """log L of the user's y: the density of y* times the Jacobian 1/s per row."""
        return float(loglik_internal) - self.design.n_weighted * np.log(self.y_scale)

    def optimum_to_user(self, opt):
        """An ``ml.Optimum`` of the standardised fit in the user's units (nodes unchanged)."""
        return replace(opt, theta=self.to_user(opt.theta), loglik=self.loglik_to_user(opt.loglik),
                       grad=np.asarray(opt.grad) / self.slope,
                       hessian=np.asarray(opt.hessian) / np.outer(self.slope, self.slope))


def standardise(design: Design, layout: ParamLayout) -> Units:
    """The standardised design of ``design`` and the map of its parameters back (module docstring)."""
    e_x, e_w = _constant_coefficients(design.X), _constant_coefficients(design.W)
    y_shift = float(np.mean(design.y)) if e_x is not None else 0.0
    y_scale = float(np.std(design.y)) if e_w is not None and np.std(design.y) > 0 else 1.0
    scales = [_rms(m) for m in (design.X, design.W, design.Zu, design.Zv, design.G)]
    return units_from(design, layout, y_shift, y_scale, scales, (e_x, e_w))


def units_from(design: Design, layout: ParamLayout, y_shift: float, y_scale: float, scales: list,
               constants: tuple, internal_y_scale: float | None = None) -> Units:
    """``Units`` from the data's summaries: m and s of the response, the columns' root mean
    squares (d_x, d_w, d_u, d_v, d_g) and the constant coefficients (e_x, e_w) of X and W.
    ``standardise`` computes them from the rows; data held elsewhere (``melsm.distributed``)
    sum them where the rows are, and pass ``internal_y_scale``, SD(y*), which ``design``
    (the level-2 design G and the names, no rows) cannot give."""
    d_x, d_w, d_u, d_v, d_g = (np.array(d, dtype=float) for d in scales)
    function_constants = {}
    for row, a, b in layout.function_rows:
        function_constants[row] = _constant_coefficients(design.G[:, a:b])
        if function_constants[row] is None:  # that effect's scale cannot move: keep it as it is
            if row < layout.q_v:
                d_v[row] = 1.0
            else:
                d_u[row - layout.q_v] = y_scale
    t = np.concatenate([1.0 / d_v, y_scale / d_u])
    slope, offset = _affine_map(layout, design, y_shift, y_scale, (d_x, d_w, d_g), t, constants, function_constants)
    internal = rescaled(design, y_shift, y_scale, (d_x, d_w, d_u, d_v, d_g), internal_y_scale)
    return Units(design=internal, slope=slope, offset=offset, y_shift=y_shift, y_scale=y_scale, effect_scales=t)


def rescaled(design: Design, y_shift: float, y_scale: float, scales, internal_y_scale: float | None = None) -> Design:
    """The design in standard units: y* = (y − m)/s, each column of X, W, Zu, Zv, G divided
    by its d (``scales``, in that order; Zu's and Zv's as ``Units.effect_scales`` implies).
    ``internal_y_scale``: SD(y*) where ``design`` holds only part of the rows."""
    d_x, d_w, d_u, d_v, d_g = scales
    y = (design.y - y_shift) / y_scale
    return replace(
        design, y=y, X=design.X / d_x, W=design.W / d_w, Zu=design.Zu / d_u,
        Zv=design.Zv / d_v, G=design.G / d_g,
        y_scale=float(np.std(y)) if internal_y_scale is None else internal_y_scale,
        offset_mean=None if design.offset_mean is None else design.offset_mean / y_scale)


def _affine_map(layout: ParamLayout, design: Design, y_shift: float, y_scale: float, column_scales, t,
                constants, function_constants) -> tuple[np.ndarray, np.ndarray]:
    """(slope, offset) of θ = slope·θ* + offset, block by block as in the module docstring."""
    d_x, d_w, d_g = column_scales
    e_x, e_w = constants
    beta = (y_scale / d_x, y_shift * e_x if e_x is not None else np.zeros_like(d_x))
    alpha = (1.0 / d_w, 2 * np.log(y_scale) * e_w if e_w is not None else np.zeros_like(d_w))
    kappa = (1.0 / d_g, np.zeros_like(d_g))
    for row, a, b in layout.function_rows:
        if function_constants[row] is not None:
            kappa[1][a:b] = 2 * np.log(t[row]) * function_constants[row]
    chol_slope, chol_offset = [], []
    between = set(layout.between_rows)
    for r, c in layout.chol_entries:
        diagonal = r == c
        chol_slope.append(1.0 if diagonal or r in between else t[r])
        chol_offset.append(np.log(t[r]) if diagonal else 0.0)
    assoc = (t[:layout.n_assoc], np.zeros(layout.n_assoc))  # τ_q scales like the (one) scale effect
    slope = np.concatenate([beta[0], alpha[0], kappa[0], np.asarray(chol_slope, float), assoc[0]])
    offset = np.concatenate([beta[1], alpha[1], kappa[1], np.asarray(chol_offset, float), assoc[1]])
    return slope, offset
