"""Double bootstrap replicates (melsm.results.bootstrap with ``double=True``;
docs/architecture.md, 'Bootstrap intervals') and the calibrations of the experiment
bench/bootstrap_double.py: the inner replicates against refits made by hand,
reproducibility on every scheduler, refused input, and the stabilised interval and the
FDB levels against a hand computation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm.results import bootstrap as boot_module
from melsm.results.predict import simulate_response

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bootstrap_double.py"
_SPEC = importlib.util.spec_from_file_location("bootstrap_double", _PATH)
stab = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(stab)

NAMES = ["mean:x", "sd:within:Intercept", "corr:mean:Intercept,within:Intercept"]
KINDS = ["coef", "sd", "corr"]
ESTIMATES = np.array([0.5, 0.45, 0.3])


def synthetic(n: int = 80, seed: int = 11) -> pd.DataFrame:
    """``n`` double replicates of the parameters ``NAMES`` (estimates ``ESTIMATES``): the outer ones
    spread as a skewed SD and a correlation would, the inner ones around them with an SD
    that grows as the outer value falls; replicate 3 failed outside, 4 inside; 10 and 11
    put the SD at 0 (correlation NaN), 20–22 the correlation at 1 (inner 21 also)."""
    rng = np.random.default_rng(seed)
    psi = np.column_stack([0.5 + 0.1 * rng.standard_normal(n), np.log(0.42) + 0.3 * rng.standard_normal(n),
                           0.25 + 0.3 * rng.standard_normal(n)])
    spread = np.array([0.1, 0.3, 0.3]) * np.exp(np.array([0.0, -1.5, 0.5]) * (psi - psi.mean(axis=0)))
    inner = psi - np.array([0.0, 0.05, 0.02]) + spread * rng.standard_normal((n, 3))
    outer_values, inner_values = psi.copy(), inner.copy()
    for k, back in ((1, np.exp), (2, np.tanh)):
        outer_values[:, k], inner_values[:, k] = back(psi[:, k]), back(inner[:, k])
    outer_values[[10, 11], 1:] = [0.0, np.nan]
    inner_values[[10, 11], 1:] = [0.0, np.nan]
    outer_values[[20, 21, 22], 2], inner_values[21, 2] = 1.0, 1.0
    outer_values[3], inner_values[[3, 4]] = np.nan, np.nan
    se = np.full((n, 3), 0.1)
    reps = pd.DataFrame(np.hstack([outer_values, se]), columns=[*NAMES, *boot_module.se_names(NAMES)])
    reps["converged"] = np.arange(n) != 3
    inner_frame = pd.DataFrame(np.hstack([inner_values, se]), columns=boot_module.inner_names(NAMES)[:-2])
    reps = pd.concat([reps, inner_frame], axis=1)
    reps["inner:converged"], reps["inner:seconds"] = ~np.isin(np.arange(n), [3, 4]), 0.1
    return reps


def limit_quantile(x, p: float) -> float:
    """numpy's default quantile, x₍ₖ₎ + (h − k)(x₍ₖ₊₁₎ − x₍ₖ₎) with h = (n − 1)p, k = ⌊h⌋,
    taken as its limit where a neighbour is infinite."""
    x, h = np.sort(np.asarray(x, dtype=float)), (len(x) - 1) * p
    k = int(h)
    low, high, t = x[k], x[min(k + 1, len(x) - 1)], h - k
    if t == 0 or low == high or np.isinf(low):
        return low
    return high if np.isinf(high) else low + t * (high - low)


def line(x, y) -> tuple[float, float]:
    """Least-squares intercept and slope of y on x."""
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    return float(y.mean() - slope * x.mean()), slope


def variance_fit(x, squares) -> tuple[float, float]:
    """β of e² ~ exp(β₀ + β₁ x) by the normal likelihood: Newton's method on its score
    Σ (1, x)(e²/μ − 1) = 0 with the expected information Σ (1, x)ᵀ(1, x), from log e² on x."""
    beta = np.array(line(x, np.log(squares)))
    for _ in range(200):
        mu = np.exp(beta[0] + beta[1] * x)
        score = np.array([np.sum(squares / mu - 1), np.sum(x * (squares / mu - 1))])
        info = np.array([[len(x), np.sum(x)], [np.sum(x), np.sum(x * x)]])
        step = np.linalg.solve(info, score)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-14:
            break
    return float(beta[0]), float(beta[1])


def hand_stabilized(reps, level):
    """The docstring of bench/bootstrap_double.py, written out."""
    rows = reps[reps["converged"] & reps["inner:converged"]]
    to = {"coef": lambda v: v, "sd": np.log, "corr": np.arctanh}
    back = {"coef": lambda v: v, "sd": np.exp, "corr": np.tanh}
    a, out = (1 - level) / 2, []
    for name, kind, est in zip(NAMES, KINDS, ESTIMATES, strict=True):
        with np.errstate(divide="ignore"):
            outer, inner = to[kind](rows[name].to_numpy()), to[kind](rows[f"inner:{name}"].to_numpy())
        psi_hat = to[kind](est)
        ok = np.isfinite(outer) & np.isfinite(inner)
        x, d = outer[ok] - psi_hat, inner[ok] - outer[ok]
        b0, b1 = line(x, d)
        e = d - b0 - b1 * x
        c = variance_fit(x[e != 0], e[e != 0] ** 2)[1] / 2
        g = (1 - np.exp(-c * (outer[~np.isnan(outer)] - psi_hat))) / c
        ends = []
        for v in (-limit_quantile(g, 1 - a), -limit_quantile(g, a)):
            ends.append(psi_hat - np.log(1 - c * v) / c if 1 - c * v > 0 else (np.inf if c > 0 else -np.inf))
        out.append(back[kind](np.array(ends)))
    return np.array(out)


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_stabilized_intervals_equal_a_hand_computation(level):
    reps = synthetic()
    got = [stab.intervals(reps, name, est, (est - 0.2, est + 0.2), level)["stabilized"]
           for name, est in zip(NAMES, ESTIMATES, strict=True)]
    np.testing.assert_allclose(np.array(got), hand_stabilized(reps, level), rtol=1e-12, atol=1e-12)
    (low, high) = np.array(got).T
    assert 0 <= low[1] < ESTIMATES[1] < high[1] and -1 < low[2] < high[2] <= 1
    assert (low[1] == 0) == (level == 0.95)  # at 95% the SD's lower end lies beyond g's range: 0
    with np.errstate(divide="ignore"):  # the SD's spread grows as it falls: c < 0
        sd = np.log(reps.loc[reps["inner:converged"], ["sd:within:Intercept", "inner:sd:within:Intercept"]])
    assert stab.variance_slope(sd.iloc[:, 0], sd.iloc[:, 1], np.log(0.45)) < -0.5


def test_fdb_percentile_levels_equal_a_hand_computation():
    """γ_L = F**(−Q_{d*}(1 − a)), 1 − γ_U = F**(−Q_{d*}(a)) on the log scale of the SD."""
    reps = synthetic()
    rows = reps[reps["converged"] & reps["inner:converged"]]
    got = stab.intervals(reps, "sd:within:Intercept", 0.45, (0.3, 0.6), 0.9)["fdb_percentile"]
    with np.errstate(divide="ignore"):
        outer = np.log(rows["sd:within:Intercept"].to_numpy())
        inner = np.log(rows["inner:sd:within:Intercept"].to_numpy())
    with np.errstate(invalid="ignore"):  # −∞ − (−∞): an SD at 0 in both, left out
        d1, d2 = outer - np.log(0.45), inner - outer
    d1, d2 = d1[np.isfinite(d1)], d2[np.isfinite(d2)]
    levels = [np.mean(d2 <= -limit_quantile(d1, 0.95)), np.mean(d2 <= -limit_quantile(d1, 0.05))]
    want = [limit_quantile(rows["sd:within:Intercept"].to_numpy(), p) for p in levels]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_stabilize_and_its_inverse():
    psi = np.array([-np.inf, -1.0, 0.2, 0.7, np.inf])
    for c in (-1.3, 0.0, 0.8):
        g = stab.stabilize(psi, 0.2, c)
        assert g[2] == 0 and np.all(np.diff(g) > 0)  # increasing, 0 at ψ̂
        np.testing.assert_allclose(stab.unstabilize(g[1:4], 0.2, c), psi[1:4], rtol=1e-12)
    assert stab.stabilize(-np.inf, 0.2, -1.3) == pytest.approx(1 / -1.3)  # g's range is (1/c, ∞) for c < 0
    assert stab.unstabilize(1 / -1.3 - 0.01, 0.2, -1.3) == -np.inf  # beyond it: ψ's end, an SD of 0
    assert stab.unstabilize(1 / 0.8 + 0.01, 0.2, 0.8) == np.inf
    np.testing.assert_array_equal(stab.quantiles([-np.inf, -np.inf, 1.0, 2.0], [0.2, 0.5]), [-np.inf, -np.inf])
    assert np.isnan(stab.variance_slope([1.0, 2.0], [1.5, 2.5], 1.0))  # too few pairs: no interval


def data(seed: int = 4, groups: int = 15, rows: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), rows)
    x = rng.standard_normal(groups * rows)
    y = 1 + 0.5 * x + 0.7 * rng.standard_normal(groups)[g] + rng.standard_normal(groups * rows)
    return pd.DataFrame({"y": y, "x": x, "g": g})


@pytest.fixture(scope="module")
def fit():
    return melsm.Model(mean="y ~ x + (1 | g)", data=data()).fit()


def test_double_replicates_add_inner_refits_from_each_outer_estimate(fit):
    single = fit.bootstrap(3, seed=2, progress=False)
    double = fit.bootstrap(3, seed=2, progress=False, double=True)
    assert list(double.columns) == [*single.columns, *boot_module.inner_names(fit.names)]
    pd.testing.assert_frame_equal(double[fit.names], single[fit.names])  # the outer refits are the same
    assert double["inner:converged"].all() and (double["inner:seconds"] > 0).all()
    # inner replicate 1 by hand: the outer refit, data simulated from it with SeedSequence([2, 1, 1]), refitted
    model = fit.model
    outer = model.with_response(simulate_response(model.design, model.layout, fit.theta,
                                                  boot_module.replicate_rng(2, 1))).fit(start=fit.theta)
    rng = np.random.default_rng(np.random.SeedSequence([2, 1, 1]))
    inner = model.with_response(simulate_response(model.design, model.layout, outer.theta, rng)).fit(start=outer.theta)
    np.testing.assert_allclose(double.loc[1, [f"inner:{n}" for n in fit.names]], inner.table()["estimate"],
                               rtol=1e-10)


def test_processes_scheduler_gives_the_same_double_replicates(fit):
    here = fit.bootstrap(4, seed=3, progress=False, double=True)
    there = fit.bootstrap(4, seed=3, scheduler="processes", workers=2, progress=False, double=True)
    values = [*fit.names, *boot_module.inner_names(fit.names)[:-2]]
    np.testing.assert_array_equal(here[values].to_numpy(), there[values].to_numpy())
    assert list(there["inner:converged"]) == list(here["inner:converged"])


def test_bad_double_is_refused_in_one_line(fit):
    with pytest.raises(melsm.MelsmInputError) as err:
        fit.bootstrap(3, double="yes")
    assert str(err.value) == "double must be True or False, not 'yes'"


def test_coverage_study_makes_double_replicates_that_the_experiment_reads():
    """bench/bootstrap_coverage.py with ``double`` (tiny, in this process): the replicates
    carry the inner columns and bench/bootstrap_double.py makes every interval from them."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bootstrap_coverage.py"
    spec = importlib.util.spec_from_file_location("bootstrap_coverage", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(replications=1, boot=19, scheduler="synchronous", double=True)
    reps, row = result["replicates"], result["rows"][1]  # mean:x
    assert set(boot_module.inner_names(list(bench.TRUTH))) <= set(reps.columns)
    found = stab.intervals(reps, row["parameter"], row["estimate"], (row["wald_lower"], row["wald_upper"]))
    assert set(found) == set(stab.METHODS)
    assert all(low < row["estimate"] < high for low, high in found.values())
