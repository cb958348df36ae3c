"""Long processes: memory maps and RSS of one process that fits many distinct models.

Run by hand:  python bench/bench_long_process.py [--models 500] [--mcmc-every 10] [--no-bound | --map-share S]

Each model has its own shapes (numbers of covariates in the mean and the within function,
random slopes or not, a random scale effect or not, number of groups), so each compiles
(or, with a warm cache, loads) its own executables. After every fit it prints the number
of memory maps (lines of /proc/self/maps; Linux stops a process at vm.max_map_count,
65,530 by default) and the resident memory. ``--no-bound`` switches off melsm's bound
(``melsm.engine.compiled``: caches dropped when the maps pass a share of the limit), to
show the growth per model that the bound stops. docs/architecture.md, 'Long processes'.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import numpy as np
import pandas as pd


def maps_and_rss() -> tuple[int, float]:
    """(memory maps, resident MB) of this process."""
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    with open("/proc/self/statm") as f:
        rss_pages = int(f.read().split()[1])
    return maps, rss_pages * 4096 / 2**20


def data(n_groups: int, seed: int = 0) -> pd.DataFrame:
    """A small two-level data set: ``n_groups`` groups of 6 rows, covariates x1..x6."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), 6)
    x = rng.normal(size=(g.size, 6))
    u, v = rng.normal(0, 0.5, n_groups), rng.normal(0, 0.3, n_groups)
    y = x[:, :2] @ [0.5, -0.3] + u[g] + rng.normal(size=g.size) * np.exp(0.5 * (0.2 * x[:, 0] + v[g]))
    return pd.DataFrame({"y": y, "g": g, **{f"x{k + 1}": x[:, k] for k in range(6)}})


def models():
    """Distinct model specifications, in an order that changes a shape at every step."""
    for n_groups, slope, scale, p_mean, p_within in itertools.product(
            (12, 40, 90, 200), (False, True), (True, False), range(7), range(7)):
        mean = "y ~ " + " + ".join(["1"] + [f"x{k + 1}" for k in range(p_mean)])
        mean += " + (1 + x1 | g)" if slope and p_mean else " + (1 | g)"
        within = "~ " + " + ".join(["1"] + [f"x{k + 1}" for k in range(p_within)])
        within += " + (1 | g)" if scale else ""
        yield n_groups, mean, within


def fit_one(frame: pd.DataFrame, mean: str, within: str, mcmc: bool):
    import melsm

    model = melsm.Model(mean=mean, within=within, data=frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mcmc:
            return model.sample(chains=2, warmup=50, draws=50, progress=False)
        return model.fit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--mcmc-every", type=int, default=10, help="every k-th model by MCMC (0: none)")
    parser.add_argument("--no-bound", action="store_true", help="switch melsm's bound on memory maps off")
    parser.add_argument("--map-share", type=float, default=None,
                        help="the bound's share of vm.max_map_count (default melsm's, 0.5; lower shows it sooner)")
    args = parser.parse_args()
    from melsm.engine import compiled

    if args.no_bound:
        compiled.MAP_SHARE = float("inf")
    elif args.map_share is not None:
        compiled.MAP_SHARE = args.map_share
    frames = {}
    start, maps0 = time.perf_counter(), maps_and_rss()[0]
    steps = []
    print(f"{'model':>5s} {'maps':>7s} {'RSS MB':>7s} {'s':>6s}  shape")
    for k, (n_groups, mean, within) in enumerate(itertools.islice(itertools.cycle(models()), args.models)):
        frame = frames.setdefault(n_groups, data(n_groups))
        mcmc = bool(args.mcmc_every) and k % args.mcmc_every == args.mcmc_every - 1
        t = time.perf_counter()
        fit_one(frame, mean, within, mcmc)
        maps, rss = maps_and_rss()
        steps.append(maps)
        print(f"{k + 1:5d} {maps:7d} {rss:7.0f} {time.perf_counter() - t:6.1f}  "
              f"{'MCMC' if mcmc else 'ML'} J={n_groups} {mean} ; {within}", flush=True)
    growth = [b - a for a, b in zip([maps0, *steps], steps, strict=False)]
    print(f"\n{len(steps)} models in {time.perf_counter() - start:.0f} s; maps: start {maps0}, "
          f"max {max(steps)}, end {steps[-1]}; median growth per model {statistics.median(growth):.0f}; "
          f"releases {compiled.releases()}")


if __name__ == "__main__":
    main()
