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
    assert cell == pytest.approx(big.params.loc["corr:mean:poly(x, 2)[1],mean:poly(x, 2)[2]", "estimate"])
    test = big.lrtest(small)
    assert test.df == 5  # two SDs and three correlations added
    assert test.statistic == pytest.approx(2 * (big.loglik - small.loglik))
