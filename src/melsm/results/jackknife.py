"""Jackknife over groups of a maximum-likelihood fit (docs/architecture.md, 'Bootstrap
intervals'): the acceleration of BCa bootstrap intervals (``melsm.results.bootstrap_ci``).

``jackknife(fit, scheduler, workers, progress)`` (``fit.jackknife``) refits the model J
times, leaving out one group at a time: group j's rows (and its row of the level-2
design) are taken out of the fitted model's design (``without_group``), the other rows
keep their covariates, offsets and weights, and the refit starts from θ̂
(``start=fit.theta``) with the fit's quadrature. The design's matrices are those of the
whole data (transform state and factor levels as fitted), so every refit has the same
parameters; a column that is all zero without group j (a factor level only j has) makes
that refit fail, and it is recorded as such. The refits run on the schedulers of
``fit.bootstrap`` (``melsm.results.bootstrap``): in this process, on a local Dask cluster
or on a scheduler's address.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from melsm.errors import MelsmFitWarning, MelsmInputError
from melsm.progress import Progress
from melsm.results.bootstrap import RECORD_COLUMNS, check_options, refit_record, run_here, run_on_dask

log = logging.getLogger(__name__)


def without_group(model, j: int):
    """``model`` without group ``j`` (0 … J − 1, the design's group order): the same
    specification and parameters, on the other groups' rows (module docstring)."""
    design = model.design
    if design.group_name is None or not 0 <= j < design.n_groups:
        raise MelsmInputError(f"no group {j!r} to leave out (the model has {design.n_groups} groups)")
    keep, groups = design.group != j, np.arange(design.n_groups) != j

    def rows(a):
        return None if a is None else a[keep]

    new = copy.copy(model)
    new.design = replace(
        design, y=design.y[keep], X=design.X[keep], W=design.W[keep], Zu=design.Zu[keep], Zv=design.Zv[keep],
        G=design.G[groups], group=(design.group[keep] - (design.group[keep] > j)).astype(design.group.dtype),
        group_labels=design.group_labels[groups], row_order=design.row_order[keep],
        row_index=design.row_index[keep], offset_mean=rows(design.offset_mean),
        offset_within=rows(design.offset_within), weights=rows(design.weights),
        covariates=None if design.covariates is None else design.covariates[keep].reset_index(drop=True),
        y_scale=float(np.std(design.y[keep])))
    new._units = new._model_data = new._sampler_data = None
    new._fit_data = {}
    return new


def refit_without(model, theta: np.ndarray, quadrature: int | None, j: int) -> dict:
    """Refit ``model`` without group ``j`` from ``theta``; never raises (``refit_record``:
    a failure is a record with ``error`` set)."""
    names = [str(pid) for pid in model.layout.reported_ids()]
    return refit_record(names, j, lambda: without_group(model, j), quadrature, theta, with_se=False)


def jackknife(fit, scheduler: str = "synchronous", workers: int | None = None, progress=None) -> pd.DataFrame:
    """Leave-one-group-out refits of this fit (``melsm.results.jackknife``): one row per
    group (index ``group``, the group's label, in the design's order), a column per
    reported parameter (``fit.names``), then ``converged``, ``loglik``, ``boundary``,
    ``seconds`` and ``error``. ``scheduler``, ``workers`` and ``progress`` as for
    ``fit.bootstrap``. ``conf_int(method="bootstrap", kind="bca", jackknife=...)`` takes
    the table, so one jackknife serves every parameter, level and replicate table."""
    _, _, workers = check_options(1, 0, scheduler, workers)
    model = fit.model
    if model.design.group_name is None:
        raise MelsmInputError("the jackknife leaves out one group at a time: the model has no groups")
    if not fit.converged:
        warnings.warn("the fit did not converge; the jackknife refits start from its estimates all the same",
                      MelsmFitWarning, stacklevel=2)
    clean = model.with_response(model.design.y)  # without the fit's cached arrays: cheaper to send
    args, n = (np.asarray(fit.theta, dtype=float), fit.n_quad or None), model.design.n_groups
    started = time.perf_counter()
    with Progress(progress, total=n, desc="jackknife", unit="refits") as bar:
        if scheduler == "synchronous":
            records = run_here(clean, args, n, bar, task=refit_without)
        else:
            records = run_on_dask(clean, args, n, scheduler, workers, bar, task=refit_without)
    frame = pd.DataFrame(records).set_index("replicate").sort_index()
    frame = frame[[*fit.names, *RECORD_COLUMNS]].astype(dict.fromkeys(fit.names, float))
    frame.index = pd.Index(model.design.group_labels, name="group")
    log.info("jackknife: %d refits in %.1f s (%s), %d did not converge", n, time.perf_counter() - started,
             scheduler, int((~frame["converged"]).sum()))
    return frame
