"""Parametric bootstrap of a maximum-likelihood fit (docs/architecture.md, 'Bootstrap intervals').

``bootstrap(fit, n_boot, seed, scheduler)`` (``fit.bootstrap``) makes the replicates; for
b = 0, …, n_boot − 1:

1. draw a response vector from the fitted model at θ̂ with the generator
   ``SeedSequence([seed, b])``: new random effects for every group and new level-1
   errors, the design's covariates, groups and offsets kept (``simulate_response``, as
   ``fit.simulate``);
2. refit the same model to it (``model.with_response``: the same shapes, so the compiled
   likelihood is reused) from θ̂ (``start=fit.theta``), with the fit's quadrature;
3. record every reported estimate (``table()["estimate"]``: SDs and correlations on
   their reported scale; an SD estimated at 0 is the value 0), ``converged``, log L, the
   parameters on the boundary, the seconds taken and, for a refit that raised, the error.

Replicate b depends on (seed, b) only, so the replicates are the same in whatever order
and on whatever scheduler they run.

``bootstrap_intervals`` (``fit.conf_int(method="bootstrap")``) at level 1 − α:

* ``kind="percentile"`` (default): the α/2 and 1 − α/2 quantiles of the replicates'
  estimates (numpy's default, linear interpolation). Transformation-respecting: SD
  intervals stay ≥ 0, correlation intervals within [−1, 1].
* ``kind="basic"``: 2θ̂ minus those quantiles, the other way round (it corrects a bias of
  the estimator, and may leave the parameter space).

Refits that did not converge (or raised) are left out and counted in a
``MelsmFitWarning``; when more than ``MAX_FAILED_SHARE`` of them failed every interval is
NaN, with a warning: failures are seldom a random subset (they come from the awkward
data sets), so the rest would give intervals too narrow. A correlation is undefined in a
replicate where one of its effects' SD is 0: those replicates are left out of that
correlation's interval by the same rule. Fewer than ``MIN_TAIL`` expected replicates
beyond each endpoint (n·α/2 < 5 for n usable replicates) warns: the endpoint is then
interpolated between the few most extreme values.

``DEFAULT_BOOT`` = 200 is the smallest number with 5 replicates beyond each end of a 95%
interval. For an estimator close to normal the Monte Carlo SD of an endpoint is about
√(α/2 (1 − α/2) / B) / φ(z) ≈ 2.7/√B standard errors: 0.19 SE at B = 200, a tenth of the
half-width (1.96 SE). Use B ≥ 1000 for 99% intervals or for intervals to publish.

Percentile intervals inherit the bias of the estimator twice: with 30 groups they
under-covered for the SDs (0.82 for the SD of a random scale effect; bench/README.md),
where the Wald intervals did not.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd

from melsm.errors import MelsmFitWarning, MelsmInputError, count
from melsm.parallel import connect
from melsm.progress import Progress
from melsm.results.predict import simulate_response

#: Replicates made by default (module docstring).
DEFAULT_BOOT = 200
#: Replicates expected beyond each endpoint below which a warning says there are too few.
MIN_TAIL = 5
#: Above this share of failed refits (or of undefined values of a parameter), intervals are NaN.
MAX_FAILED_SHARE = 0.1
#: ``scheduler=`` values besides the address of a Dask scheduler (``"tcp://host:8786"``).
SCHEDULERS = ("synchronous", "processes")
KINDS = ("percentile", "basic")
#: Columns of the replicates' frame after the parameters.
RECORD_COLUMNS = ("converged", "loglik", "boundary", "seconds", "error")
log = logging.getLogger(__name__)


def check_options(n_boot, seed, scheduler, workers) -> tuple[int, int, int | None]:
    """One line for a bad number of replicates, seed, scheduler or number of workers."""
    n_boot = count(n_boot, "n_boot", meaning="bootstrap replicates")
    seed = count(seed, "seed", minimum=0)
    if not isinstance(scheduler, str) or not (scheduler in SCHEDULERS or "://" in scheduler):
        raise MelsmInputError(f"scheduler must be 'synchronous', 'processes' or the address of a Dask scheduler "
                              f"('tcp://host:8786'), not {scheduler!r}")
    if workers is not None:
        if scheduler != "processes":
            raise MelsmInputError(f"workers= is for scheduler='processes' (a local cluster), not {scheduler!r}")
        workers = count(workers, "workers")
    return n_boot, seed, workers


def replicate_rng(seed: int, b: int) -> np.random.Generator:
    """The random generator of replicate ``b``: ``SeedSequence([seed, b])``."""
    return np.random.default_rng(np.random.SeedSequence([seed, b]))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def failed_record(names, b: int, message: str) -> dict:
    """The record of a replicate whose refit raised (or whose worker died)."""
    return {"replicate": b, **dict.fromkeys(names, np.nan), "converged": False, "loglik": np.nan,
            "boundary": "", "seconds": np.nan, "error": message}


def refit(model, theta: np.ndarray, quadrature: int | None, seed: int, b: int) -> dict:
    """Replicate ``b``: simulate from θ̂ = ``theta`` and refit ``model`` from there (module
    docstring). Runs in this process or on a Dask worker; never raises: a refit that fails
    is a record with ``error`` set. Warnings of the refit are not shown (``converged`` and
    ``boundary`` record them)."""
    names = [str(pid) for pid in model.layout.reported_ids()]
    started = time.perf_counter()
    try:
        y = simulate_response(model.design, model.layout, theta, replicate_rng(seed, b))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.with_response(y).fit(quadrature=quadrature, start=theta)
    except Exception as err:  # noqa: BLE001  (recorded and counted, not fatal)
        return failed_record(names, b, _one_line(err))
    return {"replicate": b, **dict(zip(names, fit.table()["estimate"].to_numpy(), strict=True)),
            "converged": bool(fit.converged), "loglik": float(fit.loglik), "boundary": ",".join(fit.boundary),
            "seconds": time.perf_counter() - started, "error": ""}


def _run_here(model, args: tuple, n_boot: int, bar: Progress) -> list[dict]:
    records, failed = [], 0
    for b in range(n_boot):
        records.append(refit(model, *args, b))
        failed += not records[-1]["converged"]
        bar.advance(failed=failed)
    return records


def _run_on_dask(model, args: tuple, n_boot: int, scheduler: str, workers: int | None,
                 bar: Progress) -> list[dict]:
    """The refits as Dask tasks (the model sent once to every worker), collected as they
    finish; a task that raised or whose worker died is a failed record."""
    from distributed import as_completed

    names = [str(pid) for pid in model.layout.reported_ids()]
    client, cluster = connect(None if scheduler == "processes" else scheduler, workers)
    records, failed = [], 0
    try:
        shared = client.scatter(model, broadcast=True)
        futures = {client.submit(refit, shared, *args, b, pure=False): b for b in range(n_boot)}
        for future in as_completed(futures):
            b = futures.pop(future)
            try:
                records.append(future.result())
            except Exception as err:  # noqa: BLE001  (a worker that died)
                records.append(failed_record(names, b, f"refit failed on the cluster: {_one_line(err)}"))
            future.release()
            failed += not records[-1]["converged"]
            bar.advance(failed=failed)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return records


def bootstrap(fit, n_boot: int = DEFAULT_BOOT, seed: int = 0, scheduler: str = "synchronous",
              workers: int | None = None, progress=None) -> pd.DataFrame:
    """Parametric bootstrap replicates of this fit: ``n_boot`` data sets simulated from the
    fitted model, each refitted (``melsm.results.bootstrap``; docs/architecture.md,
    'Bootstrap intervals').

    Returns one row per replicate (index ``replicate``, 0 … n_boot − 1): a column per
    reported parameter (``fit.names``, the estimates on the reported scale), then
    ``converged``, ``loglik``, ``boundary`` (parameters on the boundary, comma-separated),
    ``seconds`` and ``error`` (why a refit raised; empty otherwise).

    ``seed``: replicate b draws its data from ``SeedSequence([seed, b])``, so the same seed
    gives the same replicates on every scheduler. ``scheduler``: ``"synchronous"``
    (default: one after another in this process), ``"processes"`` (a local Dask cluster of
    ``workers`` single-threaded processes, default one per core; each loads the compiled
    likelihood from the disk cache, a second or two) or the address of a Dask scheduler.
    ``progress``: the refits done, as ``melsm.progress.Progress`` shows them (failed ones
    beside). Frequency-weighted fits are refused: a row of weight w stands for w
    observations, each of which would need its own draw.
    """
    n_boot, seed, workers = check_options(n_boot, seed, scheduler, workers)
    model = fit.model
    if model.design.weights is not None:
        raise MelsmInputError("bootstrap intervals are not available for fits with frequency weights "
                              "(a row of weight w stands for w observations, each needing its own draw)")
    if not fit.converged:
        warnings.warn("the fit did not converge; the bootstrap simulates from its estimates all the same",
                      MelsmFitWarning, stacklevel=2)
    clean = model.with_response(model.design.y)  # without the fit's cached arrays: cheaper to send
    args = (np.asarray(fit.theta, dtype=float), fit.n_quad or None, seed)
    started = time.perf_counter()
    with Progress(progress, total=n_boot, desc="bootstrap", unit="refits") as bar:
        if scheduler == "synchronous":
            records = _run_here(clean, args, n_boot, bar)
        else:
            records = _run_on_dask(clean, args, n_boot, scheduler, workers, bar)
    frame = pd.DataFrame(records).set_index("replicate").sort_index()
    frame = frame[[*fit.names, *RECORD_COLUMNS]].astype({name: float for name in fit.names})
    log.info("bootstrap: %d refits in %.1f s (%s), %d did not converge", n_boot, time.perf_counter() - started,
             scheduler, int((~frame["converged"]).sum()))
    return frame


def _checked_replicates(fit, replicates) -> pd.DataFrame:
    needed = [*fit.names, "converged"]
    if not isinstance(replicates, pd.DataFrame) or any(c not in replicates.columns for c in needed):
        raise MelsmInputError("replicates must be this fit's fit.bootstrap() table (a DataFrame with a column "
                              "per parameter of fit.names and 'converged')")
    return replicates


def _usable_values(fit, replicates: pd.DataFrame) -> np.ndarray | None:
    """The converged replicates' estimates (rows) of every parameter (columns), or None
    when more than ``MAX_FAILED_SHARE`` of the refits failed (module docstring)."""
    converged = replicates["converged"].to_numpy(dtype=bool)
    failed, total = int((~converged).sum()), len(converged)
    if failed > MAX_FAILED_SHARE * total:
        warnings.warn(f"{failed} of {total} bootstrap refits did not converge, more than "
                      f"{MAX_FAILED_SHARE:.0%}: no bootstrap intervals (NaN); the failures are not a random "
                      "subset of the replicates", MelsmFitWarning, stacklevel=4)
        return None
    if failed:
        warnings.warn(f"{failed} of {total} bootstrap refits did not converge and are left out of the intervals",
                      MelsmFitWarning, stacklevel=4)
    return replicates.loc[converged, fit.names].to_numpy(dtype=float)


def _percentiles(fit, values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Each parameter's quantiles over its defined values; NaN where more than
    ``MAX_FAILED_SHARE`` of them are undefined, with a warning, as for too few."""
    tail = (1 - level) / 2
    defined = np.isfinite(values)
    n = defined.sum(axis=0)
    undefined = [name for name, k in zip(fit.names, n, strict=True) if k < len(values)]
    if undefined:
        worst = len(values) - int(n.min())
        warnings.warn(f"{', '.join(undefined)}: undefined in up to {worst} of {len(values)} bootstrap replicates "
                      "(a correlation of an effect whose SD is 0 there); those replicates are left out of "
                      "their intervals", MelsmFitWarning, stacklevel=4)
    low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    keep = (n > 0) & (n >= (1 - MAX_FAILED_SHARE) * len(values))
    if keep.any():
        low[keep], high[keep] = np.nanquantile(values[:, keep], [tail, 1 - tail], axis=0)
    if keep.any() and n[keep].min() * tail < MIN_TAIL - 1e-9:  # (1 − 0.95)/2 is not exactly 0.025
        needed = int(np.ceil(MIN_TAIL / tail - 1e-9))
        warnings.warn(f"only {int(n[keep].min())} usable bootstrap replicates for {level:.0%} intervals: "
                      f"{needed} or more put at least {MIN_TAIL} beyond each endpoint (n_boot={needed})",
                      MelsmFitWarning, stacklevel=4)
    return low, high


def bootstrap_intervals(fit, level: float, replicates: pd.DataFrame | None = None, kind: str = "percentile",
                        **options) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap intervals at ``level`` for every parameter of ``fit.names``
    (``fit.conf_int(alpha, method="bootstrap", ...)``; module docstring): percentile
    intervals by default, ``kind="basic"`` for basic ones. ``replicates``: a table from
    ``fit.bootstrap()`` to use (e.g. for several levels); otherwise one is made with
    ``options`` (``n_boot``, ``seed``, ``scheduler``, ``workers``, ``progress``), not kept."""
    if kind not in KINDS:
        raise MelsmInputError(f"kind must be one of {', '.join(map(repr, KINDS))}, not {kind!r}")
    if replicates is None:
        replicates = bootstrap(fit, **options)
    elif options:
        raise MelsmInputError(f"give either replicates= or the options to make them ({', '.join(options)}), not both")
    values = _usable_values(fit, _checked_replicates(fit, replicates))
    if values is None:
        return np.full(len(fit.names), np.nan), np.full(len(fit.names), np.nan)
    low, high = _percentiles(fit, values, level)
    if kind == "basic":
        estimates = fit.table()["estimate"].to_numpy(dtype=float)
        low, high = 2 * estimates - high, 2 * estimates - low
    return low, high
