"""The names users bring from statsmodels, broom.mixed and lme4, for every fit
(docs/architecture.md, 'Results').

A mixin of ``melsm.results.base.Results``: each member reads the results contract
(``table``, ``ids``, ``random_effects``, ``covariance_matrix``) plus two hooks of the
method, ``_intervals(level)`` and ``_cov_params()``, so ML and MCMC fits answer alike:

========================  ==========================================  =========================
member                    ML                                          MCMC
========================  ==========================================  =========================
``bse``                   standard errors (delta method)              posterior SDs
``tvalues``, ``pvalues``  Wald z and two-sided p (NaN for SDs)        NaN (no frequentist test)
``conf_int(alpha)``       Wald; SDs on the log, correlations on the   equal-tailed credible
                          Fisher-z scale                              intervals
``method="profile"``      profile likelihood (``results.profile``)    refused (ValueError)
``cov_params()``          inverse-Hessian covariance, delta method    posterior covariance
``llf``, ``nobs``         log L, rows used                            NaN, rows used
========================  ==========================================  =========================
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

#: ``tidy``'s part of each parameter kind, and broom.mixed's ``effect`` column.
TIDY_EFFECT = {"mean": "fixed", "within": "fixed", "between": "ran_pars", "sd": "ran_pars",
               "corr": "ran_pars", "assoc": "ran_pars"}


class Summary(str):
    """``fit.summary()``: the text summary (a ``str``, printed as before) with
    ``_repr_html_`` for notebooks and ``tables`` (the parameter table, random-effect
    covariance and criteria as DataFrames)."""

    tables: list[pd.DataFrame]

    def __new__(cls, text: str, tables: list[pd.DataFrame]):
        out = super().__new__(cls, text)
        out.tables = tables
        return out

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape(str(self)) + "</pre>"

    def __reduce__(self):  # str's own pickling would call __new__ without the tables
        return (Summary, (str(self), self.tables))


class Conventions:
    """statsmodels' result vocabulary and lme4's accessors (module docstring)."""

    # ---- statsmodels ----------------------------------------------------------------
    def _series(self, values, name: str) -> pd.Series:
        return pd.Series(np.asarray(values, dtype=float), index=pd.Index(self.names, name="parameter"), name=name)

    @property
    def bse(self) -> pd.Series:
        """Standard errors (ML) or posterior SDs (MCMC), by parameter name."""
        return self._series(self.table()["std_error"], "std_error")

    @property
    def tvalues(self) -> pd.Series:
        """Wald z statistics (ML; NaN for SDs, and for MCMC)."""
        table = self._params_table
        return self._series(table["z"] if "z" in table else np.full(len(self.names), np.nan), "z")

    @property
    def pvalues(self) -> pd.Series:
        """Two-sided Wald p-values (ML; NaN for SDs, and for MCMC)."""
        table = self._params_table
        return self._series(table["p"] if "p" in table else np.full(len(self.names), np.nan), "p")

    def conf_int(self, alpha: float = 0.05, method: str = "wald", **options) -> pd.DataFrame:
        """Intervals at level 1 − ``alpha``: columns ``lower``, ``upper``.

        ``method``: ``"wald"`` (ML; credible intervals for MCMC; module docstring),
        ``"profile"`` (ML: profile likelihood, ``melsm.results.profile``) or
        ``"bootstrap"`` (ML: parametric bootstrap, ``melsm.results.bootstrap_ci``; ``kind=``);
        ``options`` go to the method chosen."""
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, not {alpha!r}")
        methods = {"wald": self._intervals, "profile": self._profile_intervals,
                   "bootstrap": self._bootstrap_intervals}
        if method not in methods:
            raise ValueError(f"method must be one of {', '.join(map(repr, methods))}, not {method!r}")
        if method == "wald" and options:
            raise TypeError(f"conf_int(method='wald') takes no options, not {', '.join(options)}")
        low, high = methods[method](1 - alpha, **options)
        return pd.DataFrame({"lower": low, "upper": high}, index=pd.Index(self.names, name="parameter"))

    def _profile_intervals(self, level: float, **options) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError("profile-likelihood intervals need a maximum-likelihood fit")

    def _bootstrap_intervals(self, level: float, **options) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError("bootstrap intervals need a maximum-likelihood fit")

    def cov_params(self) -> pd.DataFrame:
        """Covariance matrix of the reported parameters, labelled by name."""
        return pd.DataFrame(self._cov_params(), index=self.names, columns=self.names)

    @property
    def llf(self) -> float:
        """Log-likelihood (NaN for a fit without one)."""
        return float(self.loglik) if self.has_likelihood else float("nan")

    @property
    def nobs(self) -> int:
        return self.n_obs

    def summary(self) -> Summary:
        """The text summary (as before, a ``str``) that also displays as HTML in a notebook
        and carries ``tables``: [parameters (``table()``), random-effect Σ, criteria]."""
        criteria = pd.Series(self.information_criteria(), name="value", dtype=float).to_frame()
        tables = [self.table(), self.covariance_matrix() if self.model.layout.q else pd.DataFrame(), criteria]
        return Summary(self._summary_text(), tables)

    # ---- broom.mixed ----------------------------------------------------------------
    def tidy(self, level: float = 0.95) -> pd.DataFrame:
        """One row per parameter, as broom.mixed's ``tidy``: ``effect`` ("fixed" or
        "ran_pars"), ``part`` ("mean", "within", "between", "sd", "corr", "assoc"),
        ``group`` (the random effect or pair a parameter belongs to), ``term``,
        ``estimate``, ``std_error``, ``statistic`` and ``p_value`` (ML), ``lower``,
        ``upper`` at ``level``."""
        low, high = self._intervals(level)
        rows = []
        for pid, est, se, z, p, lo, hi in zip(self.ids, self.table()["estimate"], self.bse, self.tvalues,
                                                self.pvalues, low, high, strict=True):
            effect = pid.effect
            term = pid.key.covariate if pid.kind == "between" else (str(pid.key) if effect is None else "")
            rows.append({"effect": TIDY_EFFECT.get(pid.kind, "ran_pars"), "part": pid.kind,
                         "group": "" if effect is None else str(effect), "term": term, "estimate": est,
                         "std_error": se, "statistic": z, "p_value": p, "lower": lo, "upper": hi})
        return pd.DataFrame(rows, index=pd.Index(self.names, name="parameter"))

    # ---- lme4 -----------------------------------------------------------------------
    def fixef(self, part: str = "mean") -> pd.Series:
        """The coefficients of the mean (``part="mean"``) or log level-1 variance
        (``"within"``) function, by term."""
        if part not in ("mean", "within"):
            raise ValueError(f"part must be 'mean' or 'within', not {part!r}")
        estimates = self.table()["estimate"]
        keys = [(str(pid), pid.key) for pid in self.ids if pid.kind == part]
        return pd.Series([estimates[name] for name, _ in keys], index=[k for _, k in keys], name=part, dtype=float)

    def ranef(self) -> pd.DataFrame:
        """Each group's predicted random effects (ML: empirical Bayes; MCMC: posterior
        means), one column per effect: ``random_effects()`` without the SD columns."""
        effects = self.random_effects()
        return effects[[c for c in effects.columns if not c.endswith(" sd")]]

    def varcorr(self) -> pd.DataFrame:
        """lme4's ``VarCorr``: per random effect its variance and SD, then its correlation
        with each effect before it (for a group at the default covariate values, as ``covariance_matrix``)."""
        sigma = self.covariance_matrix()
        sd = np.sqrt(np.diag(sigma.to_numpy()))
        frame = pd.DataFrame({"variance": np.diag(sigma.to_numpy()), "sd": sd}, index=sigma.index)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = sigma.to_numpy() / np.outer(sd, sd)
        for k, name in enumerate(sigma.index[:-1]):
            frame[f"corr {name}"] = [corr[r, k] if r > k else np.nan for r in range(len(sd))]
        return frame
