"""MCMC: the published London Models 1-5 (Leckie 2014, Stat-JR, diffuse priors) and Model 6
against the ML fit.

Published values are rounded to two decimals: posterior means must agree within
0.02 + half the published SD, posterior SDs within 30% or 0.01, conditional DIC within 10.
Variances are reported as SDs here: their draws are squared before comparing.
"""

import warnings

import numpy as np
import pytest
from conftest import reference

import melsm
from melsm.demo import LONDON_MODELS
from melsm.results.mcmc import MARGINAL_DRAWS

REF = reference("leckie2014_london.json")["models"]
MODELS = {name.removeprefix("Model "): formulas for name, formulas in LONDON_MODELS.items()}
RHO_U0V = "corr:mean:Intercept,within:Intercept"


def published_quantities(result):
    """Draws of each published quantity, by its name in the reference file."""
    d = result.draws
    out = {"beta_0": d("mean:Intercept"), "alpha_0": d("within:Intercept"),
           "sigma2_u": d("sd:mean:Intercept") ** 2}
    if "sd:within:Intercept" in result.names:
        out["sigma2_v"] = d("sd:within:Intercept") ** 2
        out["rho_uv"] = out["rho_u0v"] = d(RHO_U0V)
        # Model 3's printed "rho" is the covariance (see the reference file's note)
        out["cov_uv_printed_as_rho"] = d(RHO_U0V) * d("sd:mean:Intercept") * d("sd:within:Intercept")
    for part in ("mean", "within"):
        prefix = "beta" if part == "mean" else "alpha"
        for term in ("standlrt", "girl"):
            if f"{part}:{term}" in result.names:
                out[f"{prefix}_{term}"] = d(f"{part}:{term}")
    if "corr:mean:standlrt,within:Intercept" in result.names:
        out["rho_u1v"] = d("corr:mean:standlrt,within:Intercept")
    return out


@pytest.fixture(scope="module")
def posterior(tutorial):
    cache = {}

    def get(key):
        if key not in cache:
            mean, within = MODELS[key]
            with warnings.catch_warnings():
                warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
                cache[key] = melsm.Model(mean, within=within, data=tutorial).sample(
                    priors="diffuse", seed=1)
        return cache[key]

    return get


@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5"])
def test_published_london_models(posterior, key):
    result = posterior(key)
    assert result.converged and result.info["divergences"] == 0
    assert result.table().r_hat.max() < 1.01
    ours = published_quantities(result)
    for name, (mean, sd) in ((k, v) for k, v in REF[key].items() if k != "DIC"):
        draws = ours[name]
        assert abs(draws.mean() - mean) <= 0.02 + sd / 2, (name, draws.mean(), mean)
        if name != "cov_uv_printed_as_rho":
            assert abs(draws.std() - sd) <= max(0.3 * sd, 0.01), (name, draws.std(), sd)
    assert abs(result.dic["DIC"] - REF[key]["DIC"]) < 10
    assert 0 < result.dic["p_D"] < 200


def test_model6_posterior_agrees_with_ml(posterior, tutorial):
    result = posterior("6")
    assert result.converged and result.info["divergences"] == 0
    ml = melsm.Model(*MODELS["6"][:1], within=MODELS["6"][1], data=tutorial).fit()
    fixed = [n for n in ml.names if n.split(":")[0] in ("mean", "within")]
    post = result.table()
    distance = (post.loc[fixed, "estimate"] - ml.params[fixed]).abs() / post.loc[fixed, "std_error"]
    assert distance.max() < 1.0, distance
    # posterior SDs of the fixed effects close to the ML standard errors
    ratio = post.loc[fixed, "std_error"] / ml.bse[fixed]
    assert ratio.between(0.8, 1.25).all(), ratio
    # random effects: one row per school, posterior means of u near the EB predictions
    re_post, re_ml = result.random_effects(), ml.random_effects()
    assert re_post.shape == (65, 8)
    assert np.corrcoef(re_post["mean:Intercept"], re_ml["mean:Intercept"])[0, 1] > 0.98
    assert set(result.idata.posterior.data_vars) >= set(ml.names) | {"random_effects"}


FINDINGS = reference("leckie2014_london.json")["findings"]


def test_published_findings_model2(posterior):
    """35 school means and 17 school variances differ from the average (±3); ICCs."""
    result = posterior("2")
    groups = result.group_quantities()
    assert len(groups) == 65
    assert abs(groups["mean differs"].sum() - FINDINGS["model2_school_means_differing_from_average"]) <= 3
    assert abs(groups["variance differs"].sum() - FINDINGS["model2_school_variances_differing_from_average"]) <= 3
    low, high = FINDINGS["model2_icc_range"]
    assert abs(groups.icc.min() - low) <= 0.02 and abs(groups.icc.max() - high) <= 0.02
    average = result.derived_draws()["icc_average"].mean()
    assert abs(average - FINDINGS["model2_icc_population_average"]) <= 0.02
    # every interval brackets its posterior mean
    assert (groups["variance low"] <= groups.variance).all() and (groups.variance <= groups["variance high"]).all()


def test_published_reductions_model2_to_3(posterior):
    before, after = posterior("2").derived_draws(), posterior("3").derived_draws()
    expected = {"between_variance": "model2_to_3_between_school_variance_reduction_pct",
                "variance_mean": "model2_to_3_mean_of_school_variances_reduction_pct",
                "variance_variance": "model2_to_3_variance_of_school_variances_reduction_pct"}
    for quantity, key in expected.items():
        reduction = 100 * (1 - after[quantity].mean() / before[quantity].mean())
        assert abs(reduction - FINDINGS[key]) <= 5, (quantity, reduction)


def test_observed_mean_variance_correlation(tutorial):
    observed = tutorial.groupby("school").normexam.agg(["mean", "var"])
    r = np.corrcoef(observed["mean"], observed["var"])[0, 1]
    assert abs(r - FINDINGS["observed_school_mean_vs_variance_correlation"]) < 0.01


def test_seed_reproducible_and_cli_json(tutorial, capsys):
    import json

    from melsm.cli import main

    model = melsm.Model("normexam ~ 1 + (1 | school)", within="~ 1 + (1 | school)", data=tutorial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = model.sample(chains=4, warmup=100, draws=50, seed=7)
        b = model.sample(chains=4, warmup=100, draws=50, seed=7)
        c = model.sample(chains=4, warmup=100, draws=50, seed=8)
    np.testing.assert_array_equal(a.draws("sd:within:Intercept"), b.draws("sd:within:Intercept"))
    assert not np.array_equal(a.draws("sd:within:Intercept"), c.draws("sd:within:Intercept"))
    code = main(["fit", "tutorial", "--mean", "normexam ~ 1 + (1 | school)", "--within", "~ 1 + (1 | school)",
                 "--method", "mcmc", "--chains", "4", "--warmup", "100", "--draws", "50", "--seed", "7", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["method"] == "mcmc"
    assert out["dic"] == pytest.approx(a.dic["DIC"])
    by_name = {p["name"]: p for p in out["params"]}
    assert by_name["sd:within:Intercept"]["estimate"] == pytest.approx(a.draws("sd:within:Intercept").mean())
    assert by_name["sd:within:Intercept"]["se"] == pytest.approx(a.bse["sd:within:Intercept"])


def test_marginal_criteria_and_compare(posterior, tutorial):
    """With diffuse priors the marginal DIC ≈ AIC of the ML fit (p_D ≈ number of
    parameters), and WAIC / LOO by group are close to it; compare ranks by DIC. On
    MARGINAL_DRAWS draws, as the comparison tables (every draw: tests/test_arviz.py)."""
    fits = [posterior("1"), posterior("2")]
    for result, key in zip(fits, ["1", "2"], strict=True):
        ml = melsm.Model(MODELS[key][0], within=MODELS[key][1], data=tutorial).fit()
        marginal = result.marginal_dic(MARGINAL_DRAWS)
        assert abs(marginal["p_D"] - ml.n_params) < 1.5
        assert abs(marginal["DIC"] - ml.aic) < 3
        assert abs(-2 * result.waic(MARGINAL_DRAWS).elpd_waic - marginal["DIC"]) < 10
        loo = result.loo(MARGINAL_DRAWS)
        assert abs(-2 * loo.elpd_loo - marginal["DIC"]) < 10 and float(loo.pareto_k.max()) < 0.7
    table = melsm.compare(*fits, names=["Model 1", "Model 2"]).criteria
    assert list(table.index) == ["Model 2", "Model 1"]
    assert table.loc["Model 1", "delta"] == pytest.approx(fits[0].dic["DIC"] - fits[1].dic["DIC"])
    assert table.loc["Model 1", "delta"] > 100
    with pytest.raises(melsm.MelsmInputError, match="one kind"):
        melsm.compare(fits[0], melsm.Model(MODELS["1"][0], data=tutorial).fit())


@pytest.mark.parametrize("key", list(MODELS))
def test_default_priors_converge(tutorial, key):
    """At the defaults (priors, chains, warm-up, draws): no divergences, R-hat < 1.01,
    bulk and tail ESS ≥ 400 for every parameter."""
    mean, within = MODELS[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        result = melsm.Model(mean, within=within, data=tutorial).sample()
    assert result.info["divergences"] == 0
    assert result.table().r_hat.max() < 1.01
    assert result.table()[["ess_bulk", "ess_tail"]].min().min() >= 400
