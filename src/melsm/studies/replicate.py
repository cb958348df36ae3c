"""One replicate of a study: simulate its data and fit every competing model.

Per replicate, model and parameter a row records the estimate, its SE and 95% CI, the
value the estimate aims at (``truth``), convergence (with the optimiser's message when
not converged), the log-likelihood and, for a fit that failed, the error.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from melsm.pipeline import Model
from melsm.studies.simulate import model_formulas, simulate, truth_by_id
from melsm.studies.study import Study, _formulas, implied_truth

ROW_COLUMNS = {"design": "int64", "replicate": "int64", "model": "object", "parameter": "object",
               "truth": "float64", "estimate": "float64", "se": "float64", "ci_low": "float64",
               "ci_high": "float64", "converged": "bool", "boundary": "object", "loglik": "float64",
               "seconds": "float64", "error": "object", "message": "object"}



def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def failed_rows(study: Study, design_id: int, replicate: int, message: str, models=None) -> pd.DataFrame:
    """One row per model (``parameter`` empty) recording a replicate or fit that failed."""
    rows = [{"design": design_id, "replicate": replicate, "model": name, "parameter": "", "truth": np.nan,
             "estimate": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "converged": False,
             "boundary": "", "loglik": np.nan, "seconds": np.nan, "error": message, "message": ""}
            for name in (models if models is not None else study.fits)]
    return typed_rows(pd.DataFrame(rows, columns=list(ROW_COLUMNS)))


def typed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the row columns' types (``ROW_COLUMNS``; Parquet reads text back as
    strings); a text column that rows stored by an earlier version lack is empty."""
    missing = {c: "" for c, kind in ROW_COLUMNS.items() if c not in frame.columns and kind == "object"}
    return frame.assign(**missing).astype(ROW_COLUMNS)


def fit_model(data: pd.DataFrame, spec: dict):
    """One competing model's ML fit (warnings are recorded in the rows, not shown)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Model(data=data, **_formulas(spec))
        return model.fit(quadrature=spec.get("quadrature"), max_iter=spec.get("max_iter"))


def _true_parameters(study: Study, data: pd.DataFrame, truth: dict) -> dict:
    """The design point's truth by ``ParamName`` of the generating model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layout = Model(data=data, **model_formulas(study.model)).layout
    return truth_by_id(layout, truth)


def replicate_rows(study: Study, design_id: int, replicate: int) -> pd.DataFrame:
    """Draw replicate ``replicate`` of design ``design_id`` and fit every competing model.

    Never raises for a failed simulation or fit: those become rows with ``error`` set
    (``failed_rows``), so one bad replicate cannot stop a study.
    """
    point = study.designs()[design_id]
    seed = np.random.SeedSequence([study.seed, design_id, replicate])
    try:
        data = simulate(study.model, point.truth, point.design, seed=seed)
    except Exception as err:  # noqa: BLE001  (recorded, not fatal)
        return failed_rows(study, design_id, replicate, f"simulation failed: {_one_line(err)}")
    truth = _true_parameters(study, data, point.truth)
    frames = []
    for name, spec in study.fits.items():
        start = time.perf_counter()
        try:
            fit = fit_model(data, spec)
        except Exception as err:  # noqa: BLE001
            frames.append(failed_rows(study, design_id, replicate, f"fit failed: {_one_line(err)}", [name]))
            continue
        table = fit.table()
        frames.append(pd.DataFrame({
            "design": design_id, "replicate": replicate, "model": name, "parameter": table.index.to_list(),
            "truth": [implied_truth(pid, truth) for pid in fit.ids],
            "estimate": table["estimate"].to_numpy(), "se": table["std_error"].to_numpy(),
            "ci_low": table["lower"].to_numpy(), "ci_high": table["upper"].to_numpy(),
            "converged": bool(fit.converged), "boundary": ",".join(fit.boundary), "loglik": float(fit.loglik),
            "seconds": time.perf_counter() - start, "error": "", "message": "" if fit.converged else fit.message,
        }))
    return typed_rows(pd.concat(frames, ignore_index=True))


