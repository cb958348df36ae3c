"""The closest Python peer for MCMC: Bambi with the nutpie sampler, on London data.

Run by hand, in Bambi's own virtual environment (not melsm's):

    python -m venv bench/.venv-bambi
    bench/.venv-bambi/bin/pip install -r bench/bambi-requirements.txt
    bench/.venv-bambi/bin/python bench/bench_bambi.py [--chains 4 --tune 1000 --draws 1000]

The model (Bambi's group effects are uncorrelated, and the location and scale effects
independent; melsm's closest model is ``bench_mcmc.py --model bambi``):

    normexam ~ standlrt + girl + (standlrt | school),  sigma ~ standlrt + girl + (1 | school)

with Bambi's default priors. Timed from process start (imports, building the model,
nutpie's compilation, tuning, sampling); the smallest bulk ESS is taken over every
parameter without a school dimension (the fixed effects and the group SDs), as melsm's
over its reported parameters. The data are read from melsm's own copy of the CSV, without
importing melsm.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import arviz as az  # noqa: E402
import bambi as bmb  # noqa: E402
import pandas as pd  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "src" / "melsm" / "datasets" / "data" / "tutorial.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data = pd.read_csv(DATA)
    data["school"] = data["school"].astype(str)
    formula = bmb.Formula("normexam ~ standlrt + girl + (standlrt | school)", "sigma ~ standlrt + girl + (1 | school)")
    model = bmb.Model(formula, data)
    idata = model.fit(draws=args.draws, tune=args.tune, chains=args.chains, inference_method="nutpie",
                      random_seed=args.seed, progressbar=False)
    sampled = time.perf_counter() - START
    names = [v for v, da in idata.posterior.data_vars.items()
             if not any(str(d).startswith("school") for d in da.dims)]
    summary = az.summary(idata, var_names=names)
    total = time.perf_counter() - START
    print(summary[["mean", "sd", "r_hat", "ess_bulk", "ess_tail"]].round(3).to_string())
    worst = summary.ess_bulk.idxmin()
    print(f"whole process {total:.1f} s (to the end of sampling {sampled:.1f} s); "
          f"smallest bulk ESS {summary.ess_bulk.min():.0f} ({worst}); max R-hat {summary.r_hat.max():.4f}")
    print(f"ESS/s (whole process) {summary.ess_bulk.min() / total:.1f}")


if __name__ == "__main__":
    main()
