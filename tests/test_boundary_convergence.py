"""Boundary estimates and failed convergence are reported, never passed off as ordinary numbers.

Data are simulated with fixed seeds. Numbers quoted in comments were measured with
these seeds; the assertions use tolerances well inside what would distinguish the cases.
"""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats

import melsm
from melsm.cli import main
from melsm.estimate import ml

MEAN = "y ~ x + (1 | g)"


def simulate(seed, n_groups=60, size=20, sd_intercept=0.7, sd_slope=0.0, sd_scale=(0.0, 0.0)):
    """y = 1 + 0.5 x + u0 + u1 x + exp((v0 + v1 x)/2) e, groups g of equal size."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), size)
    x = rng.normal(size=n_groups * size)
    u0 = rng.normal(scale=sd_intercept, size=n_groups)[g]
    u1 = rng.normal(scale=sd_slope, size=n_groups)[g]
    v0 = rng.normal(scale=sd_scale[0], size=n_groups)[g]
    v1 = rng.normal(scale=sd_scale[1], size=n_groups)[g]
    e = rng.normal(size=n_groups * size)
    y = 1 + 0.5 * x + u0 + u1 * x + np.exp(0.5 * (v0 + v1 * x)) * e
    return pd.DataFrame({"y": y, "x": x, "g": g})


def fit_recording(data, mean=MEAN, within="~ 1", association="correlated", **kwargs):
    """(fit, warnings raised by melsm)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = melsm.Model(mean=mean, within=within, data=data, association=association).fit(**kwargs)
    return result, [w for w in caught if issubclass(w.category, UserWarning)]


def categories(caught):
    return {w.category for w in caught}


def identified_checks(fit):
    """Max |gradient| and smallest eigenvalue of −Hessian over the identified parameters."""
    opt = fit._opt
    free = ml._identified(fit.model.layout, opt.pivots, opt.zero_rows)
    hessian = -opt.hessian[np.ix_(free, free)]
    return float(np.max(np.abs(opt.grad[free]))), float(np.linalg.eigvalsh(hessian).min())


def assert_same_as_restricted(fit, restricted, names, rel=1e-3):
    for name in names:
        assert fit.params[name] == pytest.approx(
            restricted.params[name], rel=rel, abs=1e-6), name
        assert fit.bse[name] == pytest.approx(restricted.bse[name], rel=rel), name
    assert fit.loglik == pytest.approx(restricted.loglik, abs=1e-4)


# ---- 1. random scale SD at zero ------------------------------------------------------------

@pytest.fixture(scope="module")
def no_scale_data():
    """60 groups x 20, random location intercept (SD 0.7), no random scale, no random slope."""
    return simulate(3)


@pytest.fixture(scope="module")
def without_random_scale(no_scale_data):
    result, caught = fit_recording(no_scale_data)
    assert caught == [] and result.converged and result.boundary == []
    return result


def test_random_scale_sd_at_zero(no_scale_data, without_random_scale):
    fit, caught = fit_recording(no_scale_data, within="~ 1 + (1 | g)", association="none")
    assert categories(caught) == {melsm.MelsmBoundaryWarning}
    assert "sd:within:Intercept = 0" in str(caught[0].message)
    assert fit.boundary == ["sd:within:Intercept"]
    assert fit.boundary_values == {"sd:within:Intercept": 0.0}
    # converged over the identified parameters: small gradient, positive-definite −Hessian
    assert fit.converged and fit.message == "converged"
    max_grad, min_eig = identified_checks(fit)
    assert max_grad < 1e-4 and min_eig > 1.0
    row = fit.table().loc["sd:within:Intercept"]
    assert row.estimate == 0.0 and np.isnan(row.std_error) and np.isnan(row.lower) and np.isnan(row.upper)
    # every other estimate (and SE) is that of the model without the random scale effect
    assert_same_as_restricted(fit, without_random_scale,
                              ["mean:Intercept", "mean:x", "within:Intercept", "sd:mean:Intercept"])
    assert np.all(np.isfinite(fit.bse[[n != "sd:within:Intercept" for n in fit.names]]))
    # LR test: statistic 0, chi-bar-squared(0,1): p = ½P(χ²₁ > T) + ½P(χ²₀ > T) = 1 at T = 0
    test = without_random_scale.lrtest(fit)
    assert test.statistic < 1e-6 and test.df == 1 and test.distribution == "χ̄²: ½χ²(0) + ½χ²(1)"
    expected = 0.5 * scipy.stats.chi2.sf(test.statistic, 1) + 0.5 * (test.statistic <= 0)
    assert test.p_value == pytest.approx(expected) == pytest.approx(1.0)
    text = fit.summary()
    assert "Boundary" in text and "sd:within:Intercept = 0" in text and "Converged: yes" in text
    out = fit.to_dict()
    assert out["boundary"] == ["sd:within:Intercept"] and out["converged"] is True
    assert out["boundary_values"] == {"sd:within:Intercept": 0.0}
    assert {"name": "sd:within:Intercept", "estimate": 0.0, "se": None} in out["params"]


def test_stalled_sd_above_the_floor_is_still_a_boundary(monkeypatch):
    """On 30 groups x 10 BFGS stops at SD ~1.3e-4, just above the 1e-4 floor, with a small
    gradient; the flat likelihood profile down to 0 makes it a boundary all the same."""
    data = simulate(1, n_groups=30, size=10)
    restricted, _ = fit_recording(data)
    with monkeypatch.context() as patch:  # the optimiser's own answer, boundaries left undecided
        patch.setattr(ml, "_settle_boundary", lambda opt, *args: opt)
        raw, raw_caught = fit_recording(data, within="~ 1 + (1 | g)", association="none")
    raw_sd = raw.table().loc["sd:within:Intercept"]
    assert raw.converged and raw.boundary == [] and raw_caught == []
    assert 1e-4 < raw_sd.estimate < 1e-3 and raw_sd.std_error > 0.05  # e.g. 0.00013 ± 0.12: meaningless
    fit, caught = fit_recording(data, within="~ 1 + (1 | g)", association="none")
    assert categories(caught) == {melsm.MelsmBoundaryWarning}
    assert fit.converged and fit.boundary == ["sd:within:Intercept"]
    assert fit.params["sd:within:Intercept"] == 0.0
    assert fit.loglik >= raw.loglik - 1e-6  # the boundary is at least as likely
    assert_same_as_restricted(fit, restricted, ["mean:Intercept", "mean:x", "within:Intercept",
                                                "sd:mean:Intercept"])


def test_correlated_random_scale_gives_a_singular_fit_named_as_such(no_scale_data, without_random_scale):
    """Correlated with the location intercept, the random scale of these data does not go to
    0: the maximum has SD 0.020 and correlation -1 (Σ singular; 2ΔlogL = 0.20). That is what
    is reported; the location intercept's SD (0.72) is not called zero (as it was before, with
    every SE NaN) and the other SEs are finite."""
    fit, caught = fit_recording(no_scale_data, within="~ 1 + (1 | g)")
    corr = "corr:mean:Intercept,within:Intercept"
    assert categories(caught) == {melsm.MelsmBoundaryWarning}
    assert f"{corr} = -1" in str(caught[0].message)
    assert fit.converged and fit.boundary == [corr] and fit.boundary_values == {corr: -1.0}
    max_grad, min_eig = identified_checks(fit)
    assert max_grad < 1e-3 and min_eig > 0
    assert fit.params[corr] == -1.0 and np.isnan(fit.bse[corr])
    others = fit.bse.drop(index=corr)
    assert np.all(np.isfinite(others)) and np.all(others > 0)
    assert 0.005 < fit.params["sd:within:Intercept"] < 0.1
    assert fit.params["sd:mean:Intercept"] == pytest.approx(
        without_random_scale.params["sd:mean:Intercept"], rel=0.01)
    # a real gain over the model without the random scale: chi-bar-squared(1,2)
    test = without_random_scale.lrtest(fit)
    assert test.statistic == pytest.approx(2 * (fit.loglik - without_random_scale.loglik))
    assert 0.01 < test.statistic < 2 and test.distribution == "χ̄²: ½χ²(1) + ½χ²(2)"
    assert test.p_value == pytest.approx(0.5 * scipy.stats.chi2.sf(test.statistic, 1)
                                         + 0.5 * scipy.stats.chi2.sf(test.statistic, 2))
    # the same maximum from a start well inside (SD 0.37, correlation 0)
    start = fit.theta.copy()
    start[-3:] = [-1.0, 0.0, -0.4]
    again, _ = fit_recording(no_scale_data, within="~ 1 + (1 | g)", start=start)
    assert again.boundary == [corr] and again.loglik == pytest.approx(fit.loglik, abs=1e-6)
    assert f"{corr} = -1 (singular covariance matrix)" in fit.summary()


# ---- 2. random location slope ---------------------------------------------------------------

def test_random_slope_variance_at_zero():
    """A random slope alone on data without one: its SD goes to 0 and the fit equals OLS."""
    data = simulate(3, sd_intercept=0.0)
    ols, caught_ols = fit_recording(data, mean="y ~ x")
    assert caught_ols == [] and ols.converged
    fit, caught = fit_recording(data, mean="y ~ x + (0 + x | g)")
    assert categories(caught) == {melsm.MelsmBoundaryWarning}
    assert fit.converged and fit.boundary == ["sd:mean:x"]
    max_grad, min_eig = identified_checks(fit)
    assert max_grad < 1e-3 and min_eig > 1.0
    assert fit.params["sd:mean:x"] == 0.0 and np.isnan(fit.bse["sd:mean:x"])
    assert_same_as_restricted(fit, ols, ["mean:Intercept", "mean:x", "within:Intercept"])
    test = ols.lrtest(fit)
    assert test.statistic < 1e-6 and test.distribution == "χ̄²: ½χ²(0) + ½χ²(1)" and test.p_value == pytest.approx(1.0)
    assert "sd:mean:x = 0" in fit.summary()


def test_correlated_random_slope_without_variance_is_singular(no_scale_data, without_random_scale):
    """(x | g) on data without a random slope: the slope's SD stops at 0.015 with correlation
    +1 with the intercept (2ΔlogL = 0.24); before, this was reported as 'sd:mean:x estimated
    at 0' next to a table showing 0.015, and every SE was NaN."""
    fit, caught = fit_recording(no_scale_data, mean="y ~ x + (x | g)")
    corr = "corr:mean:Intercept,mean:x"
    assert categories(caught) == {melsm.MelsmBoundaryWarning}
    assert fit.converged and fit.boundary == [corr] and fit.boundary_values == {corr: 1.0}
    assert "sd:mean:x" not in fit.boundary
    max_grad, min_eig = identified_checks(fit)
    assert max_grad < 1e-3 and min_eig > 0
    assert np.isnan(fit.bse[corr])
    others = fit.bse.drop(index=corr)
    assert np.all(np.isfinite(others)) and np.all(others > 0)
    assert 0 < fit.params["sd:mean:x"] < 0.02
    # the slope adds almost nothing: estimates match the random-intercept model closely
    for name in ["mean:Intercept", "mean:x", "within:Intercept", "sd:mean:Intercept"]:
        assert fit.params[name] == pytest.approx(
            without_random_scale.params[name], rel=2e-3, abs=1e-3)
    test = without_random_scale.lrtest(fit)
    assert 0.01 < test.statistic < 1 and test.distribution == "χ̄²: ½χ²(1) + ½χ²(2)"
    assert test.note == "sd:mean:x = 0 is on the boundary"


# ---- 3. no convergence ----------------------------------------------------------------------

def test_max_iter_one_does_not_converge_and_says_why(no_scale_data, without_random_scale):
    fit, caught = fit_recording(no_scale_data, within="~ 1 + (1 | g)", association="none", max_iter=1)
    assert melsm.MelsmConvergenceWarning in categories(caught)
    message = next(str(w.message) for w in caught if w.category is melsm.MelsmConvergenceWarning)
    assert message.startswith("the fit did not converge: gradient not small (max |g| = ")
    assert fit.converged is False and fit.message.startswith("gradient not small")
    max_grad, _ = identified_checks(fit)
    assert max_grad > 1e-3  # the reason, in numbers
    assert f"{max_grad:.2g}" in fit.message
    assert "Converged: NO - gradient not small" in fit.summary()
    out = fit.to_dict()
    assert out["converged"] is False and out["message"] == fit.message
    test = without_random_scale.lrtest(fit)
    assert "UNRELIABLE: the full fit did not converge" in test.note and "UNRELIABLE" in str(test)
    # the default cap converges on the same model
    good, caught_good = fit_recording(no_scale_data, within="~ 1 + (1 | g)", association="none")
    assert good.converged and melsm.MelsmConvergenceWarning not in categories(caught_good)
    assert good.loglik > fit.loglik


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_max_iter_must_be_a_positive_integer(no_scale_data, bad):
    model = melsm.Model(mean=MEAN, data=no_scale_data)
    with pytest.raises(melsm.MelsmInputError, match="max_iter must be a positive integer"):
        model.fit(max_iter=bad)


def test_cli_reports_non_convergence(tmp_path, capsys, no_scale_data):
    path = tmp_path / "data.csv"
    no_scale_data.to_csv(path, index=False)
    code = main(["fit", str(path), "--mean", MEAN, "--within", "~ 1 + (1 | g)",
                 "--association", "none", "--max-iter", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["converged"] is False and out["message"].startswith("gradient not small")
    assert any(w.startswith("the fit did not converge: gradient not small") for w in out["warnings"])
    code = main(["fit", str(path), "--mean", MEAN, "--within", "~ 1 + (1 | g)",
                 "--association", "none", "--max-iter", "1"])
    captured = capsys.readouterr()
    assert code == 0 and "Converged: NO" in captured.out
    assert "warning: the fit did not converge" in captured.err
    # and a boundary fit lists its boundary and warning in JSON
    code = main(["fit", str(path), "--mean", MEAN, "--within", "~ 1 + (1 | g)",
                 "--association", "none", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["converged"] is True and out["boundary"] == ["sd:within:Intercept"]
    assert any("sd:within:Intercept = 0" in w for w in out["warnings"])


# ---- 4. LR test removing two random effects -------------------------------------------------

def test_lrtest_removing_two_random_effects_is_plain_chi2_and_conservative():
    data = simulate(5, n_groups=80, size=15, sd_scale=(0.6, 0.4))
    small, caught_small = fit_recording(data)
    big, caught_big = fit_recording(data, within="~ x + (x | g)")
    assert caught_small == [] and caught_big == []
    assert small.converged and big.converged and big.boundary == []
    test = big.lrtest(small)
    # within:x, sd:within:Intercept, sd:within:x and three correlations
    assert test.df == 6 and test.distribution == "χ²(6)"
    assert test.note == "conservative: the null puts several variances on their boundary"
    assert test.statistic == pytest.approx(2 * (big.loglik - small.loglik))
    assert test.statistic > 20  # the data do have random scale effects
    assert test.p_value == pytest.approx(scipy.stats.chi2.sf(test.statistic, 6))
    assert str(test).startswith(f"LR test: LR = {test.statistic:.2f} on χ²(6), ") and "conservative" in str(test)


def test_extreme_scale_variance_does_not_crash_the_trust_region_fallback():
    """A random-scale SD of 9 (level-1 variances e^±18 apart) gave a non-finite Hessian on
    the way, on which scipy's trust-region subproblem raised UnboundLocalError. The fit
    must end without an exception and say "converged" only when it is: here it is, at
    the maximum that a 41-point rule (against the default 11) confirms."""
    from test_sbc import draw_prior, simulate

    rng = np.random.default_rng(7)
    draw_prior(rng)
    for _ in range(185):  # the 185th data set of this stream has sd:within:Intercept = 9.18
        truth = draw_prior(rng)
        data = simulate(truth, rng)
    assert truth["sd:within:Intercept"] == pytest.approx(9.18, abs=0.01)
    model = melsm.Model("y ~ 1 + (1 | g)", within="~ 1 + (1 | g)", data=data)
    fit = model.fit()
    assert np.isfinite(fit.loglik)
    assert fit.converged and np.max(np.abs(fit._opt.grad)) < ml.GRADIENT_TOLERANCE
    assert np.all(np.linalg.eigvalsh(-fit._opt.hessian) > 0)
    fine = model.fit(quadrature=41)
    assert fit.loglik == pytest.approx(fine.loglik, abs=1e-2)
    assert fit.params.to_numpy() == pytest.approx(fine.params.to_numpy(), abs=0.02)


def test_newton_polish_converges_a_fit_stopped_just_short(monkeypatch):
    """Groups of 5: BFGS and the trust region stopped at max |g| = 0.0018 (the fixed-node
    derivatives and the value disagree at the quadrature error's level). Newton steps reach
    |g| < 1e-3 within 1e-5 in log L and a thousandth of an SE of that point."""
    from melsm.studies.simulate import simulate

    study = melsm.builtin_study("ignore-scale")
    point = study.designs()[0]
    data = simulate(study.model, point.truth, point.design, seed=np.random.SeedSequence([study.seed, 0, 481]))
    model = melsm.Model(data=data, **study.fits["full"])
    monkeypatch.setattr(ml, "POLISH_STEPS", 0)
    monkeypatch.setattr(ml, "STEERED_STEPS", 0)
    with pytest.warns(melsm.MelsmConvergenceWarning, match="gradient not small"):
        stopped = model.fit()
    monkeypatch.setattr(ml, "POLISH_STEPS", 5)
    monkeypatch.setattr(ml, "STEERED_STEPS", 16)
    hessians = []
    original = ml.Objective._hessian
    monkeypatch.setattr(ml.Objective, "_hessian", lambda self, x: hessians.append(1) or original(self, x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        warnings.simplefilter("ignore", melsm.MelsmBoundaryWarning)  # its correlation is 0.9991
        polished = model.fit()
    # Newton steps (Hessian held) before the trust region: 6 Hessians (28 with the trust
    # region first, to the same log L and estimates)
    assert len(hessians) <= 8
    assert polished.converged and np.max(np.abs(polished._opt.grad)) < ml.GRADIENT_TOLERANCE
    assert polished.loglik == pytest.approx(stopped.loglik, abs=1e-5)
    shift = (polished.params - stopped.params) / polished.bse
    assert shift.abs().max() < 1e-3


def test_newton_steps_with_the_hessian_held_converge_near_the_optimum():
    """``ml._held_newton`` on −log L = ½ xᵀAx − bᵀx + 0.1 Σ x³ (a smooth, not quadratic
    function), started where |g| ≈ 2e-3 with the Hessian of log L there held: |g| falls
    below ``REFINE_GRADIENT`` within three gradient calls, at the true stationary point."""
    A = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    b = np.array([1.0, -0.5, 0.25])

    def grad(x):
        return A @ x - b + 0.3 * x**2

    class Space:
        free = np.arange(3)
        calls = 0

        def fun_and_grad(self, x):
            Space.calls += 1
            return 0.5 * x @ A @ x - b @ x + 0.1 * np.sum(x**3), grad(x)

    exact = scipy.optimize.fsolve(grad, np.zeros(3), xtol=1e-14)
    start = exact + np.array([4e-4, -3e-4, 2e-4])
    assert 1e-3 < np.max(np.abs(grad(start))) < 3e-3
    log_l_hessian = -(A + np.diag(0.6 * start))
    x = ml._held_newton(Space(), start, log_l_hessian, 4)
    assert np.max(np.abs(grad(x))) < ml.REFINE_GRADIENT
    assert np.max(np.abs(x - exact)) < 1e-9
    assert Space.calls <= 3


def test_bfgs_run_rebuilds_scipys_inverse_hessian():
    """``ml._BFGSRun`` rebuilds BFGS's inverse-Hessian estimate from the accepted steps
    (``bfgs_update``), which the quasi-Newton steps of ``ml._steered`` use after a stall:
    on a smooth function it equals the ``hess_inv`` scipy returns after ``maxiter``
    iterations (every step's update made; stopping on ``gtol`` skips the last), to 1e-10."""
    import scipy.optimize

    A = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    b = np.array([1.0, -0.5, 0.25])

    class Space:
        def fun_and_grad(self, x):
            return 0.5 * x @ A @ x - b @ x + 0.1 * np.sum(x**3), A @ x - b + 0.3 * x**2

    x0 = np.array([1.0, 1.0, 1.0])
    run = ml._BFGSRun(Space(), x0)
    result = scipy.optimize.minimize(run.fun_and_grad, x0, jac=True, method="BFGS", callback=run.callback,
                                     options={"gtol": 1e-12, "maxiter": 3})
    assert run.iterations == result.nit == 3
    np.testing.assert_allclose(run.inverse_hessian, result.hess_inv, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(run.x, result.x)
