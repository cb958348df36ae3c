"""ML of data held by a Dask cluster against the same fit in memory: time and peak memory.

Run by hand:  python bench/bench_dask_fit.py [--size 1M:10k] [--partitions 8] [--workers 2] [--uneven]

The data are ``bench_scale.simulate``'s (random intercepts in both functions, correlated,
one level-1 covariate in each), written as a Parquet directory of ``--partitions`` files,
each holding whole groups (``--uneven``: the groups of partition k have
``UNEVEN_SIZES[k % 8]`` rows, so the partitions' own best chunk lengths differ). Two new
processes fit them: "in memory" reads the files with pandas and fits
(``melsm.Model(data=frame)``); "Dask, local" fits the directory itself
(``melsm.Model(data=path, workers=...)``: a local cluster of worker processes, the
optimiser in the client; docs/architecture.md, 'Data on a cluster'). Reported per process:
the time to read and set up, the fit with its SEs, the client's peak RSS
(``ru_maxrss``: the workers are other processes) and, for Dask, each worker's peak RSS
and the number of distinct block shapes of the partitions (each a compiled likelihood on
every worker that meets it); then the largest differences of estimates, SEs and log L
between the two fits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEAN, WITHIN = "y ~ x + (1 | g)", "~ x + (1 | g)"
#: Group sizes by partition for ``--uneven``.
UNEVEN_SIZES = (12, 30, 55, 100, 150, 230, 40, 75)


def block_shapes(held) -> tuple:
    """The padded shapes of a partition's blocks (on its worker)."""
    import jax

    from melsm.engine.blocks import parts

    return tuple(sorted({tuple(leaf.shape for leaf in jax.tree_util.tree_leaves(p)) for p in parts(held[0])}))


def partitions(rows: int, groups: int, count: int, uneven: bool) -> list:
    """The data as ``count`` frames of whole groups: ``bench_scale.simulate``'s, or with
    ``uneven`` its model with partition k's groups of ``UNEVEN_SIZES[k % 8]`` rows."""
    from bench_scale import simulate

    if not uneven:
        frame = simulate(rows, groups)
        per = -(-groups // count)
        return [frame[(frame.g >= k * per) & (frame.g < (k + 1) * per)] for k in range(count)]
    frames, first = [], 0
    for k in range(count):
        size = UNEVEN_SIZES[k % len(UNEVEN_SIZES)]
        n_groups = max(1, rows // count // size)
        part = simulate(n_groups * size, n_groups, seed=k + 1)
        frames.append(part.assign(g=part.g + first))
        first += n_groups
    return frames


def child(path: str, mode: str, workers: int) -> None:
    import resource

    import numpy as np
    import pandas as pd

    import melsm

    started = time.perf_counter()
    if mode == "memory":
        model = melsm.Model(MEAN, WITHIN, data=pd.read_parquet(path))
    else:
        model = melsm.Model(MEAN, WITHIN, data=path, workers=workers)
    ready = time.perf_counter()
    fit = model.fit()
    done = time.perf_counter()
    out = {"setup_s": ready - started, "fit_s": done - ready, "loglik": fit.loglik,
           "estimates": np.asarray(fit.estimates).tolist(), "std_errors": np.asarray(fit.std_errors).tolist(),
           "client_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if mode == "dask":
        peaks = model._cluster.client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        out["worker_peak_gb"] = sorted(peaks.values())
        blocks = next(iter(model._cluster._blocks.values()))
        shapes = model._cluster.client.gather(model._cluster.client.map(block_shapes, blocks.futures))
        out["block_shapes"] = len({shape for partition in shapes for shape in partition})
        model.close()
    print(json.dumps(out))


def run(path: Path, mode: str, workers: int) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(path), mode, str(workers)],
                          capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - started
    return out


def main() -> None:
    sys.path.insert(0, str(HERE))
    from bench_scale import parse_size

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1M:10k")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--uneven", action="store_true")
    args = parser.parse_args()
    rows, groups = parse_size(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data"
        path.mkdir()
        for k, part in enumerate(partitions(rows, groups, args.partitions, args.uneven)):  # whole groups per file
            part.to_parquet(path / f"part.{k:03d}.parquet", index=False)
        results = {mode: run(path, mode, args.workers) for mode in ("memory", "dask")}
    for mode, r in results.items():
        extra = (f", workers' peak RSS {r['worker_peak_gb']}, {r['block_shapes']} block shape(s)"
                 if "worker_peak_gb" in r else "")
        print(f"{mode}: process {r['process_s']:.1f} s, setup {r['setup_s']:.1f} s, fit {r['fit_s']:.1f} s, "
              f"client peak RSS {r['client_peak_gb']:.2f} GB{extra}, log L {r['loglik']:.6f}")
    diff = {key: max(abs(a - b) for a, b in zip(results["memory"][key], results["dask"][key], strict=True))
            for key in ("estimates", "std_errors")}
    print(f"largest difference: estimates {diff['estimates']:.2e}, SEs {diff['std_errors']:.2e}, "
          f"log L {abs(results['memory']['loglik'] - results['dask']['loglik']):.2e}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
