"""A large data set as blocks of whole groups, so the likelihood's memory is bounded by a
block, not by the number of groups (docs/architecture.md, "The likelihood", "Memory").

Groups are independent given θ, so log L = Σ_b Σ_{j ∈ b} log L_j and its gradient is the
sum of the blocks' gradients; the quadrature nodes of a group depend only on its own
rows. A block is an ordinary ``ModelData`` of consecutive groups, and every block of a
data set has the same padded shape (J_b groups in C_b chunks of c rows), so one compiled
likelihood serves them all, whatever their number. Evaluating the blocks one after the
other keeps the working memory of one block's gradient (its (points × rows)
intermediates and their reverse-mode residuals) instead of the whole data set's.

Block size rule (``rows_per_block``): data of at most ``WHOLE_ROWS`` padded rows stay one
``ModelData`` (the layout of ``rows.model_data``, padded to bucketed sizes), so small
models run exactly as before. Larger data are cut into blocks of
``block_budget() / (BYTES_PER_ROW_POINT × quadrature points per group)`` padded rows (at
least ``MIN_BLOCK_ROWS``): ``BYTES_PER_ROW_POINT`` is the peak RSS a gradient call adds per
padded row and point (measured; XLA's own memory analysis of the program says 44–92 bytes),
and the budget ``BLOCK_BYTES`` (the environment variable ``MELSM_BLOCK_BYTES`` overrides
it), less where the machine has under 8 × that available. Where the scale effects'
covariates are constant within groups, blocks sum the rows once for all points
(``engine.sums``) and a row counts as ``CONSTANT_SCALE_POINTS`` points (small data keep the
row-by-row sums, so their fits are bit for bit what they were). The budget is
small on purpose: for the row-by-row sums, blocks of 8–30k rows, whose arrays stay in the
CPU's caches, made a gradient at 1M rows ~1.8× faster than whole-data evaluation
(bench/README.md, "bench_scale.py").
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import numpy as np

from melsm.engine.rows import ModelData, bucket, chunk_size, group_range_data, scale_constant_within_groups

#: Working memory a block may use (bytes), before ``block_budget``'s cap by the memory available.
BLOCK_BYTES = 64 * 2**20
#: Peak memory of one gradient call per padded row and quadrature point (bytes, measured).
BYTES_PER_ROW_POINT = 256
#: Where the scale effects' covariates are constant within groups (``engine.sums``) a row's
#: working memory does not grow with the quadrature points: about that of this many (measured).
CONSTANT_SCALE_POINTS = 4
#: Data of at most this many padded rows are never cut into blocks.
WHOLE_ROWS = 16384
#: Rows of one block at least (below this the per-call overhead would dominate).
MIN_BLOCK_ROWS = 1024
#: Chunk lengths of blocked data: every multiple of 8 (groups of 100 rows: chunks of 104,
#: not 128 — 19% fewer rows to compute; large data compile once for their own shapes anyway).
BLOCK_CHUNK_LENGTHS = (4,) + tuple(range(8, 129, 8))


class Blocks(NamedTuple):
    """Blocks of consecutive groups, each a ``ModelData`` of the same shapes."""

    parts: tuple[ModelData, ...]
    #: (J,) the block of each group, and its slot (position) there.
    group_part: np.ndarray
    group_slot: np.ndarray


def block_budget() -> int:
    """Bytes one block's gradient may use: ``MELSM_BLOCK_BYTES`` or ``BLOCK_BYTES``, at
    most an eighth of the memory available now (/proc/meminfo's MemAvailable)."""
    budget = int(os.environ.get("MELSM_BLOCK_BYTES") or BLOCK_BYTES)
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return budget
    return max(min(budget, available // 8), MIN_BLOCK_ROWS * BYTES_PER_ROW_POINT)


def rows_per_block(points: int, budget: int | None = None) -> int:
    """Padded rows per block: budget / (``BYTES_PER_ROW_POINT`` × quadrature points per group),
    at least ``MIN_BLOCK_ROWS``."""
    budget = block_budget() if budget is None else budget
    return max(MIN_BLOCK_ROWS, budget // (BYTES_PER_ROW_POINT * max(1, points)))


def bucket_floor(n: int) -> int:
    """Largest ``rows.bucket`` size m·2^k ≤ n (m in 4..7; n itself below 4)."""
    if n < 4:
        return n
    k = int(n).bit_length() - 3
    return max(m << k for m in (4, 5, 6, 7) if m << k <= n)


def plan(chunks_per_group: np.ndarray, max_chunks: int, max_groups: int | None = None) -> np.ndarray:
    """First group of each block (and the end): consecutive groups are added to a block
    while it holds at most ``max_chunks`` chunks and ``max_groups`` groups (a group
    larger than ``max_chunks`` gets a block of its own)."""
    ends = np.cumsum(chunks_per_group)
    starts = [0]
    n = len(chunks_per_group)
    while starts[-1] < n:
        first = starts[-1]
        base = ends[first - 1] if first else 0
        last = int(np.searchsorted(ends, base + max_chunks, side="right"))
        if max_groups is not None:
            last = min(last, first + max_groups)
        starts.append(max(last, first + 1))
    return np.asarray(starts)


def block_data(design, points: int, budget: int | None = None, c: int | None = None,
               max_groups: int | None = None) -> ModelData | Blocks:
    """The design's rows laid out for the likelihood: one padded ``ModelData``
    (``rows.model_data``, exactly as before blocks existed) when they have at most
    ``WHOLE_ROWS`` padded rows or fit in one block of ``rows_per_block(points, budget)``,
    else ``Blocks`` of at most that many padded rows (and at most ``max_groups`` groups;
    ``max_groups`` alone forces blocks, for tests), with the scale effects' covariates per
    group where they are constant within groups (``engine.sums``). Each block is copied to
    JAX on its own, so the host holds one block's layout at a time."""
    sizes = np.bincount(design.group, minlength=design.n_groups)
    whole_c = c or chunk_size(sizes)
    n_rows = bucket(int(np.sum(-(-sizes // whole_c)))) * whole_c
    if max_groups is None and (n_rows <= WHOLE_ROWS or n_rows <= rows_per_block(points, budget)):
        return group_range_data(design, 0, design.n_groups, whole_c, bucket(design.n_groups), n_rows // whole_c)
    constant = scale_constant_within_groups(design)
    if constant:  # the likelihood's working memory no longer grows with the points
        points = CONSTANT_SCALE_POINTS
    limit = rows_per_block(points, budget)
    c = c or chunk_size(sizes, BLOCK_CHUNK_LENGTHS)
    per_group = -(-sizes // c)
    # a block's chunks are padded up to a bucket size: fill blocks to the largest bucket
    # size within the limit instead of padding each by up to 25% (bench/README.md)
    max_chunks = bucket_floor(max(1, limit // c))
    starts = plan(per_group, max_chunks, max_groups)
    ranges = list(zip(starts[:-1], starts[1:], strict=True))
    n_groups = bucket(int(np.max(np.diff(starts))))
    n_chunks = bucket(int(max(per_group[a:b].sum() for a, b in ranges)))
    device = jax.devices()[0]  # committed: the blocks are run by ``compiled``'s runner
    parts = tuple(jax.device_put(group_range_data(design, a, b, c, n_groups, n_chunks, constant), device)
                  for a, b in ranges)
    group_part = np.repeat(np.arange(len(parts)), np.diff(starts))
    return Blocks(parts, group_part, np.arange(design.n_groups) - starts[group_part])


def parts(data: ModelData | Blocks) -> tuple[ModelData, ...]:
    """The blocks of the data (one for a plain ``ModelData``)."""
    return data.parts if isinstance(data, Blocks) else (data,)


def by_group(data: ModelData | Blocks, per_part) -> np.ndarray:
    """A per-group array in the design's group order from the blocks' own ((J_b, ...) each,
    one per block); for a plain ``ModelData`` the array itself (its padded groups last)."""
    if not isinstance(data, Blocks):
        return np.asarray(per_part[0] if isinstance(per_part, (list, tuple)) else per_part)
    stacked = np.stack([np.asarray(a) for a in per_part])
    return stacked[data.group_part, data.group_slot]


def group_slots(data: ModelData | Blocks) -> int:
    """Group slots of the data: J padded for a ``ModelData``, blocks × J_b for ``Blocks``."""
    return sum(part.G.shape[0] for part in parts(data))


def with_nodes(data: ModelData | Blocks, nodes) -> list[tuple[ModelData, object]]:
    """Each block with its quadrature nodes (an optimum's nodes: one ``Nodes`` for a
    ``ModelData``, a tuple of them for ``Blocks``; None without random scale effects)."""
    if not isinstance(data, Blocks):
        return [(data, nodes)]
    return list(zip(data.parts, nodes if nodes is not None else (None,) * len(data.parts), strict=True))
