"""The results contract shared by maximum-likelihood and MCMC fits.

``Results`` is the one base of ``MLResults`` and ``MCMCResults`` (the pattern of
statsmodels' ``LikelihoodModelResults``: one base, quantities computed on first use).
Code that takes a fit (comparison tables, findings, figures, the report, the app) asks
it through this contract and never for its type:

- ``table(scale)``: one row per reported parameter with the columns ``estimate``,
  ``std_error`` (SE for ML, posterior SD for MCMC), ``lower``, ``upper`` (95% confidence
  or credible interval), then the method's own columns (ML: ``z``, ``p``; MCMC:
  ``r_hat``, ``ess_bulk``, ``ess_tail``, ``mcse_mean``);
- ``derived(fn)``: a function of the reported parameters in the same columns, by the
  delta method (ML) or per draw (MCMC);
- ``evaluation_thetas``, ``group_predictor``, ``summarise_groups``: what the group and
  population quantities (``melsm.results.groups``) are computed from, by one code path;
- capability flags and criteria: ``has_likelihood`` (log-likelihood and LR tests),
  ``criteria_names``, ``fit_statistics()``, ``information_criteria()``, ``criterion()``;
- ``method`` ("ML" or "MCMC") and ``wording``: for display only.

``register_accessor(name)`` adds ``fit.<name>`` to every fit (as pandas'
``register_dataframe_accessor``): the reporting layer registers ``fit.plot`` without the
results layer importing it. See docs/architecture.md, 'Results'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.special

from melsm.model.evaluation import evaluation_rows
from melsm.model.params import level2_row
from melsm.results import PENDING_ACCESSORS, groups
from melsm.results.conventions import Conventions
from melsm.results.predict import predict as predict_rows
from melsm.results.predict import simulate as simulate_rows

Z95 = float(scipy.special.ndtri(0.975))
#: The columns every parameter table and every ``derived`` table starts with.
COMMON_COLUMNS = ("estimate", "std_error", "lower", "upper")
SCALES = ("sd", "variance")


@dataclass(frozen=True)
class Wording:
    """How a method's numbers are described in tables, figures and sentences."""

    title: str  #: "Maximum likelihood"
    error: str  #: the short name of the second column of a comparison table: "SE"
    estimate_and_error: str  #: "estimate and standard error"
    interval: str  #: "95% CI"
    group_intervals: str  #: what a group's intervals are (plural)
    group_points: str  #: what a group's point value is
    differs: str  #: when a group differs from the population average
    criteria_note: str = ""  #: a note on the fit criteria, for table footnotes
    group_interval: str = "95% interval"  #: one group's interval (singular), for legends
    population_interval: str = "95% interval"  #: the interval of a population quantity


def outputs(value: Any) -> tuple[list, list]:
    """(names, values) of what a ``derived`` function returned: a dict's keys and values,
    else positions 0, 1, ... of a list or tuple, or of the one value."""
    if isinstance(value, Mapping):
        return list(value), list(value.values())
    values = list(value) if isinstance(value, list | tuple) else [value]
    return list(range(len(values))), values


class _Accessor:
    """``fit.<name>``: the registered class built around the fit on each access (not cached,
    so nothing of it is pickled with the fit). The class is given, or loaded on first use
    by ``load`` (``register_accessor(name, load=...)``)."""

    def __init__(self, name: str, accessor: type | None = None, load: Callable[[], type] | None = None):
        self._name, self._accessor, self._load = name, accessor, load

    def __get__(self, fit, owner=None):
        if self._accessor is None:
            self._accessor = self._load()
        return self._accessor if fit is None else self._accessor(fit)


def register_accessor(name: str, load: Callable[[], type] | None = None) -> Callable[[type], type] | None:
    """Class decorator: ``fit.<name>`` is ``cls(fit)`` for every ML and MCMC fit. With
    ``load`` (a function returning the class), the class is imported on first use instead
    and nothing is returned: the top layer registers ``fit.plot`` this way, so that
    ``import melsm`` does not import matplotlib.

    >>> @register_accessor("plot")
    ... class FitPlots:
    ...     def __init__(self, fit): self._fit = fit
    """

    def decorator(accessor: type | None) -> type | None:
        existing = Results.__dict__.get(name)
        if existing is not None and not isinstance(existing, _Accessor):
            raise AttributeError(f"cannot register '{name}': it is already an attribute of Results")
        setattr(Results, name, _Accessor(name, accessor, load))
        return accessor

    if load is not None:
        decorator(None)
        return None
    return decorator


class Results(Conventions):
    """What every fit offers (see the module docstring). Subclasses set the class
    attributes and implement the methods that raise ``NotImplementedError``."""

    #: "ML" or "MCMC": for labels only; ask the capability flags below instead.
    method: str = ""
    wording: Wording
    #: Whether the fit has a log-likelihood (``loglik``) and LR tests (``lrtest``).
    has_likelihood: bool = False
    #: Criteria (smaller is better) that ``information_criteria`` returns and fits can be
    #: ranked by; the first is the default.
    criteria_names: tuple[str, ...] = ()
    #: How the method's own columns are named in ``table`` (the others keep their names).
    _common_columns: Mapping[str, str] = {}

    model: Any
    #: The reported parameters (``melsm.model.names.ParamName``), and their printed names.
    ids: list
    names: list[str]
    #: The method's wide table (estimates, SEs or posterior summaries); ``table()`` shows it.
    _params_table: pd.DataFrame
    converged: bool
    problems: list[str]
    #: Reported parameters on the boundary of the parameter space (``ParamName`` → value),
    #: as ML's boundary check finds them; an MCMC fit has none.
    boundary_params: Mapping = MappingProxyType({})

    @property
    def convergence_problem(self) -> str:
        """Why the fit did not converge, in words ("" when it did): the optimiser's message
        (ML) or the sampler's problems (MCMC)."""
        if self.converged:
            return ""
        return str(getattr(self, "message", "") or "; ".join(self.problems) or "not converged")

    def _repr_html_(self) -> str:
        """A compact HTML summary for notebooks: the fit's facts and its parameter table
        (``melsm.results.display``); ``summary()`` is the full text."""
        from melsm.results.display import fit_html

        return fit_html(self)

    # ---- sizes ------------------------------------------------------------------------
    @property
    def n_obs(self) -> int:
        return self.model.design.n_obs

    @property
    def n_groups(self) -> int:
        return self.model.design.n_groups

    @property
    def n_params(self) -> int:
        return self.model.layout.n_params

    # ---- the parameter table ------------------------------------------------------------
    @property
    def params(self) -> pd.Series:
        """The estimates (ML) or posterior means (MCMC) by parameter name, as statsmodels'
        ``params``; ``table()`` has them with SEs, intervals and the method's columns."""
        return pd.Series(self.table()["estimate"].to_numpy(dtype=float),
                         index=pd.Index(self.names, name="parameter"), name="estimate")

    def table(self, scale: str = "sd") -> pd.DataFrame:
        """Reported parameters in the common columns (``COMMON_COLUMNS``) followed by the
        method's own. ``scale="variance"`` shows random-effect SDs as variances σ²: ML
        σ̂², SE 2σ̂·SE(σ̂) (delta method), interval ends squared; MCMC the mean, SD and
        quantiles of the σ² draws."""
        if scale not in SCALES:
            raise ValueError(f"scale must be 'sd' or 'variance', not {scale!r}")
        table = self._params_table.rename(columns=self._common_columns)
        table = table[list(COMMON_COLUMNS) + [c for c in table.columns if c not in COMMON_COLUMNS]]
        if scale == "variance":
            for pid in self.ids:
                if pid.kind == "sd":
                    self._as_variance(table, str(pid))
        return table

    def _as_variance(self, table: pd.DataFrame, name: str) -> None:
        """Turn the row of SD ``name`` of ``table`` into the variance's, in place."""
        raise NotImplementedError

    def derived(self, fn: Callable[..., Any], positive: bool | Sequence[bool] = False,
                theta: bool = False) -> pd.DataFrame:
        """``fn`` of the reported parameters (a dict name → value) in the columns
        ``COMMON_COLUMNS``. ``fn`` returns a number, a list of numbers or a dict name →
        number (the rows' names). ML: delta method; MCMC: per draw (see the subclasses).
        ``positive`` (one flag, or one per output): the quantity is positive, and ML forms
        its interval on the log scale, exp(log q̂ ± 1.96·SE/q̂). ``theta=True`` calls
        ``fn(params, θ)`` with θ in the data's units as well (the layout's vector, for
        quantities such as ``melsm.results.groups.population_formulas``)."""
        raise NotImplementedError

    # ---- predictions and simulation (melsm.results.predict) ------------------------------
    def predict(self, data: pd.DataFrame, random: bool = True, interval: str | None = None, level: float = 0.95,
                allow_new_levels: bool | None = None, draws: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Mean μ = x'β + z'u_j and level-1 variance σ² = exp(w'α + s'v_j) for the rows of
        ``data``, with ``interval`` "confidence" (μ, σ²) or "prediction" (also a new
        observation y) at ``level``: columns ``mean``, ``variance``, ``mean_ci_lower`` …,
        ``obs_ci_lower``, ``obs_ci_upper``. ``random``: use the fitted groups' effects
        (else a typical group, effects 0); ``allow_new_levels``: groups not in the fit are
        new groups — None warns, True is silent, False refuses. ``draws``/``seed``: the
        simulation behind prediction intervals (and MCMC's draws used). Rules and formulas:
        ``melsm.results.predict``."""
        return predict_rows(self, data, random, interval, level, allow_new_levels, draws, seed)

    def simulate(self, nsim: int = 1, seed: int = 0) -> pd.DataFrame:
        """``nsim`` response vectors for the fitted rows, drawn from the fitted model with new
        random effects (``melsm.results.predict.simulate``); columns ``sim_1`` …"""
        return simulate_rows(self, nsim, seed)

    # ---- what group quantities are computed from ------------------------------------------
    def parameter_values(self) -> dict[str, np.ndarray]:
        """Reported parameters at the fit's evaluation points: ML the estimates (0-d
        arrays), MCMC the draws, chains pooled (S,)."""
        raise NotImplementedError

    def evaluation_thetas(self) -> np.ndarray:
        """θ (in the data's units) at the fit's evaluation points, (K, dim): ML θ̂ (K = 1),
        MCMC the draws, chains pooled as in ``parameter_values``."""
        raise NotImplementedError

    def group_predictor(self, part: str, coef_rows: np.ndarray, z_rows: np.ndarray) -> np.ndarray:
        """Each group's linear predictor of function ``part`` ("mean": x'β + z'u_j, or
        "within": w'α + z'v_j) at its row of ``coef_rows`` (J, p) and ``z_rows`` (J, q):
        (K, J). ML: K = 3, the ends and middle of the empirical-Bayes 95% interval
        (prediction ∓ 1.96 posterior SDs of z'b_j); MCMC: the S draws."""
        raise NotImplementedError

    def summarise_groups(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point value, lower and upper 95% bound over axis 0 of ``values`` (K, J), a
        function of ``group_predictor``'s values evaluated at the same points. ML: the
        middle row and the smaller and larger end (valid for a function monotone in one
        coefficient, as conditional EB intervals are); MCMC: mean and 2.5/97.5% quantiles."""
        raise NotImplementedError

    # ---- fit criteria -------------------------------------------------------------------
    def fit_statistics(self) -> dict[str, float]:
        """Cheap statistics of the fit for the bottom of a comparison table (label → value):
        ML log-likelihood, parameters, AIC, BIC; MCMC DIC and p_D."""
        raise NotImplementedError

    def information_criteria(self) -> dict[str, float]:
        """Every criterion of ``criteria_names`` with the parts it is made of (ML: ``loglik``,
        ``n_params``, ``AIC``, ``BIC``; MCMC: DIC, marginal DIC, WAIC and LOO, which need
        the marginal likelihood at up to ``MARGINAL_DRAWS`` draws: seconds)."""
        raise NotImplementedError

    def criterion(self) -> tuple[str, float]:
        """The default criterion (``criteria_names[0]``: AIC or DIC) and its value."""
        name = self.criteria_names[0]
        return name, float(self.fit_statistics()[name])

    # ---- groups and population (one code path: melsm.results.groups) ------------------------
    def random_effects(self) -> pd.DataFrame:
        """Each group's random effects ``<part>:<term>`` and their SDs ``<part>:<term> sd``."""
        raise NotImplementedError

    def _level2_row(self, group_covariates: dict | None, at: dict | None) -> np.ndarray:
        """The row of G for level-2 terms by name, or else for covariate values ``at``."""
        if group_covariates is not None:
            return level2_row(self.model.layout.g_coefs, group_covariates)
        return evaluation_rows(self.model.design, at, per_group=False)["G"][0]

    def typical_groups(self, max_patterns: int = 6) -> pd.DataFrame:
        """SDs and correlations of the random effects implied by the level-2 functions for
        typical groups (``melsm.results.groups.level2_patterns``)."""
        raise NotImplementedError

    # Computed once per fit at the default covariate values (the report and the figures ask
    # several times; ML's delta method compiles each time); the public methods hand out copies.
    @cached_property
    def _group_quantities(self) -> pd.DataFrame:
        return groups.group_quantities(self)

    @cached_property
    def _population_quantities(self) -> pd.DataFrame:
        return groups.population_quantities(self)

    def group_quantities(self, at: Mapping | None = None) -> pd.DataFrame:
        """Each group's mean, level-1 variance and ICC with 95% intervals (``<quantity>
        low/high``) and ``<quantity> differs`` (the interval of its difference from the
        average for groups like it excludes 0), at each group's own level-2 covariates and
        the other covariates at ``at`` (a dict column → value) or their defaults: reference
        level, 0 where 0 is observed, else the mean (``melsm.model.evaluation``). See
        ``melsm.results.groups``."""
        return (self._group_quantities if at is None else groups.group_quantities(self, at)).copy()

    def population_quantities(self, at: Mapping | None = None) -> pd.DataFrame:
        """σ²_u, mean E and variance V of the group variances, average ICC and mean with SEs
        (ML delta method; MCMC posterior SD) and 95% intervals, at the covariate values
        ``at`` or their defaults (as ``group_quantities``). See ``melsm.results.groups``."""
        return (self._population_quantities if at is None else groups.population_quantities(self, at)).copy()

    def group_lines(self, covariate: str, function: str = "mean") -> pd.DataFrame:
        """Each group's predicted line against ``covariate`` (``melsm.results.groups.group_lines``)."""
        return groups.group_lines(self, covariate, function)

    # ---- output -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fit as JSON-ready values (``method`` in lower case, ``params``, ...)."""
        raise NotImplementedError

    def _summary_text(self) -> str:
        """A plain-text summary in runmixregls' blocks (``melsm.results.summary``);
        ``summary()`` (``melsm.results.conventions``) wraps it."""
        raise NotImplementedError

    def _intervals(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of every reported parameter at ``level`` (ML: Wald; MCMC: quantiles)."""
        raise NotImplementedError

    def _cov_params(self) -> np.ndarray:
        """Covariance matrix of the reported parameters (ML: delta method; MCMC: of the draws)."""
        raise NotImplementedError


for _name, _load in PENDING_ACCESSORS.items():
    register_accessor(_name, load=_load)
