"""Frequency weights and offsets, against exact references: a row of weight w is w copied
rows; an offset in the mean is a shift of the response, in the log variance a shift of a
coefficient when it is a multiple of a covariate."""

import numpy as np
import pytest

import melsm
from melsm.errors import MelsmInputError

MEAN, WITHIN = "hamdep ~ week + (1 | id)", "~ week + (1 | id)"


@pytest.fixture(scope="module")
def data():
    frame = melsm.datasets.load("reisby")
    frame["w"] = np.random.default_rng(0).integers(1, 4, len(frame))
    frame["shift"] = 2.0 * frame["week"]
    frame["log_shift"] = 0.1 * frame["week"]
    return frame


def test_frequency_weights_equal_copied_rows(data):
    weighted = melsm.Model(data=data, mean=MEAN, within=WITHIN, weights="w").fit()
    copied = melsm.Model(data=data.loc[data.index.repeat(data["w"])].reset_index(drop=True),
                         mean=MEAN, within=WITHIN).fit()
    assert weighted.loglik == pytest.approx(copied.loglik, abs=1e-8)
    np.testing.assert_allclose(weighted.params, copied.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(weighted.bse, copied.bse, rtol=1e-6)
    assert weighted.bic == pytest.approx(copied.bic, abs=1e-6)  # log n with n = Σw
    assert weighted.nobs == len(data) and copied.nobs == data["w"].sum()


def test_mean_offset_is_a_shift_of_the_response(data):
    offset = melsm.Model(data=data, mean="hamdep ~ week + offset(shift) + (1 | id)", within=WITHIN).fit()
    shifted = melsm.Model(data=data.assign(y=data["hamdep"] - data["shift"]), mean="y ~ week + (1 | id)",
                          within=WITHIN).fit()
    assert offset.loglik == pytest.approx(shifted.loglik, abs=1e-8)
    assert offset.params["mean:week"] == pytest.approx(
        shifted.params["mean:week"], abs=1e-7)
    new = data.iloc[:3]
    np.testing.assert_allclose(offset.predict(new)["mean"],
                               shifted.predict(new)["mean"] + new["shift"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(offset.fitted()["mean"], shifted.fitted()["mean"] + data["shift"], rtol=1e-9)


def test_variance_offset_shifts_the_coefficient(data):
    offset = melsm.Model(data=data, mean=MEAN, within="~ week + offset(log_shift) + (1 | id)").fit()
    plain = melsm.Model(data=data, mean=MEAN, within=WITHIN).fit()
    assert offset.loglik == pytest.approx(plain.loglik, abs=1e-8)
    assert offset.params["within:week"] + 0.1 == pytest.approx(
        plain.params["within:week"], abs=1e-7)
    np.testing.assert_allclose(offset.predict(data.iloc[:4])["variance"], plain.predict(data.iloc[:4])["variance"],
                               rtol=1e-7)
    sims = offset.simulate(200, seed=1)
    assert sims.shape == (len(data), 200)


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": "nope"}, "unknown weights column 'nope'"),
    ({"weights": "endog_neg"}, "must be positive numbers; row 0 has -1"),
    ({"weights": 3}, "weights must be the name of a column"),
    ({"between": "~ offset(endog)"}, "cannot have an offset"),
    ({"mean": "hamdep ~ week + offset(endog + week) + (1 | id)"}, "needs one term"),
    ({"mean": "hamdep ~ week + offset(C(endog)) + (1 | id)"}, "must be one numeric column"),
])
def test_bad_weights_and_offsets_are_one_line_errors(data, kwargs, message):
    frame = data.assign(endog_neg=-1)
    spec = {"mean": MEAN, "within": WITHIN, **kwargs}
    with pytest.raises(MelsmInputError, match=message.replace("(", "\\(").replace(")", "\\)")) as err:
        melsm.Model(data=frame, **spec)
    assert "\n" not in str(err.value)


def test_predictions_need_the_offset_column(data):
    fit = melsm.Model(data=data, mean="hamdep ~ week + offset(shift) + (1 | id)", within=WITHIN).fit()
    with pytest.raises(MelsmInputError, match="lack column 'shift'"):
        fit.predict(data.iloc[:2].drop(columns="shift"))
