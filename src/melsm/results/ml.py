"""Results of a maximum-likelihood fit: tables, tests, predictions (the contract of
``melsm.results.base``; see docs/architecture.md, 'Results').

Standard errors come from the exact Hessian of the log-likelihood in the unconstrained
parameters θ, mapped to the reported scale by the delta method: Cov(r̂) = J Cov(θ̂) Jᵀ
with J = ∂r/∂θ from JAX. Confidence intervals: β, α, κ: estimate ± 1.96·SE; SDs:
exp(log σ̂ ± 1.96·SE/σ̂) (never negative); correlations: tanh(atanh ρ̂ ± 1.96·SE/(1−ρ̂²)).
Wald z and p are not shown for SDs (a test of σ = 0 sits on the boundary: use ``lrtest``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.special

from melsm.engine.blocks import by_group, with_nodes
from melsm.engine.compiled import compiled
from melsm.engine.likelihood import random_effect_posterior
from melsm.estimate.ml import Optimum, covariance
from melsm.results import bootstrap as _bootstrap
from melsm.results import bootstrap_ci as _bootstrap_ci
from melsm.results import jackknife as _jackknife
from melsm.results import profile as _profile
from melsm.results.base import COMMON_COLUMNS, Z95, Results, Wording, outputs
from melsm.results.groups import implied_sd_corr, level2_patterns
from melsm.results.lrtest import LRTest, lrtest

__all__ = ["MLResults", "LRTest", "Z95", "ML_WORDING"]

ML_WORDING = Wording(title="Maximum likelihood", error="SE", estimate_and_error="estimate and standard error",
                     interval="95% CI", group_intervals="95% empirical-Bayes (posterior) intervals",
                     group_points="empirical-Bayes predictions", differs="interval excludes the average",
                     group_interval="95% empirical-Bayes (posterior) interval",
                     population_interval="95% CI (delta method)")


@compiled(static_argnames=("layout",))
def _report_and_jacobian(theta, layout):
    return layout.report(theta), jax.jacobian(layout.report)(theta)


def wald_intervals(est, se, kinds, z: float) -> tuple[np.ndarray, np.ndarray]:
    """est ∓ z·SE; for an SD on the log scale, σ̂·exp(∓z·SE/σ̂), and for a correlation
    on Fisher's z scale, so intervals stay within their parameter space."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    low, high = est - z * se, est + z * se
    for k, kind in enumerate(kinds):
        if not np.isfinite(se[k]):
            continue
        if kind == "sd" and est[k] > 0:
            half = z * se[k] / est[k]
            with np.errstate(over="ignore"):
                low[k], high[k] = est[k] * np.exp(-half), est[k] * np.exp(half)
        elif kind == "corr" and abs(est[k]) < 1:
            half = z * se[k] / (1 - est[k] ** 2)
            low[k], high[k] = np.tanh(np.arctanh(est[k]) - half), np.tanh(np.arctanh(est[k]) + half)
    return low, high


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    """A factor F with F Fᵀ = cov for (batches of) positive semi-definite matrices (an
    effect with variance 0 has a zero row; Cholesky would fail there)."""
    values, vectors = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    return vectors * np.sqrt(np.clip(values, 0, None))[..., None, :]


@compiled(static_argnames=("layout", "n_quad"))
def _posterior(theta, data, nodes, layout, n_quad):
    return random_effect_posterior(theta, data, nodes, layout, n_quad)


class MLResults(Results):
    """A fitted location-scale model (maximum likelihood). Build with ``Model.fit()``.

    ``converged``: the gradient is small (every |∂ log L/∂θ| < 1e-3) and −∇² log L is
    positive definite over the identified parameters; ``message`` says why not otherwise.
    ``boundary``: reported parameters estimated on the edge of the parameter space (an SD
    at 0, a correlation at ±1, ``singular:<part>:<term>`` for an effect that is a linear
    combination of the others), with their values in ``boundary_values``. They are held
    there, have NaN SEs, as do the correlations of the effects involved (a correlation
    with a zero-variance effect is undefined: NaN estimate); the other SEs are conditional
    on the boundary.
    """

    method = "ML"
    wording = ML_WORDING
    has_likelihood = True
    criteria_names = ("AIC", "BIC")
    _common_columns = {"se": "std_error", "ci_low": "lower", "ci_high": "upper"}

    def __init__(self, model, opt: Optimum, info: dict):
        self.model = model
        layout = model.layout
        self._opt = opt
        self.theta = opt.theta
        self.cov_theta = covariance(opt, layout)
        #: Each group's mode η̂_j of the quadrature ((n_groups, n_agq); empty without random
        #: scale effects): the MCMC sampler starts its η there.
        self.n_quad = info["n_quad"] if layout.n_agq else 0
        self.modes = (by_group(self._data, [nodes.mode for _, nodes in with_nodes(self._data, opt.nodes)])
                      [:model.design.n_groups] if opt.nodes is not None
                      else np.zeros((model.design.n_groups, 0)))
        self.loglik = opt.loglik
        self.converged = opt.converged
        self.message = opt.message
        self.iterations = opt.iterations
        self.seconds = info["seconds"]
        self.stages = info["stages"]
        self.ids = layout.reported_ids()
        self.names = [str(i) for i in self.ids]
        self.kinds = [i.category for i in self.ids]
        estimates, jac = _report_and_jacobian(np.asarray(self.theta), layout)  # compiled() puts it on the device
        self.estimates = np.asarray(estimates).copy()
        jac = np.asarray(jac).reshape(len(self.names), -1)
        # Entries of θ held on the boundary are not identified (NaN in cov_theta): SEs
        # are conditional on the boundary, as in lme4 and Stata.
        free = np.isfinite(np.diag(self.cov_theta))
        self.cov = jac[:, free] @ self.cov_theta[np.ix_(free, free)] @ jac[:, free].T
        variances = np.diag(self.cov)
        computable = np.isfinite(variances) & (variances > 0)
        self.std_errors = np.where(computable, np.sqrt(np.where(computable, variances, 1.0)), np.nan)
        #: What could not be computed, and why (an SE is NaN, never 0, when it cannot be).
        self.problems: list[str] = []
        #: Reported parameters on the boundary of the parameter space, with their values
        #: there: ``sd:<part>:<term>`` = 0 (zero variance), ``corr:...`` = ±1 (singular
        #: Σ), ``singular:<part>:<term>`` (Σ singular without a correlation at ±1).
        at_boundary = dict(layout.boundary_params(self.theta, opt.pivots, opt.zero_rows, model.design.G))
        #: The same, by structured identifier (``melsm.model.names.ParamName``).
        self.boundary_params = at_boundary
        self.boundary_values = {str(k): v for k, v in at_boundary.items()}
        self.boundary = list(self.boundary_values)
        rows = {effect: idx for effect, idx in layout.random_effects()}
        for k, (pid, name) in enumerate(zip(self.ids, self.names, strict=True)):
            rows_of = {rows[pid.key.first], rows[pid.key.second]} if pid.kind == "corr" else set()
            if pid in at_boundary:
                self.estimates[k] = at_boundary[pid]
                self.std_errors[k] = np.nan
            elif rows_of & set(opt.zero_rows):
                # the correlation of an effect with variance zero is undefined
                self.estimates[k] = np.nan
                self.std_errors[k] = np.nan
            elif rows_of & set(opt.pivots):
                self.std_errors[k] = np.nan
            elif not computable[k]:
                self.problems.append(f"no SE for {name}: its variance from the inverse Hessian is "
                                     f"{variances[k]:.3g} (the log-likelihood is flat or not concave there)")
        self._params_table = self._table()

    # ---- fit criteria ------------------------------------------------------------------
    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + np.log(self.model.design.n_weighted) * self.n_params

    def fit_statistics(self) -> dict[str, float]:
        return {"Log-likelihood": self.loglik, "Parameters": self.n_params, "AIC": self.aic, "BIC": self.bic}

    def information_criteria(self) -> dict[str, float]:
        return {"loglik": self.loglik, "n_params": self.n_params, "AIC": self.aic, "BIC": self.bic}

    # ---- the parameter table -----------------------------------------------------------
    def _table(self) -> pd.DataFrame:
        est, se = self.estimates, self.std_errors
        z = np.where(np.array(self.kinds) == "sd", np.nan, est / se)
        p = 2 * scipy.special.ndtr(-np.abs(z))
        low, high = wald_intervals(est, se, self.kinds, Z95)
        return pd.DataFrame({"estimate": est, "se": se, "z": z, "p": p,
                             "ci_low": low, "ci_high": high},
                            index=pd.Index(self.names, name="parameter"))

    def _intervals(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Wald intervals at ``level`` as in ``params`` (``wald_intervals``)."""
        return wald_intervals(self.estimates, self.std_errors, self.kinds, float(scipy.special.ndtri((1 + level) / 2)))

    def _cov_params(self) -> np.ndarray:
        return self.cov

    # parametric bootstrap: fit.bootstrap(n_boot, seed, scheduler, ...) and conf_int(method="bootstrap", kind=)
    bootstrap = _bootstrap.bootstrap
    _bootstrap_intervals = _bootstrap_ci.bootstrap_intervals
    jackknife = _jackknife.jackknife  # leave-one-group-out refits: BCa's acceleration
    # profile likelihood: conf_int(method="profile", parm=, progress=) (results/profile.py)
    _profile_intervals = _profile.profile_intervals

    # ---- derived quantities ----------------------------------------------------------
    def delta_method(self, function, with_theta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Estimate and SE of ``function(params)`` where params maps reported names to
        JAX scalars; e.g. MIXREGLS' τ_l = ρ σ_v:
        ``fit.delta_method(lambda p: p["corr:mean:Intercept,within:Intercept"] * p["sd:within:Intercept"])``.
        Parameters held on the boundary (``boundary``) count as known: the SE is
        conditional on them.
        """
        layout = self.model.layout

        def g(theta):
            r = layout.report(theta)
            p = dict(zip(self.names, r, strict=True))
            out = function(p, theta) if with_theta else function(p)
            return jnp.atleast_1d(jnp.stack(out) if isinstance(out, list | tuple) else out)

        value, jac = jax.jit(lambda t: (g(t), jax.jacobian(g)(t)))(jnp.asarray(self.theta))
        value, jac = np.asarray(value), np.asarray(jac)
        free = np.isfinite(np.diag(self.cov_theta))  # entries held on the boundary are fixed
        cov = jac[:, free] @ self.cov_theta[np.ix_(free, free)] @ jac[:, free].T
        return value, np.sqrt(np.clip(np.diag(cov), 0, None))

    def derived(self, fn: Callable[..., Any], positive: bool | Sequence[bool] = False,
                theta: bool = False) -> pd.DataFrame:
        """``fn`` of the reported parameters (JAX scalars by name: write it with operators
        and ``jax.numpy``) by the delta method: ĝ = g(r̂), SE² = ∇g Cov(θ̂) ∇gᵀ with
        ∇g = ∂g(r(θ))/∂θ at θ̂ (``delta_method``); 95% interval ĝ ± 1.96·SE, or
        exp(log ĝ ± 1.96·SE/ĝ) for ``positive`` outputs with ĝ > 0. Columns
        ``COMMON_COLUMNS``; rows named by ``fn``'s dict keys, else numbered."""
        labels: list = []

        def function(p, *t):
            names, values = outputs(fn(p, *t))
            labels[:] = names  # known once traced
            return values

        value, se = self.delta_method(function, with_theta=theta)
        flags = np.broadcast_to(np.asarray(positive, dtype=bool), value.shape) & (value > 0)
        low, high = value - Z95 * se, value + Z95 * se
        half = np.where(flags, Z95 * se / np.where(value > 0, value, 1), 0)
        low, high = np.where(flags, value * np.exp(-half), low), np.where(flags, value * np.exp(half), high)
        return pd.DataFrame(dict(zip(COMMON_COLUMNS, (value, se, low, high), strict=True)),
                            index=pd.Index(labels, name="quantity"))

    def parameter_values(self) -> dict[str, np.ndarray]:
        """The estimates by name (numpy scalars)."""
        return dict(zip(self.names, self.estimates, strict=True))

    def evaluation_thetas(self) -> np.ndarray:
        """θ̂ as one evaluation point, (1, dim)."""
        return np.asarray(self.theta, float)[None]

    def group_predictor(self, part: str, coef_rows: np.ndarray, z_rows: np.ndarray) -> np.ndarray:
        """(3, J): η̂_j ∓ 1.96 SD and η̂_j (middle row), η̂_j = c_j'γ̂ + z_j'b̂_j with b̂_j the
        empirical-Bayes mean and SD² = z_j'C_j z_j its posterior variance (given θ̂)."""
        layout = self.model.layout
        px, pw = len(layout.x_names), len(layout.w_names)
        coef = self.theta[:px] if part == "mean" else self.theta[px:px + pw]
        block = slice(layout.q_v, layout.q) if part == "mean" else slice(0, layout.q_v)
        mean, cov = self.posterior_effects()
        eta = coef_rows @ coef + np.einsum("jk,jk->j", z_rows, mean[:, block])
        sd = np.sqrt(np.clip(np.einsum("jk,jkl,jl->j", z_rows, cov[:, block, block], z_rows), 0, None))
        return np.stack([eta - Z95 * sd, eta, eta + Z95 * sd])

    def summarise_groups(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The middle row, and the smaller and larger of the end rows (a decreasing function
        of the coefficient, as the ICC of the variance, swaps the ends)."""
        return values[1], np.minimum(values[0], values[2]), np.maximum(values[0], values[2])

    def _as_variance(self, table: pd.DataFrame, name: str) -> None:
        est, se, low, high = table.loc[name, list(COMMON_COLUMNS)].to_numpy()
        # the SD's interval is never negative (log scale), so squaring keeps its order
        table.loc[name, list(COMMON_COLUMNS)] = [est ** 2, 2 * est * se, low ** 2, high ** 2]

    def covariance_matrix(self, group_covariates: dict | None = None, at: dict | None = None) -> pd.DataFrame:
        """Σ of the random effects (user order). With level-2 functions, Σ for a group whose
        level-2 terms are ``group_covariates`` (by term name), or whose covariate columns
        are ``at`` (default: their defaults, ``melsm.model.evaluation``)."""
        layout = self.model.layout
        L = layout.cholesky(np.asarray(self.theta), xp=np)
        if layout.g_functions:
            g = self._level2_row(group_covariates, at)
            L = layout.group_cholesky(np.asarray(self.theta), g[None], xp=np)[0]
        sigma = L @ L.T
        effects = layout.random_effects()
        order = [idx for _, idx in effects]
        labels = [str(effect) for effect, _ in effects]
        return pd.DataFrame(sigma[np.ix_(order, order)], index=labels, columns=labels)

    def typical_groups(self, max_patterns: int = 6) -> pd.DataFrame:
        """SDs and correlations of the random effects implied by the level-2 functions for
        typical groups (``melsm.results.groups.level2_patterns``); one row per pattern, empty
        without level-2 functions."""
        patterns = level2_patterns(self.model.layout, self.model.design, max_patterns)
        rows = []
        for _, pattern in patterns.iterrows():
            sigma = self.covariance_matrix(pattern.to_dict())
            rows.append({k: float(v) for k, v in implied_sd_corr(sigma.to_numpy(), list(sigma.index)).items()})
        return pd.DataFrame(rows, index=patterns.index)

    # ---- tests -----------------------------------------------------------------------
    def lrtest(self, other: MLResults) -> LRTest:
        """LR test between this fit and a nested one (either order): ``melsm.results.lrtest``."""
        return lrtest(self, other)

    # ---- random effects and predictions ----------------------------------------------
    @property
    def _data(self):
        """The arrays the fit worked on (``Model.fit_data``), in its blocks."""
        return self.model.fit_data(self.n_quad or None)

    @cached_property
    def _posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Empirical-Bayes means and covariances of b_j in user units (computed once)."""
        model, units = self.model, self.model.units
        # the likelihood's data are standardised (melsm.model.scaling): b = t·b*
        theta = jnp.asarray(units.to_internal(self.theta))
        # one block at a time when the fit's data are in blocks (engine.blocks)
        parts = [_posterior(theta, part, nodes, model.layout, self.n_quad or 1)
                 for part, nodes in with_nodes(self._data, self._opt.nodes)]
        mean, cov = by_group(self._data, [p[0] for p in parts]), by_group(self._data, [p[1] for p in parts])
        n_groups = model.design.n_groups  # the data may be padded with empty groups
        t = units.effect_scales
        return np.asarray(mean)[:n_groups] * t, np.asarray(cov)[:n_groups] * np.outer(t, t)

    def random_effects(self) -> pd.DataFrame:
        """Empirical-Bayes predictions of each group's random effects with posterior SDs.

        Columns ``<part>:<term>`` (posterior mean) and ``<part>:<term> sd``; one row per
        group, indexed by the group identifier.
        """
        mean, cov = self._posterior
        effects = self.model.layout.random_effects()
        columns = {}
        for effect, idx in effects:
            columns[str(effect)] = mean[:, idx]
        for effect, idx in effects:
            columns[f"{effect} sd"] = np.sqrt(np.clip(cov[:, idx, idx], 0, None))
        design = self.model.design
        return pd.DataFrame(columns, index=pd.Index(design.group_labels, name=design.group_name))

    def _linear_predictors(self, X, W, Zu, Zv, b, offsets=(0.0, 0.0)):
        mean, log_var = self.model.layout.predictors(self.theta, X, W, Zu, Zv, b)
        return mean + offsets[0], np.exp(log_var + offsets[1])

    def fitted(self) -> pd.DataFrame:
        """Fitted mean x'β + z'û_j and level-1 variance exp(w'α + s'v̂_j) for every row
        used in the fit (index of the input data)."""
        design = self.model.design
        b = self._posterior[0][design.group]
        mean, var = self._linear_predictors(design.X, design.W, design.Zu, design.Zv, b, design.row_offsets())
        frame = pd.DataFrame({"mean": mean, "variance": var}, index=design.row_index)
        return frame.iloc[np.argsort(design.row_order, kind="stable")]

    def residuals(self, standardized: bool = True) -> pd.Series:
        """y − fitted mean, divided by the fitted level-1 SD when ``standardized``."""
        design = self.model.design
        fit = self.fitted()
        y = pd.Series(design.y, index=design.row_index).loc[fit.index]
        resid = y - fit["mean"]
        return resid / np.sqrt(fit["variance"]) if standardized else resid

    def posterior_effects(self) -> tuple[np.ndarray, np.ndarray]:
        """Empirical-Bayes means (J, q) and covariances (J, q, q) of b_j, internal order."""
        return self._posterior

    def point_prediction(self, arrays: dict, index: np.ndarray) -> pd.DataFrame:
        """μ and σ² of rows with design ``arrays``: empirical-Bayes effects for rows of
        fitted groups (``index`` ≥ 0), 0 for the others (``melsm.results.predict``)."""
        b = np.zeros((len(index), self.model.layout.q))
        b[index >= 0] = self._posterior[0][index[index >= 0]]
        mean, var = self._linear_predictors(arrays["X"], arrays["W"], arrays["Zu"], arrays["Zv"], b,
                                            (arrays["offset_mean"], arrays["offset_within"]))
        return pd.DataFrame({"mean": mean, "variance": var})

    def predictive_draws(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` draws of θ from N(θ̂, Cov θ̂) (entries held on a boundary stay) and of each
        group's effects from N(b̂_j, C_j): (n, dim), (n, J, q)."""
        free = np.isfinite(np.diag(self.cov_theta))
        thetas = np.tile(self.theta, (n, 1))
        if free.any():
            factor = _psd_factor(self.cov_theta[np.ix_(free, free)])
            thetas[:, free] += rng.standard_normal((n, free.sum())) @ factor.T
        mean, cov = self._posterior
        factors = _psd_factor(cov)
        b = mean[None] + np.einsum("jab,sjb->sja", factors, rng.standard_normal((n, *mean.shape)))
        return thetas, b

    def simulation_thetas(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """θ̂ for each of ``n`` simulations."""
        return np.tile(self.theta, (n, 1))

    # ---- output ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fit as JSON-ready values (``melsm.results.summary.ml_dict``)."""
        from melsm.results.summary import ml_dict
        return ml_dict(self)

    def _summary_text(self) -> str:
        from melsm.results.summary import format_summary
        return format_summary(self)

    def __repr__(self) -> str:
        return (f"<MLResults loglik={self.loglik:.4f} converged={self.converged} "
                f"n_obs={self.n_obs} n_groups={self.n_groups}>")
