"""Figures of group and population quantities (matplotlib), from any fit.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so nothing
depends on a display or a global state: save it with ``fig.savefig("f.png")`` or show it
in a notebook. Figures ask the fit only through the results contract
(``melsm.results.base``): ML figures show empirical-Bayes 95% intervals, MCMC figures 95%
posterior intervals (``melsm.results.groups`` has the formulas). ``FitPlots`` is ``fit.plot``
(registered by ``melsm/__init__.py`` with ``melsm.results.base.register_accessor``, so that
matplotlib is imported on first use). See docs/architecture.md, 'Results'.
"""

from __future__ import annotations

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from melsm.errors import MelsmInputError
from melsm.results.groups import AVERAGE_OF, group_lines, observed_groups, percent_change

HIGHLIGHT = "#c0392b"
PLAIN = "#7f8c8d"
AVERAGE = "#1f3a93"
QUANTITY_LABELS = {"mean": "mean", "variance": "level-1 variance", "icc": "ICC"}
POPULATION_PANELS = (("between_variance", r"Between-group variance $\sigma^2_u$"),
                     ("variance_mean", "Mean of group variances"),
                     ("variance_variance", "Variance of group variances"),
                     ("icc", "Average ICC"))
LINE_POINTS = 40


def _method(fit, intervals: bool = True) -> str:
    """"ML, empirical-Bayes 95% intervals" and the like (``Results.wording``)."""
    return f"{fit.method}, {fit.wording.group_intervals if intervals else fit.wording.group_points}"


def _group_word(fit, plural: bool = True) -> str:
    name = fit.model.design.group_name or "group"
    return f"{name}s" if plural else name


def _title(ax, what: str, finding: str, name: str | None, fit, intervals: bool = True) -> None:
    """Two lines: what the figure shows (and of which model); the finding and the method."""
    head = f"{name}: " if name else ""
    ax.set_title(f"{head}{what}\n{finding} ({_method(fit, intervals)})", fontsize=10, loc="left")


def caterpillar(fit, quantity: str = "mean", name: str | None = None) -> Figure:
    """Groups ranked by their ``quantity`` ("mean", "variance" or "icc") with 95%
    intervals; the population average as a line; groups whose interval of the difference
    from the average excludes 0 in red, their count in the title."""
    if quantity not in AVERAGE_OF:
        raise MelsmInputError(f"quantity must be one of {', '.join(AVERAGE_OF)}, not {quantity!r}")
    groups = fit.group_quantities().sort_values(quantity)
    average = float(fit.population_quantities().loc[AVERAGE_OF[quantity], "estimate"])
    differs = groups[f"{quantity} differs"].to_numpy()
    rank = np.arange(1, len(groups) + 1)
    colours = np.where(differs, HIGHLIGHT, PLAIN)
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.vlines(rank, groups[f"{quantity} low"], groups[f"{quantity} high"], colors=colours, linewidth=1.2)
    ax.scatter(rank, groups[quantity], c=colours, s=12, zorder=3)
    where = " (between covariates 0)" if fit.model.layout.g_names and quantity != "mean" else ""
    ax.axhline(average, color=AVERAGE, linewidth=1, linestyle="--", label=f"population average{where} {average:.3g}")
    ax.scatter([], [], c=HIGHLIGHT, s=12, label=f"differs: {fit.wording.differs}")
    response = fit.model.design.response
    label = {"mean": f"{response}: group mean", "variance": f"{response}: level-1 variance",
             "icc": "ICC"}[quantity]
    ax.set_ylabel(label)
    ax.set_xlabel(f"{_group_word(fit, False)} rank")
    ax.set_xlim(0, len(groups) + 1)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    word = _group_word(fit)
    _title(ax, f"{word} ranked by {QUANTITY_LABELS[quantity]}",
           f"{int(differs.sum())} of {len(groups)} differ significantly from the average", name, fit)
    return fig


def group_lines_figure(fit, covariate: str, function: str = "mean", name: str | None = None) -> Figure:
    """Each group's predicted line of the mean (or level-1 variance) function against
    ``covariate`` over the range observed in the group, other covariates at 0; the
    average line thick; groups whose slope has the opposite sign to it in red."""
    lines = group_lines(fit, covariate, function)
    transform = (lambda eta: eta) if function == "mean" else np.exp
    paths, colours = [], []
    for row in lines.itertuples():
        x = np.linspace(row.x_min, row.x_max, LINE_POINTS)
        paths.append(np.column_stack([x, transform(row.intercept + row.slope * x)]))
        colours.append(HIGHLIGHT if row.against else PLAIN)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    order = np.argsort(lines["against"].to_numpy(), kind="stable")  # highlighted lines on top
    ax.add_collection(LineCollection([paths[k] for k in order], colors=[colours[k] for k in order],
                                     linewidths=[1.4 if colours[k] == HIGHLIGHT else 0.8 for k in order]))
    part = "mean" if function == "mean" else "within"
    estimate = fit.table()["estimate"]
    x = np.linspace(lines.x_min.min(), lines.x_max.max(), LINE_POINTS)
    average = transform(estimate[f"{part}:Intercept"] + estimate[f"{part}:{covariate}"] * x)
    ax.plot(x, average, color=AVERAGE, linewidth=2.5, label="average (random effects 0)")
    ax.autoscale_view()
    response = fit.model.design.response
    ax.set_xlabel(f"{covariate} (other covariates at 0)")
    ax.set_ylabel(f"predicted {response}" if function == "mean" else f"predicted level-1 variance of {response}")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    against = int(lines["against"].sum())
    what = "mean" if function == "mean" else "level-1 variance"
    _title(ax, f"predicted {_group_word(fit, False)} lines of the {what} function",
           f"{against} of {len(lines)} go against the average trend", name, fit, intervals=False)
    return fig


def observed_figure(fit_or_design, name: str | None = None) -> Figure:
    """Observed group means against observed within-group variances, with Pearson's r."""
    design = getattr(getattr(fit_or_design, "model", None), "design", fit_or_design)
    observed = observed_groups(design)
    if len(observed) < 3:
        raise MelsmInputError("need at least 3 groups with 2 or more observations")
    r = float(np.corrcoef(observed["mean"], observed["variance"])[0, 1])
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.scatter(observed["mean"], observed["variance"], s=16, color=AVERAGE, alpha=0.8)
    slope, intercept = np.polyfit(observed["mean"], observed["variance"], 1)
    x = np.array([observed["mean"].min(), observed["mean"].max()])
    ax.plot(x, intercept + slope * x, color=HIGHLIGHT, linewidth=1, label="least-squares line")
    word = f"{design.group_name or 'group'}s"
    ax.set_xlabel(f"observed {design.response} mean")
    ax.set_ylabel(f"observed {design.response} variance")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    head = f"{name}: " if name else ""
    ax.set_title(f"{head}Observed {word}: r = {r:.2f} ({len(observed)} {word})", fontsize=10, loc="left")
    return fig


def population_figure(fits, names: list[str] | None = None) -> Figure:
    """Population-average quantities of several fits side by side (estimate and 95%
    interval), with the % change from each model to the next."""
    fits = list(fits)
    names = list(names) if names is not None else [f"model {k + 1}" for k in range(len(fits))]
    if len(names) != len(fits) or not fits:
        raise MelsmInputError(f"{len(names)} names for {len(fits)} fits")
    tables = [fit.population_quantities() for fit in fits]
    fig = Figure(figsize=(3.0 * len(POPULATION_PANELS), 3.6), layout="constrained")
    axes = fig.subplots(1, len(POPULATION_PANELS))
    position = np.arange(len(fits))
    for ax, (key, label) in zip(axes, POPULATION_PANELS, strict=True):
        est = np.array([t.loc[key, "estimate"] for t in tables])
        low = np.array([t.loc[key, "low"] for t in tables])
        high = np.array([t.loc[key, "high"] for t in tables])
        ax.errorbar(position, est, yerr=[est - low, high - est], fmt="o", color=AVERAGE, capsize=3)
        top = np.nanmax(high)
        for k in range(1, len(fits)):
            change = percent_change(tables[k - 1], tables[k])[key]
            if np.isfinite(change):
                text = "0%" if abs(change) < 0.5 else f"{change:+.0f}%"
                ax.annotate(text, ((k - 0.5), top * 1.04), ha="center", fontsize=8, color=HIGHLIGHT)
        ax.set_xticks(position, names, rotation=30 if len(fits) > 3 else 0, ha="right" if len(fits) > 3 else "center",
                      fontsize=8)
        ax.set_xlim(-0.5, len(fits) - 0.5)
        ax.set_ylim(0, top * 1.15)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"Population averages, % change from the model before ({_method(fits[0])})", fontsize=10)
    return fig


class FitPlots:
    """``fit.plot``: the figures of one fit (each returns a matplotlib Figure)."""

    def __init__(self, fit):
        self._fit = fit

    def caterpillar(self, quantity: str = "mean", name: str | None = None) -> Figure:
        """Ranked groups with 95% intervals (``melsm.reporting.plots.caterpillar``)."""
        return caterpillar(self._fit, quantity, name)

    def group_lines(self, covariate: str, function: str = "mean", name: str | None = None) -> Figure:
        """Predicted group lines against a covariate (``melsm.reporting.plots.group_lines_figure``)."""
        return group_lines_figure(self._fit, covariate, function, name)

    def observed(self, name: str | None = None) -> Figure:
        """Observed group means against variances (``melsm.reporting.plots.observed_figure``)."""
        return observed_figure(self._fit, name)


# ---- simulation studies (melsm.studies.study) -------------------------------------------------
MODEL_COLOURS = (HIGHLIGHT, AVERAGE, "#27ae60", "#8e44ad", "#d35400", PLAIN)


def _model_colours(models) -> dict:
    return {m: MODEL_COLOURS[k % len(MODEL_COLOURS)] for k, m in enumerate(models)}


def rejection_figure(summary, parameters, title: str | None = None) -> Figure:
    """A study's rejection rate of H0: parameter = 0 (5% Wald test; the Type I error where
    the truth is 0) and SE ratio (mean SE / empirical SD) across its designs, one line per
    fitted model, with ±1.96 Monte Carlo SE bars; one column per parameter."""
    parameters = [parameters] if isinstance(parameters, str) else list(parameters)
    missing = [p for p in parameters if p not in set(summary["parameter"])]
    if missing:
        raise MelsmInputError(f"the study's summary has no parameter '{missing[0]}'")
    labels = list(dict.fromkeys(summary.get("label", summary["design"]).astype(str)))
    position = {label: k for k, label in enumerate(labels)}
    colours = _model_colours(dict.fromkeys(summary["model"]))
    fig = Figure(figsize=(4.2 * len(parameters), 6.2), layout="constrained")
    axes = fig.subplots(2, len(parameters), squeeze=False)
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
        for ax in (top, bottom):
            ax.set_xticks(range(len(labels)), labels, fontsize=8)
            ax.set_xlim(-0.4, len(labels) - 0.6)
        top.legend(fontsize=8, frameon=False)
    reps = int(summary["n"].max()) if len(summary) else 0
    fig.suptitle(f"{title + ': ' if title else ''}up to {reps} converged replicates per design and model, "
                 "bars ±1.96 Monte Carlo SE", fontsize=10)
    return fig


def coverage_figure(summary, title: str | None = None, level: float = 0.95) -> Figure:
    """Coverage of the 95% CIs of every parameter with a truth, one panel per design, one
    colour per fitted model, ±1.96 Monte Carlo SE bars; the nominal level dashed and
    ±2 points shaded."""
    rows = summary[np.isfinite(summary["coverage"])]
    if rows.empty:
        raise MelsmInputError("no parameter with a truth has a coverage to show")
    labels = list(dict.fromkeys(rows.get("label", rows["design"]).astype(str)))
    parameters = list(dict.fromkeys(rows["parameter"]))
    models = list(dict.fromkeys(rows["model"]))
    colours = _model_colours(models)
    columns = min(len(labels), 3)
    fig = Figure(figsize=(max(7.0, 4.6 * columns), 0.32 * len(parameters) * -(-len(labels) // columns) + 1.6),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(-(-len(labels) // columns), columns, squeeze=False).ravel())
    for ax, label in zip(axes, labels, strict=False):
        here = rows[rows.get("label", rows["design"]).astype(str) == label]
        ax.axvspan(100 * level - 2, 100 * level + 2, color=PLAIN, alpha=0.15, linewidth=0)
        ax.axvline(100 * level, color=PLAIN, linestyle="--", linewidth=1)
        for k, model in enumerate(models):
            part = here[here["model"] == model]
            y = part["parameter"].map({p: i for i, p in enumerate(parameters)}).to_numpy()
            offset = (k - (len(models) - 1) / 2) * 0.18
            ax.errorbar(100 * part["coverage"].to_numpy(float), y + offset,
                        xerr=196 * part["coverage_mcse"].to_numpy(float), fmt="o",
                        markersize=4, capsize=2, color=colours[model], label=model)
        ax.set_yticks(range(len(parameters)), parameters, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("coverage of 95% CIs (%)")
        ax.set_title(label, fontsize=9, loc="left")
        if len(models) > 1:
            ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    reps = int(rows["n"].max())
    fig.suptitle(f"{title + ': ' if title else ''}95% CI coverage, up to {reps} converged replicates\n"
                 "bars ±1.96 Monte Carlo SE, nominal ± 2 points shaded", fontsize=10)
    return fig
