"""London Model 6 (Leckie 2014): convergence and quadrature settling; recovery of a known truth."""

import numpy as np
import pandas as pd
import pytest
from conftest import fit

MODEL6 = ("normexam ~ standlrt + girl + (standlrt | school)", "~ standlrt + girl + (standlrt | school)")


@pytest.fixture(scope="module")
def model6_by_points(tutorial):
    return {k: fit(tutorial, *MODEL6, quadrature=k) for k in (5, 7, 9, 11)}


def test_model6_converges_and_settles(model6_by_points):
    ll = {k: f.loglik for k, f in model6_by_points.items()}
    assert all(f.converged and not f.boundary for f in model6_by_points.values())
    assert abs(ll[5] - ll[7]) < 1e-3 and abs(ll[7] - ll[9]) < 1e-4 and abs(ll[9] - ll[11]) < 1e-5
    assert abs(ll[5] - ll[11]) > 10 * abs(ll[7] - ll[11])  # it is really settling, not constant
    # estimates settle too: K=7 (the default for two scale effects) vs K=9
    diff = (model6_by_points[7].params - model6_by_points[9].params).abs()
    assert (diff / model6_by_points[9].bse).max() < 0.01


def test_model6_default_quadrature_and_predictions(tutorial, model6_by_points):
    default = fit(tutorial, *MODEL6)
    assert default.n_quad == 7
    assert default.loglik == pytest.approx(model6_by_points[7].loglik, abs=1e-6)
    assert default.loglik > -4611.80 and default.loglik < -4611.79
    re = default.random_effects()
    assert re.shape == (65, 8)
    assert list(re.columns[:4]) == ["mean:Intercept", "mean:standlrt", "within:Intercept", "within:standlrt"]
    # EB means of random effects average near zero; posterior SDs below prior SDs
    assert abs(re["mean:Intercept"].mean()) < 0.05
    assert (re["within:Intercept sd"] < default.params["sd:within:Intercept"]).all()
    fitted = default.fitted()
    assert fitted.index.equals(tutorial.index)
    again = default.predict(tutorial)
    np.testing.assert_allclose(again.to_numpy(), fitted.to_numpy(), rtol=1e-12)
    population = default.predict(tutorial.assign(school=-1))
    beta = default.params[["mean:Intercept", "mean:standlrt", "mean:girl"]].to_numpy()
    np.testing.assert_allclose(population["mean"], beta[0] + beta[1] * tutorial.standlrt + beta[2] * tutorial.girl)
    z = default.residuals()
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def simulate_model6_like(seed, n_groups=200, n_per=40):
    rng = np.random.default_rng(seed)
    sd = np.array([0.30, 0.12, 0.25, 0.12])  # u0, u1, v0, v1
    corr = np.array([[1.0, 0.5, 0.4, 0.1],
                     [0.5, 1.0, 0.5, 0.0],
                     [0.4, 0.5, 1.0, -0.3],
                     [0.1, 0.0, -0.3, 1.0]])
    b = rng.multivariate_normal(np.zeros(4), corr * np.outer(sd, sd), size=n_groups)
    g = np.repeat(np.arange(n_groups), n_per)
    x = rng.normal(size=g.size)
    girl = rng.integers(0, 2, size=g.size)
    beta, alpha = np.array([0.0, 0.5, 0.2]), np.array([-0.5, -0.05, -0.1])
    mean = beta[0] + beta[1] * x + beta[2] * girl + b[g, 0] + b[g, 1] * x
    log_var = alpha[0] + alpha[1] * x + alpha[2] * girl + b[g, 2] + b[g, 3] * x
    y = mean + rng.normal(size=g.size) * np.exp(0.5 * log_var)
    truth = {"mean:Intercept": 0.0, "mean:x": 0.5, "mean:girl": 0.2,
             "within:Intercept": -0.5, "within:x": -0.05, "within:girl": -0.1,
             "sd:mean:Intercept": 0.30, "sd:mean:x": 0.12, "sd:within:Intercept": 0.25, "sd:within:x": 0.12,
             "corr:mean:Intercept,mean:x": 0.5, "corr:mean:Intercept,within:Intercept": 0.4,
             "corr:mean:Intercept,within:x": 0.1, "corr:mean:x,within:Intercept": 0.5,
             "corr:mean:x,within:x": 0.0, "corr:within:Intercept,within:x": -0.3}
    return pd.DataFrame({"y": y, "x": x, "girl": girl, "g": g}), truth


def test_recovers_model6_like_truth():
    data, truth = simulate_model6_like(2024)
    result = fit(data, "y ~ x + girl + (x | g)", "~ x + girl + (x | g)")
    assert result.converged
    table = result.table()
    assert sorted(table.index) == sorted(truth)
    z = (table.estimate - pd.Series(truth)) / table.std_error
    assert z.abs().max() < 3, z.sort_values()
    # and the 95% CIs are honest about it: truth inside for nearly all
    inside = (table.lower <= pd.Series(truth)) & (pd.Series(truth) <= table.upper)
    assert inside.sum() >= 14
