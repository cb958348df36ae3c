"""A data set held by a Dask cluster, as a ``melsm.Model`` uses it (docs/architecture.md,
'Data on a cluster').

Opening it (``ClusterData.open``) reads the group column and the factors' values (one
pass), checks that no group is split across partitions, builds each partition's design on
its worker (``summaries.partition_design``, kept there as a future whose graph goes back
to the source) and sums what the client needs (``summaries.raw_sums``, ``spread_sums``).
``units`` maps the sums to ``melsm.model.scaling.Units`` and the least-squares start;
``fit_data`` lays the partitions out in blocks on the workers (``remote``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from melsm.distributed import summaries
from melsm.distributed.remote import RemoteBlocks, partition_blocks
from melsm.distributed.source import check_frame, check_groups_whole, factor_columns, open_source
from melsm.errors import MelsmInputError
from melsm.model.params import ParamLayout
from melsm.model.scaling import Units, units_from
from melsm.parallel import connect


class ClusterData:
    """The partitions' designs on the workers and their summaries on the client."""

    def __init__(self, client, cluster, designs: list, sums: list[dict]):
        self.client, self.cluster, self.designs, self.sums = client, cluster, designs, sums
        self.positions, labels = summaries.group_positions(sums)
        self.design = summaries.summary_design(sums, self.positions, labels)
        n = self.design.n_obs
        self.e_x = summaries.constant_coefficients(summaries.total(sums, "xx"), summaries.total(sums, "x1"))
        self.e_w = summaries.constant_coefficients(summaries.total(sums, "ww"), summaries.total(sums, "w1"))
        self.mean_y = summaries.total(sums, "sum_y") / n
        spread = self._gather(summaries.spread_sums, self.mean_y, self.e_x, self.e_w)
        self.e_x = summaries.checked_constant(self.e_x, max(s["x_gap"] for s in spread))
        self.e_w = summaries.checked_constant(self.e_w, max(s["w_gap"] for s in spread))
        self.var_y = summaries.total(spread, "yy") / n
        self.design = replace(self.design, y_scale=float(np.sqrt(self.var_y)))
        self._blocks: dict[int, RemoteBlocks] = {}
        self._scaling: tuple | None = None

    @classmethod
    def open(cls, spec, data, scheduler: str | None = None, workers: int | None = None) -> ClusterData:
        """Check ``data`` (a Parquet path or a Dask DataFrame) against ``spec``, connect to
        ``scheduler`` (default: a local cluster of ``workers`` processes, ``melsm.parallel``)
        and build the partitions' designs there."""
        import dask

        frame = open_source(data)
        columns = check_frame(spec, frame)
        frame = frame[columns]
        factors = factor_columns(frame, columns, spec.group)
        client, cluster = connect(scheduler, workers)
        try:
            parts = frame.to_delayed()
            first = client.gather(client.compute([dask.delayed(summaries.labels_and_levels)(
                p[[spec.group, *factors]], spec.group, factors) for p in parts]))
            check_groups_whole([labels for labels, _ in first], spec.group)
            levels = {c: np.sort(np.unique(np.concatenate([lv[c] for _, lv in first]))) for c in factors}
            designs = client.compute([dask.delayed(summaries.partition_design)(p, spec, levels) for p in parts])
            sums = client.gather(client.map(summaries.raw_sums, designs))
            return cls(client, cluster, designs, sums)
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise

    def _gather(self, function, *args) -> list:
        """``function(design, *args)`` on every partition's design, in the partitions' order."""
        return self.client.gather([self.client.submit(function, d, *args, pure=False) for d in self.designs])

    def units(self, layout: ParamLayout) -> Units:
        """The units of the whole data (as ``scaling.standardise`` would give them from its rows),
        the standardised ``SummaryDesign`` carrying the least-squares start."""
        d, n = self.design, self.design.n_obs
        y_shift = self.mean_y if self.e_x is not None else 0.0
        y_scale = float(np.sqrt(self.var_y)) if self.e_w is not None and self.var_y > 0 else 1.0
        squares = [np.diag(summaries.total(self.sums, "xx")), np.diag(summaries.total(self.sums, "ww")),
                   summaries.total(self.sums, "u2"), summaries.total(self.sums, "v2")]
        scales = [summaries.rms(s, n) for s in squares]
        scales.append(summaries.rms(np.sum(d.G**2, axis=0), d.G.shape[0]) if d.G.shape[1] else np.ones(0))
        internal_sd = float(np.sqrt(self.var_y)) / y_scale
        units = units_from(d, layout, y_shift, y_scale, scales, (self.e_x, self.e_w), internal_sd)
        t = units.effect_scales
        d_x, d_w, _, _, d_g = scales
        self._scaling = (y_shift, y_scale, (d_x, d_w, y_scale / t[layout.q_v:], 1.0 / t[:layout.q_v], d_g),
                         internal_sd)
        return replace(units, design=replace(units.design, least_squares=self._least_squares(units, d_x)))

    def _least_squares(self, units: Units, d_x: np.ndarray) -> tuple:
        """(β*, α*, var r) of ``estimate.start.least_squares_start`` on the standardised rows."""
        gram = summaries.total(self.sums, "xx") / np.outer(d_x, d_x)
        rhs = (summaries.total(self.sums, "xy") - units.y_shift * summaries.total(self.sums, "x1")) / (
            units.y_scale * d_x)
        beta, *_ = np.linalg.lstsq(gram, rhs, rcond=None)
        start = self._gather(summaries.start_sums, self._scaling, beta, self.var_y / units.y_scale**2)
        alpha, *_ = np.linalg.lstsq(summaries.total(start, "ww"), summaries.total(start, "wt"), rcond=None)
        n = self.design.n_obs
        mean_r = summaries.total(start, "r1") / n
        return beta, alpha, float(summaries.total(start, "r2") / n - mean_r**2)

    def fit_data(self, units: Units, points: int) -> RemoteBlocks:
        """The partitions in blocks for ``points`` quadrature points per group, persisted on the
        workers (recomputable from the source), kept per rule."""
        if self._scaling is None:
            raise RuntimeError("units() first: the blocks are in standard units")
        if not self.designs:
            raise MelsmInputError("this model's data on the Dask cluster were released (model.close())")
        if points not in self._blocks:
            futures = [self.client.submit(partition_blocks, d, self._scaling, points) for d in self.designs]
            self.client.gather(self.client.map(lambda held: held[1], futures))  # laid out before the first θ
            self._blocks[points] = RemoteBlocks(self.client, futures, self.positions, self.design.n_groups)
        return self._blocks[points]

    def close(self) -> None:
        """Release the data on the workers and close the client (and the local cluster)."""
        self._blocks.clear()
        self.designs = []
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
