"""ML fits on whatever device JAX sees (CPU, or a GPU with ``pip install "jax[cuda12]"``).

Run by hand:  python bench/bench_device.py [--sizes 100k:1k,1M:10k] [--repeats 3]
                                          [--out device.json] [--compare cpu.json]

The same simulated model as ``bench_scale.py`` (random intercepts in both functions,
correlated, one level-1 covariate in each), fitted by ML with SEs in this one process:
per size a first fit (compiles, or loads from the cache) and ``--repeats`` more fits of
new data of the same shape (the compiled programs reused). Reported per size: the device
JAX used, the first fit's time, the median repeat time, rows per second of the median
repeat (rows / seconds: the fit's whole work, all iterations, per second), iterations,
and the estimates and log L of the first fit.

``--compare`` reads the JSON of another run (say the CPU's) and prints, per size, the
largest difference in log L and estimates: the same code on another device must give
the same fit (float64 everywhere; the differences are the summation order's, ~1e-9).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import parse_size, simulate  # noqa: E402  (this folder's own helper)


def fit_once(rows: int, groups: int, seed: int) -> tuple[float, object]:
    """One ML fit with SEs of a new data set; (seconds, fit)."""
    import melsm

    data = simulate(rows, groups, seed=seed)
    model = melsm.Model(mean="y ~ x + (1 | g)", within="~ x + (1 | g)", data=data)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit(progress=False)
        fit.bse  # noqa: B018  (the SEs are part of the work measured)
    return time.perf_counter() - started, fit


def measure(rows: int, groups: int, repeats: int) -> dict:
    """The first fit and ``repeats`` more of one size (module docstring)."""
    import jax

    first_s, fit = fit_once(rows, groups, seed=1)
    times = [fit_once(rows, groups, seed=2 + r)[0] for r in range(repeats)]
    median = statistics.median(times)
    return {"rows": rows, "groups": groups, "device": str(jax.devices()[0]), "first_s": first_s,
            "repeat_s": times, "median_s": median, "rows_per_s": rows / median,
            "iterations": fit.iterations, "converged": bool(fit.converged), "loglik": float(fit.loglik),
            "estimates": {name: float(v) for name, v in fit.params.items()}}


def compare(results: list[dict], other: list[dict]) -> None:
    """Print the largest differences between two runs' fits of the same sizes."""
    theirs = {(r["rows"], r["groups"]): r for r in other}
    for mine in results:
        ref = theirs.get((mine["rows"], mine["groups"]))
        if ref is None:
            continue
        diff = max(abs(mine["estimates"][k] - ref["estimates"][k]) for k in mine["estimates"])
        print(f"{mine['rows']:>10,} rows: |Δ log L| = {abs(mine['loglik'] - ref['loglik']):.2e}, "
              f"max |Δ estimate| = {diff:.2e} ({mine['device']} vs {ref['device']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k:1k,1M:10k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args()
    results = []
    for size in args.sizes.split(","):
        rows, groups = parse_size(size)
        results.append(measure(rows, groups, args.repeats))
        r = results[-1]
        print(f"{rows:>10,} rows / {groups:,} groups on {r['device']}: first {r['first_s']:.1f} s, "
              f"median {r['median_s']:.2f} s ({r['rows_per_s']:,.0f} rows/s), {r['iterations']} iterations")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    if args.compare:
        compare(results, json.loads(args.compare.read_text()))


if __name__ == "__main__":
    main()
