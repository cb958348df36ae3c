"""Results of a Bayesian fit: posterior summaries in the ML names, ArviZ output, DIC (the
contract of ``melsm.results.base``; see docs/architecture.md, 'Results')."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from melsm.errors import MelsmConvergenceWarning
from melsm.estimate.mcmc import conditional_deviances, effects_by_chain
from melsm.model.params import level2_row
from melsm.results.base import COMMON_COLUMNS, Results, Wording, outputs
from melsm.results.groups import group_values, implied_sd_corr, level2_patterns, population_values

RHAT_LIMIT = 1.01
#: Draws used for the marginal (u and v integrated) criteria: marginal DIC, WAIC, LOO.
MARGINAL_DRAWS = 2000
#: Smallest bulk and tail ESS before a warning (per parameter).
ESS_LIMIT = 400
#: A note on prior sensitivity when |posterior mean − median| exceeds this many robust
#: posterior SDs (IQR/1.349; see ``skewness_notes``).
SKEW_LIMIT = 0.5
QUANTILES = (0.025, 0.975)
MCMC_WORDING = Wording(title="Bayesian (MCMC)", error="SD", estimate_and_error="posterior mean and standard deviation",
                       interval="95% interval", group_intervals="95% credible intervals",
                       group_points="posterior means",
                       differs="95% interval of the difference from the average excludes 0",
                       criteria_note="DIC conditional on the random effects (as Stat-JR and MLwiN report it).",
                       group_interval="95% credible interval", population_interval="95% credible interval")


def skewness_notes(table: pd.DataFrame, values: np.ndarray) -> list[str]:
    """A note for each parameter whose posterior mean and median differ by more than
    ``SKEW_LIMIT`` robust posterior SDs, |mean − median| > ½ IQR/1.349: a long tail,
    typically where the likelihood is flat and the prior decides how far the draws run.
    The robust SD because that tail inflates the SD itself (London, scale SD by mixed vs
    single-sex school under a wide prior: mean −2.5, median −1.1, SD 4.8)."""
    flat = values.reshape(-1, values.shape[-1])
    median = np.median(flat, axis=0)
    iqr = np.quantile(flat, 0.75, axis=0) - np.quantile(flat, 0.25, axis=0)
    robust_sd = iqr / 1.349
    notes = []
    for k, name in enumerate(table.index):
        mean = table["mean"].iloc[k]
        if robust_sd[k] > 0 and abs(mean - median[k]) > SKEW_LIMIT * robust_sd[k]:
            notes.append(f"{name}: posterior mean {mean:.3g} and median {median[k]:.3g} differ by "
                         f"{abs(mean - median[k]) / robust_sd[k]:.1f} robust SDs (a long tail): "
                         "the prior may decide it; check the fit's sensitivity to the prior")
    return notes


class MCMCResults(Results):
    """Posterior draws of a location-scale model. Build with ``Model.sample()``."""

    method = "MCMC"
    wording = MCMC_WORDING
    has_likelihood = False
    criteria_names = ("DIC", "marginal_DIC", "WAIC", "LOO")
    _common_columns = {"mean": "estimate", "sd": "std_error", "q2.5": "lower", "q97.5": "upper"}

    def __init__(self, model, positions: np.ndarray, sample_layout, info: dict):
        from melsm.results.inference_data import FitLoader, MelsmInferenceData, posterior_data

        self.model = model
        self.info = info
        self._positions = positions
        self._sample_layout = sample_layout
        self._marginal: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        layout = model.layout
        n_draws, n_chains, _ = positions.shape
        #: θ (draws, chains, P) and the groups' effects (chains, draws, J, q) in user
        #: order, the array ArviZ's ``posterior.random_effects`` shares
        self.theta_draws, self.effect_draws = effects_by_chain(model, positions, sample_layout, info["seed"])
        reported = jax.vmap(layout.report)(jnp.asarray(self.theta_draws.reshape(n_draws * n_chains, -1)))
        self.ids = layout.reported_ids()
        self.names = [str(i) for i in self.ids]
        values = np.asarray(reported).reshape(n_draws, n_chains, -1)
        effects = [str(effect) for effect, _ in layout.random_effects()]
        #: ArviZ's InferenceData (``melsm.results.inference_data``); its log_likelihood
        #: group is computed on first access
        self.idata = MelsmInferenceData(lazy={"log_likelihood": FitLoader(self, "_loglik_group")},
                                        **posterior_data(self, values, effects))
        self._params_table = self._table(values)
        self._check()
        self.notes = skewness_notes(self._params_table, values)

    def _table(self, values: np.ndarray) -> pd.DataFrame:
        import arviz as az

        summary = az.summary(self.idata, var_names=self.names, kind="all", round_to="none")
        summary = summary.loc[self.names]
        flat = values.reshape(-1, values.shape[-1])
        table = pd.DataFrame({
            "mean": flat.mean(axis=0), "sd": flat.std(axis=0, ddof=1),
            "q2.5": np.quantile(flat, 0.025, axis=0), "q97.5": np.quantile(flat, 0.975, axis=0),
            "r_hat": summary["r_hat"].to_numpy(), "ess_bulk": summary["ess_bulk"].to_numpy(),
            "ess_tail": summary["ess_tail"].to_numpy(), "mcse_mean": summary["mcse_mean"].to_numpy(),
        }, index=pd.Index(self.names, name="parameter"))
        return table

    @cached_property
    def dic(self) -> dict:
        """DIC conditional on the random effects (``_dic``), computed on first use: it
        evaluates the deviance at every draw, seconds that a fit not asked for it saves."""
        return self._dic()

    def _dic(self) -> dict:
        """DIC conditional on the random effects, as Stat-JR/MLwiN report it:
        D̄ = mean deviance over draws, D(θ̄) at the posterior means of β, α, u_j, v_j,
        p_D = D̄ − D(θ̄), DIC = D̄ + p_D."""
        design, layout = self.model.design, self.model.layout
        theta, b = self.evaluation_thetas(), self._pooled_effects()
        deviances = conditional_deviances(b, theta, design, layout)
        mean_theta = theta.mean(axis=0)  # β and α enter linearly: their means are what counts
        d_hat = float(conditional_deviances(b.mean(axis=0)[None], mean_theta[None], design, layout)[0])
        d_bar = float(deviances.mean())
        p_d = d_bar - d_hat
        return {"D_bar": d_bar, "D_hat": d_hat, "p_D": p_d, "DIC": d_bar + p_d}

    # ---- marginal fit criteria -------------------------------------------------------
    def _marginal_loglik(self, draws: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-draw, per-group marginal log-likelihood (u and v integrated out) (C, D', J)
        at every step-th draw of each chain, at most ``draws`` in all (None: every draw),
        and (J,) at the posterior mean of the sampler's z (``inference_data.marginal_loglik``)."""
        from melsm.results.inference_data import marginal_loglik

        return marginal_loglik(self, draws)

    def _loglik_group(self):
        """The InferenceData's log_likelihood group: every draw (``_marginal_loglik``)."""
        from melsm.results.inference_data import loglik_dataset

        return loglik_dataset(self._marginal_loglik()[0], self.model.design)

    def thinned_idata(self, draws: int | None = MARGINAL_DRAWS):
        """InferenceData with ``posterior`` and ``log_likelihood`` at every step-th draw of
        each chain, at most ``draws`` in all (``inference_data.criteria_data``; None or
        enough draws: ``idata`` itself): ``az.loo``/``az.waic``/``az.compare`` of it equal
        ``loo(draws)``/``waic(draws)``, without the log-likelihood at every draw."""
        from melsm.results.inference_data import criteria_data

        return criteria_data(self, draws)

    def marginal_dic(self, draws: int | None = None) -> dict:
        """DIC of the marginal likelihood (u and v integrated out): D(θ) = −2 Σ_j log L_j(θ),
        D̄ over the draws (at most ``draws``, thinned within chains; None: all), D(θ̄) at the
        posterior mean of the sampler's parameters."""
        per_draw, at_mean = self._marginal_loglik(draws)
        deviance = -2 * per_draw.sum(axis=-1)
        d_bar, d_hat = float(deviance.mean()), float(-2 * at_mean.sum())
        return {"D_bar": d_bar, "D_hat": d_hat, "p_D": d_bar - d_hat, "DIC": 2 * d_bar - d_hat}

    def waic(self, draws: int | None = None):
        """WAIC by group (a group's observations are not exchangeable given θ: the
        pointwise unit is the group, with u and v integrated out). ArviZ's ELPDData, the
        same as ``az.waic(fit.idata)`` (every draw) or, with ``draws``, on at most that
        many draws thinned within chains (``thinned_idata``)."""
        import arviz as az

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return az.waic(self.thinned_idata(draws), pointwise=True)

    def loo(self, draws: int | None = None):
        """PSIS-LOO by group (leave one group out), as ``waic``: ``az.loo(fit.idata)``."""
        import arviz as az

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return az.loo(self.thinned_idata(draws), pointwise=True)

    # ---- predictive draws (melsm.results.inference_data) ------------------------------
    def ppc(self, draws: int | None = None, seed: int = 0):
        """Posterior predictive draws: adds ``posterior_predictive`` (``y``: chain, draw,
        row, the rows as in ``observed_data``) to ``idata`` and returns it, y_rep ~
        N(x'β_s + z'u_s,j, exp(w'α_s + s'v_s,j)) at every step-th draw of each chain (at
        most ``draws`` in all; None: every draw) with that draw's group effects."""
        from melsm.results.inference_data import posterior_predictive_group, replace_group

        replace_group(self.idata, "posterior_predictive",
                      posterior_predictive_group(self, draws, np.random.default_rng(seed)))
        return self.idata

    def sample_prior(self, draws: int = 1000, seed: int = 0):
        """Exact draws from the fit's prior (``melsm.results.prior_draws``): adds ``prior``
        (the parameters and group effects, as ``posterior``, one chain) and
        ``prior_predictive`` (``y`` at those draws) to ``idata`` and returns it. Raises
        ``MelsmInputError`` for an improper prior (flat fixed effects, as ``"diffuse"``)."""
        from melsm.results.inference_data import prior_groups, replace_group
        from melsm.results.prior_draws import prior_draws

        rng = np.random.default_rng(seed)
        theta, b, reported = prior_draws(self.model, self._sample_layout, self.info["priors"], draws, rng)
        for name, dataset in prior_groups(self, theta, b, reported, rng).items():
            replace_group(self.idata, name, dataset)
        return self.idata

    def _check(self) -> None:
        t = self._params_table
        problems = []
        if (t.r_hat > RHAT_LIMIT).any():
            problems.append(f"R-hat above {RHAT_LIMIT} for {', '.join(t.index[t.r_hat > RHAT_LIMIT])}")
        low = (t.ess_bulk < ESS_LIMIT) | (t.ess_tail < ESS_LIMIT)
        if low.any():
            problems.append(f"ESS below {ESS_LIMIT} for {', '.join(t.index[low])}")
        if self.info["divergences"]:
            problems.append(f"{self.info['divergences']} divergent transitions")
        self.converged = not problems
        self.problems = problems
        for text in problems:
            warnings.warn(f"MCMC: {text}; run longer or check the model", MelsmConvergenceWarning,
                          stacklevel=3)

    def draws(self, name: str) -> np.ndarray:
        """All draws (chains pooled) of a reported parameter, e.g. ``"sd:mean:Intercept"``."""
        if name not in self.names:
            raise KeyError(f"no parameter '{name}'; have {', '.join(self.names)}")
        return np.asarray(self.idata.posterior[name]).ravel()

    def derived_draws(self, at: Mapping | None = None) -> dict:
        """Per-draw group and population quantities (``melsm.results.groups``), draws pooled over chains:
        ``group_mean``, ``group_variance``, ``icc`` (S, J); ``between_variance`` σ²_u,
        ``variance_mean`` E, ``variance_variance`` V, ``icc_average`` and ``population_mean``
        (S,), at the covariate values of ``melsm.model.evaluation`` (``at``: values to use)."""
        groups, _ = group_values(self, at)
        population = population_values(self, at)
        return {"group_mean": groups["mean"], "group_variance": groups["variance"], "icc": groups["icc"],
                "between_variance": population["between_variance"], "variance_mean": population["variance_mean"],
                "variance_variance": population["variance_variance"], "icc_average": population["icc"],
                "population_mean": population["mean"]}

    # ---- the results contract (melsm.results.base) ---------------------------------------
    def derived(self, fn: Callable[..., Any], positive: bool | Sequence[bool] = False,
                theta: bool = False) -> pd.DataFrame:
        """``fn`` of the reported parameters evaluated per draw (JAX-vectorised over the
        pooled draws, so write it with operators and ``jax.numpy``, as for ML):
        ``estimate`` the posterior mean of g, ``std_error`` its posterior SD, ``lower`` and
        ``upper`` its 2.5% and 97.5% quantiles. ``positive`` changes nothing here
        (quantiles follow any monotone transformation); ``theta``: as ``Results.derived``."""
        draws = np.column_stack([self.draws(name) for name in self.names])
        labels: list = []

        def one(row, t):
            p = dict(zip(self.names, row, strict=True))
            names, values = outputs(fn(p, t) if theta else fn(p))
            labels[:] = names
            return jnp.stack([jnp.asarray(v, dtype=row.dtype) for v in values])

        values = np.asarray(jax.vmap(one)(jnp.asarray(draws), jnp.asarray(self.evaluation_thetas())))
        rows = [(v.mean(), v.std(ddof=1), *np.quantile(v, QUANTILES))
                for v in (np.ascontiguousarray(values[:, k]) for k in range(values.shape[1]))]
        return pd.DataFrame(rows, columns=list(COMMON_COLUMNS), index=pd.Index(labels, name="quantity"))

    def predictive_draws(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """At most ``n`` posterior draws, evenly spaced over the pooled chains: θ (S, dim)
        and every group's effects b (S, J, q) of the same draws, in internal order (v, then u)."""
        n_draws, n_chains = self.theta_draws.shape[:2]
        total = n_draws * n_chains
        draw, chain = np.divmod(np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)), n_chains)
        internal = np.argsort([idx for _, idx in self.model.layout.random_effects()])
        return self.theta_draws[draw, chain], self.effect_draws[chain, draw][..., internal]

    def simulation_thetas(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` posterior draws of θ chosen at random (with replacement)."""
        thetas = self.theta_draws.reshape(-1, self.theta_draws.shape[-1])
        return thetas[rng.integers(0, len(thetas), n)]

    def parameter_values(self) -> dict[str, np.ndarray]:
        """The draws by name, chains pooled (S,)."""
        return {name: self.draws(name) for name in self.names}

    def _pooled(self, draws: np.ndarray) -> np.ndarray:
        """(draw, chain, ...) → (chain·draw, ...), pooled chain by chain as ``draws`` pools:
        so β of one draw meets the random effects of the same draw."""
        return np.swapaxes(draws, 0, 1).reshape(-1, *draws.shape[2:])

    def _pooled_effects(self) -> np.ndarray:
        """The groups' effects (chain·draw, J, q), user order, pooled as ``_pooled``: a view."""
        return self.effect_draws.reshape(-1, *self.effect_draws.shape[2:])

    def evaluation_thetas(self) -> np.ndarray:
        """The draws of θ, chains pooled as in ``draws`` (S, dim)."""
        return self._pooled(self.theta_draws)

    def group_predictor(self, part: str, coef_rows: np.ndarray, z_rows: np.ndarray) -> np.ndarray:
        """(S, J): c_j'γ + z_j'b_j per draw, γ and b_j of the same draw."""
        layout = self.model.layout
        px, pw = len(layout.x_names), len(layout.w_names)
        thetas, b = self.evaluation_thetas(), self._pooled_effects()
        coef = thetas[:, :px] if part == "mean" else thetas[:, px:px + pw]
        block = slice(0, layout.q_u) if part == "mean" else slice(layout.q_u, layout.q)
        return coef @ coef_rows.T + np.einsum("jk,sjk->sj", z_rows, b[:, :, block])

    def summarise_groups(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean and 2.5/97.5% quantiles over the draws."""
        low, high = np.quantile(values, QUANTILES, axis=0)
        return values.mean(axis=0), low, high

    def covariance_matrix(self, group_covariates: dict | None = None, at: dict | None = None) -> pd.DataFrame:
        """Posterior mean of Σ (user order); with level-2 functions, for a group whose
        level-2 terms are ``group_covariates`` (by term name), or whose covariate columns
        are ``at`` (default: their defaults, ``melsm.model.evaluation``)."""
        layout = self.model.layout
        G = jnp.asarray(self._level2_row(group_covariates, at)[None])
        theta = jnp.asarray(self.theta_draws.reshape(-1, self.theta_draws.shape[-1]))
        factors = np.asarray(jax.jit(jax.vmap(lambda t: layout.group_cholesky(t, G)[0]))(theta))
        sigma = (factors @ np.swapaxes(factors, -1, -2)).mean(axis=0)
        order = [idx for _, idx in layout.random_effects()]
        labels = [str(effect) for effect, _ in layout.random_effects()]
        return pd.DataFrame(sigma[np.ix_(order, order)], index=labels, columns=labels)

    def _intervals(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed credible intervals at ``level`` from the pooled draws."""
        draws = np.column_stack([self.draws(name) for name in self.names])
        return tuple(np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0))

    def _cov_params(self) -> np.ndarray:
        """Posterior covariance of the reported parameters."""
        return np.atleast_2d(np.cov(np.column_stack([self.draws(name) for name in self.names]), rowvar=False))

    def _as_variance(self, table: pd.DataFrame, name: str) -> None:
        squares = self.draws(name) ** 2
        table.loc[name, list(COMMON_COLUMNS)] = [squares.mean(), squares.std(ddof=1), *np.quantile(squares, QUANTILES)]
        table.loc[name, "mcse_mean"] = np.nan  # the SD's, not the variance's: not carried over

    def fit_statistics(self) -> dict[str, float]:
        return {"DIC": self.dic["DIC"], "pD": self.dic["p_D"]}

    def information_criteria(self) -> dict[str, float]:
        """Conditional DIC (``dic``), marginal DIC, and WAIC and PSIS-LOO by group on the
        deviance scale, −2·elpd; the marginal ones on at most ``MARGINAL_DRAWS`` draws
        (thinned within chains), which bounds their cost in comparison tables and reports."""
        marginal = self.marginal_dic(MARGINAL_DRAWS)
        waic, loo = self.waic(MARGINAL_DRAWS), self.loo(MARGINAL_DRAWS)
        return {"DIC": self.dic["DIC"], "D_bar": self.dic["D_bar"], "p_D": self.dic["p_D"],
                "marginal_DIC": marginal["DIC"], "marginal_p_D": marginal["p_D"],
                "WAIC": -2 * float(waic.elpd_waic), "LOO": -2 * float(loo.elpd_loo)}

    @property
    def seconds(self) -> float:
        """Sampling time (warm-up and draws), in seconds."""
        return self.info["seconds"]

    def typical_groups(self, max_patterns: int = 6) -> pd.DataFrame:
        """Posterior means of the SDs and correlations implied by the level-2 functions for
        typical groups (``melsm.results.groups.level2_patterns``)."""
        layout, design = self.model.layout, self.model.design
        if not layout.g_functions:
            return pd.DataFrame()
        patterns = level2_patterns(layout, design, max_patterns)
        G = jnp.asarray(np.stack([level2_row(layout.g_coefs, row.to_dict()) for _, row in patterns.iterrows()]))
        theta = jnp.asarray(self.theta_draws.reshape(-1, self.theta_draws.shape[-1]))
        factors = np.asarray(jax.jit(jax.vmap(lambda t: layout.group_cholesky(t, G)))(theta))
        effects = layout.random_effects()
        order = [idx for _, idx in effects]
        sigma = (factors @ np.swapaxes(factors, -1, -2))[:, :, order][:, :, :, order]  # (S, P, q, q), user order
        implied = implied_sd_corr(sigma, [str(effect) for effect, _ in effects])
        return pd.DataFrame({k: v.mean(axis=0) for k, v in implied.items()}, index=patterns.index)

    def random_effects(self) -> pd.DataFrame:
        """Posterior mean and SD of each group's random effects (same layout as ML)."""
        layout, design = self.model.layout, self.model.design
        b = self._pooled_effects()
        effects = [str(effect) for effect, _ in layout.random_effects()]
        columns = {}
        for k, effect in enumerate(effects):
            columns[effect] = b[:, :, k].mean(axis=0)
        for k, effect in enumerate(effects):
            columns[f"{effect} sd"] = b[:, :, k].std(axis=0, ddof=1)
        return pd.DataFrame(columns, index=pd.Index(design.group_labels, name=design.group_name))

    def to_dict(self) -> dict:
        """The fit as JSON-ready values (``melsm.results.summary.mcmc_dict``)."""
        from melsm.results.summary import mcmc_dict
        return mcmc_dict(self)

    def _summary_text(self) -> str:
        from melsm.results.summary import format_mcmc_summary

        return format_mcmc_summary(self)

    def __repr__(self) -> str:
        return (f"<MCMCResults DIC={self.dic['DIC']:.1f} converged={self.converged} "
                f"chains={self.info['chains']} draws={self.info['draws']}>")
