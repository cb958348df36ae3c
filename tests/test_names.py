"""Structured identifiers (melsm.model.names): names are rendered from records, never
split, so terms containing ':' or ',' (interactions, poly(x, 2)[1]) work everywhere."""

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm.errors import MelsmInputError
from melsm.model.names import Coef, Effect, Pair, ParamName, parse_function, target_name


def test_rendering_of_every_kind():
    u0, v0 = Effect("mean", "Intercept"), Effect("within", "Intercept")
    pair = Pair.of(v0, u0)
    assert pair == Pair(u0, v0)  # one order: by printed name, mean first
    assert str(ParamName("mean", "x:z")) == "mean:x:z"
    assert str(ParamName("sd", v0)) == "sd:within:Intercept"
    assert str(ParamName("corr", pair)) == "corr:mean:Intercept,within:Intercept"
    assert str(ParamName("between", Coef(u0, "endog"))) == "between:endog"
    assert str(ParamName("between", Coef(v0, "endog"))) == "between:within:Intercept:endog"
    assert str(ParamName("between", Coef(pair, "g"))) == "between:corr:mean:Intercept,within:Intercept:g"
    assert str(ParamName("assoc", "quadratic")) == "assoc:quadratic"
    assert [ParamName(k, v0).category for k in ("sd", "corr", "between", "singular")] == ["sd", "corr", "coef", "coef"]
    assert parse_function("corr:within:Intercept, mean:Intercept") == pair
    assert target_name(pair) == "corr:mean:Intercept,within:Intercept"
    assert parse_function("within:poly(x, 2)[1]") == Effect("within", "poly(x, 2)[1]")


@pytest.mark.parametrize("key", ["corr:mean:Intercept", "sd:Intercept", "mean", "corr:mean:a,mean:a"])
def test_bad_between_keys_are_one_line_errors(key):
    with pytest.raises(MelsmInputError) as err:
        parse_function(key)
    assert "\n" not in str(err.value) and "between:" in str(err.value)


def test_layout_ids_match_names_with_level2_functions():
    model = melsm.Model(data=melsm.datasets.load("reisby"), mean="hamdep ~ week + endog + (1 | id)",
                        within="~ week + (1 | id)",
                        between={"mean:Intercept": "~ endog", "within:Intercept": "~ endog",
                                 "corr:mean:Intercept,within:Intercept": "~ endog"})
    ids = model.layout.reported_ids()
    assert [str(i) for i in ids] == model.layout.reported_names()
    assert model.layout.reported_names()[5:] == [
        "between:Intercept", "between:endog", "between:within:Intercept:Intercept", "between:within:Intercept:endog",
        "between:corr:mean:Intercept,within:Intercept:Intercept", "between:corr:mean:Intercept,within:Intercept:endog"]
    functions = [f for f, _, _ in model.layout.g_functions]
    assert functions == [Effect("mean", "Intercept"), Effect("within", "Intercept"),
                         Pair(Effect("mean", "Intercept"), Effect("within", "Intercept"))]


@pytest.fixture(scope="module")
def poly_fits():
    """Random slopes on poly(x, 2): effect names contain ',' and the correlations two of them."""
    rng = np.random.default_rng(3)
    groups, size = 50, 8
    g = np.repeat(np.arange(groups), size)
    x = rng.normal(size=groups * size)
    u = rng.normal(size=(groups, 3)) * [1.0, 0.6, 0.4]
    y = 1 + x + u[g, 0] + u[g, 1] * x + u[g, 2] * (x**2 - 1) + rng.normal(size=groups * size)
    data = pd.DataFrame({"y": y, "x": x, "g": g})
    small = melsm.Model(data=data, mean="y ~ x + (1 | g)").fit()
    big = melsm.Model(data=data, mean="y ~ x + (1 + poly(x, 2) | g)").fit()
    return small, big


def test_terms_with_commas_in_summary_comparison_and_lrtest(poly_fits):
    small, big = poly_fits
    assert "corr:mean:poly(x, 2)[1],mean:poly(x, 2)[2]" in big.names
    assert big.converged
    summary = big.summary()
    assert "corr(mean:poly(x, 2)[1], mean:poly(x, 2)[2])" in summary  # the term's own ', ' kept once
    table = melsm.compare([small, big], names=["intercept", "poly"], scale="sd").table
    labels = [label for _, label in table.index]
    assert "Corr(poly(x, 2)[1], poly(x, 2)[2])" in labels
    cell = table.loc[("Mean function", "Corr(poly(x, 2)[1], poly(x, 2)[2])"), ("poly", "Est.")]
    assert cell == pytest.approx(big.params["corr:mean:poly(x, 2)[1],mean:poly(x, 2)[2]"])
    test = big.lrtest(small)
    assert test.df == 5  # two SDs and three correlations added
    assert test.statistic == pytest.approx(2 * (big.loglik - small.loglik))


def test_double_bar_gives_uncorrelated_effects_matching_the_closed_form():
    """(1 + week || id): independent random intercept and slope, as lme4 expands it.
    The marginal likelihood is closed form, y_j ~ N(X_j β, Z_j D Z_jᵀ + σ² I): maximised
    here with scipy independently of melsm's likelihood."""
    import scipy.optimize
    import scipy.stats

    data = melsm.datasets.load("reisby")
    fit = melsm.Model(data=data, mean="hamdep ~ week + (1 + week || id)").fit()
    assert fit.converged
    assert [n for n in fit.names if n.startswith(("sd:", "corr:"))] == ["sd:mean:Intercept", "sd:mean:week"]
    groups = [g for _, g in data.groupby("id")]

    def minus_loglik(x):
        b0, b1, log_s0, log_s1, log_e = x
        total = 0.0
        for g in groups:
            Z = np.column_stack([np.ones(len(g)), g["week"]])
            cov = Z @ np.diag(np.exp(2 * np.array([log_s0, log_s1]))) @ Z.T + np.exp(2 * log_e) * np.eye(len(g))
            total += scipy.stats.multivariate_normal.logpdf(g["hamdep"], b0 + b1 * g["week"], cov)
        return -total

    best = scipy.optimize.minimize(minus_loglik, [23.0, -2.0, 1.0, 0.0, 1.0], method="Nelder-Mead",
                                   options={"xatol": 1e-7, "fatol": 1e-9, "maxiter": 4000})
    assert fit.loglik == pytest.approx(-best.fun, abs=1e-5)
    p = fit.params
    b0, b1, log_s0, log_s1, log_e = best.x
    assert p["mean:Intercept"] == pytest.approx(b0, abs=1e-3)
    assert p["mean:week"] == pytest.approx(b1, abs=1e-3)
    assert p["sd:mean:Intercept"] == pytest.approx(np.exp(log_s0), rel=1e-3)
    assert p["sd:mean:week"] == pytest.approx(np.exp(log_s1), rel=1e-3)
    assert p["within:Intercept"] == pytest.approx(2 * log_e, abs=1e-3)
    sigma = fit.covariance_matrix()
    assert sigma.loc["mean:Intercept", "mean:week"] == 0.0


def test_double_bar_effects_are_uncorrelated_with_the_scale_effects_too():
    data = melsm.datasets.load("reisby")
    fit = melsm.Model(data=data, mean="hamdep ~ week + (1 + week || id)", within="~ week + (1 | id)").fit()
    assert not [n for n in fit.names if n.startswith("corr:")]
    sigma = fit.covariance_matrix().to_numpy()
    assert np.count_nonzero(sigma - np.diag(np.diag(sigma))) == 0
    with pytest.raises(MelsmInputError, match="need '\\|', not '\\|\\|'"):
        melsm.Model(data=data, mean="hamdep ~ week + (1 || id)", within="~ (1 | id)", association="quadratic")
    with pytest.raises(MelsmInputError, match="'\\|\\|' makes"):
        melsm.Model(data=data, mean="hamdep ~ week + (1 || id)", within="~ (1 | id)",
                    between={"corr:mean:Intercept,within:Intercept": "~ endog"})
