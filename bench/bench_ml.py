"""Maximum-likelihood speed: Riesby (MIXREGLS' example, associations none, linear and quadratic) and London Model 6.

Run by hand, on a quiet machine:  python bench/bench_ml.py [--repeats 7]

Reports, each as a median over repeats:
- warm in-process fits (the model compiled earlier in the same process), with SEs;
- whole cold processes (`melsm riesby`): a new Python process with the on-disk caches
  filled, and one with an empty cache directory (first use ever).
MIXREGLS' figures (0.50 s association none, 0.93 s linear, whole process, this kind of
machine) come from ../shared/reference/mixregls_reisby.json; MIXREGLS cannot fit Model 6.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import melsm

RIESBY = dict(mean="hamdep ~ week + endog + endweek + (1 | id)", within="~ week + endog + (1 | id)",
              between="~ endog")
MODEL6 = dict(mean="normexam ~ standlrt + girl + (standlrt | school)",
              within="~ standlrt + girl + (standlrt | school)")


def warm(data, spec, repeats, **kwargs):
    melsm.Model(data=data, **spec, **kwargs).fit()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit = melsm.Model(data=data, **spec, **kwargs).fit()
        assert fit.bse.notna().any()  # SEs are computed within fit()
        times.append(time.perf_counter() - start)
    return statistics.median(times), fit


def whole_process(repeats, env=None):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "melsm.cli", "riesby"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warm-only", action="store_true", help="only the warm in-process fits")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    reisby, tutorial = melsm.datasets.load("reisby"), melsm.datasets.load("tutorial")
    rows = []
    for association in ("none", "linear", "quadratic"):
        seconds, fit = warm(reisby, RIESBY, args.repeats, association=association)
        rows.append((f"Riesby, association {association}, warm in-process", seconds, fit))
    seconds, fit = warm(tutorial, MODEL6, max(3, args.repeats // 2))
    rows.append(("London Model 6, warm in-process", seconds, fit))
    for label, seconds, fit in rows:
        print(f"{label:<48} {seconds:8.3f} s   loglik {fit.loglik:.10f}  iterations {fit.iterations}")
    if args.warm_only:
        return
    whole_process(1)  # make sure the caches are filled
    print(f"{'Riesby (none), whole process, caches filled':<48} {whole_process(3):8.3f} s")
    with tempfile.TemporaryDirectory() as empty:
        env = dict(os.environ, MELSM_CACHE_DIR=empty)
        print(f"{'Riesby (none), whole process, empty cache':<48} {whole_process(1, env):8.3f} s")


if __name__ == "__main__":
    main()
