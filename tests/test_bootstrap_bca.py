"""BCa bootstrap intervals and the jackknife over groups (melsm.results.bootstrap_ci,
melsm.results.jackknife): the ends against a hand computation, the reduction to the
percentile and BC intervals, the leave-one-group-out refits against fits to the data
without that group, failed jackknife refits, and refused options."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import melsm
from melsm.results import bootstrap_ci as ci_module
from melsm.results.jackknife import without_group

GROUPS, ROWS = 12, 5


def data(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(GROUPS), ROWS)
    x = rng.standard_normal(GROUPS * ROWS)
    y = 1 + 0.5 * x + 0.7 * rng.standard_normal(GROUPS)[g] + rng.standard_normal(GROUPS * ROWS)
    return pd.DataFrame({"y": y, "x": x, "g": np.array([f"s{k:02d}" for k in range(GROUPS)])[g]})


@pytest.fixture(scope="module")
def fit():
    return melsm.Model(mean="y ~ x + (1 | g)", data=data()).fit()


@pytest.fixture(scope="module")
def jack(fit):
    return fit.jackknife(progress=False)


def skewed_replicates(fit, n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A made-up replicate table: skewed draws around the estimates, all converged."""
    rng = np.random.default_rng(seed)
    est = fit.table()["estimate"].to_numpy()
    values = est + 0.1 * (rng.gamma(3.0, size=(n, len(est))) - 2.7)
    return pd.DataFrame(values, columns=fit.names).assign(converged=True)


def hand_bca(values, estimate, jack_values, level):
    below = sum(1.0 for v in values if v < estimate) + 0.5 * sum(1.0 for v in values if v == estimate)
    z0 = scipy.stats.norm.ppf(below / len(values))
    mean = sum(jack_values) / len(jack_values)
    a = sum((mean - t) ** 3 for t in jack_values) / (6 * sum((mean - t) ** 2 for t in jack_values) ** 1.5)
    z = scipy.stats.norm.ppf((1 + level) / 2)
    ends = [scipy.stats.norm.cdf(z0 + (z0 + q) / (1 - a * (z0 + q))) for q in (-z, z)]
    return np.quantile(values, ends)


def quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmFitWarning)
        return call()


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bca_ends_equal_a_hand_computation(fit, level):
    reps = skewed_replicates(fit)
    rng = np.random.default_rng(1)
    jack = pd.DataFrame(fit.table()["estimate"].to_numpy() + 0.05 * rng.exponential(size=(GROUPS, len(fit.names))),
                        columns=fit.names).assign(converged=True)
    table = quiet(lambda: fit.conf_int(1 - level, method="bootstrap", replicates=reps, kind="bca", jackknife=jack))
    for k, name in enumerate(fit.names):
        expected = hand_bca(list(reps[name]), fit.table()["estimate"].iloc[k], list(jack[name]), level)
        np.testing.assert_allclose(table.loc[name].to_numpy(), expected, rtol=0, atol=1e-12)
        assert abs(ci_module.acceleration(jack[name])) > 0.02  # skewed: the acceleration matters


def test_no_acceleration_and_no_bias_is_the_percentile_interval(fit):
    """z₀ = 0 (half the replicates on each side of θ̂) and a = 0 (symmetric jackknife
    values) give the percentile interval; a = 0 alone gives BC."""
    est = fit.table()["estimate"].to_numpy()
    steps = np.random.default_rng(2).exponential(size=(100, len(est)))
    reps = pd.DataFrame(np.vstack([est + steps, est - 2 * steps]), columns=fit.names).assign(converged=True)
    symmetric = pd.DataFrame(np.vstack([est + steps[:6], est - steps[:6]]), columns=fit.names).assign(converged=True)
    assert np.allclose([ci_module.acceleration(symmetric[n]) for n in fit.names], 0, atol=1e-15)
    bca = quiet(lambda: fit.conf_int(method="bootstrap", replicates=reps, kind="bca", jackknife=symmetric))
    percentile = quiet(lambda: fit.conf_int(method="bootstrap", replicates=reps, kind="percentile"))
    np.testing.assert_allclose(bca.to_numpy(), percentile.to_numpy(), rtol=0, atol=1e-12)
    skewed, constant = skewed_replicates(fit), symmetric.assign(**{n: est[k] for k, n in enumerate(fit.names)})
    assert [ci_module.acceleration(constant[n]) for n in fit.names] == [0.0] * len(fit.names)
    bca = quiet(lambda: fit.conf_int(method="bootstrap", replicates=skewed, kind="bca", jackknife=constant))
    bc = quiet(lambda: fit.conf_int(method="bootstrap", replicates=skewed, kind="bc"))
    np.testing.assert_allclose(bca.to_numpy(), bc.to_numpy(), rtol=0, atol=1e-12)


def test_an_end_beyond_the_accelerations_reach_is_the_extreme_replicate():
    values = np.linspace(-1, 1, 101)
    low, high = ci_module.bca_ends(values, 0.0, 0.6, 0.95)  # 1 − a(z₀ + z) < 0: the upper end is the largest
    assert high == 1.0 and -1 < low < 0
    assert np.isnan(ci_module.bca_ends(values, 2.0, 0.1, 0.95)).all()  # every replicate below θ̂
    assert np.isnan(ci_module.bca_ends(values, 0.0, np.nan, 0.95)).all()


def test_jackknife_refits_equal_fits_to_the_data_without_each_group(fit, jack):
    frame = data()
    labels = sorted(frame["g"].unique())
    assert list(jack.index) == labels and jack.index.name == "group"
    assert jack["converged"].all() and (jack["error"] == "").all()
    for label in (labels[0], labels[5], labels[-1]):
        alone = melsm.Model(mean="y ~ x + (1 | g)", data=frame[frame["g"] != label]).fit()
        np.testing.assert_allclose(jack.loc[label, fit.names].to_numpy(dtype=float),
                                   alone.table()["estimate"].to_numpy(), atol=2e-4)
    smaller = without_group(fit.model, 5).design
    assert smaller.n_groups == GROUPS - 1 and smaller.n_obs == (GROUPS - 1) * ROWS
    assert list(np.unique(smaller.group)) == list(range(GROUPS - 1)) and labels[5] not in smaller.group_labels


def test_jackknife_is_reused_and_made_when_not_given(fit, jack):
    reps = skewed_replicates(fit)
    given = quiet(lambda: fit.conf_int(method="bootstrap", replicates=reps, kind="bca", jackknife=jack))
    made = quiet(lambda: fit.conf_int(method="bootstrap", replicates=reps, kind="bca", scheduler="synchronous",
                                      progress=False))
    pd.testing.assert_frame_equal(given, made)


def test_failed_jackknife_refits_are_left_out_or_void_the_intervals(fit, jack):
    reps = skewed_replicates(fit)
    one = jack.assign(converged=[False] + [True] * (GROUPS - 1))
    with pytest.warns(melsm.MelsmFitWarning, match="1 of 12 jackknife refits did not converge and are left out"):
        fit.conf_int(method="bootstrap", replicates=reps, kind="bca", jackknife=one)
    two = jack.assign(converged=[False, False] + [True] * (GROUPS - 2))
    with pytest.warns(melsm.MelsmFitWarning, match="2 of 12 jackknife refits did not converge, more than 10%"):
        table = fit.conf_int(method="bootstrap", replicates=reps, kind="bca", jackknife=two)
    assert table.isna().all().all()


@pytest.mark.parametrize("options, message", [
    ({"kind": "bc", "jackknife": "J"}, "jackknife= is for kind='bca', not 'bc'"),
    ({"kind": "bca", "jackknife": "J"}, "jackknife must be this fit's fit.jackknife() table"),
    ({"kind": "bca", "n_boot": 10}, "give either replicates= and jackknife= or the options to make them (n_boot)"),
    ({"kind": "bca", "jackknife": "ok", "scheduler": "synchronous"}, "give either replicates= and jackknife="),
    ({"kind": "bca", "scheduler": "threads"}, "scheduler must be 'synchronous', 'processes' or the address"),
    ({"kind": "bca", "workers": 2}, "workers= is for scheduler='processes'"),
])
def test_bad_bca_options_are_refused_in_one_line(fit, jack, options, message):
    options = {**options, **({"jackknife": jack} if options.get("jackknife") == "ok" else {})}
    with pytest.raises(melsm.MelsmInputError) as err:
        fit.conf_int(method="bootstrap", replicates=skewed_replicates(fit), **options)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(melsm.MelsmInputError, match="no group 12 to leave out"):
        without_group(fit.model, GROUPS)
