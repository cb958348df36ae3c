"""The data's columns as the model form offers them (pandas only): each column's type,
missing values, whether its name can enter a formula, and its level given the group.

Levels are read from the data, never from the page:

- ``constant``: one value in every row (missing counts as a value); the intercept
  already covers it, so the form neither offers nor accepts it as a covariate;
- ``level-2``: one value within each group (a group covariate): offered everywhere,
  including the level-2 (between) variance functions;
- ``level-1``: varies within some group: not offered, and refused, for the level-2
  variance functions;
- ``group``: the group column itself; ``""`` when no usable group is chosen.

Text columns are categorical always; a numeric column is categorical when the form
says so (it enters the formula as ``C(column)``). See docs/architecture.md, 'Front ends'.
"""

from __future__ import annotations

import re

import pandas as pd

from .limits import MAX_CATEGORIES

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
LEVELS = ("constant", "level-2", "level-1", "group", "")


def column_levels(data: pd.DataFrame, group: str | None, columns: list[str] | None = None) -> dict[str, str]:
    """The level of each of ``columns`` (default: all) given the group column ``group``
    (see the module docstring). Rows whose group is missing are left out, as the model
    leaves them out."""
    names = list(dict.fromkeys(data.columns if columns is None else [c for c in columns if c in data.columns]))
    distinct = data[names].nunique(dropna=False) if names else pd.Series(dtype=int)
    within = None
    usable_group = isinstance(group, str) and group in data.columns and data[group].nunique() >= 2
    if usable_group:
        others = [c for c in names if c != group]
        if others:
            within = data[[group, *others]].groupby(group, sort=False).nunique(dropna=False).max()
    levels = {}
    for name in names:
        if distinct[name] <= 1:
            levels[name] = "constant"
        elif usable_group and name == group:
            levels[name] = "group"
        elif within is None:
            levels[name] = ""
        else:
            levels[name] = "level-2" if within[name] <= 1 else "level-1"
    return levels


def column_info(data: pd.DataFrame, group: str | None = None) -> list[dict]:
    """For each column: name, type ("numeric" or "text"), missing count, distinct values,
    whether the name can be used in a formula, its level (``column_levels``) and whether
    it can be categorical (at most ``MAX_CATEGORIES`` values) or must be (text)."""
    levels = column_levels(data, group)
    out = []
    for name in data.columns:
        column = data[name]
        kind = "numeric" if pd.api.types.is_numeric_dtype(column) else "text"
        distinct = int(column.nunique())
        out.append({"name": str(name), "type": kind, "missing": int(column.isna().sum()), "distinct": distinct,
                    "usable": bool(IDENTIFIER.match(str(name))), "level": levels[name],
                    "categorical": "always" if kind == "text" else "can" if distinct <= MAX_CATEGORIES else "no"})
    return out
