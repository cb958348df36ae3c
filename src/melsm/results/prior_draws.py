"""Exact draws from the prior of a Bayesian fit (``melsm.estimate.priors``; see
docs/architecture.md, 'MCMC'), for ``fit.sample_prior`` and the InferenceData's ``prior``
group.

Every part of the prior is drawn from its own distribution, with the scales
``prior_scales`` gives the sampler, in the sampler's coordinates z
(``melsm.estimate.sample_layout``), and carried to θ, the reported values and the
groups' effects by the sampler's own maps:

- β_k ~ N(loc, scale²), α_k ~ N(loc, scale²), the quadratic association's τ_q ~ N(0, 5²);
- each SD with a prior of its own: half-t_ν(0, s) = s|t_ν|, half-normal s|N(0, 1)|, or
  σ² ~ Γ⁻¹(a, b) = b / Γ(a, 1);
- correlations LKJ(η), drawn by their canonical partial correlations, independent with
  z_ik ~ 2 Beta(b, b) − 1, b = η + (d − 2 − k)/2 for column k of a block of dimension d
  (Lewandowski, Kurowicka and Joe 2009), w = atanh z;
- level-2 coefficients κ under ``level2="implied"``: the SDs at the anchor patterns drawn
  from the SD prior, ℓ = 2 log σ, and the CPCs at the correlation anchors as above,
  w = atanh z; κ solves A κ = (ℓ, w) (A square and invertible: each function's anchors);
  under ``level2="normal"``, κ ~ N(loc, scale²);
- each group's effects b_j = L_j η_j, η_j ~ N(0, I) (under the quadratic association,
  v_j = b_v,j + τ_q θ1_j²; ``ParamLayout.effects_from_eta``).

Improper priors have no draws: flat fixed effects (``fixed="flat"``, as ``"diffuse"``)
or a uniform SD prior raise ``MelsmInputError``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from melsm.errors import MelsmInputError
from melsm.estimate.priors import Priors, prior_scales


def check_proper(priors: Priors) -> None:
    """Refuse improper priors (module docstring)."""
    if priors.fixed != "normal":
        raise MelsmInputError("no prior draws: the fixed effects have a flat (improper) prior "
                              "(priors='diffuse' or fixed='flat'); sample with proper priors, e.g. the default")
    if priors.sd == "uniform":
        raise MelsmInputError("no prior draws: the uniform SD prior is improper")


def sd_draws(priors: Priors, scale: np.ndarray, n: int, rng) -> np.ndarray:
    """(n, len(scale)) SDs from the SD prior family with per-column scales."""
    shape = (n, len(scale))
    if priors.sd == "half_t":
        return scale * np.abs(rng.standard_t(priors.sd_df, size=shape))
    if priors.sd == "half_normal":
        return scale * np.abs(rng.standard_normal(shape))
    a, b = priors.inv_gamma  # on the variance
    return np.sqrt(b / rng.gamma(a, 1.0, size=shape))


def cpc_draws(power: np.ndarray, n: int, rng) -> np.ndarray:
    """(n, len(power)) unconstrained w = atanh z, z ~ 2 Beta(b, b) − 1 for each b in ``power``."""
    z = 2.0 * rng.beta(power, power, size=(n, len(power))) - 1.0
    return np.arctanh(np.clip(z, -1 + 1e-15, 1 - 1e-15))


def lkj_powers(sample_layout, priors: Priors) -> np.ndarray:
    """The Beta parameter of each CPC the sampler has, in ``SampleLayout.pairs`` order."""
    powers = []
    for block in sample_layout.blocks:
        for a, _ in enumerate(block):
            powers += [priors.lkj + (len(block) - 2 - k) / 2 for k in range(a)]
    return np.asarray(powers, float)


def kappa_draws(scales: dict, priors: Priors, n: int, rng) -> np.ndarray:
    """(n, p_g) level-2 coefficients (module docstring)."""
    pg = len(scales["kappa_loc"])
    if pg == 0:
        return np.zeros((n, 0))
    if priors.level2 == "normal":
        return rng.normal(scales["kappa_loc"], scales["kappa_scale"], size=(n, pg))
    anchors = np.concatenate([scales["variance_anchors"], scales["corr_anchors"]])
    log_variance = 2 * np.log(sd_draws(priors, scales["variance_anchor_scale"], n, rng))
    targets = np.concatenate([log_variance, cpc_draws(scales["corr_anchor_power"], n, rng)], axis=1)
    return np.linalg.solve(anchors, targets.T).T


def prior_positions(design, layout, sample_layout, priors: Priors, n: int, rng) -> np.ndarray:
    """(n, n_theta) draws of the θ part of the sampler's z (its η part left out)."""
    check_proper(priors)
    scales = prior_scales(design, layout, priors)
    beta = rng.normal(scales["beta_loc"], scales["beta_scale"], size=(n, len(scales["beta_loc"])))
    alpha = rng.normal(scales["alpha_loc"], scales["alpha_scale"], size=(n, len(scales["alpha_loc"])))
    kappa = kappa_draws(scales, priors, n, rng)
    sd_part = sd_draws(priors, scales["sd_scale"], n, rng)
    logged = list(sample_layout.log_entries)
    sd_part[:, logged] = np.log(sd_part[:, logged])  # the rest are signed s = σ > 0
    corr = cpc_draws(lkj_powers(sample_layout, priors), n, rng)
    assoc = rng.normal(0.0, priors.log_variance_scale, size=(n, layout.n_assoc))
    return np.concatenate([beta, alpha, kappa, sd_part, corr, assoc], axis=1)


@partial(jax.jit, static_argnames=("sample_layout",))
def _theta_and_report(z_theta, sample_layout):
    """θ and the reported values of one draw of z's θ part (the sampler's own maps)."""
    params = sample_layout.params(jnp.concatenate([z_theta, jnp.zeros(sample_layout.n_eta)]))
    return sample_layout.layout.theta(params, jnp), sample_layout.layout.report(params)


def prior_draws(model, sample_layout, priors: Priors, n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` exact draws from the prior: θ (n, P), the groups' effects (n, J, q) in
    internal order (``ParamLayout.effects_from_eta`` of standard normal η) and the
    reported values (n, P')."""
    layout, design = model.layout, model.design
    z_theta = prior_positions(design, layout, sample_layout, priors, n, rng)
    theta, reported = jax.vmap(lambda z: _theta_and_report(z, sample_layout))(jnp.asarray(z_theta))
    theta = np.asarray(theta)
    eta = rng.standard_normal((n, design.n_groups, layout.q))
    b = np.stack([layout.effects_from_eta(t, design.G, e) for t, e in zip(theta, eta, strict=True)])
    return theta, b, np.asarray(reported)
