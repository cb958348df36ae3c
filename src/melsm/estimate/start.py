"""Starting values of an ML fit, staged as in MIXREGLS (docs/architecture.md,
'Maximum likelihood'): ordinary least squares for β and a regression of log squared residuals for
α; then the model without random scale effects (closed-form likelihood), whose estimates
and inverse Hessian start the full model.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from melsm.estimate.convergence import Optimum, is_positive_definite
from melsm.model.association import Association
from melsm.model.names import Effect
from melsm.model.params import ParamLayout


def least_squares_start(design) -> tuple[np.ndarray, np.ndarray, float]:
    """β by OLS; α by regressing log squared residuals (+1.27 = −E log χ²₁) on W."""
    known = getattr(design, "least_squares", None)
    if known is not None:  # summed where the rows are (melsm.distributed.summaries)
        return known
    beta, *_ = np.linalg.lstsq(design.X, design.y, rcond=None)
    resid = design.y - design.X @ beta
    target = np.log(resid**2 + 1e-8 * np.var(design.y)) + 1.27
    alpha, *_ = np.linalg.lstsq(design.W, target, rcond=None)
    # Centre the intercept of the log variance on the residual variance itself.
    return beta, alpha, float(np.var(resid))


def effect_scale(column: np.ndarray, name: str) -> float:
    return 1.0 if name == "Intercept" else float(np.std(column)) or 1.0


def initial_cholesky(design, layout: ParamLayout, resid_var: float) -> np.ndarray:
    """Diagonal L: location effects with SD 0.3·σ_e, scale effects with SD 0.3 (per unit z)."""
    diag = [0.3 / effect_scale(design.Zv[:, k], n) for k, n in enumerate(layout.zv_names)]
    diag += [0.3 * np.sqrt(resid_var) / effect_scale(design.Zu[:, k], n)
             for k, n in enumerate(layout.zu_names)]
    return np.diag(diag) if diag else np.zeros((0, 0))


def without_scale_effects(layout: ParamLayout) -> ParamLayout:
    """The model without random scale effects (and without their level-2 functions,
    whose coefficients come last in κ and G)."""
    functions = tuple(f for f in layout.g_functions if isinstance(f[0], Effect) and f[0].part == "mean")
    n_kappa = functions[-1][2] if functions else 0
    return replace(layout, zv_names=(), association=Association.CORRELATED, g_coefs=layout.g_coefs[:n_kappa],
                   g_functions=functions)


def function_intercepts(kappa: np.ndarray, layout: ParamLayout, L: np.ndarray) -> np.ndarray:
    """κ with each level-2 function's intercept (else its first coefficient) at the log
    variance of its row of L, log Σ_rr = log |L_r|²; other coefficients unchanged."""
    kappa = np.array(kappa, dtype=float)
    for row, a, b in layout.function_rows:
        k = a + next((i for i, c in enumerate(layout.g_coefs[a:b]) if c.is_intercept), 0)
        kappa[k] = np.log(max(np.sum(L[row] ** 2), 1e-12))
    return kappa


def embed_start(theta_small: np.ndarray, small: ParamLayout, full: ParamLayout,
                design) -> np.ndarray:
    """Starting values for the full model from the fit without scale effects."""
    p = small.params(np.asarray(theta_small), xp=np)
    kappa_small = p.kappa
    L = initial_cholesky(design, full, 1.0)
    q_v = full.q_v
    L[q_v:, q_v:] = p.chol
    # the scale effects' functions start at the initial variances, covariates at 0
    kappa = function_intercepts(np.zeros(len(full.g_names)), full, L)
    kappa[:len(kappa_small)] = kappa_small
    for b in full.between_rows:
        L[b] /= max(L[b, b], 1e-12)
    return full.pack(p.beta, p.alpha, kappa, L)


def embed_inverse_hessian(opt_small: Optimum, small: ParamLayout, full: ParamLayout,
                          new_variance: float = 0.05) -> np.ndarray | None:
    """BFGS's first inverse Hessian for the full model: the small model's, plus a
    diagonal guess for the parameters of the scale effects."""
    try:
        inv_small = np.linalg.inv(-opt_small.hessian)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(inv_small)) or not is_positive_definite(inv_small):
        return None
    n_fixed = sum(small.sizes[:3])  # β, α and the location functions' κ: the same places in both
    index_small = list(range(n_fixed))
    index_full = list(range(n_fixed))
    full_pos = {rc: sum(full.sizes[:3]) + k for k, rc in enumerate(full.chol_entries)}
    for k, (r, c) in enumerate(small.chol_entries):
        if (r + full.q_v, c + full.q_v) not in full_pos:  # e.g. a correlation that is a function in full
            return None
        index_small.append(n_fixed + k)
        index_full.append(full_pos[(r + full.q_v, c + full.q_v)])
    inv = np.eye(full.n_params) * new_variance
    inv[np.ix_(index_full, index_full)] = inv_small[np.ix_(index_small, index_small)]
    return 0.5 * (inv + inv.T)
