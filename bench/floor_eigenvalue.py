"""How the top eigenvalue behind BlackJAX's ChEES trajectory-length floor depends on the
number of draws it is estimated from (bench/README.md, "Where the 10,000-group run
spends its time").

Run by hand:  python bench/floor_eigenvalue.py [--size 10k:1k]

Samples ``bench_scale``'s model (16 chains × 500 warm-up × 500 draws) and prints, for the
last N draws of all chains, λ_max of their whitened covariance (each coordinate scaled to
unit variance, as the floor's ``D^{-1/2} C D^{-1/2}``), beside the Marchenko–Pastur edge
(1 + √(d/N))² that independent draws of an identity covariance would reach.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import parse_size, simulate  # noqa: E402  (this folder's own helper)


def top_eigenvalue(x: np.ndarray) -> float:
    """λ_max of the correlation matrix of the rows of ``x`` (N × d), by an SVD."""
    x = x - x.mean(axis=0)
    x = x / x.std(axis=0)
    return float(np.linalg.svd(x / np.sqrt(len(x) - 1), compute_uv=False)[0] ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10k:1k")
    args = parser.parse_args()
    import melsm

    rows, groups = parse_size(args.size)
    model = melsm.Model(mean="y ~ x + (1 | g)", within="~ x + (1 | g)", data=simulate(rows, groups))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = model.sample(chains=16, warmup=500, draws=500, progress=False)
    z = post._positions  # (draws, chains, d): the sampler's own coordinates
    d = z.shape[2]
    print(f"d = {d}; mean leapfrog steps {post.info['mean_leapfrog_steps']:.2f} of {post.info['step_size']:.3f}")
    for last in (25, 50, 125, 250, 500):
        x = z[-last:].reshape(-1, d)
        edge = (1 + np.sqrt(d / len(x))) ** 2
        print(f"last {last:3d} draws, N = {len(x):5d}: lambda_max {top_eigenvalue(x):6.2f}, MP edge {edge:5.2f}")
    thinned = z[::10].reshape(-1, d)
    print(f"every 10th draw, N = {len(thinned):5d}: lambda_max {top_eigenvalue(thinned):6.2f}")


if __name__ == "__main__":
    main()
