"""Per-group sums of the rows that log p(y_j | η) needs (docs/architecture.md, "The likelihood").

With D = diag(d_i), log d_i = w_iᵀα + o_i + s_iᵀv_j and e_i = y_i − x_iᵀβ − o'_i − z_iᵀt_j
(v_j the group's scale effects, t_j = L_uv η_v its location shift given η_v), the
Woodbury form of log p(y_j | η) needs Σ log d_i, Σ d_i⁻¹e_i², Σ d_i⁻¹e_i z_i and
Σ d_i⁻¹ z_i z_iᵀ (each row counted w_i times). ``row_sums`` computes them row by row for a
given η. Where the scale effects' covariates are the same on every row of a group
(s_i = s_j: random intercepts in the level-1 variance, or group-level covariates; the data
then carry ``Sv`` instead of per-row ``Zv``), with a_i = w_iᵀα + o_i, r_i = w_i e^{−a_i},
e0_i = y_i − x_iᵀβ − o'_i and v = s_jᵀv_j:

    Σ w log d = Σ w a + n_j v,                    Σ d⁻¹e² = e^{−v} (A_ee − 2 tᵀA_ez + tᵀA_zz t),
    Σ d⁻¹ e z = e^{−v} (A_ez − A_zz t),           Σ d⁻¹ z zᵀ = e^{−v} A_zz,

with A_ee = Σ r e0², A_ez = Σ r e0 z, A_zz = Σ r z zᵀ: sums over the rows that do not depend
on η (``constant_scale_sums``). Each quadrature point then costs a few operations per
group instead of a pass over the group's rows, and the (points × rows) intermediates of
the row path are never formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from melsm.engine.rows import ModelData


def _per_group(data: ModelData, cols: list) -> jax.Array:
    """Σ over each group's rows of the columns (C, c, m), each row counted w_i times."""
    # weights multiply the finished terms; without weights, and in padding, the rows' terms
    # are as they are (0 in padding)
    terms = jnp.concatenate(cols, axis=-1)
    per_chunk = jnp.sum(terms if data.w is None else terms * data.w[..., None], axis=1)  # (C, m)
    return jax.ops.segment_sum(per_chunk, data.chunk_group, num_segments=data.G.shape[0],
                               indices_are_sorted=True)


def _fixed_parts(data: ModelData, beta, alpha):
    """x_iᵀβ + o'_i and w_iᵀα + o_i (C, c). Tiny contractions are written as broadcast-and-sum:
    XLA's CPU dot kernels are slow for batched products with 1–3 terms."""
    mu = jnp.sum(data.X * beta, axis=-1)
    if data.offset_mean is not None:
        mu = mu + data.offset_mean
    log_d = jnp.sum(data.W * alpha, axis=-1)
    if data.offset_within is not None:
        log_d = log_d + data.offset_within
    return mu, log_d


def _square(upper, q: int):
    """(J, q, q) symmetric matrices from their upper triangles (J, q(q+1)/2)."""
    iu, ju = np.triu_indices(q)
    return jnp.zeros((upper.shape[0], q, q)).at[:, iu, ju].set(upper).at[:, ju, iu].set(upper)


def row_sums(data: ModelData, beta, alpha, v, shift, qu: int):
    """(Σ log d, Σ d⁻¹e², Σ d⁻¹ e z (J, qu), Σ d⁻¹ z zᵀ (J, qu, qu)) row by row, for the
    groups' scale effects v (J, q_v) and location shifts ``shift`` (J, q_u, or None)."""
    g = data.chunk_group
    mu, log_d = _fixed_parts(data, beta, alpha)
    if shift is not None:
        mu = mu + jnp.sum(data.Zu * shift[g][:, None, :], axis=-1)
    if v.shape[1]:
        log_d = log_d + jnp.sum(data.Zv * v[g][:, None, :], axis=-1)
    d_inv = jnp.exp(-log_d)
    e = data.y - mu
    de = d_inv * e
    cols = [log_d[..., None], (de * e)[..., None]]
    if qu:
        iu, ju = np.triu_indices(qu)
        cols += [de[..., None] * data.Zu, d_inv[..., None] * data.Zu[..., iu] * data.Zu[..., ju]]
    sums = _per_group(data, cols)
    if not qu:
        return sums[:, 0], sums[:, 1], None, None
    return sums[:, 0], sums[:, 1], sums[:, 2:2 + qu], _square(sums[:, 2 + qu:], qu)


def constant_scale_sums(data: ModelData, beta, alpha, v, shift, qu: int):
    """``row_sums`` where the scale effects' covariates are constant within groups
    (``data.Sv``): the sums over rows are taken independently of η (module docstring)."""
    mu, a = _fixed_parts(data, beta, alpha)
    e0 = data.y - mu
    r = jnp.exp(-a)
    re = r * e0
    q = data.Zu.shape[-1] if (qu or shift is not None) else 0
    cols = [a[..., None], (re * e0)[..., None]]
    if q:
        iu, ju = np.triu_indices(q)
        cols += [re[..., None] * data.Zu, r[..., None] * data.Zu[..., iu] * data.Zu[..., ju]]
    sums = _per_group(data, cols)
    v_j = jnp.sum(data.Sv * v, axis=1)  # (J,)
    sum_log_d, a_ee = sums[:, 0] + data.n_per_group * v_j, sums[:, 1]
    if not q:
        return sum_log_d, jnp.exp(-v_j) * a_ee, None, None
    a_ez, a_zz = sums[:, 2:2 + q], _square(sums[:, 2 + q:], q)
    if shift is not None:
        zz_t = jnp.sum(a_zz * shift[:, None, :], axis=-1)  # A_zz t
        a_ee = a_ee - 2.0 * jnp.sum(shift * a_ez, axis=1) + jnp.sum(shift * zz_t, axis=1)
        a_ez = a_ez - zz_t
    scale = jnp.exp(-v_j)
    if not qu:
        return sum_log_d, scale * a_ee, None, None
    return sum_log_d, scale * a_ee, scale[:, None] * a_ez, scale[:, None, None] * a_zz


def group_sums(data: ModelData, beta, alpha, v, shift, qu: int):
    """The per-group sums (``row_sums``; ``constant_scale_sums`` when the data carry ``Sv``)."""
    if data.Sv is not None:
        return constant_scale_sums(data, beta, alpha, v, shift, qu)
    return row_sums(data, beta, alpha, v, shift, qu)
