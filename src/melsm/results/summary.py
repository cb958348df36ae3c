"""Plain-text summary of a maximum-likelihood fit, in blocks as runmixregls prints them."""

from __future__ import annotations

import numpy as np

from melsm.engine.likelihood import inner_points

BLOCKS = (
    ("mean", "Mean function"),
    ("between", "Level-2 variance functions (log variances of random effects; between:<covariate> is the "
                "random location intercept's, between:<part>:<effect>:<covariate> another effect's)"),
    ("within", "Within-group (level-1) variance function (log variance)"),
    ("assoc", "Quadratic association: v_j = b_v,j + tau_q theta1_j^2, theta1 the standardised location "
              "effect (MIXREGLS' tau_l = corr * sd(within), sigma = sd(within) * sqrt(1 - corr^2))"),
)


def _number(x: float, width: int = 10, digits: int = 4) -> str:
    """Fixed decimals, or 4 significant digits for numbers that fixed decimals would show
    as 0.0000 or too wide (data in small or large units): a nonzero SE never reads 0."""
    if x is None or not np.isfinite(x):
        return " " * (width - 1) + "."
    if x != 0 and (abs(x) < 0.5 * 10.0 ** -digits or abs(x) >= 10.0 ** (width - digits - 3)):
        return f"{x:{width}.3e}"
    return f"{x:{width}.{digits}f}"


def _p_value(p: float) -> str:
    if not np.isfinite(p):
        return "       ."
    return "  <0.0001" if p < 1e-4 else f"{p:9.4f}"


def _named(fit, kind: str) -> list:
    """The reported parameters (``ParamName``) of one kind, in the fit's order."""
    return [pid for pid in fit.ids if pid.kind == kind]


def _rows(table, ids, label_width):
    lines = []
    for pid in ids:
        row = table.loc[str(pid)]
        label = str(pid.key)
        lines.append(f"  {label:<{label_width}}{_number(row.estimate)}{_number(row.se)}"
                     f"{_number(row.z, 9, 2)}{_p_value(row.p)}"
                     f"   [{_number(row.ci_low, 9)}, {_number(row.ci_high, 9)}]")
    return lines


def format_summary(fit) -> str:
    design, table = fit.model.design, fit._params_table
    sizes = design.group_sizes
    width = max([len(n) + 2 for n in fit.names] + [12]) + 2
    header = f"  {'':<{width}}{'estimate':>10}{'se':>10}{'z':>9}{'p':>9}   {'95% CI':^23}"
    lines = [
        "Mixed-effects location scale model (maximum likelihood)",
        f"Response: {design.response}    Group: {design.group_name or '-'}    "
        f"Observations: {design.n_obs}    Groups: {design.n_groups}"
        + (f" (sizes {sizes.min()}-{sizes.max()})" if design.group_name else ""),
        f"Log-likelihood: {fit.loglik:.4f}    AIC: {fit.aic:.2f}    BIC: {fit.bic:.2f}",
        f"Converged: {'yes' if fit.converged else 'NO - ' + fit.message}    "
        f"Iterations: {fit.iterations}    Time: {fit.seconds:.2f} s",
    ]
    if fit.n_quad and fit.model.layout.association.nested_rule:
        lines.append(f"Integration: location and scale effects by nested adaptive Gauss-Hermite quadrature, "
                     f"{fit.n_quad} x {inner_points(fit.n_quad)} points")
    elif fit.n_quad:
        lines.append(f"Integration: location effects exact; scale effects by adaptive "
                     f"Gauss-Hermite quadrature, {fit.n_quad} points per dimension")
    if design.n_dropped:
        lines.append(f"Dropped {design.n_dropped} rows with missing values")
    for kind, title in BLOCKS:
        if ids := _named(fit, kind):
            lines += ["", title, header] + _rows(table, ids, width)
    if random := _named(fit, "sd") + _named(fit, "corr"):
        lines += ["", "Random effects (standard deviations and correlations)", header]
        for pid in random:
            row = table.loc[str(pid)]
            lines.append(f"  {_label(pid):<{width}}{_number(row.estimate)}{_number(row.se)}"
                         f"{'':>18}   [{_number(row.ci_low, 9)}, {_number(row.ci_high, 9)}]")
        sigma = fit.covariance_matrix()
        note = " (for a group with all between covariates 0)" if design.g_names else ""
        lines += ["", f"Random-effect variances and covariances{note}"]
        labels = list(sigma.index)
        cell = max(12, max(len(lab) for lab in labels) + 1)
        lines.append(f"  {'':<{cell}}" + "".join(f"{lab:>{cell}}" for lab in labels))
        for r, lab in enumerate(labels):
            values = "".join(_number(sigma.iloc[r, c], cell) if c <= r else " " * cell
                             for c in range(len(labels)))
            lines.append(f"  {lab:<{cell}}{values}")
    lines += _typical_lines(fit)
    if fit.problems:
        lines += ["", "Problems:"] + [f"  {text}" for text in fit.problems]
    return "\n".join(lines + _boundary_lines(fit))


def _typical_lines(fit) -> list[str]:
    """The implied SDs and correlations of typical groups, under level-2 functions."""
    typical = fit.typical_groups() if fit.model.design.g_names else None
    if typical is None or not len(typical):
        return []
    lines = ["", "Implied random-effect SDs and correlations for typical groups (level-2 functions)"]
    label_width = max(len(str(i)) for i in typical.index) + 2
    names = [c.replace(",", ", ") for c in typical.columns]
    widths = [max(10, len(n) + 2) for n in names]
    lines.append(f"  {'':<{label_width}}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)))
    for label, row in typical.iterrows():
        lines.append(f"  {label:<{label_width}}"
                     + "".join(_number(v, w) for v, w in zip(row.to_numpy(), widths, strict=True)))
    return lines


def _boundary_lines(fit) -> list[str]:
    """What was estimated on the boundary of the parameter space, and what that means."""
    if not fit.boundary:
        return []
    lines = ["", "Boundary: estimated on the edge of the parameter space (a correlation within 0.001 of "
             "+-1 counts); no SEs for these or for the correlations of the effects involved (test with "
             "lrtest):"]
    for pid, value in fit.boundary_params.items():
        if pid.kind == "sd":
            lines.append(f"  {pid} = 0 (variance zero; its correlations are undefined)")
        elif pid.kind == "corr":
            lines.append(f"  {pid} = {value:+.4g} (singular covariance matrix)")
        else:
            lines.append(f"  {pid.key} is an exact linear combination "
                         "of the other random effects (singular covariance matrix)")
    return lines


def _label(pid) -> str:
    """How a parameter is shown in a summary: ``sd(mean:Intercept)``,
    ``corr(mean:Intercept, within:Intercept)``, or the coefficient's term."""
    if pid.kind == "corr":
        return f"corr({pid.key.first}, {pid.key.second})"
    return f"sd({pid.key})" if pid.kind == "sd" else str(pid.key)


def format_mcmc_summary(result) -> str:
    """Posterior summary in the same blocks and names as the ML summary."""
    design, table, info = result.model.design, result._params_table, result.info
    width = max([len(_label(pid)) for pid in result.ids] + [12]) + 4
    header = (f"  {'':<{width}}{'mean':>10}{'sd':>10}{'2.5%':>10}{'97.5%':>10}{'R-hat':>8}"
              f"{'ESS bulk':>10}{'ESS tail':>10}")
    lines = [
        "Mixed-effects location scale model (MCMC)",
        f"Response: {design.response}    Group: {design.group_name or '-'}    "
        f"Observations: {design.n_obs}    Groups: {design.n_groups}",
        f"Chains: {info['chains']} x {info['draws']} draws after {info['warmup']} warm-up    "
        f"Time: {info['seconds']:.1f} s    Divergences: {info['divergences']}",
        f"DIC (conditional on the random effects): {result.dic['DIC']:.1f}    "
        f"D-bar: {result.dic['D_bar']:.1f}    pD: {result.dic['p_D']:.1f}",
        "Converged: " + ("yes (R-hat < 1.01, ESS >= 400, no divergences)" if result.converged
                         else "NO - " + "; ".join(result.problems)),
    ]
    if design.n_dropped:
        lines.append(f"Dropped {design.n_dropped} rows with missing values")
    blocks = list(BLOCKS) + [("sd", "Random effects (standard deviations)"), ("corr", "Random effects (correlations)")]
    for kind, title in blocks:
        if not (ids := _named(result, kind)):
            continue
        lines += ["", title, header]
        for pid in ids:
            row = table.loc[str(pid)]
            lines.append(f"  {_label(pid):<{width}}{_number(row['mean'])}{_number(row['sd'])}"
                         f"{_number(row['q2.5'])}{_number(row['q97.5'])}{_number(row['r_hat'], 8, 3)}"
                         f"{row['ess_bulk']:10.0f}{row['ess_tail']:10.0f}")
    if result.notes:
        lines += ["", "Prior sensitivity (posterior mean and median far apart):"]
        lines += [f"  {note}" for note in result.notes]
    return "\n".join(lines)


def ml_dict(fit) -> dict:
    """A maximum-likelihood fit as JSON-ready values (its ``to_dict``); NaN and inf as None."""
    def num(x):
        return None if x is None or not np.isfinite(x) else float(x)
    return {
        "method": "ml",
        "loglik": float(fit.loglik),
        "aic": float(fit.aic),
        "bic": float(fit.bic),
        "converged": bool(fit.converged),
        "message": fit.message,
        "problems": fit.problems,
        "boundary": fit.boundary,
        "boundary_values": {k: num(v) for k, v in fit.boundary_values.items()},
        "n_obs": fit.n_obs,
        "n_groups": fit.n_groups,
        "n_dropped": fit.model.design.n_dropped,
        "iterations": fit.iterations,
        "quadrature_points": fit.n_quad,
        "seconds": round(fit.seconds, 4),
        "formulas": {k: v for k, v in fit.model.spec.formulas.items() if v},
        "association": fit.model.association,
        "params": [{"name": n, "estimate": num(e), "se": num(s)}
                   for n, e, s in zip(fit.names, fit.estimates, fit.std_errors, strict=True)],
        "typical_groups": [{"group_covariates": label, **{k: num(v) for k, v in row.items()}}
                           for label, row in fit.typical_groups().iterrows()],
    }


def mcmc_dict(fit) -> dict:
    """A Bayesian fit as JSON-ready values (its ``to_dict``)."""
    return {
        "method": "mcmc", "converged": fit.converged, "problems": fit.problems, "notes": fit.notes,
        "n_obs": fit.n_obs, "n_groups": fit.n_groups,
        "dic": fit.dic["DIC"], "dic_parts": fit.dic,
        "chains": fit.info["chains"], "warmup": fit.info["warmup"], "draws": fit.info["draws"],
        "seconds": round(fit.info["seconds"], 3), "divergences": fit.info["divergences"],
        "params": [{"name": n, "estimate": float(r["mean"]), "se": float(r["sd"]),
                    "q2.5": float(r["q2.5"]), "q97.5": float(r["q97.5"]), "r_hat": float(r.r_hat),
                    "ess_bulk": float(r.ess_bulk)} for n, r in fit._params_table.iterrows()],
    }
