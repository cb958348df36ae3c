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
from melsm.model.checks import as_written, check_finite, numeric_as_float
from melsm.model.grammar import parse_terms, quote

#: The design matrices and the formula part (``part_name``) each comes from.
PARTS = (("X", "mean"), ("W", "within"), ("Zu", "mean random"), ("Zv", "within random"))


def new_data_arrays(design, data: pd.DataFrame) -> dict[str, np.ndarray]:
    """X, W, Zu, Zv (rows in the order of ``data``) for new rows under the fitted design."""
    if not isinstance(data, pd.DataFrame):
        raise MelsmInputError("new data must be a pandas DataFrame")
    out = {}
    for key, part in PARTS:
        model_spec = design.specs.get(key)
        if model_spec is None:
            out[key] = np.zeros((len(data), 0))
            continue
        frame = _columns(design, part, data)
        _check_levels(model_spec, frame, part)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            try:
                matrix = np.asarray(model_spec.get_model_matrix(frame), dtype=float)
            except DataMismatchWarning as err:  # a level _check_levels could not trace to a column
                raise MelsmInputError(f"new data for the {part} formula: {str(err).splitlines()[0]}") from None
        check_finite(matrix, list(model_spec.column_names), f"{part} (new data)")
        out[key] = matrix.reshape(len(data), -1)
    return out


def _columns(design, part: str, data: pd.DataFrame) -> pd.DataFrame:
    """The columns ``part`` uses, present and complete, numbers as float as in the fit."""
    terms = design.parsed[part]
    for name in sorted(terms.variables):
        if name not in data.columns:
            raise MelsmInputError(f"new data lack column {quote(name)} (used in the {part} formula)")
        if data[name].isna().any():
            row = data.index[data[name].isna().to_numpy()][0]
            raise MelsmInputError(f"new data: column {quote(name)} has a missing value (row {as_written(row)})")
    frame = data.loc[:, sorted(terms.variables)]
    return numeric_as_float(frame, {part: terms}, None)


def _check_levels(model_spec, frame: pd.DataFrame, part: str) -> None:
    """Every value of a categorical column is one of the fitted data's levels."""
    for factor, (kind, state) in model_spec.encoder_state.items():
        levels = state.get("categories") if str(getattr(kind, "value", kind)) == "categorical" else None
        if levels is None:
            continue
        variables = sorted(parse_terms(factor, part).variables)
        if len(variables) != 1:
            continue
        known = set(levels)
        unseen = [v for v in pd.unique(frame[variables[0]]) if v not in known]
        if unseen:
            shown = ", ".join(as_written(v) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
            raise MelsmInputError(f"new data: column {quote(variables[0])} has level {as_written(unseen[0])}, which "
                                  f"the fitted data did not have (levels: {shown})")
