"""Coverage of the parametric bootstrap intervals (``fit.conf_int(method="bootstrap")``) on a
small simulation study with known truth, beside the Wald intervals of the same fits.

Design: J = 30 groups of n = 10 rows, x ~ N(0, 1) per row,

    y_ij = β0 + β1 x_ij + u_j + e_ij,   log σ²_ij = α0 + v_j,   (u_j, v_j) ~ N(0, Σ),

with β0 = 0, β1 = 0.5, α0 = 0, SD(u) = 0.6, SD(v) = 0.5, corr(u, v) = 0.3; the model
fitted is the true one (``y ~ x + (1 | g)``, ``~ 1 + (1 | g)``). Replication r draws its
data from ``SeedSequence([SEED, r])``, fits by ML, and makes B bootstrap refits with
``fit.bootstrap(B, seed=r, scheduler=...)`` on one local Dask cluster kept for the whole
run (the refits go to its worker processes by the scheduler's address). Studentized, BC, BCa,
percentile and basic intervals all come from the same replicates, Wald intervals from the
same fits. Coverage is the share of replications whose 95% interval holds the true
value; its Monte Carlo SE is sqrt(p(1 − p)/R). BCa intervals take their acceleration from
``fit.jackknife(scheduler=...)`` (J = 30 leave-one-group-out refits per data set, on the
same cluster), made afresh in every run, also with ``--replicates``.

    PYTHONPATH=src python bench/bootstrap_coverage.py --replications 100 --boot 99 \\
        --workers 2 --out bench/bootstrap_coverage.json --save-replicates reps.parquet

``--save-replicates`` keeps every replicate table (one Parquet file, a column
``replication``); ``--replicates reps.parquet`` makes the intervals from such a file
instead of refitting (the R fits are redone, seconds), e.g. after changing an interval.
``--double`` makes the replicates with ``fit.bootstrap(double=True)`` (one inner refit
each, 2B refits; the outer ones and every interval here are the same): the input of
``bootstrap_double.py``.
``--roots [NAME ...]`` makes them with ``fit.bootstrap(signed_roots=True)`` (or of the named
parameters only, ``signed_roots=[...]``; one constrained refit per
parameter per replicate: 7B refits here; the other columns, and so every other interval,
are the same) and adds two methods: ``profile`` (``conf_int(method="profile")``, the plain
profile-likelihood interval of the same fit) and ``profile_boot`` (``conf_int(method=
"bootstrap", kind="profile")``, the bootstrap-calibrated one).

``--seed S`` draws data set r from ``SeedSequence([S, r])`` (a fresh set of data sets).

``run(...)`` is what the command calls; ``tests/test_bootstrap.py`` runs it tiny.
"""

from __future__ import annotations

import argparse
import json
import logging
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
log = logging.getLogger("bootstrap_coverage")
FORMULAS = {"mean": "y ~ x + (1 | g)", "within": "~ 1 + (1 | g)"}


def simulate(r: int, groups: int = GROUPS, rows: int = ROWS, seed: int = SEED) -> pd.DataFrame:
    """Replication ``r``'s data from the true model (``SeedSequence([seed, r])``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, r]))
    sd_u, sd_v, rho = TRUTH["sd:mean:Intercept"], TRUTH["sd:within:Intercept"], TRUTH[
        "corr:mean:Intercept,within:Intercept"]
    sigma = np.array([[sd_u**2, rho * sd_u * sd_v], [rho * sd_u * sd_v, sd_v**2]])
    g = np.repeat(np.arange(groups), rows)
    x = rng.standard_normal(groups * rows)
    b = rng.standard_normal((groups, 2)) @ np.linalg.cholesky(sigma).T
    log_var = TRUTH["within:Intercept"] + b[g, 1]
    y = TRUTH["mean:Intercept"] + TRUTH["mean:x"] * x + b[g, 0] + np.exp(0.5 * log_var) * rng.standard_normal(len(g))
    return pd.DataFrame({"y": y, "x": x, "g": g})


METHODS = ("wald", "studentized", "bc", "bca", "percentile", "basic")
#: Added by ``--roots``: the plain and the bootstrap-calibrated profile-likelihood intervals.
ROOT_METHODS = ("profile", "profile_boot")


def replication(r: int, boot: int, scheduler: str, stored: pd.DataFrame | None = None, double: bool = False,
                roots: bool | list[str] = False, seed: int = SEED) -> tuple[list[dict], pd.DataFrame | None]:
    """One row per parameter (the estimate and every method's 95% interval), and the
    replicates (``stored`` when given: no refits; ``double``: with inner replicates;
    ``roots``: with signed roots, True for every parameter or a list of names, and the
    ``ROOT_METHODS`` too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary and too-few-replicates warnings: recorded below
        fit = melsm.Model(data=simulate(r, seed=seed), **FORMULAS).fit()
        if not fit.converged:
            return [{"replication": r, "parameter": name, "fit_converged": False} for name in fit.names], None
        started = time.perf_counter()
        reps = (fit.bootstrap(boot, seed=r, scheduler=scheduler, progress=False, double=double, signed_roots=roots)
                if stored is None else stored)
        seconds, started = time.perf_counter() - started, time.perf_counter()
        jack = fit.jackknife(scheduler=scheduler, progress=False)
        jack_seconds = time.perf_counter() - started
        intervals = {"wald": fit.conf_int()}
        for kind in METHODS[1:]:
            intervals[kind] = fit.conf_int(method="bootstrap", replicates=reps, kind=kind,
                                           **({"jackknife": jack} if kind == "bca" else {}))
        if roots:
            intervals["profile"] = fit.conf_int(method="profile", progress=False)
            intervals["profile_boot"] = fit.conf_int(method="bootstrap", replicates=reps, kind="profile")
    estimates, done = fit.table()["estimate"], reps[reps["converged"]]
    rows = []
    for name in fit.names:
        row = {"replication": r, "parameter": name, "fit_converged": True, "estimate": float(estimates[name])}
        for method, table in intervals.items():
            row[f"{method}_lower"], row[f"{method}_upper"] = (float(v) for v in table.loc[name, ["lower", "upper"]])
        rows.append({**row, "boot_failed": int((~reps["converged"]).sum()),
                     "boot_no_se": int((~np.isfinite(done[f"se:{name}"])).sum()),
                     "boot_seconds": seconds, "refit_seconds_median": float(reps["seconds"].median()),
                     "jack_failed": int((~jack["converged"]).sum()), "jack_seconds": jack_seconds,
                     **({"boot_root_failed": int((~np.isfinite(done[f"root:{name}"])).sum())}
                        if f"root:{name}" in done else {})})
    return rows, reps.assign(replication=r)


def summarise(rows: pd.DataFrame) -> dict:
    """Per parameter and interval method: coverage with its MC SE, mean width, intervals
    made, and the misses with the interval below / above the truth."""
    out = {}
    done = rows[rows["fit_converged"]]
    for name, group in done.groupby("parameter", sort=False):
        truth = TRUTH[name]
        entry = {"truth": truth, "mean_estimate": float(group["estimate"].mean())}
        for method in (m for m in (*METHODS, *ROOT_METHODS) if f"{m}_lower" in group):
            low, high = group[f"{method}_lower"], group[f"{method}_upper"]
            made = np.isfinite(low) & np.isfinite(high)
            covered = (low[made] <= truth) & (truth <= high[made])
            p, n = float(covered.mean()) if made.any() else float("nan"), int(made.sum())
            entry[method] = {"coverage": p, "mc_se": float(np.sqrt(p * (1 - p) / n)) if n else float("nan"),
                             "mean_width": float((high[made] - low[made]).mean()) if n else float("nan"),
                             "intervals": n, "below": int((high[made] < truth).sum()),
                             "above": int((low[made] > truth).sum())}
        out[name] = entry
    return out


def run(replications: int, boot: int, scheduler: str = "processes", workers: int | None = None,
        stored: pd.DataFrame | None = None, double: bool = False, roots: bool | list[str] = False,
        seed: int = SEED) -> dict:
    """The study; ``scheduler="processes"`` starts one local cluster for all replications.
    ``stored``: replicate tables (column ``replication``) to use instead of refitting.
    The replicates are returned under ``"replicates"`` (not written to the JSON)."""
    from melsm.parallel import connect

    client = cluster = None
    if scheduler == "processes":  # the bootstrap's refits (unless stored) and the jackknife's
        client, cluster = connect(None, workers)
        scheduler = cluster.scheduler_address
    started = time.perf_counter()
    rows, tables = [], []
    try:
        for r in range(replications):
            given = None if stored is None else stored[stored["replication"] == r].drop(columns="replication")
            more, reps = replication(r, boot, scheduler, given, double, roots, seed)
            rows += more
            tables += [] if reps is None else [reps]
            log.info("replication %d done, %.0f s", r, time.perf_counter() - started)
    finally:
        if client is not None:
            client.close()
            cluster.close()
    frame = pd.DataFrame(rows)
    done = frame[frame["fit_converged"]].drop_duplicates("replication")
    return {"design": {"groups": GROUPS, "rows_per_group": ROWS, "formulas": FORMULAS, "truth": TRUTH,
                       "seed": seed},
            "replications": replications, "boot": boot, "level": 0.95, "workers": workers, "roots": roots,
            "seconds": time.perf_counter() - started, "refitted": stored is None,
            "fits_not_converged": int(replications - len(done)),
            "boot_refits_failed": int(done["boot_failed"].sum()) if len(done) else 0,
            "boot_no_se": {name: int(g["boot_no_se"].sum()) for name, g in frame[frame["fit_converged"]].groupby(
                "parameter", sort=False)},
            "refit_seconds_median": float(done["refit_seconds_median"].median()) if len(done) else float("nan"),
            "jack_refits_failed": int(done["jack_failed"].sum()) if len(done) else 0,
            "boot_seconds": float(done["boot_seconds"].sum()) if len(done) else 0.0,
            "boot_roots_failed": ({name: int(g["boot_root_failed"].sum()) for name, g in frame[
                frame["fit_converged"]].groupby("parameter", sort=False) if g["boot_root_failed"].notna().all()}
                if roots and len(done) else {}),
            "jack_seconds": float(done["jack_seconds"].sum()) if len(done) else 0.0,
            "coverage": summarise(frame), "rows": frame.to_dict(orient="records"),
            "replicates": pd.concat(tables) if tables else None}


def dump(result: dict) -> str:
    """JSON with the summary indented and one line per row of ``rows``."""
    head = json.dumps({k: v for k, v in result.items() if k not in ("rows", "replicates")}, indent=1)
    rows = ",\n  ".join(json.dumps(row) for row in result["rows"])
    return head[:-2] + ',\n "rows": [\n  ' + rows + "\n ]\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--boot", type=int, default=99)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bootstrap_coverage.json"))
    parser.add_argument("--save-replicates", type=Path, default=None, help="write every replicate table here")
    parser.add_argument("--replicates", type=Path, default=None, help="use these replicate tables, no refits")
    parser.add_argument("--double", action="store_true", help="one inner refit per replicate (bootstrap_double.py)")
    parser.add_argument("--roots", nargs="*", default=None, metavar="NAME",
                        help="signed roots (of these parameters; all without names): bootstrap-calibrated "
                             "profile intervals")
    parser.add_argument("--seed", type=int, default=SEED, help="data set r from SeedSequence([seed, r])")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stored = None if args.replicates is None else pd.read_parquet(args.replicates)
    roots = False if args.roots is None else (args.roots or True)
    result = run(args.replications, args.boot, "processes", args.workers, stored, args.double, roots, args.seed)
    if args.save_replicates is not None and result["replicates"] is not None:
        result["replicates"].to_parquet(args.save_replicates)
    args.out.write_text(dump(result))
    print(f"{args.replications} replications x {args.boot} refits in {result['seconds']:.0f} s")
    for name, entry in result["coverage"].items():
        print(f"{name:40s}" + "".join(f"  {m} {entry[m]['coverage']:.3f} ({entry[m]['mc_se']:.3f})"
                                      for m in (*METHODS, *ROOT_METHODS) if m in entry))


if __name__ == "__main__":
    main()
