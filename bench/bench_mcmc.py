"""MCMC speed on London Model 6: effective samples per second of the whole process.

Run by hand:  python bench/bench_mcmc.py [--chains 16 --warmup 1000 --draws 1000] [--model bambi]

Counts everything from process start (imports, the ML fit used for starting values,
compilation, warm-up, sampling, drawing the location effects, summaries), and reports
the smallest bulk ESS over all hyperparameters (every reported parameter), as for the
brms reference: 4 chains x 2000 iterations, 283 s, smallest bulk ESS 732, 2.6 ESS/s.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import warnings  # noqa: E402

import melsm  # noqa: E402

# model6: London Model 6 (random slopes in both functions, all effects correlated);
# bambi: the closest model to bench_bambi.py's (Bambi has no correlations between group
# effects): uncorrelated intercept and slope in the mean, location and scale independent.
MODELS = {
    "model6": {"mean": "normexam ~ standlrt + girl + (standlrt | school)",
               "within": "~ standlrt + girl + (standlrt | school)"},
    "bambi": {"mean": "normexam ~ standlrt + girl + (standlrt || school)",
              "within": "~ standlrt + girl + (1 | school)", "association": "none"},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--priors", default="default")
    parser.add_argument("--model", choices=sorted(MODELS), default="model6")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    data = melsm.datasets.load("tutorial")
    model = melsm.Model(data=data, **MODELS[args.model])
    result = model.sample(chains=args.chains, warmup=args.warmup, draws=args.draws, priors=args.priors,
                          progress=False)
    total = time.perf_counter() - START
    table = result.table()
    info = result.info
    worst = table.ess_bulk.idxmin()
    print(table[["estimate", "std_error", "r_hat", "ess_bulk", "ess_tail"]].round(3).to_string())
    print(f"whole process {total:.1f} s; sampler {info['seconds']:.1f} s; "
          f"gradients per chain {info['gradients'] / args.chains:.0f} "
          f"({info['mean_leapfrog_steps']:.1f} leapfrog steps per iteration); "
          f"upper bound per vectorised gradient {1000 * info['seconds'] / (info['gradients'] / args.chains):.2f} ms "
          f"for {args.chains} chains (sampler time, which includes compilation and warm-up, over "
          f"the sampling phase's gradients)")
    print(f"smallest bulk ESS {table.ess_bulk.min():.0f} ({worst}); max R-hat {table.r_hat.max():.4f}; "
          f"divergences {info['divergences']}")
    print(f"ESS/s (whole process) {table.ess_bulk.min() / total:.1f}")


if __name__ == "__main__":
    main()
