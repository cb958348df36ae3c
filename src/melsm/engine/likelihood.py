"""The marginal log-likelihood of a two-level location-scale model (docs/architecture.md, "The likelihood").

Pure JAX functions of arrays. Random effects b_j = (v_j, u_j) = L_j η_j, η_j ~ N(0, I).
Given the scale part η_v, the location effects enter linearly, so with
D_j = diag(d_i), log d_i = w_iᵀα + s_iᵀ L_vv η_v, T = Z_j G_j (G_j = L_uu,j) and
e = y_j − X_jβ − Z_j L_uv,j η_v:

    log p(y_j | η_v) = −½ [ n_j log 2π + Σ log d_i + log|M| + eᵀD⁻¹e − cᵀM⁻¹c ],
    M = I + TᵀD⁻¹T,  c = TᵀD⁻¹e                              (Woodbury, determinant lemma)

which needs only the per-group sums Σ log d, Σ d⁻¹e², Σ d⁻¹ e z, Σ d⁻¹ z zᵀ (``engine.sums``:
summed once for every η where the scale covariates are constant within groups). The scale
part is integrated by adaptive Gauss–Hermite quadrature around each group's mode η̂_j:

    L_j ≈ |R_j| (2π)^{q_v/2} Σ_k w_k exp(h_j(η̂_j + R_j z_k) + ½|z_k|²),
    h_j(η) = log p(y_j | η) + log φ(η),  R_j = chol((−∇²h_j(η̂_j))⁻¹).

With frequency weights w_i every per-row term (and n_j) is weighted; offsets o_i are added
to x_iᵀβ and to log d_i.

The nodes (η̂_j, R_j) are found by vectorised Newton steps and then held fixed while
the log-likelihood is differentiated with respect to θ.

Under the quadratic association (``params``) the location effect enters the level-1
variance through θ1², so y_j | η_v is no longer Gaussian in η_u: the quadrature then runs
over η = (η_v, η_u) (dimension ``layout.n_agq`` = 2) and nothing is integrated exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from melsm.engine.quadrature import normal_rule
from melsm.engine.rows import ModelData
from melsm.engine.sums import group_sums
from melsm.model.params import ParamLayout, Params

LOG_2PI = float(np.log(2 * np.pi))
#: The node search stops after a Newton step with every |Δη| below this (the next would be ~1e-16).
NEWTON_TOLERANCE = 1e-8


class Nodes(NamedTuple):
    """Adaptive quadrature centres and scales, one per group."""

    mode: jax.Array  # (J, q_v)
    chol: jax.Array  # (J, q_v, q_v), R_j
    log_det: jax.Array  # (J,), log|R_j|
    #: quadratic association only: the nested rule's nodes (``nested_nodes``)
    nested: tuple | None = None


# ---- small symmetric matrices: closed forms for sizes 1 and 2 ------------------------
def small_inverse_logdet(M):
    """Inverse and log-determinant of a batch of small SPD matrices (..., q, q)."""
    q = M.shape[-1]
    if q == 0:
        return M, jnp.zeros(M.shape[:-2])
    if q == 1:
        return 1.0 / M, jnp.log(M[..., 0, 0])
    if q == 2:
        a, b, d = M[..., 0, 0], M[..., 0, 1], M[..., 1, 1]
        det = a * d - b * b
        inv = jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-b, a], -1)], -2) / det[..., None, None]
        return inv, jnp.log(det)
    chol = jnp.linalg.cholesky(M)
    eye = jnp.broadcast_to(jnp.eye(q), M.shape)
    inv = jax.scipy.linalg.cho_solve((chol, True), eye)
    return inv, 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)


def small_cholesky(S):
    """Lower Cholesky factor of a batch of small SPD matrices."""
    q = S.shape[-1]
    if q == 1:
        return jnp.sqrt(S)
    if q == 2:
        l11 = jnp.sqrt(S[..., 0, 0])
        l21 = S[..., 1, 0] / l11
        l22 = jnp.sqrt(S[..., 1, 1] - l21 * l21)
        zero = jnp.zeros_like(l11)
        return jnp.stack([jnp.stack([l11, zero], -1), jnp.stack([l21, l22], -1)], -2)
    return jnp.linalg.cholesky(S)


# ---- the likelihood given the scale effects ------------------------------------------
def group_factors(params: Params, data: ModelData, layout: ParamLayout):
    """β, α and the blocks of L_j = S_j L: L_vv,j (J,q_v,q_v), L_uv,j (J,q_u,q_v),
    L_uu,j (J,q_u,q_u), with S_j the groups' level-2 SD multipliers (``ParamLayout``)."""
    qv = layout.q_v
    L_j = layout.group_cholesky(params, data.G)
    return params.beta, params.alpha, L_j[:, :qv, :qv], L_j[:, qv:, :qv], L_j[:, qv:, qv:]


def quadratic_effects(params: Params, L_vv_j, L_uv_j, L_uu_j, eta, layout: ParamLayout):
    """(v_j, u_j) under the quadratic association from η_j = (η_v, η_u) (J, 2) and the
    blocks of the groups' factors (``group_factors``): b_v = L_vv η_v, u = b_u = L_uv η_v
    + L_uu η_u, v_j = b_v,j + τ_q θ1_j² with θ1_j = b_u,j / σ_u,j (MIXREGLS'
    v = τ_l θ1 + τ_q θ1² + σ θ2, u = σ_u θ1; see ``params``)."""
    l_vv, l_uv, l_uu = L_vv_j[:, 0, 0], L_uv_j[:, 0, 0], L_uu_j[:, 0, 0]
    u = l_uv * eta[:, 0] + l_uu * eta[:, 1]
    theta1 = u / jnp.sqrt(l_uv * l_uv + l_uu * l_uu)
    return (l_vv * eta[:, 0] + params.assoc[0] * theta1**2)[:, None], u[:, None]


def conditional_terms(params: Params, data: ModelData, eta, layout: ParamLayout):
    """log p(y_j | η_j) for all groups, with the Gaussian posterior of η_u.

    η_j is η_v (the scale part); under the quadratic association it is (η_v, η_u) and
    nothing is integrated exactly. Returns (logp (J,), mean of η_u | η_v, y (J,q_u),
    covariance M⁻¹ (J,q_u,q_u)); the last two are empty under the quadratic association.
    """
    beta, alpha, L_vv_j, L_uv_j, L_uu_j = group_factors(params, data, layout)
    qu = layout.q_u if layout.association.location_exact else 0
    n_groups = data.G.shape[0]
    if layout.association.location_in_scale:
        v, shift = quadratic_effects(params, L_vv_j, L_uv_j, L_uu_j, eta, layout)
    else:
        v = jnp.sum(L_vv_j * eta[:, None, :], axis=-1)  # (J, q_v)
        shift = jnp.sum(L_uv_j * eta[:, None, :], axis=-1) if qu and layout.q_v else None  # (J, q_u)
    sum_log_d, sum_dee, sum_dez, S_zz = group_sums(data, beta, alpha, v, shift, qu)
    logp = -0.5 * (data.n_per_group * LOG_2PI + sum_log_d + sum_dee)
    if not qu:
        empty = jnp.zeros((n_groups, 0))
        return logp, empty, jnp.zeros((n_groups, 0, 0))
    A = jnp.einsum("jab,jac,jcd->jbd", L_uu_j, S_zz, L_uu_j)
    c = jnp.einsum("jab,ja->jb", L_uu_j, sum_dez)
    M = A + jnp.eye(qu)
    M_inv, logdet_M = small_inverse_logdet(M)
    post_mean = jnp.einsum("jab,jb->ja", M_inv, c)
    logp = logp - 0.5 * (logdet_M - jnp.sum(c * post_mean, axis=1))
    return logp, post_mean, M_inv


def log_joint(params: Params, data: ModelData, eta, layout: ParamLayout):
    """h_j(η) = log p(y_j | η) + log φ(η), per group."""
    logp = conditional_terms(params, data, eta, layout)[0]
    return logp - 0.5 * jnp.sum(eta**2, axis=1) - 0.5 * layout.n_agq * LOG_2PI


def _block_columns(linear, n_groups: int, qv: int):
    """Per-group q_v × q_v matrices of a block-diagonal linear map on (J, q_v) arrays."""
    tangents = jnp.broadcast_to(jnp.eye(qv)[:, None, :], (qv, n_groups, qv))
    return jnp.moveaxis(jax.vmap(linear)(tangents), 0, -1)  # (J, q, q): [:, :, k] = column k


def _solve_blocks(A, b):
    """Solve A_j x_j = b_j for all groups (A: (J,q,q), b: (J,q))."""
    inverse, _ = small_inverse_logdet(A)
    return jnp.einsum("jab,jb->ja", inverse, b)


def find_nodes(params: Params, data: ModelData, eta_start, layout: ParamLayout, n_newton: int,
               implicit: bool = True) -> Nodes:
    """Mode and curvature of each h_j: vectorised, safeguarded Newton steps, at most
    ``n_newton``, stopping after a step whose largest entry is below ``NEWTON_TOLERANCE``
    (from a warm start at the modes, as for the Hessian's differences, one step).

    The mode is a root of ∇_η h(η; θ) defined through ``jax.lax.custom_root``, so its
    derivative in θ is the implicit one, −(∇²_η h)⁻¹ ∂(∇_η h)/∂θ, not a derivative of
    the Newton iterations. R_j and |R_j| follow from −∇²_η h at the mode by autodiff:
    the quadrature rule is a differentiable function of θ (needed for the Laplace
    approximation, K = 1, whose gradient is all in the nodes' movement).
    """
    qv, n_groups = layout.n_agq, eta_start.shape[0]

    def grad_eta(eta):
        return jax.grad(lambda e: jnp.sum(log_joint(params, data, e, layout)))(eta)

    def neg_hessian(f, eta):
        A = -_block_columns(lambda t: jax.jvp(f, (eta,), (t,))[1], n_groups, qv)
        return 0.5 * (A + jnp.swapaxes(A, -1, -2))

    def positive(A):
        # Far from the mode −∇²h may be indefinite: shift its spectrum to stay ascending.
        # (The shift is held constant under differentiation: eigenvalue derivatives are NaN
        # where two coincide, as for the empty padding groups' A = I.)
        low = jax.lax.stop_gradient(jnp.linalg.eigvalsh(A)[..., 0])
        return A + jnp.maximum(0.0, 1e-3 - low)[:, None, None] * jnp.eye(qv)

    def solve(f, start):
        def newton_step(carry):
            k, eta, _ = carry
            A = positive(neg_hessian(f, eta))
            step = _solve_blocks(A, f(eta))
            size = jnp.sqrt(jnp.sum(step**2, axis=1, keepdims=True) + 1e-300)
            step = step * jnp.minimum(1.0, 2.0 / size)
            return k + 1, eta + step, jnp.max(jnp.abs(step), initial=0.0)

        def going(carry):  # Newton converges quadratically: after a step below the
            k, _, last = carry  # tolerance the mode is exact to rounding
            return (k < n_newton) & (last > NEWTON_TOLERANCE)

        return jax.lax.while_loop(going, newton_step, (0, start, jnp.inf))[1]

    def tangent_solve(linear, rhs):
        return _solve_blocks(_block_columns(linear, n_groups, qv), rhs)

    if implicit:
        mode = jax.lax.custom_root(grad_eta, jax.lax.stop_gradient(eta_start), solve, tangent_solve)
    else:  # no derivative wanted: plain iterations compile much faster
        mode = solve(grad_eta, eta_start)
    A = positive(neg_hessian(grad_eta, mode))  # unchanged at a converged mode
    cov, logdet_A = small_inverse_logdet(A)
    return Nodes(mode=mode, chol=small_cholesky(cov), log_det=-0.5 * logdet_A)


def node_points(nodes: Nodes, n_quad: int, q_v: int):
    """Quadrature points η_jk = η̂_j + R_j z_k (K, J, q_v) and the rule's terms."""
    z, logw = normal_rule(n_quad, q_v)
    points = nodes.mode[None] + jnp.einsum("jab,kb->kja", nodes.chol, jnp.asarray(z))
    return points, jnp.asarray(logw + 0.5 * np.sum(z**2, axis=1))


def inner_points(n_quad: int) -> int:
    """Inner points of the nested rule for ``n_quad`` outer points: the inner integrand is
    skewed (its right tail can be e⁵ above the Gaussian's at 5 SDs), so it needs about four
    times as many (measured on the Riesby data: 11 × 41 points are within 1e-5 of the
    limit, 11 × 11 only within 1e-2)."""
    return 4 * n_quad - 3


def nested_nodes(params: Params, data: ModelData, nodes: Nodes, layout: ParamLayout, n_quad: int,
                 n_newton: int = 4) -> Nodes:
    """Nodes of the nested rule of the quadratic association, over η = (η_v, η_u).

    A tensor rule on the joint mode and curvature converges slowly here (the location
    effect's posterior, the level-1 variance unknown, is a scale mixture with heavy
    tails). Given η_v, u enters the variance only through τ_q θ1², and for τ_q = 0 the
    integrand in η_u is exactly Gaussian, so the nested rule

        L_j = ∫ φ(η_v) ∫ p(y_j | η_v, η_u) φ(η_u) dη_u dη_v

    is as accurate as the linear model's: outer nodes η_v,k = η̂_v + s z_k (s² the joint
    mode's posterior variance of η_v), and for each an inner rule η_u,km = t_k + s_k z_m
    around the conditional mode t_k of η_u (Newton steps from the joint mode's regression
    line), s_k = (−∂²h/∂η_u²)^(−½).
    """
    z, _ = normal_rule(n_quad, 1)
    z = jnp.asarray(z[:, 0])
    cov = jnp.einsum("jab,jcb->jac", nodes.chol, nodes.chol)
    s1 = jnp.sqrt(cov[:, 0, 0])
    t1 = nodes.mode[None, :, 0] + s1[None] * z[:, None]  # (K, J)
    t2 = nodes.mode[None, :, 1] + (cov[:, 1, 0] / cov[:, 0, 0])[None] * (t1 - nodes.mode[None, :, 0])

    def h(t2):
        return jax.vmap(lambda a, b: log_joint(params, data, jnp.stack([a, b], -1), layout))(t1, t2)

    grad = jax.grad(lambda t: jnp.sum(h(t)))  # the groups and outer nodes are separable

    def curvature(t):
        return -jax.jvp(grad, (t,), (jnp.ones_like(t),))[1]

    def newton_step(_, t):
        step = grad(t) / jnp.maximum(curvature(t), 1e-3)
        return t + jnp.clip(step, -2.0, 2.0)

    t2 = jax.lax.fori_loop(0, n_newton, newton_step, t2)
    log_s2 = -0.5 * jnp.log(jnp.maximum(curvature(t2), 1e-12))
    return nodes._replace(nested=(t1, t2, log_s2, jnp.log(s1)))


def quadrature_points(params: Params, data: ModelData, nodes: Nodes, layout: ParamLayout, n_quad: int):
    """Points (P, J, n_agq) and log terms (P, J) with log L_j = logsumexp_p(h_j(η_p) + term_p,j).

    Tensor AGQ: term = log|R_j| + (d/2) log 2π + log w_k + ½|z_k|². The quadratic
    association's nested rule (``nested_nodes``): term = log s1 + log s_k + log 2π
    + log w_k + ½z_k² + log w_m + ½z_m²."""
    if not layout.association.nested_rule:
        points, log_terms = node_points(nodes, n_quad, layout.n_agq)
        return points, log_terms[:, None] + nodes.log_det[None] + 0.5 * layout.n_agq * LOG_2PI
    if nodes.nested is None:
        nodes = nested_nodes(params, data, nodes, layout, n_quad)
    t1, t2, log_s2, log_s1 = nodes.nested
    z_outer, logw_outer = normal_rule(n_quad, 1)
    z, logw = normal_rule(inner_points(n_quad), 1)
    outer_term = jnp.asarray(logw_outer + 0.5 * z_outer[:, 0] ** 2)
    inner_term = jnp.asarray(logw + 0.5 * z[:, 0] ** 2)
    theta2 = t2[:, None] + jnp.exp(log_s2)[:, None] * jnp.asarray(z[:, 0])[None, :, None]  # (K, M, J)
    theta1 = jnp.broadcast_to(t1[:, None], theta2.shape)
    log_terms = (outer_term[:, None, None] + inner_term[None, :, None] + log_s2[:, None]
                 + log_s1[None, None] + LOG_2PI)
    n_groups = t1.shape[1]
    return (jnp.stack([theta1, theta2], -1).reshape(-1, n_groups, 2),
            log_terms.reshape(-1, n_groups))


def group_loglik(params: Params, data: ModelData, nodes: Nodes | None, layout: ParamLayout, n_quad: int):
    """log L_j for every group (closed form without scale effects, else AGQ)."""
    n_groups = data.G.shape[0]
    if layout.n_agq == 0:
        return conditional_terms(params, data, jnp.zeros((n_groups, 0)), layout)[0]
    points, log_terms = quadrature_points(params, data, nodes, layout, n_quad)
    h = jax.vmap(lambda eta: log_joint(params, data, eta, layout))(points)  # (P, J)
    return jax.scipy.special.logsumexp(h + log_terms, axis=0)


def loglik(params: Params, data: ModelData, nodes: Nodes | None, layout: ParamLayout, n_quad: int):
    """log L = Σ_j log L_j (``group_loglik``)."""
    return jnp.sum(group_loglik(params, data, nodes, layout, n_quad))


def random_effect_posterior(params: Params | jax.Array, data: ModelData, nodes: Nodes | None, layout: ParamLayout,
                            n_quad: int):
    """Posterior mean (J,q) and covariance (J,q,q) of b_j = (v_j, u_j) given y_j.

    A mixture over the quadrature nodes of η_v: given η_v, η_u is Gaussian with mean
    M⁻¹c and covariance M⁻¹, so b_j | η_v has mean (L_vv η_v, L_uv η_v + G M⁻¹c) and
    covariance blockdiag(0, G M⁻¹ Gᵀ) (L_vv, L_uv, G: the group's own, L_j = S_j L).
    Under the quadratic association the nodes are over (η_v, η_u) and b_j is a function
    of them (``quadratic_effects``): its conditional covariance is 0. ``params``: ``Params``
    or the optimiser's θ.
    """
    params = layout.as_params(params)
    _, _, L_vv_j, L_uv_j, L_uu_j = group_factors(params, data, layout)
    n_groups = data.G.shape[0]
    if layout.n_agq == 0:
        points = jnp.zeros((1, n_groups, 0))
        log_terms = jnp.zeros((1, n_groups))
    else:
        points, log_terms = quadrature_points(params, data, nodes, layout, n_quad)
    qv = layout.q_v

    def at_node(eta):
        logp, m_u, cov_u = conditional_terms(params, data, eta, layout)
        h = logp - 0.5 * jnp.sum(eta**2, axis=1)
        if layout.association.location_in_scale:
            v, u = quadratic_effects(params, L_vv_j, L_uv_j, L_uu_j, eta, layout)
            return h, jnp.concatenate([v, u], axis=1), jnp.zeros((n_groups, layout.q_u, layout.q_u))
        v = jnp.einsum("jab,jb->ja", L_vv_j, eta)
        u = jnp.einsum("juv,jv->ju", L_uv_j, eta) + jnp.einsum("jab,jb->ja", L_uu_j, m_u)
        cu = jnp.einsum("jab,jbc,jdc->jad", L_uu_j, cov_u, L_uu_j)
        return h, jnp.concatenate([v, u], axis=1), cu

    h, means, cov_u = jax.vmap(at_node)(points)
    weights = jax.nn.softmax(h + log_terms, axis=0)  # (K, J)
    mean = jnp.einsum("kj,kja->ja", weights, means)
    second = jnp.einsum("kj,kja,kjb->jab", weights, means, means)
    cond = jnp.zeros_like(second).at[:, qv:, qv:].set(jnp.einsum("kj,kjab->jab", weights, cov_u))
    cov = cond + second - jnp.einsum("ja,jb->jab", mean, mean)
    return mean, cov
