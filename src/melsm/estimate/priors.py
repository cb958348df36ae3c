"""Prior distributions for Bayesian fits (the sampler's coordinates are
``melsm.estimate.sample_layout``; see docs/architecture.md, 'MCMC').

Two prior sets (``Priors.default()``, ``Priors.diffuse()``), scaled to the data:

- default (weakly informative): β_k ~ N(0, (10·s_y/s_k)²) with s_k the SD of covariate k
  (1 for the intercept, centred on the mean of y); α_k ~ N(0, (5/s_k)²) with the
  intercept centred on log var(y); location SDs ~ half-t₃(0, 2.5·s_y/s_k), scale SDs
  ~ half-t₃(0, 1/s_k); correlations LKJ(2); the quadratic association's τ_q ~ N(0, 5²)
  (log-variance units).
- diffuse (close to Stat-JR/MLwiN conventions): flat β, α; each random-effect variance
  ~ Γ⁻¹(0.001, 0.001); correlations LKJ(1) (uniform).

Level-2 functions (``level2="implied"``, both sets). The coefficients κ_k of a variance
function log σ²_k,j = g_j'κ_k get the SD prior of effect k (family and scale as for a
constant SD) on the SDs it implies at p anchor patterns of the group covariates, p the
number of coefficients: the reference pattern (every covariate at its smallest value in
the data) and, for each covariate c, the reference with c at its largest value. With
ℓ = A κ_k the log variances at the anchors (A invertible, so the Jacobian of κ → ℓ is a
constant) and σ_m = exp(ℓ_m / 2):

    log p(κ_k) = Σ_m [log p_σ(σ_m) + log σ_m] + const,

the SD prior carried to the log-variance scale (dσ/dℓ = σ/2). For a categorical
covariate the anchors are its levels, so each level's SD has its own half-t prior (as
``(1 | gr(group, by = level))`` in brms); for a continuous one, the SDs at both ends of
its range. The older N(0, (5/s_k)²) on κ (``level2="normal"``) is nearly flat on the
log-variance scale: where one pattern's SD may be 0 the likelihood is flat as its log
variance → −∞, and that prior lets the posterior run there (London, scale SD by mixed
vs single-sex school: posterior mean −2.5 against a median −1.1, draws down to −39). The
SD prior keeps that tail exponential, ∝ σ = e^(ℓ/2).

A correlation function atanh z_ik,j = g_j'δ_ik (z a canonical partial correlation in
column k of an LKJ block of dimension d) gets, at the same anchors w = A δ, the marginal
of that CPC under LKJ(η): z ~ Beta(b, b) on (−1, 1) with b = η + (d − 2 − k)/2, on the
atanh scale log p(w) = b log(1 − tanh² w) + const. With intercepts only this is exactly
LKJ(η) on the constant correlations. (Functions without an intercept are anchored at
each covariate's largest absolute value.)
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from melsm.errors import MelsmInputError
from melsm.model.names import LOCATION_INTERCEPT, Coef, Pair
from melsm.model.params import ParamLayout


@dataclass(frozen=True)
class Priors:
    """Prior families; data-dependent scales are set by ``prior_scales``."""

    fixed: str = "normal"  # "normal" or "flat"
    fixed_scale: float = 10.0  # β: multiples of s_y/s_k
    log_variance_scale: float = 5.0  # α (and κ under level2="normal"): log-variance scale, per unit covariate
    sd: str = "half_t"  # "half_t", "half_normal", "inv_gamma" (on the variance), "uniform"
    sd_df: float = 3.0
    location_sd_scale: float = 2.5  # multiples of s_y/s_k
    scale_sd_scale: float = 1.0  # per unit covariate
    inv_gamma: tuple[float, float] = (0.001, 0.001)
    lkj: float = 2.0
    #: Scale the priors by the data (s_y, mean and variance of y). False: s_y = 1 and
    #: centres 0, a prior fixed before seeing the data (as simulation-based calibration needs).
    data_scaled: bool = True
    #: Level-2 function coefficients: "implied" (the SD and LKJ priors on the SDs and
    #: correlations they imply at anchor patterns, see the module docstring) or "normal"
    #: (κ ~ N(centre, (log_variance_scale/s_k)²), flat when ``fixed="flat"``).
    level2: str = "implied"

    def __post_init__(self):
        if self.level2 not in ("implied", "normal"):
            raise MelsmInputError(f"level2 prior must be 'implied' or 'normal', not {self.level2!r}")
        if self.sd not in ("half_t", "half_normal", "inv_gamma", "uniform"):
            raise MelsmInputError(f"unknown SD prior '{self.sd}'")

    @classmethod
    def default(cls) -> Priors:
        return cls()

    @classmethod
    def diffuse(cls) -> Priors:
        return cls(fixed="flat", sd="inv_gamma", lkj=1.0)

    @classmethod
    def resolve(cls, priors) -> Priors:
        if priors is None or priors == "default":
            return cls.default()
        if priors == "diffuse":
            return cls.diffuse()
        if isinstance(priors, Priors):
            return priors
        if isinstance(priors, dict):
            try:
                return cls(**priors)
            except TypeError as err:
                raise MelsmInputError(f"unknown prior setting: {err}") from None
        raise MelsmInputError(f"priors must be 'default', 'diffuse', a dict or Priors, not {priors!r}")

    @property
    def positive_at_zero(self) -> bool:
        """Whether the SD prior has a positive density at σ = 0 (then scale SDs are sampled signed)."""
        return self.sd != "inv_gamma"


def correlation_blocks(layout: ParamLayout) -> tuple[tuple[int, ...], ...]:
    """The random effects that are correlated with each other, as blocks of internal
    indices ('||' effects alone)."""
    q, qv = layout.q, layout.q_v
    alone = tuple((r,) for r in range(q) if not layout.correlated(r))
    together = [r for r in range(q) if layout.correlated(r)]
    if layout.association.independent_blocks:
        blocks = (tuple(r for r in together if r < qv), tuple(r for r in together if r >= qv))
    else:
        blocks = (tuple(together),)
    return tuple(sorted((b for b in blocks if b), key=lambda b: b[0])) + alone


def sampled_sd_rows(layout: ParamLayout) -> tuple[int, ...]:
    """Internal rows of the random effects whose SD is a parameter of its own (not a
    level-2 variance function's)."""
    return tuple(r for r in range(layout.q) if r not in layout.between_rows)


def _spread(matrix, names) -> np.ndarray:
    """SD of each column (1 for the intercept or a constant column)."""
    return np.array([1.0 if n == "Intercept" else (float(np.std(matrix[:, k])) or 1.0)
                     for k, n in enumerate(names)])


def row_sd_scales(design, layout: ParamLayout, priors: Priors, s_y: float) -> np.ndarray:
    """Scale of the SD prior of each random effect, by internal row (q,)."""
    scale_rows = priors.scale_sd_scale / _spread(design.Zv, layout.zv_names)
    location_rows = priors.location_sd_scale * s_y / _spread(design.Zu, layout.zu_names)
    return np.concatenate([scale_rows, location_rows])


def anchor_patterns(G: np.ndarray, covariates) -> np.ndarray:
    """(p, p) anchor patterns of one level-2 function (module docstring): every covariate
    at its smallest value, then each covariate in turn at its largest. Invertible."""
    intercept = np.array([c == "Intercept" for c in covariates])
    low, high = G.min(axis=0), G.max(axis=0)
    high = np.where(high > low, high, low + 1.0)  # a constant covariate: any other value
    if not intercept.any():  # no reference pattern: each covariate alone at its largest |value|
        extreme = np.maximum(np.abs(low), np.abs(high))
        return np.diag(np.where(extreme > 0, extreme, 1.0))
    reference = np.where(intercept, 1.0, low)
    rows = [reference] + [np.where(np.arange(len(covariates)) == c, high, reference)
                          for c in np.flatnonzero(~intercept)]
    return np.stack(rows)


def level2_anchors(design, layout: ParamLayout, priors: Priors, row_scales: np.ndarray) -> dict:
    """Anchor rows on κ for the "implied" level-2 prior: ``variance_anchors`` (M, p_g) with
    the SD-prior scale of each row's effect, ``corr_anchors`` (M', p_g) with each row's
    LKJ-CPC exponent b = η + (d − 2 − k)/2."""
    pg = len(layout.g_names)
    variance, variance_scale, corr, corr_power = [], [], [], []
    function_rows = {a: row for row, a, _ in layout.function_rows}
    blocks = correlation_blocks(layout)
    for effect, a, b in layout.g_functions:
        patterns = np.zeros((b - a, pg))
        patterns[:, a:b] = anchor_patterns(design.G[:, a:b], [c.covariate for c in layout.g_coefs[a:b]])
        if isinstance(effect, Pair):
            column = next(j for _, j, first, _ in layout.corr_functions if first == a)
            block = next(bl for bl in blocks if column in bl)
            power = priors.lkj + (len(block) - 2 - block.index(column)) / 2
            corr.append(patterns)
            corr_power += [power] * len(patterns)
        else:
            variance.append(patterns)
            variance_scale += [row_scales[function_rows[a]]] * len(patterns)
    return {
        "variance_anchors": np.concatenate(variance) if variance else np.zeros((0, pg)),
        "variance_anchor_scale": np.asarray(variance_scale, float),
        "corr_anchors": np.concatenate(corr) if corr else np.zeros((0, pg)),
        "corr_anchor_power": np.asarray(corr_power, float),
    }


def prior_scales(design, layout: ParamLayout, priors: Priors) -> dict:
    """Location and scale of every prior, from the data (numpy arrays)."""
    s_y = float(np.std(design.y)) or 1.0
    log_var = float(np.log(np.var(design.y))) if np.var(design.y) > 0 else 0.0
    mean_y = float(np.mean(design.y))
    if not priors.data_scaled:
        s_y, log_var, mean_y = 1.0, 0.0, 0.0

    def centre(names, value):
        return np.array([value if n == "Intercept" else 0.0 for n in names])

    rows = row_sd_scales(design, layout, priors, s_y)
    sd_rows = sampled_sd_rows(layout)
    return {
        "beta_loc": centre(layout.x_names, mean_y),
        "beta_scale": priors.fixed_scale * s_y / _spread(design.X, layout.x_names),
        "alpha_loc": centre(layout.w_names, log_var),
        "alpha_scale": priors.log_variance_scale / _spread(design.W, layout.w_names),
        "kappa_loc": np.array([log_var if c == Coef(LOCATION_INTERCEPT, "Intercept") else 0.0 for c in layout.g_coefs]),
        "kappa_scale": priors.log_variance_scale / _spread(design.G, [c.covariate for c in layout.g_coefs]),
        "sd_scale": rows[list(sd_rows)],
        **level2_anchors(design, layout, priors, rows),
    }


def sd_log_density(sd, scale, priors: Priors):
    """Σ log p(σ) of the SD prior family (up to constants), σ > 0, elementwise scales."""
    if priors.sd == "half_t":
        nu = priors.sd_df
        return -0.5 * (nu + 1) * jnp.sum(jnp.log1p((sd / scale) ** 2 / nu))
    if priors.sd == "half_normal":
        return -0.5 * jnp.sum((sd / scale) ** 2)
    if priors.sd == "inv_gamma":  # on the variance σ²: density ∝ (σ²)^(−a−1) e^(−b/σ²), dσ²/dσ = 2σ
        a, b = priors.inv_gamma
        variance = sd**2
        return jnp.sum(-(a + 1) * jnp.log(variance) - b / variance + jnp.log(2 * sd))
    return jnp.zeros(())  # "uniform"


def level2_log_prior(kappa, scales: dict, priors: Priors):
    """log p(κ) under ``level2="implied"``: the SD prior at the variance anchors carried to
    the log-variance scale, Σ [log p_σ(σ_m) + log σ_m] with σ_m = exp(½ a_m'κ), and the
    LKJ-CPC marginal at the correlation anchors, Σ b_m log(1 − tanh²(a_m'κ))."""
    total = jnp.zeros(())
    if scales["variance_anchors"].shape[0]:
        half_log_var = 0.5 * (scales["variance_anchors"] @ kappa)
        total = total + sd_log_density(jnp.exp(half_log_var), scales["variance_anchor_scale"], priors)
        total = total + jnp.sum(half_log_var)
    if scales["corr_anchors"].shape[0]:
        w = scales["corr_anchors"] @ kappa
        # log(1 − tanh² w) = −2 log cosh w, written to stay finite for large |w|
        log_sech2 = -2.0 * (jnp.abs(w) + jnp.log1p(jnp.exp(-2.0 * jnp.abs(w))) - jnp.log(2.0))
        total = total + jnp.sum(scales["corr_anchor_power"] * log_sech2)
    return total
