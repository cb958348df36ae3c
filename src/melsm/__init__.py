"""melsm: mixed-effects location scale models.

>>> import melsm
>>> data = melsm.datasets.load("reisby")
>>> fit = melsm.Model(mean="hamdep ~ week + endog + endweek + (1 | id)",
...                   within="~ week + endog + (1 | id)", between="~ endog",
...                   data=data, association="none").fit()
>>> print(fit.summary())
"""

import logging as _logging

from melsm import datasets
from melsm.engine import jax_config  # noqa: F401  (float64 and the compilation cache, before any JAX use)
from melsm.engine.compiled import release as release_compiled
from melsm.errors import (
    MelsmBoundaryWarning,
    MelsmConvergenceWarning,
    MelsmDataWarning,
    MelsmFitWarning,
    MelsmInputError,
    MelsmStudyWarning,
)
from melsm.estimate.priors import Priors
from melsm.pipeline import Model
from melsm.reporting.compare import Comparison, compare
from melsm.reporting.report import report
from melsm.results.base import Results, register_accessor
from melsm.results.ml import LRTest, MLResults
from melsm.studies.run import read_results as read_study
from melsm.studies.run import run_study
from melsm.studies.simulate import simulate
from melsm.studies.study import Study
from melsm.studies.study import builtin as builtin_study
from melsm.studies.study import load as load_study
from melsm.studies.summary import StudyResults

__version__ = "0.1.0"
# melsm's log messages (compilation, fits, studies) reach the handlers the application
# configures; without any, nothing is printed (not even Python's last-resort warnings).
_logging.getLogger("melsm").addHandler(_logging.NullHandler())

__all__ = ["Model", "Results", "MLResults", "LRTest", "datasets", "compare", "Comparison", "report", "MelsmInputError",
           "MelsmConvergenceWarning", "MelsmBoundaryWarning", "MelsmDataWarning", "MelsmStudyWarning",
           "MelsmFitWarning", "lrtest", "release_compiled", "simulate", "Study", "StudyResults", "load_study",
           "builtin_study", "run_study", "read_study", "Priors", "plots"]


def _fit_plots() -> type:
    """``fit.plot``: the figures of one fit (``melsm.reporting.plots.FitPlots``), registered
    here by the top layer and imported on first use: matplotlib stays out of ``import melsm``."""
    from melsm.reporting.plots import FitPlots

    return FitPlots


register_accessor("plot", load=_fit_plots)


def __getattr__(name: str):
    # melsm.plots (the figure functions) is loaded on first use, for the same reason
    if name == "plots":
        from melsm.reporting import plots

        return plots
    raise AttributeError(f"module 'melsm' has no attribute {name!r}")


def lrtest(restricted: MLResults, full: MLResults) -> LRTest:
    """Likelihood-ratio test of two nested maximum-likelihood fits."""
    return restricted.lrtest(full)
