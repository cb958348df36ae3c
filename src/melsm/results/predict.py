"""Predictions for new rows and simulation from a fitted model, for ML and MCMC fits alike
(docs/architecture.md, 'Results').

For a row of group j the model gives the mean μ = x'β + z'u_j and the level-1 variance
σ² = exp(w'α + s'v_j). ``random=True`` uses the fitted group's effects (ML: empirical
Bayes; MCMC: the draws); a group not in the fit, and every row under ``random=False``,
is a *typical* group with effects 0 (so σ² is the median level-1 variance over groups).

Intervals (columns named as statsmodels' ``summary_frame``):

* ``interval="confidence"``: for μ and σ². ML: delta method, SE² = x'Cov(β̂)x (+ z'C_j z,
  C_j the posterior covariance of the group's effects, taken as independent of β̂), and
  for σ² on the log scale; MCMC: quantiles of the per-draw values.
* ``interval="prediction"``: also for a new observation y (``obs_ci_lower/upper``), by
  simulation: per draw of the parameters (ML: from N(θ̂, Cov θ̂); MCMC: the posterior
  draws) the group's effects (a fitted group: ML N(b̂_j, C_j), MCMC its draw; a new
  group: drawn from N(0, Σ_j) with its level-2 covariates, under the quadratic
  association with v = b_v + τ_q θ1²) and y ~ N(μ, σ²).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.special

from melsm.errors import MelsmDataWarning, MelsmInputError
from melsm.model.checks import as_written
from melsm.model.grammar import quote
from melsm.model.newdata import new_data_arrays, new_level2_rows

INTERVALS = (None, "confidence", "prediction")


def check_options(interval, level, draws) -> None:
    """One line for an unknown interval, a level outside (0, 1) or a bad number of draws."""
    if interval not in INTERVALS:
        raise MelsmInputError(f"interval must be None, 'confidence' or 'prediction', not {interval!r}")
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise MelsmInputError(f"level must be a number between 0 and 1 (e.g. 0.95), not {level!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 10:
        raise MelsmInputError(f"draws must be an integer of at least 10, not {draws!r}")


def group_index(design, data: pd.DataFrame, random: bool, allow_new_levels: bool | None) -> np.ndarray:
    """Each row's group in the fit (0..J-1), or −1: a typical (new) group.

    ``allow_new_levels``: None (default) predicts groups not in the fit as new groups with
    a warning, True does so silently, False refuses them (lme4's ``allow.new.levels``)."""
    if not random or design.group_name is None:
        return np.full(len(data), -1)
    if design.group_name not in data.columns:
        raise MelsmInputError(f"new data lack the grouping column {quote(design.group_name)}; "
                              "pass random=False to predict for a typical group")
    lookup = {label: k for k, label in enumerate(design.group_labels)}
    index = np.array([lookup.get(g, -1) for g in data[design.group_name]], dtype=int)
    new = pd.unique(data[design.group_name].to_numpy()[index < 0])
    if len(new) and allow_new_levels is False:
        raise MelsmInputError(f"new data have {len(new)} groups of {quote(design.group_name)} not in the fit "
                              f"(e.g. {as_written(new[0])}); pass allow_new_levels=True to predict them as new "
                              "groups (random effects 0)")
    if len(new) and allow_new_levels is None:
        warnings.warn(f"{len(new)} groups of {quote(design.group_name)} are not in the fit (e.g. "
                      f"{as_written(new[0])}): predicted as new groups with random effects 0 "
                      "(allow_new_levels=True says so without this warning)", MelsmDataWarning, stacklevel=4)
    return index


def _new_group_keys(design, data: pd.DataFrame, index: np.ndarray) -> np.ndarray:
    """For rows of new groups, one key per group (its label, or the row itself without a
    group column or under random=False); −1 for rows of fitted groups."""
    keys = np.full(len(data), -1)
    rows = np.flatnonzero(index < 0)
    if design.group_name is not None and design.group_name in data.columns and (index >= 0).any():
        keys[rows] = pd.factorize(data[design.group_name].to_numpy()[rows])[0]
    else:
        keys[rows] = np.arange(len(rows))
    return keys


def _row_effects(fit, data, index, thetas, b_seen, rng) -> np.ndarray:
    """(S, n, q): each draw's random effects for each row: its fitted group's draw, or a
    new group's effects drawn from N(0, Σ_j) (one draw per new group)."""
    design, layout = fit.model.design, fit.model.layout
    out = np.zeros((len(thetas), len(data), layout.q))
    seen = index >= 0
    out[:, seen] = b_seen[:, index[seen]]
    keys = _new_group_keys(design, data, index)
    if (keys < 0).all():
        return out
    first = np.unique(keys[keys >= 0], return_index=True)[1]
    rows = np.flatnonzero(keys >= 0)[first]
    G = new_level2_rows(design, data.iloc[rows]) if design.g_specs else np.zeros((len(rows), 0))
    for s, theta in enumerate(thetas):
        effects = layout.effects_from_eta(theta, G, rng.standard_normal((len(rows), layout.q)))
        out[s, keys >= 0] = effects[keys[keys >= 0]]
    return out


def _per_draw(fit, arrays, thetas, b_rows) -> tuple[np.ndarray, np.ndarray]:
    """(S, n) means and log level-1 variances for parameter draws ``thetas`` (S, dim)."""
    layout = fit.model.layout
    px, pw = len(layout.x_names), len(layout.w_names)
    beta, alpha = thetas[:, :px], thetas[:, px:px + pw]
    v, u = b_rows[..., :layout.q_v], b_rows[..., layout.q_v:]
    mean = beta @ arrays["X"].T + np.einsum("ik,sik->si", arrays["Zu"], u) + arrays["offset_mean"]
    log_var = alpha @ arrays["W"].T + np.einsum("ik,sik->si", arrays["Zv"], v) + arrays["offset_within"]
    return mean, log_var


def predict(fit, data: pd.DataFrame, random: bool = True, interval: str | None = None, level: float = 0.95,
            allow_new_levels: bool | None = None, draws: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Predictions for the rows of ``data`` (module docstring); one row per row of ``data``."""
    check_options(interval, level, draws)
    design = fit.model.design
    arrays = new_data_arrays(design, data)
    index = group_index(design, data, random, allow_new_levels)
    rng = np.random.default_rng(seed)
    thetas = b_seen = None
    if fit.has_likelihood:  # point predictions at θ̂, intervals by the delta method
        frame = fit.point_prediction(arrays, index)
        if interval is not None:
            frame = frame.join(delta_intervals(fit, arrays, index, frame, level))
    else:  # posterior means and quantiles of the per-draw values
        thetas, b_seen = fit.predictive_draws(draws, rng)
        known = np.zeros((len(thetas), len(data), fit.model.layout.q))
        known[:, index >= 0] = b_seen[:, index[index >= 0]]
        mean, log_var = _per_draw(fit, arrays, thetas, known)  # typical groups: effects 0
        frame = pd.DataFrame({"mean": mean.mean(axis=0), "variance": np.exp(log_var).mean(axis=0)})
        if interval is not None:
            frame = frame.join(_quantile_columns(mean, np.exp(log_var), (1 - level) / 2, (1 + level) / 2))
    if interval == "prediction":
        frame["obs_ci_lower"], frame["obs_ci_upper"] = _observation_interval(
            fit, data, arrays, index, level, draws, rng, thetas, b_seen)
    return frame.set_axis(data.index)


def _observation_interval(fit, data, arrays, index, level, draws, rng, thetas, b_seen):
    """Quantiles of y over parameter draws, each with its group's effects and y ~ N(μ, σ²)."""
    if thetas is None:
        thetas, b_seen = fit.predictive_draws(draws, rng)
    b_rows = _row_effects(fit, data, index, thetas, b_seen, rng)
    mean, log_var = _per_draw(fit, arrays, thetas, b_rows)
    y = mean + np.exp(0.5 * log_var) * rng.standard_normal(mean.shape)
    return np.quantile(y, [(1 - level) / 2, (1 + level) / 2], axis=0)


def _quantile_columns(mean, variance, low, high) -> pd.DataFrame:
    m_low, m_high = np.quantile(mean, [low, high], axis=0)
    v_low, v_high = np.quantile(variance, [low, high], axis=0)
    return pd.DataFrame({"mean_ci_lower": m_low, "mean_ci_upper": m_high,
                         "variance_ci_lower": v_low, "variance_ci_upper": v_high})


def delta_intervals(fit, arrays, index, frame, level) -> pd.DataFrame:
    """ML confidence intervals of μ and σ² (log scale) by the delta method (module docstring)."""
    layout = fit.model.layout
    z = float(scipy.special.ndtri((1 + level) / 2))
    kinds = np.array([pid.kind for pid in fit.ids])
    X, W = arrays["X"], arrays["W"]
    cov_beta = fit.cov[np.ix_(kinds == "mean", kinds == "mean")]
    cov_alpha = fit.cov[np.ix_(kinds == "within", kinds == "within")]
    var_mean = np.einsum("ik,kl,il->i", X, cov_beta, X)
    var_log = np.einsum("ik,kl,il->i", W, cov_alpha, W)
    seen = index >= 0
    if seen.any():
        cov_b = fit.posterior_effects()[1][index[seen]]  # (n_seen, q, q), internal order (v, u)
        u, v = slice(layout.q_v, layout.q), slice(0, layout.q_v)
        var_mean[seen] += np.einsum("ik,ikl,il->i", arrays["Zu"][seen], cov_b[:, u, u], arrays["Zu"][seen])
        var_log[seen] += np.einsum("ik,ikl,il->i", arrays["Zv"][seen], cov_b[:, v, v], arrays["Zv"][seen])
    se_mean, se_log = np.sqrt(var_mean), np.sqrt(var_log)
    mean, variance = frame["mean"].to_numpy(), frame["variance"].to_numpy()
    return pd.DataFrame({"mean_ci_lower": mean - z * se_mean, "mean_ci_upper": mean + z * se_mean,
                         "variance_ci_lower": variance * np.exp(-z * se_log),
                         "variance_ci_upper": variance * np.exp(z * se_log)}, index=frame.index)


def simulate(fit, nsim: int = 1, seed: int = 0) -> pd.DataFrame:
    """``nsim`` new responses for the fitted rows from the fitted model, with new random
    effects for every group (lme4's ``simulate``): ML at θ̂, MCMC at ``nsim`` posterior
    draws chosen at random. Columns ``sim_1`` …, the data's index and row order."""
    if isinstance(nsim, bool) or not isinstance(nsim, int) or nsim < 1:
        raise MelsmInputError(f"nsim must be a positive integer, not {nsim!r}")
    design, layout = fit.model.design, fit.model.layout
    rng = np.random.default_rng(seed)
    thetas = fit.simulation_thetas(nsim, rng)
    columns = {f"sim_{k + 1}": simulate_response(design, layout, theta, rng) for k, theta in enumerate(thetas)}
    frame = pd.DataFrame(columns, index=design.row_index)
    return frame.iloc[np.argsort(design.row_order, kind="stable")]


def simulate_response(design, layout, theta, rng: np.random.Generator) -> np.ndarray:
    """One response vector drawn at parameters ``theta`` (user units) for the rows of
    ``design``, in the design's row order (sorted by group): new random effects for every
    group (``layout.effects_from_eta``, with the groups' level-2 rows), then
    y = x'β + z'u_j + offset + e, e ~ N(0, exp(w'α + s'v_j + offset)). ``simulate`` and the
    parametric bootstrap (``melsm.results.bootstrap``) draw with it."""
    offset_mean, offset_within = design.row_offsets()
    b = layout.effects_from_eta(theta, design.G, rng.standard_normal((design.n_groups, layout.q)))
    mean, log_var = layout.predictors(theta, design.X, design.W, design.Zu, design.Zv, b[design.group])
    noise = np.exp(0.5 * (log_var + offset_within)) * rng.standard_normal(design.n_obs)
    return mean + offset_mean + noise
