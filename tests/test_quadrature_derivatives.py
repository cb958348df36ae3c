"""Derivatives of the AGQ log-likelihood: through the moving nodes, and held fixed.

Below 5 points (and for the Laplace approximation, K = 1) the optimiser differentiates
through the quadrature nodes (implicit differentiation of the modes); the gradient must
equal central finite differences of the objective itself. From 5 points on the nodes
are held fixed, which must change the SEs by less than 1%.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fit

from melsm.estimate.ml import derivatives, value_grad_nodes

MEAN, WITHIN = "hamdep ~ week + endog + endweek + (1 | id)", "~ week + endog + (1 | id)"


@pytest.fixture(scope="module")
def laplace(reisby):
    return fit(reisby, MEAN, WITHIN, "~ endog", "linear", quadrature=1)


def test_laplace_converges_near_agq(laplace, reisby):
    agq = fit(reisby, MEAN, WITHIN, "~ endog", "linear")
    assert laplace.converged and laplace.n_quad == 1
    assert abs(laplace.loglik - agq.loglik) < 0.5
    assert np.all(np.abs(laplace.params - agq.params) < 0.5 * agq.bse)


def test_gradient_through_nodes_matches_finite_differences(laplace):
    model = laplace.model
    theta = np.asarray(laplace.theta) + 0.05  # away from the optimum: a non-zero gradient
    eta0 = np.zeros((model.model_data.G.shape[0], 1))  # padded groups included

    def value(t):
        return float(value_grad_nodes(jnp.asarray(t), model.model_data, eta0, jnp.asarray(t), model.layout, 1,
                                      nodes_move=True)[0])

    grad = np.asarray(value_grad_nodes(jnp.asarray(theta), model.model_data, eta0, jnp.asarray(theta), model.layout, 1,
                                       nodes_move=True)[1])
    h = 1e-5
    numeric = np.array([(value(theta + h * e) - value(theta - h * e)) / (2 * h) for e in np.eye(len(theta))])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5)


def test_fixed_nodes_change_standard_errors_by_under_one_percent(reisby):
    result = fit(reisby, MEAN, WITHIN, "~ endog", "linear", quadrature=7)
    model = result.model
    eta = np.asarray(result._opt.nodes.mode)
    args = (jnp.asarray(result.theta), model.model_data, eta, model.layout, 7)
    fixed = np.asarray(derivatives(*args, nodes_move=False)[2])
    moving = np.asarray(derivatives(*args, nodes_move=True)[2])
    se_fixed = np.sqrt(np.diag(np.linalg.inv(-fixed)))
    se_moving = np.sqrt(np.diag(np.linalg.inv(-moving)))
    np.testing.assert_allclose(se_fixed, se_moving, rtol=1e-2)


@pytest.mark.parametrize("quadrature, nodes_move, association", [
    (7, False, "linear"), (1, True, "linear"), (3, True, "linear"), (None, False, "none")],
    ids=["fixed-nodes", "laplace", "moving-nodes", "closed-form"])
def test_differenced_hessian_matches_autodiff(reisby, quadrature, nodes_move, association):
    """The fit's Hessian (central differences of the autodiff gradient) against JAX's own
    Hessian of the same function, at the optimum and away from it."""
    from melsm.estimate.ml import _Objective

    within = WITHIN if quadrature else "~ week + endog"
    result = fit(reisby, "hamdep ~ week + endog + endweek + (1 | id)", within, None, association,
                 quadrature=quadrature)
    model = result.model
    data, layout = model.internal_data, model.layout
    for shift in (0.0, 0.03):
        theta = model.units.to_internal(result.theta) + shift
        objective = _Objective(data, layout, quadrature or 1, data.G.shape[0], nodes_move=nodes_move)
        _, grad, hessian = objective.second_order(theta)
        _, grad_ad, hessian_ad = derivatives(jnp.asarray(theta), data, jnp.asarray(objective.eta), layout,
                                             quadrature or 1, nodes_move)
        np.testing.assert_allclose(grad, np.asarray(grad_ad), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(hessian, np.asarray(hessian_ad), rtol=1e-5,
                                   atol=1e-6 * np.max(np.abs(hessian_ad)))
