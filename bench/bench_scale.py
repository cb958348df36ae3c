"""ML at scale: time and peak memory of whole processes fitting large simulated data sets.

Run by hand:  python bench/bench_scale.py [--sizes 100k:1k,1M:10k,3M:30k,10M:100k] [--src DIR]
                                         [--out scale.json]
              python bench/bench_scale.py --model slopes --sizes 30k:2400 --runs cold,warm,warm,warm

Each size runs in its own new Python processes (so each peak RSS is that fit's alone):
once with an empty cache folder (``MELSM_CACHE_DIR`` a new temporary folder: "cold", every
compiled function built) and once more with that folder filled ("warm"). The model has
random intercepts in both functions, correlated, and one level-1 covariate in each:

    y_ij = β0 + β1 x_ij + u_j + e_ij,    log σ²_ij = α0 + α1 x_ij + v_j,
    (u_j, v_j) ~ N(0, Σ), SD(u) = 0.5, SD(v) = 0.4, corr 0.3,  β = (0, 0.5), α = (0, 0.2),

groups of equal size rows/groups. ``--model slopes``: random slopes in both functions,
``y ~ x + (x | g)``, ``~ x + (x | g)`` (two scale effects, so the quadrature runs over a
plane; ``simulate_slopes``). Reported per process: the whole process's wall time
(measured by this parent), the child's import, data and fit times (the fit with its SEs),
its CPU time (user + system, all threads: a fairer measure than wall time on a busy
machine), its peak RSS (``resource.getrusage``: ru_maxrss) and log L. ``--src`` points the children
at another checkout's ``src`` (to measure the code before a change in the same run); ``--cache``
at a filled cache folder (every run then warm).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_size(text: str) -> tuple[int, int]:
    """``"1M:10k"`` → (1_000_000, 10_000)."""
    def number(s: str) -> int:
        scale = {"k": 1_000, "M": 1_000_000}.get(s[-1], 1)
        return int(float(s[:-1] if s[-1] in "kM" else s) * scale)
    rows, groups = text.split(":")
    return number(rows), number(groups)


def simulate(rows: int, groups: int, seed: int = 1):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = rows // groups
    g = np.repeat(np.arange(groups, dtype=np.int64), n)
    sd_u, sd_v, rho = 0.5, 0.4, 0.3
    cov = np.array([[sd_u**2, rho * sd_u * sd_v], [rho * sd_u * sd_v, sd_v**2]])
    b = rng.multivariate_normal([0.0, 0.0], cov, size=groups)
    x = rng.standard_normal(g.size)
    log_var = 0.2 * x + b[g, 1]
    y = 0.5 * x + b[g, 0] + np.exp(0.5 * log_var) * rng.standard_normal(g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def simulate_slopes(rows: int, groups: int, seed: int = 1):
    """Random intercepts and slopes in both functions: (v0, v1, u0, u1) ~ N(0, Σ) with SDs
    (0.4, 0.2, 0.5, 0.3), corr(v0, u0) = 0.3, corr(v1, u1) = 0.2, the others 0;
    y = 0.5 x + u0 + u1 x + e, log σ² = 0.2 x + v0 + v1 x."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = np.sort(np.concatenate([np.repeat(np.arange(groups), rows // groups),
                                rng.integers(0, groups, rows - groups * (rows // groups))]))
    sd = np.array([0.4, 0.2, 0.5, 0.3])
    corr = np.eye(4)
    corr[0, 2] = corr[2, 0] = 0.3
    corr[1, 3] = corr[3, 1] = 0.2
    b = rng.multivariate_normal(np.zeros(4), corr * np.outer(sd, sd), size=groups)
    x = rng.standard_normal(g.size)
    log_var = 0.2 * x + b[g, 0] + b[g, 1] * x
    y = 0.5 * x + b[g, 2] + b[g, 3] * x + np.exp(0.5 * log_var) * rng.standard_normal(g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g})


MODELS = {"intercepts": (simulate, "y ~ x + (1 | g)", "~ x + (1 | g)"),
          "slopes": (simulate_slopes, "y ~ x + (x | g)", "~ x + (x | g)")}


def child(rows: int, groups: int, model_name: str = "intercepts") -> None:
    import resource
    import warnings

    started = time.perf_counter()
    import melsm

    imported = time.perf_counter()
    make, mean, within = MODELS[model_name]
    data = make(rows, groups)
    model = melsm.Model(mean=mean, within=within, data=data)
    del data
    made = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(progress=False)
    se = fit.bse
    done = time.perf_counter()
    print(json.dumps({
        "import_s": imported - started, "data_s": made - imported, "fit_s": done - made,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "cpu_s": (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_SELF)),
        "loglik": fit.loglik, "converged": bool(fit.converged), "iterations": fit.iterations,
        "se_max": float(se.max()), "estimates": [float(v) for v in fit.params.values],
    }))


def run_child(rows: int, groups: int, env: dict, model_name: str = "intercepts") -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", f"{rows}:{groups}",
                          "--model", model_name],
                         env=env, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100k:1k,1M:10k")
    parser.add_argument("--src", default=str(HERE.parent / "src"))
    parser.add_argument("--child")
    parser.add_argument("--runs", default="cold,warm")
    parser.add_argument("--out", type=Path, help="also write every process's figures here (JSON, for plot_scale.py)")
    parser.add_argument("--model", default="intercepts", choices=sorted(MODELS))
    parser.add_argument("--cache", help="a filled cache folder to use instead of a new empty one")
    args = parser.parse_args()
    if args.child:
        child(*parse_size(args.child), args.model)
        return
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    results = []
    for size in args.sizes.split(","):
        rows, groups = parse_size(size)
        with tempfile.TemporaryDirectory(prefix="melsm-bench-scale-") as empty:
            env = dict(os.environ, PYTHONPATH=args.src, MELSM_CACHE_DIR=args.cache or empty)
            for run in args.runs.split(","):
                r = run_child(rows, groups, env, args.model)
                results.append({"rows": rows, "groups": groups, "run": run, "model": args.model, **r})
                if args.out:
                    args.out.write_text(json.dumps(results, indent=1))
                print(f"{size:>10} {run:>4}: process {r['process_s']:6.1f} s, import {r['import_s']:4.1f} s, "
                      f"data {r['data_s']:5.1f} s, fit {r['fit_s']:6.1f} s, CPU {r['cpu_s']:6.1f} s, "
                      f"peak RSS {r['peak_rss_gb']:5.2f} GB, "
                      f"log L {r['loglik']:.6f}, {r['iterations']} iterations, "
                      f"converged {r['converged']}", flush=True)
                print("    estimates " + " ".join(f"{v:.10g}" for v in r["estimates"]), flush=True)
        print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)


if __name__ == "__main__":
    main()
