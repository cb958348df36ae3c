"""Default priors of the level-2 function coefficients (``level2="implied"``, see
``melsm.estimate.priors``) and the prior-sensitivity note of MCMC fits.

The prior densities are checked against scipy's half-t and against the LKJ prior of the
constant-correlation model; the London example (scale SD by mixed vs single-sex school)
against the ML fit and the old, nearly flat prior.
"""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import melsm
from melsm.estimate.priors import Priors, anchor_patterns, level2_log_prior, prior_scales
from melsm.estimate.sample_layout import SampleLayout, log_prior

MIXED = "between:within:Intercept:mixed"


@pytest.fixture(scope="module")
def london(tutorial):
    return tutorial.assign(mixed=(tutorial.schgend == 1).astype(float))


def _scales(model, priors):
    return {k: jnp.asarray(v) for k, v in prior_scales(model.design, model.layout, priors).items()}


def test_anchor_patterns():
    """A categorical covariate's anchors are its levels; a continuous one's its extremes."""
    levels = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 0, 0]], float)
    np.testing.assert_array_equal(anchor_patterns(levels, ["Intercept", "C(g)[T.2]", "C(g)[T.3]"]),
                                  [[1, 0, 0], [1, 1, 0], [1, 0, 1]])
    continuous = np.array([[1, 2.0, -1.0], [1, 5.0, 3.0], [1, 3.0, 0.0]])
    np.testing.assert_array_equal(anchor_patterns(continuous, ["Intercept", "x", "z"]),
                                  [[1, 2, -1], [1, 5, -1], [1, 2, 3]])
    np.testing.assert_array_equal(anchor_patterns(np.array([[-3.0], [2.0]]), ["x"]), [[3.0]])


@pytest.mark.parametrize("effect, between, sd_scale", [
    ("within:Intercept", {"within:Intercept": "~ mixed"}, lambda y: 1.0),
    ("mean:Intercept", "~ mixed", lambda y: 2.5 * np.std(y)),
])
def test_variance_function_prior_is_half_t_on_each_level_sd(london, effect, between, sd_scale):
    """log p(κ) = Σ over mixed = 0, 1 of log half-t₃(σ; A) + log σ, σ = exp(½ log variance)."""
    model = melsm.Model("normexam ~ standlrt + (1 | school)", "~ 1 + (1 | school)", data=london,
                        between=between)
    priors = Priors()
    scales = _scales(model, priors)
    scale = sd_scale(london.normexam.to_numpy())

    def reference(kappa):
        sd = np.exp(0.5 * np.array([kappa[0], kappa[0] + kappa[1]]))  # mixed = 0, mixed = 1
        return np.sum(scipy.stats.t.logpdf(sd / scale, df=3) + np.log(sd))

    points = [np.array([-2.0, 0.5]), np.array([0.3, -4.0]), np.array([-6.0, 9.0])]
    ours = [float(level2_log_prior(jnp.asarray(k), scales, priors)) for k in points]
    expected = [reference(k) for k in points]
    np.testing.assert_allclose(np.diff(ours), np.diff(expected), rtol=1e-10)
    # the whole prior log p(z) moves with κ as this density does (nothing else sees κ), and
    # under level2="normal" as the old N(centre, (5/s_k)²)
    layout = SampleLayout(model.layout, model.design.n_groups)
    kappa_at = layout.n_theta - layout.n_corr - len(layout.sd_rows) - 2
    spread = np.std(model.design.G[:, 1])
    centre = 0.0 if effect.startswith("within") else np.log(np.var(london.normexam))
    for priors, density in ((Priors(), reference),
                            (Priors(level2="normal"), lambda k: -0.5 * ((k[0] - centre) / 5.0) ** 2
                             - 0.5 * (k[1] * spread / 5.0) ** 2)):
        whole = []
        for kappa in points:
            z = np.zeros(layout.size)
            z[kappa_at:kappa_at + 2] = kappa
            whole.append(float(log_prior(jnp.asarray(z), _scales(model, priors), layout, priors)))
        np.testing.assert_allclose(np.diff(whole), np.diff([density(k) for k in points]), rtol=1e-10)


def test_correlation_function_prior_is_lkj_with_intercepts_only(london):
    """Three correlated effects, every correlation a constant CPC function (intercept only):
    the CPC Beta marginals at the anchors give exactly the LKJ(η) prior that the
    constant-correlation model puts on the same correlations."""
    formulas = ("normexam ~ standlrt + (standlrt | school)", "~ 1 + (1 | school)")
    constant = melsm.Model(*formulas, data=london)
    function = melsm.Model(*formulas, data=london, between={"corr:mean:Intercept,within:Intercept": "~ 1"})
    assert len(function.layout.corr_functions) == 3
    rng = np.random.default_rng(4)
    for lkj in (1.0, 2.0, 4.0):
        priors = Priors(lkj=lkj)
        layout = SampleLayout(constant.layout, constant.design.n_groups)
        scales_constant, scales_function = _scales(constant, priors), _scales(function, priors)
        z = np.zeros(layout.size)
        start = layout.n_theta - layout.n_corr
        values = []
        for _ in range(4):
            y = rng.normal(scale=0.8, size=3)  # (1,0), (2,0), (2,1): the same order as the functions
            z[start:start + 3] = y
            lkj_part = float(log_prior(jnp.asarray(z), scales_constant, layout, priors))
            values.append((lkj_part, float(level2_log_prior(jnp.asarray(y), scales_function, priors))))
        values = np.array(values)
        np.testing.assert_allclose(np.diff(values[:, 0]), np.diff(values[:, 1]), rtol=1e-10, atol=1e-10)


def test_priors_settings():
    assert Priors.resolve({"level2": "normal"}) == Priors(level2="normal")
    assert Priors.resolve("diffuse").level2 == "implied"
    with pytest.raises(melsm.MelsmInputError, match="level2 prior must be"):
        Priors(level2="flat")
    with pytest.raises(melsm.MelsmInputError, match="unknown SD prior"):
        Priors(sd="cauchy")


@pytest.fixture(scope="module")
def london_fits(london):
    """Scale SD by mixed vs single-sex school, by ML and by MCMC under the default and
    under the old nearly flat prior on κ."""
    model = melsm.Model("normexam ~ standlrt + (1 | school)", "~ 1 + (1 | school)", data=london,
                        between={"within:Intercept": "~ mixed"})
    ml = model.fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        fits = {priors: model.sample(chains=8, warmup=300, draws=1000, seed=1, start=ml, progress=False,
                                     priors={"level2": priors}) for priors in ("implied", "normal")}
    return ml, fits


def _mean_median_sd(draws):
    q1, q3 = np.quantile(draws, [0.25, 0.75])
    return draws.mean(), np.median(draws), draws.std(), (q3 - q1) / 1.349


def test_default_prior_keeps_the_tail_in(london_fits):
    ml, fits = london_fits
    post = fits["implied"]
    mean, median, sd, robust_sd = _mean_median_sd(post.draws(MIXED))
    assert abs(mean - median) < 0.5 * sd and abs(mean - median) < 0.5 * robust_sd, (mean, median, sd)
    # the likelihood decides the centre: the median within half an ML SE of the ML estimate
    assert abs(median - ml.params[MIXED]) < 0.5 * ml.bse[MIXED]
    assert post.table().loc[MIXED, "ess_bulk"] >= 400 and post.table().loc[MIXED, "r_hat"] < 1.01
    assert post.draws(MIXED).min() > -12  # the old prior's draws ran to −30 and beyond
    assert post.notes == [] and "Prior sensitivity" not in post.summary()


def test_old_prior_gets_a_sensitivity_note(london_fits):
    _, fits = london_fits
    post = fits["normal"]
    mean, median, _, robust_sd = _mean_median_sd(post.draws(MIXED))
    assert mean < median - 0.5 * robust_sd and post.draws(MIXED).min() < -15
    assert len(post.notes) == 1 and post.notes[0].startswith(f"{MIXED}: posterior mean")
    assert "Prior sensitivity" in post.summary() and post.notes[0] in post.summary()
    assert post.to_dict()["notes"] == post.notes
