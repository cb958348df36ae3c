"""Estimates do not depend on units: the response or a covariate rescaled by factors from
1e-8 to 1e8 moves log L by exactly −N log s and every estimate and SE by the known map,
with every fit converged (``melsm.model.scaling``)."""

import warnings

import numpy as np
import pandas as pd
import pytest

import melsm

MODELS = {
    "riesby": ("reisby", dict(mean="hamdep ~ week + endog + endweek + (1 | id)", within="~ week + endog + (1 | id)",
                              between="~ endog", association="none"), "hamdep", "week"),
    "london-model-6": ("tutorial", dict(mean="normexam ~ standlrt + girl + (standlrt | school)",
                                        within="~ standlrt + girl + (standlrt | school)"), "normexam", "standlrt"),
}


def fit(data: pd.DataFrame, formulas: dict) -> melsm.MLResults:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmDataWarning)
        return melsm.Model(data=data, **formulas).fit()


@pytest.fixture(scope="module")
def reference():
    out = {}
    for key, (dataset, formulas, _, _) in MODELS.items():
        data = melsm.datasets.load(dataset)
        out[key] = (data, fit(data, formulas))
    return out


def response_map(name: str, s: float) -> tuple[float, float]:
    """(multiplier, shift) of a reported parameter when y → s·y."""
    if name.startswith(("mean:", "sd:mean:")):
        return s, 0.0
    if name in ("within:Intercept", "between:Intercept"):  # log level-1 variance, log σ²_u
        return 1.0, 2 * np.log(s)
    return 1.0, 0.0


def covariate_map(name: str, covariate: str, c: float) -> tuple[float, float]:
    """(multiplier, shift) of a reported parameter when the covariate x → c·x."""
    kind, _, rest = name.partition(":")
    if kind in ("mean", "within", "between", "sd") and rest.rsplit(":", 1)[-1] == covariate:
        return 1.0 / c, 0.0
    return 1.0, 0.0


def assert_transformed(base: melsm.MLResults, scaled: melsm.MLResults, mapping) -> None:
    assert scaled.converged, scaled.message
    assert list(scaled.names) == list(base.names)
    for name in base.names:
        multiplier, shift = mapping(name)
        b, s = base.table().loc[name], scaled.table().loc[name]
        expected, expected_se = multiplier * b.estimate + shift, abs(multiplier) * b.std_error
        scale = max(abs(expected), expected_se)
        assert abs(s.estimate - expected) <= 1e-6 * scale, (name, s.estimate, expected)
        assert abs(s.std_error - expected_se) <= 1e-6 * expected_se, (name, s.std_error, expected_se)


@pytest.mark.parametrize("factor", [1e-8, 1e-4, 1e4, 1e8])
@pytest.mark.parametrize("key", MODELS)
def test_response_units(reference, key, factor):
    data, base = reference[key]
    _, formulas, response, _ = MODELS[key]
    scaled = fit(data.assign(**{response: data[response] * factor}), formulas)
    assert abs(scaled.loglik + base.n_obs * np.log(factor) - base.loglik) < 1e-6
    assert_transformed(base, scaled, lambda name: response_map(name, factor))


@pytest.mark.parametrize("factor", [1e-6, 1e6])
@pytest.mark.parametrize("key", MODELS)
def test_covariate_units(reference, key, factor):
    data, base = reference[key]
    _, formulas, _, covariate = MODELS[key]
    scaled = fit(data.assign(**{covariate: data[covariate] * factor}), formulas)
    assert abs(scaled.loglik - base.loglik) < 1e-6
    assert_transformed(base, scaled, lambda name: covariate_map(name, covariate, factor))


def test_response_shift_changes_only_the_intercept(reference):
    data, base = reference["london-model-6"]
    shifted = fit(data.assign(normexam=data["normexam"] + 1e6), MODELS["london-model-6"][1])
    assert abs(shifted.loglik - base.loglik) < 1e-6
    assert_transformed(base, shifted, lambda name: (1.0, 1e6 if name == "mean:Intercept" else 0.0))


def test_random_effects_and_fitted_values_follow_the_units(reference):
    data, base = reference["riesby"]
    scaled = fit(data.assign(hamdep=data["hamdep"] * 1e5), MODELS["riesby"][1])
    effects, effects_scaled = base.random_effects(), scaled.random_effects()
    for column in effects:
        factor = 1e5 if column.startswith("mean:") else 1.0
        np.testing.assert_allclose(effects_scaled[column], factor * effects[column], rtol=1e-6,
                                   atol=1e-9 * factor * effects[column].abs().max())
    np.testing.assert_allclose(scaled.fitted()["mean"], 1e5 * base.fitted()["mean"], rtol=1e-8)
    np.testing.assert_allclose(scaled.fitted()["variance"], 1e10 * base.fitted()["variance"], rtol=1e-6)


def test_small_units_print_significant_digits(reference):
    data, _ = reference["riesby"]
    summary = fit(data.assign(hamdep=data["hamdep"] * 1e-8), MODELS["riesby"][1]).summary()
    intercept = next(line for line in summary.splitlines() if line.strip().startswith("Intercept"))
    assert "2.221e-07" in intercept and "7.218e-09" in intercept and "0.0000" not in intercept


@pytest.mark.parametrize("factor", [1e-8, 1e8])
def test_weights_and_offsets_follow_the_units(factor):
    """A mean offset is in the response's units (it scales with y), a level-1 variance offset
    on the log scale does not; log L moves by −(Σ w) log s with frequency weights w."""
    data = melsm.datasets.load("reisby")
    rng = np.random.default_rng(3)
    data = data.assign(w=rng.integers(1, 4, len(data)), shift=rng.normal(0, 2, len(data)),
                       lv=rng.normal(0, 0.3, len(data)))
    formulas = dict(mean="hamdep ~ week + endog + offset(shift) + (1 | id)",
                    within="~ week + offset(lv) + (1 | id)", association="none", weights="w")
    base = fit(data, formulas)
    scaled = fit(data.assign(hamdep=data["hamdep"] * factor, shift=data["shift"] * factor), formulas)
    assert base.converged
    assert abs(scaled.loglik + data["w"].sum() * np.log(factor) - base.loglik) < 1e-6
    assert_transformed(base, scaled, lambda name: response_map(name, factor))
    np.testing.assert_allclose(scaled.fitted()["mean"], factor * base.fitted()["mean"], rtol=1e-7)
    np.testing.assert_allclose(scaled.fitted()["variance"], factor**2 * base.fitted()["variance"], rtol=1e-6)
