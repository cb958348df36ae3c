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
   their reported scale; an SD estimated at 0 is the value 0) and its standard error
   (``se:<name>``, ``table()["std_error"]``: NaN on the boundary), ``converged``, log L,
   the parameters on the boundary, the seconds taken and, for a refit that raised, the
   error.

With ``double=True`` (``refit_double``) replicate b also draws one inner data set from
its own refit θ*_b with ``SeedSequence([seed, b, 1])`` and refits it from θ*_b, recorded
in the ``inner:`` columns: the input of double-bootstrap calibrations (none is a kind of
interval yet; bench/bootstrap_double.py). With ``signed_roots=`` (``refit_roots``)
replicate b also gets, per parameter, its signed root at ψ̂ from one constrained refit,
in the ``root:`` columns: the input of ``kind="profile"`` (``melsm.results.bootstrap_lr``).

Replicate b depends on (seed, b) only, so the replicates are the same in whatever order
and on whatever scheduler they run. The intervals made from them
(``fit.conf_int(method="bootstrap", kind=...)``) are in ``melsm.results.bootstrap_ci``.

``DEFAULT_BOOT`` = 200 is the smallest number with 5 replicates beyond each end of a 95%
interval. For an estimator close to normal the Monte Carlo SD of a percentile endpoint is
about √(α/2 (1 − α/2) / B) / φ(z) ≈ 2.7/√B standard errors: 0.19 SE at B = 200, a tenth
of the half-width (1.96 SE). Use B ≥ 1000 for 99% intervals or for intervals to publish.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings

import numpy as np
import pandas as pd

from melsm.errors import MelsmFitWarning, MelsmInputError, count
from melsm.parallel import connect
from melsm.progress import Progress
from melsm.results.bootstrap_lr import held_values, replicate_roots, root_names
from melsm.results.predict import simulate_response

#: Replicates made by default (module docstring).
DEFAULT_BOOT = 200
#: ``scheduler=`` values besides the address of a Dask scheduler (``"tcp://host:8786"``).
SCHEDULERS = ("synchronous", "processes")
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


def se_names(names) -> list[str]:
    """The replicates' columns of standard errors: ``se:<name>`` for each parameter."""
    return [f"se:{name}" for name in names]


def replicate_rng(seed: int, b: int) -> np.random.Generator:
    """The random generator of replicate ``b``: ``SeedSequence([seed, b])``."""
    return np.random.default_rng(np.random.SeedSequence([seed, b]))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def failed_record(names, b: int, message: str) -> dict:
    """The record of a replicate whose refit raised (or whose worker died)."""
    return {"replicate": b, **dict.fromkeys(names, np.nan), **dict.fromkeys(se_names(names), np.nan),
            "converged": False, "loglik": np.nan,
            "boundary": "", "seconds": np.nan, "error": message}


def refit_record(names: list[str], index: int, make_model, quadrature: int | None, theta: np.ndarray,
                 with_se: bool = True, keep: dict | None = None) -> dict:
    """Fit ``make_model()`` from ``theta`` and record it as row ``index`` of a replicate
    table (estimates, ``se:`` columns when ``with_se``, ``converged``, ``loglik``,
    ``boundary``, ``seconds``, ``error``). Never raises: a failure in ``make_model`` or the
    fit is a record with ``error`` set; warnings are not shown (``converged`` and
    ``boundary`` record them). ``keep``: a dict that gets the fit under ``"fit"`` (the
    double bootstrap simulates its inner replicate from it). Shared by the bootstrap and
    the jackknife."""
    started = time.perf_counter()
    try:
        model = make_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = model.fit(quadrature=quadrature, start=theta)
    except Exception as err:  # noqa: BLE001  (recorded and counted, not fatal)
        return failed_record(names, index, _one_line(err))
    if keep is not None:
        keep["fit"] = fit
    table = fit.table()
    errors = dict(zip(se_names(names), table["std_error"].to_numpy(), strict=True)) if with_se else {}
    return {"replicate": index, **dict(zip(names, table["estimate"].to_numpy(), strict=True)), **errors,
            "converged": bool(fit.converged), "loglik": float(fit.loglik), "boundary": ",".join(fit.boundary),
            "seconds": time.perf_counter() - started, "error": ""}


def refit(model, theta: np.ndarray, quadrature: int | None, seed: int, b: int) -> dict:
    """Replicate ``b``: simulate from θ̂ = ``theta`` and refit ``model`` from there (module
    docstring). Runs in this process or on a Dask worker; never raises (``refit_record``)."""
    names = [str(pid) for pid in model.layout.reported_ids()]

    def replicate_model():
        return model.with_response(simulate_response(model.design, model.layout, theta, replicate_rng(seed, b)))

    return refit_record(names, b, replicate_model, quadrature, theta)


def inner_names(names) -> list[str]:
    """The columns of a double bootstrap's inner replicates: ``inner:<name>`` and
    ``inner:se:<name>`` per parameter, then ``inner:converged`` and ``inner:seconds``."""
    both = [*names, *se_names(names)]
    return [*(f"inner:{c}" for c in both), "inner:converged", "inner:seconds"]


def inner_rng(seed: int, b: int) -> np.random.Generator:
    """The random generator of replicate ``b``'s inner replicate: ``SeedSequence([seed, b, 1])``."""
    return np.random.default_rng(np.random.SeedSequence([seed, b, 1]))


def refit_double(model, theta: np.ndarray, quadrature: int | None, seed: int, b: int) -> dict:
    """Replicate ``b`` of a double bootstrap: the outer refit of ``refit`` (the same data,
    so the same record), then one inner data set simulated from that refit's θ*_b with
    ``inner_rng(seed, b)`` and refitted from θ*_b, recorded in the ``inner_names`` columns
    (NaN, ``inner:converged`` False, when the outer refit failed). Never raises."""
    names, kept = [str(pid) for pid in model.layout.reported_ids()], {}

    def outer_model():
        return model.with_response(simulate_response(model.design, model.layout, theta, replicate_rng(seed, b)))

    record = refit_record(names, b, outer_model, quadrature, theta, keep=kept)
    if record["converged"]:
        theta_b = np.asarray(kept["fit"].theta, dtype=float)

        def inner_model():
            return model.with_response(simulate_response(model.design, model.layout, theta_b, inner_rng(seed, b)))

        inner = refit_record(names, b, inner_model, quadrature, theta_b)
    else:
        inner = failed_record(names, b, "the outer refit failed")
    columns = [*names, *se_names(names), "converged", "seconds"]
    return {**record, **{f"inner:{c}": inner[c] for c in columns}}


def refit_roots(model, theta: np.ndarray, quadrature: int | None, seed: int, b: int,
                held: dict[int, float] | None = None) -> dict:
    """Replicate ``b`` of ``refit`` (the same data, so the same record) and its signed
    roots r*_b at ψ̂ for each parameter k of ``held`` = {k: ψ̂_k}, in ``root:<name>``
    (``melsm.results.bootstrap_lr.replicate_roots``; NaN where the refit or the
    constrained maximisation failed). Never raises."""
    names, kept = [str(pid) for pid in model.layout.reported_ids()], {}

    def replicate_model():
        return model.with_response(simulate_response(model.design, model.layout, theta, replicate_rng(seed, b)))

    record = refit_record(names, b, replicate_model, quadrature, theta, keep=kept)
    roots = dict.fromkeys(held or {}, np.nan)
    if record["converged"]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                roots = replicate_roots(kept["fit"], theta, held or {})
        except Exception as err:  # noqa: BLE001  (NaN roots, the refit's record kept)
            log.info("replicate %d: signed roots failed: %s", b, _one_line(err))
    return {**record, **{f"root:{names[k]}": value for k, value in roots.items()}}


def run_here(model, args: tuple, n_boot: int, bar: Progress, task=None) -> list[dict]:
    """``task(model, *args, b)`` (default ``refit``) for b = 0 … n_boot − 1 in this process."""
    task = refit if task is None else task
    records, failed = [], 0
    for b in range(n_boot):
        records.append(task(model, *args, b))
        failed += not records[-1]["converged"]
        bar.advance(failed=failed)
    return records


def run_on_dask(model, args: tuple, n_boot: int, scheduler: str, workers: int | None,
                bar: Progress, task=None) -> list[dict]:
    """The refits (``task``, default ``refit``) as Dask tasks (the model sent once to every worker), collected as they
    finish; a task that raised or whose worker died is a failed record."""
    from distributed import as_completed

    task = refit if task is None else task
    names = [str(pid) for pid in model.layout.reported_ids()]
    client, cluster = connect(None if scheduler == "processes" else scheduler, workers)
    records, failed = [], 0
    try:
        shared = client.scatter(model, broadcast=True)
        futures = {client.submit(task, shared, *args, b, pure=False): b for b in range(n_boot)}
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


def _checked_extras(fit, double, signed_roots) -> dict[int, float]:
    """One line for a bad ``double`` or ``signed_roots`` or a weighted fit; the ψ̂ to hold."""
    if not isinstance(double, bool):
        raise MelsmInputError(f"double must be True or False, not {double!r}")
    held = held_values(fit, signed_roots)
    if held and double:
        raise MelsmInputError("signed_roots= and double=True do not go together: make two tables")
    if fit.model.design.weights is not None:
        raise MelsmInputError("bootstrap intervals are not available for fits with frequency weights "
                              "(a row of weight w stands for w observations, each needing its own draw)")
    return held


def bootstrap(fit, n_boot: int = DEFAULT_BOOT, seed: int = 0, scheduler: str = "synchronous",
              workers: int | None = None, progress=None, double: bool = False,
              signed_roots: bool | str | list[str] = False) -> pd.DataFrame:
    """Parametric bootstrap replicates of this fit: ``n_boot`` data sets simulated from the
    fitted model, each refitted (``melsm.results.bootstrap``; docs/architecture.md,
    'Bootstrap intervals').

    Returns one row per replicate (index ``replicate``, 0 … n_boot − 1): a column per
    reported parameter (``fit.names``, the estimates on the reported scale), a column
    ``se:<name>`` per parameter (the refit's standard error on the reported scale, NaN on
    the boundary; studentized intervals use them), then ``converged``, ``loglik``,
    ``boundary`` (parameters on the boundary, comma-separated), ``seconds`` and ``error``
    (why a refit raised; empty otherwise).

    ``seed``: replicate b draws its data from ``SeedSequence([seed, b])``, so the same seed
    gives the same replicates on every scheduler. ``scheduler``: ``"synchronous"``
    (default: one after another in this process), ``"processes"`` (a local Dask cluster of
    ``workers`` single-threaded processes, default one per core; each loads the compiled
    likelihood from the disk cache, a second or two) or the address of a Dask scheduler.
    ``progress``: the refits done, as ``melsm.progress.Progress`` shows them (failed ones
    beside). ``double=True``: each replicate also gets one inner replicate (``refit_double``:
    data simulated from the refit's own estimates θ*_b with ``SeedSequence([seed, b, 1])``,
    refitted), in the columns ``inner:<name>``, ``inner:se:<name>``, ``inner:converged``
    and ``inner:seconds``; the outer columns are those of ``double=False``; twice the
    refits. The double-bootstrap calibrations of bench/bootstrap_double.py read them (no
    kind of ``conf_int`` uses them: none reached nominal coverage). ``signed_roots``: True
    (every parameter), a name or a list of names: each replicate also gets, per parameter,
    the signed root r*_b = sign(ψ*_b − ψ̂)·√(2(ℓ*_b − pl*_b(ψ̂))) in ``root:<name>``, from
    one constrained refit with ψ held at ψ̂ (``refit_roots``; NaN where it failed), the
    input of ``conf_int(method="bootstrap", kind="profile")``; not with ``double``.
    Frequency-weighted fits
    are refused: a row of weight w stands for w observations, each of which would need its
    own draw.
    """
    n_boot, seed, workers = check_options(n_boot, seed, scheduler, workers)
    held = _checked_extras(fit, double, signed_roots)
    model = fit.model
    if not fit.converged:
        warnings.warn("the fit did not converge; the bootstrap simulates from its estimates all the same",
                      MelsmFitWarning, stacklevel=2)
    clean = model.with_response(model.design.y)  # without the fit's cached arrays: cheaper to send
    args = (np.asarray(fit.theta, dtype=float), fit.n_quad or None, seed)
    task = refit_double if double else functools.partial(refit_roots, held=held) if held else refit
    started = time.perf_counter()
    with Progress(progress, total=n_boot, desc="bootstrap", unit="refits") as bar:
        if scheduler == "synchronous":
            records = run_here(clean, args, n_boot, bar, task=task)
        else:
            records = run_on_dask(clean, args, n_boot, scheduler, workers, bar, task=task)
    frame = pd.DataFrame(records).set_index("replicate").sort_index()
    columns, inner = [*fit.names, *se_names(fit.names)], inner_names(fit.names) if double else []
    roots = root_names(fit.names[k] for k in held)
    # reindex: a record of a worker that died has no root columns
    frame = frame.reindex(columns=[*columns, *RECORD_COLUMNS, *inner, *roots]).astype(
        dict.fromkeys([*columns, *inner[:-2], *roots], float))
    if double:
        frame = frame.astype({"inner:converged": bool, "inner:seconds": float})
    log.info("bootstrap: %d refits in %.1f s (%s), %d did not converge", n_boot, time.perf_counter() - started,
             scheduler, int((~frame["converged"]).sum()))
    return frame
