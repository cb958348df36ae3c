"""The ChEES warm-up's pieces (melsm.estimate.chees) against closed forms and known truth:
pooled moments against NumPy, the cross-validated top eigenvalue against the population
value (spiked and identity covariances, including d far above the window's size, where
the within-sample eigenvalue is noise), the window's memory bound, and a whole warm-up
on a Gaussian with known variances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from melsm.estimate import chees


def test_pooled_moments_equal_numpy_over_all_batches():
    rng = np.random.default_rng(1)
    batches = [rng.normal(loc=3.0, scale=[1.0, 5.0, 0.1], size=(8, 3)) for _ in range(7)]
    moments = chees.Moments(jnp.zeros(()), jnp.zeros(3), jnp.zeros(3))
    for batch in batches:
        moments = chees.pool(moments, jnp.asarray(batch))
    every = np.concatenate(batches)
    assert float(moments.count) == 56
    np.testing.assert_allclose(moments.mean, every.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(chees.diagonal(moments, threshold=10), every.var(axis=0, ddof=1), rtol=1e-10)
    # below the engagement threshold the metric is the identity
    np.testing.assert_array_equal(chees.diagonal(moments, threshold=57), np.ones(3))


def full_window(draws: np.ndarray) -> chees.Window:
    return chees.Window(jnp.asarray(draws), jnp.asarray(draws.shape[0]))


def estimate(draws: np.ndarray, variances: np.ndarray) -> float:
    d = draws.shape[2]
    start = chees.Floor(jnp.ones(()), jnp.ones(d) / np.sqrt(d), jnp.ones(d) / np.sqrt(d))
    return float(chees.refresh(full_window(draws), jnp.asarray(variances), start, 50).lam)


def test_spike_is_recovered_by_the_cross_validated_eigenvalue():
    """Covariance I + 8 uuᵀ (d = 40): the whitened top eigenvalue is 9 (variances 1 + 8u²)."""
    rng = np.random.default_rng(2)
    d, slots, chains = 40, 250, 16
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    cov = np.eye(d) + 8.0 * np.outer(u, u)
    draws = rng.multivariate_normal(np.zeros(d), cov, size=(slots, chains))
    variances = np.diag(cov)
    whitened = cov / np.sqrt(np.outer(variances, variances))
    truth = np.linalg.eigvalsh(whitened)[-1]
    assert estimate(draws, variances) == pytest.approx(truth, rel=0.1)


def test_noise_does_not_inflate_the_estimate_when_d_exceeds_the_draws():
    """Identity covariance, d = 3,000 and 400 draws a half: the top eigenvalue of one half's
    sample covariance is near the Marchenko–Pastur edge (1 + √7.5)² ≈ 14, the truth is 1."""
    rng = np.random.default_rng(3)
    d, slots, chains = 3000, 50, 16
    draws = rng.normal(size=(slots, chains, d))
    half = draws[:, : chains // 2].reshape(-1, d)
    half = half - half.mean(axis=0)
    within = np.linalg.svd(half / np.sqrt(len(half) - 1), compute_uv=False)[0] ** 2
    assert within > 10
    assert estimate(draws, np.ones(d)) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("steps,chains,d", [(250, 16, 1007), (250, 16, 10_007), (500, 4, 200_000), (10, 2, 5)])
def test_window_stays_within_its_memory_bound_and_covers_the_window(steps, chains, d):
    slots, thin = chees.window_slots(steps, chains, d)
    assert (slots - 1) * thin < steps <= slots * thin  # every slot is written once
    assert slots * chains * d * 8 <= max(chees.WINDOW_BYTES, 4 * chains * d * 8)


def test_floor_is_the_larger_of_pi_and_half_pi_root_lambda_once_engaged_within_the_cap():
    def length(adapted, lam, engaged=True, cap=100.0):
        floor = chees.Floor(jnp.asarray(lam), jnp.ones(2), jnp.ones(2))
        return float(chees.floored(jnp.asarray(adapted), floor, jnp.asarray(engaged), jnp.asarray(cap)))

    assert length(1.0, 16.0) == pytest.approx(2 * np.pi)  # π/2 · √16
    assert length(1.0, 1.2) == pytest.approx(np.pi)  # the bulk's half period
    assert length(1.0, 16.0, engaged=False) == 1.0
    assert length(1.0, 16.0, cap=3.0) == 3.0
    assert length(9.0, 16.0) == 9.0


def test_warmup_learns_the_scales_and_the_slow_direction_of_a_gaussian():
    """N(0, Σ) with SDs from 0.1 to 10 and one correlated pair (ρ = 0.9, whitened top
    eigenvalue 1.9): the adapted diagonal metric is Σ's diagonal, λ̂ ≈ 1.9, and the
    sampling kernel with the adapted parameters reproduces Σ's variances."""
    import blackjax

    sds = np.geomspace(0.1, 10.0, 8)
    corr = np.eye(8)
    corr[0, 1] = corr[1, 0] = 0.9
    cov = corr * np.outer(sds, sds)
    precision = jnp.asarray(np.linalg.inv(cov))

    def logdensity(z):
        return -0.5 * z @ precision @ z

    z0 = jnp.asarray(np.random.default_rng(5).normal(size=(16, 8)) * sds)
    states, params, lam = chees.warmup(logdensity, jax.random.PRNGKey(0), z0, 600, 400)
    np.testing.assert_allclose(params["inverse_mass_matrix"], sds**2, rtol=0.25)
    assert float(lam) == pytest.approx(1.9, abs=0.3)
    kernel = blackjax.dynamic_hmc(logdensity, **params)
    step = jax.jit(jax.vmap(kernel.step))

    draws = []
    key = jax.random.PRNGKey(1)
    for _ in range(400):
        key, sub = jax.random.split(key)
        states, _ = step(jax.random.split(sub, 16), states)
        draws.append(states.position)
    draws = np.asarray(draws).reshape(-1, 8)
    np.testing.assert_allclose(draws.var(axis=0), sds**2, rtol=0.15)
    assert np.corrcoef(draws[:, :2].T)[0, 1] == pytest.approx(0.9, abs=0.03)
