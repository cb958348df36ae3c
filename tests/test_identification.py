"""Questions the data cannot answer: random effects that cannot be separated from the
level-1 variance are refused, and a correlation at (or within 1e-3 of) ±1 is reported on
the boundary in every model form, with the same wording."""

import warnings

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm.model.params import CORRELATION_BOUNDARY


def single_rows(n_groups=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_groups)
    spread = np.exp(0.25 * rng.normal(size=n_groups))
    y = 1 + 0.5 * x + rng.normal(size=n_groups) * 0.7 + rng.normal(size=n_groups) * spread
    return pd.DataFrame({"y": y, "x": x, "g": np.arange(n_groups), "z": rng.integers(0, 2, size=n_groups)})


@pytest.mark.parametrize("within", ["~ 1 + (1 | g)", "~ 1"])
def test_groups_of_one_row_are_refused(within):
    with pytest.raises(melsm.MelsmInputError) as info:
        melsm.Model("y ~ x + (1 | g)", within=within, data=single_rows())
    message = str(info.value)
    assert "300 rows in 300 groups of 'g' cannot identify 1 random location effect" in message
    assert len(message.splitlines()) == 1


def test_scale_effects_alone_in_groups_of_one_row_are_refused():
    with pytest.raises(melsm.MelsmInputError, match="cannot identify 1 random scale effect"):
        melsm.Model("y ~ x", within="~ 1 + (1 | g)", data=single_rows())


def test_more_random_slopes_than_rows_per_group_are_refused():
    data = single_rows()
    pairs = pd.concat([data, data.assign(x=data["x"] + 1, y=data["y"] + 0.3)])
    with pytest.raises(melsm.MelsmInputError, match=r"600 rows in 300 groups .* 2 random location effects"):
        melsm.Model("y ~ x + (x | g)", data=pairs)
    melsm.Model("y ~ x + (1 | g)", within="~ 1 + (1 | g)", data=pairs)  # one of each: identified


@pytest.fixture(scope="module")
def pairs_near_boundary():
    """Pairs whose random-scale SD is tiny: the location-scale correlation runs to ±1."""
    rng = np.random.default_rng(0)
    n = 300
    x, z = rng.normal(size=n), rng.integers(0, 2, size=n)
    y = 1 + 0.5 * x + rng.normal(size=n) * np.exp(0.25 * rng.normal(size=n)) + rng.normal(size=n) * 0.7
    data = pd.DataFrame({"y": y, "x": x, "g": np.arange(n), "z": z})
    return pd.concat([data, data.assign(y=data["y"] + rng.normal(size=n) * 0.7)])


@pytest.mark.parametrize("between", [None, "~ z"], ids=["constant", "level-2 function"])
def test_a_correlation_at_one_is_on_the_boundary_in_every_form(pairs_near_boundary, between):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = melsm.Model("y ~ x + (1 | g)", within="~ 1 + (1 | g)", between=between,
                          data=pairs_near_boundary).fit()
    name = "corr:mean:Intercept,within:Intercept"
    assert fit.boundary == [name]
    assert fit.boundary_values[name] > 1 - CORRELATION_BOUNDARY
    assert np.isnan(fit.bse[name])
    boundary_warnings = [w for w in caught if issubclass(w.category, melsm.MelsmBoundaryWarning)]
    assert len(boundary_warnings) == 1 and name in str(boundary_warnings[0].message)
    assert f"  {name} = +1 (singular covariance matrix)" in fit.summary()


def test_a_correlation_function_near_one_for_some_group_is_on_the_boundary():
    data = single_rows()
    data = pd.concat([data, data.assign(y=data["y"] + 0.1)])
    model = melsm.Model("y ~ x + (1 | g)", within="~ 1 + (1 | g)",
                        between={"corr:mean:Intercept,within:Intercept": "~ z"}, data=data)
    layout, G = model.layout, model.design.G
    kappa = np.zeros(len(layout.g_names))
    slope = layout.g_names.index("corr:mean:Intercept,within:Intercept:z")
    for delta, expected in ((3.0, False), (4.5, True)):  # tanh 3 = 0.99505, tanh 4.5 = 0.99975
        kappa[slope] = delta
        theta = layout.pack([1.0, 0.5], [-0.5], kappa, np.diag([0.3, 0.8]))
        values = dict(layout.boundary_values(theta, frozenset(), frozenset(), G))
        assert ("corr:mean:Intercept,within:Intercept" in values) is expected
        if expected:
            assert values["corr:mean:Intercept,within:Intercept"] == pytest.approx(np.tanh(4.5))
