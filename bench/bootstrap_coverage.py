"""Coverage of the parametric bootstrap intervals (``fit.conf_int(method="bootstrap")``) on a
small simulation study with known truth, beside the Wald intervals of the same fits.

Design: J = 30 groups of n = 10 rows, x ~ N(0, 1) per row,

    y_ij = β0 + β1 x_ij + u_j + e_ij,   log σ²_ij = α0 + v_j,   (u_j, v_j) ~ N(0, Σ),

with β0 = 0, β1 = 0.5, α0 = 0, SD(u) = 0.6, SD(v) = 0.5, corr(u, v) = 0.3; the model
fitted is the true one (``y ~ x + (1 | g)``, ``~ 1 + (1 | g)``). Replication r draws its
data from ``SeedSequence([SEED, r])``, fits by ML, and makes B bootstrap refits with
``fit.bootstrap(B, seed=r, scheduler=...)`` on one local Dask cluster kept for the whole
run (the refits go to its worker processes by the scheduler's address). Percentile and
basic intervals both come from the same replicates. Coverage is the share of
replications whose 95% interval holds the true value; its Monte Carlo SE is
sqrt(p(1 − p)/R).

    PYTHONPATH=src python bench/bootstrap_coverage.py --replications 100 --boot 99 \\
        --workers 2 --out bench/bootstrap_coverage.json

``run(...)`` is what the command calls; ``tests/test_bootstrap.py`` runs it tiny.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import melsm

SEED = 2024
GROUPS, ROWS = 30, 10
TRUTH = {"mean:Intercept": 0.0, "mean:x": 0.5, "within:Intercept": 0.0, "sd:mean:Intercept": 0.6,
         "sd:within:Intercept": 0.5, "corr:mean:Intercept,within:Intercept": 0.3}
FORMULAS = {"mean": "y ~ x + (1 | g)", "within": "~ 1 + (1 | g)"}


def simulate(r: int, groups: int = GROUPS, rows: int = ROWS) -> pd.DataFrame:
    """Replication ``r``'s data from the true model."""
    rng = np.random.default_rng(np.random.SeedSequence([SEED, r]))
    sd_u, sd_v, rho = TRUTH["sd:mean:Intercept"], TRUTH["sd:within:Intercept"], TRUTH[
        "corr:mean:Intercept,within:Intercept"]
    sigma = np.array([[sd_u**2, rho * sd_u * sd_v], [rho * sd_u * sd_v, sd_v**2]])
    g = np.repeat(np.arange(groups), rows)
    x = rng.standard_normal(groups * rows)
    b = rng.standard_normal((groups, 2)) @ np.linalg.cholesky(sigma).T
    log_var = TRUTH["within:Intercept"] + b[g, 1]
    y = TRUTH["mean:Intercept"] + TRUTH["mean:x"] * x + b[g, 0] + np.exp(0.5 * log_var) * rng.standard_normal(len(g))
    return pd.DataFrame({"y": y, "x": x, "g": g})


def replication(r: int, boot: int, scheduler: str) -> list[dict]:
    """One row per parameter: the estimate, Wald, percentile and basic 95% intervals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary and too-few-replicates warnings: recorded below
        fit = melsm.Model(data=simulate(r), **FORMULAS).fit()
        if not fit.converged:
            return [{"replication": r, "parameter": name, "fit_converged": False} for name in fit.names]
        started = time.perf_counter()
        reps = fit.bootstrap(boot, seed=r, scheduler=scheduler, progress=False)
        seconds = time.perf_counter() - started
        wald = fit.conf_int()
        percentile = fit.conf_int(method="bootstrap", replicates=reps)
        basic = fit.conf_int(method="bootstrap", replicates=reps, kind="basic")
    estimates = fit.table()["estimate"]
    return [{"replication": r, "parameter": name, "fit_converged": True, "estimate": float(estimates[name]),
             "wald_lower": float(wald.loc[name, "lower"]), "wald_upper": float(wald.loc[name, "upper"]),
             "percentile_lower": float(percentile.loc[name, "lower"]),
             "percentile_upper": float(percentile.loc[name, "upper"]),
             "basic_lower": float(basic.loc[name, "lower"]), "basic_upper": float(basic.loc[name, "upper"]),
             "boot_failed": int((~reps["converged"]).sum()), "boot_seconds": seconds,
             "refit_seconds_median": float(reps["seconds"].median())}
            for name in fit.names]


def summarise(rows: pd.DataFrame) -> dict:
    """Per parameter and interval method: coverage with its MC SE, mean width, intervals made."""
    out = {}
    done = rows[rows["fit_converged"]]
    for name, group in done.groupby("parameter", sort=False):
        truth = TRUTH[name]
        entry = {"truth": truth, "mean_estimate": float(group["estimate"].mean())}
        for method in ("wald", "percentile", "basic"):
            low, high = group[f"{method}_lower"], group[f"{method}_upper"]
            made = np.isfinite(low) & np.isfinite(high)
            covered = (low[made] <= truth) & (truth <= high[made])
            p, n = float(covered.mean()) if made.any() else float("nan"), int(made.sum())
            entry[method] = {"coverage": p, "mc_se": float(np.sqrt(p * (1 - p) / n)) if n else float("nan"),
                             "mean_width": float((high[made] - low[made]).mean()) if n else float("nan"),
                             "intervals": n}
        out[name] = entry
    return out


def run(replications: int, boot: int, scheduler: str = "processes", workers: int | None = None) -> dict:
    """The study; ``scheduler="processes"`` starts one local cluster for all replications."""
    from melsm.parallel import connect

    client = cluster = None
    if scheduler == "processes":
        client, cluster = connect(None, workers)
        scheduler = cluster.scheduler_address
    started = time.perf_counter()
    try:
        rows = [row for r in range(replications) for row in replication(r, boot, scheduler)]
    finally:
        if client is not None:
            client.close()
            cluster.close()
    frame = pd.DataFrame(rows)
    done = frame[frame["fit_converged"]].drop_duplicates("replication")
    return {"design": {"groups": GROUPS, "rows_per_group": ROWS, "formulas": FORMULAS, "truth": TRUTH,
                       "seed": SEED},
            "replications": replications, "boot": boot, "level": 0.95, "workers": workers,
            "seconds": time.perf_counter() - started,
            "fits_not_converged": int(replications - len(done)),
            "boot_refits_failed": int(done["boot_failed"].sum()) if len(done) else 0,
            "refit_seconds_median": float(done["refit_seconds_median"].median()) if len(done) else float("nan"),
            "coverage": summarise(frame), "rows": frame.to_dict(orient="records")}


def dump(result: dict) -> str:
    """JSON with the summary indented and one line per row of ``rows``."""
    head = json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1)
    rows = ",\n  ".join(json.dumps(row) for row in result["rows"])
    return head[:-2] + ',\n "rows": [\n  ' + rows + "\n ]\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--boot", type=int, default=99)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bootstrap_coverage.json"))
    args = parser.parse_args()
    result = run(args.replications, args.boot, "processes", args.workers)
    args.out.write_text(dump(result))
    print(f"{args.replications} replications x {args.boot} refits in {result['seconds']:.0f} s")
    for name, entry in result["coverage"].items():
        print(f"{name:40s}" + "".join(f"  {m} {entry[m]['coverage']:.3f} ({entry[m]['mc_se']:.3f})"
                                      for m in ("wald", "percentile", "basic")))


if __name__ == "__main__":
    main()
