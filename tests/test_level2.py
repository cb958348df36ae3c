"""Level-2 variance functions for any random effect (log σ²_k,j = g_j'κ_k): against
brute-force integrals, reducing to the constant-Σ fit, recovery of a known truth, LR
tests and input errors."""

import warnings

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from test_brute_force import log_double_integral, package_loglik, small_data

import melsm

BOTH = {"mean:Intercept": "~ w", "within:Intercept": "~ w"}


def _fit(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        return model.fit(**kwargs)


def test_functions_of_both_variances_against_a_2d_brute_force():
    """Σ_j = S_j R S_j with log σ²_u0,j and log σ²_v0,j linear in w_j, integrated by dblquad."""
    data = small_data(4)
    model = melsm.Model("y ~ x + (1 | g)", within="~ x + (1 | g)", between=BOTH, data=data)
    layout = model.layout
    assert layout.g_names == ("Intercept", "w", "within:Intercept:Intercept", "within:Intercept:w")
    beta, alpha = np.array([0.4, 0.7]), np.array([-0.2, 0.15])
    kappa = np.array([np.log(0.6), 0.5, np.log(0.3), -0.8])  # u0: (κ0, κ_w); v0: (γ0, γ_w)
    rho = 0.35
    L = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))  # (v, u) directions; lengths from κ
    theta = layout.pack(beta, alpha, kappa, L)
    ours, _ = package_loglik(model, theta, 30)
    total = 0.0
    for _, grp in data.groupby("g"):
        y, x, w = grp.y.to_numpy(), grp.x.to_numpy(), grp.w.iloc[0]
        sd_u, sd_v = np.exp(0.5 * (kappa[0] + kappa[1] * w)), np.exp(0.5 * (kappa[2] + kappa[3] * w))
        prior = scipy.stats.multivariate_normal(np.zeros(2), [[sd_v**2, rho * sd_u * sd_v],
                                                              [rho * sd_u * sd_v, sd_u**2]])

        def log_integrand(u, v, y=y, x=x, prior=prior):
            mean = beta[0] + beta[1] * x + u
            sd = np.exp(0.5 * (alpha[0] + alpha[1] * x + v))
            return scipy.stats.norm.logpdf(y, mean, sd).sum() + prior.logpdf([v, u])

        total += log_double_integral(log_integrand)
    assert ours == pytest.approx(total, abs=1e-6)


@pytest.fixture(scope="module")
def london(tutorial):
    data = tutorial.assign(mixed=(tutorial.schgend == 1).astype(float))
    constant = _fit(melsm.Model("normexam ~ standlrt + (1 | school)", "~ 1 + (1 | school)", data=data))
    function = _fit(melsm.Model("normexam ~ standlrt + (1 | school)", "~ 1 + (1 | school)", data=data,
                                between={"within:Intercept": "~ mixed"}))
    return data, constant, function


def test_reduces_to_the_constant_fit(london):
    """With the covariate's coefficient at 0 the log-likelihood is the constant model's."""
    data, constant, function = london
    layout, small = function.model.layout, constant.model.layout
    beta, alpha, _, _ = small.split(constant.theta)
    L = small.cholesky(constant.theta, xp=np)
    row = layout.row_of("within:Intercept")
    theta = layout.pack(beta, alpha, [np.log(np.sum(L[row] ** 2)), 0.0], L)
    value, _ = package_loglik(function.model, theta, function.n_quad)
    assert value == pytest.approx(constant.loglik, abs=1e-6)
    assert function.loglik >= constant.loglik - 1e-6
    # the fitted function at the constant model's covariates reproduces its Σ
    sigma = function.covariance_matrix({"mixed": 0.0})
    gamma = function.params
    assert sigma.loc["within:Intercept", "within:Intercept"] == pytest.approx(
        np.exp(gamma["between:within:Intercept:Intercept"]))
    assert function.covariance_matrix({"mixed": 1.0}).loc["within:Intercept", "within:Intercept"] == pytest.approx(
        np.exp(gamma["between:within:Intercept:Intercept"] + gamma["between:within:Intercept:mixed"]))


def test_typical_groups(london):
    """The implied SDs for each pattern of the level-2 covariates, in the summary and JSON."""
    _, _, function = london
    typical = function.typical_groups()
    assert list(typical.index) == ["mixed=0", "mixed=1"]
    p = function.params
    for g, label in ((0.0, "mixed=0"), (1.0, "mixed=1")):
        expected = np.exp(0.5 * (p["between:within:Intercept:Intercept"] + g * p["between:within:Intercept:mixed"]))
        assert typical.loc[label, "sd:within:Intercept"] == pytest.approx(expected)
        assert typical.loc[label, "sd:mean:Intercept"] == pytest.approx(p["sd:mean:Intercept"])
    assert "Implied random-effect SDs and correlations for typical groups" in function.summary()
    rows = function.to_dict()["typical_groups"]
    assert [r["group_covariates"] for r in rows] == ["mixed=0", "mixed=1"]


def test_lr_test_of_the_function(london):
    _, constant, function = london
    test = function.lrtest(constant)
    assert test.df == 1 and test.distribution == "χ²(1)"
    assert test.statistic == pytest.approx(2 * (function.loglik - constant.loglik))
    assert "sd:within:Intercept" not in function.names and "between:within:Intercept:mixed" in function.names


def simulate(seed: int, n_groups: int = 300, size: int = 25) -> tuple[pd.DataFrame, dict]:
    """Truth: log σ²_u0 = −1.2 + 0.8 g, log σ²_v0 = −2.0 + 1.2 g, corr(u0, v0) = 0.4."""
    rng = np.random.default_rng(seed)
    truth = {"mean:Intercept": 0.5, "mean:x": 1.0, "within:Intercept": -0.3, "within:x": 0.2,
             "between:Intercept": -1.2, "between:g": 0.8,
             "between:within:Intercept:Intercept": -2.0, "between:within:Intercept:g": 1.2,
             "corr:mean:Intercept,within:Intercept": 0.4}
    g = rng.integers(0, 2, n_groups).astype(float)
    sd_u = np.exp(0.5 * (truth["between:Intercept"] + truth["between:g"] * g))
    sd_v = np.exp(0.5 * (truth["between:within:Intercept:Intercept"] + truth["between:within:Intercept:g"] * g))
    rho = truth["corr:mean:Intercept,within:Intercept"]
    z1, z2 = rng.normal(size=(2, n_groups))
    u, v = sd_u * z1, sd_v * (rho * z1 + np.sqrt(1 - rho**2) * z2)
    group = np.repeat(np.arange(n_groups), size)
    x = rng.normal(size=group.size)
    sd = np.exp(0.5 * (truth["within:Intercept"] + truth["within:x"] * x + v[group]))
    y = truth["mean:Intercept"] + truth["mean:x"] * x + u[group] + sd * rng.normal(size=group.size)
    return pd.DataFrame({"y": y, "x": x, "g": g[group], "school": group}), truth


def test_recovers_a_known_truth():
    data, truth = simulate(11)
    fit = _fit(melsm.Model("y ~ x + (1 | school)", "~ x + (1 | school)", data=data,
                           between={"mean:Intercept": "~ g", "within:Intercept": "~ g"}))
    assert fit.converged and not fit.boundary
    z = (fit.params[list(truth)] - pd.Series(truth)) / fit.bse[list(truth)]
    assert (z.abs() < 3).all(), z


def test_mcmc_with_functions_covers_the_truth():
    data, truth = simulate(12, n_groups=200, size=20)
    model = melsm.Model("y ~ x + (1 | school)", "~ x + (1 | school)", data=data,
                        between={"mean:Intercept": "~ g", "within:Intercept": "~ g"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        post = model.sample(chains=8, warmup=500, draws=500, seed=2)
    table = post.table()
    assert post.info["divergences"] == 0 and (table.r_hat < 1.02).all(), table.r_hat
    for name, value in truth.items():
        assert table.loc[name, "lower"] < value < table.loc[name, "upper"], name
    ml = model.fit()
    gamma = "between:within:Intercept:g"
    assert abs(table.loc[gamma, "estimate"] - ml.params[gamma]) < ml.bse[gamma]


@pytest.mark.parametrize("between, message", [
    ({"within:Intercept": "~ x"}, "between covariate 'x' (function of within:Intercept) varies within group"),
    ({"within:x": "~ g"}, "a between formula for within:x needs x among the random effects of the within formula"),
    ({"scale:Intercept": "~ g"}, "between: 'scale:Intercept' is not a random effect"),
    ({"within:Intercept": "~ g + (1 | school)"}, "cannot have random terms"),
    ({"within:Intercept": "~ nope"}, "unknown column 'nope' in the between formula of within:Intercept"),
    (["~ g"], "between must be a formula, or a dict"),
])
def test_bad_functions_are_named(between, message):
    data, _ = simulate(1, n_groups=10, size=5)
    with pytest.raises(melsm.MelsmInputError, match=None) as caught:
        melsm.Model("y ~ x + (1 | school)", "~ x + (1 | school)", data=data, between=between)
    assert message in str(caught.value)


def test_between_formula_of_a_scale_effect_needs_a_random_scale_part():
    data, _ = simulate(1, n_groups=10, size=5)
    with pytest.raises(melsm.MelsmInputError, match="the within formula has no random part"):
        melsm.Model("y ~ x + (1 | school)", "~ x", data=data, between={"within:Intercept": "~ g"})


def test_padded_groups_do_not_change_the_likelihood():
    """Padding adds empty groups whose between covariates are 0: still exactly 0 each."""
    data, _ = simulate(3, n_groups=37, size=6)
    model = melsm.Model("y ~ x + (1 | school)", "~ 1 + (1 | school)", data=data,
                        between={"within:Intercept": "~ g"})
    assert model.model_data.G.shape[0] > 37
    theta = model.layout.pack([0.5, 1.0], [-0.3], [np.log(0.3), 0.0, np.log(0.1), 1.0],
                              np.linalg.cholesky(np.array([[1.0, 0.3], [0.3, 1.0]])))
    from melsm.engine.rows import model_data

    padded, _ = package_loglik(model, theta, 11)
    model._model_data = model_data(model.design)  # unpadded
    eta0 = jnp.zeros((37, 1))
    from melsm.estimate.ml import value_grad_nodes

    unpadded = float(value_grad_nodes(jnp.asarray(theta), model.model_data, eta0, jnp.asarray(theta), model.layout, 11,
                                      nodes_move=False)[0])
    assert padded == pytest.approx(unpadded, abs=1e-9)


def test_group_quantities_use_the_functions(london):
    """Population averages at covariates 0; each group's variance from its own function."""
    _, _, function = london
    p = function.params
    pop = function.population_quantities()
    s2v = np.exp(p["between:within:Intercept:Intercept"])
    assert pop.loc["variance_mean", "estimate"] == pytest.approx(np.exp(p["within:Intercept"] + s2v / 2))
    groups = function.group_quantities()
    effects = function.random_effects()
    np.testing.assert_allclose(np.log(groups["variance"]), p["within:Intercept"] + effects["within:Intercept"])
    assert len(groups) == 65 and "Level-2 variance functions" in function.summary()


# ---- correlation functions: atanh ρ_j = g_j'δ ------------------------------------------
CORR = "corr:mean:Intercept,within:Intercept"


def test_correlation_function_against_a_2d_brute_force():
    data = small_data(6)
    model = melsm.Model("y ~ x + (1 | g)", within="~ x + (1 | g)", data=data,
                        between={"within:Intercept": "~ w", "corr:within:Intercept,mean:Intercept": "~ w"})
    layout = model.layout
    assert layout.g_names == ("within:Intercept:Intercept", "within:Intercept:w", f"{CORR}:Intercept", f"{CORR}:w")
    assert f"between:{CORR}:w" in layout.reported_names() and CORR not in layout.reported_names()
    beta, alpha = np.array([0.4, 0.7]), np.array([-0.2, 0.15])
    kappa = np.array([np.log(0.3), -0.8, 0.3, 1.1])
    sd_u = 0.7
    theta = layout.pack(beta, alpha, kappa, np.diag([1.0, sd_u]))
    ours, _ = package_loglik(model, theta, 30)
    total = 0.0
    for _, grp in data.groupby("g"):
        y, x, w = grp.y.to_numpy(), grp.x.to_numpy(), grp.w.iloc[0]
        sd_v = np.exp(0.5 * (kappa[0] + kappa[1] * w))
        rho = np.tanh(kappa[2] + kappa[3] * w)
        prior = scipy.stats.multivariate_normal(np.zeros(2), [[sd_v**2, rho * sd_u * sd_v],
                                                              [rho * sd_u * sd_v, sd_u**2]])

        def log_integrand(u, v, y=y, x=x, prior=prior):
            sd = np.exp(0.5 * (alpha[0] + alpha[1] * x + v))
            return scipy.stats.norm.logpdf(y, beta[0] + beta[1] * x + u, sd).sum() + prior.logpdf([v, u])

        total += log_double_integral(log_integrand)
    assert ours == pytest.approx(total, abs=1e-6)


def simulate_correlation(seed: int, n_groups: int = 400, size: int = 25) -> tuple[pd.DataFrame, dict]:
    """Truth: σ²_u0 = 0.4, σ²_v0 = 0.25, atanh ρ_j = −0.3 + 1.2 g_j."""
    rng = np.random.default_rng(seed)
    truth = {"mean:Intercept": 0.5, "mean:x": 1.0, "within:Intercept": -0.3, "sd:mean:Intercept": np.sqrt(0.4),
             "sd:within:Intercept": 0.5, f"between:{CORR}:Intercept": -0.3, f"between:{CORR}:g": 1.2}
    g = rng.integers(0, 2, n_groups).astype(float)
    rho = np.tanh(-0.3 + 1.2 * g)
    z1, z2 = rng.normal(size=(2, n_groups))
    u, v = np.sqrt(0.4) * z1, 0.5 * (rho * z1 + np.sqrt(1 - rho**2) * z2)
    group = np.repeat(np.arange(n_groups), size)
    x = rng.normal(size=group.size)
    y = 0.5 + x + u[group] + np.exp(0.5 * (-0.3 + v[group])) * rng.normal(size=group.size)
    return pd.DataFrame({"y": y, "x": x, "g": g[group], "school": group}), truth


@pytest.fixture(scope="module")
def correlation_fits():
    data, truth = simulate_correlation(21)
    constant = _fit(melsm.Model("y ~ x + (1 | school)", "~ 1 + (1 | school)", data=data))
    function = _fit(melsm.Model("y ~ x + (1 | school)", "~ 1 + (1 | school)", data=data, between={CORR: "~ g"}))
    return data, truth, constant, function


def test_correlation_function_reduces_to_the_constant_fit(correlation_fits):
    _, _, constant, function = correlation_fits
    rho = constant.params["corr:mean:Intercept,within:Intercept"]
    beta, alpha, _, _ = constant.model.layout.split(constant.theta)
    sds = constant.params[["sd:within:Intercept", "sd:mean:Intercept"]].to_numpy()
    theta = function.model.layout.pack(beta, alpha, [np.arctanh(rho), 0.0], np.diag(sds))
    value, _ = package_loglik(function.model, theta, function.n_quad)
    assert value == pytest.approx(constant.loglik, abs=1e-6)
    test = function.lrtest(constant)
    assert test.df == 1 and test.statistic > 10  # the truth has ρ varying with g


def test_correlation_function_recovers_the_truth(correlation_fits):
    _, truth, _, function = correlation_fits
    z = (function.params[list(truth)] - pd.Series(truth)) / function.bse[list(truth)]
    assert (z.abs() < 3).all(), z
    sigma = function.covariance_matrix({"g": 1.0})
    rho = sigma.iloc[0, 1] / np.sqrt(sigma.iloc[0, 0] * sigma.iloc[1, 1])
    p = function.params
    assert rho == pytest.approx(np.tanh(p[f"between:{CORR}:Intercept"] + p[f"between:{CORR}:g"]))


def test_correlation_function_by_mcmc(correlation_fits):
    data, truth, _, function = correlation_fits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        post = function.model.sample(chains=8, warmup=500, draws=500, seed=4, start=function)
    table = post.table()
    assert post.info["divergences"] == 0 and (table.r_hat < 1.02).all(), table.r_hat
    for name, value in truth.items():
        assert table.loc[name, "lower"] < value < table.loc[name, "upper"], name
    delta = f"between:{CORR}:g"
    assert abs(table.loc[delta, "estimate"] - function.params[delta]) < function.bse[delta]
    typical = post.typical_groups()
    assert list(typical.index) == ["g=0", "g=1"]
    rho = np.tanh(post.draws(f"between:{CORR}:Intercept") + post.draws(delta))
    assert typical.loc["g=1", "corr:mean:Intercept,within:Intercept"] == pytest.approx(rho.mean(), rel=1e-6)
    assert typical.loc["g=0", "sd:within:Intercept"] == pytest.approx(post.draws("sd:within:Intercept").mean())


def test_correlation_functions_with_three_effects_reduce_to_the_constant_fit():
    """q = 3 (v0, u0, u1): canonical partial correlations, one a function of g. With its
    covariate coefficient at 0 the log-likelihood is the ordinary correlated model's."""
    data, _ = simulate_correlation(22, n_groups=150, size=20)
    constant = _fit(melsm.Model("y ~ x + (x | school)", "~ 1 + (1 | school)", data=data))
    model = melsm.Model("y ~ x + (x | school)", "~ 1 + (1 | school)", data=data, between={CORR: "~ g"})
    layout = model.layout
    assert [(i, j) for i, j, _, _ in layout.corr_functions] == [(1, 0), (2, 0), (2, 1)]
    assert layout.g_names == (f"{CORR}:Intercept", f"{CORR}:g", "corr:mean:x,within:Intercept:Intercept",
                              "corr:mean:Intercept,mean:x:Intercept")
    L = constant.model.layout.cholesky(constant.theta, xp=np)
    sigma = L @ L.T
    sd = np.sqrt(np.diag(sigma))
    C = np.linalg.cholesky(sigma / np.outer(sd, sd))
    kappa = np.zeros(len(layout.g_names))
    for i, j, a, _ in layout.corr_functions:
        kappa[a] = np.arctanh(C[i, j] / np.sqrt(1 - np.sum(C[i, :j] ** 2)))
    beta, alpha, _, _ = constant.model.layout.split(constant.theta)
    theta = layout.pack(beta, alpha, kappa, np.diag(sd))
    value, _ = package_loglik(model, theta, constant.n_quad)
    assert value == pytest.approx(constant.loglik, abs=1e-6)
    fit = _fit(model)
    assert fit.loglik >= constant.loglik - 1e-6 and fit.lrtest(constant).df == 1
    p = fit.params
    for g in (0.0, 1.0):
        sigma_g = fit.covariance_matrix({"g": g}).to_numpy()
        assert np.all(np.linalg.eigvalsh(sigma_g) > 0)
        rho = sigma_g[0, 2] / np.sqrt(sigma_g[0, 0] * sigma_g[2, 2])  # user order: mean:Intercept, mean:x, within
        assert rho == pytest.approx(np.tanh(p[f"between:{CORR}:Intercept"] + g * p[f"between:{CORR}:g"]))


@pytest.mark.parametrize("mean, within, between, association, message", [
    ("y ~ x + (x | school)", "~ 1 + (1 | school)", {"corr:mean:x,within:x": "~ g"}, "correlated",
     "needs a pair of the model's random effects"),
    ("y ~ x + (1 | school)", "~ 1 + (1 | school)", {CORR: "~ g"}, "none", "not association='none'"),
    ("y ~ x + (1 | school)", "~ 1 + (1 | school)", {"corr:mean:Intercept,mean:Intercept": "~ g"}, "correlated",
     "is not a pair of random effects"),
    ("y ~ x + (1 | school)", "~ 1", {CORR: "~ g"}, "correlated", "the within formula has no random part"),
])
def test_bad_correlation_functions(mean, within, between, association, message):
    data, _ = simulate_correlation(1, n_groups=10, size=5)
    with pytest.raises(melsm.MelsmInputError) as caught:
        melsm.Model(mean, within, data=data, between=between, association=association)
    assert message in str(caught.value)
