"""MCMC at scale: smallest bulk ESS per second, and peak memory, for many groups.

Run by hand:  python bench/bench_mcmc_scale.py [--sizes 10k:1k,100k:10k]
                                               [--chains 16 --warmup 500 --draws 500]

The simulated model of ``bench_scale.py`` (random intercepts in both functions,
correlated, one level-1 covariate in each), sampled with melsm's defaults (u collapsed,
η_v sampled: one η_v per group is a coordinate of the sampler, so 10,000 groups are a
10,000-dimensional target). Each size runs in a new process, timed from its start
(imports, the ML fit used for starting values, compilation, warm-up, sampling, the draws
of u, summaries); reported: whole-process and sampler seconds, the smallest bulk ESS
over the reported parameters, ESS/s of the whole process, max R-hat, divergences,
leapfrog steps per iteration, the step size, the warm-up's λ̂ (``estimate.chees``) and
the peak RSS (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_scale import parse_size, simulate  # noqa: E402  (this folder's own helper)


def child(rows: int, groups: int, chains: int, warmup: int, draws: int) -> dict:
    """One size in this process; returns the figures (module docstring)."""
    import resource
    import warnings

    started = time.perf_counter()
    import melsm

    data = simulate(rows, groups)
    model = melsm.Model(mean="y ~ x + (1 | g)", within="~ x + (1 | g)", data=data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = model.sample(chains=chains, warmup=warmup, draws=draws, progress=False)
    table = post.table()
    total = time.perf_counter() - started
    info = post.info
    return {"rows": rows, "groups": groups, "chains": chains, "warmup": warmup, "draws": draws,
            "process_s": total, "sampler_s": info["seconds"], "min_ess_bulk": float(table.ess_bulk.min()),
            "worst": str(table.ess_bulk.idxmin()), "ess_per_s": float(table.ess_bulk.min()) / total,
            "max_r_hat": float(table.r_hat.max()), "divergences": int(info["divergences"]),
            "leapfrog_steps": float(info["mean_leapfrog_steps"]), "step_size": float(info["step_size"]),
            "floor_eigenvalue": float(info["floor_eigenvalue"]),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k:1k,100k:10k")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--child")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = (args.chains, args.warmup, args.draws)
    if args.child:
        print(json.dumps(child(*parse_size(args.child), *settings)))
        return
    results = []
    for size in args.sizes.split(","):
        command = [sys.executable, __file__, "--child", size, "--chains", str(args.chains),
                   "--warmup", str(args.warmup), "--draws", str(args.draws)]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['rows']:>9,} rows / {r['groups']:>6,} groups: process {r['process_s']:.1f} s, sampler "
              f"{r['sampler_s']:.1f} s, min bulk ESS {r['min_ess_bulk']:.0f} ({r['worst']}), "
              f"{r['ess_per_s']:.1f} ESS/s, max R-hat {r['max_r_hat']:.4f}, {r['divergences']} divergences, "
              f"{r['leapfrog_steps']:.1f} steps/iteration of {r['step_size']:.3f}, floor eigenvalue "
              f"{r['floor_eigenvalue']:.2f}, peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
