"""Profile-likelihood intervals, ``fit.conf_int(method="profile")`` (melsm.results.profile,
melsm.estimate.profile; docs/architecture.md, 'Profile-likelihood intervals').

- The reparameterisations θ(φ, c) hit the constraint exactly in every model form.
- Against lme4's ``confint(method = "profile")`` (tests/reference/lme4_profile.R, .json):
  measured agreement with lme4's default profile is within 1.3e-4 relative (its spline
  interpolation between profile points; largest: the upper end of London's random-slope
  SD), and within 1.8e-5 relative of the same profile computed on an 8 times finer grid.
  Tolerances: 5e-4 and 1e-4 relative.
- Each end satisfies 2(ℓ̂ − pl(c)) = χ²₁(0.95), pl(c) re-evaluated independently (SLSQP
  with the constraint g(θ) = c from θ̂): to 1e-6.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats
from conftest import fit, reference

import melsm
from melsm.estimate.constraint import reparam
from melsm.estimate.convergence import identified
from melsm.estimate.objective import FIXED_NODES_FROM, Objective

CHI2 = float(scipy.stats.chi2.ppf(0.95, 1))
LME4 = reference("lme4_profile.json")["fits"]


# ---- the reparameterisations ------------------------------------------------------------------

LAYOUTS = {
    "london_model6": ("tutorial", dict(mean="normexam ~ standlrt + girl + (standlrt | school)",
                                       within="~ standlrt + girl + (standlrt | school)")),
    "reisby_none_between": ("reisby", dict(mean="hamdep ~ week + endog + (week | id)",
                                           within="~ week + (1 | id)", between="~ endog", association="none")),
    "reisby_slope_function": ("reisby", dict(mean="hamdep ~ week + (week | id)", within="~ week + (1 | id)",
                                             between={"mean:week": "~ endog"})),
    "reisby_quadratic": ("reisby", dict(mean="hamdep ~ week + (1 | id)", within="~ week + (1 | id)",
                                        association="quadratic")),
    "reisby_uncorrelated": ("reisby", dict(mean="hamdep ~ week + (week || id)", within="~ week + (week | id)")),
    "reisby_corr_function": ("reisby", dict(mean="hamdep ~ week + (1 | id)", within="~ 1 + (1 | id)",
                                            between={"corr:mean:Intercept,within:Intercept": "~ endog"})),
}


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_reparameterisation_is_exact(key, reisby, tutorial):
    """θ(φ(θ), g(θ)) = θ, and g(θ(φ, c)) = c for any φ and c: the constrained maximisation
    runs over exactly {θ : g(θ) = c}."""
    data, formulas = LAYOUTS[key]
    layout = melsm.Model(data={"reisby": reisby, "tutorial": tutorial}[data], **formulas).layout
    rng = np.random.default_rng(1)
    theta = 0.4 * rng.standard_normal(layout.n_params)
    reported = np.asarray(layout.report(jnp.asarray(theta)))
    for k, pid in enumerate(layout.reported_ids()):
        rep = reparam(layout, k)
        phi = rep.phi(theta)
        assert len(phi) == rep.dim == layout.n_params - 1, pid
        np.testing.assert_allclose(rep.theta(jnp.asarray(phi), reported[k], theta), theta, atol=1e-12, err_msg=str(pid))
        c = reported[k] * 1.3 if rep.kind == "sd" else (
            np.tanh(np.arctanh(reported[k]) + 0.3) if rep.kind == "corr" else reported[k] + 0.3)
        moved = rep.theta(jnp.asarray(phi + 0.2 * rng.standard_normal(len(phi))), c, theta)
        assert float(layout.report(moved)[k]) == pytest.approx(c, rel=1e-12, abs=1e-12), pid


# ---- an independent route to pl(c) --------------------------------------------------------------

def independent_profile(result, name: str, c: float) -> float:
    """pl(c) in the user's units by another route than melsm's: SLSQP over the identified
    internal θ with the equality constraint g(θ) = c (g: the reported parameter in the
    user's units), started from θ̂, with the objective's exact gradient and g's by JAX. A
    parameter on the boundary starts from a point with g(θ) = c (its row of L moved)."""
    model = result.model
    layout, units, data = model.layout, model.units, model.internal_data
    n_quad = result.n_quad or 1
    objective = Objective(data, layout, n_quad, data.G.shape[0],
                          nodes_move=n_quad < FIXED_NODES_FROM or layout.association.nested_rule)
    k = result.names.index(name)
    theta_hat = units.to_internal(result.theta)
    free = identified(layout, result._opt.pivots, result._opt.zero_rows)
    start = theta_hat.copy()
    if name in result.boundary_values:  # free the row held on the boundary; start on g(θ) = c
        rep = reparam(layout, k, result._opt.pivots, result._opt.zero_rows)
        free = np.array(sorted(set(rep.copied) | {pos for _, pos in rep.row_pos}))
        c_internal = c / units.effect_scales[rep.row] if rep.kind == "sd" else c
        start = np.asarray(rep.theta(jnp.asarray(rep.phi(theta_hat, fresh=rep.kind == "sd")), c_internal, theta_hat))
    slope, offset = jnp.asarray(units.slope), jnp.asarray(units.offset)

    def g(x):
        return layout.report(slope * jnp.asarray(theta_hat).at[free].set(x) + offset)[k]

    g_and_grad = jax.jit(jax.value_and_grad(g))
    top = objective.evaluate(theta_hat)[0]

    def minus_loglik(x):
        theta = theta_hat.copy()
        theta[free] = x
        value, grad = objective.fun_and_grad(theta)
        return value + top, grad[free]  # −(ℓ − ℓ̂): O(1) near the interval's ends

    constraint = {"type": "eq", "fun": lambda x: float(g_and_grad(x)[0]) - c,
                  "jac": lambda x: np.asarray(g_and_grad(x)[1])}
    out = scipy.optimize.minimize(minus_loglik, start[free], jac=True, method="SLSQP",
                                  constraints=[constraint], options={"ftol": 1e-12, "maxiter": 300})
    assert abs(float(g_and_grad(out.x)[0]) - c) < 1e-9 * max(1.0, abs(c))
    return result.loglik - float(out.fun)


def assert_lr_equation(result, intervals: pd.DataFrame, tolerance: float) -> None:
    """2(ℓ̂ − pl(c)) = χ²₁(0.95) at every finite end, pl by ``independent_profile``."""
    for name, row in intervals.iterrows():
        for c in row:
            if np.isfinite(c):
                lr = 2 * (result.loglik - independent_profile(result, name, c))
                assert lr == pytest.approx(CHI2, abs=tolerance), (name, c, lr - CHI2)


# ---- Gaussian models against lme4 ---------------------------------------------------------------

def lme4_names(result) -> dict:
    """lme4's names of melsm's parameters: .sig01, .sig02, ... in VarCorr's order (each
    effect's SD, then its correlations with the effects after it), fixed effects by term."""
    out = {f"mean:{term}": "(Intercept)" if term == "Intercept" else term
           for term in result.model.layout.x_names}
    effects = [str(e) for e, _ in result.model.layout.random_effects()]
    order = []
    for a, effect in enumerate(effects):
        order.append(f"sd:{effect}")
        order += [f"corr:{effect},{other}" for other in effects[a + 1:]]
    out.update({name: f".sig{n + 1:02d}" for n, name in enumerate(order)})
    return out


@pytest.fixture(scope="module")
def gaussian_fits(reisby, tutorial):
    """The lme4 reference models fitted by melsm, with their profile intervals."""
    out = {}
    for key, case in LME4.items():
        result = fit({"reisby": reisby, "tutorial": tutorial}[case["data"]], case["formula"])
        assert result.loglik == pytest.approx(case["logLik"], abs=1e-5)
        out[key] = result, result.conf_int(method="profile", progress=False)
    return out


@pytest.mark.parametrize("key", sorted(LME4))
def test_matches_lme4(key, gaussian_fits):
    result, ours = gaussian_fits[key]
    case = LME4[key]
    for name, theirs in lme4_names(result).items():
        np.testing.assert_allclose(ours.loc[name], case["confint"][theirs], rtol=5e-4, err_msg=name)
        np.testing.assert_allclose(ours.loc[name], case["fine"][theirs], rtol=1e-4, err_msg=name)
    # within:Intercept is log σ²: the interval of lme4's σ, mapped (profile intervals are
    # invariant under monotone maps)
    np.testing.assert_allclose(ours.loc["within:Intercept"], 2 * np.log(case["fine"][".sigma"]), atol=1e-6)


def test_fixed_effect_close_to_wald_but_not_identical(gaussian_fits):
    """In a Gaussian random-intercept model the profile of a fixed effect is nearly
    quadratic: its interval is within 1% of the Wald interval's width, and not equal to it
    (measured on London: the slopes' ends differ from Wald's by 0.8-1.6e-4 of the width, the
    intercept's, which depends more on the uncertain random-intercept variance, by 4-6e-3;
    the profile interval is wider at both ends)."""
    result, profile = gaussian_fits["london_random_intercept"]
    wald = result.conf_int()
    for name in ("mean:standlrt", "mean:girl", "mean:Intercept"):
        width = wald.loc[name, "upper"] - wald.loc[name, "lower"]
        gap = np.abs(profile.loc[name].to_numpy() - wald.loc[name].to_numpy())
        assert np.all(gap < 1e-2 * width) and np.all(gap > 1e-6 * width), (name, gap / width)
        (low, high), (wald_low, wald_high) = profile.loc[name], wald.loc[name]
        assert low < wald_low < wald_high < high


def test_ends_satisfy_the_likelihood_ratio_equation(gaussian_fits):
    result, profile = gaussian_fits["london_random_slope"]
    assert_lr_equation(result, profile, 1e-6)


# ---- random scale effects -------------------------------------------------------------------------

SCALE_MODEL = dict(mean="hamdep ~ week + endog + endweek + (1 | id)", within="~ week + endog + (1 | id)")


@pytest.fixture(scope="module")
def scale_fit(reisby):
    result = fit(reisby, **SCALE_MODEL)
    return result, result.conf_int(method="profile", progress=False)


def test_random_scale_model_ends_satisfy_the_likelihood_ratio_equation(scale_fit):
    """Riesby with a random scale intercept correlated with the location intercept (AGQ,
    11 points): every end of every parameter, SDs and the correlation included."""
    result, profile = scale_fit
    assert np.all(np.isfinite(profile.to_numpy()))
    assert np.all(profile["lower"] < result.estimates) and np.all(result.estimates < profile["upper"])
    assert_lr_equation(result, profile, 1e-6)


def test_equivariant_under_the_units_of_the_response(reisby, scale_fit):
    """y × 1000: the mean coefficients' and location SD's intervals × 1000, the within
    intercept's + 2 log 1000, the other within coefficients', the scale SD's and the
    correlation's unchanged."""
    result, profile = scale_fit
    scaled = reisby.assign(hamdep=reisby["hamdep"] * 1000)
    other = fit(scaled, **SCALE_MODEL).conf_int(method="profile", progress=False)
    expected = profile.copy()
    for name in result.names:
        if name.startswith("mean:") or name == "sd:mean:Intercept":
            expected.loc[name] *= 1000
        elif name == "within:Intercept":
            expected.loc[name] += 2 * np.log(1000)
    width = (expected["upper"] - expected["lower"]).to_numpy()[:, None]
    assert np.all(np.abs(other.to_numpy() - expected.to_numpy()) < 1e-6 * width)


# ---- boundaries -------------------------------------------------------------------------------------

def simulate(seed, n_groups=60, size=20, sd_intercept=0.7):
    """y = 1 + 0.5 x + u0 + e: no random scale effect, no random slope (drawn as
    tests/test_boundary_convergence.py draws them, so the same seeds give the same data)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), size)
    x = rng.normal(size=n_groups * size)
    u0 = rng.normal(scale=sd_intercept, size=n_groups)[g]
    for _ in range(3):  # the random slope and both random scale effects, all with SD 0
        rng.normal(scale=0.0, size=n_groups)
    return pd.DataFrame({"y": 1 + 0.5 * x + u0 + rng.normal(size=n_groups * size), "x": x, "g": g})


def boundary_fit(data, **formulas):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmBoundaryWarning)
        result = fit(data, **formulas)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MelsmFitWarning: every end found or at an edge
        return result, result.conf_int(method="profile", progress=False)


@pytest.mark.parametrize("formulas", [
    dict(mean="y ~ x + (1 | g)", within="~ 1 + (1 | g)", association="none"),  # measured [0, 0.190]
    dict(mean="y ~ x + (0 + x | g)"),  # measured [0, 0.138]
], ids=["random scale", "random slope"])
def test_sd_estimated_at_zero_gets_zero_and_a_profiled_upper_end(formulas):
    data = simulate(3, sd_intercept=0.7 if "1 | g" in formulas["mean"] else 0.0)
    result, profile = boundary_fit(data, **formulas)
    (name,) = result.boundary
    assert result.boundary_values == {name: 0.0}
    assert profile.loc[name, "lower"] == 0.0 and 0.05 < profile.loc[name, "upper"] < 0.5
    assert_lr_equation(result, profile.loc[[name], ["upper"]], 1e-6)
    others = profile.drop(index=name)
    estimates = result.table()["estimate"].drop(index=name)
    assert np.all(others["lower"] < estimates) and np.all(estimates < others["upper"])


def test_sd_near_zero_reaches_zero_and_an_unidentified_correlation_spans_everything():
    """Correlated with the location intercept, these data's random scale has SD 0.020 and
    correlation −1 (Σ singular: on the boundary). Its profile does not fall by χ²₁(0.95)
    before SD 0, so the lower end is 0; the correlation is all but unidentified with the
    scale SD that small: its profile stays above the cut on (−1, 1), so [−1, 1]."""
    corr = "corr:mean:Intercept,within:Intercept"
    result, profile = boundary_fit(simulate(3), mean="y ~ x + (1 | g)", within="~ 1 + (1 | g)")
    assert result.boundary_values == {corr: -1.0}
    assert profile.loc["sd:within:Intercept", "lower"] == 0.0
    assert_lr_equation(result, profile.loc[["sd:within:Intercept"], ["upper"]], 1e-6)
    assert profile.loc[corr].tolist() == [-1.0, 1.0]
    assert 2 * (result.loglik - independent_profile(result, corr, 0.999)) < CHI2


# ---- options and failures --------------------------------------------------------------------------

def test_parm_profiles_only_the_parameters_named(gaussian_fits):
    result, everything = gaussian_fits["london_random_intercept"]
    one = result.conf_int(method="profile", parm="sd:mean:Intercept", progress=False)
    np.testing.assert_allclose(one.loc["sd:mean:Intercept"], everything.loc["sd:mean:Intercept"], rtol=1e-9)
    assert one.drop(index="sd:mean:Intercept").isna().all().all()
    two = result.conf_int(alpha=0.1, method="profile", parm=["mean:girl", "mean:standlrt"], progress=False)
    assert two.dropna().index.tolist() == ["mean:standlrt", "mean:girl"]
    assert np.all(two.loc["mean:girl", "lower"] > everything.loc["mean:girl", "lower"])  # 90% inside 95%
    with pytest.raises(melsm.MelsmInputError, match="parm: no parameter 'sd:mean:x'"):
        result.conf_int(method="profile", parm="sd:mean:x")


def test_progress_reports_each_parameter(gaussian_fits):
    result, _ = gaussian_fits["london_random_intercept"]
    seen = []
    result.conf_int(method="profile", parm=["mean:girl", "mean:standlrt"],
                    progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]


def test_a_profile_fit_that_does_not_converge_gives_nan_and_names_the_parameter(gaussian_fits, monkeypatch):
    from melsm.estimate import profile

    result, everything = gaussian_fits["london_random_intercept"]
    original = profile.Profiler.maximise

    def failing(self, c):
        point = original(self, c)
        if self.rep.kind == "sd" and c > self.points[0].c:  # the upper side of the SD
            point.max_grad = 1.0
        return point

    monkeypatch.setattr(profile.Profiler, "maximise", failing)
    with pytest.warns(melsm.MelsmFitWarning, match="sd:mean:Intercept.*did not converge.*upper end is NaN"):
        ci = result.conf_int(method="profile", progress=False)
    assert np.isnan(ci.loc["sd:mean:Intercept", "upper"])
    np.testing.assert_allclose(ci.loc["sd:mean:Intercept", "lower"], everything.loc["sd:mean:Intercept", "lower"])
    np.testing.assert_allclose(ci.drop(index="sd:mean:Intercept"), everything.drop(index="sd:mean:Intercept"))


def test_mcmc_fits_have_no_profile():
    with pytest.raises(ValueError, match="maximum-likelihood"):
        melsm.results.conventions.Conventions._profile_intervals(None, 0.95)


def test_a_fit_that_did_not_converge_has_no_profile(gaussian_fits, monkeypatch):
    result, _ = gaussian_fits["london_random_intercept"]
    monkeypatch.setattr(result, "converged", False)
    with pytest.warns(melsm.MelsmFitWarning, match="converged fit"):
        assert result.conf_int(method="profile", progress=False).isna().all().all()
