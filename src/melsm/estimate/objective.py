"""The ML objective: log L(θ) with adaptive quadrature, its autodiff gradient, and a
Hessian by central differences of that gradient (docs/architecture.md, 'Maximum likelihood').

θ is the optimiser's vector (``ParamLayout.params`` unpacks it); the quadrature nodes are
found at θ and, from ``FIXED_NODES_FROM`` points on, held fixed while differentiating.
"""

from __future__ import annotations

import jax
import numpy as np

from melsm.engine import jax_config as _jax  # noqa: F401  (float64, compilation cache)
from melsm.engine.blocks import Blocks
from melsm.engine.compiled import compiled
from melsm.engine.likelihood import find_nodes, loglik, nested_nodes
from melsm.engine.rows import ModelData
from melsm.model.params import ParamLayout

#: Default Gauss–Hermite points per scale dimension, chosen by measured accuracy
#: (bench/quadrature_accuracy.py): the log-likelihood is within 1e-5 of its limit.
DEFAULT_QUADRATURE = {1: 11, 2: 7}
#: Newton steps for the quadrature modes (warm-started, they converge in 3–4).
N_NEWTON = 6
#: From this many points on, derivatives hold the quadrature nodes fixed (cheaper to
#: run and to compile; the difference from differentiating through them is below the
#: quadrature error). Below it, and for the Laplace approximation, they move.
FIXED_NODES_FROM = 5
#: Step of the central differences of the gradient that give the Hessian, relative to
#: max(1, |θ_k|) on the standardised scale (``Objective.second_order``).
HESSIAN_STEP = 1e-4


def default_quadrature(layout: ParamLayout) -> int:
    """Points per dimension (``DEFAULT_QUADRATURE``); the quadratic association's nested
    rule: 11 outer points (×41 inner), within 1e-4 of its limit on the Riesby data."""
    return 11 if layout.association.nested_rule else DEFAULT_QUADRATURE.get(layout.n_agq, 5)


def newton_steps(layout: ParamLayout) -> int:
    """Newton steps for the quadrature modes: the quadratic association's joint posterior of
    (η_v, η_u) need not be log-concave away from the mode, and from a cold start (η = 0)
    Newton took up to 16 steps on the Riesby data."""
    return N_NEWTON if layout.association.location_exact else 2 * N_NEWTON + 4


def _loglik_and_nodes(theta, data: ModelData, eta_start, node_theta, layout: ParamLayout, n_quad: int,
                      nodes_move: bool):
    """log L(θ) with the quadrature nodes found at θ (``nodes_move``) or at ``node_theta``.

    ``nodes_move=True`` differentiates through the nodes (the exact derivative of the
    AGQ approximation); ``False`` holds them fixed where they are at ``node_theta``
    (normally θ itself), which is cheaper and differs from the exact derivative by the
    quadrature error's sensitivity to the nodes — negligible from ``FIXED_NODES_FROM``
    points on, all of it for the Laplace approximation. (``Objective.second_order``
    differentiates the gradient at θ ± h with the nodes of θ.)
    """
    params = layout.params(theta)
    if not layout.n_agq:
        return loglik(params, data, None, layout, n_quad), None
    # Stopping the gradient of θ (not of the nodes) keeps autodiff out of the node search.
    at = params if nodes_move else layout.params(jax.lax.stop_gradient(node_theta))
    nodes = find_nodes(at, data, eta_start, layout, newton_steps(layout), implicit=nodes_move)
    if layout.association.nested_rule:
        nodes = nested_nodes(at, data, nodes, layout, n_quad)
    return loglik(params, data, nodes, layout, n_quad), nodes


@compiled(static_argnames=("layout", "n_quad", "nodes_move"))
def value_grad_nodes(theta, data: ModelData, eta_start, node_theta, layout: ParamLayout, n_quad: int,
                     nodes_move: bool = True):
    """log L(θ), its gradient and the quadrature nodes (found at ``node_theta`` when they
    are held fixed, normally θ itself)."""
    (value, nodes), grad = jax.value_and_grad(_loglik_and_nodes, has_aux=True)(
        theta, data, eta_start, node_theta, layout, n_quad, nodes_move)
    return value, grad, jax.lax.stop_gradient(nodes)


def derivatives(theta, data: ModelData, eta_start, layout: ParamLayout, n_quad: int, nodes_move: bool):
    """log L, its gradient and its Hessian in θ by automatic differentiation (through the
    nodes if ``nodes_move``): the reference for ``Objective.second_order``'s differences.
    Its program takes several times as long to compile as the gradient's, which is why
    fits do not use it."""
    def f(t):
        return _loglik_and_nodes(t, data, eta_start, t, layout, n_quad, nodes_move)[0]
    return jax.jit(lambda t: (*jax.value_and_grad(f)(t), jax.hessian(f)(t)))(theta)


class Objective:
    """−log L and its derivatives for scipy, caching the last point's nodes and Hessian.

    ``data``: a ``ModelData``, or ``engine.blocks.Blocks``, whose blocks are evaluated one
    after the other (log L and its gradient are the sums of the blocks'), so the working
    memory is one block's. The quadrature modes ``eta`` and the nodes are then tuples with
    one entry per block.
    """

    def __init__(self, data, layout, n_quad, n_groups, nodes_move: bool):
        self.data, self.layout, self.n_quad = data, layout, n_quad
        self.nodes_move = nodes_move and layout.n_agq > 0
        if isinstance(data, Blocks):
            self.eta = _zeros_like(tuple(np.zeros((part.G.shape[0], layout.n_agq)) for part in data.parts))
        else:
            self.eta = np.zeros((n_groups, layout.n_agq))
        self._point = None  # (θ bytes, value, grad, nodes)
        self._second = None  # (θ bytes, value, grad, Hessian)

    def evaluate(self, x):
        """(log L, gradient, nodes) at x, the node search warm-started from the last good point's
        modes. A point where the warm start fails (a non-finite value or gradient) is tried
        again from η = 0, and only a point finite in both becomes the next warm start: one bad
        trial step of the line search must not poison every later evaluation."""
        key = x.tobytes()
        if self._point is None or self._point[0] != key:
            value, grad, nodes = self._at(x, self.eta)
            if not _finite(value, grad) and self.layout.n_agq:
                value, grad, nodes = self._at(x, _zeros_like(self.eta))
            if nodes is not None and _finite(value, grad):
                self.eta = tuple(n.mode for n in nodes) if isinstance(self.data, Blocks) else nodes.mode
            self._point = (key, value, grad, nodes)
        return self._point[1:]

    def _at(self, x, eta_start, node_theta=None):
        """(log L, gradient, nodes) at x: Σ over the blocks of blocked data (the sum taken in
        float64, block by block; nodes None without random scale effects)."""
        remote = getattr(self.data, "value_grad_nodes", None)
        if remote is not None:  # data held by a cluster (melsm.distributed.remote) sums its own partitions
            return remote(x, eta_start, x if node_theta is None else node_theta, self.layout, self.n_quad,
                          self.nodes_move)
        node_theta = jax.device_put(x if node_theta is None else node_theta)  # not jnp.asarray (engine.rows)
        if not isinstance(self.data, Blocks):
            value, grad, nodes = value_grad_nodes(jax.device_put(x), self.data, eta_start, node_theta,
                                                  self.layout, self.n_quad, self.nodes_move)
            return float(value), np.asarray(grad), nodes
        # one compiled function for every block (they share a shape), its arrays committed
        theta, node_theta = jax.device_put((x, node_theta), jax.devices()[0])
        run = value_grad_nodes.runner(theta, self.data.parts[0], eta_start[0], node_theta, self.layout,
                                      self.n_quad, self.nodes_move)
        value, grad, nodes = 0.0, np.zeros(len(x)), []
        outs = [run(theta, part, eta, node_theta) for part, eta in zip(self.data.parts, eta_start, strict=True)]
        for v, g, n in outs:
            value, grad = value + float(v), grad + np.asarray(g)
            nodes.append(n)
        return value, grad, (tuple(nodes) if self.layout.n_agq else None)

    def second_order(self, x):
        """(log L, gradient, Hessian) at x. The Hessian is the central difference of the
        autodiff gradient, column k from θ ± h_k e_k with h_k = ``HESSIAN_STEP``·max(1, |θ_k|)
        (on the standardised scale), with the quadrature nodes held where they are at x
        (or moving with θ under ``nodes_move``), then symmetrised: the derivative of the
        gradient that the optimiser uses, accurate to ~1e-7 relative, and no second
        compiled program (an autodiff Hessian, ``derivatives``, took 1.5-2 times as long to
        compile as the gradient)."""
        key = x.tobytes()
        if self._second is None or self._second[0] != key:
            value, grad, _ = self.evaluate(x)
            self._second = (key, value, grad, self._hessian(x))
        return self._second[1:]

    def _hessian(self, x) -> np.ndarray:
        columns = []
        for k in range(len(x)):
            h = HESSIAN_STEP * max(1.0, abs(x[k]))
            step = np.zeros_like(x)
            step[k] = h
            up, down = self._at(x + step, self.eta, node_theta=x), self._at(x - step, self.eta, node_theta=x)
            columns.append((up[1] - down[1]) / (2 * h))
        hessian = np.stack(columns, axis=1) if columns else np.zeros((0, 0))
        return 0.5 * (hessian + hessian.T)

    def fun_and_grad(self, x):
        value, grad, _ = self.evaluate(x)
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            return np.inf, np.zeros_like(x)
        return -value, -grad

    def fun(self, x):
        return self.fun_and_grad(x)[0]

    def exact_jac(self, x):
        return -self.second_order(x)[1]

    def exact_hess(self, x):
        return -self.second_order(x)[2]


def _zeros_like(eta):
    """Zeros for the modes: per block (committed to the device, as the blocks' runner needs), or one array."""
    if isinstance(eta, tuple):
        return jax.device_put(tuple(np.zeros(e.shape) for e in eta), jax.devices()[0])
    return np.zeros_like(eta)


def _finite(value: float, grad: np.ndarray) -> bool:
    return bool(np.isfinite(value)) and bool(np.all(np.isfinite(grad)))


class Subspace:
    """The objective over the free entries of θ, the others held at ``template``'s values."""

    def __init__(self, objective: Objective, template: np.ndarray, free: np.ndarray):
        self.objective, self.template, self.free = objective, np.asarray(template, float), free

    def full(self, x) -> np.ndarray:
        theta = self.template.copy()
        theta[self.free] = x
        return theta

    def fun_and_grad(self, x):
        value, grad = self.objective.fun_and_grad(self.full(x))
        return value, grad[self.free]

    def fun(self, x):
        return self.fun_and_grad(x)[0]

    def jac(self, x):
        return self.objective.exact_jac(self.full(x))[self.free]

    def hess(self, x):
        return self.objective.exact_hess(self.full(x))[np.ix_(self.free, self.free)]
