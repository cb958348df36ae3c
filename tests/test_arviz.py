"""ArviZ-native results of MCMC fits (``melsm.results.inference_data``, ``prior_draws``).

Short fits of the Riesby model on the data with its rows shuffled, string index labels
and two responses missing, so that the caller's rows are neither the design's sorted
order nor all rows. Checked with numbers: ArviZ's LOO and WAIC equal the fit's own to
1e-10, the log-likelihood group is the marginal likelihood at every draw (against the
package's function at stored draws and the ML fit's maximum), labels and rows are the
data's, replicates are N(μ, σ²) of their draw, and prior draws follow each prior
(Kolmogorov–Smirnov against scipy's distributions).
"""

import pickle
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import melsm
from melsm.demo import LONDON_MODELS
from melsm.estimate.mcmc import draw_random_effects, marginal_group_loglik
from melsm.estimate.ml import default_quadrature
from melsm.estimate.priors import Priors, prior_scales
from melsm.estimate.sample_layout import SampleLayout
from melsm.results.prior_draws import prior_draws

matplotlib.use("Agg")

MEAN, WITHIN = "hamdep ~ week + endog + endweek + (1 | id)", "~ week + endog + (1 | id)"
CHAINS, DRAWS = 4, 300
STATS = ("acceptance_rate", "diverging", "n_steps", "step_size", "lp", "energy")
#: p-value below which a Kolmogorov–Smirnov test rejects (fixed seeds: deterministic)
P_MIN = 1e-3


def sample(data, within=WITHIN, seed=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmDataWarning)  # the two missing responses
        model = melsm.Model(MEAN, within=within, between="~ endog", data=data, association="none")
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)  # short chains
        return model.sample(chains=CHAINS, warmup=200, draws=DRAWS, seed=seed, progress=False)


@pytest.fixture(scope="module")
def data(reisby):
    frame = reisby.sample(frac=1.0, random_state=0)
    frame.index = pd.Index([f"r{k}" for k in range(len(frame))])
    frame["hamdep"] = frame["hamdep"].astype(float)
    frame.loc[frame.index[[3, 10]], "hamdep"] = np.nan
    return frame


@pytest.fixture(scope="module")
def used(data):
    return data.dropna()


@pytest.fixture(scope="module")
def fit(data):
    return sample(data)


@pytest.fixture(scope="module")
def fit_str(data):
    """The same fit with the patients' ids as strings ('p101', ...), and a pickle of it
    taken before anything read its log-likelihood (the app sends fits as pickles)."""
    relabelled = data.assign(id="p" + data["id"].astype(str))
    result = sample(relabelled)
    return result, pickle.dumps(result)


@pytest.fixture(scope="module")
def fit_fixed_scale(data):
    return sample(data, within="~ week + endog")


def test_posterior_has_the_data_labels_and_effects(fit, used):
    idata = fit.idata
    assert "log_likelihood" in idata.groups() and "log_likelihood" not in vars(idata)  # not computed yet
    post = idata.posterior
    labels = np.sort(used["id"].unique())
    np.testing.assert_array_equal(post["group"].values, labels)
    assert post["group"].dtype == np.int64
    assert list(post["effect"].values) == ["mean:Intercept", "within:Intercept"]
    assert post["random_effects"].dims == ("chain", "draw", "group", "effect")
    assert post["random_effects"].shape == (CHAINS, DRAWS, len(labels), 2)
    assert set(post.data_vars) == set(fit.names) | {"random_effects"}
    # the draws are the fit's own array, shared, not copied (10,000 groups: 2.6 GB)
    assert np.shares_memory(post["random_effects"].values, fit.effect_draws)
    # and each is the exact draw of u | η_v, y for its (draw, chain) with key d·C + c
    n_draws, n_chains = fit.theta_draws.shape[:2]
    keys = jax.random.split(jax.random.PRNGKey(fit.info["seed"] + 1), n_draws * n_chains)
    for d, c in ((0, 0), (7, 1), (n_draws - 1, n_chains - 1)):
        b, theta = draw_random_effects(keys[d * n_chains + c], jnp.asarray(fit._positions[d, c]),
                                       fit.model.sampler_data, fit._sample_layout)
        np.testing.assert_allclose(post["random_effects"].values[c, d], np.asarray(b)[:, [1, 0]], rtol=1e-10)
        np.testing.assert_allclose(fit.theta_draws[d, c], np.asarray(theta), rtol=1e-10)
    np.testing.assert_array_equal(post["sd:within:Intercept"].values.ravel(), fit.draws("sd:within:Intercept"))
    for name in STATS:
        assert idata.sample_stats[name].shape == (CHAINS, DRAWS)
    assert "log_likelihood" not in vars(idata)  # reading the posterior computes nothing


def test_string_labels_stay_strings(fit, fit_str):
    result, _ = fit_str
    post = result.idata.posterior
    assert post["group"].values[0] == "p101" and all(isinstance(g, str) for g in post["group"].values)
    # only the labels differ: the same design and seed give the same draws
    np.testing.assert_array_equal(post["random_effects"].values, fit.idata.posterior["random_effects"].values)


def test_observed_and_constant_data_in_the_callers_row_order(fit, used):
    observed, constant = fit.idata.observed_data, fit.idata.constant_data
    assert list(observed["row"].values) == list(used.index)  # caller's order, missing rows left out
    np.testing.assert_array_equal(observed["y"].values, used["hamdep"].to_numpy())
    assert observed.attrs["response"] == "hamdep" and observed.attrs["group_name"] == "id"
    groups = fit.idata.posterior["group"].values[constant["group_index"].values]
    np.testing.assert_array_equal(groups, used["id"].to_numpy())
    np.testing.assert_array_equal(constant["X"].sel(mean_term="endweek").values, used["endweek"])
    np.testing.assert_array_equal(constant["W"].sel(within_term="week").values, used["week"])
    assert constant["Z"].dims == ("row", "effect") and np.all(constant["Z"].values == 1.0)
    by_group = used.groupby("id")["endog"].first()
    np.testing.assert_array_equal(constant["G"].sel(between_coef="endog").values, by_group.loc[labels_of(fit)])


def labels_of(fit):
    return fit.idata.posterior["group"].values


def test_log_likelihood_is_the_marginal_of_each_group_at_every_draw(fit):
    loglik = fit.idata.log_likelihood["y_group"]
    assert loglik.dims == ("chain", "draw", "group") and loglik.shape == (CHAINS, DRAWS, fit.n_groups)
    np.testing.assert_array_equal(loglik["group"].values, labels_of(fit))
    # the package's marginal likelihood (u and v integrated out) at stored draws, directly
    chain, draws = 2, [0, 150, DRAWS - 1]
    direct = marginal_group_loglik(jnp.asarray(fit._positions[draws, chain]), fit.model.sampler_data,
                                   fit._sample_layout, default_quadrature(fit.model.layout))
    np.testing.assert_allclose(loglik.values[chain, draws], np.asarray(direct), rtol=0, atol=1e-9)
    # below the maximum by about p/2 on average (p = 9 here)
    gap = fit.model.fit().loglik - float(loglik.sum("group").mean())
    assert 0 < gap < 15, gap


def test_arviz_loo_and_waic_are_the_fits_own(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours, theirs = fit.loo(), az.loo(fit.idata)
        ours_waic, theirs_waic = fit.waic(), az.waic(fit.idata)
        thinned, thinned_az = fit.loo(draws=400), az.loo(fit.idata.isel(draw=slice(None, None, 3)))
    assert ours.n_samples == CHAINS * DRAWS and ours.n_data_points == fit.n_groups
    for key in ("elpd_loo", "p_loo", "se"):
        assert abs(ours[key] - theirs[key]) < 1e-10, key
        assert abs(thinned[key] - thinned_az[key]) < 1e-10, key
    np.testing.assert_allclose(ours.pareto_k.values, theirs.pareto_k.values, rtol=0, atol=1e-10)
    for key in ("elpd_waic", "p_waic", "se"):
        assert abs(ours_waic[key] - theirs_waic[key]) < 1e-10, key
    assert thinned.n_samples == 400
    # comparison tables: at most MARGINAL_DRAWS (2000) draws, here all 1200
    criteria = fit.information_criteria()
    assert criteria["LOO"] == pytest.approx(-2 * ours.elpd_loo, abs=1e-9)
    assert criteria["WAIC"] == pytest.approx(-2 * ours_waic.elpd_waic, abs=1e-9)
    every_third = fit.idata.log_likelihood["y_group"].isel(draw=slice(None, None, 3))
    assert fit.marginal_dic(400)["D_bar"] == pytest.approx(-2 * float(every_third.sum("group").mean()), abs=1e-9)


def test_az_compare_ranks_the_fits(fit, fit_fixed_scale):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = az.compare({"random scale": fit.idata, "fixed scale": fit_fixed_scale.idata})
        elpd = {"random scale": fit.loo().elpd_loo, "fixed scale": fit_fixed_scale.loo().elpd_loo}
    for name, value in elpd.items():
        assert table.loc[name, "elpd_loo"] == pytest.approx(value, abs=1e-10)
    # Riesby's random scale effect (MIXREGLS): far better out of sample
    assert list(table.index) == ["random scale", "fixed scale"]
    assert table.loc["fixed scale", "elpd_diff"] == pytest.approx(elpd["random scale"] - elpd["fixed scale"])
    assert table.loc["fixed scale", "elpd_diff"] > 10


def test_pickled_fit_computes_its_log_likelihood_when_read(fit_str):
    result, pickled = fit_str
    copy = pickle.loads(pickled)
    assert "log_likelihood" not in vars(copy.idata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # the thinned InferenceData needs only its own draws' log-likelihood
        thinned = copy.thinned_idata(400)
        assert thinned.log_likelihood["y_group"].shape == (CHAINS, DRAWS // 3, copy.n_groups)
        assert thinned.posterior["random_effects"].shape[:2] == (CHAINS, DRAWS // 3)
        assert az.loo(thinned).elpd_loo == pytest.approx(copy.loo(draws=400).elpd_loo, abs=1e-10)
        assert "log_likelihood" not in vars(copy.idata)
        assert az.loo(copy.idata).elpd_loo == pytest.approx(result.loo().elpd_loo, abs=1e-10)
    other = pickle.loads(pickled)
    del other.idata.log_likelihood  # as any group, also before it is computed
    assert "log_likelihood" not in other.idata.groups() and not hasattr(other.idata, "log_likelihood")


def test_netcdf_round_trip_keeps_labels_and_values(fit, fit_str, tmp_path):
    for name, result in (("int", fit), ("str", fit_str[0])):
        path = str(tmp_path / f"{name}.nc")
        result.idata.to_netcdf(path)  # computes the log-likelihood group to write it
        back = az.from_netcdf(path)
        for group in ("posterior", "log_likelihood"):
            np.testing.assert_array_equal(back[group]["group"].values, result.idata[group]["group"].values)
        assert back.posterior["group"].dtype.kind == {"int": "i", "str": "U"}[name]
        np.testing.assert_array_equal(back.observed_data["row"].values, result.idata.observed_data["row"].values)
        np.testing.assert_array_equal(back.log_likelihood["y_group"].values,
                                      result.idata.log_likelihood["y_group"].values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            assert az.loo(back).elpd_loo == pytest.approx(result.loo().elpd_loo, abs=1e-10)
        back.close()


def test_posterior_predictive_replicates_each_draw(fit):
    import matplotlib.pyplot as plt

    idata = fit.ppc(draws=600, seed=1)  # every second draw
    y_rep = idata.posterior_predictive["y"]
    n_rows = idata.observed_data["y"].size
    assert y_rep.dims == ("chain", "draw", "row") and y_rep.shape == (CHAINS, DRAWS // 2, n_rows)
    np.testing.assert_array_equal(y_rep["draw"].values, np.arange(0, DRAWS, 2))
    np.testing.assert_array_equal(y_rep["row"].values, idata.observed_data["row"].values)
    values = y_rep.values.copy()
    np.testing.assert_array_equal(fit.ppc(draws=600, seed=1).posterior_predictive["y"].values, values)
    # standardised by each draw's mean and variance (ParamLayout.predictors): N(0, 1)
    layout, design = fit.model.layout, fit.model.design
    order = np.argsort(design.row_order)
    X, W, Zu, Zv, group = (design.X[order], design.W[order], design.Zu[order], design.Zv[order], design.group[order])
    z = np.empty_like(values)
    for c in range(CHAINS):
        for d in range(DRAWS // 2):
            internal = fit.effect_draws[c, 2 * d][:, [1, 0]]  # (v, u), ParamLayout's order
            mean, log_var = layout.predictors(fit.theta_draws[2 * d, c], X, W, Zu, Zv, internal[group])
            z[c, d] = (values[c, d] - mean) / np.exp(0.5 * log_var)
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / z.size)
    # the observed mean sits within the replicated means
    means = values.mean(axis=-1).ravel()
    assert abs(means.mean() - idata.observed_data["y"].values.mean()) < 2 * means.std()
    ax = az.plot_ppc(idata, num_pp_samples=20, random_seed=0)
    drawn = [line for line in ax.get_lines() if len(line.get_xdata())]  # one more is a legend handle
    assert len(drawn) == 20 + 2  # replicates, observed, their mean
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Posterior predictive", "Observed",
                                                                  "Posterior predictive mean"]
    plt.close("all")


def test_replicates_and_constant_data_carry_offsets_and_weights(fit, data, used):
    """The same draws replicated under a model with offsets in both functions: the mean
    moves by the mean offset, the deviations scale by exp(½ within offset)."""
    from melsm.results.inference_data import data_variables, replicate_response

    mean = MEAN.replace("(1 | id)", "offset(week) + (1 | id)")
    within = WITHIN.replace("(1 | id)", "offset(endog) + (1 | id)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmDataWarning)
        offset = melsm.Model(mean, within=within, between="~ endog", data=data.assign(w=2.0), weights="w",
                             association="none")
    args = (fit.theta_draws[:5], fit.effect_draws[:, :5])
    plain = replicate_response(*args, fit.model.design, fit.model.layout, np.random.default_rng(0))
    moved = replicate_response(*args, offset.design, offset.layout, np.random.default_rng(0))
    y_hat = replicate_response(*args, fit.model.design, fit.model.layout, FixedNoise())
    week, endog = used["week"].to_numpy(), used["endog"].to_numpy()
    np.testing.assert_allclose(moved - week, y_hat + (plain - y_hat) * np.exp(endog / 2), rtol=0, atol=1e-9)
    effects = list(fit.idata.posterior["effect"].values)
    _, constant, _, _ = data_variables(offset.design, offset.layout, effects)
    np.testing.assert_array_equal(constant["offset_mean"], week)
    np.testing.assert_array_equal(constant["offset_within"], endog)
    np.testing.assert_array_equal(constant["weights"], np.full(len(used), 2.0))


class FixedNoise:
    """A generator whose normal deviates are 0: replicate_response gives the means."""

    def standard_normal(self, shape):
        return np.zeros(shape)


def test_arviz_summary_and_plots_out_of_the_box(fit):
    import matplotlib.pyplot as plt

    n_params, n_effects = len(fit.names), 2 * fit.n_groups
    table = az.summary(fit.idata)
    assert len(table) == n_params + n_effects
    assert table.loc["sd:within:Intercept", "mean"] == pytest.approx(fit.params["sd:within:Intercept"],
                                                                     abs=1e-3)
    assert az.plot_trace(fit.idata).shape == (n_params + 1, 2)
    axes = az.plot_forest(fit.idata)
    assert len(axes[0].get_yticklabels()) == n_params + n_effects
    plt.close("all")


def ks(draws, cdf) -> float:
    return stats.kstest(np.ravel(draws), cdf).pvalue


def half_t_cdf(scale, df=3.0):
    return lambda x: 2 * stats.t(df).cdf(np.asarray(x) / scale) - 1


def test_prior_draws_follow_the_priors(fit):
    idata = fit.sample_prior(draws=4000, seed=2)
    prior = idata.prior
    assert prior["mean:week"].shape == (1, 4000)
    assert prior["random_effects"].shape == (1, 4000, fit.n_groups, 2)
    assert idata.prior_predictive["y"].shape == (1, 4000, idata.observed_data["y"].size)
    scales = prior_scales(fit.model.design, fit.model.layout, fit.info["priors"])
    assert ks(prior["mean:week"], stats.norm(scales["beta_loc"][1], scales["beta_scale"][1]).cdf) > P_MIN
    assert ks(prior["within:Intercept"], stats.norm(scales["alpha_loc"][0], scales["alpha_scale"][0]).cdf) > P_MIN
    assert ks(prior["sd:within:Intercept"], half_t_cdf(scales["sd_scale"][0])) > P_MIN
    # σ_u of each endog group (the anchors): half-t₃ with the location SD's scale
    kappa0, kappa1 = prior["between:Intercept"].values, prior["between:endog"].values
    for log_variance in (kappa0, kappa0 + kappa1):
        assert ks(np.exp(log_variance / 2), half_t_cdf(scales["variance_anchor_scale"][0])) > P_MIN
    # the groups' effects given the draw: N(0, σ²), σ_u,j by the group's endog
    effects = prior["random_effects"]
    v = effects.sel(effect="within:Intercept") / prior["sd:within:Intercept"]
    endog = idata.constant_data["G"].sel(between_coef="endog")
    sd_u = np.exp(0.5 * (prior["between:Intercept"] + prior["between:endog"] * endog))
    u = effects.sel(effect="mean:Intercept") / sd_u
    assert ks(v.values, stats.norm.cdf) > P_MIN and ks(u.values, stats.norm.cdf) > P_MIN


def test_prior_correlations_are_lkj(tutorial):
    """LKJ(2) on three correlated effects: each correlation's marginal is
    Beta(η − 1 + d/2, η − 1 + d/2) on (−1, 1); a correlation function's CPC at its
    anchors is Beta(η, η) (one pair)."""
    priors = Priors.default()
    model = melsm.Model(*LONDON_MODELS["Model 4"], data=tutorial)
    layout = SampleLayout.for_model(model.layout, model.design.n_groups, priors)
    _, _, reported = prior_draws(model, layout, priors, 4000, np.random.default_rng(4))
    names = model.layout.reported_names()
    corr = [k for k, name in enumerate(names) if name.startswith("corr:")]
    assert len(corr) == 3
    marginal = stats.beta(priors.lkj - 1 + 1.5, priors.lkj - 1 + 1.5, loc=-1, scale=2)
    for k in corr:
        assert ks(reported[:, k], marginal.cdf) > P_MIN, names[k]
    pair = "corr:mean:Intercept,within:Intercept"
    model = melsm.Model(*LONDON_MODELS["Model 2"], between={pair: "~ schgend"}, data=tutorial)
    layout = SampleLayout.for_model(model.layout, model.design.n_groups, priors)
    theta, _, _ = prior_draws(model, layout, priors, 4000, np.random.default_rng(5))
    px, pw, pg, _ = model.layout.sizes
    anchors = prior_scales(model.design, model.layout, priors)["corr_anchors"]
    cpc = np.tanh(theta[:, px + pw:px + pw + pg] @ anchors.T)
    for m in range(anchors.shape[0]):
        assert ks(cpc[:, m], stats.beta(priors.lkj, priors.lkj, loc=-1, scale=2).cdf) > P_MIN


def test_prior_under_the_quadratic_association_and_improper_priors(reisby):
    model = melsm.Model(MEAN, within=WITHIN, data=reisby, association="quadratic")
    priors = Priors.default()
    layout = SampleLayout.for_model(model.layout, model.design.n_groups, priors)
    theta, b, reported = prior_draws(model, layout, priors, 4000, np.random.default_rng(6))
    names = model.layout.reported_names()
    assert ks(reported[:, names.index("assoc:quadratic")], stats.norm(0, priors.log_variance_scale).cdf) > P_MIN
    u = b[:, :, model.layout.q_v] / reported[:, [names.index("sd:mean:Intercept")]]
    assert ks(u, stats.norm.cdf) > P_MIN
    for bad in (Priors.diffuse(), Priors(sd="uniform")):
        with pytest.raises(melsm.MelsmInputError, match="no prior draws"):
            prior_draws(model, layout, bad, 10, np.random.default_rng(0))
