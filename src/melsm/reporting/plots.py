"""Figures of group and population quantities (matplotlib), from any fit.

Each figure function draws into the caller's matplotlib axes (``ax=``) and returns them,
or, without ``ax``, into a new ``matplotlib.figure.Figure`` built without pyplot (nothing
depends on a display or a global state) and returns the figure: save it with
``fig.savefig("f.png")`` or show it in a notebook. ``group_label=`` names the groups
("patient", or ("person", "people")); by default the group column's name
(``melsm.reporting.words.default_group_word``). Interval wording comes from the fit
(``Results.wording``): ML group quantities have 95% empirical-Bayes (posterior) intervals,
ML population quantities 95% CIs by the delta method, MCMC 95% credible intervals
(``melsm.results.groups`` has the formulas). A group is marked (dark red diamond, dashed
line) exactly when the interval drawn excludes the reference line drawn; axis limits hold
everything drawn (``figure_style``). Figures ask the fit only through the results contract
(``melsm.results.base``). ``FitPlots`` is ``fit.plot`` (registered by ``melsm/__init__.py``
with ``melsm.results.base.register_accessor``, so that matplotlib is imported on first
use). See docs/architecture.md, 'Figures'.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from melsm.errors import MelsmInputError
from melsm.reporting import figure_style as style
from melsm.reporting.figure_style import AVERAGE, HIGHLIGHT, PLAIN, TEXT
from melsm.results.groups import AVERAGE_OF, group_lines, observed_groups, percent_change

QUANTITY_LABELS = {"mean": "mean", "variance": "level-1 variance", "icc": "ICC"}
POPULATION_PANELS = {"between_variance": r"Between-{} variance $\sigma^2_u$",
                     "variance_mean": "Mean of {} variances",
                     "variance_variance": "Variance of {} variances",
                     "icc": "Average ICC"}
LINE_POINTS = 40
#: Top of a population panel's data, as a fraction of its height (the % changes above).
POPULATION_TOP = 0.8


def excludes(low: np.ndarray, high: np.ndarray, line: float) -> np.ndarray:
    """Whether each interval [low, high] excludes ``line``: what marks a group."""
    return (np.asarray(high) < line) | (np.asarray(low) > line)


def _note(fit, intervals: bool = True) -> str:
    """"ML, 95% empirical-Bayes (posterior) intervals" and the like (``Results.wording``)."""
    return f"{fit.method}, {fit.wording.group_intervals if intervals else fit.wording.group_points}"


def _group_words(fit_or_design, group_label) -> tuple[str, str]:
    design = getattr(getattr(fit_or_design, "model", None), "design", fit_or_design)
    return style.group_words(design.group_name, group_label)


def caterpillar(fit, quantity: str = "mean", name: str | None = None, *, ax: Axes | None = None,
                group_label=None) -> Figure | Axes:
    """Groups ranked by their ``quantity`` ("mean", "variance" or "icc", at the covariate
    values of ``melsm.model.evaluation``) with their 95% intervals
    (``fit.group_quantities()``), one vertical segment each, and the population average
    (``fit.population_quantities()``) as a dashed line; where groups' level-2 covariates
    make the average for groups like each differ, that average as a tick per group instead.
    A group whose drawn interval excludes its line or tick is marked (dark red diamond,
    thicker segment) and counted in the title; ``group_quantities()``' "differs" column asks instead
    whether the interval of the difference from the average excludes 0 (the same rule for
    ML, nearly so for MCMC). Returns ``ax`` if given, else a new figure."""
    if quantity not in AVERAGE_OF:
        raise MelsmInputError(f"quantity must be one of {', '.join(AVERAGE_OF)}, not {quantity!r}")
    singular, plural = _group_words(fit, group_label)
    groups = fit.group_quantities().sort_values(quantity)
    point, low, high = (groups[c].to_numpy(dtype=float) for c in (quantity, f"{quantity} low", f"{quantity} high"))
    reference = groups[f"{quantity} average"].to_numpy(dtype=float)
    average = float(fit.population_quantities().loc[AVERAGE_OF[quantity], "estimate"])
    # one line when every group's like-average is the population's; else a tick per group
    shared = bool(np.allclose(reference, average, rtol=1e-9, atol=0))
    marked = excludes(low, high, average) if shared else (low > reference) | (high < reference)
    rank = np.arange(1, len(groups) + 1, dtype=float)
    fig, ax = style.axes_for(ax, (7.5, 3.8))
    ax.add_collection(LineCollection([np.array([[r, a], [r, b]]) for r, a, b in zip(rank, low, high, strict=True)],
                                     colors=np.where(marked, HIGHLIGHT, PLAIN), linewidths=np.where(marked, 1.6, 1.0)))
    what = "the average" if shared else f"the average for {plural} like it"
    if shared:
        ax.axhline(average, color=AVERAGE, linewidth=1.2, linestyle="--", label=f"population average {average:.3g}")
    else:
        ax.scatter(rank, reference, color=AVERAGE, marker="_", s=60, zorder=2,
                   label=f"average for {plural} like it (own level-2 covariates)")
    for mask, colour, marker, size, label in (
            (~marked, PLAIN, style.PLAIN_MARKER, 14, f"interval includes {what}"),
            (marked, HIGHLIGHT, style.HIGHLIGHT_MARKER, 20, f"interval excludes {what}")):
        ax.scatter(rank[mask], point[mask], color=colour, marker=marker, s=size, zorder=3, label=label)
    response = fit.model.design.response
    ax.set_ylabel({"mean": f"{response}: {singular} mean", "variance": f"{response}: level-1 variance",
                   "icc": "ICC"}[quantity])
    ax.set_xlabel(f"{singular} rank")
    ax.set_xlim(0, len(groups) + 1)
    style.contain(ax, y=[low, high, point, average if shared else reference])
    style.legend(ax, loc="upper left")  # ranked upwards: the smallest groups' corner
    style.title(ax, f"{plural} ranked by {QUANTITY_LABELS[quantity]}",
                f"{int(marked.sum())} of {len(groups)} {fit.wording.group_intervals} exclude {what}",
                name, fit.method)
    return ax if fig is None else fig


def group_lines_figure(fit, covariate: str, function: str = "mean", name: str | None = None, *,
                       ax: Axes | None = None, group_label=None) -> Figure | Axes:
    """Each group's predicted line of the mean (or level-1 variance) function against
    ``covariate`` (``fit.group_lines``) over the range observed in the group, other
    covariates at 0, one line each; the average line (random effects 0) thick; groups
    whose slope has the opposite sign to the average's dashed dark red, drawn last.
    Returns ``ax`` if given, else a new figure."""
    singular, plural = _group_words(fit, group_label)
    lines = group_lines(fit, covariate, function)
    transform = (lambda eta: eta) if function == "mean" else np.exp
    against = lines["against"].to_numpy(dtype=bool)
    order = np.argsort(against, kind="stable")  # highlighted lines on top
    paths = []
    for row in lines.iloc[order].itertuples():
        x = np.linspace(row.x_min, row.x_max, LINE_POINTS)
        paths.append(np.column_stack([x, transform(row.intercept + row.slope * x)]))
    fig, ax = style.axes_for(ax, (7.5, 4.2))
    marked = against[order]
    ax.add_collection(LineCollection(paths, colors=np.where(marked, HIGHLIGHT, PLAIN),
                                     linewidths=np.where(marked, 1.4, 0.8),
                                     linestyles=[style.HIGHLIGHT_STYLE if m else style.PLAIN_STYLE for m in marked]))
    part = "mean" if function == "mean" else "within"
    estimate = fit.table()["estimate"]
    x = np.linspace(lines.x_min.min(), lines.x_max.max(), LINE_POINTS)
    average = transform(estimate[f"{part}:Intercept"] + estimate[f"{part}:{covariate}"] * x)
    ax.plot(x, average, color=AVERAGE, linewidth=2.5, label="average (random effects 0)")
    handles = [ax.lines[-1], Line2D([], [], color=PLAIN, linewidth=0.8, label=f"a {singular}"),
               Line2D([], [], color=HIGHLIGHT, linewidth=1.4, linestyle=style.HIGHLIGHT_STYLE,
                      label=f"a {singular} against the average trend")]
    style.contain(ax, x=[lines.x_min, lines.x_max], y=[p[:, 1] for p in paths] + [average])
    response = fit.model.design.response
    ax.set_xlabel(f"{covariate} (other covariates at 0)")
    ax.set_ylabel(f"predicted {response}" if function == "mean" else f"predicted level-1 variance of {response}")
    style.legend(ax, handles=handles)
    what = "mean" if function == "mean" else "level-1 variance"
    style.title(ax, f"predicted {singular} lines of the {what} function",
                f"{int(against.sum())} of {len(lines)} {plural} go against the average trend", name,
                _note(fit, intervals=False))
    return ax if fig is None else fig


def observed_figure(fit_or_design, name: str | None = None, *, ax: Axes | None = None,
                    group_label=None) -> Figure | Axes:
    """Observed group means (x) against observed within-group variances (y), one point
    per group with 2 or more observations, the least-squares line dashed, Pearson's r in
    the title. Returns ``ax`` if given, else a new figure."""
    design = getattr(getattr(fit_or_design, "model", None), "design", fit_or_design)
    singular, plural = _group_words(design, group_label)
    observed = observed_groups(design)
    if len(observed) < 3:
        raise MelsmInputError(f"need at least 3 {plural} with 2 or more observations")
    mean, variance = observed["mean"].to_numpy(dtype=float), observed["variance"].to_numpy(dtype=float)
    r = float(np.corrcoef(mean, variance)[0, 1])
    fig, ax = style.axes_for(ax, (5.5, 4.2))
    ax.scatter(mean, variance, s=16, color=AVERAGE, alpha=0.8, label=f"a {singular}")
    slope, intercept = np.polyfit(mean, variance, 1)
    x = np.array([mean.min(), mean.max()])
    ax.plot(x, intercept + slope * x, color=HIGHLIGHT, linewidth=1.2, linestyle="--", label="least-squares line")
    style.contain(ax, x=[mean], y=[variance, intercept + slope * x])
    ax.set_xlabel(f"observed {design.response} mean of a {singular}")
    ax.set_ylabel(f"observed {design.response} variance")
    style.legend(ax)
    style.title(ax, f"observed {singular} means and variances: r = {r:.2f} ({len(observed)} {plural})",
                None, name, None)
    return ax if fig is None else fig


def _population_axes(ax, count: int) -> tuple[Figure | None, list]:
    """(new figure or None, one axes per panel): the caller's ``ax`` — one Axes for one
    panel, or a sequence of ``count`` — or a new row of panels."""
    if ax is None:
        fig = Figure(figsize=(3.0 * count, 3.6), layout="constrained")
        return fig, list(fig.subplots(1, count, squeeze=False)[0])
    return None, style.given_axes(ax, count, "one per quantity (or pass quantities=[...] to draw fewer)")


def _population_panel(ax, key: str, label: str, tables, names, interval: str | None) -> None:
    """One population quantity of every fit: estimate and interval, % change between
    neighbours written above the intervals (in the tick labels' size and dark)."""
    position = np.arange(len(tables))
    est, low, high = (np.array([t.loc[key, c] for t in tables], dtype=float) for c in ("estimate", "low", "high"))
    ax.errorbar(position, est, yerr=[est - low, high - est], fmt="o", color=AVERAGE, capsize=3)
    top = float(np.nanmax(np.concatenate([high, est])))
    for k in range(1, len(tables)):
        change = percent_change(tables[k - 1], tables[k])[key]
        if np.isfinite(change):
            text = "0%" if abs(change) < 0.5 else f"{change:+.0f}%"
            ax.annotate(text, (k - 0.5, 0.97), xycoords=ax.get_xaxis_transform(), ha="center", va="top",
                        fontsize=style.text_size(ax), color=TEXT)
    rotate = len(tables) > 3
    ax.set_xticks(position, names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_xlim(-0.5, len(tables) - 0.5)
    ax.set_ylim(0, top / POPULATION_TOP if top > 0 else 1.0)
    ax.set_title(label, fontsize=style.text_size(ax), color=TEXT)
    if interval:
        ax.set_ylabel(style.wrap(ax, f"estimate and {interval}", style.text_size(ax), vertical=True))


def population_figure(fits, names: list[str] | None = None, *, ax=None, quantities=None,
                      group_label=None) -> Figure | Axes | list:
    """Population-average quantities of several fits side by side, one panel per quantity
    (``quantities``, by default σ²_u, mean and variance of the group variances and the
    average ICC): each fit's estimate with its 95% interval (``fit.population_quantities()``;
    ML: delta method, MCMC: credible), and the % change from each model to the next above
    the intervals. ``ax``: one Axes per quantity (a single Axes for one quantity); returns
    it, else a new figure."""
    fits = list(fits)
    names = list(names) if names is not None else [f"model {k + 1}" for k in range(len(fits))]
    if len(names) != len(fits) or not fits:
        raise MelsmInputError(f"{len(names)} names for {len(fits)} fits")
    quantities = list(POPULATION_PANELS) if quantities is None else [quantities] if isinstance(
        quantities, str) else list(quantities)
    unknown = [q for q in quantities if q not in POPULATION_PANELS]
    if unknown or not quantities:
        raise MelsmInputError(f"quantities must be among {', '.join(POPULATION_PANELS)}, not {unknown or 'none'}")
    singular, _ = _group_words(fits[0], group_label)
    tables = [fit.population_quantities() for fit in fits]
    interval = " / ".join(dict.fromkeys(fit.wording.population_interval for fit in fits))
    method = " / ".join(dict.fromkeys(fit.method for fit in fits))
    fig, axes = _population_axes(ax, len(quantities))
    for k, (panel, key) in enumerate(zip(axes, quantities, strict=True)):
        _population_panel(panel, key, POPULATION_PANELS[key].format(singular), tables, names,
                          interval if k == 0 else None)
    if fig is None:
        return ax
    change = ", % change from the model before" if len(fits) > 1 else ""
    fig.suptitle(f"Population averages{change}\n{method}: estimate and {interval}",
                 fontsize=style.text_size(axes[0]), color=TEXT)
    return fig


class FitPlots:
    """``fit.plot``: the figures of one fit. Each takes ``ax=`` (draw into these axes and
    return them) and ``group_label=`` ("patient" or ("person", "people"))."""

    def __init__(self, fit):
        self._fit = fit

    def caterpillar(self, quantity: str = "mean", name: str | None = None, *, ax=None, group_label=None):
        """Ranked groups with 95% intervals (``melsm.reporting.plots.caterpillar``)."""
        return caterpillar(self._fit, quantity, name, ax=ax, group_label=group_label)

    def group_lines(self, covariate: str, function: str = "mean", name: str | None = None, *, ax=None,
                    group_label=None):
        """Predicted group lines against a covariate (``melsm.reporting.plots.group_lines_figure``)."""
        return group_lines_figure(self._fit, covariate, function, name, ax=ax, group_label=group_label)

    def observed(self, name: str | None = None, *, ax=None, group_label=None):
        """Observed group means against variances (``melsm.reporting.plots.observed_figure``)."""
        return observed_figure(self._fit, name, ax=ax, group_label=group_label)

    def population(self, name: str | None = None, *, ax=None, quantities=None, group_label=None):
        """This fit's population averages with 95% intervals (``melsm.reporting.plots.population_figure``)."""
        return population_figure([self._fit], [name or "this model"], ax=ax, quantities=quantities,
                                 group_label=group_label)


# ---- simulation studies (melsm.studies.study) -------------------------------------------------
MODEL_COLOURS = (HIGHLIGHT, AVERAGE, "#27ae60", "#8e44ad", "#d35400", PLAIN)


def _model_colours(models) -> dict:
    return {m: MODEL_COLOURS[k % len(MODEL_COLOURS)] for k, m in enumerate(models)}


def rejection_figure(summary, parameters, title: str | None = None, *, ax=None) -> Figure | np.ndarray:
    """A study's rejection rate of H0: parameter = 0 (5% Wald test; the Type I error where
    the truth is 0) and SE ratio (mean SE / empirical SD) across its designs, one line per
    fitted model, with ±1.96 Monte Carlo SE bars; one column per parameter. ``ax``: 2 ×
    len(parameters) Axes (rows: rejection, SE ratio), returned as given; else a new figure."""
    parameters = [parameters] if isinstance(parameters, str) else list(parameters)
    missing = [p for p in parameters if p not in set(summary["parameter"])]
    if missing:
        raise MelsmInputError(f"the study's summary has no parameter '{missing[0]}'")
    labels = list(dict.fromkeys(summary.get("label", summary["design"]).astype(str)))
    position = {label: k for k, label in enumerate(labels)}
    colours = _model_colours(dict.fromkeys(summary["model"]))
    fig, axes = None, None
    if ax is None:
        fig = Figure(figsize=(4.2 * len(parameters), 6.2), layout="constrained")
        axes = fig.subplots(2, len(parameters), squeeze=False)
    else:
        axes = np.array(style.given_axes(ax, 2 * len(parameters), "2 rows (rejection, SE ratio) by "
                                         "one column per parameter"), dtype=object).reshape(2, -1)
    for col, parameter in enumerate(parameters):
        rows = summary[summary["parameter"] == parameter]
        top, bottom = axes[0, col], axes[1, col]
        for model, part in rows.groupby("model", sort=False):
            x = part.get("label", part["design"]).astype(str).map(position).to_numpy()
            rate, half = 100 * part["rejection"].to_numpy(float), 196 * part["rejection_mcse"].to_numpy(float)
            top.errorbar(x, rate, yerr=[np.minimum(half, rate), half], marker="o", capsize=3,  # not below 0
                         color=colours[model], label=model)
            bottom.plot(x, part["se_ratio"].to_numpy(float), marker="o", color=colours[model], label=model)
        zero = bool((rows["test"] == "type I").all())
        if zero:
            top.axhline(5, color=PLAIN, linestyle="--", linewidth=1, label="nominal 5%")
        top.set_ylabel("Type I error (%)" if zero else "rejection of H0: 0 (%)")
        top.set_ylim(0, max(10.0, float(np.nanmax(100 * rows["rejection"] + 196 * rows["rejection_mcse"]))) * 1.08)
        top.set_title(f"{parameter}: {'Type I error' if zero else 'power'}, 5% Wald test", fontsize=9, loc="left")
        bottom.axhline(1, color=PLAIN, linestyle="--", linewidth=1)
        bottom.set_ylabel("mean SE / empirical SD")
        bottom.set_ylim(0, max(1.2, float(np.nanmax(rows["se_ratio"])) * 1.1))
        bottom.set_title(f"{parameter}: SE ratio", fontsize=9, loc="left")
        for panel in (top, bottom):
            panel.set_xticks(range(len(labels)), labels, fontsize=8)
            panel.set_xlim(-0.4, len(labels) - 0.6)
        top.legend(fontsize=8, frameon=False)
    if fig is None:
        return ax
    reps = int(summary["n"].max()) if len(summary) else 0
    fig.suptitle(f"{title + ': ' if title else ''}up to {reps} converged replicates per design and model, "
                 "bars ±1.96 Monte Carlo SE", fontsize=10)
    return fig


def coverage_figure(summary, title: str | None = None, level: float = 0.95, *, ax=None) -> Figure | object:
    """Coverage of the 95% CIs of every parameter with a truth, one panel per design, one
    colour per fitted model, ±1.96 Monte Carlo SE bars; the nominal level dashed and
    ±2 points shaded. ``ax``: one Axes per design, returned as given; else a new figure."""
    rows = summary[np.isfinite(summary["coverage"])]
    if rows.empty:
        raise MelsmInputError("no parameter with a truth has a coverage to show")
    labels = list(dict.fromkeys(rows.get("label", rows["design"]).astype(str)))
    parameters = list(dict.fromkeys(rows["parameter"]))
    models = list(dict.fromkeys(rows["model"]))
    colours = _model_colours(models)
    columns = min(len(labels), 3)
    if ax is None:
        fig = Figure(figsize=(max(7.0, 4.6 * columns), 0.32 * len(parameters) * -(-len(labels) // columns) + 1.6),
                     layout="constrained")
        axes = np.atleast_1d(fig.subplots(-(-len(labels) // columns), columns, squeeze=False).ravel())
    else:
        fig, axes = None, style.given_axes(ax, len(labels), "one per design")
    for panel, label in zip(axes, labels, strict=False):
        here = rows[rows.get("label", rows["design"]).astype(str) == label]
        panel.axvspan(100 * level - 2, 100 * level + 2, color=PLAIN, alpha=0.15, linewidth=0)
        panel.axvline(100 * level, color=PLAIN, linestyle="--", linewidth=1)
        for k, model in enumerate(models):
            part = here[here["model"] == model]
            y = part["parameter"].map({p: i for i, p in enumerate(parameters)}).to_numpy()
            offset = (k - (len(models) - 1) / 2) * 0.18
            panel.errorbar(100 * part["coverage"].to_numpy(float), y + offset,
                           xerr=196 * part["coverage_mcse"].to_numpy(float), fmt="o",
                           markersize=4, capsize=2, color=colours[model], label=model)
        panel.set_yticks(range(len(parameters)), parameters, fontsize=7)
        panel.invert_yaxis()
        panel.set_xlabel("coverage of 95% CIs (%)")
        panel.set_title(label, fontsize=9, loc="left")
        if len(models) > 1:
            panel.legend(fontsize=7, frameon=False)
    for unused in axes[len(labels):]:
        unused.set_visible(False)
    if fig is None:
        return ax
    reps = int(rows["n"].max())
    fig.suptitle(f"{title + ': ' if title else ''}95% CI coverage, up to {reps} converged replicates\n"
                 "bars ±1.96 Monte Carlo SE, nominal ± 2 points shaded", fontsize=10)
    return fig
