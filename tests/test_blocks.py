"""The likelihood in blocks of groups (``melsm.engine.blocks``) against the whole-data
path: with 7 groups per block (a partial last block; padded groups and chunks in every
block) log L, its gradient and whole fits (estimates, SEs, quadrature modes, empirical-Bayes
predictions) agree to 1e-9, for every kind of model the likelihood knows. Where the scale
effects' covariates are constant within groups the blocks sum the rows once for every
quadrature point (``engine.sums.constant_scale_sums``), so those cases check the factored
sums against the whole data's row-by-row sums as well."""

import functools
import warnings

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm import pipeline
from melsm.engine import blocks
from melsm.engine.blocks import Blocks, block_data, bucket_floor, plan, rows_per_block
from melsm.engine.rows import ModelData, bucket
from melsm.estimate.objective import FIXED_NODES_FROM, Objective, default_quadrature

GROUPS_PER_BLOCK = 7
N_GROUPS = 45  # 6 full blocks of 7 and a last one of 3

CASES = {
    "location-only": dict(mean="y ~ x + (1 | g)", within="~ x"),
    "intercepts": dict(mean="y ~ x + (1 | g)", within="~ x + (1 | g)"),
    "slopes": dict(mean="y ~ x + (x | g)", within="~ x + (x | g)"),
    "level2": dict(mean="y ~ x + (1 | g)", within="~ x + (1 | g)", between="~ h"),
    "weights-offsets": dict(mean="y ~ x + offset(o) + (1 | g)", within="~ x + offset(lo) + (1 | g)",
                            weights="w"),
    "quadratic": dict(mean="y ~ x + (1 | g)", within="~ x + (1 | g)", association="quadratic"),
}


@pytest.fixture(scope="module")
def frame():
    """Groups of 4–30 rows, random intercepts and slopes in both functions (correlated),
    a group covariate h that changes the location intercept's variance."""
    rng = np.random.default_rng(7)
    sizes = rng.integers(4, 31, N_GROUPS)
    g = np.repeat(np.arange(N_GROUPS), sizes)
    h = rng.integers(0, 2, N_GROUPS)
    sd = np.array([0.6, 0.3, 0.5, 0.3])  # u0, u1, v0, v1
    corr = np.full((4, 4), 0.3) + 0.7 * np.eye(4)
    b = rng.multivariate_normal(np.zeros(4), corr * np.outer(sd, sd), N_GROUPS)
    b[:, 0] *= np.exp(0.4 * h)
    x = rng.standard_normal(g.size)
    log_var = 0.2 * x + b[g, 2] + b[g, 3] * x
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + np.exp(0.5 * log_var) * rng.standard_normal(g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": h[g], "w": rng.integers(1, 4, g.size),
                         "o": 0.3 * x, "lo": 0.1 * x})


def _fit(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(progress=False)


def _objective(model, data):
    layout = model.layout
    n_quad = default_quadrature(layout)
    nodes_move = layout.n_agq > 0 and (n_quad < FIXED_NODES_FROM or layout.association.nested_rule)
    return Objective(data, layout, n_quad, blocks.group_slots(data), nodes_move)


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_match_the_whole_data(frame, case, monkeypatch):
    whole = melsm.Model(data=frame, **CASES[case])
    assert isinstance(whole.internal_data, ModelData)  # small data: one block, as before
    fit_whole = _fit(whole)
    monkeypatch.setattr(pipeline, "block_data", functools.partial(block_data, max_groups=GROUPS_PER_BLOCK))
    split = melsm.Model(data=frame, **CASES[case])
    data = split.internal_data
    assert isinstance(data, Blocks) and len(data.parts) == -(-N_GROUPS // GROUPS_PER_BLOCK)
    assert len({tuple(a.shape for a in part if a is not None) for part in data.parts}) == 1
    assert np.bincount(data.group_part).tolist() == [7] * 6 + [3]

    # small data sum row by row; blocks sum the rows once for all points where they can
    assert whole.internal_data.Sv is None
    assert all((part.Sv is not None) == (case not in ("location-only", "slopes")) for part in data.parts)
    theta_hat = whole.units.to_internal(fit_whole.theta)
    for theta in (theta_hat, theta_hat + 0.05):
        value, grad, _ = _objective(whole, whole.internal_data).evaluate(theta)
        value_b, grad_b, _ = _objective(split, data).evaluate(theta)
        assert value_b == pytest.approx(value, abs=1e-9, rel=1e-12)
        np.testing.assert_allclose(grad_b, grad, rtol=1e-9, atol=1e-9)

    fit_split = _fit(split)
    assert fit_split.converged == fit_whole.converged
    assert fit_split.loglik == pytest.approx(fit_whole.loglik, abs=1e-9)
    np.testing.assert_allclose(fit_split.params, fit_whole.params, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fit_split.bse, fit_whole.bse, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit_split.modes, fit_whole.modes, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(fit_split.random_effects().to_numpy(), fit_whole.random_effects().to_numpy(),
                               rtol=1e-8, atol=1e-9)


def test_plan_fills_blocks_with_whole_groups():
    chunks = np.array([2, 3, 1, 9, 2, 2, 1])
    # at most 5 chunks a block; the group of 9 chunks gets a block of its own
    assert plan(chunks, 5).tolist() == [0, 2, 3, 4, 7]
    assert plan(chunks, 5, max_groups=2).tolist() == [0, 2, 3, 4, 6, 7]
    assert plan(chunks, 100).tolist() == [0, 7]


def test_block_size_rule(monkeypatch):
    assert rows_per_block(11, budget=11 * blocks.BYTES_PER_ROW_POINT * 10**5) == 10**5
    assert rows_per_block(10**4, budget=2**20) == blocks.MIN_BLOCK_ROWS
    monkeypatch.setenv("MELSM_BLOCK_BYTES", str(2**30))
    assert blocks.block_budget() <= 2**30


def test_blocks_fill_to_a_bucket_size():
    """``bucket_floor(n)`` is the largest bucket size (m·2^k, m in 4..7) not above n, so a
    block filled to it is not padded further (334 chunks allowed: 320, not 384 padded)."""
    sizes = sorted({bucket(n) for n in range(1, 5000)})
    for n in range(1, 5000):
        assert bucket_floor(n) == max(s for s in sizes if s <= n)
    assert (bucket_floor(334), bucket_floor(5349)) == (320, 5120)
