"""Speed of profile-likelihood intervals, ``fit.conf_int(method="profile")`` of every parameter.

Run by hand, on a quiet machine:  python bench/bench_profile.py [--repeats 3]

Each model is fitted once, its profile run once to compile the small programs of the
reparameterisations (the likelihood's are the fit's, already compiled), then timed
``--repeats`` times (median). Also printed: the number of reported parameters and, for
the Gaussian models, lme4's ``confint(method = "profile")`` time from
tests/reference/lme4_profile.json (R 4.2.2, lme4 1.1-31, same machine kind).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import melsm

MODELS = {
    "Riesby, README model (association none, between ~ endog)": (
        "reisby", dict(mean="hamdep ~ week + endog + endweek + (1 | id)", within="~ week + endog + (1 | id)",
                       between="~ endog", association="none"), None),
    "Riesby, random scale correlated with the location intercept": (
        "reisby", dict(mean="hamdep ~ week + endog + endweek + (1 | id)", within="~ week + endog + (1 | id)"), None),
    "Riesby, random slope, no scale effects (lme4)": (
        "reisby", dict(mean="hamdep ~ week + endog + endweek + (week | id)"), "reisby_random_slope"),
    "London, random intercept (lme4)": (
        "tutorial", dict(mean="normexam ~ standlrt + girl + (1 | school)"), "london_random_intercept"),
    "London, random slope (lme4)": (
        "tutorial", dict(mean="normexam ~ standlrt + girl + (standlrt | school)"), "london_random_slope"),
    "London Model 3 (random intercepts in both functions)": (
        "tutorial", dict(mean="normexam ~ standlrt + girl + (1 | school)", within="~ 1 + (1 | school)"), None),
    "London Model 6 (random slopes in both functions)": (
        "tutorial", dict(mean="normexam ~ standlrt + girl + (standlrt | school)",
                         within="~ standlrt + girl + (standlrt | school)"), None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reference = Path(__file__).resolve().parents[1] / "tests" / "reference" / "lme4_profile.json"
    lme4 = json.loads(reference.read_text())["fits"]
    for label, (data, formulas, key) in MODELS.items():
        fit = melsm.Model(data=melsm.datasets.load(data), **formulas).fit()
        fit.conf_int(method="profile", progress=False)  # compile
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            intervals = fit.conf_int(method="profile", progress=False)
            times.append(time.perf_counter() - started)
        lme4_time = f", lme4 {lme4[key]['seconds_confint']:.1f} s" if key else ""
        print(f"{label}: {len(fit.names)} parameters, {statistics.median(times):.2f} s "
              f"(fit {fit.seconds:.2f} s{lme4_time}); NaN ends: {int(intervals.isna().sum().sum())}")


if __name__ == "__main__":
    main()
