"""The figures (``melsm.reporting.plots``) draw what their data say: one interval, line or
point per group at the numbers of ``fit.group_quantities()``, ``fit.group_lines()``,
``observed_groups`` and ``fit.population_quantities()`` (to 1e-12); a group is marked
exactly when the interval drawn excludes the line drawn; every drawn element lies inside
the axes; annotations are as large as the tick labels and dark; ``ax=`` draws into the
caller's axes and returns them; ``group_label=`` names the groups; the interval wording is
the fit's (ML: empirical-Bayes for groups, delta method for the population; MCMC:
credible). Riesby data: two small ML fits and one short MCMC run."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgb, to_rgba
from matplotlib.figure import Figure

import melsm
from melsm.reporting import figure_style, plots
from melsm.results.groups import AVERAGE_OF, observed_groups, percent_change

SLOPES = ("hamdep ~ week + endog + endweek + (week | id)", "~ week + endog + (1 | id)")
INTERCEPTS = ("hamdep ~ week + endog + endweek + (1 | id)", "~ week + endog + (1 | id)")
N_PATIENTS = 66
TOL = dict(rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def fits(reisby):
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        ml = melsm.Model(SLOPES[0], within=SLOPES[1], data=reisby).fit()
        ml_intercepts = melsm.Model(INTERCEPTS[0], within=INTERCEPTS[1], data=reisby).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)  # short chains
        mcmc = melsm.Model(INTERCEPTS[0], within=INTERCEPTS[1], data=reisby).sample(
            chains=4, warmup=200, draws=200, seed=3, progress=False)
    return {"ml": ml, "ml_intercepts": ml_intercepts, "mcmc": mcmc}


def _text(text: str) -> str:
    return " ".join(text.split())  # titles are wrapped to the axes' width


def _drawn(fig) -> None:
    FigureCanvasAgg(fig).draw()


def _inside(ax, display: np.ndarray, what) -> None:
    box = ax.get_window_extent()
    display = np.asarray(display, dtype=float).reshape(-1, 2)
    display = display[np.isfinite(display).all(axis=1)]
    assert (display[:, 0] >= box.x0 - 0.5).all() and (display[:, 0] <= box.x1 + 0.5).all(), what
    assert (display[:, 1] >= box.y0 - 0.5).all() and (display[:, 1] <= box.y1 + 0.5).all(), what


def assert_all_inside(ax) -> None:
    """Every line, segment, marker and annotation of ``ax`` lies inside its axes box."""
    _drawn(ax.get_figure(root=True))
    renderer = ax.get_figure(root=True).canvas.get_renderer()
    for line in ax.lines:
        _inside(ax, line.get_transform().transform(line.get_xydata()), line)
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            for segment in collection.get_segments():
                _inside(ax, collection.get_transform().transform(segment), collection)
        elif len(collection.get_offsets()):
            _inside(ax, collection.get_offset_transform().transform(collection.get_offsets()), collection)
    for text in ax.texts:
        extent = text.get_window_extent(renderer)
        _inside(ax, [[extent.x0, extent.y0], [extent.x1, extent.y1]], text)


def assert_readable(ax) -> None:
    """Annotations at least as large as the tick labels, in a dark colour."""
    tick = max(t.get_fontsize() for t in ax.get_yticklabels() + ax.get_xticklabels())
    for text in ax.texts + ax.get_legend().get_texts() if ax.get_legend() else ax.texts:
        assert text.get_fontsize() >= tick, text
        assert max(to_rgb(text.get_color())) < 0.3, text


def _grey(colour) -> float:
    r, g, b = to_rgb(colour)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _title_count(ax) -> int:
    return int(re.search(r"\n(\d+) of", ax.get_title("left")).group(1))


def _segments(ax) -> LineCollection:
    found = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(found) == 1
    return found[0]


# ---- caterpillar ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ml", "mcmc"])
@pytest.mark.parametrize("quantity", ["mean", "variance", "icc"])
def test_caterpillar_draws_the_group_quantities(fits, method, quantity):
    fit = fits[method]
    ax = fit.plot.caterpillar(quantity).axes[0]
    g = fit.group_quantities().sort_values(quantity)
    low, high = g[f"{quantity} low"].to_numpy(), g[f"{quantity} high"].to_numpy()
    segments = _segments(ax)
    assert len(segments.get_segments()) == fit.n_groups == N_PATIENTS
    ends = np.array([s[:, 1] for s in segments.get_segments()])
    np.testing.assert_allclose(ends, np.column_stack([low, high]), **TOL)
    np.testing.assert_allclose([s[:, 0] for s in segments.get_segments()],
                               np.repeat(np.arange(1, N_PATIENTS + 1)[:, None], 2, axis=1), **TOL)
    average = fit.population_quantities().loc[AVERAGE_OF[quantity], "estimate"]
    reference = g[f"{quantity} average"].to_numpy()
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    if np.allclose(reference, average, rtol=1e-9, atol=0):  # one line for every group
        assert ax.lines[0].get_ydata()[0] == average
        reference = np.full(N_PATIENTS, average)
    else:  # endog is level-2: each patient's average for patients like it, a tick each
        ticks = points.pop(0)
        np.testing.assert_allclose(ticks.get_offsets(), np.column_stack([np.arange(1, N_PATIENTS + 1), reference]),
                                   **TOL)
    # marked iff the drawn interval excludes the drawn line or tick: segment colour, marker, count
    marked = (high < reference) | (low > reference)
    colours = segments.get_colors()
    np.testing.assert_array_equal(colours, [to_rgba(figure_style.HIGHLIGHT if m else figure_style.PLAIN)
                                            for m in marked])
    plain, highlighted = points
    np.testing.assert_allclose(highlighted.get_offsets(), np.column_stack(
        [np.flatnonzero(marked) + 1, g[quantity].to_numpy()[marked]]), **TOL)
    assert len(plain.get_offsets()) == N_PATIENTS - marked.sum()
    assert _title_count(ax) == marked.sum()
    # limits hold every interval end and the references
    bottom, top = ax.get_ylim()
    assert bottom <= min(low.min(), reference.min()) and top >= max(high.max(), reference.max())
    assert_all_inside(ax)
    assert_readable(ax)


def test_mcmc_marks_by_the_interval_drawn(fits):
    """The old figure marked MCMC groups by the interval of the difference from the average
    (``group_quantities()``' "differs") while drawing the group's own interval, so marked
    points had intervals crossing the line and plain ones intervals clear of it."""
    fit = fits["mcmc"]
    g = fit.group_quantities()
    drawn = (g["mean high"] < g["mean average"]) | (g["mean low"] > g["mean average"])
    assert (drawn != g["mean differs"]).any()  # the two rules disagree on this fit
    ax = fit.plot.caterpillar("mean").axes[0]
    assert _title_count(ax) == drawn.sum()


def test_grey_print_tells_marked_from_plain():
    """Marked groups differ from plain ones in grey level, marker and line style."""
    assert abs(_grey(figure_style.HIGHLIGHT) - _grey(figure_style.PLAIN)) > 0.25
    assert figure_style.HIGHLIGHT_MARKER != figure_style.PLAIN_MARKER
    assert figure_style.HIGHLIGHT_STYLE != figure_style.PLAIN_STYLE
    assert _grey(figure_style.AVERAGE) < 0.3 and _grey(figure_style.TEXT) < 0.3


# ---- group lines -------------------------------------------------------------------------------
@pytest.mark.parametrize("function", ["mean", "variance"])
def test_group_lines_draw_each_groups_line(fits, function):
    fit = fits["ml"]
    ax = fit.plot.group_lines("week", function).axes[0]
    lines = fit.group_lines("week", function)
    collection = _segments(ax)
    paths = collection.get_segments()
    assert len(paths) == N_PATIENTS
    order = np.argsort(lines["against"].to_numpy(), kind="stable")  # marked lines drawn last
    link = (lambda eta: eta) if function == "mean" else np.exp
    first = np.array([p[0] for p in paths])
    last = np.array([p[-1] for p in paths])
    rows = lines.iloc[order]
    np.testing.assert_allclose(first[:, 0], rows.x_min, **TOL)
    np.testing.assert_allclose(last[:, 0], rows.x_max, **TOL)
    np.testing.assert_allclose(first[:, 1], link(rows.intercept + rows.slope * rows.x_min), rtol=1e-12)
    np.testing.assert_allclose(last[:, 1], link(rows.intercept + rows.slope * rows.x_max), rtol=1e-12)
    against = rows["against"].to_numpy()
    np.testing.assert_array_equal(collection.get_colors(), [to_rgba(figure_style.HIGHLIGHT if a else figure_style.PLAIN)
                                                            for a in against])
    styles = collection.get_linestyles()
    assert all((styles[k][1] is not None) == a for k, a in enumerate(against))  # dashed iff against
    assert _title_count(ax) == against.sum()
    assert_all_inside(ax)
    assert_readable(ax)


# ---- observed means and variances -----------------------------------------------------------
def test_observed_figure_draws_each_group(fits):
    fit = fits["ml"]
    ax = fit.plot.observed().axes[0]
    observed = observed_groups(fit.model.design)
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0]
    np.testing.assert_allclose(points.get_offsets(), observed[["mean", "variance"]].to_numpy(), **TOL)
    r = np.corrcoef(observed["mean"], observed["variance"])[0, 1]
    assert f"r = {r:.2f} ({N_PATIENTS} groups)" in _text(ax.get_title("left"))
    assert ax.lines[0].get_linestyle() == "--"
    assert_all_inside(ax)
    assert_readable(ax)


# ---- population averages --------------------------------------------------------------------
def test_population_figure_draws_the_population_quantities(fits):
    pair = [fits["ml_intercepts"], fits["ml"]]
    fig = plots.population_figure(pair, ["intercepts", "slopes"])
    tables = [f.population_quantities() for f in pair]
    for ax, key in zip(fig.axes, plots.POPULATION_PANELS, strict=True):
        container = ax.containers[0]
        np.testing.assert_allclose(container.lines[0].get_ydata(), [t.loc[key, "estimate"] for t in tables], **TOL)
        bars = np.array([s[:, 1] for s in container.lines[2][0].get_segments()])
        np.testing.assert_allclose(bars, [[t.loc[key, "low"], t.loc[key, "high"]] for t in tables], rtol=1e-12)
        change = percent_change(*tables)[key]
        assert [t.get_text() for t in ax.texts] == ["0%" if abs(change) < 0.5 else f"{change:+.0f}%"]
        assert ax.get_ylim()[0] <= 0 and ax.get_ylim()[1] >= max(t.loc[key, "high"] for t in tables)
        assert_all_inside(ax)
        assert_readable(ax)


# ---- the caller's axes and group names ----------------------------------------------------------
def test_figures_draw_into_the_callers_axes(fits):
    fit = fits["ml"]
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 3)
    assert fit.plot.caterpillar("mean", ax=axes[0, 1]) is axes[0, 1]
    assert fit.plot.group_lines("week", "mean", ax=axes[1, 0]) is axes[1, 0]
    assert fit.plot.observed(ax=axes[1, 2]) is axes[1, 2]
    assert plots.population_figure([fit], ax=axes[0, 2], quantities="icc") is axes[0, 2]
    pair = [axes[0, 0], axes[1, 1]]
    assert fit.plot.population(ax=pair, quantities=["variance_mean", "icc"]) is pair
    assert len(fig.axes) == 6  # nothing added
    assert len(_segments(axes[0, 1]).get_segments()) == N_PATIENTS
    assert len(_segments(axes[1, 0]).get_segments()) == N_PATIENTS
    assert [a.get_title() for a in pair] == ["Mean of group variances", "Average ICC"]
    for ax in axes.ravel():
        assert ax.has_data()
        assert_all_inside(ax)
    with pytest.raises(melsm.MelsmInputError, match="4 matplotlib Axes"):
        plots.population_figure([fit], ax=axes[0, 0])
    with pytest.raises(melsm.MelsmInputError, match="must be a matplotlib Axes"):
        fit.plot.caterpillar(ax=fig)
    assert isinstance(fit.plot.caterpillar(), Figure) and isinstance(axes[0, 0], Axes)


def test_group_label_names_the_groups(fits):
    fit = fits["ml"]
    ax = fit.plot.caterpillar("variance", name="Slopes", group_label="patient").axes[0]
    assert _text(ax.get_title("left")).startswith("Slopes: patients ranked by level-1 variance")
    assert ax.get_xlabel() == "patient rank"
    ax = fit.plot.group_lines("week", group_label=("person", "people")).axes[0]
    assert "Predicted person lines" in _text(ax.get_title("left")) and "of 66 people go against" in _text(
        ax.get_title("left"))
    assert "Patients ranked by mean" in _text(fit.plot.caterpillar(group_label="patient").axes[0].get_title("left"))
    assert "Between-patient variance" in fit.plot.population(group_label="patient").axes[0].get_title()
    # the Riesby group column is "id": the figures say "group", not "ids"
    default = _text(fit.plot.caterpillar().axes[0].get_title("left"))
    assert default.startswith("Groups ranked by mean") and "ids" not in default
    with pytest.raises(melsm.MelsmInputError, match="group_label"):
        fit.plot.caterpillar(group_label=("patient",))


@pytest.mark.parametrize(("column", "words"), [
    ("school", ("school", "schools")), ("School", ("school", "schools")), ("school_id", ("school", "schools")),
    ("schoolID", ("school", "schools")), ("id", ("group", "groups")), ("ID", ("group", "groups")),
    (None, ("group", "groups")), ("g1", ("group", "groups")), ("county", ("county", "counties")),
    ("classes", ("class", "classes")), ("patients", ("patient", "patients")), ("class", ("class", "classes")),
    ("child", ("child", "children")), ("LEA", ("LEA", "LEAs")), ("day", ("day", "days")),
    ("school_district", ("school district", "school districts")), ("box", ("box", "boxes")),
])
def test_default_group_words(column, words):
    assert figure_style.group_words(column) == words


def test_explicit_group_words():
    assert figure_style.group_words("id", "patient") == ("patient", "patients")
    assert figure_style.group_words("id", ("person", "people")) == ("person", "people")
    assert figure_style.group_words("id", "child") == ("child", "children")
    for bad in ("", ("a", ""), ("a", "b", "c"), 3):
        with pytest.raises(melsm.MelsmInputError):
            figure_style.group_words("id", bad)


# ---- wording per method -----------------------------------------------------------------------
def test_interval_wording_comes_from_the_fit(fits):
    ml, mcmc = fits["ml"], fits["mcmc"]
    assert ml.wording.group_intervals == "95% empirical-Bayes (posterior) intervals"
    assert ml.wording.population_interval == "95% CI (delta method)"
    assert mcmc.wording.group_intervals == "95% credible intervals"
    assert mcmc.wording.population_interval == "95% credible interval"
    for fit in (ml, mcmc):
        title = _text(fit.plot.caterpillar("icc").axes[0].get_title("left"))
        assert f"{fit.wording.group_intervals} exclude the average for groups like it ({fit.method})" in title
        fig = fit.plot.population()
        texts = _text(fig.get_suptitle()) + " " + _text(fig.axes[0].get_ylabel())
        assert texts.count(fit.wording.population_interval) == 2
        other = mcmc if fit is ml else ml
        assert other.wording.population_interval not in texts and "empirical-Bayes" not in texts
    mixed = plots.population_figure([ml, mcmc], ["ML", "MCMC"])
    assert "ML / MCMC: estimate and 95% CI (delta method) / 95% credible interval" in _text(mixed.get_suptitle())


# ---- simulation-study figures ----------------------------------------------------------------
def test_study_figures_draw_into_the_callers_axes():
    summary = pd.DataFrame({
        "design": np.repeat(["d1", "d2"], 4), "model": np.tile(["A", "A", "B", "B"], 2),
        "parameter": np.tile(["beta", "sigma"], 4), "test": "type I", "n": 100,
        "rejection": [0.05, 0.06, 0.04, 0.07, 0.05, 0.05, 0.06, 0.04],
        "rejection_mcse": 0.02, "se_ratio": [1.0, 0.9, 1.1, 0.95, 1.0, 1.02, 0.98, 0.9],
        "coverage": [0.95, 0.94, 0.96, 0.93, 0.95, 0.95, 0.94, 0.96], "coverage_mcse": 0.02})
    fig = Figure()
    grid = fig.subplots(2, 2)
    assert plots.rejection_figure(summary, ["beta", "sigma"], ax=grid) is grid
    for ax, (x, y) in zip(grid.ravel(), [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        assert ax.has_data(), (x, y)
    assert grid[1, 0].get_ylabel() == "mean SE / empirical SD"
    pair = list(Figure().subplots(1, 2))
    assert plots.coverage_figure(summary, ax=pair) is pair
    assert [a.get_title("left") for a in pair] == ["d1", "d2"]
    with pytest.raises(melsm.MelsmInputError, match="ax must be 2 matplotlib Axes, one per design"):
        plots.coverage_figure(summary, ax=pair[:1])
    assert isinstance(plots.rejection_figure(summary, "beta"), Figure)
