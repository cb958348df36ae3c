"""Time ``melsm demo`` as a user runs it: a whole new process, first with an empty
compilation cache (first use ever), then with the cache it filled.

    python bench/bench_demo.py [--warm-repeats 2]

Prints each step's time (from the demo's progress lines) and the wall time of each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cache: Path, out: Path) -> tuple[float, list[str]]:
    env = dict(os.environ, MELSM_CACHE_DIR=str(cache))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "melsm.cli", "demo", "--out", str(out)], env=env,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, [line for line in done.stderr.splitlines() if line.startswith("[")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warm-repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cache, out = Path(folder) / "cache", Path(folder) / "demo.html"
        wall, steps = run(cache, out)
        print(f"empty cache (first use ever): {wall:.1f} s")
        print("\n".join(f"    {s}" for s in steps))
        walls = []
        for _ in range(args.warm_repeats):
            wall, steps = run(cache, out)
            walls.append(wall)
        print(f"cache filled: {', '.join(f'{w:.1f} s' for w in walls)}")
        print("\n".join(f"    {s}" for s in steps))
        print(f"report: {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
