"""Cholesky factors of correlation matrices from canonical partial correlations (CPCs).

The one construction of a correlation matrix from unconstrained numbers that every part
of melsm uses (docs/architecture.md, 'Parameters'): the ML parameter vector's correlation
functions (``melsm.model.params``), the sampler's correlations (``melsm.estimate.priors``)
and the truth of simulations go through it.

With w_ij unconstrained and z_ij = tanh(w_ij) ∈ (−1, 1) the CPC of the pair (i, j), j < i,
the factor R (R Rᵀ a correlation matrix, every row of unit length) is

    R_ij = z_ij √(1 − Σ_{m<j} R_im²)   (j < i),      R_ii = √(1 − Σ_{m<i} R_im²),

the Lewandowski–Kurowicka–Joe construction, as Stan's ``cholesky_factor_corr`` and
NumPyro's ``CorrCholeskyTransform``. Any w gives a positive-definite correlation matrix.
Pairs without a w have z = 0 (for a block-diagonal R, or a pair whose CPC is fixed). The
log-Jacobian of w ↦ (R_ij)_{pairs} that a sampler needs is

    log|∂R/∂w| = Σ_pairs [½ log(1 − Σ_{m<j} R_im²) + log(1 − z_ij²)].

Written once for numpy and JAX (``xp``), and batched over leading axes (``batch``): the
level-2 correlation functions give every group its own CPCs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Largest |z| the inverse returns (|w| ≤ atanh 0.999 ≈ 3.8): starting values stay off
#: the boundary of the correlations, where the sampler's geometry is poor.
INVERSE_BOUND = 0.999


def corr_cholesky(w: Mapping[tuple[int, int], Any], q: int, xp: Any = np, batch: tuple = (),
                  jacobian: bool = False):
    """R (batch + (q, q)) from unconstrained w {(i, j), j < i: array of shape ``batch``}
    (module docstring); with ``jacobian``, (R, log|∂R/∂w|), the pairs summed in row order."""
    one, zero = xp.ones(batch), xp.zeros(batch)
    log_jac = xp.zeros(batch)
    rows = []
    for i in range(q):
        remaining, row = one, []
        for j in range(q):
            if j < i and (i, j) in w:
                z = xp.tanh(w[(i, j)])
                value = z * xp.sqrt(remaining)
                if jacobian:
                    log_jac = log_jac + 0.5 * xp.log(remaining) + xp.log1p(-z * z)
                remaining = remaining - value * value
                row.append(value)
            else:
                row.append(xp.sqrt(remaining) if j == i else zero)
        rows.append(xp.stack(row, axis=-1))
    R = xp.stack(rows, axis=-2) if rows else xp.zeros(batch + (0, 0))
    return (R, log_jac) if jacobian else R


def corr_cholesky_inverse(R: np.ndarray, pairs: tuple[tuple[int, int], ...],
                          bound: float = INVERSE_BOUND) -> np.ndarray:
    """w (in ``pairs`` order, numpy) with ``corr_cholesky(w) = R`` on those pairs:
    z_ij = R_ij / √(1 − Σ_{m<j} R_im²), clipped to ±``bound``, w = atanh z. Rows of R must
    have unit length; entries outside ``pairs`` are taken as 0."""
    R = np.asarray(R, dtype=float)
    remaining: dict[int, float] = {}
    out = []
    for i, j in pairs:
        left = remaining.get(i, 1.0)
        z = np.clip(R[i, j] / np.sqrt(max(left, 1e-12)), -bound, bound)
        out.append(np.arctanh(z))
        remaining[i] = left - (z * np.sqrt(max(left, 1e-12))) ** 2
    return np.asarray(out, dtype=float)


def sd_corr_cholesky(sd: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """L = diag(σ) chol(R) for SDs σ ≥ 0 and a positive-definite correlation matrix R
    (numpy): Σ = L Lᵀ with those SDs and correlations, an SD of 0 giving a zero row.
    Raises ``numpy.linalg.LinAlgError`` when R is not positive definite."""
    sd = np.asarray(sd, dtype=float)
    chol = np.linalg.cholesky(np.asarray(corr, dtype=float)) if sd.size else np.zeros((0, 0))
    return sd[:, None] * chol
