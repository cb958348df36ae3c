"""Where group and population quantities are evaluated: covariate values that exist
(docs/architecture.md, 'Group and population quantities').

A group's mean, level-1 variance and ICC, the population averages and Σ_j depend on the
covariates. They are evaluated at one row of covariate values per group, and one for the
population:

- a covariate the user names in ``at`` (a data column, e.g. ``{"schgend": 2}``) takes
  that value everywhere;
- a **level-2** covariate (constant within every group) takes, for each group, the
  group's own value, so that a group is compared with the average for groups like it;
  for the population it follows the next rule;
- every other covariate takes its **default**: a categorical column (text, or used in
  ``C(...)``) its reference level (the first of the fitted levels); a numeric column 0
  when 0 lies within its observed range (the reference value of a 0/1 indicator, a
  centred covariate, a baseline time), otherwise its sample mean (a covariate that
  cannot be 0, such as age or a 1–3 code).

The rows are encoded with the fitted formulas (``melsm.model.newdata``), so transforms
such as ``center(x)``, ``poly(x, 2)`` or ``C(x)`` see the value of the column itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.model.checks import as_written
from melsm.model.grammar import parse_terms, quote
from melsm.model.newdata import new_data_arrays, new_level2_rows


def categorical_levels(design) -> dict[str, list]:
    """The fitted levels of each column the formulas encode as categorical (first: the
    reference level)."""
    levels: dict[str, list] = {}
    for spec in [*design.specs.values(), *design.g_specs]:
        if spec is None:
            continue
        for factor, (kind, state) in spec.encoder_state.items():
            if str(getattr(kind, "value", kind)) != "categorical" or "categories" not in state:
                continue
            variables = sorted(parse_terms(factor, "formula").variables)
            if len(variables) == 1:
                levels.setdefault(variables[0], list(state["categories"]))
    return levels


def level2_columns(design) -> list[str]:
    """The covariates constant within every group."""
    frame = design.covariates
    if frame is None or frame.empty or design.group_name is None:
        return []
    counts = frame.groupby(design.group, sort=False).nunique(dropna=False)
    return [c for c in frame.columns if (counts[c] <= 1).all()]


def default_values(design) -> dict:
    """Each covariate's default (module docstring): reference level, 0, or the mean."""
    levels = categorical_levels(design)
    out = {}
    for column in design.covariates.columns:
        values = design.covariates[column]
        if column in levels:
            out[column] = levels[column][0]
        elif not pd.api.types.is_numeric_dtype(values):
            out[column] = sorted(pd.unique(values))[0]
        else:
            low, high = float(values.min()), float(values.max())
            out[column] = 0.0 if low <= 0.0 <= high else float(values.mean())
    return out


def check_at(design, at: Mapping | None) -> dict:
    """``at`` as a dict of known covariates to single values; one line for anything else."""
    if at is None:
        return {}
    if not isinstance(at, Mapping):
        raise MelsmInputError(f"at must be a dict of covariate values, e.g. {{'x': 1}}, not {type(at).__name__}")
    columns = list(design.covariates.columns)
    for name, value in at.items():
        if name not in columns:
            known = ", ".join(quote(c) for c in columns) or "none"
            raise MelsmInputError(f"at: {quote(str(name))} is not a covariate of the model (covariates: {known})")
        if isinstance(value, list | tuple | set | dict | np.ndarray | pd.Series):
            raise MelsmInputError(f"at: {quote(name)} must be one value, not {as_written(value)}")
        levels = categorical_levels(design).get(name)
        if levels is not None and value not in levels:
            shown = ", ".join(as_written(v) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
            raise MelsmInputError(f"at: {quote(name)} must be one of its fitted levels ({shown}), "
                                  f"not {as_written(value)}")
        numeric = pd.api.types.is_numeric_dtype(design.covariates[name]) and levels is None
        if numeric and (isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value)):
            raise MelsmInputError(f"at: {quote(name)} must be a finite number, not {as_written(value)}")
    return dict(at)


def evaluation_frame(design, at: Mapping | None = None, per_group: bool = True) -> pd.DataFrame:
    """Covariate values: one row per group (``per_group``; level-2 covariates at each
    group's own values) or one row for the population (module docstring)."""
    at = check_at(design, at)
    values = default_values(design) | at
    n = design.n_groups if per_group else 1
    frame = pd.DataFrame({c: [values[c]] * n for c in design.covariates.columns})
    if per_group:
        first = np.searchsorted(design.group, np.arange(design.n_groups))  # rows are sorted by group
        for column in level2_columns(design):
            if column not in at:
                frame[column] = design.covariates[column].to_numpy()[first]
    categorical = categorical_levels(design)
    for column in frame.columns:  # numeric covariates as the fit saw them (float)
        if column not in categorical and pd.api.types.is_numeric_dtype(design.covariates[column]):
            frame[column] = frame[column].astype(float)
    return frame


def evaluation_rows(design, at: Mapping | None = None, per_group: bool = True) -> dict[str, np.ndarray]:
    """X, W, Zu, Zv, the offsets and G (level-2 functions) at the rows of ``evaluation_frame``."""
    frame = evaluation_frame(design, at, per_group)
    if frame.shape[1] == 0:  # intercepts only: formulaic needs a row count
        frame = pd.DataFrame(index=range(design.n_groups if per_group else 1))
    arrays = new_data_arrays(design, frame)
    arrays["G"] = new_level2_rows(design, frame) if design.g_specs else np.zeros((len(frame), 0))
    if per_group and not design.g_specs:
        arrays["G"] = design.G
    arrays["values"] = frame
    return arrays


def describe(design, at: Mapping | None = None, per_group: bool = True) -> str:
    """Where the quantities are evaluated, in words: "each group's own endog; week = 0"."""
    at = check_at(design, at)
    values = default_values(design) | at
    own = [c for c in level2_columns(design) if c not in at] if per_group else []
    fixed = [f"{c} = {as_written(values[c]) if not isinstance(values[c], float) else f'{values[c]:.4g}'}"
             for c in design.covariates.columns if c not in own]
    parts = ([f"each {design.group_name or 'group'}'s own {', '.join(own)}"] if own else []) + fixed
    return "; ".join(parts) or "no covariates"
