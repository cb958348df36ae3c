"""Comparison tables, group quantities, figures, findings and the HTML report, built from
real fits of the London schools data and checked against the fits, closed forms, Monte
Carlo and the published analysis (Leckie 2014)."""

import base64
import html as html_module
import io
import re
import warnings

import numpy as np
import pytest
from conftest import reference
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.image import imread

import melsm
from melsm.demo import LONDON_MODELS
from melsm.reporting import plots
from melsm.reporting.findings import findings
from melsm.reporting.report import figure_png
from melsm.results import groups

FINDINGS = reference("leckie2014_london.json")["findings"]
N_SCHOOLS = 65
NAMES = list(LONDON_MODELS)


@pytest.fixture(scope="module")
def ml_fits(tutorial):
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        return [melsm.Model(mean, within=within, data=tutorial).fit() for mean, within in LONDON_MODELS.values()]


@pytest.fixture(scope="module")
def mcmc_fits(tutorial, ml_fits):
    """Models 2, 3 and 6 by MCMC (short runs: the checks here are of bookkeeping)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        return {k: melsm.Model(*LONDON_MODELS[f"Model {k}"], data=tutorial).sample(
            chains=4, warmup=300, draws=300, seed=3, start=ml_fits[k - 1], progress=False) for k in (2, 3, 6)}


# ---- comparison tables ------------------------------------------------------------------
def test_table_models_1_2_has_the_seed_layout(ml_fits):
    comparison = melsm.compare(*ml_fits[:2], names=NAMES[:2], scale="variance")
    table = comparison.table
    assert list(table.index) == [
        ("Mean function", "Intercept"), ("Mean function", "Var(Intercept)"),
        ("Level-1 variance function (log variance)", "Intercept"),
        ("Level-1 variance function (log variance)", "Var(Intercept)"),
        ("Cross-function", "Cov(mean Intercept, variance Intercept)"),
        ("Model fit", "Log-likelihood"), ("Model fit", "Parameters"), ("Model fit", "AIC"), ("Model fit", "BIC")]
    assert list(table.columns) == [("Model 1", "Est."), ("Model 1", "SE"), ("Model 2", "Est."), ("Model 2", "SE")]
    assert np.isnan(table.loc[("Cross-function", "Cov(mean Intercept, variance Intercept)"), ("Model 1", "Est.")])
    # the LR test in a table of its own, with its p-value in a column of its own
    assert list(comparison.lrtests.columns) == ["restricted", "full", "statistic", "df", "distribution", "p", "note"]
    assert list(melsm.compare(*ml_fits[:2], names=NAMES[:2]).table.index)[1] == ("Mean function", "SD(Intercept)")


def test_table_holds_the_ml_numbers(ml_fits):
    comparison = melsm.compare(*ml_fits, names=NAMES, scale="variance")
    table, fit6 = comparison.table, ml_fits[5]
    p = fit6.table()
    column = ("Model 6", "Est."), ("Model 6", "SE")
    mean, within = "Mean function", "Level-1 variance function (log variance)"
    assert table.loc[(mean, "standlrt"), column[0]] == p.loc["mean:standlrt", "estimate"]
    assert table.loc[(within, "girl"), column[1]] == p.loc["within:girl", "std_error"]
    sd, se = p.loc["sd:within:standlrt", ["estimate", "std_error"]]
    assert table.loc[(within, "Var(standlrt)"), column[0]] == pytest.approx(sd ** 2)
    assert table.loc[(within, "Var(standlrt)"), column[1]] == pytest.approx(2 * sd * se)
    # a covariance ρσ_aσ_b with its delta-method SE
    rho, sd_a, sd_b = (p.loc[n, "estimate"] for n in ("corr:mean:standlrt,within:Intercept", "sd:mean:standlrt",
                                                        "sd:within:Intercept"))
    cov = table.loc[("Cross-function", "Cov(mean standlrt, variance Intercept)"), list(column)]
    assert cov.iloc[0] == pytest.approx(rho * sd_a * sd_b)
    names = ["corr:mean:standlrt,within:Intercept", "sd:mean:standlrt", "sd:within:Intercept"]
    gradient = np.array([sd_a * sd_b, rho * sd_b, rho * sd_a])
    assert cov.iloc[1] == pytest.approx(np.sqrt(gradient @ fit6.cov_params().loc[names, names].to_numpy() @ gradient),
                                        rel=1e-6)
    assert table.loc[("Model fit", "Log-likelihood"), column[0]] == fit6.loglik
    assert table.loc[("Model fit", "Parameters"), column[0]] == 16
    test = ml_fits[4].lrtest(fit6)
    row = comparison.lrtests.set_index("full").loc["Model 6"]
    assert (row.restricted, row.statistic, row.p) == ("Model 5", test.statistic, test.p_value)
    assert list(comparison.lrtests.full) == NAMES[1:]  # every step of Models 1-6 is nested
    sds = melsm.compare(*ml_fits, names=NAMES).table  # SDs and correlations by default, as summary()
    assert sds.loc[(within, "SD(standlrt)"), column[0]] == sd
    assert sds.loc[("Cross-function", "Corr(mean standlrt, variance Intercept)"), column[0]] == rho


def test_table_renderings_hold_the_numbers(ml_fits):
    comparison = melsm.compare(*ml_fits[:2], names=NAMES[:2])
    est = ml_fits[1].params["corr:mean:Intercept,within:Intercept"]
    markdown, html, latex = comparison.to_markdown(3), comparison.to_html(3), comparison.to_latex(3)
    for text in (markdown, html, latex, str(comparison)):
        assert f"{est:.3f}" in text and f"{ml_fits[0].loglik:.2f}" in text
    assert "| **Cross-function** |" in markdown
    assert '<th colspan="2">Model 2</th>' in html and '<tr class="block"><th colspan="5">Cross-function' in html
    assert r"\multicolumn{2}{c}{Model 2}" in latex and r"\toprule" in latex
    assert "| Model 2 vs Model 1<sup>a</sup> | 91.74 | 2 | χ̄²: ½χ²(1) + ½χ²(2) | < 0.001 |" in markdown
    # parameter rows, block titles, 2 header rows; LR table: header and one test
    assert latex.count(r"\\") == len(comparison.table) + 4 + 2 + 2


def test_table_holds_the_mcmc_numbers(mcmc_fits):
    fit = mcmc_fits[2]
    table = melsm.compare(*mcmc_fits.values(), names=["M2", "M3", "M6"], scale="variance").table
    draws = fit.draws("sd:within:Intercept") ** 2
    row = ("Level-1 variance function (log variance)", "Var(Intercept)")
    assert table.loc[row, ("M2", "Est.")] == pytest.approx(draws.mean())
    assert table.loc[row, ("M2", "SD")] == pytest.approx(draws.std(ddof=1))
    assert table.loc[("Model fit", "DIC"), ("M3", "Est.")] == mcmc_fits[3].dic["DIC"]


def test_compare_refuses_bad_requests(ml_fits, mcmc_fits):
    with pytest.raises(melsm.MelsmInputError, match="one kind"):
        melsm.compare(ml_fits[1], mcmc_fits[2])
    with pytest.raises(melsm.MelsmInputError, match="names must differ"):
        melsm.compare(*ml_fits[:2], names=["a", "a"])
    with pytest.raises(melsm.MelsmInputError, match="cannot rank by 'loglik'"):
        melsm.compare(*ml_fits[:2], by="loglik")
    with pytest.raises(melsm.MelsmInputError, match="scale must be"):
        melsm.compare(*ml_fits[:2], scale="var")


# ---- group and population quantities ----------------------------------------------------
def test_population_formulas_match_monte_carlo(ml_fits):
    """E and V of the log-normal group variances against 2 million simulated groups."""
    fit = ml_fits[1]
    p = dict(zip(fit.names, fit.estimates, strict=True))
    pop = fit.population_quantities()
    rng = np.random.default_rng(0)
    variances = np.exp(p["within:Intercept"] + p["sd:within:Intercept"] * rng.standard_normal(2_000_000))
    assert pop.loc["variance_mean", "estimate"] == pytest.approx(variances.mean(), rel=1e-3)
    assert pop.loc["variance_variance", "estimate"] == pytest.approx(variances.var(), rel=1e-2)
    s2u = p["sd:mean:Intercept"] ** 2
    assert pop.loc["between_variance", "estimate"] == pytest.approx(s2u)
    assert pop.loc["icc", "estimate"] == pytest.approx(s2u / (s2u + variances.mean()), rel=1e-3)
    assert pop.loc["between_variance", "se"] == pytest.approx(2 * np.sqrt(s2u) * fit.bse[
        "sd:mean:Intercept"])
    assert (pop.low < pop.estimate).all() and (pop.estimate < pop.high).all()


def test_ml_group_quantities_follow_the_eb_predictions(ml_fits):
    fit = ml_fits[1]
    g, effects = fit.group_quantities(), fit.random_effects()
    p = fit.params
    assert len(g) == N_SCHOOLS
    np.testing.assert_allclose(g["mean"], p["mean:Intercept"] + effects["mean:Intercept"])
    np.testing.assert_allclose(g["mean high"] - g["mean low"], 2 * 1.959964 * effects["mean:Intercept sd"], rtol=1e-6)
    np.testing.assert_allclose(np.log(g["variance"]), p["within:Intercept"] + effects["within:Intercept"])
    s2u = p["sd:mean:Intercept"] ** 2
    np.testing.assert_allclose(g["icc low"], s2u / (s2u + g["variance high"]))
    mean_differs = np.abs(effects["mean:Intercept"]) > 1.959964 * effects["mean:Intercept sd"]
    assert (g["mean differs"] == mean_differs).all()


def test_ml_and_mcmc_group_quantities_agree(ml_fits, mcmc_fits):
    """Empirical-Bayes intervals are conditional on θ̂ (narrower than posterior intervals),
    so ML flags a few more groups than MCMC (36 vs 30 school means here)."""
    ml, mcmc = ml_fits[1].group_quantities(), mcmc_fits[2].group_quantities()
    assert np.corrcoef(ml["variance"], mcmc["variance"])[0, 1] > 0.98
    assert np.abs(ml["mean"] - mcmc["mean"]).max() < 0.05
    for quantity in ("mean", "variance"):
        assert 0 <= ml[f"{quantity} differs"].sum() - mcmc[f"{quantity} differs"].sum() <= 8


def test_ml_findings_reproduce_the_published_ones(ml_fits):
    """The published analysis is MCMC (Stat-JR); the ML analysis must tell the same story."""
    g = ml_fits[1].group_quantities()
    assert abs(g["mean differs"].sum() - FINDINGS["model2_school_means_differing_from_average"]) <= 3
    assert abs(g["variance differs"].sum() - FINDINGS["model2_school_variances_differing_from_average"]) <= 3
    low, high = FINDINGS["model2_icc_range"]
    assert abs(g.icc.min() - low) <= 0.03 and abs(g.icc.max() - high) <= 0.03
    change = groups.percent_change(ml_fits[1].population_quantities(), ml_fits[2].population_quantities())
    for key, published in (("between_variance", "model2_to_3_between_school_variance_reduction_pct"),
                           ("variance_mean", "model2_to_3_mean_of_school_variances_reduction_pct"),
                           ("variance_variance", "model2_to_3_variance_of_school_variances_reduction_pct")):
        assert abs(-change[key] - FINDINGS[published]) <= 2, key
    observed = groups.observed_groups(ml_fits[0].model.design)
    r = np.corrcoef(observed["mean"], observed["variance"])[0, 1]
    assert round(r, 2) == FINDINGS["observed_school_mean_vs_variance_correlation"]


def test_group_lines(ml_fits, tutorial):
    fit = ml_fits[5]
    lines = fit.group_lines("standlrt", "variance")
    effects, p = fit.random_effects(), fit.params
    np.testing.assert_allclose(lines.slope, p["within:standlrt"] + effects["within:standlrt"])
    assert (lines.against == (lines.slope > 0)).all() and p["within:standlrt"] < 0
    data = fit.model.design
    x = data.X[:, data.x_names.index("standlrt")]
    assert lines.x_min.min() == x.min() and lines.x_max.max() == x.max()
    with pytest.raises(melsm.MelsmInputError, match="'girls' is not a covariate of the mean function"):
        fit.group_lines("girls")
    model = melsm.Model("normexam ~ standlrt + (0 + standlrt | school)", within="~ 0 + girl", data=tutorial)
    with pytest.raises(melsm.MelsmInputError, match="need an intercept in the level-1 variance function and a "
                                                    r"random location intercept, e.g. \(1 \| group\)"):
        groups.check_supported(model.layout)


# ---- figures ----------------------------------------------------------------------------
def _image(fig) -> np.ndarray:
    png = figure_png(fig, dpi=60)
    image = imread(io.BytesIO(png))
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.05  # drawn, not blank
    return image


def _title_count(fig) -> int:
    return int(re.search(r"\n(\d+) of", fig.axes[0].get_title("left")).group(1))


@pytest.mark.parametrize("method", ["ml", "mcmc"])
@pytest.mark.parametrize("quantity", ["mean", "variance", "icc"])
def test_caterpillar(ml_fits, mcmc_fits, method, quantity):
    fit = ml_fits[1] if method == "ml" else mcmc_fits[2]
    fig = fit.plot.caterpillar(quantity, name="Model 2")
    _image(fig)
    ax = fig.axes[0]
    intervals = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(intervals) == 1 and len(intervals[0].get_segments()) == N_SCHOOLS
    g = fit.group_quantities().sort_values(quantity)
    segments = intervals[0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in segments], g[[f"{quantity} low", f"{quantity} high"]].to_numpy())
    average = fit.population_quantities().loc[groups.AVERAGE_OF[quantity], "estimate"]
    # counted (and marked) by the interval drawn: it excludes the average line
    assert _title_count(fig) == plots.excludes(g[f"{quantity} low"], g[f"{quantity} high"], average).sum()
    assert ax.lines[0].get_ydata()[0] == pytest.approx(average)


@pytest.mark.parametrize("method", ["ml", "mcmc"])
@pytest.mark.parametrize("function", ["mean", "variance"])
def test_group_lines_figure(ml_fits, mcmc_fits, method, function):
    fit = ml_fits[5] if method == "ml" else mcmc_fits[6]
    fig = fit.plot.group_lines("standlrt", function, name="Model 6")
    _image(fig)
    collection = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)][0]
    assert len(collection.get_paths()) == N_SCHOOLS
    assert _title_count(fig) == fit.group_lines("standlrt", function).against.sum()


def test_observed_and_population_figures(ml_fits, mcmc_fits):
    fig = ml_fits[0].plot.observed()
    _image(fig)
    points = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)][0]
    assert len(points.get_offsets()) == N_SCHOOLS
    assert "r = 0.29" in fig.axes[0].get_title("left")
    for fits in (ml_fits, list(mcmc_fits.values())):
        fig = plots.population_figure(fits)
        _image(fig)
        assert len(fig.axes) == 4
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert len(texts) == len(fits) - 1
    change = groups.percent_change(ml_fits[1].population_quantities(), ml_fits[2].population_quantities())
    assert f"{change['between_variance']:+.0f}%" in [t.get_text() for t in plots.population_figure(
        ml_fits[1:3]).axes[0].texts]


# ---- findings and the report ------------------------------------------------------------
def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w-])[-+]?\d+(?:\.\d+)?", text)]


def test_findings_match_the_fits(ml_fits):
    text = findings(ml_fits, NAMES)
    g = ml_fits[1].group_quantities()
    counts = next(s for s in text if s.startswith("Model 2:") and "differ significantly" in s)
    assert _numbers(counts)[1:7] == [g["mean differs"].sum(), N_SCHOOLS, g["variance differs"].sum(), N_SCHOOLS,
                                     g["icc differs"].sum(), N_SCHOOLS]
    assert f"from {g.icc.min():.3f} to {g.icc.max():.3f}" in counts
    change = groups.percent_change(ml_fits[1].population_quantities(), ml_fits[2].population_quantities())
    step = next(s for s in text if s.startswith("Adding standlrt and girl"))
    assert _numbers(step)[-3:] == [round(change[k], 1) for k in ("between_variance", "variance_mean",
                                                                   "variance_variance")]
    lr = next(s for s in text if s.startswith("Likelihood-ratio"))
    assert f"LR = {ml_fits[1].lrtest(ml_fits[0]).statistic:.1f} on " in lr
    lines = ml_fits[5].group_lines("standlrt", "variance")
    against = next(s for s in text if "variance lines go the other way" in s)
    assert f"; {lines.against.sum()} of {N_SCHOOLS}" in against
    best = int(np.argmin([f.aic for f in ml_fits]))
    assert text[-1] == f"Best fit by AIC: {NAMES[best]} (AIC {ml_fits[best].aic:.1f})."


def test_report_is_self_contained_and_holds_the_fits(ml_fits, mcmc_fits, tmp_path):
    path = tmp_path / "report.html"
    mcmc_names = [f"Model {k}" for k in mcmc_fits]
    html = melsm.report(ml_fits + list(mcmc_fits.values()), NAMES + mcmc_names, path=path, title="London")
    assert path.read_text(encoding="utf-8") == html
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    # ML: observed, population, 3 caterpillars, 2 group lines; MCMC: the same without observed
    assert len(images) == 7 + 6
    for data in images:
        assert imread(io.BytesIO(base64.b64decode(data))).std() > 0.05
    assert html.count('<div class="melsm-comparison">') == 2  # one comparison per section
    # ML: Models 1-3 and 4-6 in two panels, then the LR tests; MCMC: its three models in one panel
    assert html.count('<table class="melsm-compare">') == 2 + 1
    assert html.count('<table class="melsm-compare melsm-lrtests">') == 1
    assert f"{ml_fits[5].loglik:.2f}" in html and f"{mcmc_fits[6].dic['DIC']:.2f}" in html
    for sentence in findings(ml_fits, NAMES) + findings(list(mcmc_fits.values()), mcmc_names):
        assert html_module.escape(sentence) in html
    assert html.count("<details>") == len(ml_fits) + len(mcmc_fits)
