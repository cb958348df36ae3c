"""Checks of a data set against a model's formulas, each raising a one-line
``MelsmInputError`` that names the column, value or term at fault: unknown, duplicated or
non-numeric columns, infinite values, too-wide categorical terms, constant or collinear
covariates, and random effects the data cannot identify. See docs/architecture.md,
'From formulas to a fit'.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.model.grammar import Terms, quote
from melsm.model.matrices import model_matrix
from melsm.model.spec import ModelSpec

#: The most columns one part of a model (a formula's fixed or random terms) may have.
MAX_COLUMNS = 500


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


_PART_NAMES = {
    "mean": "mean formula",
    "within": "within formula",
    "mean random": "random part of the mean formula",
    "within random": "random part of the within formula",
    "between": "between formula",
    "mean offset": "offset of the mean formula",
    "within offset": "offset of the within formula",
}


def part_name(which: str) -> str:
    """How messages name a formula part; ``"between <effect>"`` is that effect's function."""
    return _PART_NAMES.get(which) or f"between formula of {which.removeprefix('between ')}"


def as_written(value) -> str:
    """A data value or index label as the user wrote it (``101``, not ``np.int64(101)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return quote(value) if isinstance(value, str) else repr(value)


def used_without_c(column: str, parsed: dict[str, Terms]) -> str | None:
    """The part (key of ``parsed``) that uses ``column`` other than as ``C(column)``."""
    for which, terms in parsed.items():
        if column in terms.numeric:
            return which
    return None


def check_width(frame: pd.DataFrame, parsed: dict[str, Terms]) -> None:
    """Refuse a formula whose model matrix would have more than ``MAX_COLUMNS`` columns (a
    categorical identifier with thousands of levels), before formulaic allocates it."""
    for which, terms in parsed.items():
        width, widest = 0, None
        for term in terms.terms:
            size = 1
            for kind, detail in term:
                levels = frame[detail].nunique() if kind == "categorical" else detail if kind == "poly" else 1
                size *= levels
                if kind == "categorical" and (widest is None or levels > widest[1]):
                    widest = (detail, levels)
            width += size
        if width > MAX_COLUMNS:
            why = f"; C({widest[0]}) has {widest[1]:,} levels" if widest else ""
            raise MelsmInputError(f"the {part_name(which)} would have {width:,} columns{why}; "
                                  f"the limit is {MAX_COLUMNS:,}")


def numeric_as_float(frame: pd.DataFrame, parsed: dict[str, Terms], group: str | None) -> pd.DataFrame:
    """Columns used as numbers (not as ``C(column)`` or the grouping factor) as float64, so
    that arithmetic in a formula (``I(x ** 40)``) cannot overflow integers silently."""
    categorical = set().union(*(t.variables - t.numeric for t in parsed.values())) | {group}
    numeric = set().union(*(t.numeric for t in parsed.values())) - categorical
    cast = {name: float for name in numeric if pd.api.types.is_integer_dtype(frame[name])}
    return frame.astype(cast) if cast else frame


def check_columns(data: pd.DataFrame, spec: ModelSpec, used: dict[str, set[str]],
                   parsed: dict[str, Terms]) -> None:
    available = ", ".join(quote(c, 40)[1:-1] for c in data.columns[:12]) + (", ..." if len(data.columns) > 12 else "")
    if spec.response not in data.columns:
        raise MelsmInputError(f"unknown response column {quote(spec.response)} in the mean formula "
                              f"(columns: {available})")
    for which, names in used.items():
        for name in sorted(names):
            if name not in data.columns:
                raise MelsmInputError(
                    f"unknown column {quote(name)} in the {part_name(which)} (columns: {available})")
        for name in sorted(parsed[which].functions if which in parsed else ()):
            if name in data.columns:  # a column would hide the function when the formula is evaluated
                raise MelsmInputError(f"the {part_name(which)} calls {name}(...), which is also the name of "
                                      "a column; rename the column")
    if spec.group is not None and spec.group not in data.columns:
        raise MelsmInputError(f"unknown grouping column {quote(spec.group)} (columns: {available})")
    needed = set().union(*used.values()) | ({spec.group} if spec.group else set())
    counts = data.columns.value_counts()
    for name in sorted(needed):
        if counts.get(name, 1) > 1:
            raise MelsmInputError(f"column {quote(name)} appears {counts[name]} times in the data; "
                                  "column names must be unique")


def check_numeric(data: pd.DataFrame, columns: list[str], response: str,
                   parsed: dict[str, Terms]) -> None:
    """Every used column is numeric, except text or categorical columns used only as ``C(col)``."""
    for name in columns:
        col = data[name]
        what = f"response {quote(name)}" if name == response else f"column {quote(name)}"
        if pd.api.types.is_complex_dtype(col):
            raise MelsmInputError(f"{what} has complex values; melsm needs real numbers")
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            continue
        which = response if name == response else used_without_c(name, parsed)
        if which is None:
            continue  # only used as C(name): a categorical covariate
        where = "" if name == response else f" in the {part_name(which)}"
        present = col.dropna()
        if isinstance(col.dtype, pd.CategoricalDtype):
            raise MelsmInputError(
                f"{what}{where} is categorical; write C({name}) to use it as a categorical covariate"
                if name != response else f"{what} is categorical; the response must be numeric"
            )
        if not (pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)) or not len(present):
            raise MelsmInputError(f"{what}{where} is not numeric (type {col.dtype})")
        numeric = pd.to_numeric(present, errors="coerce")
        bad = present[numeric.isna()]
        if len(bad) == len(present):  # text throughout: a categorical covariate
            hint = ("the response must be numeric" if name == response else
                    f"write C({name}) to use it as a categorical covariate")
            raise MelsmInputError(f"{what}{where} holds text (e.g. {as_written(bad.iloc[0])}), not numbers; {hint}")
        if len(bad):  # numbers with some stray values: a data error
            raise MelsmInputError(
                f"{what}{where} has non-numeric value {as_written(bad.iloc[0])} in row {as_written(bad.index[0])}"
                + (f" ({len(bad)} of {len(present)} values are not numbers)" if len(bad) > 1 else "")
            )
        raise MelsmInputError(
            f"{what}{where} holds numbers stored as {'text' if isinstance(present.iloc[0], str) else 'objects'}"
            f" (e.g. {as_written(present.iloc[0])}); convert it with pd.to_numeric"
            + ("" if name == response else f", or write C({name}) for a categorical covariate")
        )
    for name in columns:
        values = data[name]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            infinite = np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
            if infinite.any():
                row = data.index[int(np.argmax(infinite))]
                raise MelsmInputError(f"column {quote(name)} has an infinite value in row {as_written(row)}")


def checked_matrix(formula: str, data: pd.DataFrame, which: str) -> tuple[np.ndarray, list[str]]:
    """The model matrix of ``formula`` on ``data`` and its column names."""
    matrix, names, _ = checked_model_matrix(formula, data, which)
    return matrix, names


def checked_model_matrix(formula: str, data: pd.DataFrame, which: str) -> tuple[np.ndarray, list[str], Any]:
    """The model matrix, its column names, and formulaic's ``ModelSpec`` (the state of
    stateful transforms and the factor levels, for new data: ``melsm.model.newdata``)."""
    try:
        mm = model_matrix(formula, data)
    except Exception as err:  # formulaic raises many types; any of them is a problem of the formula or data
        raise MelsmInputError(f"cannot build {which} terms {quote(formula)}: {quote(first_line(err), 200)}") from None
    return np.asarray(mm, dtype=float), [str(c) for c in mm.columns], mm.model_spec


def check_finite(matrix: np.ndarray, names: list[str], which: str) -> None:
    bad = ~np.isfinite(matrix)
    if bad.any():
        k = int(np.argmax(bad.any(axis=0)))
        raise MelsmInputError(f"term {quote(names[k])} in the {which} formula has infinite or undefined values")


def check_rank(matrix: np.ndarray, names: list[str], which: str) -> None:
    """Name the first column that is constant or a linear combination of earlier ones."""
    if matrix.shape[1] == 0:
        return
    has_intercept = "Intercept" in names
    for k, name in enumerate(names):
        col = matrix[:, k]
        if name != "Intercept" and np.ptp(col) == 0:
            if has_intercept:
                raise MelsmInputError(f"covariate {quote(name)} in the {which} formula has no variation")
            if not np.any(col):
                raise MelsmInputError(f"covariate {quote(name)} in the {which} formula is all zero")
    scale = np.maximum(np.abs(matrix).max(axis=0), 1e-300)
    scaled = matrix / scale
    for k in range(1, len(names) + 1):
        sub = scaled[:, :k]
        sv = np.linalg.svd(sub, compute_uv=False)
        if sv[-1] <= 1e-9 * sv[0] * np.sqrt(sub.shape[0]):
            raise MelsmInputError(
                f"covariate {quote(names[k - 1])} in the {which} formula is collinear with "
                f"{', '.join(repr(n) for n in names[: k - 1])}"
            )


def check_identified(n_obs: int, n_groups: int, group: str | None, q_u: int, q_v: int) -> None:
    """Refuse random effects the data cannot separate from the level-1 variance: as lme4
    does, when there are no more rows than random effects of a kind (N ≤ J·q). Groups of
    one row, say, give each group's location effect, scale effect and residual together."""
    for q, kind in ((q_u, "random location"), (q_v, "random scale")):
        if q and n_obs <= n_groups * q:
            raise MelsmInputError(
                f"{n_obs:,} rows in {n_groups:,} groups of {quote(group)} cannot identify {q} {kind} "
                f"effect{'s' if q > 1 else ''} per group and the level-1 variance (there must be more rows than "
                f"{n_groups:,} x {q}); use fewer random effects or a grouping with larger groups")
