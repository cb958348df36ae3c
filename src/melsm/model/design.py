"""Design: turn a ``ModelSpec`` and a data frame into the arrays the likelihood uses.

All checks of the data happen here, so that every later layer can trust its arrays:
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
from melsm.model.grammar import Terms, parse_terms, quote
from melsm.model.matrices import model_matrix
from melsm.model.spec import LOCATION_INTERCEPT, ModelSpec

#: The most columns one part of a model (a formula's fixed or random terms) may have.
MAX_COLUMNS = 500


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
    g_names: list[str]  # coefficient names of every level-2 function, in G's column order
    row_order: np.ndarray  # (N,) index into the caller's rows (after dropping missing)
    row_index: pd.Index  # caller's index labels of the used rows (sorted order)
    n_dropped: int
    response: str
    group_name: str | None
    y_scale: float = field(default=1.0)
    n_missing: dict = field(default_factory=dict)  # column -> missing values among the rows given
    g_functions: list = field(default_factory=list)  # (effect, first, end column of G) per function

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
    return set(parse_terms(formula, _part_name(which)).variables)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


_PART_NAMES = {
    "mean": "mean formula",
    "within": "within formula",
    "mean random": "random part of the mean formula",
    "within random": "random part of the within formula",
    "between": "between formula",
}


def _part_name(which: str) -> str:
    """How messages name a formula part; ``"between <effect>"`` is that effect's function."""
    return _PART_NAMES.get(which) or f"between formula of {which.removeprefix('between ')}"


def _as_written(value) -> str:
    """A data value or index label as the user wrote it (``101``, not ``np.int64(101)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return quote(value) if isinstance(value, str) else repr(value)


def _used_without_c(column: str, parsed: dict[str, Terms]) -> str | None:
    """The part (key of ``parsed``) that uses ``column`` other than as ``C(column)``."""
    for which, terms in parsed.items():
        if column in terms.numeric:
            return which
    return None


def _check_width(frame: pd.DataFrame, parsed: dict[str, Terms]) -> None:
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
            raise MelsmInputError(f"the {_part_name(which)} would have {width:,} columns{why}; "
                                  f"the limit is {MAX_COLUMNS:,}")


def _numeric_as_float(frame: pd.DataFrame, parsed: dict[str, Terms], group: str | None) -> pd.DataFrame:
    """Columns used as numbers (not as ``C(column)`` or the grouping factor) as float64, so
    that arithmetic in a formula (``I(x ** 40)``) cannot overflow integers silently."""
    categorical = set().union(*(t.variables - t.numeric for t in parsed.values())) | {group}
    numeric = set().union(*(t.numeric for t in parsed.values())) - categorical
    cast = {name: float for name in numeric if pd.api.types.is_integer_dtype(frame[name])}
    return frame.astype(cast) if cast else frame


def _check_columns(data: pd.DataFrame, spec: ModelSpec, used: dict[str, set[str]],
                   parsed: dict[str, Terms]) -> None:
    available = ", ".join(quote(c, 40)[1:-1] for c in data.columns[:12]) + (", ..." if len(data.columns) > 12 else "")
    if spec.response not in data.columns:
        raise MelsmInputError(f"unknown response column {quote(spec.response)} in the mean formula "
                              f"(columns: {available})")
    for which, names in used.items():
        for name in sorted(names):
            if name not in data.columns:
                raise MelsmInputError(
                    f"unknown column {quote(name)} in the {_part_name(which)} (columns: {available})")
        for name in sorted(parsed[which].functions if which in parsed else ()):
            if name in data.columns:  # a column would hide the function when the formula is evaluated
                raise MelsmInputError(f"the {_part_name(which)} calls {name}(...), which is also the name of "
                                      "a column; rename the column")
    if spec.group is not None and spec.group not in data.columns:
        raise MelsmInputError(f"unknown grouping column {quote(spec.group)} (columns: {available})")
    needed = set().union(*used.values()) | ({spec.group} if spec.group else set())
    counts = data.columns.value_counts()
    for name in sorted(needed):
        if counts.get(name, 1) > 1:
            raise MelsmInputError(f"column {quote(name)} appears {counts[name]} times in the data; "
                                  "column names must be unique")


def _check_numeric(data: pd.DataFrame, columns: list[str], response: str,
                   parsed: dict[str, Terms]) -> None:
    """Every used column is numeric, except text or categorical columns used only as ``C(col)``."""
    for name in columns:
        col = data[name]
        what = f"response {quote(name)}" if name == response else f"column {quote(name)}"
        if pd.api.types.is_complex_dtype(col):
            raise MelsmInputError(f"{what} has complex values; melsm needs real numbers")
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            continue
        which = response if name == response else _used_without_c(name, parsed)
        if which is None:
            continue  # only used as C(name): a categorical covariate
        where = "" if name == response else f" in the {_part_name(which)}"
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
            raise MelsmInputError(f"{what}{where} holds text (e.g. {_as_written(bad.iloc[0])}), not numbers; {hint}")
        if len(bad):  # numbers with some stray values: a data error
            raise MelsmInputError(
                f"{what}{where} has non-numeric value {_as_written(bad.iloc[0])} in row {_as_written(bad.index[0])}"
                + (f" ({len(bad)} of {len(present)} values are not numbers)" if len(bad) > 1 else "")
            )
        raise MelsmInputError(
            f"{what}{where} holds numbers stored as {'text' if isinstance(present.iloc[0], str) else 'objects'}"
            f" (e.g. {_as_written(present.iloc[0])}); convert it with pd.to_numeric"
            + ("" if name == response else f", or write C({name}) for a categorical covariate")
        )
    for name in columns:
        values = data[name]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            infinite = np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
            if infinite.any():
                row = data.index[int(np.argmax(infinite))]
                raise MelsmInputError(f"column {quote(name)} has an infinite value in row {_as_written(row)}")


def _matrix(formula: str, data: pd.DataFrame, which: str) -> tuple[np.ndarray, list[str]]:
    try:
        mm = model_matrix(formula, data)
    except Exception as err:  # formulaic raises many types; any of them is a problem of the formula or data
        raise MelsmInputError(f"cannot build {which} terms {quote(formula)}: {quote(_first_line(err), 200)}") from None
    return np.asarray(mm, dtype=float), [str(c) for c in mm.columns]


def _check_finite(matrix: np.ndarray, names: list[str], which: str) -> None:
    bad = ~np.isfinite(matrix)
    if bad.any():
        k = int(np.argmax(bad.any(axis=0)))
        raise MelsmInputError(f"term {quote(names[k])} in the {which} formula has infinite or undefined values")


def _check_rank(matrix: np.ndarray, names: list[str], which: str) -> None:
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


def build_design(spec: ModelSpec, data: pd.DataFrame) -> Design:
    """Validate ``data`` against ``spec`` and build the model arrays."""
    if not isinstance(data, pd.DataFrame):
        raise MelsmInputError("data must be a pandas DataFrame")
    if data.shape[0] == 0:
        raise MelsmInputError("the data set is empty (no rows)")
    formula_parts = {
        "mean": spec.mean_fixed,
        "within": spec.within_fixed,
    }
    if spec.mean_random:
        formula_parts["mean random"] = spec.mean_random
    if spec.within_random:
        formula_parts["within random"] = spec.within_random
    for effect, text in spec.between or ():
        formula_parts["between" if effect == LOCATION_INTERCEPT else f"between {effect}"] = text
    parsed = {which: parse_terms(text, _part_name(which)) for which, text in formula_parts.items()}
    used = {which: set(terms.variables) for which, terms in parsed.items()}
    used["mean"] = used["mean"] | {spec.response}
    _check_columns(data, spec, used, parsed)
    columns = sorted(set().union(*used.values()))
    _check_numeric(data, columns, spec.response, parsed)

    needed = columns + ([spec.group] if spec.group else [])
    frame = data.loc[:, list(dict.fromkeys(needed))]
    missing = frame.isna()
    n_missing = {str(name): int(count) for name, count in missing.sum().items() if count}
    complete = ~missing.any(axis=1).to_numpy()
    n_dropped = int((~complete).sum())
    frame = frame.loc[complete]
    if frame.shape[0] == 0:
        raise MelsmInputError(
            f"no complete rows: all {n_dropped} rows have a missing value in a column the model uses "
            f"(missing values: {', '.join(f'{k}: {v}' for k, v in n_missing.items())})"
        )

    _check_width(frame, parsed)
    frame = _numeric_as_float(frame, parsed, spec.group)
    if spec.group is not None:
        codes, labels = pd.factorize(frame[spec.group], sort=True)
        labels = np.asarray(labels)
        if len(labels) < 2:
            after = f" after dropping {n_dropped} rows with missing values" if n_dropped else ""
            raise MelsmInputError(
                f"grouping column {quote(spec.group)} has only one group ({_as_written(labels[0])}){after}; "
                "need at least two"
            )
    else:
        codes, labels = np.zeros(frame.shape[0], dtype=int), np.array([0])
    order = np.argsort(codes, kind="stable")
    frame = frame.iloc[order]
    codes = codes[order]

    y = pd.to_numeric(frame[spec.response]).to_numpy(dtype=float)
    if not np.all(np.isfinite(y)):
        raise MelsmInputError(f"response {quote(spec.response)} has infinite values")
    if np.ptp(y) == 0:
        raise MelsmInputError(f"response {quote(spec.response)} has no variation")

    X, x_names = _matrix(spec.mean_fixed, frame, "mean")
    W, w_names = _matrix(spec.within_fixed, frame, "within")
    Zu, zu_names = (_matrix(spec.mean_random, frame, "mean random")
                    if spec.mean_random else (np.zeros((len(y), 0)), []))
    Zv, zv_names = (_matrix(spec.within_random, frame, "within random")
                    if spec.within_random else (np.zeros((len(y), 0)), []))
    for matrix, names, which in (
        (X, x_names, "mean"), (W, w_names, "within"),
        (Zu, zu_names, "mean random part of the"), (Zv, zv_names, "within random part of the"),
    ):
        _check_finite(matrix, names, which)
        _check_rank(matrix, names, which)
    if X.shape[1] == 0:
        raise MelsmInputError("the mean formula has no terms (not even an intercept)")
    if W.shape[1] == 0:
        raise MelsmInputError("the within formula has no terms; the level-1 variance needs "
                              "at least an intercept")

    n_groups = len(labels)
    G, g_names, g_functions = _between_design(spec, frame, codes, labels, n_groups, zu_names, zv_names)

    _check_identified(len(y), n_groups, spec.group, len(zu_names), len(zv_names))
    used_rows = np.flatnonzero(complete)[order]
    return Design(
        y=y, X=X, W=W, Zu=Zu, Zv=Zv, G=G,
        group=codes.astype(np.int32), group_labels=labels,
        x_names=x_names, w_names=w_names, zu_names=zu_names, zv_names=zv_names, g_names=g_names,
        g_functions=g_functions,
        row_order=used_rows, row_index=data.index[used_rows], n_dropped=n_dropped,
        response=spec.response, group_name=spec.group, y_scale=float(np.std(y)),
        n_missing=n_missing,
    )


def _check_identified(n_obs: int, n_groups: int, group: str | None, q_u: int, q_v: int) -> None:
    """Refuse random effects the data cannot separate from the level-1 variance: as lme4
    does, when there are no more rows than random effects of a kind (N ≤ J·q). Groups of
    one row, say, give each group's location effect, scale effect and residual together."""
    for q, kind in ((q_u, "random location"), (q_v, "random scale")):
        if q and n_obs <= n_groups * q:
            raise MelsmInputError(
                f"{n_obs:,} rows in {n_groups:,} groups of {quote(group)} cannot identify {q} {kind} "
                f"effect{'s' if q > 1 else ''} per group and the level-1 variance (there must be more rows than "
                f"{n_groups:,} x {q}); use fewer random effects or a grouping with larger groups")


def _correlation_functions(functions: dict, zu_names, zv_names) -> list[tuple[str, str]]:
    """With any correlation function: one for every pair of random effects, in the order
    of the canonical partial correlations (internal order: scale effects, then location
    effects); the pairs not given one are constant ("~ 1")."""
    given = {k: v for k, v in functions.items() if k.startswith("corr:")}
    if not given:
        return []
    effects = [f"within:{n}" for n in zv_names] + [f"mean:{n}" for n in zu_names]
    pairs = ["corr:" + ",".join(sorted((effects[i], effects[j]))) for i in range(len(effects)) for j in range(i)]
    unknown = [k for k in given if k not in pairs]
    if unknown:
        raise MelsmInputError(f"a correlation function ({unknown[0]}) needs a pair of the model's random effects; "
                              f"the pairs are {', '.join(p.removeprefix('corr:') for p in pairs) or 'none'}")
    return [(pair, given.get(pair, "~ 1")) for pair in pairs]


def _between_design(spec, frame, codes, labels, n_groups, zu_names, zv_names):
    """G (J, p_g) of every level-2 function side by side, the coefficient names, and
    (effect, first column, end column) of each function. The random location
    intercept's coefficients are named by covariate (``endog``), the others
    ``<part>:<effect term>:<covariate>`` (``within:Intercept:endog``)."""
    blocks, names, functions, start = [], [], [], 0
    # location effects' functions first: the fit without scale effects uses a prefix of κ
    given = dict(spec.between or ())
    variance_functions = sorted((item for item in given.items() if not item[0].startswith("corr:")),
                                key=lambda item: item[0].startswith("within:"))
    for effect, text in variance_functions + _correlation_functions(given, zu_names, zv_names):
        part, term = effect.split(":", 1)
        random_names = zu_names if part == "mean" else zv_names
        if part != "corr" and term not in random_names:  # pairs are checked by _correlation_functions
            raise MelsmInputError(
                f"a between formula for {effect} needs {term} among the random effects of the {part} formula"
                f" (random: {', '.join(random_names) or 'none'})")
        label = "between" if effect == LOCATION_INTERCEPT else f"between ({effect})"
        G_rows, covariates = _matrix(text, frame, label)
        _check_finite(G_rows, covariates, label)
        first = np.searchsorted(codes, np.arange(n_groups))
        G = G_rows[first]
        varies = np.abs(G_rows - G[codes]).max(axis=0) > 1e-12 * (1 + np.abs(G_rows).max(axis=0))
        if np.any(varies):
            k = int(np.argmax(varies))
            bad = int(codes[np.argmax(np.abs(G_rows - G[codes])[:, k])])
            values = G_rows[codes == bad, k]
            where = "" if effect == LOCATION_INTERCEPT else f" (function of {effect})"
            raise MelsmInputError(
                f"between covariate {quote(covariates[k])}{where} varies within group {_as_written(labels[bad])} of "
                f"{quote(spec.group)} (from {values.min():g} to {values.max():g}); "
                "level-2 covariates must be constant within each group"
            )
        _check_rank(G, covariates, label)
        blocks.append(G)
        names += covariates if effect == LOCATION_INTERCEPT else [f"{effect}:{c}" for c in covariates]
        functions.append((effect, start, start + len(covariates)))
        start += len(covariates)
    G = np.concatenate(blocks, axis=1) if blocks else np.zeros((n_groups, 0))
    return G, names, functions


def new_data_arrays(design: Design, spec: ModelSpec, data: pd.DataFrame) -> dict:
    """Fixed and random design matrices for new data (for predictions), unsorted."""
    out = {}
    parts = [("X", spec.mean_fixed, design.x_names), ("W", spec.within_fixed, design.w_names),
             ("Zu", spec.mean_random, design.zu_names), ("Zv", spec.within_random, design.zv_names)]
    for key, formula, names in parts:
        if not formula:
            out[key] = np.zeros((len(data), 0))
            continue
        for name in _variables(formula, key):
            if name not in data.columns:
                raise MelsmInputError(f"new data lack column {quote(name)}")
        matrix, got = _matrix(formula, data, key)
        if got != names:
            raise MelsmInputError(
                f"new data give terms {got} for {quote(formula)} but the fit has {names}; "
                "categorical columns need the same levels"
            )
        out[key] = matrix
    return out
