"""Profile-likelihood intervals, ``fit.conf_int(method="profile")`` (melsm.results.profile,
melsm.estimate.profile; docs/architecture.md, 'Profile-likelihood intervals').

- The reparameterisations θ(φ, c) hit the constraint exactly in every model form.
- Against lme4's ``confint(method = "profile")`` (tests/reference/lme4_profile.R, .json):
  measured agreement with lme4's default profile is within 1.3e-4 relative (its spline
  interpolation between profile points; largest: the upper end of London's random-slope
  SD), and within 1.8e-5 relative of the same profile computed on an 8 times finer grid.
  Tolerances: 5e-4 and 1e-4 relative.
- Each end satisfies 2(ℓ̂ − pl(c)) = χ²₁(0.95), pl(c) re-evaluated independently (SLSQP
  with the constraint g(θ) = c from θ̂): to 1e-6.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats
from conftest import fit, reference

import melsm
from melsm.estimate.convergence import identified
from melsm.estimate.objective import FIXED_NODES_FROM, Objective
from melsm.estimate.profile import reparam

CHI2 = float(scipy.stats.chi2.ppf(0.95, 1))
LME4 = reference("lme4_profile.json")["fits"]


# ---- the reparameterisations ------------------------------------------------------------------

LAYOUTS = {
    "london_model6": ("tutorial", dict(mean="normexam ~ standlrt + girl + (standlrt | school)",
                                       within="~ standlrt + girl + (standlrt | school)")),
    "reisby_none_between": ("reisby", dict(mean="hamdep ~ week + endog + (week | id)",
                                           within="~ week + (1 | id)", between="~ endog", association="none")),
    "reisby_slope_function": ("reisby", dict(mean="hamdep ~ week + (week | id)", within="~ week + (1 | id)",
                                             between={"mean:week": "~ endog"})),
    "reisby_quadratic": ("reisby", dict(mean="hamdep ~ week + (1 | id)", within="~ week + (1 | id)",
                                        association="quadratic")),
    "reisby_uncorrelated": ("reisby", dict(mean="hamdep ~ week + (week || id)", within="~ week + (week | id)")),
    "reisby_corr_function": ("reisby", dict(mean="hamdep ~ week + (1 | id)", within="~ 1 + (1 | id)",
                                            between={"corr:mean:Intercept,within:Intercept": "~ endog"})),
}


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_reparameterisation_is_exact(key, reisby, tutorial):
    """θ(φ(θ), g(θ)) = θ, and g(θ(φ, c)) = c for any φ and c: the constrained maximisation
    runs over exactly {θ : g(θ) = c}."""
    data, formulas = LAYOUTS[key]
    layout = melsm.Model(data={"reisby": reisby, "tutorial": tutorial}[data], **formulas).layout
    rng = np.random.default_rng(1)
    theta = 0.4 * rng.standard_normal(layout.n_params)
    reported = np.asarray(layout.report(jnp.asarray(theta)))
    for k, pid in enumerate(layout.reported_ids()):
        rep = reparam(layout, k)
        phi = rep.phi(theta)
        assert len(phi) == rep.dim == layout.n_params - 1, pid
        np.testing.assert_allclose(rep.theta(jnp.asarray(phi), reported[k], theta), theta, atol=1e-12, err_msg=str(pid))
        c = reported[k] * 1.3 if rep.kind == "sd" else (
            np.tanh(np.arctanh(reported[k]) + 0.3) if rep.kind == "corr" else reported[k] + 0.3)
        moved = rep.theta(jnp.asarray(phi + 0.2 * rng.standard_normal(len(phi))), c, theta)
        assert float(layout.report(moved)[k]) == pytest.approx(c, rel=1e-12, abs=1e-12), pid
