"""Design matrices of new data under a fitted model (docs/architecture.md, 'The model').

New rows are encoded with the fitted data's formulaic ``ModelSpec`` of each part, so a
prediction for a row does not depend on the other rows given with it: stateful
transforms (``center``, ``scale``, ``poly``) use the fitted data's means, SDs and
polynomial bases, and a categorical column may hold any subset of the fitted levels. A
level the fit never saw has no coefficient: it is refused with one line naming the
column and the level (formulaic itself would encode it silently as the reference level).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from formulaic.errors import DataMismatchWarning

from melsm.errors import MelsmInputError
from melsm.model.checks import as_written, check_finite
from melsm.model.grammar import parse_terms, quote

#: The design matrices and the formula part (``part_name``) each comes from.
PARTS = (("X", "mean"), ("W", "within"), ("Zu", "mean random"), ("Zv", "within random"))


def new_data_arrays(design, data: pd.DataFrame) -> dict[str, np.ndarray]:
    """X, W, Zu, Zv and the offsets ``offset_mean``, ``offset_within`` (rows in the order
    of ``data``) for new rows under the fitted design."""
    _check_frame(data)
    out = {key: spec_rows(design.specs.get(key), data, f"{part} formula") for key, part in PARTS}
    for key, part in (("offset_mean", "mean"), ("offset_within", "within")):
        rows = spec_rows(design.specs.get(key), data, f"offset of the {part} formula")
        out[key] = rows[:, 0] if rows.shape[1] else np.zeros(len(data))
    return out


def new_level2_rows(design, data: pd.DataFrame) -> np.ndarray:
    """(n, p_g): each row's level-2 covariates under every level-2 function, as in G."""
    _check_frame(data)
    blocks = [spec_rows(spec, data, "between formula") for spec in design.g_specs]
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(data), 0))


def _check_frame(data) -> None:
    if not isinstance(data, pd.DataFrame):
        raise MelsmInputError("new data must be a pandas DataFrame")
    if len(data) == 0:
        raise MelsmInputError("new data have no rows")


def spec_rows(model_spec, data: pd.DataFrame, where: str) -> np.ndarray:
    """The rows of one fitted part (formulaic ``ModelSpec``; None: an absent part) for ``data``."""
    if model_spec is None:
        return np.zeros((len(data), 0))
    frame = _columns(model_spec, data, where)
    _check_levels(model_spec, frame, where)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            matrix = np.asarray(model_spec.get_model_matrix(frame), dtype=float)
        except DataMismatchWarning as err:  # a level _check_levels could not trace to a column
            raise MelsmInputError(f"new data for the {where}: {str(err).splitlines()[0]}") from None
    matrix = matrix.reshape(len(data), -1)
    check_finite(matrix, list(model_spec.column_names), f"{where} (new data)")
    return matrix


def _columns(model_spec, data: pd.DataFrame, where: str) -> pd.DataFrame:
    """The columns the part uses, present and complete; integers as float (as in the fit,
    ``checks.numeric_as_float``) except where the fit encoded them as categories."""
    needed = sorted(model_spec.required_variables)
    for name in needed:
        if name not in data.columns:
            raise MelsmInputError(f"new data lack column {quote(name)} (used in the {where})")
        if data[name].isna().any():
            row = data.index[data[name].isna().to_numpy()][0]
            raise MelsmInputError(f"new data: column {quote(name)} has a missing value (row {as_written(row)})")
    frame = data.loc[:, needed]
    categorical = set().union(*(_variables(f, where) for f, (kind, _) in model_spec.encoder_state.items()
                                if _is_categorical(kind)))
    cast = {n: float for n in needed if n not in categorical and pd.api.types.is_integer_dtype(frame[n])}
    return frame.astype(cast) if cast else frame


def _is_categorical(kind) -> bool:
    return str(getattr(kind, "value", kind)) == "categorical"


def _variables(factor: str, where: str) -> set[str]:
    return set(parse_terms(factor, where).variables)


def _check_levels(model_spec, frame: pd.DataFrame, where: str) -> None:
    """Every value of a categorical column is one of the fitted data's levels."""
    for factor, (kind, state) in model_spec.encoder_state.items():
        levels = state.get("categories") if _is_categorical(kind) else None
        variables = sorted(_variables(factor, where)) if levels is not None else []
        if len(variables) != 1:
            continue
        known = set(levels)
        unseen = [v for v in pd.unique(frame[variables[0]]) if v not in known]
        if unseen:
            shown = ", ".join(as_written(v) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
            raise MelsmInputError(f"new data: column {quote(variables[0])} has level {as_written(unseen[0])}, which "
                                  f"the fitted data did not have (levels: {shown})")
