"""Group-level and population-average quantities of the seed analysis (DESIGN §4).

With the covariates of the mean and level-1 variance functions at 0, group j has

    mean_j     = β0 + u0j
    variance_j = exp(α0 + v0j)                       (its level-1 variance)
    ICC_j      = σ²_u,j / (σ²_u,j + variance_j)

where σ²_u,j = σ²_u0, or exp(g_j'κ) with a between (level-2 variance) function. Over
groups the variances are log-normal, so the population averages are

    E   = exp(α0 + σ²_v0 / 2)                        (mean of the group variances)
    V   = exp(2α0 + σ²_v0) (exp(σ²_v0) − 1)          (variance of the group variances)
    ICC = σ²_u / (σ²_u + E)

with σ²_u and σ²_v at g = 0 under level-2 functions, and σ²_v0 = 0 without a random
scale intercept. Group variances include each group's own level-2 function values.
The same formulas serve maximum likelihood (empirical-Bayes intervals for groups;
delta-method SEs for population quantities) and MCMC (per-draw quantities).

Maximum likelihood: group intervals are the empirical-Bayes posterior mean ± 1.96
posterior SDs of u0j, and exp(α0 + v̂0j ± 1.96 sd(v0j)) for the variance (the ICC
interval follows from it); they are conditional on θ̂. A group *differs* when its interval
excludes the population average (β0, E, ICC). MCMC: posterior mean and 2.5/97.5%
quantiles; a group differs when the 95% interval of its per-draw difference from the
per-draw population average excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.special

from melsm.errors import MelsmInputError
from melsm.model.params import is_intercept

Z95 = float(scipy.special.ndtri(0.975))
#: Rows of ``population_quantities``; the first four are positive (log-scale ML intervals).
POPULATION = ("between_variance", "variance_mean", "variance_variance", "icc", "mean")
#: Which population average each group quantity is compared with.
AVERAGE_OF = {"mean": "mean", "variance": "variance_mean", "icc": "icc"}
FUNCTIONS = ("mean", "variance")


def cached(fit, key: str, compute) -> pd.DataFrame:
    """``compute(fit)`` once per results object (the report and the figures ask for the
    same quantities several times; ML's delta method compiles each time); a copy each call."""
    if key not in fit.__dict__:
        fit.__dict__[key] = compute(fit)
    return fit.__dict__[key].copy()


def check_supported(layout) -> None:
    """Group quantities need intercepts in both functions and a random location intercept."""
    if has_group_quantities(layout):
        return
    if not layout.association.gaussian_effects:
        raise MelsmInputError("group means, variances and ICCs are not available under the quadratic "
                              "association (its scale effects are not Gaussian); use association='linear'")
    missing = [what for what, ok in (
        ("an intercept in the mean function", "Intercept" in layout.x_names),
        ("an intercept in the level-1 variance function", "Intercept" in layout.w_names),
        ("a random location intercept, e.g. (1 | group)", "Intercept" in layout.zu_names),
    ) if not ok]
    if missing:
        raise MelsmInputError(f"group means, variances and ICCs need {' and '.join(missing)}")


def has_group_quantities(layout) -> bool:
    """Whether ``check_supported`` passes."""
    return ("Intercept" in layout.x_names and "Intercept" in layout.w_names and "Intercept" in layout.zu_names
            and layout.association.gaussian_effects)


def random_slopes(layout) -> list[tuple[str, str]]:
    """(function, covariate) for each covariate with a random slope whose group lines can
    be drawn: in the fixed part too, next to an intercept; function "mean" or "variance"."""
    if not layout.association.gaussian_effects:
        return []
    return [(function, term) for function, random, fixed in (
        ("mean", layout.zu_names, layout.x_names), ("variance", layout.zv_names, layout.w_names))
        for term in random if term != "Intercept" and term in fixed and "Intercept" in fixed]


def _function(layout, effect: str) -> tuple[int, int] | None:
    """First and end index in κ and G of ``effect``'s level-2 function, if it has one."""
    return next(((a, b) for e, a, b in layout.g_functions if e == effect), None)


def _variance_at_zero(p: Mapping, layout, effect: str, xp, like):
    """σ²_k for a group whose level-2 covariates are 0: exp(intercept of its function),
    or its SD² without a function, or 0 when ``effect`` is not random."""
    part, term = effect.split(":", 1)
    span = _function(layout, effect)
    if span is not None:
        names = layout.g_names[span[0]:span[1]]
        intercept = next((f"between:{n}" for n in names if is_intercept(n)), None)
        return xp.exp(p[intercept]) if intercept else 1.0 + 0.0 * like
    if term in (layout.zu_names if part == "mean" else layout.zv_names):
        return p[f"sd:{effect}"] ** 2
    return 0.0 * like


def _between_variance(p: Mapping, layout, g, xp):
    """σ²_u0 for groups with level-2 covariates ``g`` (rows of G), or the constant σ²_u0."""
    span = _function(layout, "mean:Intercept")
    if span is None:
        return p["sd:mean:Intercept"] ** 2
    a, b = span
    kappa = xp.stack([p[f"between:{n}"] for n in layout.g_names[a:b]], axis=-1)  # (p,) or (S, p)
    return xp.exp(kappa @ xp.asarray(g)[:, a:b].T)


def population_formulas(p: Mapping, layout, xp=jnp) -> dict:
    """The population averages from reported parameters ``p`` (name → value, or name →
    draws); ``xp`` is jax.numpy (for the delta method) or numpy (for draws). Level-2
    functions are evaluated at covariates 0."""
    alpha0 = p["within:Intercept"]
    s2v = _variance_at_zero(p, layout, "within:Intercept", xp, alpha0)
    s2u = _variance_at_zero(p, layout, "mean:Intercept", xp, alpha0)
    e = xp.exp(alpha0 + s2v / 2)
    return {"between_variance": s2u, "variance_mean": e,
            "variance_variance": xp.exp(2 * alpha0 + s2v) * xp.expm1(s2v),
            "icc": s2u / (s2u + e), "mean": p["mean:Intercept"]}


def _effect(frame: pd.DataFrame, part: str, term: str) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and SD of one random effect per group (zeros when absent)."""
    column = f"{part}:{term}"
    if column not in frame:
        zeros = np.zeros(len(frame))
        return zeros, zeros
    return frame[column].to_numpy(), frame[f"{column} sd"].to_numpy()


# ---- maximum likelihood ---------------------------------------------------------------
def ml_population(fit) -> pd.DataFrame:
    """Population averages of an ML fit with delta-method SEs; 95% intervals on the log
    scale for the positive quantities."""
    layout = fit.model.layout
    check_supported(layout)
    value, se = fit.delta_method(lambda p: [population_formulas(p, layout)[k] for k in POPULATION])
    low, high = value - Z95 * se, value + Z95 * se
    positive = np.array([k != "mean" for k in POPULATION]) & (value > 0)
    half = np.where(positive, Z95 * se / np.where(value > 0, value, 1), 0)
    low = np.where(positive, value * np.exp(-half), low)
    high = np.where(positive, value * np.exp(half), high)
    return pd.DataFrame({"estimate": value, "se": se, "low": low, "high": high},
                        index=pd.Index(POPULATION, name="quantity"))


def ml_groups(fit) -> pd.DataFrame:
    """Each group's mean, level-1 variance and ICC with empirical-Bayes 95% intervals."""
    layout, design = fit.model.layout, fit.model.design
    check_supported(layout)
    params = dict(zip(fit.names, fit.estimates, strict=True))
    average = population_formulas(params, layout, np)
    effects = fit.random_effects()
    u0, u0_sd = _effect(effects, "mean", "Intercept")
    v0, v0_sd = _effect(effects, "within", "Intercept")
    beta0, alpha0 = params["mean:Intercept"], params["within:Intercept"]
    s2u = np.broadcast_to(_between_variance(params, layout, design.G, np), u0.shape)
    variance = np.exp(alpha0 + v0)
    var_low, var_high = np.exp(alpha0 + v0 - Z95 * v0_sd), np.exp(alpha0 + v0 + Z95 * v0_sd)
    columns = {"mean": beta0 + u0, "mean low": beta0 + u0 - Z95 * u0_sd, "mean high": beta0 + u0 + Z95 * u0_sd,
               "variance": variance, "variance low": var_low, "variance high": var_high,
               "icc": s2u / (s2u + variance), "icc low": s2u / (s2u + var_high),
               "icc high": s2u / (s2u + var_low)}
    for quantity, key in AVERAGE_OF.items():
        avg = float(average[key])
        columns[f"{quantity} differs"] = (columns[f"{quantity} low"] > avg) | (columns[f"{quantity} high"] < avg)
    return pd.DataFrame(columns, index=pd.Index(design.group_labels, name=design.group_name))


# ---- MCMC ----------------------------------------------------------------------------
def mcmc_draws(fit) -> tuple[dict, dict]:
    """Per-draw group quantities (S, J) by ``mean``/``variance``/``icc``, and population
    averages (S,) by the names of ``POPULATION``; draws pooled over chains."""
    layout, design = fit.model.layout, fit.model.design
    check_supported(layout)
    p = {name: fit.draws(name) for name in fit.names}
    b = fit.b_draws.reshape(-1, *fit.b_draws.shape[2:])
    u0 = b[:, :, layout.q_v + layout.zu_names.index("Intercept")]
    v0 = b[:, :, layout.zv_names.index("Intercept")] if "Intercept" in layout.zv_names else np.zeros_like(u0)
    s2u = _between_variance(p, layout, design.G, np)
    s2u = s2u if np.ndim(s2u) == 2 else s2u[:, None]
    variance = np.exp(p["within:Intercept"][:, None] + v0)
    groups = {"mean": p["mean:Intercept"][:, None] + u0, "variance": variance, "icc": s2u / (s2u + variance)}
    return groups, population_formulas(p, layout, np)


def mcmc_population(fit) -> pd.DataFrame:
    """Population averages of an MCMC fit: posterior mean, SD and 95% interval."""
    draws = mcmc_draws(fit)[1]
    rows = [(draws[k].mean(), draws[k].std(ddof=1), *np.quantile(draws[k], [0.025, 0.975])) for k in POPULATION]
    return pd.DataFrame(rows, columns=["estimate", "se", "low", "high"], index=pd.Index(POPULATION, name="quantity"))


def mcmc_groups(fit) -> pd.DataFrame:
    """Each group's mean, level-1 variance and ICC: posterior mean, 95% interval, differs."""
    groups, population = mcmc_draws(fit)
    columns = {}
    for quantity, values in groups.items():
        diff = values - population[AVERAGE_OF[quantity]][:, None]
        columns[quantity] = values.mean(axis=0)
        columns[f"{quantity} low"], columns[f"{quantity} high"] = np.quantile(values, [0.025, 0.975], axis=0)
        low, high = np.quantile(diff, [0.025, 0.975], axis=0)
        columns[f"{quantity} differs"] = (low > 0) | (high < 0)
    design = fit.model.design
    return pd.DataFrame(columns, index=pd.Index(design.group_labels, name=design.group_name))


# ---- predicted group lines ----------------------------------------------------------
def group_lines(fit, covariate: str, function: str = "mean") -> pd.DataFrame:
    """Each group's predicted line against ``covariate``, other covariates at 0.

    ``function="mean"``: (β0 + u0j) + (β_x + u_xj) x; ``"variance"``: the level-1
    variance exp((α0 + v0j) + (α_x + v_xj) x). One row per group: intercept and slope
    (on the log scale for the variance), the range of x observed in the group, and
    ``against``: the group's slope has the opposite sign to the average slope. Random
    effects are the EB predictions (ML) or posterior means (MCMC); coefficients the
    estimates or posterior means.
    """
    if function not in FUNCTIONS:
        raise MelsmInputError(f"function must be 'mean' or 'variance', not {function!r}")
    layout, design = fit.model.layout, fit.model.design
    part, names, matrix = (("mean", layout.x_names, design.X) if function == "mean"
                           else ("within", layout.w_names, design.W))
    label = "mean" if function == "mean" else "level-1 variance"
    if covariate not in names or covariate == "Intercept":
        choices = ", ".join(n for n in names if n != "Intercept") or "none"
        raise MelsmInputError(f"'{covariate}' is not a covariate of the {label} function (covariates: {choices})")
    if "Intercept" not in names:
        raise MelsmInputError(f"group lines need an intercept in the {label} function")
    estimate = fit.params.iloc[:, 0]
    effects = fit.random_effects()
    intercept = estimate[f"{part}:Intercept"] + _effect(effects, part, "Intercept")[0]
    average_slope = estimate[f"{part}:{covariate}"]
    slope = average_slope + _effect(effects, part, covariate)[0]
    x = pd.Series(matrix[:, names.index(covariate)]).groupby(design.group)
    return pd.DataFrame({"intercept": intercept, "slope": slope, "x_min": x.min().to_numpy(),
                         "x_max": x.max().to_numpy(), "against": np.sign(slope) == -np.sign(average_slope)},
                        index=pd.Index(design.group_labels, name=design.group_name))


def level2_patterns(layout, design, max_patterns: int = 6) -> pd.DataFrame:
    """Typical values of the level-2 (between) covariates, one row per pattern, indexed by
    a label such as ``endog=1``: each distinct pattern in the data when there are at most
    ``max_patterns``, else all at their medians and each in turn at its 10th and 90th
    percentile. Empty without level-2 functions."""
    if not layout.g_functions:
        return pd.DataFrame(index=pd.Index([], name="group covariates"))
    columns = {}
    for k, name in enumerate(layout.g_names):
        covariate = name.rsplit(":", 1)[-1]
        if covariate != "Intercept":
            columns.setdefault(covariate, design.G[:, k])
    values = pd.DataFrame(columns)
    patterns = values.drop_duplicates().sort_values(list(columns)) if columns else pd.DataFrame([{}])
    if len(patterns) > max_patterns:
        median = values.median().to_dict()
        rows = [median] + [{**median, c: float(values[c].quantile(q))} for c in columns for q in (0.1, 0.9)]
        patterns = pd.DataFrame(rows)
    labels = [", ".join(f"{k}={v:g}" for k, v in row.items()) or "-" for _, row in patterns.iterrows()]
    return patterns.set_axis(pd.Index(labels, name="group covariates"))


def implied_sd_corr(sigma: np.ndarray, labels) -> dict:
    """``sd:<effect>`` and ``corr:<a>,<b>`` of covariance matrices (..., q, q) whose rows
    are the effects ``labels``: arrays of shape (...)."""
    sd = np.sqrt(np.diagonal(sigma, axis1=-2, axis2=-1))
    out = {f"sd:{label}": sd[..., k] for k, label in enumerate(labels)}
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            out[f"corr:{labels[a]},{labels[b]}"] = sigma[..., a, b] / (sd[..., a] * sd[..., b])
    return out


def observed_groups(design) -> pd.DataFrame:
    """Observed mean and variance (ddof 1) of the response in each group with 2+ rows."""
    frame = pd.DataFrame({"y": design.y, "group": design.group}).groupby("group")["y"].agg(["mean", "var", "size"])
    frame.index = pd.Index(design.group_labels, name=design.group_name)
    return frame[frame["size"] >= 2].rename(columns={"var": "variance"})


def percent_change(before: pd.DataFrame, after: pd.DataFrame) -> pd.Series:
    """100 (after − before) / before for each positive population quantity."""
    keys = [k for k in POPULATION if k != "mean"]
    return 100 * (after.loc[keys, "estimate"] / before.loc[keys, "estimate"] - 1)
