"""Prior distributions for Bayesian fits, and the unconstrained parameterisation they act on.

MCMC samples z = (β, α, κ, log σ, y) where σ are the random-effect SDs (the location
intercept's is replaced by κ when there is a between function) and y the unconstrained
correlations: the Cholesky factor of each correlation block is built from tanh(y) as in
Stan (Lewandowski–Kurowicka–Joe), which keeps every Σ positive definite. Correlated
random effects form one block; ``association="none"`` gives a location block and a scale
block.

Two prior sets (``Priors.default()``, ``Priors.diffuse()``), scaled to the data:

- default (weakly informative): β_k ~ N(0, (10·s_y/s_k)²) with s_k the SD of covariate k
  (1 for the intercept, centred on the mean of y); α_k, κ_k ~ N(0, (5/s_k)²) with the
  intercepts centred on log var(y); location SDs ~ half-t₃(0, 2.5·s_y/s_k), scale SDs
  ~ half-t₃(0, 1/s_k); correlations LKJ(2); the quadratic association's τ_q ~ N(0, 5²) (log-variance units).
- diffuse (close to Stat-JR/MLwiN conventions): flat β, α, κ; each random-effect
  variance ~ Γ⁻¹(0.001, 0.001); correlations LKJ(1) (uniform).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .errors import MelsmInputError
from .params import ParamLayout


@dataclass(frozen=True)
class Priors:
    """Prior families; data-dependent scales are set by ``prior_scales``."""

    fixed: str = "normal"  # "normal" or "flat"
    fixed_scale: float = 10.0  # β: multiples of s_y/s_k
    log_variance_scale: float = 5.0  # α, κ: on the log-variance scale, per unit covariate
    sd: str = "half_t"  # "half_t", "half_normal", "inv_gamma" (on the variance), "uniform"
    sd_df: float = 3.0
    location_sd_scale: float = 2.5  # multiples of s_y/s_k
    scale_sd_scale: float = 1.0  # per unit covariate
    inv_gamma: tuple[float, float] = (0.001, 0.001)
    lkj: float = 2.0
    #: Scale the priors by the data (s_y, mean and variance of y). False: s_y = 1 and
    #: centres 0, a prior fixed before seeing the data (as simulation-based calibration needs).
    data_scaled: bool = True

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


@dataclass(frozen=True)
class SampleLayout:
    """Positions in z, and how z maps to the ML parameter vector θ."""

    layout: ParamLayout
    n_groups: int

    @property
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        """Correlation blocks as tuples of internal random-effect indices."""
        q, qv = self.layout.q, self.layout.q_v
        if self.layout.corr_functions:  # the correlation is a level-2 function (in κ)
            return tuple((r,) for r in range(q))
        if self.layout.independent_blocks:
            return tuple(b for b in (tuple(range(qv)), tuple(range(qv, q))) if b)
        return (tuple(range(q)),) if q else ()

    @property
    def sd_rows(self) -> tuple[int, ...]:
        return tuple(r for r in range(self.layout.q) if r not in self.layout.between_rows)

    @property
    def n_corr(self) -> int:
        return sum(len(b) * (len(b) - 1) // 2 for b in self.blocks)

    @property
    def n_theta(self) -> int:
        px, pw, pg, _ = self.layout.sizes
        return px + pw + pg + len(self.sd_rows) + self.n_corr + self.layout.n_assoc

    @property
    def n_eta(self) -> int:
        return self.n_groups * self.layout.n_agq

    @property
    def size(self) -> int:
        return self.n_theta + self.n_eta

    def split(self, z):
        px, pw, pg, _ = self.layout.sizes
        n_sd = len(self.sd_rows)
        o = np.cumsum([0, px, pw, pg, n_sd, self.n_corr])
        eta = z[self.n_theta:].reshape(self.n_groups, self.layout.n_agq)
        return z[o[0]:o[1]], z[o[1]:o[2]], z[o[2]:o[3]], z[o[3]:o[4]], z[o[4]:o[5]], eta

    def assoc(self, z):
        """τ_q (quadratic association), after the correlations; empty otherwise."""
        return z[self.n_theta - self.layout.n_assoc:self.n_theta]

    def correlation_cholesky(self, y):
        """Block-diagonal Cholesky factor of the correlation matrix from y, and
        log|∂L/∂y| (Stan's cholesky_corr transform)."""
        q = self.layout.q
        rows = [[jnp.zeros(()) for _ in range(q)] for _ in range(q)]
        log_jac = jnp.zeros(())
        k = 0
        for block in self.blocks:
            for a, i in enumerate(block):
                remaining = jnp.ones(())
                for j in block[:a]:
                    z = jnp.tanh(y[k])
                    k += 1
                    rows[i][j] = z * jnp.sqrt(remaining)
                    log_jac = log_jac + 0.5 * jnp.log(remaining) + jnp.log1p(-z * z)
                    remaining = remaining - rows[i][j] ** 2
                rows[i][i] = jnp.sqrt(remaining)
        L = jnp.stack([jnp.stack(r) for r in rows]) if q else jnp.zeros((0, 0))
        return L, log_jac

    def to_theta(self, z):
        """z → the ML layout's θ (so the likelihood code serves both estimators)."""
        beta, alpha, kappa, log_sd, y, _ = self.split(z)
        R, _ = self.correlation_cholesky(y)
        sd = jnp.ones(self.layout.q)
        if self.sd_rows:
            sd = sd.at[jnp.asarray(self.sd_rows)].set(jnp.exp(log_sd))
        L = sd[:, None] * R
        for b in self.layout.between_rows:
            L = L.at[b].set(L[b] / L[b, b])
        chol = [jnp.log(L[r, c]) if r == c else L[r, c] for r, c in self.layout.chol_entries]
        parts = [beta, alpha, kappa] + ([jnp.stack(chol)] if chol else []) + [self.assoc(z)]
        return jnp.concatenate(parts)

    def from_theta(self, theta: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Inverse of ``to_theta`` (numpy), for starting values from an ML fit."""
        lay = self.layout
        beta, alpha, kappa, _ = lay.split(np.asarray(theta, float))
        L = lay.cholesky(np.asarray(theta, float), xp=np)
        sd = np.sqrt(np.sum(L**2, axis=1))
        R = L / np.maximum(sd[:, None], 1e-300)
        y = []
        for block in self.blocks:
            for a, i in enumerate(block):
                remaining = 1.0
                for j in block[:a]:
                    z = np.clip(R[i, j] / np.sqrt(max(remaining, 1e-12)), -0.999, 0.999)
                    y.append(np.arctanh(z))
                    remaining -= (z * np.sqrt(max(remaining, 1e-12))) ** 2
        log_sd = np.log(np.maximum(sd[list(self.sd_rows)], 1e-3))
        return np.concatenate([beta, alpha, kappa, log_sd, np.asarray(y, float),
                               np.asarray(lay.assoc(np.asarray(theta, float)), float),
                               np.asarray(eta, float).ravel()])


def prior_scales(design, layout: ParamLayout, priors: Priors) -> dict:
    """Location and scale of every prior, from the data (numpy arrays)."""
    s_y = float(np.std(design.y)) or 1.0
    log_var = float(np.log(np.var(design.y))) if np.var(design.y) > 0 else 0.0
    mean_y = float(np.mean(design.y))
    if not priors.data_scaled:
        s_y, log_var, mean_y = 1.0, 0.0, 0.0

    def spread(matrix, names):
        return np.array([1.0 if n == "Intercept" else (float(np.std(matrix[:, k])) or 1.0)
                         for k, n in enumerate(names)])

    def centre(names, value):
        return np.array([value if n == "Intercept" else 0.0 for n in names])

    sd_scale = []
    for r in SampleLayout(layout, design.n_groups).sd_rows:
        if r < layout.q_v:
            sd_scale.append(priors.scale_sd_scale / spread(design.Zv, layout.zv_names)[r])
        else:
            k = r - layout.q_v
            sd_scale.append(priors.location_sd_scale * s_y / spread(design.Zu, layout.zu_names)[k])
    return {
        "beta_loc": centre(layout.x_names, mean_y),
        "beta_scale": priors.fixed_scale * s_y / spread(design.X, layout.x_names),
        "alpha_loc": centre(layout.w_names, log_var),
        "alpha_scale": priors.log_variance_scale / spread(design.W, layout.w_names),
        "kappa_loc": centre(layout.g_names, log_var),
        "kappa_scale": priors.log_variance_scale / spread(design.G, layout.g_names),
        "sd_scale": np.asarray(sd_scale, float),
    }


def log_prior(z, scales: dict, sample_layout: SampleLayout, priors: Priors):
    """log p(z): the priors of β, α, κ, σ and the correlations, with the Jacobians of
    the transforms to z (log σ, tanh-based correlation Cholesky)."""
    beta, alpha, kappa, log_sd, y, _ = sample_layout.split(z)
    total = jnp.zeros(())
    if priors.fixed == "normal":
        for value, loc, scale in ((beta, "beta_loc", "beta_scale"), (alpha, "alpha_loc", "alpha_scale"),
                                  (kappa, "kappa_loc", "kappa_scale")):
            total = total - 0.5 * jnp.sum(((value - scales[loc]) / scales[scale]) ** 2)
        total = total - 0.5 * jnp.sum((sample_layout.assoc(z) / priors.log_variance_scale) ** 2)
    sd = jnp.exp(log_sd)
    if priors.sd == "half_t":
        nu = priors.sd_df
        total = total - 0.5 * (nu + 1) * jnp.sum(jnp.log1p((sd / scales["sd_scale"]) ** 2 / nu))
    elif priors.sd == "half_normal":
        total = total - 0.5 * jnp.sum((sd / scales["sd_scale"]) ** 2)
    elif priors.sd == "inv_gamma":  # on the variance σ²: density ∝ (σ²)^(−a−1) e^(−b/σ²), dσ²/dσ = 2σ
        a, b = priors.inv_gamma
        variance = sd**2
        total = total + jnp.sum(-(a + 1) * jnp.log(variance) - b / variance + jnp.log(2 * sd))
    elif priors.sd != "uniform":
        raise MelsmInputError(f"unknown SD prior '{priors.sd}'")
    total = total + jnp.sum(log_sd)  # Jacobian of σ = exp(log σ)
    R, log_jac = sample_layout.correlation_cholesky(y)
    for block in sample_layout.blocks:
        n = len(block)
        for a, i in enumerate(block[1:], start=1):  # LKJ(η) on the Cholesky factor
            total = total + (n - a - 1 + 2 * (priors.lkj - 1)) * jnp.log(R[i, i])
    return total + log_jac
