"""Group-level and population-average quantities of a location-scale fit.

Each quantity is evaluated at a row of covariate values (``melsm.model.evaluation``):
per group its own level-2 covariates and the others at ``at`` or their defaults
(reference level, 0 where 0 is observed, else the mean); for the population every
covariate at ``at`` or its default. At a row (x, w, z_u, z_v, g) group j has

    mean_j     = x'β + z_u'u_j
    variance_j = exp(w'α + z_v'v_j)                  (its level-1 variance)
    ICC_j      = σ²_u / (σ²_u + variance_j),         σ²_u = z_u'Σ_u(g) z_u

and, the group variances being log-normal, the population averages are

    E   = exp(w'α + σ²_v / 2)                        (mean of the group variances)
    V   = exp(2w'α + σ²_v) (exp(σ²_v) − 1)           (variance of the group variances)
    ICC = σ²_u / (σ²_u + E),                         σ²_v = z_v'Σ_v(g) z_v

with Σ(g) the random effects' covariance under the level-2 functions at g (offsets are
added to x'β and w'α). With every covariate at 0 this is β0 + u0j, exp(α0 + v0j), and
σ²_u = σ²_u0, as in Leckie's tables.

One code path serves both methods through the results contract (``melsm.results.base``;
see docs/architecture.md, 'Results'): the formulas are evaluated at the fit's
``evaluation_thetas`` and ``group_predictor`` values and summarised by the fit's
``summarise_groups``; population averages come from the fit's ``derived``. For maximum
likelihood this gives empirical-Bayes intervals conditional on θ̂ (x'β̂ + z'û_j ± 1.96
posterior SDs, the variance's on the log scale, the ICC interval from it) and
delta-method SEs; for MCMC posterior means and 2.5/97.5% quantiles of per-draw
quantities. A group *differs* when the 95% interval of its difference from the average
for groups like it (the population formulas at the group's own row) excludes 0: for ML,
when its interval excludes that average.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.special

from melsm.errors import MelsmInputError
from melsm.model.evaluation import evaluation_rows

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


def sigma_rows(layout, theta, G, xp=np):
    """(n, q, q): Σ of the random effects (internal order: scale, then location) for the
    level-2 rows ``G`` (n, p_g), from θ in the data's units."""
    if layout.g_functions:
        L = layout.group_cholesky(theta, xp.asarray(G), xp=xp)
    else:
        L = xp.broadcast_to(layout.cholesky(theta, xp=xp), (len(G), layout.q, layout.q))
    return L @ xp.swapaxes(L, -1, -2)


def population_formulas(theta, layout, rows: Mapping, xp=np) -> dict:
    """The population averages (module docstring) at θ for each evaluation row of
    ``rows`` (``melsm.model.evaluation.evaluation_rows``): arrays (n,) by the names of
    ``POPULATION``. ``xp``: numpy, or jax.numpy for the delta method and per-draw maps."""
    px, pw, qv = len(layout.x_names), len(layout.w_names), layout.q_v
    beta, alpha = theta[:px], theta[px:px + pw]
    sigma = sigma_rows(layout, theta, rows["G"], xp)
    zu, zv = xp.asarray(rows["Zu"]), xp.asarray(rows["Zv"])
    s2u = xp.einsum("ik,ikl,il->i", zu, sigma[:, qv:, qv:], zu)
    s2v = xp.einsum("ik,ikl,il->i", zv, sigma[:, :qv, :qv], zv)
    log_var = xp.asarray(rows["W"]) @ alpha + rows["offset_within"]
    e = xp.exp(log_var + s2v / 2)
    return {"between_variance": s2u, "variance_mean": e,
            "variance_variance": xp.exp(2 * log_var + s2v) * xp.expm1(s2v),
            "icc": s2u / (s2u + e), "mean": xp.asarray(rows["X"]) @ beta + rows["offset_mean"]}


def effect_columns(frame: pd.DataFrame, part: str, term: str) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and SD of one random effect per group (zeros when absent)."""
    column = f"{part}:{term}"
    if column not in frame:
        zeros = np.zeros(len(frame))
        return zeros, zeros
    return frame[column].to_numpy(), frame[f"{column} sd"].to_numpy()


# ---- group and population quantities (both methods) -----------------------------------
def _at_each_theta(thetas: np.ndarray, layout, rows: Mapping) -> dict:
    """``population_formulas`` at each row of ``thetas`` (K, dim): arrays (K, n)."""
    if len(thetas) == 1:
        return {k: np.asarray(v)[None] for k, v in population_formulas(thetas[0], layout, rows, np).items()}
    arrays = {k: jnp.asarray(rows[k]) for k in ("X", "W", "Zu", "Zv", "G", "offset_mean", "offset_within")}
    out = jax.jit(jax.vmap(lambda t: population_formulas(t, layout, arrays, jnp)))(jnp.asarray(thetas))
    return {k: np.asarray(v) for k, v in out.items()}


def group_values(fit, at: Mapping | None = None) -> tuple[dict, dict]:
    """Group quantities (K, J) by ``mean``/``variance``/``icc``, and the population
    averages for groups like each (K, J) by the names of ``POPULATION``, at the fit's
    evaluation points (``Results.evaluation_thetas``, ``Results.group_predictor``) and
    each group's evaluation row (module docstring)."""
    layout, design = fit.model.layout, fit.model.design
    check_supported(layout)
    rows = evaluation_rows(design, at, per_group=True)
    like = _at_each_theta(fit.evaluation_thetas(), layout, rows)
    mean = fit.group_predictor("mean", rows["X"], rows["Zu"]) + rows["offset_mean"]
    variance = np.exp(fit.group_predictor("within", rows["W"], rows["Zv"]) + rows["offset_within"])
    s2u = like["between_variance"]
    return {"mean": mean, "variance": variance, "icc": s2u / (s2u + variance)}, like


def population_values(fit, at: Mapping | None = None) -> dict:
    """The population averages at the fit's evaluation points, (K,) by ``POPULATION``."""
    rows = evaluation_rows(fit.model.design, at, per_group=False)
    return {k: v[:, 0] for k, v in _at_each_theta(fit.evaluation_thetas(), fit.model.layout, rows).items()}


def group_quantities(fit, at: Mapping | None = None) -> pd.DataFrame:
    """Each group's mean, level-1 variance and ICC: point value, 95% interval (``<quantity>
    low/high``), ``<quantity> differs`` from the average for groups like it (module
    docstring) and that average (``<quantity> average``; MCMC: its posterior mean),
    summarised by the fit."""
    groups, like = group_values(fit, at)
    columns, differs = {}, {}
    for quantity, values in groups.items():
        columns[quantity], columns[f"{quantity} low"], columns[f"{quantity} high"] = fit.summarise_groups(values)
        _, low, high = fit.summarise_groups(values - like[AVERAGE_OF[quantity]])
        differs[f"{quantity} differs"] = (low > 0) | (high < 0)
        differs[f"{quantity} average"] = like[AVERAGE_OF[quantity]].mean(axis=0)
    design = fit.model.design
    return pd.DataFrame(columns | differs, index=pd.Index(design.group_labels, name=design.group_name))


def population_quantities(fit, at: Mapping | None = None) -> pd.DataFrame:
    """Population averages (``POPULATION``) at the population's evaluation row, by the
    fit's ``derived``: estimate, ``se`` and 95% interval ``low``/``high`` (ML: on the log
    scale for the positive ones)."""
    layout = fit.model.layout
    check_supported(layout)
    rows = evaluation_rows(fit.model.design, at, per_group=False)

    def formulas(p, theta):
        return {k: v[0] for k, v in population_formulas(theta, layout, rows, jnp).items()}

    table = fit.derived(formulas, positive=[k != "mean" for k in POPULATION], theta=True)
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
