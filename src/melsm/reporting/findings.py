"""The findings of a set of fits, as sentences computed from the fits.

``findings(fits, names)`` takes fits of one data set and one method, in the order of a
model-building sequence, and says what the seed analysis says about them:

- the observed correlation of group means and within-group variances;
- for the first fit with a random scale intercept: how many groups' means, level-1
  variances and ICCs differ significantly from the population average, the range of the
  ICCs, and the correlation of the location and scale intercepts;
- for each step that adds covariates to the mean function only: the % change of the
  between-group variance and of the mean and variance of the group level-1 variances
  (``melsm.results.groups``);
- LR tests of the steps (ML);
- for the last fit with random slopes: how many groups' predicted lines go against the
  average trend;
- the best fit by AIC (ML) or DIC (MCMC).
"""

from __future__ import annotations

import numpy as np

from melsm.errors import MelsmInputError
from melsm.results.groups import has_group_quantities, observed_groups, percent_change, random_slopes


def _interval(fit, name: str) -> str:
    row = fit.params.loc[name]
    if hasattr(fit, "loglik"):
        return f"{row.estimate:.2f} (95% CI {row.ci_low:.2f} to {row.ci_high:.2f})"
    return f"{row['mean']:.2f} (95% interval {row['q2.5']:.2f} to {row['q97.5']:.2f})"


def _p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def _fixed(fit, part: str) -> set[str]:
    return {n for n in fit.names if n.startswith(f"{part}:")}


def findings(fits, names: list[str]) -> list[str]:
    """Sentences of findings (see the module docstring)."""
    fits = list(fits)
    if not fits or len(names) != len(fits):
        raise MelsmInputError(f"{len(names)} names for {len(fits)} fits")
    design = fits[0].model.design
    word = design.group_name or "group"
    out = []
    observed = observed_groups(design)
    if len(observed) >= 3:
        r = float(np.corrcoef(observed["mean"], observed["variance"])[0, 1])
        out.append(f"Observed {word} means and within-{word} variances of {design.response} correlate "
                   f"with r = {r:.2f} ({len(observed)} {word}s).")

    key = next((k for k, f in enumerate(fits)
                if has_group_quantities(f.model.layout) and "Intercept" in f.model.layout.zv_names), None)
    if key is not None:
        fit, name = fits[key], names[key]
        groups = fit.group_quantities()
        n = len(groups)
        average_icc = float(fit.population_quantities().loc["icc", "estimate"])
        out.append(f"{name}: {int(groups['mean differs'].sum())} of {n} {word} means, "
                   f"{int(groups['variance differs'].sum())} of {n} {word} level-1 variances and "
                   f"{int(groups['icc differs'].sum())} of {n} {word} ICCs differ significantly from the "
                   f"population average; {word} ICCs range from {groups.icc.min():.3f} to {groups.icc.max():.3f} "
                   f"(average {average_icc:.3f}).")
        rho = "corr:mean:Intercept,within:Intercept"
        if rho in fit.names:
            out.append(f"{name}: the correlation of the {word} location and scale intercepts is "
                       f"{_interval(fit, rho)}: {word}s with higher means have "
                       f"{'more' if fit.params.iloc[:, 0][rho] > 0 else 'less'} variable {design.response}.")

    for k in range(1, len(fits)):
        # Covariates added to the mean function only: the % changes are variance explained.
        # (Covariates of the variance function change what α0, and so E and V, refer to.)
        before, after = fits[k - 1], fits[k]
        added = [n.split(":", 1)[1] for n in after.names if n in _fixed(after, "mean") - _fixed(before, "mean")]
        if not (added and _fixed(before, "mean") < _fixed(after, "mean")
                and _fixed(before, "within") == _fixed(after, "within")
                and has_group_quantities(before.model.layout) and has_group_quantities(after.model.layout)):
            continue
        change = percent_change(before.population_quantities(), after.population_quantities())
        terms = " and ".join([", ".join(added[:-1]), added[-1]] if len(added) > 1 else added)
        out.append(f"Adding {terms} to the mean function ({names[k - 1]} to {names[k]}) changes the "
                   f"between-{word} variance by {change['between_variance']:+.1f}%, the mean of the {word} "
                   f"level-1 variances by {change['variance_mean']:+.1f}% and their variance by "
                   f"{change['variance_variance']:+.1f}%.")

    if hasattr(fits[0], "loglik"):
        from melsm.reporting.compare import compare

        tests = compare(*fits, names=names).lrtests
        if len(tests):
            parts = [f"{t.full} vs {t.restricted}: {t.distribution} = {t.statistic:.1f}, {_p(t.p)}"
                     for t in tests.itertuples()]
            out.append("Likelihood-ratio tests of each step: " + "; ".join(parts) + ".")

    for k in reversed(range(len(fits))):
        fit = fits[k]
        slopes = random_slopes(fit.model.layout)
        if not slopes:
            continue
        for function, term in slopes:
            lines = fit.group_lines(term, function)
            part = "mean" if function == "mean" else "within"
            slope = float(fit.params.iloc[:, 0][f"{part}:{term}"])
            what = design.response if function == "mean" else f"the level-1 variance of {design.response}"
            scale = "coefficient" if function == "mean" else "coefficient of the log variance"
            out.append(f"{names[k]}: on average {what} {'rises' if slope > 0 else 'falls'} with {term} "
                       f"({scale} {slope:.3f}); {int(lines['against'].sum())} of {len(lines)} {word}s' predicted "
                       f"{'mean' if function == 'mean' else 'variance'} lines go the other way.")
        break

    if len(fits) > 1:
        if hasattr(fits[0], "loglik"):
            aic = [f.aic for f in fits]
            best = int(np.argmin(aic))
            out.append(f"Best fit by AIC: {names[best]} (AIC {aic[best]:.1f}).")
        else:
            dic = [f.dic["DIC"] for f in fits]
            best = int(np.argmin(dic))
            out.append(f"Best fit by DIC: {names[best]} (DIC {dic[best]:.1f}).")
    unconverged = [n for n, f in zip(names, fits, strict=True) if not f.converged]
    if unconverged:
        out.append(f"Not converged (treat with care): {', '.join(unconverged)}.")
    return out
