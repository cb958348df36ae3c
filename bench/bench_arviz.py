"""Cost of the ArviZ groups of an MCMC fit (melsm.results.inference_data).

Run by hand:  python bench/bench_arviz.py [--data riesby|london2] [--chains 16 --warmup 1000 --draws 1000]

Times, in one process after the fit: the log_likelihood group at every draw (the first
read of it, e.g. ``az.loo(fit.idata)``, compilation included, then again warm), the
comparison tables' criteria on at most MARGINAL_DRAWS draws (``information_criteria``,
warm), ``fit.ppc()`` at every draw, ``fit.sample_prior(1000)``, and ArviZ's summary,
trace and forest plots of ``fit.idata``.
"""

import argparse
import time
import warnings

import arviz as az
import matplotlib

import melsm
from melsm.demo import LONDON_MODELS, RIESBY

matplotlib.use("Agg")


def timed(label: str, fn):
    start = time.perf_counter()
    out = fn()
    print(f"{label}: {time.perf_counter() - start:.2f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="riesby", choices=["riesby", "london2"])
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.data == "riesby":
        model = melsm.Model(RIESBY["mean"], within=RIESBY["within"], between=RIESBY["between"],
                            data=melsm.datasets.load("reisby"), association=RIESBY["association"])
    else:
        model = melsm.Model(*LONDON_MODELS["Model 2"], data=melsm.datasets.load("tutorial"))
    fit = timed("sample() in all", lambda: model.sample(chains=args.chains, warmup=args.warmup, draws=args.draws,
                                                       progress=False))
    print(f"sampler {fit.seconds:.2f} s; {args.chains * args.draws} draws, {fit.n_groups} groups, {fit.n_obs} rows")
    import matplotlib.pyplot as plt

    timed("az.summary(fit.idata)", lambda: az.summary(fit.idata))
    timed("az.plot_trace(fit.idata)", lambda: az.plot_trace(fit.idata))
    timed("az.plot_forest(fit.idata)", lambda: az.plot_forest(fit.idata))
    plt.close("all")
    timed("az.loo(fit.idata), first (log-likelihood at every draw, compilation included)", lambda: az.loo(fit.idata))
    fit._marginal.clear()
    timed("information_criteria(), MARGINAL_DRAWS, warm", fit.information_criteria)
    fit._marginal.clear()
    timed("log-likelihood at every draw, warm", fit._loglik_group)
    timed("az.loo on it", lambda: az.loo(fit.idata))
    idata = timed("fit.ppc() at every draw", fit.ppc)
    print(f"posterior_predictive: {idata.posterior_predictive['y'].nbytes / 2**20:.0f} MiB")
    timed("fit.sample_prior(1000)", lambda: fit.sample_prior(1000))


if __name__ == "__main__":
    main()
