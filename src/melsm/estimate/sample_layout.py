"""The sampler's unconstrained parameterisation z and the log prior density on it.

MCMC samples z = (β, α, κ, σ-part, y, η): β, α, κ as they are; the random-effect SDs σ
(the location intercept's is replaced by κ when there is a between function); y the
unconstrained correlations: the Cholesky factor R of each correlation block is built from
tanh(y) as in Stan (Lewandowski–Kurowicka–Joe), which keeps every Σ positive definite; η
the standardised scale effects of each group (non-centred: v_j = L_vv η_j). Correlated
random effects form one block; ``association="none"`` gives a location block and a scale
block.

SDs are sampled as log σ, except the SDs of the scale effects under an SD prior with a
positive density at σ = 0 (half-t, half-normal, uniform; not the inverse gamma), which
are sampled on a signed linear scale s with σ = |s|. Why: where the likelihood is flat as
σ → 0 (a scale random slope that may be absent), such a prior gives log σ an exponential
left tail, density ∝ σ = e^(log σ), which HMC crosses slowly (London Model 6: log σ of the
scale slope from −10 to −1.5, bulk ESS 565 of 4,000 draws), while in s the posterior is
smooth through 0. The sign is not identified: with D = diag(sign s) the sampler evaluates
the model at σ = |s|, correlations D R D and η_true = D η, so v_j = diag(s) R η_j is
smooth in s, and the map (s, y, η) → (|s|, D R D, D η) is two-to-one, preserving the LKJ
prior, its tanh Jacobian and N(0, I) on η. The reported σ and correlations therefore have
exactly the posterior of the log parameterisation. With correlation functions (in κ, no
y to flip) every SD is sampled as log σ.

The priors themselves are ``melsm.estimate.priors``. See docs/architecture.md, 'MCMC'.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from melsm.estimate.priors import Priors, correlation_blocks, level2_log_prior, sampled_sd_rows, sd_log_density
from melsm.model.params import ParamLayout, Params
from melsm.model.transforms import corr_cholesky, corr_cholesky_inverse


@dataclass(frozen=True)
class SampleLayout:
    """Positions in z, and how z maps to the ML parameter vector θ."""

    layout: ParamLayout
    n_groups: int
    #: Sample the scale effects' SDs on the signed scale σ = |s| (module docstring).
    signed_scale_sds: bool = False

    @classmethod
    def for_model(cls, layout: ParamLayout, n_groups: int, priors: Priors) -> SampleLayout:
        """The layout the sampler uses: signed scale SDs where the prior allows σ = 0 and
        the correlations are in y (not level-2 functions in κ)."""
        return cls(layout, n_groups, priors.positive_at_zero and not layout.corr_functions)

    @property
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        """Correlation blocks as tuples of internal random-effect indices."""
        if self.layout.corr_functions:  # the correlation is a level-2 function (in κ)
            return tuple((r,) for r in range(self.layout.q))
        return correlation_blocks(self.layout)

    @property
    def sd_rows(self) -> tuple[int, ...]:
        return sampled_sd_rows(self.layout)

    @property
    def signed_entries(self) -> tuple[int, ...]:
        """Positions within the SD part of z sampled as signed s (the rest as log σ)."""
        if not self.signed_scale_sds:
            return ()
        return tuple(k for k, r in enumerate(self.sd_rows) if r < self.layout.q_v)

    @property
    def log_entries(self) -> tuple[int, ...]:
        return tuple(k for k in range(len(self.sd_rows)) if k not in self.signed_entries)

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
        """z → (β, α, κ, SD part, y, η as sampled (n_groups, n_agq))."""
        px, pw, pg, _ = self.layout.sizes
        n_sd = len(self.sd_rows)
        o = np.cumsum([0, px, pw, pg, n_sd, self.n_corr])
        eta = z[self.n_theta:].reshape(self.n_groups, self.layout.n_agq)
        return z[o[0]:o[1]], z[o[1]:o[2]], z[o[2]:o[3]], z[o[3]:o[4]], z[o[4]:o[5]], eta

    def signed_sds(self, sd_part):
        """The SD part of z → s, one per ``sd_rows`` entry: exp for log entries, as it is
        for signed ones (σ = |s|)."""
        s = jnp.exp(sd_part)
        if self.signed_entries:
            signed = jnp.asarray(self.signed_entries)
            s = s.at[signed].set(sd_part[signed])
        return s

    def row_signs(self, z):
        """D: sign of each row's s (1 for rows sampled on the log scale or by κ), (q,)."""
        signs = jnp.ones(self.layout.q)
        if self.signed_entries:
            s = self.split(z)[3]
            rows = jnp.asarray([self.sd_rows[k] for k in self.signed_entries])
            signs = signs.at[rows].set(jnp.sign(s[jnp.asarray(self.signed_entries)]))
        return signs

    def eta(self, z):
        """The model's standardised effects, D η (the sampled η with the signs of s)."""
        eta = self.split(z)[5]
        if not self.signed_entries:
            return eta
        return eta * self.row_signs(z)[None, :self.layout.n_agq]

    def assoc(self, z):
        """τ_q (quadratic association), after the correlations; empty otherwise."""
        return z[self.n_theta - self.layout.n_assoc:self.n_theta]

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The pairs (i, j), j < i, of ``blocks`` whose CPCs are in y, in y's order."""
        return tuple((i, j) for block in self.blocks for a, i in enumerate(block) for j in block[:a])

    def correlation_cholesky(self, y):
        """Block-diagonal Cholesky factor R of the correlation matrix from y, and
        log|∂R/∂y| (``melsm.model.transforms.corr_cholesky``)."""
        w = {pair: y[k] for k, pair in enumerate(self.pairs)}
        return corr_cholesky(w, self.layout.q, jnp, jacobian=True)

    def params(self, z) -> Params:
        """z → ``Params``, the sampler's bijection (docs/architecture.md, 'Parameters'):
        L = diag(σ) D R D with σ = |s| (or exp of the log entries), R the CPC factor of y
        (``correlation_cholesky``) and D the signs of s (module docstring). Rows with a
        level-2 variance function have σ = 1: R's row is already a unit direction."""
        beta, alpha, kappa, sd_part, y, _ = self.split(z)
        R, _ = self.correlation_cholesky(y)
        sd = jnp.ones(self.layout.q)
        if self.sd_rows:
            sd = sd.at[jnp.asarray(self.sd_rows)].set(jnp.abs(self.signed_sds(sd_part)))
        if self.signed_entries:
            signs = self.row_signs(z)
            R = signs[:, None] * R * signs[None, :]
        L = self.layout.correlation_functions_at_zero(sd[:, None] * R, kappa, jnp)
        return Params(beta, alpha, kappa, L, self.assoc(z))

    def to_theta(self, z):
        """z → the optimiser's θ (``ParamLayout.theta``), for reporting draws on the ML
        layout's scale."""
        return self.layout.theta(self.params(z), jnp)

    def from_theta(self, theta: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Inverse of ``to_theta`` (numpy; positive s), for starting values from an ML fit:
        σ the row lengths of L, y the CPCs of R = diag(σ)⁻¹ L (clipped inside ±0.999)."""
        p = self.layout.params(np.asarray(theta, float), xp=np)
        sd = np.sqrt(np.sum(p.chol**2, axis=1))
        y = corr_cholesky_inverse(p.chol / np.maximum(sd[:, None], 1e-300), self.pairs)
        sd_part = np.maximum(sd[list(self.sd_rows)], 1e-3)
        logged = list(self.log_entries)
        sd_part[logged] = np.log(sd_part[logged])
        return np.concatenate([p.beta, p.alpha, p.kappa, sd_part, y, np.asarray(p.assoc, float),
                               np.asarray(eta, float).ravel()])


def log_prior(z, scales: dict, sample_layout: SampleLayout, priors: Priors):
    """log p(z): the priors of β, α, κ, σ and the correlations, with the Jacobians of
    the transforms to z (log σ for log entries; signed s needs none; the tanh-based
    correlation Cholesky)."""
    beta, alpha, kappa, sd_part, y, _ = sample_layout.split(z)
    total = jnp.zeros(())
    if priors.fixed == "normal":
        for value, loc, scale in ((beta, "beta_loc", "beta_scale"), (alpha, "alpha_loc", "alpha_scale")):
            total = total - 0.5 * jnp.sum(((value - scales[loc]) / scales[scale]) ** 2)
        total = total - 0.5 * jnp.sum((sample_layout.assoc(z) / priors.log_variance_scale) ** 2)
    if priors.level2 == "implied":
        total = total + level2_log_prior(kappa, scales, priors)
    elif priors.fixed == "normal":
        total = total - 0.5 * jnp.sum(((kappa - scales["kappa_loc"]) / scales["kappa_scale"]) ** 2)
    total = total + sd_log_density(jnp.abs(sample_layout.signed_sds(sd_part)), scales["sd_scale"], priors)
    if sample_layout.log_entries:  # Jacobian of σ = exp(log σ)
        total = total + jnp.sum(sd_part[jnp.asarray(sample_layout.log_entries)])
    R, log_jac = sample_layout.correlation_cholesky(y)
    for block in sample_layout.blocks:
        n = len(block)
        for a, i in enumerate(block[1:], start=1):  # LKJ(η) on the Cholesky factor
            total = total + (n - a - 1 + 2 * (priors.lkj - 1)) * jnp.log(R[i, i])
    return total + log_jac
