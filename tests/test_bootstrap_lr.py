"""Bootstrap-calibrated profile-likelihood intervals (melsm.results.bootstrap_lr;
docs/architecture.md, 'Bootstrap intervals'): the replicates' signed roots against a
constrained refit by hand, the interval against the profile one when mean(r*²) is 1 and
against the profile interval at the level of the rescaled cut-off otherwise, the ends
where the LR meets c·z², reproducibility, failures and refused options."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.special
from test_bootstrap import FORMULA, gaussian_data  # rows in group order

import melsm
from melsm.estimate.profile import Profiler
from melsm.results.bootstrap import replicate_rng
from melsm.results.bootstrap_lr import root_levels
from melsm.results.predict import simulate_response
from melsm.results.profile import _Context

B, SEED = 19, 3
Z = float(scipy.special.ndtri(0.975))


@pytest.fixture(scope="module")
def fit():
    return melsm.Model(mean=FORMULA, data=gaussian_data(1)).fit()


@pytest.fixture(scope="module")
def reps(fit):
    return fit.bootstrap(B, seed=SEED, progress=False, signed_roots=True)


def quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmFitWarning)
        return call()


def slope_held_loglik(y: np.ndarray, data: pd.DataFrame, slope: float) -> float:
    """max log L with the coefficient of x held at ``slope``, by hand: the model without x
    fitted to y − slope·x (the same likelihood, the Jacobian being 1)."""
    shifted = data.assign(y=y - slope * data["x"].to_numpy())
    return float(melsm.Model(mean="y ~ 1 + (1 | g)", data=shifted).fit().loglik)


def test_replicate_root_equals_a_constrained_refit_by_hand(fit, reps):
    b, name = 4, "mean:x"
    data, model = gaussian_data(1), fit.model
    np.testing.assert_array_equal(model.design.y, data["y"].to_numpy())  # rows in the data's order
    y = simulate_response(model.design, model.layout, np.asarray(fit.theta), replicate_rng(SEED, b))
    full = model.with_response(y).fit(start=fit.theta)
    psi_hat, psi_b = float(fit.table()["estimate"][name]), float(full.table()["estimate"][name])
    assert reps.loc[b, name] == psi_b and reps.loc[b, "loglik"] == full.loglik
    by_hand = np.sign(psi_b - psi_hat) * np.sqrt(2 * (full.loglik - slope_held_loglik(y, data, psi_hat)))
    assert abs(reps.loc[b, f"root:{name}"] - by_hand) < 1e-8


def test_roots_leave_the_other_columns_as_they_are_and_are_reproducible(fit, reps):
    plain = fit.bootstrap(B, seed=SEED, progress=False)
    columns = [c for c in plain.columns if c != "seconds"]
    pd.testing.assert_frame_equal(reps[columns], plain[columns])
    assert list(reps.columns) == [*plain.columns, *(f"root:{n}" for n in fit.names)]
    assert np.isfinite(reps.filter(like="root:").to_numpy()).all()
    one = fit.bootstrap(3, seed=SEED, progress=False, signed_roots="sd:mean:Intercept")
    assert list(one.filter(like="root:").columns) == ["root:sd:mean:Intercept"]
    np.testing.assert_array_equal(one["root:sd:mean:Intercept"], reps["root:sd:mean:Intercept"].iloc[:3])


def table_with_roots(fit, roots: np.ndarray) -> pd.DataFrame:
    """A replicate table at θ̂ whose every ``root:<name>`` column is ``roots``."""
    estimates = fit.table()["estimate"]
    frame = pd.DataFrame({name: np.full(len(roots), estimates[name]) for name in fit.names})
    frame["converged"] = True
    for name in fit.names:
        frame[f"root:{name}"] = roots
    return frame


UNIT_ROOTS = np.array([-1.0, 1.0] * 100)  # mean(r*²) = 1 exactly


def test_a_mean_square_of_one_gives_the_profile_interval(fit):
    table = table_with_roots(fit, UNIT_ROOTS)
    assert root_levels(["a"], table[["root:mean:x"]].to_numpy(), 0.95) == {"a": (Z, Z)}
    calibrated = fit.conf_int(method="bootstrap", kind="profile", replicates=table)
    np.testing.assert_allclose(calibrated.to_numpy(), fit.conf_int(method="profile").to_numpy(), rtol=0, atol=1e-6)
    one = fit.conf_int(method="bootstrap", kind="profile", replicates=table, parm="mean:x")
    assert one.loc["mean:x"].tolist() == calibrated.loc["mean:x"].tolist() and one.drop("mean:x").isna().all().all()


def test_a_mean_square_of_c_gives_the_profile_interval_at_z_times_root_c(fit):
    """Roots ±1.3 (c = 1.69): the profile interval whose cut-off is (1.3 z)², i.e. at the
    level 1 − 2(1 − Φ(1.3 z)) — the same profile, another level."""
    table = table_with_roots(fit, 1.3 * UNIT_ROOTS)
    calibrated = quiet(lambda: fit.conf_int(method="bootstrap", kind="profile", replicates=table))
    alpha = 2 * float(scipy.special.ndtr(-1.3 * Z))
    wider = fit.conf_int(method="profile", alpha=alpha)
    np.testing.assert_allclose(calibrated.to_numpy(), wider.to_numpy(), rtol=0, atol=1e-6)
    assert (calibrated["lower"] < fit.conf_int(method="profile")["lower"]).all()


def profile_root(fit, name: str, value: float) -> float:
    """r(ψ) = sign(ψ̂ − ψ)·√(2(ℓ̂ − pl(ψ))) with pl from a fresh constrained maximisation."""
    context = _Context(fit, 0.95)
    target, rep = context.target(fit.names.index(name))
    profiler = Profiler(context.objective, rep, context.theta)
    phi = rep.phi(context.theta)
    c = target.internal(value)
    point = profiler.maximise(c, start=(phi, context._inverse_information(profiler, phi, c)))
    assert point.converged
    return float(np.sign(target.estimate - value) * np.sqrt(2 * (context.loglik - point.loglik)))


def test_the_ends_are_where_the_lr_meets_the_rescaled_cut_off(fit, reps):
    intervals = quiet(lambda: fit.conf_int(method="bootstrap", kind="profile", replicates=reps))
    data = gaussian_data(1)
    for name in fit.names:
        cut = Z * np.sqrt(np.mean(reps[f"root:{name}"] ** 2))
        low, high = intervals.loc[name]
        assert low < fit.table()["estimate"][name] < high
        assert abs(profile_root(fit, name, low) - cut) < 1e-8, name
        assert abs(profile_root(fit, name, high) + cut) < 1e-8, name
    # the slope's ends against refits by hand
    cut = Z * np.sqrt(np.mean(reps["root:mean:x"] ** 2))
    low, high = intervals.loc["mean:x"]
    for end, sign in ((low, 1), (high, -1)):
        root = np.sign(fit.table()["estimate"]["mean:x"] - end) * np.sqrt(
            2 * (fit.loglik - slope_held_loglik(data["y"].to_numpy(), data, end)))
        assert abs(root - sign * cut) < 1e-7


@pytest.mark.filterwarnings("ignore:only 18 usable bootstrap replicates for the profile calibration")
def test_failed_roots_are_left_out_and_counted(fit, reps):
    table = reps.copy()
    table.loc[[0], "root:mean:x"] = np.nan
    with pytest.warns(melsm.MelsmFitWarning, match=r"whose constrained refit failed .*: mean:x 1"):
        one = fit.conf_int(method="bootstrap", kind="profile", replicates=table, parm="mean:x")
    assert np.isfinite(one.loc["mean:x"]).all()
    table.loc[[0, 1, 2], "root:mean:x"] = np.nan  # 3 of 19: above 10%
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmFitWarning)
        none = fit.conf_int(method="bootstrap", kind="profile", replicates=table, parm="mean:x")
    assert none.isna().all().all()


@pytest.mark.parametrize(("options", "message"), [
    ({"kind": "profile", "replicates": "plain"}, "kind='profile' needs the replicates' signed roots: the column "
                                                 "'root:<name>'"),
    ({"kind": "profile", "replicates": "one", "parm": "mean:x"}, "kind='profile' needs the replicates' signed "
                                                                "roots: the column 'root:mean:x'"),
    ({"kind": "profile", "replicates": "one", "parm": "nope"}, "parm: no parameter 'nope'"),
    ({"kind": "bc", "replicates": "one", "parm": "mean:x"}, "parm= is for kind='profile', not 'bc'"),
])
def test_refused_interval_options(fit, options, message):
    tables = {"plain": lambda: fit.bootstrap(2, progress=False),
              "one": lambda: fit.bootstrap(2, progress=False, signed_roots=["sd:mean:Intercept"])}
    options = {**options, "replicates": tables[options["replicates"]]()}
    with pytest.raises(melsm.MelsmInputError) as err:
        fit.conf_int(method="bootstrap", **options)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(("options", "message"), [
    ({"signed_roots": 3}, "signed_roots must be True, False, a parameter name or a list of them, not 3"),
    ({"signed_roots": ["nope"]}, "signed_roots: no parameter 'nope'"),
    ({"signed_roots": True, "double": True}, "signed_roots= and double=True do not go together"),
])
def test_refused_bootstrap_options(fit, options, message):
    with pytest.raises(melsm.MelsmInputError) as err:
        fit.bootstrap(2, progress=False, **options)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def coverage_benchmark():
    """``bench/bootstrap_coverage.py`` as a module."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bootstrap_coverage.py"
    spec = importlib.util.spec_from_file_location("bootstrap_coverage", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_coverage_benchmark_with_roots_keeps_the_other_intervals():
    """bench/bootstrap_coverage.py --roots, tiny: the other methods' intervals are those of
    the run without roots, and both profile methods give intervals."""
    bench = coverage_benchmark()
    plain = pd.DataFrame(bench.run(replications=1, boot=9, scheduler="synchronous")["rows"])
    result = bench.run(replications=1, boot=9, scheduler="synchronous", roots=True)
    rows = pd.DataFrame(result["rows"])
    columns = [f"{m}_{end}" for m in bench.METHODS for end in ("lower", "upper")]
    pd.testing.assert_frame_equal(rows[["parameter", "estimate", *columns]], plain[["parameter", "estimate", *columns]])
    for method in bench.ROOT_METHODS:
        assert np.isfinite(rows[f"{method}_lower"]).all() and (rows[f"{method}_lower"] < rows[f"{method}_upper"]).all()
    assert result["roots"] and set(result["boot_roots_failed"]) == set(bench.TRUTH)


def test_processes_scheduler_gives_the_same_roots(fit, reps):
    """The constrained refits run on a Dask worker exactly as in this process."""
    there = fit.bootstrap(3, seed=SEED, scheduler="processes", workers=1, progress=False, signed_roots=True)
    columns = [*fit.names, *(f"root:{name}" for name in fit.names)]
    np.testing.assert_array_equal(there[columns].to_numpy(), reps[columns].iloc[:3].to_numpy())


@pytest.mark.filterwarnings("ignore:only 8 usable bootstrap replicates for the profile calibration")
@pytest.mark.filterwarnings("ignore::melsm.MelsmBoundaryWarning")
def test_a_parameter_on_the_boundary_gets_no_interval_with_a_warning():
    fit = melsm.Model(mean=FORMULA, data=gaussian_data(1, sd_u=0.0, groups=10, rows=4)).fit()
    assert fit.boundary == ["sd:mean:Intercept"]
    table = fit.bootstrap(8, seed=1, progress=False, signed_roots=True)
    assert (table["root:sd:mean:Intercept"] >= 0).all()  # ψ̂ = 0: no replicate's ψ* lies below
    with pytest.warns(melsm.MelsmFitWarning, match="no bootstrap-calibrated profile interval for sd:mean:Intercept"):
        intervals = fit.conf_int(method="bootstrap", kind="profile", replicates=table)
    assert intervals.loc["sd:mean:Intercept"].isna().all()
    assert np.isfinite(intervals.drop("sd:mean:Intercept").to_numpy()).all()


def test_few_replicates_warn_of_the_cut_offs_monte_carlo_error(fit, reps):
    with pytest.warns(melsm.MelsmFitWarning, match=r"only 19 usable bootstrap replicates for the profile "
                                                   r"calibration: its cut-off carries a Monte Carlo error of "
                                                   r"about 16% \(1/√\(2n\); n_boot=200 gives 5%\)"):
        fit.conf_int(method="bootstrap", kind="profile", replicates=reps, parm="mean:x")
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmFitWarning)  # 200 replicates: no warning
        fit.conf_int(method="bootstrap", kind="profile", replicates=table_with_roots(fit, UNIT_ROOTS), parm="mean:x")


def test_coverage_benchmark_roots_of_named_parameters_and_a_seed():
    """``--roots NAME`` and ``--seed``: only the named parameter gets the calibrated
    interval, and the data sets are those of the seed."""
    bench = coverage_benchmark()
    result = bench.run(replications=1, boot=9, scheduler="synchronous", roots=["sd:within:Intercept"], seed=7)
    rows = pd.DataFrame(result["rows"]).set_index("parameter")
    made = np.isfinite(rows["profile_boot_lower"])
    assert made.tolist() == [name == "sd:within:Intercept" for name in rows.index]
    assert result["design"]["seed"] == 7 and list(result["boot_roots_failed"]) == ["sd:within:Intercept"]
    fit = melsm.Model(data=bench.simulate(0, seed=7), **bench.FORMULAS).fit()
    assert abs(rows.loc["mean:x", "estimate"] - fit.table()["estimate"]["mean:x"]) < 1e-12
    assert not bench.simulate(0, seed=7).equals(bench.simulate(0))
