"""Whether one fit's model is a restriction of another's: the nesting check of LR tests
and of ``compare`` (docs/architecture.md, 'Results').

``nested(small, big)`` compares the two models' arrays, not their names, so codings of
the same covariates (``C(g)`` against dummies, reordered terms, ``poly(x, 2)`` against
``x + I(x ** 2)``) are recognised:

- the same response on the same rows (by the data's row labels), grouped the same way;
- every column of the smaller model's X, W, Zu and Zv lies in the column space of the
  larger model's (least-squares residual below ``SPAN_TOL`` of the column's norm);
- level-2 functions: the variance of each random effect of the smaller model, and each
  correlation, is fixed at 0 (association "none", between a location and a scale effect),
  constant (the column of ones) or a function of G's columns; it must lie in what the
  larger model allows for the same effect or pair (0 lies in anything; a constant in a
  function with an intercept; a function in a function whose columns span it);
- the quadratic association's τ_q only in a larger model that has it too.

Random effects of the two models are matched by their columns of Zu and Zv (one
proportional to the other) wherever a level-2 function needs to know which is which.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from melsm.model.names import Effect, Pair, ParamName
from melsm.model.vocabulary import quote

#: A column lies in a span when its least-squares residual is below this, relative to its norm.
SPAN_TOL = 1e-7

#: The design matrices of the rows, the names of their columns, and how messages call them.
ROW_PARTS = (("X", "x_names", "mean function"), ("W", "w_names", "level-1 variance function"),
             ("Zu", "zu_names", "random location part"), ("Zv", "zv_names", "random scale part"))


def outside(columns: np.ndarray, span: np.ndarray) -> int | None:
    """The index of the first column of ``columns`` outside the column space of ``span``
    (least-squares residual above ``SPAN_TOL`` of its norm), or None when all lie in it."""
    columns, span = np.asarray(columns, float), np.asarray(span, float)
    norms = np.linalg.norm(columns, axis=0)
    if span.shape[1]:
        scale = np.linalg.norm(span, axis=0)
        basis = span / np.where(scale > 0, scale, 1.0)  # columns in any units
        coef = np.linalg.lstsq(basis, columns, rcond=None)[0]
        residual = np.linalg.norm(columns - basis @ coef, axis=0)
    else:
        residual = norms
    bad = np.flatnonzero(residual > SPAN_TOL * norms)
    return int(bad[0]) if len(bad) else None


def _row_alignment(small, big) -> tuple[np.ndarray | None, str]:
    """For each row of the smaller fit, its row in the larger fit (matched by the data's
    row labels, or by position where the labels repeat), or None and why not."""
    ds, db = small.model.design, big.model.design
    if ds.n_obs != db.n_obs:
        return None, f"the fits use different rows ({ds.n_obs} and {db.n_obs} observations)"
    if ds.row_index.is_unique and db.row_index.is_unique:
        keys_small, keys_big = ds.row_index, db.row_index
    else:
        keys_small, keys_big = pd.Index(ds.row_order), pd.Index(db.row_order)
    where = keys_big.get_indexer(keys_small)
    if np.any(where < 0):
        return None, f"the fits use the same number of rows ({ds.n_obs}) but not the same rows"
    return where, ""


def _same_response(small, big, where: np.ndarray) -> str:
    """Why the two fits do not share their response ('' when they do)."""
    ds, db = small.model.design, big.model.design
    y_big = db.y[where]
    if not np.allclose(ds.y, y_big, rtol=1e-10, atol=1e-12 * np.max(np.abs(y_big))):
        if ds.response != db.response:
            return f"the fits are of different responses ({quote(ds.response)} and {quote(db.response)})"
        return f"the response {quote(ds.response)} has other values in the two fits"
    return ""


def _same_grouping(small, big, where: np.ndarray) -> str:
    """Why the two fits do not group the rows alike ('' when they do, or when the smaller
    model has no random effects and so needs no grouping)."""
    ds, db = small.model.design, big.model.design
    if small.model.layout.q == 0:
        return ""
    pairs = np.unique(np.stack([ds.group, db.group[where]], axis=1), axis=0).shape[0]
    if not pairs == ds.n_groups == db.n_groups:
        return (f"the fits group the rows differently ({quote(ds.group_name)}: {ds.n_groups} groups, "
                f"{quote(db.group_name)}: {db.n_groups})")
    return ""


def _row_parts(small, big, where: np.ndarray) -> str:
    """Why the smaller model's X, W, Zu or Zv does not lie in the larger's ('' when all do)."""
    ds, db = small.model.design, big.model.design
    for matrix, names, words in ROW_PARTS:
        k = outside(getattr(ds, matrix), getattr(db, matrix)[where])
        if k is not None:
            return f"the smaller model's {words} has {quote(getattr(ds, names)[k])}, which the larger lacks"
    return ""


def match_effects(small, big, where: np.ndarray) -> dict[Effect, Effect | None]:
    """Each random effect of the smaller model → the larger model's effect whose column of
    Zu or Zv is proportional to its own (None when there is none)."""
    ds, db = small.model.design, big.model.design
    out = {}
    for part, matrix, names in (("mean", "Zu", "zu_names"), ("within", "Zv", "zv_names")):
        mine, theirs = getattr(ds, matrix), getattr(db, matrix)[where]
        for k, term in enumerate(getattr(ds, names)):
            hits = [j for j in range(theirs.shape[1]) if outside(mine[:, k:k + 1], theirs[:, j:j + 1]) is None]
            out[Effect(part, term)] = Effect(part, getattr(db, names)[hits[0]]) if hits else None
    return out


def added_effects(small, big) -> list[Effect | None]:
    """The larger model's random effects that the smaller lacks (None for one that cannot
    be named, when the two random designs differ by more than a matching of columns)."""
    where, _ = _row_alignment(small, big)
    big_effects = [effect for effect, _ in big.model.layout.random_effects()]
    n_added = len(big_effects) - small.model.layout.q
    if where is None or n_added <= 0:
        return []
    matched = match_effects(small, big, where)
    unmatched = [e for e in big_effects if e not in set(matched.values())]
    return unmatched if None not in matched.values() and len(unmatched) == n_added else [None] * n_added


class _Level2:
    """What a model allows for each random effect's variance and each pair's correlation:
    ("zero", ·), ("constant", ones) or ("function", the function's columns of G), by row."""

    def __init__(self, fit, where: np.ndarray | None = None):
        design, layout = fit.model.design, fit.model.layout
        rows = design.group if where is None else design.group[where]
        self.G = design.G[rows]
        self.names = {target: [c.covariate for c in layout.g_coefs[a:b]] for target, a, b in layout.g_functions}
        self.blocks = {target: (a, b) for target, a, b in layout.g_functions}
        self.independent = layout.association.independent_blocks
        self.has_corr_functions = any(isinstance(t, Pair) for t in self.blocks)

    def allows(self, target) -> tuple[str, np.ndarray]:
        if isinstance(target, Pair) and self.independent and target.first.part != target.second.part:
            return "zero", self.G[:, :0]
        if target in self.blocks:
            a, b = self.blocks[target]
            return "function", self.G[:, a:b]
        return "constant", np.ones((self.G.shape[0], 1))


def _what(target) -> str:
    if isinstance(target, Pair):
        return f"correlation of {target.first} and {target.second}"
    return f"variance of {target}"


def _contained(small: _Level2, big: _Level2, target, image) -> str:
    """Why what the smaller model allows for ``target`` does not lie in what the larger
    allows for its counterpart ``image`` ('' when it does)."""
    kind, columns = small.allows(target)
    big_kind, span = big.allows(image)
    if kind == "zero":
        return ""
    what = _what(target)
    if big_kind == "zero":
        return f"the smaller model's {what} is free; the larger fixes it at 0 (association 'none')"
    k = outside(columns, span)
    if k is None:
        return ""
    if kind == "constant":
        return f"the smaller model's {what} is constant; the larger model's level-2 function of it has no intercept"
    name = quote(small.names[target][k])
    if big_kind == "constant":
        return f"the smaller model's {what} is a level-2 function of {name}; the larger model's is constant"
    return f"the smaller model's level-2 function of the {what} has {name}, which the larger model's lacks"


def _associations(small, big) -> str:
    """Why the smaller model's association does not restrict the larger's ('' when it does)."""
    ls, lb = small.model.layout, big.model.layout
    if ls.association.n_params and not lb.association.n_params:
        return "the smaller model has the quadratic association (τ_q), which the larger lacks"
    both_parts = ls.q_u and ls.q_v
    if both_parts and not ls.association.independent_blocks and lb.association.independent_blocks:
        return ("the smaller model correlates its location and scale effects; the larger fixes those "
                "correlations at 0 (association 'none')")
    return ""


def _level2(small, big, where: np.ndarray) -> str:
    """Why the smaller model's variances and correlations do not restrict the larger's
    ('' when they do): level-2 functions, compared effect by matched effect."""
    ls, lb = small.model.layout, big.model.layout
    if not (ls.g_functions or lb.g_functions):
        return ""
    matched = match_effects(small, big, where)
    missing = [effect for effect, image in matched.items() if image is None]
    if missing:
        return (f"the smaller model's random effect {missing[0]} is no single random effect of the larger "
                "(needed to compare their level-2 functions)")
    mine, theirs = _Level2(small), _Level2(big, where)
    effects = list(matched)
    targets = effects + [Pair.of(a, b) for i, a in enumerate(effects) for b in effects[i + 1:]]
    for target in targets:
        image = Pair.of(matched[target.first], matched[target.second]) if isinstance(target, Pair) \
            else matched[target]
        reason = _contained(mine, theirs, target, image)
        if reason:
            return reason
    if len(effects) > 2 and mine.has_corr_functions and theirs.has_corr_functions:
        order = sorted(effects, key=ls.row_of)
        if [lb.row_of(matched[e]) for e in order] != sorted(lb.row_of(matched[e]) for e in order):
            return ("the two models' correlation functions are of partial correlations of the random "
                    "effects in different orders")
    return ""


def nested(small, big) -> tuple[bool, str]:
    """Whether the model of fit ``small`` is a restriction of that of fit ``big``, and if
    not, why (one line: the first difference found). See the module docstring."""
    where, reason = _row_alignment(small, big)
    if where is None:
        return False, reason
    for check in (_same_response, _row_parts, _same_grouping):
        reason = check(small, big, where)
        if reason:
            return False, reason
    reason = _associations(small, big) or _level2(small, big, where)
    return (not reason), reason


def boundary_label(effect: Effect | None) -> str:
    """How a note names the SD of an added random effect tested at 0."""
    return f"{ParamName('sd', effect)} = 0" if effect is not None else "the added random effect's SD = 0"
