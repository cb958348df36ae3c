"""The adaptive-quadrature likelihood and EB predictions against brute-force integrals.

The brute force integrates every random effect (location and scale) numerically with
scipy, using plain per-observation normal densities, or a multivariate normal density
for y_j | v_j where the location effects are integrated in closed form by scipy.stats
— independent of the Woodbury/determinant-lemma algebra of the package.
"""

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.integrate
import scipy.stats

import melsm
from melsm.engine.likelihood import random_effect_posterior
from melsm.estimate.ml import value_grad_nodes


def small_data(seed, n_groups=6, sizes=(3, 9)):
    rng = np.random.default_rng(seed)
    n = rng.integers(*sizes, size=n_groups)
    g = np.repeat(np.arange(n_groups), n)
    x = rng.normal(size=g.size)
    w = rng.integers(0, 2, size=n_groups)[g]
    spread = np.exp(0.3 * rng.normal(size=n_groups))[g]
    y = 0.5 + 0.8 * x + rng.normal(size=n_groups)[g] + rng.normal(size=g.size) * spread
    return pd.DataFrame({"y": y, "x": x, "w": w, "g": g})


def mvn_logpdf(y, mean, cov):
    """Multivariate normal log density by a dense Cholesky factorisation."""
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, y - mean)
    return -0.5 * (len(y) * np.log(2 * np.pi) + z @ z) - np.sum(np.log(np.diag(chol)))


def log_double_integral(log_f, x_range=(-6, 6), y_range=(-8, 8)):
    """log ∫∫ exp(log_f(y, x)) dy dx by scipy's dblquad (x outer), shifted by log_f(0, 0)
    against underflow."""
    shift = log_f(0.0, 0.0)
    value, _ = scipy.integrate.dblquad(lambda y, x: np.exp(log_f(y, x) - shift), *x_range, *y_range,
                                       epsabs=1e-13, epsrel=1e-11)
    return np.log(value) + shift


def package_loglik(model, theta, n_quad, eta0=None):
    if eta0 is None:
        eta0 = jnp.zeros((model.model_data.G.shape[0], model.layout.n_agq))  # padded groups included
    value, _, nodes = value_grad_nodes(jnp.asarray(theta), model.model_data, eta0, jnp.asarray(theta),
                                       model.layout, n_quad, nodes_move=False)
    return float(value), nodes


def test_random_intercepts_in_both_functions_2d_brute_force():
    data = small_data(1)
    model = melsm.Model("y ~ x + (1 | g)", within="~ x + (1 | g)", data=data)
    # Σ in internal order (v, u)
    sigma = np.array([[0.30, 0.12], [0.12, 0.60]])
    beta, alpha = np.array([0.4, 0.7]), np.array([-0.2, 0.15])
    theta = model.layout.pack(beta, alpha, [], np.linalg.cholesky(sigma))
    ours, _ = package_loglik(model, theta, 30)
    prior = scipy.stats.multivariate_normal(np.zeros(2), sigma)
    total = 0.0
    for _, grp in data.groupby("g"):
        y, x = grp.y.to_numpy(), grp.x.to_numpy()

        def log_integrand(u, v, y=y, x=x):
            mean = beta[0] + beta[1] * x + u
            sd = np.exp(0.5 * (alpha[0] + alpha[1] * x + v))
            return scipy.stats.norm.logpdf(y, mean, sd).sum() + prior.logpdf([v, u])

        total += log_double_integral(log_integrand)
    assert ours == pytest.approx(total, abs=1e-6)


def test_random_slopes_in_mean_and_scale_intercept_1d_brute_force():
    data = small_data(2, n_groups=7)
    model = melsm.Model("y ~ x + (x | g)", within="~ 1 + (1 | g)", between="~ w", data=data)
    # internal order (v, u0, u1); the between row (u0) has its SD from κ: log σ²_u0 = κ0 + κ1 w
    L = np.linalg.cholesky(np.array([[0.4, 0.15, -0.05], [0.15, 1.0, 0.2], [-0.05, 0.2, 0.3]]))
    beta, alpha, kappa = np.array([0.3, 0.9]), np.array([0.1]), np.array([-0.5, 0.8])
    theta = model.layout.pack(beta, alpha, kappa, L)
    ours, _ = package_loglik(model, theta, 40)
    direction = L.copy()
    direction[1] /= np.linalg.norm(direction[1])
    total = 0.0
    for _, grp in data.groupby("g"):
        y, x, w = grp.y.to_numpy(), grp.x.to_numpy(), grp.w.iloc[0]
        Lj = direction.copy()
        Lj[1] *= np.exp(0.5 * (kappa[0] + kappa[1] * w))
        sigma = Lj @ Lj.T
        s_vv, s_uv, s_uu = sigma[0, 0], sigma[1:, 0], sigma[1:, 1:]
        Z = np.column_stack([np.ones_like(x), x])

        def density(v, y=y, x=x, Z=Z, s_vv=s_vv, s_uv=s_uv, s_uu=s_uu):
            # u | v ~ N(s_uv v / s_vv, s_uu - s_uv s_uvᵀ / s_vv), integrated by scipy's MVN
            m_u = s_uv * v / s_vv
            c_u = s_uu - np.outer(s_uv, s_uv) / s_vv
            cov = Z @ c_u @ Z.T + np.diag(np.full(len(y), np.exp(alpha[0] + v)))
            return np.exp(scipy.stats.multivariate_normal(beta[0] + beta[1] * x + Z @ m_u, cov).logpdf(y)
                          + scipy.stats.norm.logpdf(v, 0, np.sqrt(s_vv)))

        value, _ = scipy.integrate.quad(density, -10, 10, epsabs=1e-300, epsrel=1e-12, limit=200)
        total += np.log(value)
    assert ours == pytest.approx(total, abs=1e-6)


def test_two_scale_effects_2d_brute_force_and_eb_predictions():
    """q_v = 2: a 300 × 300 Gauss–Legendre product rule over (v0, v1) on [-5, 5]², with
    y_j | v a dense multivariate normal (u integrated by Gaussian conditioning)."""
    data = small_data(3, n_groups=4)
    model = melsm.Model("y ~ x + (1 | g)", within="~ x + (x | g)", data=data)
    sigma = np.array([[0.25, 0.05, 0.10], [0.05, 0.16, -0.04], [0.10, -0.04, 0.50]])  # (v0, v1, u)
    beta, alpha = np.array([0.5, 0.8]), np.array([0.0, -0.1])
    theta = model.layout.pack(beta, alpha, [], np.linalg.cholesky(sigma))
    ours, nodes = package_loglik(model, theta, 24)
    mean, _ = random_effect_posterior(jnp.asarray(theta), model.model_data, nodes, model.layout, 24)
    s_vv, s_uv, s_uu = sigma[:2, :2], sigma[2, :2], sigma[2, 2]
    s_vv_inv = np.linalg.inv(s_vv)
    c_u = s_uu - s_uv @ s_vv_inv @ s_uv  # Var(u | v)
    t, w = np.polynomial.legendre.leggauss(300)
    t, w = 5 * t, 5 * w
    v0, v1 = (a.ravel() for a in np.meshgrid(t, t, indexing="ij"))
    weights = np.outer(w, w).ravel()
    v = np.column_stack([v0, v1])
    log_prior = -0.5 * np.einsum("ka,ab,kb->k", v, s_vv_inv, v) - np.log(2 * np.pi) - 0.5 * np.log(np.linalg.det(s_vv))
    total = 0.0
    for j, (_, grp) in enumerate(data.groupby("g")):
        y, x = grp.y.to_numpy(), grp.x.to_numpy()
        m_u = v @ s_vv_inv @ s_uv  # E(u | v), per grid point
        resid = y[None, :] - (beta[0] + beta[1] * x)[None, :] - m_u[:, None]
        cov = c_u + np.zeros((len(v), len(y), len(y)))
        cov[:, np.arange(len(y)), np.arange(len(y))] += np.exp(alpha[0] + alpha[1] * x + v0[:, None] + v1[:, None] * x)
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, resid[..., None])[..., 0]
        logf = (-0.5 * (len(y) * np.log(2 * np.pi) + np.sum(z**2, axis=1))
                - np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1) + log_prior)
        shift = logf.max()
        f = weights * np.exp(logf - shift)
        like = f.sum()
        total += np.log(like) + shift
        # E[u | v, y] by Gaussian conditioning of u on y given v
        gain = np.linalg.solve(cov, np.full((len(v), len(y)), c_u)[..., None])[..., 0]
        u_given_v = m_u + np.sum(gain * resid, axis=1)
        assert float(mean[j, 0]) == pytest.approx((f * v0).sum() / like, abs=1e-6)
        assert float(mean[j, 1]) == pytest.approx((f * v1).sum() / like, abs=1e-6)
        assert float(mean[j, 2]) == pytest.approx((f * u_given_v).sum() / like, abs=1e-6)
    assert ours == pytest.approx(total, abs=1e-6)
