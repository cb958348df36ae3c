"""Double-bootstrap calibrations tried on the study of bootstrap_coverage.py, an
experiment, not kinds of ``conf_int``: the fast double bootstrap (FDB) of the studentized
and percentile intervals, and variance-stabilised basic intervals. It reads the replicate
tables that ``bootstrap_coverage.py --double --save-replicates`` wrote (the inner columns
of ``fit.bootstrap(double=True)``: one inner data set simulated from each outer refit θ*_b
and refitted) and that run's JSON (the estimates and Wald intervals, from which ψ̂ and the
fit's SE on the Wald scale come back: se = (ψ(upper) − ψ(lower)) / (2 z)). Everything is
on the Wald intervals' scale ψ (θ, log σ, atanh ρ; an SD at 0 is −∞, a correlation at ±1
is ±∞), with a = (1 − level)/2, ψ*_b the outer replicates and ψ**_b the inner ones.

FDB (Davidson & MacKinnon 2007; Chang & Hall 2015) replaces the C inner replicates per
outer one of a double bootstrap by one, pooled: the share of outer roots beyond the
pooled inner quantile Q**(γ) estimates the coverage of a nominal-γ end, and γ is chosen
so that it is a.

* ``fdb_studentized``: t*_b = (ψ*_b − ψ̂)/se*_b, t**_b = (ψ**_b − ψ*_b)/se**_b; γ_p =
  F**(Q*(p)) for p = a, 1 − a (F** the share of the t** at or below, Q* the quantiles of
  the t*); interval ψ̂ − Q*(γ_{1−a})·se, ψ̂ − Q*(γ_a)·se, transformed back. Replicates
  without a finite t are left out.
* ``fdb_percentile``: d*_b = ψ*_b − ψ̂, d**_b = ψ**_b − ψ*_b; the lower end is the γ_L
  quantile of the θ*, γ_L = F**(−Q_{d*}(1 − a)), the upper the 1 − γ_U quantile,
  1 − γ_U = F**(−Q_{d*}(a)) (F** of the d**). Non-finite d are left out.

Variance-stabilised basic intervals (Tibshirani 1988), ``stabilized``: the estimator's SD
taken as s(ψ) ∝ exp(c (ψ − ψ̂)), so g(ψ) = (1 − exp(−c (ψ − ψ̂)))/c (ψ − ψ̂ for c = 0)
has g′ ∝ 1/s and g(ψ̂) = 0; the interval is g⁻¹(−Q(1 − a)), g⁻¹(−Q(a)) for Q the
quantiles of the g(ψ*_b) (every outer replicate, ±∞ included), g⁻¹(v) = ψ̂ − log(1 −
c v)/c, the end of ψ's range where 1 − c v ≤ 0. c comes from the pairs with ψ*_b and
ψ**_b finite: least squares of d_b = ψ**_b − ψ*_b on (1, x_b), x_b = ψ*_b − ψ̂, then
e_b² ~ exp(β₀ + β₁ x_b) by the normal likelihood of the residuals e_b (a gamma GLM with
log link, IRLS), c = β₁/2 (``variance_slope``). ``stabilized_se``: the same with c the
least-squares slope of log se*_b (the outer refits' own SEs on the ψ scale) on ψ*_b, no
inner replicates needed.

    PYTHONPATH=src python bench/bootstrap_double.py reps.parquet bench/bootstrap_coverage.json \\
        --out bench/bootstrap_double.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.special

#: At most this many IRLS steps for the variance's fit (``variance_slope``), until no
#: coefficient moves by more than ``IRLS_TOLERANCE``.
IRLS_STEPS = 100
IRLS_TOLERANCE = 1e-12
METHODS = ("fdb_studentized", "fdb_percentile", "stabilized", "stabilized_se")


def to_psi(values, kind: str) -> np.ndarray:
    """Reported values on the Wald intervals' scale: θ, log σ (−∞ at 0), atanh ρ (±∞ at ±1);
    NaN stays NaN."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "sd":
            return np.log(v)
        if kind == "corr":
            return np.arctanh(v)
    return v.copy()


def quantiles(values, p) -> np.ndarray:
    """numpy's default quantiles of the non-NaN ``values``, infinities allowed: where linear
    interpolation between two equal infinities gives NaN, the infinity."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    with np.errstate(invalid="ignore"):
        q = np.quantile(v, p)
        return np.where(np.isnan(q), np.quantile(v, p, method="nearest"), q)


def variance_slope(outer, inner, psi_hat: float) -> float:
    """c of the module docstring, step 1, from the outer and inner replicates on the ψ
    scale; NaN with fewer than 3 usable pairs (or ψ̂ not finite), or when the fit of the
    variance does not converge."""
    outer, inner = np.asarray(outer, dtype=float), np.asarray(inner, dtype=float)
    ok = np.isfinite(outer) & np.isfinite(inner) & np.isfinite(psi_hat)
    x, d = outer[ok] - psi_hat, inner[ok] - outer[ok]
    if len(x) < 3 or np.ptp(x) == 0:
        return float("nan")
    design = np.column_stack([np.ones_like(x), x])
    squares = (d - design @ np.linalg.lstsq(design, d, rcond=None)[0]) ** 2
    design, squares = design[squares > 0], squares[squares > 0]
    if len(squares) < 3 or np.ptp(design[:, 1]) == 0:
        return float("nan")
    # IRLS of the gamma GLM (log link) of e² on x: its score equations Σ x_b (e_b²/μ_b − 1) = 0
    # are those of the normal likelihood of e_b ~ N(0, μ_b), more efficient than regressing log|e|
    beta = np.linalg.lstsq(design, np.log(squares), rcond=None)[0]
    for _ in range(IRLS_STEPS):
        eta = design @ beta
        with np.errstate(over="ignore"):  # a diverging fit: caught below
            new = np.linalg.lstsq(design, eta + squares * np.exp(-eta) - 1, rcond=None)[0]
        if not np.all(np.isfinite(new)):
            return float("nan")
        done, beta = np.max(np.abs(new - beta)) < IRLS_TOLERANCE, new
        if done:
            return float(beta[1] / 2)
    return float("nan")


def stabilize(psi, psi_hat: float, c: float) -> np.ndarray:
    """g(ψ) = (1 − exp(−c (ψ − ψ̂)))/c, ψ − ψ̂ for c = 0 (module docstring, step 2)."""
    u = np.asarray(psi, dtype=float) - psi_hat
    if c == 0:
        return u
    with np.errstate(over="ignore"):
        return -np.expm1(-c * u) / c


def unstabilize(v, psi_hat: float, c: float) -> np.ndarray:
    """g⁻¹(v) = ψ̂ − log(1 − c v)/c; beyond g's range (1 − c v ≤ 0) the end of ψ's range
    (+∞ for c > 0, −∞ for c < 0)."""
    v = np.asarray(v, dtype=float)
    if c == 0:
        return psi_hat + v
    w = 1 - c * v
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inside = psi_hat - np.log1p(-c * v) / c
    return np.where(w > 0, inside, np.inf if c > 0 else -np.inf)


def stabilized_ends(outer, psi_hat: float, c: float, level: float) -> tuple[float, float]:
    """One parameter's stabilised interval on the ψ scale from the outer replicates and c
    (module docstring); NaN when ψ̂ or c is not finite."""
    if not (np.isfinite(psi_hat) and np.isfinite(c)):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    q_low, q_high = quantiles(stabilize(outer, psi_hat, c), [a, 1 - a])
    low, high = unstabilize([-q_high, -q_low], psi_hat, c)
    return float(low), float(high)


def se_slope(outer, se_outer, psi_hat: float) -> float:
    """c of ``stabilized_se``: the least-squares slope of log se*_b on ψ*_b (finite pairs)."""
    ok = np.isfinite(outer) & np.isfinite(se_outer) & (se_outer > 0)
    if ok.sum() < 3 or np.ptp(outer[ok]) == 0:
        return float("nan")
    x, y = outer[ok] - psi_hat, np.log(se_outer[ok])
    return float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))


KIND_OF = {"sd": "sd", "corr": "corr"}


def kind_of(name: str) -> str:
    return KIND_OF.get(name.split(":")[0], "coef")


def finite(v: np.ndarray) -> np.ndarray:
    return v[np.isfinite(v)]


def share_at_or_below(values: np.ndarray, x: float) -> float:
    return float(np.mean(values <= x))


def intervals(reps: pd.DataFrame, name: str, estimate: float, wald: tuple[float, float],
              level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Each method's interval for one parameter, on the reported scale (module docstring)."""
    kind, a = kind_of(name), (1 - level) / 2
    rows = reps[reps["converged"] & reps["inner:converged"]]
    psi_hat = float(to_psi(estimate, kind))
    se_hat = float((to_psi(wald[1], kind) - to_psi(wald[0], kind)) / (2 * scipy.special.ndtri(1 - a)))
    values = rows[name].to_numpy(float)
    outer, inner = to_psi(values, kind), to_psi(rows[f"inner:{name}"], kind)
    jac = {"coef": lambda v: np.ones_like(v), "sd": lambda v: v, "corr": lambda v: 1 - v ** 2}[kind]
    with np.errstate(all="ignore"):
        se_outer = rows[f"se:{name}"].to_numpy(float) / jac(values)
        se_inner = rows[f"inner:se:{name}"].to_numpy(float) / jac(rows[f"inner:{name}"].to_numpy(float))
        t1, t2 = finite((outer - psi_hat) / se_outer), finite((inner - outer) / se_inner)
        d1, d2 = finite(outer - psi_hat), finite(inner - outer)
    back = {"coef": lambda v: v, "sd": np.exp, "corr": np.tanh}[kind]
    out = dict.fromkeys(METHODS, (np.nan, np.nan))
    if np.isfinite(se_hat) and len(t1) and len(t2):
        g_low, g_high = share_at_or_below(t2, quantiles(t1, a)), share_at_or_below(t2, quantiles(t1, 1 - a))
        out["fdb_studentized"] = (back(psi_hat - quantiles(t1, g_high) * se_hat),
                                  back(psi_hat - quantiles(t1, g_low) * se_hat))
    if np.isfinite(psi_hat) and len(d1) and len(d2):
        p_low, p_high = share_at_or_below(d2, -quantiles(d1, 1 - a)), share_at_or_below(d2, -quantiles(d1, a))
        out["fdb_percentile"] = tuple(float(q) for q in quantiles(values, [p_low, p_high]))
    slopes = {"stabilized": variance_slope(outer, inner, psi_hat) if np.isfinite(psi_hat) else np.nan,
              "stabilized_se": se_slope(outer, se_outer, psi_hat) if np.isfinite(psi_hat) else np.nan}
    for method, c in slopes.items():
        out[method] = tuple(float(back(end)) for end in stabilized_ends(outer, psi_hat, c, level))
    return out


def summarise(frame: pd.DataFrame) -> dict:
    """Per parameter and method: coverage ± MC SE over the finite intervals, misses below /
    above the truth, mean width."""
    made = frame[np.isfinite(frame["lower"]) & np.isfinite(frame["upper"])].copy()
    made["covered"] = (made["lower"] <= made["truth"]) & (made["truth"] <= made["upper"])
    out = {}
    for (name, method), g in made.groupby(["parameter", "method"], sort=False):
        p, n = float(g["covered"].mean()), len(g)
        out.setdefault(name, {})[method] = {
            "coverage": p, "mc_se": float(np.sqrt(p * (1 - p) / n)), "intervals": n,
            "below": int((g["upper"] < g["truth"]).sum()), "above": int((g["lower"] > g["truth"]).sum()),
            "mean_width": float((g["upper"] - g["lower"]).mean()),
            "median_width": float((g["upper"] - g["lower"]).median())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("replicates", type=Path)
    parser.add_argument("study", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    study = json.loads(args.study.read_text())
    reps, rows = pd.read_parquet(args.replicates), pd.DataFrame(study["rows"])
    out = []
    for _, row in rows[rows["fit_converged"]].iterrows():
        table = reps[reps["replication"] == row["replication"]]
        if not len(table):
            continue
        found = intervals(table, row["parameter"], row["estimate"], (row["wald_lower"], row["wald_upper"]))
        truth = study["design"]["truth"][row["parameter"]]
        out += [{"replication": row["replication"], "parameter": row["parameter"], "method": m, "lower": low,
                 "upper": high, "truth": truth} for m, (low, high) in found.items()]
    frame = pd.DataFrame(out)
    result = {"replications": int(frame["replication"].nunique()),
              "boot": int(reps.groupby("replication").size().max()),
              "inner_refits_failed": int((~reps["inner:converged"]).sum()), "coverage": summarise(frame)}
    for name, entry in result["coverage"].items():
        print(f"{name:40s}" + "".join(f"  {m} {e['coverage']:.3f} ({e['below']}/{e['above']}, {e['intervals']})"
                                      for m, e in entry.items()))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
