"""Group-level and population-average quantities of a location-scale fit.

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

One code path serves both methods through the results contract (``melsm.results.base``;
see docs/architecture.md, 'Results'): the formulas are evaluated at the fit's
``parameter_values`` and ``group_coefficient`` values and summarised by the fit's
``summarise_groups``; population averages come from the fit's ``derived``. For maximum
likelihood this gives empirical-Bayes intervals conditional on θ̂ (β0 + û0j ± 1.96
posterior SDs, exp(α0 + v̂0j ± 1.96 sd(v0j)) for the variance, the ICC interval from it)
and delta-method SEs; for MCMC posterior means and 2.5/97.5% quantiles of per-draw
quantities. A group *differs* when the 95% interval of its difference from the population
average (β0, E, ICC) excludes 0: for ML, when its interval excludes the average.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.special

from melsm.errors import MelsmInputError
from melsm.model.names import LOCATION_INTERCEPT, Effect, ParamName

Z95 = float(scipy.special.ndtri(0.975))
#: Rows of ``population_quantities``; the first four are positive (log-scale ML intervals).
POPULATION = ("between_variance", "variance_mean", "variance_variance", "icc", "mean")
#: Which population average each group quantity is compared with.
AVERAGE_OF = {"mean": "mean", "variance": "variance_mean", "icc": "icc"}
FUNCTIONS = ("mean", "variance")


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


def _function(layout, effect: Effect) -> tuple[int, int] | None:
    """First and end index in κ and G of ``effect``'s level-2 function, if it has one."""
    return next(((a, b) for e, a, b in layout.g_functions if e == effect), None)


def _variance_at_zero(p: Mapping, layout, effect: Effect, xp, like):
    """σ²_k for a group whose level-2 covariates are 0: exp(intercept of its function),
    or its SD² without a function, or 0 when ``effect`` is not random."""
    span = _function(layout, effect)
    if span is not None:
        intercept = next((c for c in layout.g_coefs[span[0]:span[1]] if c.is_intercept), None)
        return xp.exp(p[str(ParamName("between", intercept))]) if intercept else 1.0 + 0.0 * like
    if effect in dict(layout.random_effects()):
        return p[str(ParamName("sd", effect))] ** 2
    return 0.0 * like


def _between_variance(p: Mapping, layout, g, xp):
    """σ²_u0 for groups with level-2 covariates ``g`` (rows of G), or the constant σ²_u0."""
    span = _function(layout, LOCATION_INTERCEPT)
    if span is None:
        return p[str(ParamName("sd", LOCATION_INTERCEPT))] ** 2
    a, b = span
    kappa = xp.stack([p[str(ParamName("between", c))] for c in layout.g_coefs[a:b]], axis=-1)  # (p,) or (S, p)
    return xp.exp(kappa @ xp.asarray(g)[:, a:b].T)


def population_formulas(p: Mapping, layout, xp=None) -> dict:
    """The population averages from reported parameters ``p`` (name → value, or name →
    draws); ``xp`` is jax.numpy (for the delta method) or numpy (for draws), by default
    the one of ``p``'s values. Level-2 functions are evaluated at covariates 0."""
    alpha0 = p["within:Intercept"]
    if xp is None:
        # JAX values (traced by the delta method) need jax.numpy; numpy keeps draws in numpy
        xp = jnp if isinstance(alpha0, jax.Array) else np
    s2v = _variance_at_zero(p, layout, Effect("within", "Intercept"), xp, alpha0)
    s2u = _variance_at_zero(p, layout, LOCATION_INTERCEPT, xp, alpha0)
    e = xp.exp(alpha0 + s2v / 2)
    return {"between_variance": s2u, "variance_mean": e,
            "variance_variance": xp.exp(2 * alpha0 + s2v) * xp.expm1(s2v),
            "icc": s2u / (s2u + e), "mean": p["mean:Intercept"]}


def effect_columns(frame: pd.DataFrame, part: str, term: str) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and SD of one random effect per group (zeros when absent)."""
    column = f"{part}:{term}"
    if column not in frame:
        zeros = np.zeros(len(frame))
        return zeros, zeros
    return frame[column].to_numpy(), frame[f"{column} sd"].to_numpy()


# ---- group and population quantities (both methods) -----------------------------------
def group_values(fit) -> tuple[dict, dict]:
    """Group quantities (K, J) by ``mean``/``variance``/``icc`` and population averages
    (scalars, or (S,) per draw) by the names of ``POPULATION``, at the fit's evaluation
    points (``Results.parameter_values`` and ``Results.group_coefficient``)."""
    layout, design = fit.model.layout, fit.model.design
    check_supported(layout)
    p = fit.parameter_values()
    variance = np.exp(fit.group_coefficient("within"))
    s2u = _between_variance(p, layout, design.G, np)
    if _function(layout, LOCATION_INTERCEPT) is None:
        s2u = np.asarray(s2u)[..., None]  # one value per evaluation point, for every group
    groups = {"mean": fit.group_coefficient("mean"), "variance": variance, "icc": s2u / (s2u + variance)}
    return groups, population_formulas(p, layout, np)


def group_quantities(fit) -> pd.DataFrame:
    """Each group's mean, level-1 variance and ICC: point value, 95% interval (``<quantity>
    low/high``) and ``<quantity> differs``, summarised by the fit (see the module docstring)."""
    groups, population = group_values(fit)
    columns, differs = {}, {}
    for quantity, values in groups.items():
        columns[quantity], columns[f"{quantity} low"], columns[f"{quantity} high"] = fit.summarise_groups(values)
        _, low, high = fit.summarise_groups(values - np.asarray(population[AVERAGE_OF[quantity]])[..., None])
        differs[f"{quantity} differs"] = (low > 0) | (high < 0)
    design = fit.model.design
    return pd.DataFrame(columns | differs, index=pd.Index(design.group_labels, name=design.group_name))


def population_quantities(fit) -> pd.DataFrame:
    """Population averages (``POPULATION``) by the fit's ``derived``: estimate, ``se``
    and 95% interval ``low``/``high`` (ML: on the log scale for the positive ones)."""
    layout = fit.model.layout
    check_supported(layout)
    table = fit.derived(lambda p: population_formulas(p, layout),
                        positive=[k != "mean" for k in POPULATION])
    table = table.loc[list(POPULATION)].rename(columns={"std_error": "se", "lower": "low", "upper": "high"})
    return table.rename_axis("quantity")


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
    estimate = fit.table()["estimate"]
    effects = fit.random_effects()
    intercept = estimate[f"{part}:Intercept"] + effect_columns(effects, part, "Intercept")[0]
    average_slope = estimate[f"{part}:{covariate}"]
    slope = average_slope + effect_columns(effects, part, covariate)[0]
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
    for k, coef in enumerate(layout.g_coefs):
        if not coef.is_intercept:
            columns.setdefault(coef.covariate, design.G[:, k])
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
