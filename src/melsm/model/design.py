"""Design: turn a ``ModelSpec`` and a data frame into the arrays the likelihood uses.

All checks of the data happen here (``melsm.model.checks``; the level-2 design is
``melsm.model.level2``), so that every later layer can trust its arrays:
unknown or non-numeric columns, missing values, empty data, too few groups, constant or
collinear covariates, and level-2 (``between``) covariates that vary within a group.

Missing values: rows with a missing value in any column the model uses are dropped, and
the number dropped is reported (``Design.n_dropped``, and in the fit's summary).

Rows are sorted by group (stably) so that per-group sums are contiguous segments;
``Design.row_order`` maps sorted rows back to the caller's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.model.checks import (
    as_written,
    check_columns,
    check_finite,
    check_identified,
    check_numeric,
    check_rank,
    check_width,
    checked_model_matrix,
    numeric_as_float,
    part_name,
)
from melsm.model.grammar import parse_terms, quote
from melsm.model.level2 import between_design
from melsm.model.names import LOCATION_INTERCEPT, target_name
from melsm.model.spec import ModelSpec


@dataclass(frozen=True)
class Design:
    """Arrays of one data set under one model (rows sorted by group)."""

    y: np.ndarray  # (N,)
    X: np.ndarray  # (N, p_x) fixed part of the mean
    W: np.ndarray  # (N, p_w) fixed part of the log level-1 variance
    Zu: np.ndarray  # (N, q_u) random location design
    Zv: np.ndarray  # (N, q_v) random scale design
    G: np.ndarray  # (J, p_g) between (level-2 variance) design, one row per group
    group: np.ndarray  # (N,) group index 0..J-1, sorted
    group_labels: np.ndarray  # (J,) original group identifiers
    x_names: list[str]
    w_names: list[str]
    zu_names: list[str]
    zv_names: list[str]
    g_coefs: list  # ``Coef`` of every level-2 function's coefficients, in G's column order
    row_order: np.ndarray  # (N,) index into the caller's rows (after dropping missing)
    row_index: pd.Index  # caller's index labels of the used rows (sorted order)
    n_dropped: int
    response: str
    group_name: str | None
    y_scale: float = field(default=1.0)
    n_missing: dict = field(default_factory=dict)  # column -> missing values among the rows given
    g_functions: list = field(default_factory=list)  # (Effect or Pair, first, end column of G) per function
    #: formulaic's ``ModelSpec`` of X, W, Zu, Zv (None for an absent part): the fitted
    #: data's transform state and factor levels, for new data (``melsm.model.newdata``)
    specs: dict = field(default_factory=dict)
    #: formulaic's ``ModelSpec`` of each level-2 function, in the order of ``g_functions``
    g_specs: list = field(default_factory=list)
    #: (N,) offsets of the mean and of the log level-1 variance (0 without), and frequency
    #: weights (1 without): a row counts as ``weights`` identical observations
    offset_mean: np.ndarray | None = None
    offset_within: np.ndarray | None = None
    weights: np.ndarray | None = None
    #: The covariate columns the formulas use (not the response, group or weights), in the
    #: sorted row order: where group and population quantities are evaluated
    #: (``melsm.model.evaluation``)
    covariates: pd.DataFrame | None = None

    def row_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) offsets of the mean and of the log level-1 variance, zeros without."""
        zeros = np.zeros(self.n_obs)
        return (zeros if self.offset_mean is None else self.offset_mean,
                zeros if self.offset_within is None else self.offset_within)

    def row_weights(self) -> np.ndarray:
        """(N,) frequency weights, ones without."""
        return np.ones(self.n_obs) if self.weights is None else self.weights

    @property
    def n_weighted(self) -> float:
        """Σ w: the number of observations the rows stand for."""
        return float(self.n_obs if self.weights is None else np.sum(self.weights))

    @property
    def g_names(self) -> list[str]:
        """The level-2 coefficients' printed names."""
        return [str(c) for c in self.g_coefs]

    @property
    def n_obs(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_groups(self) -> int:
        return int(self.group_labels.shape[0])

    @property
    def group_sizes(self) -> np.ndarray:
        return np.bincount(self.group, minlength=self.n_groups)


def _variables(formula: str, which: str) -> set[str]:
    return set(parse_terms(formula, part_name(which)).variables)


def build_design(spec: ModelSpec, data: pd.DataFrame) -> Design:
    """Validate ``data`` against ``spec`` and build the model arrays: parse and check the
    formulas' columns, drop incomplete rows, sort by group, build and check the matrices."""
    if not isinstance(data, pd.DataFrame):
        raise MelsmInputError("data must be a pandas DataFrame")
    if data.shape[0] == 0:
        raise MelsmInputError("the data set is empty (no rows)")
    parsed = {which: parse_terms(text, part_name(which)) for which, text in formula_parts(spec).items()}
    used = {which: set(terms.variables) for which, terms in parsed.items()}
    used["mean"] = used["mean"] | {spec.response}
    check_columns(data, spec, used, parsed)
    columns = sorted(set().union(*used.values()) | ({spec.weights} if spec.weights else set()))
    if spec.weights and spec.weights not in data.columns:
        raise MelsmInputError(f"unknown weights column {quote(spec.weights)}")
    check_numeric(data, columns, spec.response, parsed)
    frame, complete, n_missing = _complete_rows(data, columns + ([spec.group] if spec.group else []))
    n_dropped = int((~complete).sum())
    check_width(frame, parsed)
    frame = numeric_as_float(frame, parsed, spec.group)
    codes, labels = _group_codes(frame, spec.group, n_dropped)
    order = np.argsort(codes, kind="stable")
    frame, codes = frame.iloc[order], codes[order]
    y = _response(frame, spec.response)
    matrices = _row_matrices(spec, frame, len(y))
    extra, offset_specs = _offsets_and_weights(spec, frame)
    matrices.update(extra)
    matrices["specs"].update(offset_specs)
    G, g_coefs, g_functions, g_specs = between_design(spec, frame, codes, labels, len(labels),
                                             matrices["zu_names"], matrices["zv_names"])
    check_identified(len(y), len(labels), spec.group, len(matrices["zu_names"]), len(matrices["zv_names"]))
    used_rows = np.flatnonzero(complete)[order]
    return Design(
        y=y, **matrices, G=G, group=codes.astype(np.int32), group_labels=labels, g_coefs=g_coefs,
        g_functions=g_functions, g_specs=g_specs, row_order=used_rows,
        row_index=data.index[used_rows], n_dropped=n_dropped,
        response=spec.response, group_name=spec.group, y_scale=float(np.std(y)), n_missing=n_missing,
        covariates=frame[[c for c in columns if c not in (spec.response, spec.weights, spec.group)]]
        .reset_index(drop=True),
    )


def _offsets_and_weights(spec: ModelSpec, frame: pd.DataFrame) -> dict:
    """``offset_mean``, ``offset_within`` (each one column, finite) and ``weights``
    (positive, finite); and the offsets' formulaic specs, for new data."""
    out, specs = {}, {}
    for key, text, which in (("offset_mean", spec.mean_offset, "mean offset"),
                             ("offset_within", spec.within_offset, "within offset")):
        if text is None:
            continue
        matrix, names, model_spec = checked_model_matrix(f"~ 0 + {text}", frame, part_name(which))
        if matrix.shape[1] != 1:
            raise MelsmInputError(f"the {part_name(which)} must be one numeric column, not {len(names)}")
        check_finite(matrix, [f"offset({text})"], part_name(which))
        out[key] = matrix[:, 0]
        specs[key] = model_spec
    if spec.weights:
        w = pd.to_numeric(frame[spec.weights], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(w) | (w <= 0)
        if bad.any():
            k = int(np.argmax(bad))
            raise MelsmInputError(f"weights column {quote(spec.weights)} must be positive numbers; row "
                                  f"{as_written(frame.index[k])} has {as_written(frame[spec.weights].iloc[k])}")
        out["weights"] = w
    return out, specs


def formula_parts(spec: ModelSpec) -> dict[str, str]:
    """Each formula part by the name messages use for it (``part_name``)."""
    parts = {"mean": spec.mean_fixed, "within": spec.within_fixed}
    parts.update({which: text for which, text in (("mean offset", spec.mean_offset),
                                                  ("within offset", spec.within_offset)) if text})
    if spec.mean_random:
        parts["mean random"] = spec.mean_random
    if spec.within_random:
        parts["within random"] = spec.within_random
    for effect, text in spec.between or ():
        parts["between" if effect == LOCATION_INTERCEPT else f"between {target_name(effect)}"] = text
    return parts


def _complete_rows(data: pd.DataFrame, needed: list[str]) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The needed columns of the rows without a missing value, the mask of those rows, and
    the count of missing values per column (for the summary)."""
    frame = data.loc[:, list(dict.fromkeys(needed))]
    missing = frame.isna()
    n_missing = {str(name): int(count) for name, count in missing.sum().items() if count}
    complete = ~missing.any(axis=1).to_numpy()
    if not complete.any():
        raise MelsmInputError(
            f"no complete rows: all {int((~complete).sum())} rows have a missing value in a column the model uses "
            f"(missing values: {', '.join(f'{k}: {v}' for k, v in n_missing.items())})"
        )
    return frame.loc[complete], complete, n_missing


def _group_codes(frame: pd.DataFrame, group: str | None, n_dropped: int) -> tuple[np.ndarray, np.ndarray]:
    """Group index per row (0..J-1, groups in sorted order) and the groups' labels."""
    if group is None:
        return np.zeros(frame.shape[0], dtype=int), np.array([0])
    codes, labels = pd.factorize(frame[group], sort=True)
    labels = np.asarray(labels)
    if len(labels) < 2:
        after = f" after dropping {n_dropped} rows with missing values" if n_dropped else ""
        raise MelsmInputError(
            f"grouping column {quote(group)} has only one group ({as_written(labels[0])}){after}; need at least two"
        )
    return codes, labels


def _response(frame: pd.DataFrame, response: str) -> np.ndarray:
    y = pd.to_numeric(frame[response]).to_numpy(dtype=float)
    if not np.all(np.isfinite(y)):
        raise MelsmInputError(f"response {quote(response)} has infinite values")
    if np.ptp(y) == 0:
        raise MelsmInputError(f"response {quote(response)} has no variation")
    return y


def _row_matrices(spec: ModelSpec, frame: pd.DataFrame, n: int) -> dict:
    """X, W, Zu, Zv and their column names, each checked for finite values and full rank."""
    X, x_names, x_spec = checked_model_matrix(spec.mean_fixed, frame, "mean")
    W, w_names, w_spec = checked_model_matrix(spec.within_fixed, frame, "within")
    Zu, zu_names, zu_spec = (checked_model_matrix(spec.mean_random, frame, "mean random")
                             if spec.mean_random else (np.zeros((n, 0)), [], None))
    Zv, zv_names, zv_spec = (checked_model_matrix(spec.within_random, frame, "within random")
                             if spec.within_random else (np.zeros((n, 0)), [], None))
    for matrix, names, which in (
        (X, x_names, "mean"), (W, w_names, "within"),
        (Zu, zu_names, "mean random part of the"), (Zv, zv_names, "within random part of the"),
    ):
        check_finite(matrix, names, which)
        check_rank(matrix, names, which)
    if X.shape[1] == 0:
        raise MelsmInputError("the mean formula has no terms (not even an intercept)")
    if W.shape[1] == 0:
        raise MelsmInputError("the within formula has no terms; the level-1 variance needs "
                              "at least an intercept")
    return dict(X=X, W=W, Zu=Zu, Zv=Zv, x_names=x_names, w_names=w_names, zu_names=zu_names, zv_names=zv_names,
                specs={"X": x_spec, "W": w_spec, "Zu": zu_spec, "Zv": zv_spec})
