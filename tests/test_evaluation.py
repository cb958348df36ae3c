"""Group and population quantities at covariate values that exist (``melsm.model.evaluation``,
``melsm.results.groups``): closed forms from the fit's own estimates, random effects and Σ."""

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm.errors import MelsmInputError
from melsm.model.evaluation import default_values, describe, evaluation_frame, level2_columns

SLOPES = dict(mean="normexam ~ standlrt + girl + (standlrt | school)",
              within="~ standlrt + girl + (standlrt | school)")


@pytest.fixture(scope="module")
def tutorial():
    return melsm.datasets.load("tutorial")


@pytest.fixture(scope="module")
def slopes(tutorial):
    return melsm.Model(data=tutorial, **SLOPES).fit()


def test_defaults_are_values_that_exist(tutorial):
    data = tutorial.assign(age=tutorial["standlrt"] + 15.0)  # cannot be 0: its mean
    model = melsm.Model("normexam ~ age + girl + C(schgend) + avslrt + (1 | school)", data=data)
    design = model.design
    assert default_values(design) == {"age": pytest.approx(data["age"].mean()), "girl": 0.0, "schgend": 1,
                                      "avslrt": 0.0}
    assert sorted(level2_columns(design)) == ["avslrt", "schgend"]
    frame = evaluation_frame(design)  # level-2 columns at each school's own value
    first = data.sort_values("school", kind="stable").groupby("school").first()
    np.testing.assert_array_equal(frame["schgend"], first["schgend"])
    np.testing.assert_allclose(frame["avslrt"], first["avslrt"])
    assert (frame["girl"] == 0).all() and np.allclose(frame["age"], data["age"].mean())
    assert describe(design, per_group=False) == "age = 15; avslrt = 0; girl = 0; schgend = 1"
    assert describe(design).startswith("each school's own avslrt, schgend; age = 15")


def test_quantities_at_named_values_follow_the_closed_form(slopes):
    at = {"standlrt": 1.0, "girl": 1}
    p, sigma = slopes.params, slopes.covariance_matrix().to_numpy()
    names = list(slopes.covariance_matrix().index)
    z_u = np.array([1.0 if n in ("mean:Intercept", "mean:standlrt") else 0.0 for n in names])
    z_v = np.array([1.0 if n in ("within:Intercept", "within:standlrt") else 0.0 for n in names])
    s2u, s2v = z_u @ sigma @ z_u, z_v @ sigma @ z_v
    log_var = p["within:Intercept"] + p["within:standlrt"] + p["within:girl"]
    e = np.exp(log_var + s2v / 2)
    expected = {"between_variance": s2u, "variance_mean": e,
                "variance_variance": np.exp(2 * log_var + s2v) * np.expm1(s2v), "icc": s2u / (s2u + e),
                "mean": p["mean:Intercept"] + p["mean:standlrt"] + p["mean:girl"]}
    got = slopes.population_quantities(at=at)["estimate"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-10), key
    groups, effects = slopes.group_quantities(at=at), slopes.ranef()
    mean = expected["mean"] + effects["mean:Intercept"] + effects["mean:standlrt"]
    variance = np.exp(log_var + effects["within:Intercept"] + effects["within:standlrt"])
    np.testing.assert_allclose(groups["mean"], mean, rtol=1e-10)
    np.testing.assert_allclose(groups["variance"], variance, rtol=1e-10)
    np.testing.assert_allclose(groups["icc"], s2u / (s2u + variance), rtol=1e-10)
    # and by default (every covariate observed at 0): the intercepts alone, as Leckie reports
    default = slopes.population_quantities()["estimate"]
    assert default["mean"] == pytest.approx(p["mean:Intercept"], rel=1e-12)
    assert default["between_variance"] == pytest.approx(p["sd:mean:Intercept"] ** 2, rel=1e-10)


def test_groups_are_compared_with_groups_like_them():
    """Riesby: endog is level-2 (a patient's diagnosis), in the mean, the level-1 variance and
    the location variance; each patient is now evaluated at, and compared with, its own."""
    data = melsm.datasets.load("reisby")
    fit = melsm.Model("hamdep ~ week + endog + endweek + (1 | id)", within="~ week + endog + (1 | id)",
                      between="~ endog", data=data, association="none").fit()
    groups, effects, p = fit.group_quantities(), fit.ranef(), fit.params
    endog = data.groupby("id")["endog"].first().reindex(groups.index).to_numpy()
    np.testing.assert_allclose(groups["mean"], p["mean:Intercept"] + p["mean:endog"] * endog
                               + effects["mean:Intercept"], rtol=1e-10)
    np.testing.assert_allclose(groups["variance"], np.exp(p["within:Intercept"] + p["within:endog"] * endog
                                                          + effects["within:Intercept"]), rtol=1e-10)
    # the ICC compared with the average ICC of patients with the same diagnosis: 1 of 66
    # (against the endog = 0 average it was 12, 11 of them endog = 1)
    assert int(groups["icc differs"].sum()) == 1
    assert int(groups.loc[endog == 1, "icc differs"].sum()) <= 1
    one = fit.population_quantities(at={"endog": 1})["estimate"]
    s2u = np.exp(p["between:Intercept"] + p["between:endog"])
    assert one["between_variance"] == pytest.approx(s2u, rel=1e-10)
    sigma = fit.covariance_matrix(at={"endog": 1})
    assert sigma.loc["mean:Intercept", "mean:Intercept"] == pytest.approx(s2u, rel=1e-10)


@pytest.mark.parametrize("at, message", [
    ({"nonsense": 1}, "at: 'nonsense' is not a covariate of the model"),
    ({"standlrt": [1, 2]}, "at: 'standlrt' must be one value"),
    ({"standlrt": "high"}, "at: 'standlrt' must be a finite number"),
    ({"standlrt": float("nan")}, "at: 'standlrt' must be a finite number"),
    ("standlrt=1", "at must be a dict of covariate values"),
])
def test_bad_values_get_one_line(slopes, at, message):
    with pytest.raises(MelsmInputError, match=message) as error:
        slopes.group_quantities(at=at)
    assert "\n" not in str(error.value)


def test_unseen_level_is_refused(tutorial):
    fit = melsm.Model("normexam ~ standlrt + C(schgend) + (1 | school)", within="~ 1 + (1 | school)",
                      data=tutorial).fit()
    with pytest.raises(MelsmInputError, match=r"at: 'schgend' must be one of its fitted levels \(1, 2, 3\), not 4"):
        fit.population_quantities(at={"schgend": 4})
    boys = fit.population_quantities(at={"schgend": 2})["estimate"]["mean"]
    assert boys == pytest.approx(fit.params["mean:Intercept"] + fit.params["mean:C(schgend)[T.2]"], rel=1e-12)
    assert isinstance(fit.group_quantities(at={"schgend": 3}), pd.DataFrame)
