"""Predictions for new data and simulation from fitted models (melsm.results.predict), each
checked against an independent computation: the parameters by hand, ``fit.derived``'s
autodiff delta method, closed-form predictive distributions, the posterior draws."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import melsm
from melsm.errors import MelsmDataWarning, MelsmInputError


@pytest.fixture(scope="module")
def reisby():
    return melsm.datasets.load("reisby")


@pytest.fixture(scope="module")
def london():
    return melsm.datasets.load("tutorial")


@pytest.fixture(scope="module")
def location_fit(reisby):
    """Random intercept in the mean, constant level-1 variance: closed-form predictive."""
    return melsm.Model(data=reisby, mean="hamdep ~ week + endog + (1 | id)").fit()


@pytest.fixture(scope="module")
def scale_fit(reisby):
    return melsm.Model(data=reisby, mean="hamdep ~ week + endog + (1 | id)", within="~ week + (1 | id)").fit()


def test_stateful_transforms_use_the_fitted_state(london):
    mean = "normexam ~ center(standlrt) + poly(avslrt, 2) + C(schgend) + (1 | school)"
    fit = melsm.Model(data=london, mean=mean).fit()
    rows = london.iloc[[0, 400, 3000]]
    together = fit.predict(rows, random=False)
    alone = pd.concat([fit.predict(rows.iloc[[k]], random=False) for k in range(3)])
    np.testing.assert_allclose(together.to_numpy(), alone.to_numpy(), rtol=1e-12)
    # by hand: the fitted data's mean of standlrt, and x'β with the fitted columns
    p = fit.params
    centred = rows["standlrt"] - london["standlrt"].mean()
    x_part = fit.model.design.X[np.searchsorted(fit.model.design.row_index, rows.index)]
    np.testing.assert_allclose(x_part[:, 1], centred, rtol=1e-12)
    mean = x_part @ p[[n for n in fit.names if n.startswith("mean:")]].to_numpy()
    np.testing.assert_allclose(together["mean"], mean, rtol=1e-12)


def test_factor_subsets_and_unseen_levels(london):
    fit = melsm.Model(data=london, mean="normexam ~ standlrt + C(schgend) + (1 | school)").fit()
    girls = london[london["schgend"] == 3].iloc[:4]
    got = fit.predict(girls, random=False)["mean"]
    p = fit.params
    expected = p["mean:Intercept"] + p["mean:standlrt"] * girls["standlrt"] + p["mean:C(schgend)[T.3]"]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    odd = girls.assign(schgend=7)
    with pytest.raises(MelsmInputError, match=r"column 'schgend' has level 7, which the fitted data did not have"):
        fit.predict(odd)
    with pytest.raises(MelsmInputError, match="lack column 'standlrt'"):
        fit.predict(girls.drop(columns="standlrt"))
    with pytest.raises(MelsmInputError, match="missing value"):
        fit.predict(girls.assign(standlrt=np.nan))


def test_new_groups_need_a_decision(scale_fit, reisby):
    rows = reisby.iloc[:3].assign(id=99999)
    with pytest.warns(MelsmDataWarning, match="1 groups of 'id' are not in the fit"):
        warned = scale_fit.predict(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silent = scale_fit.predict(rows, allow_new_levels=True)
    with pytest.raises(MelsmInputError, match="allow_new_levels=True"):
        scale_fit.predict(rows, allow_new_levels=False)
    typical = scale_fit.predict(rows, random=False)
    np.testing.assert_allclose(warned.to_numpy(), silent.to_numpy())
    np.testing.assert_allclose(warned.to_numpy(), typical.to_numpy())
    with pytest.raises(MelsmInputError, match="interval must be"):
        scale_fit.predict(rows, interval="credible")
    with pytest.raises(MelsmInputError, match="level must be"):
        scale_fit.predict(rows, interval="confidence", level=95)


def test_confidence_intervals_match_the_autodiff_delta_method(scale_fit, reisby):
    row = reisby.iloc[[5]]
    week, endog = float(row["week"].iloc[0]), float(row["endog"].iloc[0])
    got = scale_fit.predict(row, random=False, interval="confidence", level=0.9).iloc[0]
    import jax.numpy as jnp

    z = scipy.stats.norm.ppf(0.95)
    mean = scale_fit.derived(lambda p: p["mean:Intercept"] + week * p["mean:week"] + endog * p["mean:endog"])
    log_var = scale_fit.derived(lambda p: p["within:Intercept"] + week * p["within:week"])
    se = float(mean["std_error"].iloc[0])
    assert got["mean"] == pytest.approx(float(mean["estimate"].iloc[0]), rel=1e-10)
    assert got["mean_ci_lower"] == pytest.approx(got["mean"] - z * se, rel=1e-8)
    assert got["mean_ci_upper"] == pytest.approx(got["mean"] + z * se, rel=1e-8)
    est, se_log = float(log_var["estimate"].iloc[0]), float(log_var["std_error"].iloc[0])
    assert got["variance"] == pytest.approx(float(jnp.exp(est)), rel=1e-10)
    assert got["variance_ci_lower"] == pytest.approx(np.exp(est - z * se_log), rel=1e-8)
    assert got["variance_ci_upper"] == pytest.approx(np.exp(est + z * se_log), rel=1e-8)
    # a fitted group adds its posterior variance: a wider interval around its own mean
    own = scale_fit.predict(row, interval="confidence", level=0.9).iloc[0]
    effects = scale_fit.random_effects().loc[row["id"].iloc[0]]
    assert own["mean"] == pytest.approx(got["mean"] + effects["mean:Intercept"], rel=1e-10)
    half = (own["mean_ci_upper"] - own["mean_ci_lower"]) / (2 * z)
    assert half == pytest.approx(np.hypot(se, effects["mean:Intercept sd"]), rel=1e-8)


def test_prediction_interval_of_a_new_group_matches_the_closed_form(location_fit, reisby):
    """y = x'β + u + e, u ~ N(0, σ²_u), e ~ N(0, σ²): a normal predictive distribution at θ̂;
    the uncertainty of θ̂ (66 groups) widens it by 1-4% here (without σ_u it would be 25%
    narrower)."""
    rows = reisby.iloc[:4]
    got = location_fit.predict(rows, random=False, interval="prediction", draws=20000, seed=1)
    p = location_fit.params
    sd = np.sqrt(p["sd:mean:Intercept"] ** 2 + np.exp(p["within:Intercept"]))
    z = scipy.stats.norm.ppf(0.975)
    for half in (got["mean"] - got["obs_ci_lower"], got["obs_ci_upper"] - got["mean"]):
        assert ((half / (z * sd) > 0.99) & (half / (z * sd) < 1.06)).all()
    # a fitted group: N(x'β + û_j, C_j + σ²), narrower than a new group's
    own = location_fit.predict(rows, interval="prediction", draws=20000, seed=1)
    effects = location_fit.random_effects().loc[rows["id"]]
    sd_own = np.sqrt(effects["mean:Intercept sd"].to_numpy() ** 2 + np.exp(p["within:Intercept"]))
    np.testing.assert_allclose(own["obs_ci_upper"] - own["obs_ci_lower"], 2 * z * sd_own, rtol=0.03)


def test_simulate_reproduces_the_fitted_moments(location_fit, reisby):
    sims = location_fit.simulate(nsim=3000, seed=2)
    assert sims.shape == (location_fit.n_obs, 3000)
    assert list(sims.columns[:2]) == ["sim_1", "sim_2"]
    p = location_fit.params
    rows = reisby.loc[sims.index]
    mean = p["mean:Intercept"] + p["mean:week"] * rows["week"] + p["mean:endog"] * rows["endog"]
    variance = p["sd:mean:Intercept"] ** 2 + np.exp(p["within:Intercept"])
    z = (sims.mean(axis=1) - mean) / np.sqrt(variance / 3000)
    assert np.abs(z).max() < 4.5  # 375 rows: |z| > 4.5 has probability < 0.003
    assert sims.var(axis=1).mean() == pytest.approx(variance, rel=0.02)
    # rows of one group share its simulated effect: covariance σ²_u
    first = sims.loc[reisby.index[reisby["id"] == reisby["id"].iloc[0]]]
    assert np.cov(first.iloc[0], first.iloc[1])[0, 1] == pytest.approx(p["sd:mean:Intercept"] ** 2, rel=0.1)
    np.testing.assert_array_equal(location_fit.simulate(2, seed=5), location_fit.simulate(2, seed=5))


def test_simulate_under_the_quadratic_association():
    """New groups' v = τ_l θ1 + τ_q θ1² + σ θ2: E exp(v) = exp(σ²/2) (1 − 2τ_q)^(−1/2)
    exp(τ_l² / (2(1 − 2τ_q))), so Var y = σ²_u + exp(α0) E exp(v) in closed form."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(300), 8)
    t1, t2 = rng.normal(size=300), rng.normal(size=300)
    v = 0.3 * t1 - 0.25 * t1**2 + 0.4 * t2
    data = pd.DataFrame({"y": 1 + 0.8 * t1[g] + np.exp(0.5 * (-0.5 + v[g])) * rng.normal(size=g.size), "g": g})
    fit = melsm.Model("y ~ 1 + (1 | g)", within="~ 1 + (1 | g)", data=data, association="quadratic").fit()
    assert fit.converged
    p = fit.params
    sd_v, rho, tau_q = p["sd:within:Intercept"], p["corr:mean:Intercept,within:Intercept"], p["assoc:quadratic"]
    tau_l, sigma2 = rho * sd_v, sd_v**2 * (1 - rho**2)
    scale = np.exp(sigma2 / 2) / np.sqrt(1 - 2 * tau_q) * np.exp(tau_l**2 / (2 * (1 - 2 * tau_q)))
    variance = p["sd:mean:Intercept"] ** 2 + np.exp(p["within:Intercept"]) * scale
    sims = fit.simulate(nsim=2000, seed=4)
    assert sims.var(axis=1).mean() == pytest.approx(variance, rel=0.015)
    # without the quadratic term the variance would be ~10% larger: the test can tell
    linear = p["sd:mean:Intercept"] ** 2 + np.exp(p["within:Intercept"] + sd_v**2 / 2)
    assert abs(linear / variance - 1) > 0.06


@pytest.fixture(scope="module")
def posterior(reisby):
    model = melsm.Model(data=reisby, mean="hamdep ~ week + endog + (1 | id)", within="~ week + (1 | id)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.sample(chains=2, warmup=200, draws=250, seed=3)


def test_mcmc_predictions_are_per_draw_summaries(posterior, reisby):
    rows = reisby.iloc[[0, 7]]
    got = posterior.predict(rows, random=False, interval="prediction", seed=4)
    draws = {n: posterior.draws(n) for n in ("mean:Intercept", "mean:week", "mean:endog",
                                             "within:Intercept", "within:week")}
    for k, (_, row) in enumerate(rows.iterrows()):
        mean = draws["mean:Intercept"] + row["week"] * draws["mean:week"] + row["endog"] * draws["mean:endog"]
        variance = np.exp(draws["within:Intercept"] + row["week"] * draws["within:week"])
        assert got["mean"].iloc[k] == pytest.approx(mean.mean(), rel=1e-10)
        assert got["variance"].iloc[k] == pytest.approx(variance.mean(), rel=1e-10)
        np.testing.assert_allclose(got[["mean_ci_lower", "mean_ci_upper"]].iloc[k],
                                   np.quantile(mean, [0.025, 0.975]), rtol=1e-10)
        assert got["obs_ci_lower"].iloc[k] < np.quantile(mean, 0.025) - 2 * np.sqrt(variance.mean())
    own = posterior.predict(rows)
    b = posterior.random_effects().loc[rows["id"]]
    base = posterior.predict(rows, random=False)
    np.testing.assert_allclose(own["mean"], base["mean"] + b["mean:Intercept"].to_numpy(), rtol=1e-8)
    assert posterior.simulate(4, seed=1).shape == (posterior.n_obs, 4)


def test_mcmc_fits_speak_the_same_vocabulary(posterior):
    names = posterior.names
    draws = np.column_stack([posterior.draws(n) for n in names])
    np.testing.assert_allclose(posterior.bse, draws.std(axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(posterior.conf_int(0.1).to_numpy().T, np.quantile(draws, [0.05, 0.95], axis=0))
    np.testing.assert_allclose(posterior.cov_params().to_numpy(), np.cov(draws, rowvar=False))
    assert posterior.pvalues.isna().all() and np.isnan(posterior.llf)
    assert posterior.tidy().loc["mean:week", "term"] == "week"
    assert "R-hat" in posterior.summary() and len(posterior.summary().tables) == 3
