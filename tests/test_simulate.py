"""``melsm.simulate``: reproducible draws whose sample moments match the truth, and
fits on simulated data that recover it."""

import warnings

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm.studies.simulate import truth_theta

MODEL = {"mean": "y ~ x + g + (1 | group)", "within": "~ x + g + (1 | group)"}
TRUTH = {"mean:Intercept": 1.0, "mean:x": 0.5, "mean:g": -0.3, "within:Intercept": -0.5, "within:x": 0.4,
         "within:g": 0.2, "sd:mean:Intercept": 0.6, "sd:within:Intercept": 0.4,
         "corr:mean:Intercept,within:Intercept": 0.5}
DESIGN = {"groups": 30, "group_size": 10,
          "covariates": {"x": {"level": 1, "dist": "normal"}, "g": {"level": 2, "dist": "bernoulli", "p": 0.5}}}


def error(*args, **kwargs) -> str:
    with pytest.raises(melsm.MelsmInputError) as info:
        melsm.simulate(*args, **kwargs)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message
    return message


def test_same_seed_same_data_other_seed_other_data():
    a = melsm.simulate(MODEL, TRUTH, DESIGN, seed=7)
    b = melsm.simulate(MODEL, TRUTH, DESIGN, seed=7)
    c = melsm.simulate(MODEL, TRUTH, DESIGN, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["group", "x", "g", "y"]
    assert a.shape == (300, 4)
    assert not np.allclose(a["y"], c["y"])
    # a SeedSequence (what a study uses) is as reproducible as an integer
    s1 = melsm.simulate(MODEL, TRUTH, DESIGN, seed=np.random.SeedSequence([1, 2, 3]))
    s2 = melsm.simulate(MODEL, TRUTH, DESIGN, seed=np.random.SeedSequence([1, 2, 3]))
    pd.testing.assert_frame_equal(s1, s2)


def test_design_group_sizes_and_covariate_levels():
    design = {"groups": 400, "group_size": {"dist": "poisson", "mean": 12, "min": 3},
              "covariates": {"x": {"level": 1, "dist": "normal", "mean": 2.0, "sd": 0.5, "group_sd": 1.0},
                             "g": {"level": 2, "dist": "uniform", "low": -1, "high": 3}}}
    data = melsm.simulate(MODEL, TRUTH, design, seed=1)
    sizes = data.groupby("group").size()
    assert len(sizes) == 400 and sizes.min() >= 3
    assert abs(sizes.mean() - 12) < 4 * np.sqrt(12 / 400)
    assert data.groupby("group")["g"].nunique().max() == 1          # level 2: constant within groups
    assert -1 <= data["g"].min() and data["g"].max() <= 3
    within_sd = data.groupby("group")["x"].std().mean()
    between_sd = data.groupby("group")["x"].mean().std()
    assert abs(data["x"].mean() - 2.0) < 0.15
    assert abs(within_sd - 0.5) < 0.05 and abs(between_sd - 1.0) < 0.12
    normal = {"x": {"level": 1}, "g": {"level": 2}}  # three Bernoulli g could all be equal
    listed = melsm.simulate(MODEL, TRUTH, {"group_size": [2, 5, 9], "covariates": normal}, seed=1)
    assert listed.groupby("group").size().tolist() == [2, 5, 9]
    uniform = melsm.simulate(MODEL, TRUTH, {**DESIGN, "group_size": {"dist": "uniform", "low": 4, "high": 6}}, seed=1)
    assert set(uniform.groupby("group").size()) <= {4, 5, 6}


def test_sample_moments_match_the_truth():
    """20,000 groups: random effects' SDs and correlation, and standardised level-1
    errors ε = (y − x'β − u_j) / exp(½(w'α + v_j)) standard normal and free of x and g."""
    design = {**DESIGN, "groups": 20000, "group_size": 5}
    data, effects = melsm.simulate(MODEL, TRUTH, design, seed=3, effects=True)
    u, v = effects["mean:Intercept"].to_numpy(), effects["within:Intercept"].to_numpy()
    assert list(effects.columns) == ["mean:Intercept", "within:Intercept"]
    assert abs(u.std() - 0.6) < 0.015 and abs(v.std() - 0.4) < 0.01
    assert abs(np.corrcoef(u, v)[0, 1] - 0.5) < 0.02
    j = data["group"].to_numpy() - 1
    mean = 1.0 + 0.5 * data["x"] - 0.3 * data["g"] + u[j]
    log_var = -0.5 + 0.4 * data["x"] + 0.2 * data["g"] + v[j]
    eps = ((data["y"] - mean) / np.exp(0.5 * log_var)).to_numpy()
    assert abs(eps.mean()) < 0.01 and abs(eps.var() - 1) < 0.015
    assert abs(np.corrcoef(eps**2, data["x"])[0, 1]) < 0.01 and abs(np.corrcoef(eps**2, data["g"])[0, 1]) < 0.01
    # the group means of y vary as σ²_u + E(σ²_ij)/n around the fixed part
    resid = (data["y"] - (1.0 + 0.5 * data["x"] - 0.3 * data["g"])).groupby(data["group"]).mean()
    expected = 0.36 + np.mean(np.exp(log_var)) / 5
    assert abs(resid.var() / expected - 1) < 0.04


def test_level2_variance_function_and_zero_sd():
    """between={"within:Intercept": "~ g"}: log Var(v_j) = κ0 + κ1 g_j; an SD of 0 gives
    exactly zero effects."""
    model = {"mean": "y ~ x + (1 | group)", "within": "~ x + (1 | group)", "between": {"within:Intercept": "~ g"}}
    truth = {"mean:Intercept": 0.0, "mean:x": 0.5, "within:Intercept": 0.0, "within:x": 0.0,
             "between:within:Intercept:Intercept": np.log(0.25), "between:within:Intercept:g": np.log(4.0),
             "sd:mean:Intercept": 0.0, "corr:mean:Intercept,within:Intercept": 0.0}
    design = {"groups": 20000, "group_size": 2,
              "covariates": {"x": {"level": 1}, "g": {"level": 2, "dist": "bernoulli"}}}
    data, effects = melsm.simulate(model, truth, design, seed=5, effects=True)
    g = data.groupby("group")["g"].first().to_numpy()
    v = effects["within:Intercept"].to_numpy()
    assert abs(v[g == 0].var() - 0.25) < 0.015 and abs(v[g == 1].var() - 1.0) < 0.06
    assert np.all(effects["mean:Intercept"].to_numpy() == 0)


def test_truth_round_trip_through_the_layout():
    model = melsm.Model(data=melsm.simulate(MODEL, TRUTH, DESIGN, seed=0), **MODEL)
    theta = truth_theta(model.layout, TRUTH)
    reported = np.asarray(model.layout.report(theta))
    np.testing.assert_allclose(reported, [TRUTH[n] for n in model.layout.reported_names()], atol=1e-12)


def test_quadratic_association():
    """v_j = b_v,j + τ_q θ1_j², θ1_j = u_j / σ_u: with sd:within = 0, v_j = τ_q (u_j / σ_u)² exactly."""
    model = {"mean": "y ~ 1 + (1 | group)", "within": "~ 1 + (1 | group)", "association": "quadratic"}
    truth = {"mean:Intercept": 0.0, "within:Intercept": 0.0, "sd:mean:Intercept": 0.5, "sd:within:Intercept": 0.0,
             "corr:mean:Intercept,within:Intercept": 0.0, "assoc:quadratic": 0.3}
    _, effects = melsm.simulate(model, truth, {"groups": 50, "group_size": 3}, seed=2, effects=True)
    np.testing.assert_allclose(effects["within:Intercept"], 0.3 * (effects["mean:Intercept"] / 0.5) ** 2, atol=1e-12)


def test_fit_recovers_the_truth():
    """ML on one large simulated data set: every estimate within 3.5 SE of its truth."""
    data = melsm.simulate(MODEL, TRUTH, {**DESIGN, "groups": 300, "group_size": 20}, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        fit = melsm.Model(data=data, **MODEL).fit()
    z = (fit.params - pd.Series(TRUTH)) / fit.bse
    assert fit.converged
    assert z.abs().max() < 3.5, z


@pytest.mark.parametrize("args, kwargs, expected", [
    ((MODEL, {**TRUTH, "within:h": 0.0}, DESIGN), {}, "unknown parameter 'within:h' in truth"),
    ((MODEL, {k: v for k, v in TRUTH.items() if k != "mean:x"}, DESIGN), {}, "truth lacks 1 of the model's "
     "parameters: mean:x"),
    ((MODEL, {**TRUTH, "sd:mean:Intercept": -1}, DESIGN), {}, "truth 'sd:mean:Intercept' must be ≥ 0"),
    ((MODEL, {**TRUTH, "corr:mean:Intercept,within:Intercept": 1.0}, DESIGN), {}, "strictly between -1 and 1"),
    ((MODEL, {**TRUTH, "mean:x": "big"}, DESIGN), {}, "truth 'mean:x' must be a finite number"),
    ((MODEL, TRUTH, {**DESIGN, "covariates": {"x": {"level": 1}}}), {}, "unknown column 'g' in the mean formula"),
    ((MODEL, TRUTH, {**DESIGN, "covariates": {"x": {"dist": "gamma"}, "g": {}}}), {}, "dist must be one of"),
    ((MODEL, TRUTH, {**DESIGN, "covariates": {"x": {"level": 3}, "g": {}}}), {}, "level must be 1"),
    ((MODEL, TRUTH, {**DESIGN, "covariates": {"x": {"sigma": 1}, "g": {}}}), {}, "unknown parameter 'sigma'"),
    ((MODEL, TRUTH, {**DESIGN, "group_size": 0}), {}, "group_size must be ≥ 1"),
    ((MODEL, TRUTH, {**DESIGN, "group_size": {"dist": "poisson"}}), {}, "group_size poisson needs 'mean'"),
    ((MODEL, TRUTH, {**DESIGN, "groups": 3, "group_size": [1, 2]}), {}, "2 group sizes for 3 groups"),
    ((MODEL, TRUTH, {**DESIGN, "clusters": 3}), {}, "unknown design key 'clusters'"),
    ((MODEL, TRUTH, DESIGN), {"seed": -1}, "seed must be a non-negative integer"),
    (({"mean": "y ~ x + (1 | group)", "weights": "w"}, TRUTH, DESIGN), {}, "unknown model key 'weights'"),
], ids=["unknown-parameter", "missing-parameter", "negative-sd", "corr-1", "text-value", "missing-covariate",
        "bad-dist", "bad-level", "bad-dist-parameter", "size-0", "poisson-mean", "sizes-length", "design-key",
        "seed", "model-key"])
def test_bad_input(args, kwargs, expected):
    assert expected in error(*args, **kwargs)


def test_correlations_must_form_a_positive_definite_matrix():
    model = {"mean": "y ~ 1 + (1 + x | group)", "within": "~ 1 + (1 | group)"}
    truth = {"mean:Intercept": 0, "within:Intercept": 0, "sd:mean:Intercept": 1, "sd:mean:x": 1,
             "sd:within:Intercept": 1, "corr:mean:Intercept,mean:x": 0.9,
             "corr:mean:Intercept,within:Intercept": 0.9, "corr:mean:x,within:Intercept": -0.9}
    assert "positive-definite" in error(model, truth, {**DESIGN, "covariates": {"x": {}}})
