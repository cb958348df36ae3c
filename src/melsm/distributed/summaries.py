"""What the client needs to know of data it does not hold: each partition's design is built
on a worker, and sums over its rows come back (docs/architecture.md, 'Data on a cluster').

The units (``melsm.model.scaling``) need m = mean(y), s = SD(y), each column's root mean
square d = √(Σx²/N) and the coefficients e with X e = 1 (from XᵀX e = Xᵀ1, checked by
max |Xe − 1| on the rows); the starting values (``melsm.estimate.start``) need the least
squares of y* on X* (from XᵀX and Xᵀy: X*ᵀX* = XᵀX/(d dᵀ), X*ᵀy* = (Xᵀy − m Xᵀ1)/(s d))
and then of log r² on W*, summed on the rows with the residuals r of that fit; the SDs of
the random effects' columns, from Σz and Σz². The client keeps the level-2 design G, one
row per group, and the group labels, in the order of the sorted labels as a fit in memory
has them. Every sum is taken over the partitions in their order, so a fit is the same
whichever worker computed a partition, or recomputed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import pandas as pd

from melsm.model.design import Design, build_design
from melsm.model.scaling import CONSTANT_TOLERANCE, rescaled


@dataclass(frozen=True)
class SummaryDesign(Design):
    """A ``Design`` without its rows: names, formulaic specs, the level-2 design G and the
    group labels of the whole data, the counts, and stand-ins Zu, Zv of two rows with each
    column's mean ± SD (what ``estimate.start`` and ``estimate.boundary`` read of them)."""

    rows: int = 0
    weighted: float = 0.0
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    #: (β, α, residual variance) of the least-squares start, in the units the design is in
    least_squares: tuple | None = None

    @property
    def n_obs(self) -> int:
        return self.rows

    @property
    def n_weighted(self) -> float:
        return self.weighted

    @property
    def group_sizes(self) -> np.ndarray:
        return self.sizes


# ---- on the workers ------------------------------------------------------------------
def labels_and_levels(frame: pd.DataFrame, group: str, factors: list[str]) -> tuple[np.ndarray, dict]:
    """The partition's group labels (sorted) and each factor column's values."""
    levels = {c: frame[c].dropna().unique() for c in factors}
    return np.sort(frame[group].dropna().unique()), levels


def partition_design(frame: pd.DataFrame, spec, levels: dict) -> Design:
    """The partition's design, each factor encoded with the levels of the whole data."""
    if levels:
        frame = frame.assign(**{c: pd.Categorical(frame[c], categories=v) for c, v in levels.items()})
    return build_design(spec, frame)


def raw_sums(design: Design) -> dict:
    """Sums over the partition's rows for the units, and its groups' labels, sizes and G."""
    X, W, y = design.X, design.W, design.y
    empty = {name: getattr(design, name)[:0] for name in ("y", "X", "W", "Zu", "Zv", "group", "row_order")}
    skeleton = replace(design, **empty, row_index=design.row_index[:0], covariates=None, offset_mean=None,
                       offset_within=None, weights=None)
    return {"n": design.n_obs, "n_weighted": design.n_weighted, "sum_y": float(np.sum(y)),
            "xx": X.T @ X, "x1": X.sum(axis=0), "xy": X.T @ y, "ww": W.T @ W, "w1": W.sum(axis=0),
            "u1": design.Zu.sum(axis=0), "u2": np.sum(design.Zu**2, axis=0),
            "v1": design.Zv.sum(axis=0), "v2": np.sum(design.Zv**2, axis=0),
            "labels": design.group_labels, "sizes": design.group_sizes, "G": design.G,
            "n_dropped": design.n_dropped, "n_missing": design.n_missing, "skeleton": skeleton}


def spread_sums(design: Design, mean_y: float, e_x, e_w) -> dict:
    """Σ(y − ȳ)² and max |X e_x − 1|, max |W e_w − 1| (inf where there is no e)."""
    def gap(matrix, e):
        return np.inf if e is None else float(np.max(np.abs(matrix @ e - 1.0), initial=0.0))
    return {"yy": float(np.sum((design.y - mean_y) ** 2)), "x_gap": gap(design.X, e_x), "w_gap": gap(design.W, e_w)}


def start_sums(design: Design, scaling: tuple, beta: np.ndarray, var_y: float) -> dict:
    """W*ᵀW*, W*ᵀt with t = log(r² + 1e-8 var(y*)) + 1.27 (``estimate.start``), Σr and Σr²,
    r = y* − X*β on the partition's standardised rows."""
    internal = rescaled(design, *scaling)
    resid = internal.y - internal.X @ beta
    target = np.log(resid**2 + 1e-8 * var_y) + 1.27
    return {"ww": internal.W.T @ internal.W, "wt": internal.W.T @ target, "r1": float(np.sum(resid)),
            "r2": float(np.sum(resid**2))}


# ---- on the client -------------------------------------------------------------------
def total(sums: list[dict], key: str):
    """Σ over the partitions, in their order."""
    out = sums[0][key]
    for s in sums[1:]:
        out = out + s[key]
    return out


def group_positions(sums: list[dict]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each partition's groups' positions among all the groups sorted by label, and the labels."""
    labels = np.concatenate([s["labels"] for s in sums])
    order = np.argsort(labels, kind="stable")
    position = np.empty(len(labels), dtype=int)
    position[order] = np.arange(len(labels))
    bounds = np.cumsum([0] + [len(s["labels"]) for s in sums])
    return [position[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)], labels[order]


def constant_coefficients(gram: np.ndarray, ones: np.ndarray) -> np.ndarray | None:
    """e solving (XᵀX) e = Xᵀ1 (None for no columns); whether X e = 1 is checked on the rows."""
    if gram.shape[0] == 0:
        return None
    e, *_ = np.linalg.lstsq(gram, ones, rcond=None)
    return e


def rms(sum_squares: np.ndarray, n: int) -> np.ndarray:
    """√(Σx²/N), 1 for an all-zero column (as ``scaling._rms``)."""
    scale = np.sqrt(np.asarray(sum_squares, float) / n)
    return np.where(scale > 0, scale, 1.0)


def summary_design(sums: list[dict], positions: list[np.ndarray], labels: np.ndarray) -> SummaryDesign:
    """The ``SummaryDesign`` of the whole data from the partitions' sums."""
    n = int(total(sums, "n"))
    skeleton = sums[0]["skeleton"]
    G = np.zeros((len(labels), skeleton.G.shape[1]))
    sizes = np.zeros(len(labels), dtype=int)
    missing: dict = {}
    for s, where in zip(sums, positions, strict=True):
        G[where], sizes[where] = s["G"], s["sizes"]
        for name, count in s["n_missing"].items():
            missing[name] = missing.get(name, 0) + count
    stand_in = {}
    for key, first, second in (("Zu", "u1", "u2"), ("Zv", "v1", "v2")):
        mean = total(sums, first) / n
        sd = np.sqrt(np.maximum(total(sums, second) / n - mean**2, 0.0))
        stand_in[key] = np.stack([mean - sd, mean + sd])
    base = {f.name: getattr(skeleton, f.name) for f in fields(Design)}
    base.update(stand_in, G=G, group_labels=labels, n_dropped=int(total(sums, "n_dropped")), n_missing=missing)
    return SummaryDesign(**base, rows=n, weighted=float(total(sums, "n_weighted")), sizes=sizes)


def checked_constant(e, gap: float):
    """e where max |X e − 1| is below ``scaling.CONSTANT_TOLERANCE``, as ``scaling`` decides."""
    return e if e is not None and gap < CONSTANT_TOLERANCE else None
