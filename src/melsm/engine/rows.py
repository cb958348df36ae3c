"""The data as the likelihood reads them: rows sorted by group, cut into chunks of c rows
that never straddle two groups, as JAX arrays (``ModelData``). Per-group sums are then a
dense sum over each chunk and a short segment sum over chunks, far faster on CPUs than a
scatter over every row (bench/README.md). See docs/architecture.md, 'The likelihood'.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np


class ModelData(NamedTuple):
    """Model arrays as JAX arrays, rows laid out in chunks.

    Rows (sorted by group) are cut into chunks of ``c`` rows that never straddle two
    groups, padded with zero rows: row arrays are (C, c) or (C, c, p). Per-group sums
    are then a dense sum over each chunk followed by a short segment sum over chunks,
    which is far faster on CPUs than a scatter over every row. Zero rows contribute
    exactly zero to every sum (y = 0, all covariates 0 ⇒ log d = 0, e = 0), so the
    weights and offsets are None when the model has none (1 and 0 for every row: the
    likelihood skips them, and their arrays would be 30% of the data's memory).
    """

    y: jax.Array  # (C, c)
    X: jax.Array  # (C, c, p_x)
    W: jax.Array  # (C, c, p_w)
    Zu: jax.Array  # (C, c, q_u)
    Zv: jax.Array | None  # (C, c, q_v); None where ``Sv`` holds them per group
    G: jax.Array  # (J, p_g)
    chunk_group: jax.Array  # (C,)
    n_per_group: jax.Array  # (J,) Σ w over the group's rows
    w: jax.Array | None  # (C, c) frequency weights (0 in padding); None without weights
    offset_mean: jax.Array | None  # (C, c) offset of the mean; None without
    offset_within: jax.Array | None  # (C, c) offset of the log level-1 variance; None without
    #: (J, q_v) the scale effects' covariates of each group where they are constant within
    #: groups (then ``Zv`` is None and the likelihood sums the rows once for all quadrature
    #: points: ``engine.sums``); None otherwise
    Sv: jax.Array | None = None


#: Chunk lengths ``chunk_size`` chooses from: few, so that data sets share compiled code.
CHUNK_LENGTHS = (4, 8, 16, 32, 64, 128)


def chunk_size(group_sizes: np.ndarray, lengths: tuple[int, ...] = CHUNK_LENGTHS) -> int:
    """Chunk length minimising padded rows plus a cost per chunk (measured on CPU)."""
    best = None
    for c in lengths:
        n_chunks = int(np.sum(-(-group_sizes // c)))
        cost = n_chunks * c + 8 * n_chunks
        if best is None or cost < best[0]:
            best = (cost, c)
    return best[1]


def chunk_layout(group: np.ndarray, n_groups: int, c: int | None = None):
    """Positions of sorted rows in a (C, c) chunked layout and each chunk's group."""
    sizes = np.bincount(group, minlength=n_groups)
    c = c or chunk_size(sizes)
    per_group = -(-sizes // c)
    chunk_group = np.repeat(np.arange(n_groups), per_group)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.arange(group.shape[0]) - starts[group]
    first_chunk = np.concatenate([[0], np.cumsum(per_group)[:-1]])
    chunk = first_chunk[group] + within // c
    return chunk, within % c, chunk_group, c


def bucket(n: int) -> int:
    """Smallest m·2^k ≥ n with m in 4..7 (n itself below 4): at most 25% larger."""
    if n < 4:
        return n
    k = max(0, int(n).bit_length() - 3)
    while True:
        for m in (4, 5, 6, 7):
            if m << k >= n:
                return m << k
        k += 1


def model_data(design, c: int | None = None, padded: bool = False) -> ModelData:
    """Lay the design's rows out in chunks (see ``ModelData``).

    ``padded``: round the numbers of chunks and groups up to ``bucket`` sizes with empty
    chunks and groups. An empty group contributes exactly 0 to log L (no rows: M = I,
    c = 0, and the quadrature integrates φ to 1), so fits are unchanged, while data
    sets of similar size share one compiled likelihood: fewer compilations, and fewer
    of XLA's per-program memory maps in a long session.
    """
    sizes = np.bincount(design.group, minlength=design.n_groups)
    c = c or chunk_size(sizes)
    n_chunks = int(np.sum(-(-sizes // c)))
    if padded:
        return group_range_data(design, 0, design.n_groups, c, bucket(design.n_groups), bucket(n_chunks))
    return group_range_data(design, 0, design.n_groups, c, design.n_groups, n_chunks)


def scale_constant_within_groups(design) -> bool:
    """Whether the design has random scale effects whose covariates s_i are the same on every
    row of a group (random intercepts in the level-1 variance; group-level covariates)."""
    if design.Zv.shape[1] == 0:
        return False
    first = np.searchsorted(design.group, design.group)  # each row's group's first row (sorted)
    return bool(np.array_equal(design.Zv, design.Zv[first]))


def group_range_data(design, first: int, last: int, c: int, n_groups: int, n_chunks: int,
                     constant_scale: bool = False) -> ModelData:
    """Groups ``first``..``last − 1`` of the design (whose rows are sorted by group) in
    chunks of ``c`` rows, padded to ``n_groups`` groups and ``n_chunks`` chunks with empty
    ones (the padding chunks belong to the last group). Only this range's rows are copied:
    ``engine.blocks`` lays out a large data set one block at a time. ``constant_scale``
    (``scale_constant_within_groups``): the scale effects' covariates per group (``Sv``)."""
    r0, r1 = np.searchsorted(design.group, [first, last])
    group = design.group[r0:r1] - first
    chunk, slot, chunk_group, c = chunk_layout(group, last - first, c)
    chunk_group = np.concatenate([chunk_group, np.full(n_chunks - chunk_group.shape[0], n_groups - 1)])

    # jax.device_put, not jnp.asarray: JAX 0.10 lifts a NumPy array through a jitted
    # identity (lax.stage) that is lowered and looked up per shape, 10-90 ms each at start-up.
    def lay(a):
        if a is None:
            return None
        a = a[r0:r1]
        out = np.zeros((n_chunks, c) + a.shape[1:])
        out[chunk, slot] = a
        return jax.device_put(out)

    w = np.ones(r1 - r0) if design.weights is None else design.weights[r0:r1]
    G = design.G[first:last]
    Sv = None
    if constant_scale:
        Sv = design.Zv[r0:r1][np.searchsorted(group, np.arange(last - first))]
        Sv = jax.device_put(np.pad(Sv, ((0, n_groups - Sv.shape[0]), (0, 0))))
    return ModelData(
        y=lay(design.y), X=lay(design.X), W=lay(design.W), Zu=lay(design.Zu),
        Zv=None if constant_scale else lay(design.Zv), Sv=Sv,
        G=jax.device_put(np.pad(G, ((0, n_groups - G.shape[0]), (0, 0)))),
        chunk_group=jax.device_put(chunk_group),
        n_per_group=jax.device_put(np.bincount(group, weights=w, minlength=n_groups).astype(float)),
        w=lay(design.weights), offset_mean=lay(design.offset_mean), offset_within=lay(design.offset_within),
    )
