"""Parametric bootstrap of ML fits (melsm.results.bootstrap, melsm.results.bootstrap_ci;
docs/architecture.md, 'Bootstrap intervals'): the replicates, percentile and basic
intervals against Wald ones within Monte Carlo error, studentized and BC intervals
against a hand computation, the default kind, reproducibility on every scheduler, failed
refits, boundaries, and refused options."""

from __future__ import annotations

import importlib.util
import inspect
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import melsm
from melsm.results import bootstrap as boot_module
from melsm.results import bootstrap_ci as ci_module
from melsm.results.conventions import Conventions
from melsm.results.mcmc import MCMCResults

B = 200
FORMULA = "y ~ x + (1 | g)"


def gaussian_data(seed: int, sd_u: float = 0.8, groups: int = 40, rows: int = 6) -> pd.DataFrame:
    """y = 1 + 0.5 x + u_g + e, SD(u) = ``sd_u``, SD(e) = 1: no scale effects."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), rows)
    x = rng.standard_normal(groups * rows)
    y = 1 + 0.5 * x + sd_u * rng.standard_normal(groups)[g] + rng.standard_normal(groups * rows)
    return pd.DataFrame({"y": y, "x": x, "g": g})


@pytest.fixture(scope="module")
def fit():
    return melsm.Model(mean=FORMULA, data=gaussian_data(1)).fit()


@pytest.fixture(scope="module")
def replicates(fit):
    return fit.bootstrap(B, seed=1, progress=False)


def quiet_conf_int(fit, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmFitWarning)
        return fit.conf_int(method="bootstrap", **options)


def test_replicates_table(fit, replicates):
    assert list(replicates.index) == list(range(B)) and replicates.index.name == "replicate"
    se_columns = [f"se:{name}" for name in fit.names]
    assert list(replicates.columns) == [*fit.names, *se_columns, *boot_module.RECORD_COLUMNS]
    assert replicates["converged"].all() and (replicates["error"] == "").all()
    assert replicates[fit.names].notna().all().all()
    # each refit's own SEs: positive, and on average close to the fit's (within 10%)
    assert (replicates[se_columns] > 0).all().all()
    ratio = replicates[se_columns].mean().to_numpy() / fit.table()["std_error"].to_numpy()
    assert np.all(np.abs(ratio - 1) < 0.1), ratio
    assert replicates["seconds"].gt(0).all()
    # every replicate is a new data set: no two estimates alike
    assert replicates["mean:x"].nunique() == B


def test_replicate_means_and_sds_match_the_estimates_and_standard_errors(fit, replicates):
    """Under the parametric bootstrap the replicates centre on θ̂ (up to the ML bias of the
    variances, small here) and spread like the SEs: means within 4 Monte Carlo SEs
    (SD/√B), SDs within 4 relative MC SEs (1/√(2B) = 5%) of the Wald SEs."""
    table = fit.table()
    for name in fit.names:
        values = replicates[name]
        mc_se = values.std() / np.sqrt(B)
        assert abs(values.mean() - table.loc[name, "estimate"]) < 4 * mc_se, name
        assert abs(values.std() / table.loc[name, "std_error"] - 1) < 4 / np.sqrt(2 * B), name


def test_percentile_and_studentized_intervals_of_fixed_effects_match_wald_within_monte_carlo_error(fit, replicates):
    """For a Gaussian random-intercept model β̂ is close to normal, so the 2.5% and 97.5%
    quantiles of the replicates estimate the Wald endpoints. The Monte Carlo SD of a
    sample p-quantile from B draws is sqrt(p(1 − p)/B)/φ(z_p) × SD (0.19 SD at B = 200):
    the endpoints agree within 4 of those. β̂'s SE hardly varies between replicates, so t*
    is close to N(0, 1) and the studentized endpoints β̂ − t*₍ₚ₎·SE agree as closely."""
    wald, percentile = fit.conf_int(), quiet_conf_int(fit, replicates=replicates, kind="percentile")
    p = 0.025
    factor = np.sqrt(p * (1 - p) / B) / scipy.stats.norm.pdf(scipy.stats.norm.ppf(p))
    for name in ("mean:Intercept", "mean:x"):
        mc_sd = factor * replicates[name].std()
        for end in ("lower", "upper"):
            assert abs(percentile.loc[name, end] - wald.loc[name, end]) < 4 * mc_sd, (name, end)
    # the SD's interval also stays near the Wald one (log scale), and above 0
    name = "sd:mean:Intercept"
    assert 0 < percentile.loc[name, "lower"] < fit.table().loc[name, "estimate"] < percentile.loc[name, "upper"]
    assert np.allclose(percentile.loc[name], wald.loc[name], rtol=0.1)
    student = quiet_conf_int(fit, replicates=replicates, kind="studentized")
    for name in ("mean:Intercept", "mean:x"):
        mc_sd = factor * fit.table().loc[name, "std_error"]
        for end in ("lower", "upper"):
            assert abs(student.loc[name, end] - wald.loc[name, end]) < 4 * mc_sd, (name, end)


def test_intervals_are_quantiles_of_the_replicates(fit, replicates):
    values = replicates[fit.names].to_numpy()
    for alpha in (0.05, 0.2):
        got = quiet_conf_int(fit, alpha=alpha, replicates=replicates, kind="percentile")
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2], axis=0)
        np.testing.assert_allclose(got["lower"], low, rtol=1e-13)  # nanquantile: last digit may differ
        np.testing.assert_allclose(got["upper"], high, rtol=1e-13)
        basic = quiet_conf_int(fit, alpha=alpha, replicates=replicates, kind="basic")
        est = fit.table()["estimate"].to_numpy()
        np.testing.assert_allclose(basic["lower"], 2 * est - high, rtol=1e-12)
        np.testing.assert_allclose(basic["upper"], 2 * est - low, rtol=1e-12)
    assert list(got.index) == fit.names


SYNTHETIC = ["mean:x", "sd:within:Intercept", "corr:mean:Intercept,within:Intercept"]


def hand_quantile(x, p: float) -> float:
    """numpy's default quantile written out: x₍ₖ₎ + (h − k)(x₍ₖ₊₁₎ − x₍ₖ₎), h = (n − 1)p, k = ⌊h⌋."""
    x, h = np.sort(np.asarray(x, dtype=float)), (len(x) - 1) * p
    k = int(h)  # h ≥ 0: the floor
    return x[k] + (h - k) * (x[min(k + 1, len(x) - 1)] - x[k])


def synthetic(boundary=(5, 17), n: int = 60):
    """A stand-in fit (names, kinds, table(): what bootstrap_ci reads) and ``n`` replicates:
    30 failed, the ``boundary`` ones have the SD at 0 (its SE and the correlation NaN, as a
    refit reports them), 9 has mean:x equal to the estimate (a tie)."""
    rng, est, se = np.random.default_rng(7), np.array([0.5, 0.45, 0.3]), np.array([0.1, 0.08, 0.2])
    values = np.column_stack([0.5 + 0.1 * rng.standard_normal(n), 0.42 * np.exp(0.18 * rng.standard_normal(n)),
                              np.tanh(0.25 + 0.22 * rng.standard_normal(n))])
    ses = se * np.exp(0.2 * rng.standard_normal((n, 3)))
    values[9, 0] = est[0]
    values[list(boundary), 1:], ses[list(boundary), 1:], values[30], ses[30] = [0.0, np.nan], np.nan, np.nan, np.nan
    reps = pd.DataFrame(np.hstack([values, ses]), columns=[*SYNTHETIC, *(f"se:{name}" for name in SYNTHETIC)])
    reps["converged"] = np.arange(n) != 30
    fit = types.SimpleNamespace(names=SYNTHETIC, kinds=["coef", "sd", "corr"],
                                table=lambda: pd.DataFrame({"estimate": est, "std_error": se}, index=SYNTHETIC))
    return fit, reps


def recorded(call):  # the result and every warning's message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught]


def hand_studentized(fit, reps, level):
    """ψ = θ, log σ, atanh ρ; t* = (ψ* − ψ̂)/se*; ψ̂ − t*₍₁₋ₐ₎·se, ψ̂ − t*₍ₐ₎·se back-transformed."""
    table, rows = fit.table(), reps[reps["converged"]]
    forward = {"coef": (lambda v: v, lambda v, s: s, lambda p: p),
               "sd": (np.log, lambda v, s: s / v, np.exp),
               "corr": (np.arctanh, lambda v, s: s / (1 - v ** 2), np.tanh)}
    out = []
    for name, kind in zip(fit.names, fit.kinds, strict=True):
        to, se_of, back = forward[kind]
        est, se = table.loc[name, "estimate"], table.loc[name, "std_error"]
        v, s = rows[name].to_numpy(), rows[f"se:{name}"].to_numpy()
        ok = np.isfinite(v) & np.isfinite(s) & (v > 0 if kind == "sd" else True)
        t, a = (to(v[ok]) - to(est)) / se_of(v[ok], s[ok]), (1 - level) / 2
        out.append([back(to(est) - hand_quantile(t, q) * se_of(est, se)) for q in (1 - a, a)])
    return np.array(out)


def hand_bc(fit, reps, level):
    """z₀ = Φ⁻¹((#below + #equal/2)/n), the Φ(2z₀ ∓ z) quantiles."""
    table, rows, z = fit.table(), reps[reps["converged"]], scipy.stats.norm.ppf((1 + level) / 2)
    out = []
    for name in fit.names:
        v, est = rows[name].dropna().to_numpy(), table.loc[name, "estimate"]
        z0 = scipy.stats.norm.ppf((np.sum(v < est) + 0.5 * np.sum(v == est)) / len(v))
        out.append([hand_quantile(v, q) for q in scipy.stats.norm.cdf([2 * z0 - z, 2 * z0 + z])])
    return np.array(out)


LEFT_OUT = {  # the two boundary replicates, counted per parameter; BC keeps the SDs at 0 as values
    "studentized": "studentized bootstrap intervals leave out the replicates without a finite standard error (an "
                   "SD at 0, a correlation at ±1 or undefined), out of 59: sd:within:Intercept 2, "
                   "corr:mean:Intercept,within:Intercept 2; with more than 10% left out there is no interval (NaN)",
    "bc": "bc bootstrap intervals leave out the replicates where the parameter is undefined (a correlation of an "
          "effect whose SD is 0), out of 59: corr:mean:Intercept,within:Intercept 2; with more than 10% left out "
          "there is no interval (NaN)"}


@pytest.mark.parametrize("level", [0.8, 0.95])
@pytest.mark.parametrize("kind, hand", [("studentized", hand_studentized), ("bc", hand_bc)])
def test_studentized_and_bc_intervals_equal_a_hand_computation(kind, hand, level):
    fit, reps = synthetic()
    (low, high), messages = recorded(lambda: ci_module.bootstrap_intervals(fit, level, reps, kind=kind))
    np.testing.assert_allclose(np.column_stack([low, high]), hand(fit, reps, level), rtol=1e-12, atol=1e-12)
    assert low[1] > 0 and -1 < low[2] < high[2] < 1
    assert "1 of 60 bootstrap refits did not converge and are left out of the intervals" in messages
    assert [m for m in messages if "leave out" in m] == [LEFT_OUT[kind]]
    assert any(m.startswith("only 57 usable bootstrap replicates for 95%") for m in messages) == (level == 0.95)
    # BC moves both ends of the SD up: its replicates centre below the estimate (z₀ > 0)
    percentile, _ = recorded(lambda: ci_module.bootstrap_intervals(fit, level, reps, kind="percentile"))
    assert kind != "bc" or (low[1] > percentile[0][1] and high[1] > percentile[1][1])


def test_too_many_replicates_without_a_standard_error_give_no_interval():
    """7 of 59 (above 10%) without an SE: no studentized SD or correlation; BC needs both sides."""
    fit, reps = synthetic(boundary=(1, 2, 3, 4, 5, 6, 7))
    (low, high), messages = recorded(lambda: ci_module.bootstrap_intervals(fit, 0.8, reps, kind="studentized"))
    assert np.isfinite([low[0], high[0]]).all() and np.isnan([low[1:], high[1:]]).all()
    assert any("out of 59: sd:within:Intercept 7 (no interval), corr:mean:Intercept,within:Intercept 7 "
               "(no interval)" in m for m in messages)
    reps["mean:x"] = 0.6 + np.abs(reps["mean:x"])  # every replicate above the estimate 0.5
    (low, high), messages = recorded(lambda: ci_module.bootstrap_intervals(fit, 0.8, reps, kind="bc"))
    assert np.isnan([low[0], high[0]]).all() and np.isfinite([low[1], high[1]]).all()
    assert "no BC interval for mean:x: every bootstrap replicate lies on one side of the estimate" in messages


def test_defaults_kind_bc_and_200_replicates_give_no_warning_and_fewer_warn(fit, replicates):
    """No kind covered within Monte Carlo error for every parameter (bench/README.md); BC
    came closest and is the default kind."""
    assert ci_module.DEFAULT_KIND == "bc" == inspect.signature(ci_module.bootstrap_intervals).parameters["kind"].default
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = fit.conf_int(method="bootstrap", replicates=replicates)  # 200 = 5 beyond each end of 95%
    pd.testing.assert_frame_equal(default, quiet_conf_int(fit, replicates=replicates, kind="bc"))
    others = ("studentized", "percentile", "basic")
    assert not any(default.equals(quiet_conf_int(fit, replicates=replicates, kind=k)) for k in others)
    assert boot_module.DEFAULT_BOOT == B
    with pytest.warns(melsm.MelsmFitWarning, match=r"only 199 usable .* 95% .*n_boot=200"):
        fit.conf_int(method="bootstrap", replicates=replicates.iloc[:199])
    with pytest.warns(melsm.MelsmFitWarning, match=r"only 200 usable .* 99% .*n_boot=1000"):
        fit.conf_int(0.01, method="bootstrap", replicates=replicates)


def test_same_seed_same_replicates_and_conf_int_makes_them_the_same_way(fit):
    first = fit.bootstrap(8, seed=5, progress=False)
    again = fit.bootstrap(8, seed=5, progress=False)
    other = fit.bootstrap(8, seed=6, progress=False)
    np.testing.assert_array_equal(first[fit.names], again[fit.names])
    assert not np.isclose(first["mean:x"], other["mean:x"]).any()
    direct = quiet_conf_int(fit, n_boot=8, seed=5, progress=False)
    pd.testing.assert_frame_equal(direct, quiet_conf_int(fit, replicates=first))
    # replicate b depends only on (seed, b): the first 4 of 8 are the 4 of n_boot=4
    np.testing.assert_array_equal(fit.bootstrap(4, seed=5, progress=False)[fit.names], first[fit.names].iloc[:4])


def test_processes_scheduler_gives_the_same_replicates(fit):
    """Dask worker processes draw and refit exactly as this process does."""
    here = fit.bootstrap(8, seed=3, scheduler="synchronous", progress=False)
    calls = []
    there = fit.bootstrap(8, seed=3, scheduler="processes", workers=2,
                          progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(here[fit.names].to_numpy(), there[fit.names].to_numpy())
    assert list(there["converged"]) == list(here["converged"])
    assert calls == [(k, 8) for k in range(1, 9)]
    pd.testing.assert_frame_equal(quiet_conf_int(fit, replicates=here), quiet_conf_int(fit, replicates=there))


@pytest.mark.filterwarnings("ignore:only 19 usable bootstrap replicates")
def test_failed_refits_are_left_out_and_counted_and_too_many_give_nan(fit, monkeypatch):
    """A refit that raises (here: a simulated response that is not finite) is a record with
    ``error``; it is left out with a warning, and above 10% of failures intervals are NaN."""
    draw = boot_module.simulate_response
    failing = {3}

    def sometimes_nan(design, layout, theta, rng):
        y = draw(design, layout, theta, rng)
        return np.full_like(y, np.nan) if sometimes_nan.b in failing else y

    def refit(model, theta, quadrature, seed, b):
        sometimes_nan.b = b
        return original_refit(model, theta, quadrature, seed, b)

    original_refit = boot_module.refit
    monkeypatch.setattr(boot_module, "simulate_response", sometimes_nan)
    monkeypatch.setattr(boot_module, "refit", refit)
    reps = fit.bootstrap(20, seed=2, progress=False)
    assert list(reps.index[~reps["converged"]]) == [3]
    assert reps.loc[3, "error"].startswith("MelsmInputError: the new response must be")
    assert reps.loc[3, fit.names].isna().all() and (reps.drop(index=3)["error"] == "").all()
    with pytest.warns(melsm.MelsmFitWarning, match="1 of 20 bootstrap refits did not converge and are left out"):
        got = fit.conf_int(method="bootstrap", replicates=reps, kind="percentile")
    expected = np.quantile(reps.drop(index=3)[fit.names].to_numpy(), [0.025, 0.975], axis=0)
    np.testing.assert_allclose(got.to_numpy().T, expected, rtol=1e-13)

    failing.update({7, 11})
    reps = fit.bootstrap(20, seed=2, progress=False)
    with pytest.warns(melsm.MelsmFitWarning, match=r"3 of 20 bootstrap refits did not converge, more than 10%"):
        got = fit.conf_int(method="bootstrap", replicates=reps)
    assert got.isna().all().all()


def test_standard_deviations_at_zero_in_replicates_are_values():
    """With no group variance the fit has SD(u) = 0 on the boundary; replicates estimated at
    0 are converged values 0, and the interval starts at 0."""
    with pytest.warns(melsm.MelsmBoundaryWarning, match="sd:mean:Intercept = 0"):
        fit = melsm.Model(mean=FORMULA, data=gaussian_data(101, sd_u=0.0)).fit()
    assert fit.boundary == ["sd:mean:Intercept"]
    reps = fit.bootstrap(40, seed=1, progress=False)
    sd = reps["sd:mean:Intercept"]
    assert reps["converged"].all()
    assert (sd == 0).sum() >= 10 and (sd > 0).any()
    assert (reps.loc[sd == 0, "boundary"] == "sd:mean:Intercept").all()
    interval = quiet_conf_int(fit, replicates=reps, kind="percentile").loc["sd:mean:Intercept"]
    assert interval["lower"] == 0 and interval["upper"] == np.quantile(sd, 0.975) > 0
    # the fit's SE of an SD at 0 is NaN: no studentized interval (as no Wald one), the others stay
    student, messages = recorded(lambda: fit.conf_int(method="bootstrap", replicates=reps, kind="studentized"))
    assert "no studentized interval for sd:mean:Intercept: the fit has no finite standard error there (on the " \
           "boundary)" in messages
    assert student.loc["sd:mean:Intercept"].isna().all() and student.drop(index="sd:mean:Intercept").notna().all().all()


@pytest.mark.parametrize("options, message", [
    ({"n_boot": 0}, "n_boot must be a positive integer (bootstrap replicates), not 0"),
    ({"n_boot": -5}, "n_boot must be a positive integer"),
    ({"n_boot": 2.5}, "n_boot must be a positive integer"),
    ({"n_boot": "100"}, "n_boot must be a positive integer"),
    ({"n_boot": True}, "n_boot must be a positive integer"),
    ({"seed": -1}, "seed must be an integer of at least 0, not -1"),
    ({"seed": 0.5}, "seed must be an integer of at least 0"),
    ({"scheduler": "threads"}, "scheduler must be 'synchronous', 'processes' or the address of a Dask scheduler"),
    ({"scheduler": None}, "scheduler must be"),
    ({"workers": 2}, "workers= is for scheduler='processes'"),
    ({"scheduler": "processes", "workers": 0}, "workers must be a positive integer"),
])
def test_bad_options_are_refused_in_one_line(fit, options, message):
    for call in (lambda: fit.bootstrap(**options), lambda: fit.conf_int(method="bootstrap", **options)):
        with pytest.raises(melsm.MelsmInputError) as err:
            call()
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_interval_options_are_refused(fit, replicates):
    with pytest.raises(melsm.MelsmInputError,
                       match="kind must be one of 'studentized', 'bc', 'bca', 'percentile', 'basic', 'profile', "
                             "not 'bcx'"):
        fit.conf_int(method="bootstrap", replicates=replicates, kind="bcx")
    without_se = replicates.drop(columns="se:mean:x")
    with pytest.raises(melsm.MelsmInputError, match="kind='studentized' needs the refits' standard errors"):
        fit.conf_int(method="bootstrap", replicates=without_se, kind="studentized")
    quiet_conf_int(fit, replicates=without_se, kind="bc")  # the other kinds do without them
    with pytest.raises(melsm.MelsmInputError, match=r"either replicates= or the options .*\(n_boot\)"):
        fit.conf_int(method="bootstrap", replicates=replicates, n_boot=10)
    with pytest.raises(melsm.MelsmInputError, match="replicates must be this fit's fit.bootstrap"):
        fit.conf_int(method="bootstrap", replicates=replicates.drop(columns="mean:x"))
    with pytest.raises(TypeError, match="n_boots"):
        fit.conf_int(method="bootstrap", n_boots=10)
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        fit.conf_int(alpha=1.5, method="bootstrap", replicates=replicates)


def test_refused_fits():
    # MCMC fits keep the base hook: a ValueError, and no bootstrap method
    assert MCMCResults._bootstrap_intervals is Conventions._bootstrap_intervals
    assert not hasattr(MCMCResults, "bootstrap")
    with pytest.raises(ValueError, match="bootstrap intervals need a maximum-likelihood fit"):
        Conventions._bootstrap_intervals(None, 0.95)
    # frequency weights: a row stands for several observations, each needing its own draw
    weighted = types.SimpleNamespace(model=types.SimpleNamespace(design=types.SimpleNamespace(weights=np.ones(3))),
                                     converged=True)
    with pytest.raises(melsm.MelsmInputError, match="not available for fits with frequency weights"):
        boot_module.bootstrap(weighted, 10)


def test_with_response_keeps_the_design_and_checks_the_response(fit):
    model = fit.model
    y = model.design.y + 1.0
    other = model.with_response(y)
    assert other.design.y is not model.design.y and np.array_equal(other.design.y, y)
    assert other.design.X is model.design.X and other.layout is model.layout
    assert model.design.y is not y  # the original is untouched
    for bad in (y[:-1], np.where(np.arange(len(y)) == 0, np.nan, y)):
        with pytest.raises(melsm.MelsmInputError, match=f"must be {len(y)} finite numbers"):
            model.with_response(bad)


def test_coverage_benchmark_runs_small():
    """bench/bootstrap_coverage.py's study, tiny and in this process (its committed output
    is not read here): every parameter gets Wald, studentized, BC, BCa, percentile and basic
    intervals; the replicates it returns give the same intervals again without refits."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bootstrap_coverage.py"
    spec = importlib.util.spec_from_file_location("bootstrap_coverage", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(replications=2, boot=9, scheduler="synchronous")
    assert result["replications"] == 2 and result["boot"] == 9 and result["fits_not_converged"] == 0
    assert set(result["coverage"]) == set(bench.TRUTH)
    rows = pd.DataFrame(result["rows"])
    assert len(rows) == 2 * len(bench.TRUTH)
    assert bench.METHODS == ("wald", *(k for k in ci_module.KINDS if k != "profile"))  # --roots adds it
    for method in bench.METHODS:
        made = rows[f"{method}_lower"].notna()  # studentized: 1 of 9 replicates without an SE is NaN
        assert made.sum() >= len(rows) - 2 and (rows[f"{method}_lower"] <= rows[f"{method}_upper"])[made].all()
        for entry in map(lambda e: e[method], result["coverage"].values()):
            assert entry["intervals"] == 2 or method == "studentized"
            assert entry["below"] + entry["above"] == round(entry["intervals"] * (1 - np.nan_to_num(entry["coverage"])))
    again = bench.run(replications=2, boot=9, scheduler="synchronous", stored=result["replicates"])
    assert not again["refitted"]
    columns = [f"{m}_{end}" for m in bench.METHODS for end in ("lower", "upper")]
    pd.testing.assert_frame_equal(pd.DataFrame(again["rows"])[columns], rows[columns])
