"""melsm: mixed-effects location scale models.

>>> import melsm
>>> data = melsm.datasets.load("reisby")
>>> fit = melsm.Model(mean="hamdep ~ week + endog + endweek + (1 | id)",
...                   within="~ week + endog + (1 | id)", between="~ endog",
...                   data=data, association="none").fit()
>>> print(fit.summary())

``import melsm`` loads JAX (and sets it up: float64, the compilation cache) and nothing
else of its own: each public name is imported on first use (module ``__getattr__``), so
a process that fits one model never imports the reporting, study or plotting code, nor
Dask, arviz or matplotlib (docs/architecture.md, 'Start-up').
"""

from __future__ import annotations

import importlib as _importlib
import logging as _logging
from typing import TYPE_CHECKING

from melsm.engine import jax_config  # noqa: F401  (float64 and the compilation cache, before any JAX use)
from melsm.errors import (
    MelsmBoundaryWarning,
    MelsmConvergenceWarning,
    MelsmDataWarning,
    MelsmFitWarning,
    MelsmInputError,
    MelsmStudyWarning,
)
from melsm.results import PENDING_ACCESSORS

if TYPE_CHECKING:
    from melsm.results.ml import LRTest, MLResults

__version__ = "0.1.0"
# melsm's log messages (compilation, fits, studies) reach the handlers the application
# configures; without any, nothing is printed (not even Python's last-resort warnings).
_logging.getLogger("melsm").addHandler(_logging.NullHandler())

#: Public name -> (module, attribute in it; None: the module itself), imported on first use.
_LAZY = {
    "Model": ("melsm.pipeline", "Model"),
    "Results": ("melsm.results.base", "Results"),
    "register_accessor": ("melsm.results.base", "register_accessor"),
    "MLResults": ("melsm.results.ml", "MLResults"),
    "LRTest": ("melsm.results.ml", "LRTest"),
    "Priors": ("melsm.estimate.priors", "Priors"),
    "release_compiled": ("melsm.engine.compiled", "release"),
    "compare": ("melsm.reporting.compare", "compare"),
    "Comparison": ("melsm.reporting.compare", "Comparison"),
    "report": ("melsm.reporting.report", "report"),
    "read_study": ("melsm.studies.run", "read_results"),
    "run_study": ("melsm.studies.run", "run_study"),
    "simulate": ("melsm.studies.simulate", "simulate"),
    "Study": ("melsm.studies.study", "Study"),
    "builtin_study": ("melsm.studies.study", "builtin"),
    "load_study": ("melsm.studies.study", "load"),
    "StudyResults": ("melsm.studies.summary", "StudyResults"),
    "datasets": ("melsm.datasets", None),
    "plots": ("melsm.reporting.plots", None),
}

__all__ = ["Model", "Results", "MLResults", "LRTest", "datasets", "compare", "Comparison", "report", "MelsmInputError",
           "MelsmConvergenceWarning", "MelsmBoundaryWarning", "MelsmDataWarning", "MelsmStudyWarning",
           "MelsmFitWarning", "lrtest", "release_compiled", "simulate", "Study", "StudyResults", "load_study",
           "builtin_study", "run_study", "read_study", "Priors", "plots"]


def __getattr__(name: str):
    """``melsm.NAME`` for a name of ``_LAZY``: imported now, then kept as a module attribute."""
    if name not in _LAZY:
        raise AttributeError(f"module 'melsm' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = _importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _fit_plots() -> type:
    """``fit.plot``: the figures of one fit (``melsm.reporting.plots.FitPlots``), registered
    by the top layer and imported on first use: matplotlib stays out of ``import melsm``."""
    from melsm.reporting.plots import FitPlots

    return FitPlots


# fit.plot is added to Results when melsm.results.base is imported (by whichever module
# needs it first): importing base here would load pandas and SciPy with ``import melsm``.
PENDING_ACCESSORS["plot"] = _fit_plots


def lrtest(restricted: MLResults, full: MLResults) -> LRTest:
    """Likelihood-ratio test of two nested maximum-likelihood fits (``MLResults.lrtest``)."""
    return restricted.lrtest(full)
