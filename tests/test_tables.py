"""Comparison tables and a fit's HTML at publication quality: they fit the report's column
and a printed page at any number of models (measured in headless Chromium), LR tests have
their p-value in a column of their own, random effects are SDs or variances on request,
digits follow the SEs, boundary and non-converged fits carry notes, and HTML, Markdown and
LaTeX show the same cells."""

import html.parser
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm.reporting.report import CSS
from melsm.reporting.table_layout import panel_sizes
from melsm.reporting.table_render import LATEX
from melsm.results import formatting

MEAN = "hamdep ~ week + (1 | id)"
WIDE = "hamdep ~ week + endog + endweek + (1 | id)"
#: Eight Riesby models, each cheap to fit (0.3-3 s), some nested in the one before.
RIESBY = {
    "week": dict(mean=MEAN),
    "constant": dict(mean="hamdep ~ week + endog + (1 | id)"),
    "wide": dict(mean=WIDE),
    "function": dict(mean="hamdep ~ week + endog + (1 | id)", between="~ endog"),
    "none": dict(mean=MEAN, within="~ week + (1 | id)", association="none"),
    "correlated": dict(mean=MEAN, within="~ week + (1 | id)"),
    "wide_none": dict(mean=WIDE, within="~ week + (1 | id)", association="none"),
    "slopes": dict(mean="hamdep ~ week + (week | id)", within="~ week + (1 | id)"),
}
#: The report's column (its CSS: body max-width 1100 px) and a portrait A4 page printed by
#: Chromium with its default margins (0.4 in): 8.27 in - 0.8 in at 96 px per inch.
REPORT_VIEWPORT, A4_VIEWPORT = 1200, 718


@pytest.fixture(scope="module")
def fits(reisby):
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        return {name: melsm.Model(data=reisby, **spec).fit() for name, spec in RIESBY.items()}


@pytest.fixture(scope="module")
def stopped(reisby):
    """A fit stopped after one iteration: not converged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        return melsm.Model(data=reisby, **RIESBY["correlated"]).fit(start=[20, -2, 2, 0, 0, 0, 0], max_iter=1)


@pytest.fixture(scope="module")
def boundary_fits():
    """Data without a random scale effect: the model with one puts its SD at 0."""
    rng = np.random.default_rng(3)  # the data of tests/test_boundary_convergence.py: simulate(3)
    g = np.repeat(np.arange(60), 20)
    x = rng.normal(size=g.size)
    u0 = rng.normal(scale=0.7, size=60)[g]
    rng.normal(scale=0.0, size=60), rng.normal(scale=0.0, size=60), rng.normal(scale=0.0, size=60)
    data = pd.DataFrame({"y": 1 + 0.5 * x + u0 + rng.normal(size=g.size), "x": x, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmBoundaryWarning)
        plain = melsm.Model("y ~ x + (1 | g)", data=data).fit()
        scale = melsm.Model("y ~ x + (1 | g)", within="~ 1 + (1 | g)", data=data, association="none").fit()
    assert scale.boundary == ["sd:within:Intercept"]
    return plain, scale


# ---- the formats hold the same cells ---------------------------------------------------------
class _HTMLCells(html.parser.HTMLParser):
    """Rows of cell texts of every <table>, and the notes' paragraphs."""

    def __init__(self):
        super().__init__()
        self.rows, self.notes, self._cell, self._in_notes = [], [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") or (tag == "p" and self._in_notes):
            self._cell = ""
        elif tag == "div" and ("class", "melsm-notes") in attrs:
            self._in_notes = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "p" and self._in_notes:
            self.notes.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def html_cells(text):
    parser = _HTMLCells()
    parser.feed(text)
    return [[c for c in row if c] for row in parser.rows], [re.sub(r"^Note\. ", "", n) for n in parser.notes]


def markdown_cells(text):
    rows, notes = [], []
    for line in text.splitlines():
        if line.startswith("|:--"):
            continue
        decoded = re.sub(r"<sup>(.*?)</sup>", r"\1", line).replace(r"\*", "*")
        if line.startswith("| "):
            cells = [c.strip().replace("\x00", "|") for c in decoded.replace(r"\|", "\x00").strip("|").split("|")]
            rows.append([re.sub(r"^\*\*(.*)\*\*$", r"\1", c) for c in cells if c])
        elif line.startswith(("*Note.* ", "<sup>")):
            notes.append(re.sub(r"^\*Note\.\* ", "", decoded).replace(r"\|", "|"))
    return rows, notes


def _unlatex(text):
    text = re.sub(r"^\\multicolumn\{\d+\}\{(?:[^{}]|\{\})*\}\{(.*)\}$", r"\1", text.strip())
    text = re.sub(r"\\textsuperscript\{(\w)\}", r"\1", text)
    text = re.sub(r"^\\textit\{(.*?)\}", r"\1", text)
    text = text.replace(r"\raggedright\hangindent=1em\hspace*{1em}", "").replace(r"\quad ", "")
    for plain, code in sorted(LATEX.items(), key=lambda item: -len(item[1])):
        text = text.replace(code, plain)
    return text.strip()


def latex_cells(text):
    rows, notes = [], []
    for line in text.splitlines():
        if line.endswith(r"\\"):
            cells = [_unlatex(c) for c in line[:-2].split(" & ")]
            rows.append([c for c in cells if c])
        elif line.endswith(r"\par") and not line.startswith(r"\textit{Panel") and "tests of" not in line:
            notes.append(re.sub(r"^Note\. ", "", _unlatex(line[:-4])))
    return rows, notes


def compare_stopped(fits, stopped, **options):
    """``fits["week"]`` and ``stopped``, whose log L is below the smaller model's (warned)."""
    with pytest.warns(melsm.MelsmFitWarning, match="did not find its maximum"):
        return melsm.compare(fits["week"], stopped, names=["week", "stopped"], **options)


def test_html_markdown_and_latex_show_the_same_cells(fits, stopped, boundary_fits):
    for comparison in (melsm.compare(*fits.values(), names=list(fits)),
                       compare_stopped(fits, stopped, scale="variance"),
                       melsm.compare(*boundary_fits, names=["plain", "scale"])):
        rows, notes = html_cells(comparison.to_html())
        assert markdown_cells(comparison.to_markdown()) == (rows, notes)
        assert latex_cells(comparison.to_latex()) == (rows, notes)
        layout = comparison.layout()
        assert len(rows) == sum(len(p.rows) + 2 for p in layout.panels) + (len(layout.lr_rows) + 1 if
                                                                             layout.lr_rows else 0)


# ---- widths: the report's column and a printed A4 page ------------------------------------------
MEASURE = """() => {
  const style = getComputedStyle(document.body);
  const column = document.body.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const tables = [...document.querySelectorAll("table")].map(t => t.getBoundingClientRect().width);
  const box = document.querySelector("div.scroll");
  return {column, tables, scroll: box.scrollWidth, client: box.clientWidth};
}"""


def measure(browser, table_html, viewport, media):
    """The column's width and each table's, in the report's page (its CSS, the table in its
    scrolling box) at ``viewport`` px for ``media`` ("screen" or "print")."""
    page = browser.new_page(viewport={"width": viewport, "height": 900})
    page.emulate_media(media=media)
    page.set_content(f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{CSS}</style></head><body>"
                     f"<h3>Estimates</h3><div class='scroll'>{table_html}</div></body></html>")
    sizes = page.evaluate(MEASURE)
    page.close()
    return sizes


@pytest.mark.parametrize("scale", ["sd", "variance"])
def test_tables_fit_the_report_column_and_an_a4_page_at_1_to_8_models(browser, fits, scale):
    names = list(fits)
    widths = {}
    for n in range(1, len(names) + 1):
        comparison = melsm.compare(*[fits[k] for k in names[:n]], names=names[:n], scale=scale)
        for viewport, media, column in ((REPORT_VIEWPORT, "screen", 1100), (A4_VIEWPORT, "print", None)):
            sizes = measure(browser, comparison.to_html(), viewport, media)
            if column is not None:
                assert sizes["column"] == column
            assert max(sizes["tables"]) <= sizes["column"], (n, media, sizes)
            assert sizes["scroll"] <= sizes["client"], (n, media, sizes)  # nothing to scroll sideways
            widths[(n, media)] = round(max(sizes["tables"]))
    print(scale, widths)


# ---- content ------------------------------------------------------------------------------------
def test_panels_split_wide_tables_evenly():
    assert panel_sizes([17] * 6, 40, None) == [3, 3]
    assert panel_sizes([17] * 4, 40, None) == [2, 2]
    assert panel_sizes([17] * 7, 40, None) == [3, 2, 2]
    assert panel_sizes([17] * 2, 40, None) == [2]
    assert panel_sizes([17] * 6, 40, 6) == [6] and panel_sizes([99] * 3, 40, None) == [1, 1, 1]


def test_every_panel_repeats_the_labels_and_keeps_the_rows_of_its_models(fits):
    names = list(fits)
    comparison = melsm.compare(*fits.values(), names=names)
    layout = comparison.layout()
    assert [len(p.models) for p in layout.panels] == [3, 3, 2]
    assert [m.text for p in layout.panels for m in p.models] == names
    for panel in layout.panels:
        labels = [(r.label) for r in panel.rows if not r.block]
        assert labels[0] == "Intercept" and labels[-4:] == ["Log-likelihood", "Parameters", "AIC", "BIC"]
        assert all(any(c.text for c in r.cells) for r in panel.rows if not r.block)  # no empty rows
    assert "SD(week)" not in [r.label for r in layout.panels[0].rows]  # only "slopes" has it
    assert comparison.to_markdown().count("**Panel ") == 3
    assert comparison.to_markdown(per_panel=8).count("**Panel ") == 0


def test_lr_p_value_has_a_column_of_its_own(fits):
    comparison = melsm.compare(fits["week"], fits["constant"], fits["wide"], names=["A", "B", "C"])
    test = fits["week"].lrtest(fits["constant"])
    rows, _ = html_cells(comparison.to_html())
    header = ["Test", "LR", "df", "Reference distribution", "p"]
    lr_rows = rows[rows.index(header) + 1:]
    assert lr_rows[0] == ["B vs A", f"{test.statistic:.2f}", "1", "χ²(1)", f"{test.p_value:.3f}"]
    assert not [r for r in rows[:rows.index(header)] if f"{test.p_value:.3f}" in r]  # not among Est./SE
    assert comparison.lrtests.loc[0, "p"] == test.p_value
    assert formatting.p_value(1e-9) == "< 0.001"


def test_scale_switches_between_sds_and_variances(fits):
    fit = fits["slopes"]
    p, bse = fit.params, fit.bse
    sd_table = melsm.compare(fit, names=["m"]).table
    var_table = melsm.compare(fit, names=["m"], scale="variance").table
    mean = "Mean function"
    assert sd_table.loc[(mean, "SD(week)"), ("m", "Est.")] == p["sd:mean:week"]
    assert sd_table.loc[(mean, "Corr(Intercept, week)"), ("m", "Est.")] == p["corr:mean:Intercept,mean:week"]
    assert var_table.loc[(mean, "Var(week)"), ("m", "Est.")] == pytest.approx(p["sd:mean:week"] ** 2)
    assert var_table.loc[(mean, "Var(week)"), ("m", "SE")] == pytest.approx(2 * p["sd:mean:week"] * bse["sd:mean:week"])
    cov = p["corr:mean:Intercept,mean:week"] * p["sd:mean:Intercept"] * p["sd:mean:week"]
    assert var_table.loc[(mean, "Cov(Intercept, week)"), ("m", "Est.")] == pytest.approx(cov)
    assert "Random effects as variances and covariances." in melsm.compare(fit, scale="variance").to_markdown()
    # a correlation of an effect whose variance is a level-2 function stays a correlation
    labels = [label for _, label in melsm.compare(fits["function"], scale="variance").table.index]
    assert not [label for label in labels if label.startswith(("Var(Intercept)", "SD("))]


def _three_significant(se):
    return f"{se:.{max(0, 2 - math.floor(math.log10(se)))}f}"


def test_digits_follow_the_standard_errors(fits):
    assert formatting.estimate_and_error(0.5536, 0.0123) == ("0.5536", "0.0123")
    assert formatting.estimate_and_error(23.552, 0.639) == ("23.552", "0.639")
    assert formatting.estimate_and_error(1234.5, 123.4) == ("1234", "123")  # no digit beyond the SE's
    assert formatting.estimate_and_error(2e-9, 3.21e-9) == ("2.00e-09", "3.21e-09")
    assert formatting.estimate_and_error(-0.00001, 0.0123) == ("0.0000", "0.0123")  # never "-0.0000"
    assert formatting.estimate_and_error(0.0, float("nan")) == ("0", "")
    fit = fits["correlated"]
    comparison = melsm.compare(fit, names=["m"])
    texts = comparison.to_markdown(), comparison.to_html(), comparison.to_latex()
    se = fit.bse["within:week"]  # 0.0630: two significant digits would print 0.06
    assert 0.01 < se < 0.1
    for text in texts:
        assert f"| {_three_significant(se)} |" in text or f"<td>{_three_significant(se)}</td>" in text \
            or f" & {_three_significant(se)} \\\\" in text
        est = fit.params["within:week"]
        assert f"{est:.4f}" in text  # the estimate to the SE's decimal place
    assert f"<td>{fit.bse['mean:week']:.3f}</td>" in comparison.to_html()  # 0.142: three decimals


def test_boundary_and_non_converged_fits_carry_notes(fits, stopped, boundary_fits):
    comparison = melsm.compare(*boundary_fits, names=["plain", "scale"])
    markdown = comparison.to_markdown()
    assert "| SD(Intercept) |  |  | 0<sup>a</sup> |  |" in markdown
    assert "<sup>a</sup> On the boundary of the parameter space" in markdown and "scale: SD(Intercept)" in markdown
    assert comparison.boundary == {"plain": set(), "scale": {("Level-1 variance function (log variance)",
                                                              "SD(Intercept)")}}
    comparison = compare_stopped(fits, stopped)
    html = comparison.to_html()
    assert '<th colspan="2">stopped<sup>a</sup></th>' in html and '<th colspan="2">week</th>' in html
    assert f"Did not converge: stopped ({stopped.message.rstrip('.')})" in html.replace("&#x27;", "'")
    assert stopped.convergence_problem == stopped.message and fits["week"].convergence_problem == ""
    latex = comparison.to_latex()
    assert r"\multicolumn{2}{c}{stopped\textsuperscript{a}}" in latex and r"\textsuperscript{a} Did not" in latex


# ---- notebooks ----------------------------------------------------------------------------------
def test_fits_and_comparisons_display_as_html(fits, boundary_fits):
    fit = fits["slopes"]
    shown = fit._repr_html_()
    rows, _ = html_cells(shown)
    assert rows[0] == ["Est.", "SE", "95% CI", "z", "p"]
    est, se = formatting.estimate_and_error(fit.params["sd:mean:week"], fit.bse["sd:mean:week"])
    assert ["SD(mean:week)", est, se, formatting.interval(*fit.table().loc["sd:mean:week", ["lower", "upper",
                                                                                             "std_error"]])] in rows
    assert "Random effects (SDs and correlations)" in shown and "Log-likelihood" in shown
    assert "converged: yes" in shown and "<code>hamdep</code>" in shown
    assert "<sup>a</sup> On the boundary" in boundary_fits[1]._repr_html_()
    assert isinstance(fit.summary()._repr_html_(), str)  # the summary keeps its own
    comparison = melsm.compare(fits["week"], fits["constant"])
    assert comparison._repr_html_() == comparison.to_html()


def test_mcmc_fits_go_through_the_same_tables(reisby, fits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        short = [melsm.Model(data=reisby, **RIESBY[k]).sample(chains=2, warmup=60, draws=60, seed=1, progress=False,
                                                              start=fits[k]) for k in ("week", "correlated")]
    comparison = melsm.compare(*short, names=["week", "correlated"], scale="variance")
    layout = comparison.layout()
    assert layout.error == "SD" and "posterior mean and standard deviation" in layout.notes[0].text
    assert [m.mark for m in layout.panels[0].models] == ["a", "a"]  # 60 draws: not converged, and it says so
    assert "Cov(mean Intercept, variance Intercept)" in [label for _, label in comparison.table.index]
    rows, _ = html_cells(short[1]._repr_html_())
    assert rows[0] == ["Est.", "SD", "95% interval", "R-hat", "ESS bulk", "ESS tail", "MCSE"]
    assert "converged: <strong" in short[1]._repr_html_()
