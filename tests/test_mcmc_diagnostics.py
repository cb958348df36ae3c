"""The sampler's per-draw statistics in ``idata.sample_stats``, and the signed
parameterisation of the scale SDs (``melsm.estimate.priors``).

The statistics are checked against values computed here independently: the log
density recomputed at every stored draw, the kinetic energy against its equilibrium
mean d/2, and divergences provoked by a step size far above the adapted one.
"""

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import melsm
from melsm.demo import LONDON_MODELS
from melsm.estimate.mcmc import log_density, sample
from melsm.estimate.priors import Priors, prior_scales
from melsm.estimate.sample_layout import SampleLayout
from melsm.results.mcmc import MCMCResults

matplotlib.use("Agg")

STATS = ("acceptance_rate", "diverging", "n_steps", "step_size", "lp", "energy")


@pytest.fixture(scope="module")
def model2(tutorial):
    return melsm.Model(*LONDON_MODELS["Model 2"], data=tutorial)


@pytest.fixture(scope="module")
def short_fit(model2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        return model2.sample(chains=4, warmup=200, draws=200, seed=5, progress=False)


def test_sample_stats_shapes_and_summaries(short_fit):
    stats, info = short_fit.idata.sample_stats, short_fit.info
    for name in STATS:
        assert stats[name].shape == (4, 200), name
    assert int(stats["diverging"].values.sum()) == info["divergences"]
    assert float(stats["acceptance_rate"].values.mean()) == pytest.approx(info["acceptance"])
    assert int(stats["n_steps"].values.sum()) == info["gradients"]
    step = stats["step_size"].values
    assert step.min() == step.max() == pytest.approx(info["step_size"])  # one adapted step size
    assert stats["n_steps"].values.min() >= 1
    accept = stats["acceptance_rate"].values
    assert np.all((accept >= 0) & (accept <= 1)) and 0.4 < accept.mean() < 0.99


def test_lp_is_the_log_density_at_each_draw(short_fit, model2):
    """lp recomputed from the stored positions with the package's log density."""
    priors = Priors.resolve(None)
    layout = SampleLayout.for_model(model2.layout, model2.design.n_groups, priors)
    scales = {k: jnp.asarray(v) for k, v in prior_scales(model2.design, model2.layout, priors).items()}
    positions = short_fit._positions  # (draws, chains, dim)
    rows = positions[::25].reshape(-1, positions.shape[-1])
    ours = np.asarray(jax.vmap(lambda z: log_density(z, model2.sampler_data, scales, layout, priors))(
        jnp.asarray(rows)))
    recorded = short_fit.idata.sample_stats["lp"].values[:, ::25].T.ravel()  # (draw, chain) order as rows
    np.testing.assert_allclose(recorded, ours, rtol=0, atol=1e-8)


def test_energy_kinetic_part_has_its_equilibrium_mean(short_fit):
    """energy + lp is the kinetic energy ½pᵀM⁻¹p of a momentum ~ N(0, M) at equilibrium:
    mean d/2, SD √(d/2) per draw (d = dimension of z)."""
    stats = short_fit.idata.sample_stats
    kinetic = (stats["energy"] + stats["lp"]).values
    d = short_fit._positions.shape[-1]
    assert kinetic.min() >= 0
    # 800 draws, autocorrelated at most mildly: 5 SEs of an independent mean would be 0.9
    assert abs(kinetic.mean() - d / 2) < 0.1 * d / 2, (kinetic.mean(), d / 2)
    bfmi = az.bfmi(short_fit.idata)
    assert bfmi.shape == (4,) and np.all(bfmi > 0.3), bfmi


def test_arviz_functions_read_the_stats(short_fit):
    import matplotlib.pyplot as plt

    names = ["sd:within:Intercept", "sd:mean:Intercept"]
    table = az.summary(short_fit.idata, var_names=names)
    assert list(table.index) == names
    az.plot_trace(short_fit.idata, var_names=names, divergences="bottom")
    az.plot_energy(short_fit.idata)
    plt.close("all")


def test_huge_step_size_diverges(model2):
    """Thirty times the adapted step size: the leapfrog integrator blows up on most
    trajectories, and every divergence reaches the stats, the count and the verdict."""
    positions, layout, info = sample(model2, chains=4, warmup=100, draws=50, seed=2, progress=False,
                                     step_size_scale=30.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        result = MCMCResults(model2, positions, layout, info)
    diverging = result.idata.sample_stats["diverging"].values
    assert info["divergences"] > 50
    assert int(diverging.sum()) == info["divergences"]
    assert f"{info['divergences']} divergent transitions" in result.problems and not result.converged
    assert result.to_dict()["divergences"] == info["divergences"]


# ---- the signed scale-SD parameterisation -------------------------------------------------
def _flip(sample_layout: SampleLayout, z_signed: np.ndarray) -> tuple[np.ndarray, float]:
    """The log-scale point of the same model: log σ = log|s|, y of each pair (i, j) times
    sign(s_i) sign(s_j), η of each row times its sign; and Σ log|s| (the Jacobian)."""
    layout = sample_layout.layout
    log_layout = SampleLayout(layout, sample_layout.n_groups)
    px, pw, pg, _ = layout.sizes
    start = px + pw + pg
    z = z_signed.copy()
    signs = np.ones(layout.q)
    jacobian = 0.0
    for k in sample_layout.signed_entries:
        s = z_signed[start + k]
        signs[sample_layout.sd_rows[k]] = np.sign(s)
        z[start + k] = np.log(abs(s))
        jacobian += np.log(abs(s))
    k = start + len(sample_layout.sd_rows)
    for block in log_layout.blocks:
        for a, i in enumerate(block):
            for j in block[:a]:
                z[k] *= signs[i] * signs[j]
                k += 1
    eta = z[sample_layout.n_theta:].reshape(sample_layout.n_groups, layout.n_agq)
    eta *= signs[None, :layout.n_agq]
    return z, jacobian


def test_signed_sds_are_the_log_scale_model(tutorial):
    """At points with either sign of the scale SDs, the signed layout gives the same θ,
    random effects and log density (plus the log Jacobian) as the log layout at the
    mapped point."""
    model = melsm.Model(*LONDON_MODELS["Model 6"], data=tutorial)
    priors = Priors.resolve(None)
    signed = SampleLayout.for_model(model.layout, model.design.n_groups, priors)
    plain = SampleLayout(model.layout, model.design.n_groups)
    assert signed.signed_entries == (0, 1) and plain.signed_entries == ()
    scales = {k: jnp.asarray(v) for k, v in prior_scales(model.design, model.layout, priors).items()}
    rng = np.random.default_rng(3)
    px, pw, pg, _ = model.layout.sizes
    from melsm.estimate.mcmc import draw_random_effects

    for signs in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
        z = rng.normal(scale=0.3, size=signed.size)
        z[px + pw + pg:px + pw + pg + 2] = np.array(signs) * rng.uniform(0.1, 0.5, 2)
        z_log, jacobian = _flip(signed, z)
        np.testing.assert_allclose(signed.to_theta(jnp.asarray(z)), plain.to_theta(jnp.asarray(z_log)),
                                   rtol=1e-12, atol=1e-12)
        ours = log_density(jnp.asarray(z), model.sampler_data, scales, signed, priors)
        reference = log_density(jnp.asarray(z_log), model.sampler_data, scales, plain, priors)
        assert float(ours) + jacobian == pytest.approx(float(reference), abs=1e-8)
        key = jax.random.PRNGKey(0)
        b_signed, _ = draw_random_effects(key, jnp.asarray(z), model.sampler_data, signed)
        b_plain, _ = draw_random_effects(key, jnp.asarray(z_log), model.sampler_data, plain)
        np.testing.assert_allclose(b_signed, b_plain, rtol=1e-10, atol=1e-10)


def test_signed_only_where_the_prior_allows_zero(tutorial, model2):
    model = melsm.Model(*LONDON_MODELS["Model 6"], data=tutorial)
    n = model.design.n_groups
    assert SampleLayout.for_model(model.layout, n, Priors.resolve("diffuse")).signed_entries == ()
    assert SampleLayout.for_model(model.layout, n, Priors(sd="half_normal")).signed_entries == (0, 1)
    correlation_function = melsm.Model(*LONDON_MODELS["Model 2"], data=tutorial,
                                       between={"corr:mean:Intercept,within:Intercept": "~ 1"})
    assert SampleLayout.for_model(correlation_function.layout, n, Priors()).signed_entries == ()
    # to_theta ∘ from_theta is the identity on θ for both layouts
    fit = model2.fit()
    eta = np.asarray(fit._opt.nodes.mode)[:n]
    for layout in (SampleLayout.for_model(model2.layout, n, Priors()), SampleLayout(model2.layout, n)):
        np.testing.assert_allclose(layout.to_theta(jnp.asarray(layout.from_theta(fit.theta, eta))), fit.theta,
                                   atol=1e-10)


def test_dic_deviances_against_scipy(short_fit, tutorial):
    """D̄ of the conditional DIC: −2 Σ log N(y; β0 + u_j, exp(α0 + v_j)) per draw, here from
    the reported draws and scipy, averaged over every draw."""
    import scipy.stats

    posterior = short_fit.idata.posterior
    beta0, alpha0 = posterior["mean:Intercept"].values, posterior["within:Intercept"].values  # (chain, draw)
    effects = posterior["random_effects"]  # (chain, draw, group, effect)
    u = effects.sel(effect="mean:Intercept").values
    v = effects.sel(effect="within:Intercept").values
    schools = [str(s) for s in short_fit.model.design.group_labels]
    column = {s: k for k, s in enumerate(schools)}
    rows = np.array([column[str(s)] for s in tutorial.school])
    y = tutorial.normexam.to_numpy()
    deviance = np.empty(beta0.shape)
    for c in range(beta0.shape[0]):
        for d in range(beta0.shape[1]):
            sd = np.exp(0.5 * (alpha0[c, d] + v[c, d, rows]))
            deviance[c, d] = -2 * scipy.stats.norm.logpdf(y, beta0[c, d] + u[c, d, rows], sd).sum()
    assert short_fit.dic["D_bar"] == pytest.approx(deviance.mean(), rel=1e-10)
    sd_hat = np.exp(0.5 * (alpha0.mean() + v.mean(axis=(0, 1))[rows]))
    d_hat = -2 * scipy.stats.norm.logpdf(y, beta0.mean() + u.mean(axis=(0, 1))[rows], sd_hat).sum()
    assert short_fit.dic["D_hat"] == pytest.approx(d_hat, rel=1e-10)
