"""The likelihood of data held by a cluster: each partition's standardised rows laid out in
blocks on a worker (``engine.blocks.block_data``), and log L, its gradient and the
quadrature modes at θ computed there (docs/architecture.md, 'Data on a cluster').

log L = Σ_p log L_p and ∇ log L = Σ_p ∇ log L_p over the partitions p, because groups are
independent given θ and no group is split. The client sends θ (and the nodes' θ and each
group's last modes, the warm start of its mode search) with one task per worker, which
evaluates the partitions that worker holds one after another (a task round trip costs
more than a small partition's evaluation), and sums the answers in the partitions' order,
so the sum does not depend on which worker held what; ``estimate.objective.Objective``
sees a ``RemoteBlocks`` as data that evaluates itself. The blocks are Dask futures
computed from the source (Parquet, or the Dask DataFrame's graph), so a worker lost
mid-fit costs a recomputation of its partitions, not the fit: a task meant for it may run
on any worker (``allow_other_workers``), and the partitions are regrouped by holder after
any task ran elsewhere than planned.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from melsm.engine.blocks import Blocks, block_data, by_group, group_slots, with_nodes
from melsm.engine.rows import ModelData
from melsm.errors import MelsmInputError
from melsm.estimate.objective import Objective
from melsm.model.params import ParamLayout
from melsm.model.scaling import rescaled


class Modes(NamedTuple):
    """The quadrature modes η̂_j of every group, in the data's group order (the ``nodes`` an
    ``Objective`` keeps of data held by a cluster: it reads only ``mode``)."""

    mode: np.ndarray


# ---- on the workers ------------------------------------------------------------------
def partition_blocks(design, scaling: tuple, points: int):
    """(blocks, groups) of a partition: its design in standard units (``scaling.rescaled``)
    laid out for ``points`` quadrature points per group, and its number of groups."""
    return block_data(rescaled(design, *scaling), points), design.n_groups


def _warm_start(data, eta: np.ndarray):
    """The groups' modes in the layout of the partition's blocks (zeros for padding)."""
    q = eta.shape[1]
    if not isinstance(data, Blocks):
        start = np.zeros((group_slots(data), q))
        start[:len(eta)] = eta
        return start
    slots = data.parts[0].G.shape[0]
    start = np.zeros((len(data.parts), slots, q))
    start[data.group_part, data.group_slot] = eta
    return jax.device_put(tuple(start), jax.devices()[0])


def evaluate_partitions(held: list, x: np.ndarray, etas: list, node_theta: np.ndarray, layout: ParamLayout,
                        n_quad: int, nodes_move: bool) -> tuple[str, list]:
    """(this worker's address, ``evaluate_partition`` of each partition in ``held``)."""
    from distributed import get_worker

    answers = [evaluate_partition(h, x, eta, node_theta, layout, n_quad, nodes_move)
               for h, eta in zip(held, etas, strict=True)]
    return get_worker().address, answers


def evaluate_partition(held: tuple, x: np.ndarray, eta: np.ndarray, node_theta: np.ndarray, layout: ParamLayout,
                       n_quad: int, nodes_move: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
    """(log L_p, ∇ log L_p, the groups' modes) of one partition at θ = ``x``."""
    data, n_groups = held
    objective = Objective(data, layout, n_quad, group_slots(data), nodes_move)
    value, grad, nodes = objective._at(np.asarray(x, float), _warm_start(data, eta), np.asarray(node_theta, float))
    if nodes is None:
        return value, grad, None
    modes = by_group(data, [n.mode for _, n in with_nodes(data, nodes)])
    return value, grad, np.asarray(modes)[:n_groups]


# ---- on the client -------------------------------------------------------------------
def _rows_elsewhere():
    raise MelsmInputError("empirical-Bayes effects, fitted values and residuals need the rows in memory; "
                          "this model's data are held by a Dask cluster (ML fits only)")


class RemoteBlocks:
    """The blocks of every partition, held by the cluster (Dask futures), for ``Objective``:
    ``value_grad_nodes`` is log L, its gradient and the modes summed over the partitions;
    ``G`` has a row per group, which is all ``engine.blocks.group_slots`` reads."""

    def __init__(self, client, futures: list, positions: list[np.ndarray], n_groups: int):
        self.client, self.futures, self.positions = client, futures, positions
        self.G = np.zeros((n_groups, 0))
        #: evaluations sent so far (each one task per worker holding partitions)
        self.evaluations = 0
        #: {worker address: indices of the partitions it holds}; None: ask the scheduler
        self._holders: dict[str, list[int]] | None = None

    def holders(self) -> dict[str, list[int]]:
        """The partitions grouped by the worker holding their blocks (asked once, again
        after a task ran elsewhere: a worker lost and its partitions recomputed)."""
        if self._holders is None:
            who = self.client.who_has(self.futures)
            self._holders = {}
            for k, future in enumerate(self.futures):
                self._holders.setdefault(min(who.get(future.key, ()), default=""), []).append(k)
        return self._holders

    def __getattr__(self, name: str):
        # The posterior of the effects (and what needs it: fitted values, residuals) reads
        # the blocks' rows, which are on the workers: say so rather than fail inside JAX.
        if name in ModelData._fields:
            _rows_elsewhere()
        raise AttributeError(name)

    @property
    def dtype(self):
        """A compiled function (the effects' posterior) asks its arguments for this first."""
        _rows_elsewhere()

    def value_grad_nodes(self, x, eta_start, node_theta, layout: ParamLayout, n_quad: int, nodes_move: bool):
        """log L(θ), its gradient and ``Modes`` (None without random scale effects)."""
        x, node_theta = np.asarray(x, float), np.asarray(node_theta, float)
        eta = np.asarray(eta_start, float)
        plan = self.holders()
        tasks = [self.client.submit(evaluate_partitions, [self.futures[k] for k in parts], x,
                                    [eta[self.positions[k]] for k in parts], node_theta, layout, n_quad, nodes_move,
                                    workers=[worker] if worker else None, allow_other_workers=True, pure=False)
                 for worker, parts in plan.items()]
        self.evaluations += 1
        answers = [None] * len(self.futures)
        for (ran_on, results), (worker, parts) in zip(self.client.gather(tasks), plan.items(), strict=True):
            if ran_on != worker:
                self._holders = None
            for k, result in zip(parts, results, strict=True):
                answers[k] = result
        value, grad = 0.0, np.zeros(len(x))
        modes = np.zeros_like(eta)
        for (v, g, m), where in zip(answers, self.positions, strict=True):
            value, grad = value + float(v), grad + np.asarray(g)
            if m is not None:
                modes[where] = m
        return value, grad, (Modes(modes) if layout.n_agq else None)
