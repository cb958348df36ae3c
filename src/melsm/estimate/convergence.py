"""Convergence of an ML fit: the optimum's record, the test (small gradient and positive-
definite −Hessian over the identified parameters) and the covariance of θ̂
(docs/architecture.md, 'Maximum likelihood').

On a boundary (a zero pivot of L held, ``melsm.estimate.boundary``) the held entries of θ
are not identified: the test and the covariance are over the others, i.e. conditional on
the boundary, as in lme4 and Stata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from melsm.engine.likelihood import Nodes
from melsm.model.params import ParamLayout

#: Converged when every |∂ log L / ∂θ| is below this and −∇² log L is positive definite.
GRADIENT_TOLERANCE = 1e-3


@dataclass
class Optimum:
    theta: np.ndarray
    loglik: float
    grad: np.ndarray
    hessian: np.ndarray
    nodes: Nodes | tuple[Nodes, ...] | None  # a tuple, one per block, for blocked data
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


def judge(theta, objective, layout: ParamLayout, floors: dict, held_p: frozenset,
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
    free = identified(layout, frozenset(pivots), frozenset(zero_rows))
    sub = -hess[np.ix_(free, free)]
    positive_definite = bool(np.all(np.isfinite(sub))) and is_positive_definite(sub)
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


def is_positive_definite(matrix: np.ndarray) -> bool:
    if matrix.size == 0:
        return True
    try:
        np.linalg.cholesky(0.5 * (matrix + matrix.T))
        return True
    except np.linalg.LinAlgError:
        return False


def held_positions(layout: ParamLayout, pivots, zero_rows) -> list[int]:
    """θ positions not identified on the boundary: the diagonal and the column below each
    zero pivot, and the whole row of a zero-variance effect."""
    offset = sum(layout.sizes[:3])
    return [offset + k for k, (r, c) in enumerate(layout.chol_entries)
            if c in pivots or r in zero_rows]


def identified(layout: ParamLayout, pivots, zero_rows) -> np.ndarray:
    """θ positions still identified on the boundary (see ``_held_positions``)."""
    held = set(held_positions(layout, pivots, zero_rows))
    return np.asarray([k for k in range(layout.n_params) if k not in held], dtype=int)


def covariance(opt: Optimum, layout: ParamLayout) -> np.ndarray:
    """Covariance of θ̂: inverse of −∇² log L over the identified parameters (NaN elsewhere)."""
    n = layout.n_params
    cov = np.full((n, n), np.nan)
    free = identified(layout, opt.pivots, opt.zero_rows)
    sub = -opt.hessian[np.ix_(free, free)]
    try:
        inv = np.linalg.inv(0.5 * (sub + sub.T))
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(0.5 * (sub + sub.T))
    cov[np.ix_(free, free)] = inv
    return cov
