"""Fast double bootstrap (FDB) calibration of the studentized and percentile intervals on
the study of bootstrap_coverage.py: an experiment, not a kind of ``conf_int``. It reads
the replicate tables that ``bootstrap_coverage.py --save-replicates`` wrote (with the
inner columns of ``fit.bootstrap(double=True)``) and that run's JSON (the estimates and
Wald intervals, from which ψ̂ and the fit's SE on the Wald scale come back:
se = (ψ(upper) − ψ(lower)) / (2 z)).

FDB (Davidson & MacKinnon 2007; Chang & Hall 2015) replaces the C inner replicates per
outer one of a double bootstrap by one, pooled: with a = α/2, outer roots r*_b and inner
roots r**_b, the share of outer roots below the pooled inner quantile Q**(γ) estimates
the coverage of a nominal-γ end, and γ is chosen so that it is a:

* studentized, on the Wald scale ψ (θ, log σ, atanh ρ): t*_b = (ψ*_b − ψ̂)/se*_b,
  t**_b = (ψ**_b − ψ*_b)/se**_b; γ_p = F**(Q*(p)) for p = a, 1 − a (F** the share of the
  t** at or below, Q* the quantiles of the t*); interval ψ̂ − Q*(γ_{1−a})·se,
  ψ̂ − Q*(γ_a)·se, transformed back. Replicates without a finite t are left out.
* percentile: d*_b = ψ*_b − ψ̂, d**_b = ψ**_b − ψ*_b; the lower end is the γ_L quantile
  of the θ*, γ_L = F**(−Q_{d*}(1 − a)), the upper the 1 − γ_U quantile,
  1 − γ_U = F**(−Q_{d*}(a)) (F** of the d**). Non-finite d (an SD at 0, a correlation
  at ±1) are left out of the d's.

    PYTHONPATH=src python bench/bootstrap_fdb.py reps.parquet bench/bootstrap_coverage.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.special

from melsm.results.bootstrap_stabilized import quantiles, to_psi

KIND_OF = {"sd": "sd", "corr": "corr"}


def kind_of(name: str) -> str:
    return KIND_OF.get(name.split(":")[0], "coef")


def finite(v: np.ndarray) -> np.ndarray:
    return v[np.isfinite(v)]


def share_at_or_below(values: np.ndarray, x: float) -> float:
    return float(np.mean(values <= x))


def fdb_intervals(reps: pd.DataFrame, name: str, estimate: float, wald: tuple[float, float], level: float = 0.95):
    """(studentized FDB, percentile FDB) intervals of one parameter (module docstring)."""
    kind, a = kind_of(name), (1 - level) / 2
    z = scipy.special.ndtri(1 - a)
    rows = reps[reps["converged"] & reps["inner:converged"]]
    psi_hat = float(to_psi(estimate, kind))
    se_hat = float((to_psi(wald[1], kind) - to_psi(wald[0], kind)) / (2 * z))
    outer, inner = to_psi(rows[name], kind), to_psi(rows[f"inner:{name}"], kind)
    jac = {"coef": lambda v: np.ones_like(v), "sd": lambda v: v, "corr": lambda v: 1 - v ** 2}[kind]
    with np.errstate(all="ignore"):
        se_outer = rows[f"se:{name}"].to_numpy(float) / jac(rows[name].to_numpy(float))
        se_inner = rows[f"inner:se:{name}"].to_numpy(float) / jac(rows[f"inner:{name}"].to_numpy(float))
        t1, t2 = finite((outer - psi_hat) / se_outer), finite((inner - outer) / se_inner)
        d1, d2 = finite(outer - psi_hat), finite(inner - outer)
    back = {"coef": lambda v: v, "sd": np.exp, "corr": np.tanh}[kind]
    student = (np.nan, np.nan)
    if np.isfinite(se_hat) and len(t1) and len(t2):
        g_low, g_high = share_at_or_below(t2, quantiles(t1, a)), share_at_or_below(t2, quantiles(t1, 1 - a))
        student = (back(psi_hat - quantiles(t1, g_high) * se_hat), back(psi_hat - quantiles(t1, g_low) * se_hat))
    percentile = (np.nan, np.nan)
    if np.isfinite(psi_hat) and len(d1) and len(d2):
        p_low = share_at_or_below(d2, -quantiles(d1, 1 - a))
        p_high = share_at_or_below(d2, -quantiles(d1, a))
        values = rows[name].to_numpy(float)
        percentile = tuple(quantiles(values, [p_low, p_high]))
    return student, percentile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("replicates", type=Path)
    parser.add_argument("study", type=Path)
    args = parser.parse_args()
    reps, rows = pd.read_parquet(args.replicates), pd.DataFrame(json.loads(args.study.read_text())["rows"])
    truth = json.loads(args.study.read_text())["design"]["truth"]
    out = []
    for _, row in rows[rows["fit_converged"]].iterrows():
        table = reps[reps["replication"] == row["replication"]]
        student, percentile = fdb_intervals(table, row["parameter"], row["estimate"],
                                            (row["wald_lower"], row["wald_upper"]))
        for method, (low, high) in (("fdb_studentized", student), ("fdb_percentile", percentile)):
            out.append({"parameter": row["parameter"], "method": method, "low": low, "high": high,
                        "truth": truth[row["parameter"]]})
    frame = pd.DataFrame(out)
    frame = frame[np.isfinite(frame["low"]) & np.isfinite(frame["high"])]
    frame["covered"] = (frame["low"] <= frame["truth"]) & (frame["truth"] <= frame["high"])
    frame["below"], frame["above"] = frame["high"] < frame["truth"], frame["low"] > frame["truth"]
    frame["width"] = frame["high"] - frame["low"]
    summary = frame.groupby(["parameter", "method"], sort=False).agg(
        coverage=("covered", "mean"), intervals=("covered", "size"), below=("below", "sum"),
        above=("above", "sum"), mean_width=("width", "mean"))
    summary["mc_se"] = np.sqrt(summary["coverage"] * (1 - summary["coverage"]) / summary["intervals"])
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
