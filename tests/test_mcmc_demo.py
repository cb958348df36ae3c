"""The demo's MCMC settings: London Model 6 (random slopes in both functions, the slowest
to mix) converges by the package's own criteria, as the demo runs it."""

import warnings

import pytest

import melsm
from melsm.demo import DEMO_MCMC, LONDON_MODELS
from melsm.results.mcmc import ESS_LIMIT, RHAT_LIMIT


@pytest.mark.slow
def test_model6_converges_at_the_demo_settings(tutorial):
    model = melsm.Model(*LONDON_MODELS["Model 6"], data=tutorial)
    ml = model.fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        post = model.sample(**DEMO_MCMC, seed=0, start=ml, progress=False)  # the demo's seed
    table = post.table()
    assert post.converged and post.problems == [] and post.info["divergences"] == 0
    assert table.r_hat.max() < RHAT_LIMIT
    assert table[["ess_bulk", "ess_tail"]].min().min() >= ESS_LIMIT
    # the scale random slope's SD, slowest to mix, has room to spare
    assert table.loc["sd:within:standlrt", "ess_bulk"] >= 3 * ESS_LIMIT
    # and the posterior is where the likelihood puts it: fixed effects within a posterior SD of ML
    fixed = [n for n in ml.names if n.split(":")[0] in ("mean", "within")]
    distance = (table.loc[fixed, "estimate"] - ml.params[fixed]).abs() / table.loc[fixed, "std_error"]
    assert distance.max() < 1.0, distance
