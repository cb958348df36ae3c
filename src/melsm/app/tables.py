"""The results as the page shows them: tables made from the results' DataFrames, with the
API's names (``fit.names``, the columns of ``fit.table()``), as plain values the worker
can send and the page can render (it escapes every cell).

A table is a dict::

    {"key", "title", "note", "corner": the index's name, "columns": [...],
     "names": whether the row labels are the API's names (shown as code),
     "text_columns": indices of the columns of words (the others are numbers),
     "rows": [{"label": ..., "cells": [text, ...]} | {"block": title}, ...]}

(a row with ``"plain": True`` has words for a label, not a name, in a table of names).

Cells are text, formatted here (``number``, ``p_value``); an empty cell is "". Fits are
read through the results contract only (``melsm.results.base``), so ML and MCMC fits go
through the same code. Runs in the worker (``jobs``). See docs/architecture.md,
'Front ends'.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from melsm.model.evaluation import describe

#: Blocks of the parameter table, by the prefix of the API's names, in their order.
BLOCKS = {"mean": "Mean function", "within": "Level-1 variance function (log variance)",
          "between": "Level-2 variance functions (log variances of random effects)",
          "sd": "Random-effect standard deviations", "corr": "Random-effect correlations",
          "assoc": "Association (quadratic)"}


def _finite(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def number(value) -> str:
    """Four decimals, or four significant digits where decimals would show 0.0000 or be
    too wide (data in small or large units); "" for a missing value; text as it is."""
    x = _finite(value)
    if x is None:
        return "" if value is None or isinstance(value, int | float) else str(value)
    if x != 0 and (abs(x) < 5e-5 or abs(x) >= 1e7):
        return f"{x:.3e}"
    return f"{x:.4f}"


def p_value(value) -> str:
    x = _finite(value)
    return "" if x is None else "<0.0001" if x < 1e-4 else f"{x:.4f}"


def whole(value) -> str:
    x = _finite(value)
    return "" if x is None else f"{x:.0f}"


def three(value) -> str:
    x = _finite(value)
    return "" if x is None else f"{x:.3f}"


def text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


#: How a column is formatted, by its name (others: ``number``).
FORMATS: dict[str, Callable[[object], str]] = {
    "p": p_value, "ess_bulk": whole, "ess_tail": whole, "df": whole, "r_hat": three,
    "distribution": text, "note": text}


def frame_table(key: str, title: str, frame: pd.DataFrame, note: str = "", corner: str | None = None,
                blocks: dict[str, str] | None = None) -> dict:
    """A DataFrame as a table: its index as row labels, its columns as they are named.
    ``blocks``: a title row before each run of labels with the same prefix (before ':')."""
    columns = [str(c) for c in frame.columns]
    formats = [FORMATS.get(c, number) for c in columns]
    rows, current = [], None
    for label, values in zip(frame.index, frame.to_numpy(dtype=object), strict=True):
        prefix = str(label).split(":", 1)[0]
        if blocks and prefix != current and prefix in blocks:
            rows.append({"block": blocks[prefix]})
            current = prefix
        rows.append({"label": str(label), "cells": [f(v) for f, v in zip(formats, values, strict=True)]})
    return {"key": key, "title": title, "note": note, "columns": columns, "names": True,
            "text_columns": [k for k, c in enumerate(columns) if FORMATS.get(c) is text],
            "corner": str(frame.index.name or "") if corner is None else corner, "rows": rows}


def parameter_table(fit) -> dict:
    """``fit.table()``, one row per ``fit.names``, in blocks by function."""
    table = fit.table().loc[list(fit.names)]
    wording = fit.wording
    note = (f"estimate and std_error: {wording.estimate_and_error}; lower and upper: {wording.interval}. "
            "Names as in fit.names and fit.table().")
    return frame_table("parameters", "Parameters", table.rename_axis("parameter"), note, blocks=BLOCKS)


def covariance_table(fit) -> dict:
    """``fit.covariance_matrix()``, lower triangle (variances on the diagonal)."""
    sigma = fit.covariance_matrix()
    lower = sigma.astype(object).where(pd.DataFrame(
        [[c <= r for c in range(sigma.shape[1])] for r in range(sigma.shape[0])], index=sigma.index,
        columns=sigma.columns), None)
    note = (f"for a group at {describe(fit.model.design, per_group=False)}" if fit.model.design.g_names else "")
    return frame_table("covariance", "Random-effect variances and covariances", lower, note, corner="")


def typical_table(fit) -> dict | None:
    """``fit.typical_groups()`` turned on its side (a row per parameter, a column per
    typical group), under level-2 functions; None without them."""
    if not fit.model.design.g_names:
        return None
    typical = fit.typical_groups()
    if not len(typical):
        return None
    return frame_table("typical", "Implied SDs and correlations for typical groups (level-2 functions)",
                       typical.T.rename_axis("parameter"),
                       "columns: the groups' covariates, as in fit.typical_groups()")


def population_table(fit) -> dict | None:
    """``fit.population_quantities()`` where the model has them."""
    from melsm.results.groups import has_group_quantities

    if not has_group_quantities(fit.model.layout):
        return None
    note = ("between_variance: the random location intercept's variance; variance_mean and "
            "variance_variance: mean and variance of the groups' level-1 variances; icc: the average "
            f"intraclass correlation; mean: the mean; at {describe(fit.model.design, per_group=False)}")
    return frame_table("population", "Population averages", fit.population_quantities(), note)


def result_tables(fit) -> list[dict]:
    """The tables of one fit, in the order the page shows them."""
    tables = [parameter_table(fit), covariance_table(fit), typical_table(fit), population_table(fit)]
    return [t for t in tables if t is not None]


# ---- comparisons --------------------------------------------------------------------------
def _block_order(name: str) -> int:
    prefix = name.split(":", 1)[0]
    return list(BLOCKS).index(prefix) if prefix in BLOCKS else len(BLOCKS)


def side_by_side(fits: list, names: list[str], lr_cells: dict[int, str]) -> dict:
    """Every fit's estimate (std_error) by the API's parameter names (a row per name any
    fit has, in blocks), then the fit statistics and, where a fit is tested against the
    one before it, the LR row (``lr_cells``: fit index → its cell)."""
    frames = [fit.table() for fit in fits]
    order: dict[str, int] = {}
    for fit in fits:
        for name in fit.names:
            order.setdefault(name, len(order))
    rows, current = [], None
    for name in sorted(order, key=lambda n: (_block_order(n), order[n])):
        prefix = name.split(":", 1)[0]
        if prefix != current and prefix in BLOCKS:
            rows.append({"block": BLOCKS[prefix]})
            current = prefix
        rows.append({"label": name, "cells": [_estimate(frame, name) for frame in frames]})
    rows.append({"block": "Model fit"})
    statistics = [fit.fit_statistics() for fit in fits]
    for label in dict.fromkeys(k for s in statistics for k in s):
        show = whole if label == "Parameters" else number
        rows.append({"label": label, "plain": True, "cells": [show(s.get(label)) for s in statistics]})
    if lr_cells:
        rows.append({"label": "LR test vs the model before", "plain": True,
                     "cells": [lr_cells.get(k, "") for k in range(len(fits))]})
    wording = fits[0].wording
    return {"key": "compare", "title": "Estimates side by side", "corner": "parameter", "names": True,
            "note": f"estimate (std_error): {wording.estimate_and_error}. Names as in fit.names.",
            "columns": list(names), "text_columns": [], "rows": rows}


def _estimate(frame: pd.DataFrame, name: str) -> str:
    """"estimate (std_error)" of row ``name``; "" where the fit has no such parameter."""
    if name not in frame.index:
        return ""
    estimate, error = number(frame.at[name, "estimate"]), number(frame.at[name, "std_error"])
    return f"{estimate} ({error})" if error else estimate


def _not_nested(one, other) -> str:
    """Why two fits have no LR test (``melsm.results.nesting``)."""
    from melsm.results.nesting import nested

    small, big = sorted((one, other), key=lambda f: f.n_params)
    if small.n_params == big.n_params:
        return "they have the same number of parameters"
    return nested(small, big)[1] or "neither is a restriction of the other"


def lr_tests(comparison, fits: list, names: list[str]) -> tuple[dict | None, dict[int, str], list[str]]:
    """The LR tests ``melsm.compare`` found (consecutive nested fits) as a table with
    the API's wording of the reference distribution (χ̄² for an added random effect), the
    cells of the LR row of ``side_by_side``, and a note for each consecutive pair that
    is not nested (no LR test)."""
    if not fits[0].has_likelihood:
        return None, {}, [f"No LR tests: {fits[0].wording.title} fits have no likelihood; compare them by "
                          f"{fits[0].criteria_names[0]}."]
    tests = comparison.lrtests
    rows, cells, notes = [], {}, []
    for k in range(1, len(fits)):
        pair = {names[k - 1], names[k]}
        found = tests[[{a, b} == pair for a, b in zip(tests.restricted, tests.full, strict=True)]]
        if not len(found):
            notes.append(f"{names[k - 1]} and {names[k]} are not nested ({_not_nested(fits[k - 1], fits[k])}): "
                         "no LR test.")
            continue
        test = found.iloc[0]
        p = p_value(test.p)
        cells[k] = f"LR {number(test.statistic)}, p {p if p.startswith('<') else '= ' + p}"
        rows.append({"label": f"{test.full} vs {test.restricted}",
                     "cells": [number(test.statistic), whole(test.df), text(test.distribution), p, text(test.note)]})
    if not rows:
        return None, cells, notes
    table = {"key": "lrtests", "title": "Likelihood-ratio tests of nested models", "corner": "full vs restricted",
             "note": "statistic: LR = 2 (log L full − log L restricted); its reference distribution as "
                     "melsm.compare() and fit.lrtest() give it.",
             "columns": ["statistic", "df", "distribution", "p", "note"], "names": False, "text_columns": [2, 4],
             "rows": rows}
    return table, cells, notes


def comparison_tables(fits: list, names: list[str]) -> dict:
    """The page's comparison of fits: ``{"tables": [...], "notes": [...]}``. Raises
    ``MelsmInputError`` where ``melsm.compare`` does (fits that cannot be compared)."""
    import melsm

    comparison = melsm.compare(*fits, names=names)
    lr_table, lr_cells, notes = lr_tests(comparison, fits, names)
    tables = [side_by_side(fits, names, lr_cells)] + ([lr_table] if lr_table else [])
    return {"tables": tables, "notes": notes}
