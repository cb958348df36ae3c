"""Coverage of profile-likelihood intervals (``fit.conf_int(method="profile")``) against
Wald intervals, on small simulated data where the two differ.

Run by hand:  python bench/coverage_profile.py [--replicates 500] [--seed 2026]
              [--out bench/coverage_profile.json]

Two designs, each simulated ``--replicates`` times with its own seeds:

- ``random intercept``: 20 groups of 5, y = 1 + 0.5 x + u_j + e, u_j ~ N(0, 0.5²),
  e ~ N(0, 1): the fixed effect ``mean:x`` and the random-intercept SD ``sd:mean:Intercept``
  (few groups: the SD's sampling distribution is skewed);
- ``random scale``: 40 groups of 8, the same mean function and log σ²_ij = v_j,
  v_j ~ N(0, 0.5²), u and v independent (association "none"): ``mean:x`` and the scale SD
  ``sd:within:Intercept`` (integrated by adaptive quadrature).

Each replicate is fitted by ML; the nominal 95% profile and Wald intervals of the two
parameters are checked against the truth. A replicate whose fit did not converge, or
whose interval end is NaN, is counted apart (``failed``) and left out of the coverage.
Coverage is reported with its Monte Carlo SE √(p(1 − p)/n). Output: a table on standard
output and the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd

import melsm

DESIGNS = {
    "random intercept": dict(groups=20, size=5, sd_u=0.5, sd_v=0.0,
                             formulas=dict(mean="y ~ x + (1 | g)"),
                             truth={"mean:x": 0.5, "sd:mean:Intercept": 0.5}),
    "random scale": dict(groups=40, size=8, sd_u=0.5, sd_v=0.5,
                         formulas=dict(mean="y ~ x + (1 | g)", within="~ 1 + (1 | g)", association="none"),
                         truth={"mean:x": 0.5, "sd:within:Intercept": 0.5}),
}


def simulate(design: dict, rng: np.random.Generator) -> pd.DataFrame:
    n = design["groups"] * design["size"]
    g = np.repeat(np.arange(design["groups"]), design["size"])
    x = rng.normal(size=n)
    u = rng.normal(scale=design["sd_u"], size=design["groups"])[g]
    v = rng.normal(scale=design["sd_v"], size=design["groups"])[g] if design["sd_v"] else 0.0
    y = 1 + 0.5 * x + u + np.exp(0.5 * v) * rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def replicate(design: dict, seed: int) -> dict:
    """Profile and Wald intervals of the design's parameters for one simulated data set."""
    data = simulate(design, np.random.default_rng(seed))
    names = list(design["truth"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = melsm.Model(data=data, **design["formulas"]).fit()
        if not fit.converged:
            return {"failed": True, "seed": seed, "reason": f"fit: {fit.message}"}
        started = time.perf_counter()
        profile = fit.conf_int(method="profile", parm=names, progress=False)
        seconds = time.perf_counter() - started
    wald = fit.conf_int()
    missing = [f"{name} {side}" for name in names for side in ("lower", "upper") if np.isnan(profile.loc[name, side])]
    out = {"failed": bool(missing), "seed": seed, "reason": "NaN profile end: " + ", ".join(missing),
           "seconds": seconds, "boundary": [name for name in names if name in fit.boundary_values]}
    for name in names:
        truth = design["truth"][name]
        out[name] = {"profile": [float(v) for v in profile.loc[name]], "wald": [float(v) for v in wald.loc[name]],
                     "estimate": float(fit.table().loc[name, "estimate"])}
        out[name]["covered"] = {kind: bool(low <= truth <= high) for kind, (low, high) in
                                (("profile", out[name]["profile"]), ("wald", out[name]["wald"]))}
    return out


def summarise(design: dict, results: list[dict]) -> list[dict]:
    ok = [r for r in results if not r["failed"]]
    rows = []
    for name in design["truth"]:
        for kind in ("profile", "wald"):
            hits = [r[name]["covered"][kind] for r in ok if np.all(np.isfinite(r[name][kind]))]
            p = float(np.mean(hits)) if hits else float("nan")
            rows.append({"parameter": name, "interval": kind, "n": len(hits), "coverage": p,
                         "mc_se": float(np.sqrt(p * (1 - p) / len(hits))) if hits else float("nan"),
                         "below": int(sum(r[name][kind][1] < design["truth"][name] for r in ok)),
                         "above": int(sum(r[name][kind][0] > design["truth"][name] for r in ok))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default="bench/coverage_profile.json")
    args = parser.parse_args()
    report = {"replicates": args.replicates, "seed": args.seed, "designs": {}}
    for index, (label, design) in enumerate(DESIGNS.items()):
        started = time.perf_counter()
        seeds = np.random.SeedSequence([args.seed, index]).generate_state(args.replicates)
        results = [replicate(design, int(seed)) for seed in seeds]
        rows = summarise(design, results)
        ok = [r for r in results if not r["failed"]]
        report["designs"][label] = {
            "design": {k: v for k, v in design.items() if k != "formulas"} | {"formulas": design["formulas"]},
            "failed": len(results) - len(ok), "failures": [{"seed": r["seed"], "reason": r["reason"]}
                                                           for r in results if r["failed"]],
            "boundary_fits": sum(bool(r["boundary"]) for r in ok),
            "median_profile_seconds": float(np.median([r["seconds"] for r in ok])) if ok else None,
            "seconds": time.perf_counter() - started, "coverage": rows}
        print(f"{label}: {len(ok)} of {len(results)} replicates, {report['designs'][label]['boundary_fits']} "
              f"with an SD at 0, {report['designs'][label]['seconds']:.0f} s")
        for row in rows:
            print(f"  {row['parameter']:22s} {row['interval']:8s} coverage {row['coverage']:.3f} "
                  f"± {row['mc_se']:.3f} (n = {row['n']}; truth below {row['below']}, above {row['above']})")
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
