"""One results contract for maximum-likelihood and MCMC fits (``melsm.results.base``): the
same tables, derived quantities, group quantities, comparison tables, figures and report
come from either fit through the same code, and no consumer asks a fit for its type."""

import ast
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

import melsm
from melsm.demo import LONDON_MODELS
from melsm.model.evaluation import evaluation_rows
from melsm.reporting.findings import findings
from melsm.results import groups
from melsm.results.base import COMMON_COLUMNS, Results, register_accessor
from melsm.results.mcmc import MCMCResults
from melsm.results.ml import MLResults

SRC = Path(melsm.__file__).parent
N_SCHOOLS = 65
RHO, SD_U, SD_V = "corr:mean:Intercept,within:Intercept", "sd:mean:Intercept", "sd:within:Intercept"
#: Modules that take fits and must treat ML and MCMC fits alike.
CONSUMERS = ["reporting/compare.py", "reporting/findings.py", "reporting/plots.py", "reporting/report.py",
             "app/jobs.py", "app/tables.py", "app/worker.py", "app/server.py", "demo.py", "cli.py", "results/groups.py",
             "results/summary.py", *(str(p.relative_to(SRC)) for p in (SRC / "studies").glob("*.py"))]


@pytest.fixture(scope="module")
def fits(tutorial):
    """London Model 2 by ML and by a short MCMC run (bookkeeping, not inference)."""
    model = melsm.Model(*LONDON_MODELS["Model 2"], data=tutorial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        ml = model.fit()
        mcmc = model.sample(chains=2, warmup=200, draws=300, seed=5, start=ml, progress=False)
    return {"ml": ml, "mcmc": mcmc}


@pytest.fixture(params=["ml", "mcmc"])
def fit(request, fits):
    return fits[request.param]


def test_both_fits_share_the_base_and_one_table_schema(fits):
    ml, mcmc = fits["ml"], fits["mcmc"]
    assert isinstance(ml, Results) and isinstance(mcmc, Results)
    assert (ml.method, mcmc.method) == ("ML", "MCMC")
    extras = {"ml": ["z", "p"], "mcmc": ["r_hat", "ess_bulk", "ess_tail", "mcse_mean"]}
    for key, f in fits.items():
        table = f.table()
        assert list(table.columns) == list(COMMON_COLUMNS) + extras[key]
        assert list(table.index) == f.names
        assert (table.lower < table.estimate).all() and (table.estimate < table.upper).all()
    # params and bse are the table's columns, labelled as statsmodels labels them
    for f in (ml, mcmc):
        assert isinstance(f.params, pd.Series) and f.params.name == "estimate"
        assert list(f.params.index) == list(f.bse.index) == f.names
        assert (f.params == f.table()["estimate"]).all() and (f.bse == f.table()["std_error"]).all()
    assert list(ml.table().columns) == [*COMMON_COLUMNS, "z", "p"]
    assert list(mcmc.table().columns[:len(COMMON_COLUMNS)]) == list(COMMON_COLUMNS)
    assert (ml.n_obs, ml.n_groups, ml.n_params) == (mcmc.n_obs, mcmc.n_groups, mcmc.n_params) == (4059, 65, 5)


def test_variance_scale_of_the_table(fits):
    ml, mcmc = fits["ml"], fits["mcmc"]
    sd, se = ml.params[SD_V], ml.bse[SD_V]
    row = ml.table("variance").loc[SD_V]
    assert row.estimate == sd ** 2 and row.std_error == 2 * sd * se
    assert row.lower == ml.table().at[SD_V, "lower"] ** 2
    squares = mcmc.draws(SD_V) ** 2
    row = mcmc.table("variance").loc[SD_V]
    assert row.estimate == squares.mean() and row.std_error == squares.std(ddof=1)
    assert row.upper == np.quantile(squares, 0.975)
    assert mcmc.table("variance").loc[RHO].equals(mcmc.table().loc[RHO])  # only SD rows change
    with pytest.raises(ValueError, match="scale must be"):
        ml.table("var")


def test_derived_by_delta_method_and_by_draws_agree(fits):
    """τ_l = ρ·σ_v (MIXREGLS' linear association) and σ²_u: the delta method (ML) and the
    draws (MCMC) agree within the difference of a posterior mean from an MLE."""
    def tau_and_variance(p):
        return {"tau": p[RHO] * p[SD_V], "between_variance": p[SD_U] ** 2}

    ml = fits["ml"].derived(tau_and_variance, positive=[False, True])
    mcmc = fits["mcmc"].derived(tau_and_variance, positive=[False, True])
    assert list(ml.columns) == list(mcmc.columns) == list(COMMON_COLUMNS)
    assert list(ml.index) == list(mcmc.index) == ["tau", "between_variance"]
    assert np.all(np.abs(ml.estimate - mcmc.estimate) < 0.5 * ml.std_error)
    assert np.all((0.6 < mcmc.std_error / ml.std_error) & (mcmc.std_error / ml.std_error < 1.6))
    # ML: the delta method of delta_method; σ²_u's interval on the log scale
    value, se = fits["ml"].delta_method(lambda p: [p[RHO] * p[SD_V], p[SD_U] ** 2])
    np.testing.assert_array_equal(ml.estimate, value)
    np.testing.assert_array_equal(ml.std_error, se)
    half = 1.959963984540054 * se[1] / value[1]
    assert ml.loc["between_variance", "lower"] == pytest.approx(value[1] * np.exp(-half), rel=1e-14)
    # MCMC: summaries of the per-draw values
    tau = fits["mcmc"].draws(RHO) * fits["mcmc"].draws(SD_V)
    assert mcmc.loc["tau", "estimate"] == pytest.approx(tau.mean(), rel=1e-12)
    assert mcmc.loc["tau", "upper"] == pytest.approx(np.quantile(tau, 0.975), rel=1e-12)
    # a function of one parameter reproduces its own row of the table
    for f in fits.values():
        one = f.derived(lambda p: p["mean:Intercept"])
        assert list(one.index) == [0]
        assert one.loc[0, "estimate"] == pytest.approx(f.table().at["mean:Intercept", "estimate"], rel=1e-12)
        assert one.loc[0, "std_error"] == pytest.approx(f.table().at["mean:Intercept", "std_error"], rel=1e-10)


def test_group_and_population_quantities_come_from_one_code_path(fits):
    ml, mcmc = fits["ml"].group_quantities(), fits["mcmc"].group_quantities()
    assert list(ml.columns) == list(mcmc.columns) and (ml.index == mcmc.index).all() and len(ml) == N_SCHOOLS
    for f in fits.values():
        assert f.group_quantities().equals(groups.group_quantities(f))
        assert f.population_quantities().equals(groups.population_quantities(f))
        g, population = groups.group_values(f)
        assert g["mean"].shape[1] == N_SCHOOLS
        point, low, high = f.summarise_groups(g["variance"])
        np.testing.assert_array_equal(point, f.group_quantities()["variance"])
        assert (low <= point).all() and (point <= high).all()
    # ML: K = 3 points, the empirical-Bayes interval; a group differs when its interval
    # excludes the population average
    fit = fits["ml"]
    rows = evaluation_rows(fit.model.design)
    assert fit.group_predictor("mean", rows["X"], rows["Zu"]).shape == (3, N_SCHOOLS)
    average = fit.population_quantities().loc["mean", "estimate"]
    assert (ml["mean differs"] == ((ml["mean low"] > average) | (ml["mean high"] < average))).all()
    # MCMC: the draws, each parameter draw with the random effects of the same draw
    mcmc_fit = fits["mcmc"]
    effects = np.asarray(mcmc_fit.idata.posterior["random_effects"].sel(effect="within:Intercept"))
    expected = mcmc_fit.draws("within:Intercept")[:, None] + effects.reshape(-1, N_SCHOOLS)
    np.testing.assert_allclose(mcmc_fit.group_predictor("within", rows["W"], rows["Zv"]), expected, rtol=1e-13)
    assert mcmc_fit.group_predictor("mean", rows["X"], rows["Zu"]).shape == (600, N_SCHOOLS)
    ml_pop, mcmc_pop = fits["ml"].population_quantities(), fits["mcmc"].population_quantities()
    assert list(ml_pop.columns) == list(mcmc_pop.columns) == ["estimate", "se", "low", "high"]
    assert np.all(np.abs(ml_pop.estimate - mcmc_pop.estimate) < ml_pop.se)


def test_criteria_and_capabilities(fits):
    ml, mcmc = fits["ml"], fits["mcmc"]
    assert ml.has_likelihood and not mcmc.has_likelihood
    assert ml.criterion() == ("AIC", ml.aic) and mcmc.criterion() == ("DIC", mcmc.dic["DIC"])
    assert list(ml.fit_statistics()) == ["Log-likelihood", "Parameters", "AIC", "BIC"]
    assert list(mcmc.fit_statistics()) == ["DIC", "pD"]
    assert ml.information_criteria() == {"loglik": ml.loglik, "n_params": 5, "AIC": ml.aic, "BIC": ml.bic}
    criteria = mcmc.information_criteria()
    assert set(mcmc.criteria_names) <= set(criteria) and criteria["DIC"] == mcmc.dic["DIC"]
    assert criteria["marginal_DIC"] == pytest.approx(mcmc.marginal_dic()["DIC"])
    # the marginal criteria are on the deviance scale: close to −2 log L at the MLE + 2 p
    assert criteria["WAIC"] == pytest.approx(ml.aic, abs=15)
    with pytest.raises(melsm.MelsmInputError, match="another maximum-likelihood fit"):
        ml.lrtest(mcmc)


def test_compare_report_and_figures_go_through_the_same_code(fits, tmp_path):
    for f in fits.values():
        table = melsm.compare(f, names=["Model 2"], scale="variance").table
        second = f.wording.error
        assert list(table.columns) == [("Model 2", "Est."), ("Model 2", second)]
        row = ("Level-1 variance function (log variance)", "Var(Intercept)")
        assert table.loc[row, ("Model 2", "Est.")] == f.table("variance").at[SD_V, "estimate"]
        label, value = f.criterion()
        assert table.loc[("Model fit", label), ("Model 2", "Est.")] == value
        fig = f.plot.caterpillar("variance", name="Model 2")
        segments = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)][0].get_segments()
        assert len(segments) == N_SCHOOLS
        assert f.wording.group_intervals in fig.axes[0].get_title("left")
        assert f.plot.group_lines is not None and type(f).plot is type(f.plot)
    html = melsm.report(list(fits.values()), ["Model 2", "Model 2"], path=tmp_path / "r.html")
    assert "Maximum likelihood</h2>" in html and "Bayesian (MCMC)</h2>" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 1 + 3 + 3  # observed once, caterpillars
    for f in fits.values():
        sentences = findings([f], ["Model 2"])
        assert any(s.startswith("Model 2: ") and "differ significantly" in s for s in sentences)
        assert f"({f.wording.interval} " in next(s for s in sentences if "correlation of the school" in s)


def test_the_caller_chooses_the_fits_of_the_story(fits, tutorial):
    ml2 = fits["ml"]
    ml3 = melsm.Model(*LONDON_MODELS["Model 3"], data=tutorial).fit()
    default = findings([ml2, ml3], ["A", "B"])
    chosen = findings([ml2, ml3], ["A", "B"], groups_of="B")
    assert any(s.startswith("A: ") and "differ significantly" in s for s in default)
    assert any(s.startswith("B: ") and "differ significantly" in s for s in chosen)
    assert not any(s.startswith("A: ") and "differ significantly" in s for s in chosen)
    # a name that is not in the section falls back to the default
    assert findings([ml2, ml3], ["A", "B"], groups_of="Model 2") == default
    html = melsm.report([ml2, ml3], ["A", "B"], groups_of="B")
    assert "B: group means ranked" in html and "A: group means ranked" not in html
    for module in ("findings.py", "report.py", "plots.py", "compare.py"):
        text = (SRC / "reporting" / module).read_text(encoding="utf-8")
        assert "seed" not in text and "Model 2" not in text and "Model 6" not in text, module


def test_accessors_are_registered_on_every_fit(fits):
    @register_accessor("double_estimates")
    class Double:
        def __init__(self, fit):
            self.values = 2 * fit.table()["estimate"]

    try:
        for f in fits.values():
            assert (f.double_estimates.values == 2 * f.table()["estimate"]).all()
        assert MLResults.double_estimates is Double and MCMCResults.double_estimates is Double
        with pytest.raises(AttributeError, match="already an attribute"):
            register_accessor("table")(Double)
    finally:
        delattr(Results, "double_estimates")


def test_no_consumer_tells_the_methods_apart():
    for module in CONSUMERS:
        text = (SRC / module).read_text(encoding="utf-8")
        for pattern in ("hasattr(fit", "hasattr(self.fit", "iloc[:, 0]", "isinstance(fit", "MLResults",
                        "MCMCResults", "type(fit"):
            assert pattern not in text, (module, pattern)


def test_the_results_layer_imports_nothing_above_it():
    above = ("melsm.reporting", "melsm.pipeline", "melsm.studies", "melsm.demo", "melsm.cli", "melsm.app")
    for path in (SRC / "results").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith(above)], (path.name, names)
