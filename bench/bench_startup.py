"""Start-up: the whole `melsm riesby` process (MIXREGLS' example), and where its time goes.

Run by hand:  python bench/bench_startup.py [--repeats 7] [--src PATH]

Reports, each as a median over repeats, both wall-clock and CPU seconds (user + system of
the child process: on a loaded machine the CPU figure is the steadier one):
- the whole process with a warm cache (the on-disk caches filled by an earlier run);
- the whole process with a cold cache (an empty cache directory: first use ever);
- `import melsm` alone, and `python -c pass` (the interpreter's own floor);
- the libraries' floor: importing JAX (with a first array operation), formulaic (which
  imports pandas and scipy.sparse), and scipy.optimize: no fit can start sooner;
- the import time breakdown of the warm process (`python -X importtime`), summed by
  top-level package: what a fit imports and how long each library takes.
``--src`` runs another source tree (e.g. an older checkout's ``src``) for before/after
figures. MIXREGLS (Fortran) takes 0.33 s for the same fit (bench/README.md).
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RIESBY = [sys.executable, "-m", "melsm.cli", "riesby"]
# The floor under any whole-process fit: the libraries a fit cannot do without (JAX and a
# first array operation, which starts its CPU client; formulaic for the formulas, which
# imports pandas and scipy.sparse), with and without the optimiser's scipy.optimize.
FLOOR = "import jax.numpy as jnp, formulaic; jnp.zeros(1) + 1"
FLOOR_OPTIMISER = FLOOR.replace("formulaic;", "formulaic, scipy.optimize;")


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process; CPU = its user + system time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def medians(command: list[str], env: dict, repeats: int, fresh_cache: bool = False) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            wall, cpu = timed(command, {**env, "MELSM_CACHE_DIR": cache} if fresh_cache else env)
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus)


def import_breakdown(env: dict) -> list[tuple[str, float]]:
    """Self time of every module the warm Riesby process imports, summed by top-level
    package (``-X importtime``), largest first, in seconds."""
    done = subprocess.run([sys.executable, "-X", "importtime", *RIESBY[1:]], env=env, check=True,
                          capture_output=True, text=True)
    totals: collections.Counter = collections.Counter()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|")
        totals[name.strip().split(".")[0]] += int(self_us) / 1e6
    return totals.most_common()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"),
                        help="the melsm source tree to run (default: this checkout's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": args.src, "MELSM_CACHE_DIR": cache}
        subprocess.run(RIESBY, check=True, env=env, stdout=subprocess.DEVNULL)  # fill the cache
        rows = {
            "python -c pass": medians([sys.executable, "-c", "pass"], env, args.repeats),
            "floor: JAX + formulaic": medians([sys.executable, "-c", FLOOR], env, args.repeats),
            "  + scipy.optimize": medians([sys.executable, "-c", FLOOR_OPTIMISER], env, args.repeats),
            "import melsm": medians([sys.executable, "-c", "import melsm"], env, args.repeats),
            "melsm riesby, warm cache": medians(RIESBY, env, args.repeats),
            "melsm riesby, cold cache": medians(RIESBY, env, max(1, args.repeats // 3), fresh_cache=True),
        }
        breakdown = import_breakdown(env)
    print(f"source: {args.src}   load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':28s} {'wall s':>8s} {'CPU s':>8s}   (medians of {args.repeats}; cold: {max(1, args.repeats // 3)})")
    for name, (wall, cpu) in rows.items():
        print(f"{name:28s} {wall:8.2f} {cpu:8.2f}")
    print("\nimport time of the warm process by package (self time, s):")
    total = sum(seconds for _, seconds in breakdown)
    for name, seconds in breakdown[:12]:
        print(f"  {name:20s} {seconds:6.3f}")
    print(f"  {'(all)':20s} {total:6.3f}")


if __name__ == "__main__":
    main()
