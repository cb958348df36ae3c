"""ML fits without random scale effects against lme4 / glmmTMB (exact references).

Log-likelihoods agree to 1e-4. Estimates agree to 1e-4 relative, or to 0.2% of a
standard error where the reference optimiser stopped short of that: in those cases our
log-likelihood is the higher one (checked here), so the difference is the reference's.
"""

import numpy as np
import pytest
from conftest import fit, reference

import melsm

REF = reference("exact_ml_lme4_glmmtmb.json")["fits"]


def _close(ours, theirs, se, rel=1e-4):
    ours, theirs, se = (np.atleast_1d(np.asarray(a, float)) for a in (ours, theirs, se))
    tolerance = np.maximum(rel * np.abs(theirs), 2e-3 * se)
    assert np.all(np.abs(ours - theirs) <= tolerance), (ours, theirs, tolerance)


@pytest.mark.parametrize("key", sorted(REF))
def test_matches_lme4_glmmtmb(key):
    case = REF[key]
    data = melsm.datasets.load(case["data"].removesuffix(".csv"))
    result = fit(data, case["mean"], case["within"], case.get("between"))
    ref, p = case["fit"], result.params
    assert result.converged
    assert abs(result.loglik - ref["logLik"]) < 1e-4
    assert result.loglik > ref["logLik"] - 1e-6
    se = result.bse
    mean = [n for n in result.names if n.startswith("mean:")]
    _close(p[mean], ref["fixef"], se[mean])
    within = [n for n in result.names if n.startswith("within:")]
    if "var_e" in ref:
        _close(np.exp(p["within:Intercept"]), ref["var_e"], np.exp(p["within:Intercept"]) * se["within:Intercept"])
    if "disp" in ref:
        _close(p[within], ref["disp"], se[within])
    if "Sigma_u" in ref:
        sigma = result.covariance_matrix().to_numpy()
        sd_u0, sd_u1 = p["sd:mean:Intercept"], p["sd:mean:standlrt"]
        se_sigma = result.delta_method(lambda q: [q["sd:mean:Intercept"] ** 2,
                                                  q["corr:mean:Intercept,mean:standlrt"]
                                                  * q["sd:mean:Intercept"] * q["sd:mean:standlrt"],
                                                  q["sd:mean:standlrt"] ** 2])[1]
        assert sigma[0, 0] == pytest.approx(sd_u0**2) and sigma[1, 1] == pytest.approx(sd_u1**2)
        _close([sigma[0, 0], sigma[0, 1], sigma[1, 1]],
               [ref["Sigma_u"][0][0], ref["Sigma_u"][0][1], ref["Sigma_u"][1][1]], se_sigma)
    elif case.get("between"):
        k0, k1 = p["between:Intercept"], p["between:endog"]
        values, ses = result.delta_method(
            lambda q: [np.e ** q["between:Intercept"], np.e ** (q["between:Intercept"] + q["between:endog"])])
        _close([np.exp(k0), np.exp(k0 + k1)], ref["var_u"], ses)
    else:
        value, se_var = result.delta_method(lambda q: q["sd:mean:Intercept"] ** 2)
        _close(value, ref["var_u"], se_var)
