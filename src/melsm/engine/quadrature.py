"""Gauss–Hermite rules for integrals against the standard normal density."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np


@cache
def normal_rule(n_points: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product probabilists' Gauss–Hermite rule.

    Returns nodes z (n_points**dim, dim) and log-weights with Σ_k w_k = 1, so that
    ∫ f(z) φ(z) dz ≈ Σ_k w_k f(z_k), exactly for polynomials of degree < 2·n_points
    in each coordinate.
    """
    if n_points < 1:
        raise ValueError("quadrature needs at least one point")
    z1, w1 = np.polynomial.hermite_e.hermegauss(n_points)
    w1 = w1 / w1.sum()
    nodes = np.array(list(itertools.product(z1, repeat=dim)), dtype=float).reshape(-1, dim)
    logw = np.array([np.log(w1[list(idx)]).sum()
                     for idx in itertools.product(range(n_points), repeat=dim)])
    return nodes, logw
