"""melsm: mixed-effects location scale models.

>>> import melsm
>>> data = melsm.datasets.load("reisby")
>>> fit = melsm.Model(mean="hamdep ~ week + endog + endweek + (1 | id)",
...                   within="~ week + endog + (1 | id)", between="~ endog",
...                   data=data, association="none").fit()
>>> print(fit.summary())
"""

from . import (
    _jax,  # noqa: F401  (float64 and the compilation cache, before any JAX use)
    datasets,
)
from ._compiled import release as release_compiled
from .compare import Comparison, compare
from .errors import MelsmBoundaryWarning, MelsmConvergenceWarning, MelsmInputError, MelsmStudyWarning
from .model import MelsmDataWarning, Model
from .report import report
from .results import LRTest, MLResults
from .simulate import simulate
from .study import Study, StudyResults
from .study import builtin as builtin_study
from .study import load as load_study
from .study_run import read_results as read_study
from .study_run import run_study

__version__ = "0.1.0"

__all__ = ["Model", "MLResults", "LRTest", "datasets", "compare", "Comparison", "report", "MelsmInputError",
           "MelsmConvergenceWarning", "MelsmBoundaryWarning", "MelsmDataWarning", "MelsmStudyWarning", "lrtest",
           "release_compiled", "simulate", "Study", "StudyResults", "load_study", "builtin_study", "run_study",
           "read_study"]


def lrtest(restricted: MLResults, full: MLResults) -> LRTest:
    """Likelihood-ratio test of two nested maximum-likelihood fits."""
    return restricted.lrtest(full)
