"""statsmodels', broom.mixed's and lme4's names on every fit, checked against the
parameter table, the covariance of the estimates and closed forms."""

import numpy as np
import pytest
import scipy.stats

import melsm


@pytest.fixture(scope="module")
def fit():
    data = melsm.datasets.load("reisby")
    return melsm.Model(data=data, mean="hamdep ~ week + endog + (1 | id)", within="~ week + (1 | id)").fit()


def test_statsmodels_vocabulary(fit):
    table = fit.table()
    np.testing.assert_array_equal(fit.bse.to_numpy(), table["std_error"].to_numpy())
    np.testing.assert_allclose(fit.bse, np.sqrt(np.diag(fit.cov_params())), rtol=1e-12)
    assert list(fit.cov_params().index) == fit.names
    coefficients = [n for n in fit.names if n.startswith(("mean:", "within:"))]
    np.testing.assert_allclose(fit.tvalues[coefficients], table.loc[coefficients, "estimate"] / fit.bse[coefficients])
    np.testing.assert_allclose(fit.pvalues[coefficients], 2 * scipy.stats.norm.sf(np.abs(fit.tvalues[coefficients])))
    assert np.isnan(fit.pvalues["sd:mean:Intercept"])
    np.testing.assert_allclose(fit.conf_int().to_numpy(), table[["lower", "upper"]].to_numpy(), rtol=1e-12)
    z90 = scipy.stats.norm.ppf(0.95)
    ci = fit.conf_int(alpha=0.1)
    expected = table.loc[coefficients, "estimate"] - z90 * fit.bse[coefficients]
    np.testing.assert_allclose(ci.loc[coefficients, "lower"], expected)
    sd, se = table.loc["sd:mean:Intercept", "estimate"], fit.bse["sd:mean:Intercept"]
    assert ci.loc["sd:mean:Intercept", "upper"] == pytest.approx(sd * np.exp(z90 * se / sd))
    assert fit.llf == fit.loglik and fit.nobs == 375
    with pytest.raises(ValueError, match="alpha"):
        fit.conf_int(alpha=5)


def test_summary_is_text_with_tables_and_html(fit):
    summary = fit.summary()
    assert isinstance(summary, str) and "Log-likelihood" in summary
    assert summary._repr_html_().startswith("<pre>Mixed-effects location scale model")
    parameters, sigma, criteria = summary.tables
    assert list(parameters.index) == fit.names
    sd = fit.params["sd:mean:Intercept"]
    assert sigma.loc["mean:Intercept", "mean:Intercept"] == pytest.approx(sd**2)
    assert criteria.loc["AIC", "value"] == pytest.approx(fit.aic)


def test_tidy_fixef_ranef_varcorr(fit):
    tidy = fit.tidy()
    assert list(tidy.columns) == ["effect", "part", "group", "term", "estimate", "std_error", "statistic",
                                  "p_value", "lower", "upper"]
    assert tidy.loc["mean:week", ["effect", "part", "term"]].tolist() == ["fixed", "mean", "week"]
    row = tidy.loc["sd:within:Intercept", ["effect", "part", "group"]].tolist()
    assert row == ["ran_pars", "sd", "within:Intercept"]
    corr = "corr:mean:Intercept,within:Intercept"
    assert tidy.loc[corr, "group"] == "mean:Intercept,within:Intercept"
    np.testing.assert_allclose(tidy["estimate"], fit.params)
    assert fit.fixef().to_dict() == pytest.approx({t: fit.params[f"mean:{t}"]
                                                   for t in ("Intercept", "week", "endog")})
    assert list(fit.fixef("within").index) == ["Intercept", "week"]
    ranef = fit.ranef()
    assert list(ranef.columns) == ["mean:Intercept", "within:Intercept"] and len(ranef) == 66
    np.testing.assert_array_equal(ranef, fit.random_effects()[["mean:Intercept", "within:Intercept"]])
    vc = fit.varcorr()
    assert vc.loc["mean:Intercept", "sd"] == pytest.approx(fit.params["sd:mean:Intercept"])
    assert vc.loc["within:Intercept", "corr mean:Intercept"] == pytest.approx(fit.params[corr])


def test_summary_survives_pickling(fit):
    import pickle

    summary = fit.summary()
    again = pickle.loads(pickle.dumps(summary))
    assert again == summary and len(again.tables) == 3
    assert again.tables[0].equals(summary.tables[0])
