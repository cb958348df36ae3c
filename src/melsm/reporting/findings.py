"""The findings of a set of fits, as sentences computed from the fits.

``findings(fits, names)`` takes fits of one data set and one method, in the order of a
model-building sequence, and says:

- the observed correlation of group means and within-group variances;
- for one fit with a random scale intercept (``groups_of``; by default the first): how
  many groups' means, level-1 variances and ICCs differ significantly from the
  average for groups like them (their own level-2 covariates), the range of the ICCs,
  and the correlation of the location and scale intercepts;
- for each step that adds covariates to the mean function only: the % change of the
  between-group variance and of the mean and variance of the group level-1 variances
  (``melsm.results.groups``);
- LR tests of the steps (fits with a likelihood);
- for one fit with random slopes (``lines_of``; by default the last): how many groups'
  predicted lines go against the average trend;
- the best fit by the fits' default criterion (AIC for ML, DIC for MCMC).

Which fits a study's narrative is about is the caller's choice (the demo names the
models of its paper). Fits are read only through the results contract
(``melsm.results.base``); see docs/architecture.md, 'Results'.
"""

from __future__ import annotations

import numpy as np

from melsm.errors import MelsmInputError
from melsm.model.evaluation import describe, level2_columns
from melsm.reporting.words import default_group_word, pluralise
from melsm.results.groups import has_group_quantities, observed_groups, percent_change, random_slopes


def _interval(fit, name: str) -> str:
    row = fit.table().loc[name]
    return f"{row.estimate:.2f} ({fit.wording.interval} {row.lower:.2f} to {row.upper:.2f})"


def _p(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.4f}"


def _fixed(fit, part: str) -> set[str]:
    """The terms of the fit's ``part`` ("mean" or "within") function."""
    return {pid.key for pid in fit.ids if pid.kind == part}


def group_fit(fits, names: list[str], chosen: str | None = None) -> int | None:
    """Index of the fit whose group quantities are shown: ``chosen`` when it names a fit
    that has them, else the first with group quantities and a random scale intercept."""
    ok = [k for k, f in enumerate(fits)
          if has_group_quantities(f.model.layout) and "Intercept" in f.model.layout.zv_names]
    if chosen is not None and chosen in names and names.index(chosen) in ok:
        return names.index(chosen)
    return ok[0] if ok else None


def lines_fit(fits, names: list[str], chosen: str | None = None) -> int | None:
    """Index of the fit whose group lines are shown: ``chosen`` when it names a fit with
    random slopes, else the last such fit."""
    ok = [k for k, f in enumerate(fits) if random_slopes(f.model.layout)]
    if chosen is not None and chosen in names and names.index(chosen) in ok:
        return names.index(chosen)
    return ok[-1] if ok else None


def _group_sentences(fit, name: str, word: str) -> list[str]:
    groups = fit.group_quantities()
    n = len(groups)
    average_icc = float(fit.population_quantities().loc["icc", "estimate"])
    design = fit.model.design
    like = f"the average for {pluralise(word)} like them" if level2_columns(design) else "the population average"
    out = [f"{name}: {int(groups['mean differs'].sum())} of {n} {word} means, "
           f"{int(groups['variance differs'].sum())} of {n} {word} level-1 variances and "
           f"{int(groups['icc differs'].sum())} of {n} {word} ICCs differ significantly from "
           f"{like}; {word} ICCs range from {groups.icc.min():.3f} to {groups.icc.max():.3f} "
           f"(average {average_icc:.3f}), at {describe(design)}."]
    rho = "corr:mean:Intercept,within:Intercept"
    if rho in fit.names:
        out.append(f"{name}: the correlation of the {word} location and scale intercepts is "
                   f"{_interval(fit, rho)}: {pluralise(word)} with higher means have "
                   f"{'more' if fit.table().at[rho, 'estimate'] > 0 else 'less'} variable "
                   f"{fit.model.design.response}.")
    return out


def _step_sentences(fits, names: list[str], word: str) -> list[str]:
    out = []
    for k in range(1, len(fits)):
        # Covariates added to the mean function only: the % changes are variance explained.
        # (Covariates of the variance function change what α0, and so E and V, refer to.)
        before, after = fits[k - 1], fits[k]
        added = [pid.key for pid in after.ids if pid.kind == "mean" and pid.key not in _fixed(before, "mean")]
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
    return out


def _lrtest_sentences(fits, names: list[str]) -> list[str]:
    if not fits[0].has_likelihood:
        return []
    from melsm.reporting.compare import compare

    tests = compare(*fits, names=names).lrtests
    if not len(tests):
        return []
    parts = [f"{t.full} vs {t.restricted}: LR = {t.statistic:.1f} on {t.distribution}, {_p(t.p)}"
             for t in tests.itertuples()]
    return ["Likelihood-ratio tests of each step: " + "; ".join(parts) + "."]


def _lines_sentences(fit, name: str, word: str) -> list[str]:
    out = []
    response = fit.model.design.response
    for function, term in random_slopes(fit.model.layout):
        lines = fit.group_lines(term, function)
        part = "mean" if function == "mean" else "within"
        slope = float(fit.table().at[f"{part}:{term}", "estimate"])
        what = response if function == "mean" else f"the level-1 variance of {response}"
        scale = "coefficient" if function == "mean" else "coefficient of the log variance"
        out.append(f"{name}: on average {what} {'rises' if slope > 0 else 'falls'} with {term} "
                   f"({scale} {slope:.3f}); {int(lines['against'].sum())} of {len(lines)} {pluralise(word)}' predicted "
                   f"{'mean' if function == 'mean' else 'variance'} lines go the other way.")
    return out


def findings(fits, names: list[str], groups_of: str | None = None, lines_of: str | None = None) -> list[str]:
    """Sentences of findings (see the module docstring). ``groups_of`` and ``lines_of``
    name the fits whose group quantities and group lines are described."""
    fits = list(fits)
    if not fits or len(names) != len(fits):
        raise MelsmInputError(f"{len(names)} names for {len(fits)} fits")
    names = list(names)
    design = fits[0].model.design
    word = default_group_word(design.group_name)
    out = []
    observed = observed_groups(design)
    if len(observed) >= 3:
        r = float(np.corrcoef(observed["mean"], observed["variance"])[0, 1])
        out.append(f"Observed {word} means and within-{word} variances of {design.response} correlate "
                   f"with r = {r:.2f} ({len(observed)} {pluralise(word)}).")
    key = group_fit(fits, names, groups_of)
    if key is not None:
        out += _group_sentences(fits[key], names[key], word)
    out += _step_sentences(fits, names, word)
    out += _lrtest_sentences(fits, names)
    key = lines_fit(fits, names, lines_of)
    if key is not None:
        out += _lines_sentences(fits[key], names[key], word)
    if len(fits) > 1:
        criteria = [f.criterion() for f in fits]
        best = int(np.argmin([value for _, value in criteria]))
        label, value = criteria[best]
        out.append(f"Best fit by {label}: {names[best]} ({label} {value:.1f}).")
    unconverged = [n for n, f in zip(names, fits, strict=True) if not f.converged]
    if unconverged:
        out.append(f"Not converged (treat with care): {', '.join(unconverged)}.")
    return out
