"""Fits side by side: the comparison table of a paper, fit criteria and LR tests.

``compare(fit1, fit2, ...)`` returns a ``Comparison``:

- ``table``: one row per parameter, grouped as Mean function / Level-2 variance functions /
  Level-1 variance function / Cross-function (correlations between location and scale
  effects), then Model fit; an estimate and SE (ML) or posterior mean and SD (MCMC)
  column per fit. Random effects are shown as SDs and correlations (as ``fit.summary()``)
  or, with ``scale="variance"``, as variances σ² (SE 2σ·SE(σ); MCMC: mean and SD of the
  σ² draws) and covariances ρσ_aσ_b (``fit.derived``: delta method, or per draw) —
  correlations of an effect whose variance is a level-2 function stay correlations.
- ``lrtests``: LR tests of consecutive ML fits one of which is nested in the other
  (``melsm.results.nesting``: through level-2 functions and associations too; either
  may be the larger), each with its statistic, df, reference distribution and p-value;
  consecutive fits that are not nested get no row.
- ``criteria``: the fits ranked by AIC (ML) or DIC (MCMC), computed on first use.
- ``to_html()``, ``to_markdown()``, ``to_latex()`` and ``str()`` render the same cells
  (``melsm.reporting.table_layout``: digits by SE, panels of a few models each, footnotes
  for boundary estimates and fits that did not converge; ``melsm.reporting.table_render``).

Fits are read only through the results contract (``melsm.results.base``: ``table``,
``derived``, ``fit_statistics``, ``information_criteria``, ``has_likelihood``,
``boundary_params``, ``wording``), so ML and MCMC fits go through the same code. See
docs/architecture.md, 'Results' and 'Tables'.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.reporting import table_render
from melsm.reporting.table_layout import Layout, build_layout
from melsm.results.lrtest import lrtest
from melsm.results.nesting import nested

BLOCK_TITLES = {"mean": "Mean function", "between": "Level-2 variance functions (log variance)",
                "within": "Level-1 variance function (log variance)",
                "cross": "Cross-function", "fit": "Model fit"}
BLOCK_ORDER = tuple(BLOCK_TITLES)
KIND_ORDER = {"coef": 0, "sd": 1, "corr": 2, "cov": 2, "assoc": 3, "criterion": 4}
SCALES = ("sd", "variance")


def _row_key(pid) -> tuple[str, str, str]:
    """(block, kind, label) of a reported parameter (``melsm.model.names.ParamName``)."""
    if pid.kind == "sd":
        return pid.key.part, "sd", pid.key.term
    if pid.kind == "corr":
        a, b = pid.key
        if a.part == b.part:
            return a.part, "corr", f"{a.term}, {b.term}"
        word = {"mean": "mean", "within": "variance"}
        return "cross", "corr", f"{word[a.part]} {a.term}, {word[b.part]} {b.term}"
    if pid.kind == "assoc":
        return "cross", "assoc", "Quadratic association τ_q"
    return pid.kind, "coef", str(pid.key)


def _covariances(fit) -> dict:
    """Correlation ``ParamName`` → (covariance ρσ_aσ_b, its SE) for the pairs whose effects
    both have an SD parameter (``fit.derived``); no SE where any of the three has none."""
    sds = {pid.key: str(pid) for pid in fit.ids if pid.kind == "sd"}
    pairs = [(pid, str(pid), sds[pid.key.first], sds[pid.key.second]) for pid in fit.ids
             if pid.kind == "corr" and pid.key.first in sds and pid.key.second in sds]
    if not pairs:
        return {}
    out = fit.derived(lambda p: {name: p[name] * p[a] * p[b] for _, name, a, b in pairs})
    errors = fit.table()["std_error"]
    return {pid: (float(out.at[name, "estimate"]),
                  float(out.at[name, "std_error"]) if np.isfinite(errors[[name, a, b]]).all() else np.nan)
            for pid, name, a, b in pairs}


def _values(fit, scale: str) -> tuple[dict, set]:
    """(row key → (estimate, SE or posterior SD), the row keys on the boundary) of a fit,
    SDs and correlations turned into variances and covariances if asked."""
    table = fit.table(scale)
    covariances = _covariances(fit) if scale == "variance" else {}
    values, keys = {}, {}
    for pid, name in zip(fit.ids, fit.names, strict=True):
        block, kind, label = _row_key(pid)
        if pid in covariances:
            key = (block, "cov", label)
            values[key] = covariances[pid]
        else:
            key = (block, kind, label)
            values[key] = (float(table.at[name, "estimate"]), float(table.at[name, "std_error"]))
        keys[pid] = key
    boundary = set()
    for pid in fit.boundary_params:
        sd = type(pid)("sd", pid.key) if pid.kind == "singular" else pid  # a singular effect: its SD row
        if sd in keys:
            boundary.add(keys[sd])
    return values, boundary


def _label(kind: str, label: str, scale: str) -> str:
    if kind == "sd":
        return f"Var({label})" if scale == "variance" else f"SD({label})"
    if kind in ("corr", "cov"):
        return f"{kind.capitalize()}({label})"
    return label


def _lrtest(one, other):
    """The LR test of two consecutive fits when one is nested in the other
    (``melsm.results.nesting``), else None."""
    small, big = sorted((one, other), key=lambda f: f.n_params)
    if small.n_params == big.n_params or not nested(small, big)[0]:
        return None
    return lrtest(small, big)


class Comparison:
    """Fits side by side (see the module docstring)."""

    def __init__(self, fits, names: list[str], by: str | None, scale: str):
        self.fits, self.names, self._by, self.scale = list(fits), list(names), by, scale
        self.method = self.fits[0].method
        self.second = self.fits[0].wording.error
        self.lrtests = self._lrtests()
        #: Per model, the rows (block, label) of ``table`` estimated on the boundary.
        self.boundary: dict[str, set] = {}
        self.table = self._table()

    # ---- contents ----------------------------------------------------------------------
    def _lrtests(self) -> pd.DataFrame:
        rows = []
        if self.fits[0].has_likelihood:
            for k in range(1, len(self.fits)):
                test = _lrtest(self.fits[k - 1], self.fits[k])
                if test is None:
                    continue  # not nested: no test
                pair = (self.names[k - 1], self.names[k])
                restricted, full = pair if self.fits[k - 1].n_params < self.fits[k].n_params else pair[::-1]
                rows.append({"restricted": restricted, "full": full, "statistic": test.statistic,
                             "df": test.df, "distribution": test.distribution, "p": test.p_value,
                             "note": test.note})
        return pd.DataFrame(rows, columns=["restricted", "full", "statistic", "df", "distribution", "p", "note"])

    def _table(self) -> pd.DataFrame:
        order: dict[tuple[str, str, str], int] = {}
        cells: dict[str, dict[tuple[str, str, str], tuple[float, float]]] = {}
        for model, fit in zip(self.names, self.fits, strict=True):
            values, boundary = _values(fit, self.scale)
            for label, value in fit.fit_statistics().items():
                values[("fit", "criterion", label)] = (value, np.nan)
            for key in values:
                order.setdefault(key, len(order))
            cells[model] = values
            self.boundary[model] = {(BLOCK_TITLES[b], _label(k, lab, self.scale)) for b, k, lab in boundary}
        keys = sorted(order, key=lambda k: (BLOCK_ORDER.index(k[0]), KIND_ORDER[k[1]], order[k]))
        labels = [(BLOCK_TITLES[block], _label(kind, label, self.scale)) for block, kind, label in keys]
        index = pd.MultiIndex.from_tuples(labels, names=["block", "parameter"])
        columns = pd.MultiIndex.from_product([self.names, ["Est.", self.second]], names=["model", ""])
        data = np.full((len(keys), 2 * len(self.fits)), np.nan)
        for m, model in enumerate(self.names):
            for r, key in enumerate(keys):
                if key in cells[model]:
                    data[r, 2 * m: 2 * m + 2] = cells[model][key]
        return pd.DataFrame(data, index=index, columns=columns)

    @cached_property
    def criteria(self) -> pd.DataFrame:
        """The fits ranked, best first. ML: log-likelihood, parameters, AIC, BIC (ranked by
        AIC). MCMC: conditional DIC as Stat-JR reports it (D̄, p_D), marginal DIC (u and v
        integrated out), WAIC and PSIS-LOO by group on the deviance scale (ranked by DIC).
        ``delta`` is the difference from the best."""
        rows = [{"model": name, **fit.information_criteria(), "converged": fit.converged}
                for name, fit in zip(self.names, self.fits, strict=True)]
        table = pd.DataFrame(rows).set_index("model")
        by = self._by or self.fits[0].criteria_names[0]
        table = table.sort_values(by)
        table.insert(0, "delta", table[by] - table[by].iloc[0])
        return table

    # ---- rendering ---------------------------------------------------------------------
    def layout(self, digits: int = 3, per_panel: int | None = None) -> Layout:
        """The table's cells as every format prints them (``melsm.reporting.table_layout``):
        SEs to ``digits`` significant digits and estimates to the same decimal place; at
        most ``per_panel`` models side by side (default: as many as fit a printed page)."""
        return build_layout(self, digits, per_panel)

    def to_markdown(self, digits: int = 3, per_panel: int | None = None) -> str:
        """GitHub-flavoured Markdown: one table per panel, the LR tests, the notes."""
        return table_render.markdown(self.layout(digits, per_panel))

    def to_html(self, digits: int = 3, per_panel: int | None = None) -> str:
        """HTML: ``<div class="melsm-comparison">`` holding a ``<table class="melsm-compare">``
        per panel, the LR tests' table and the notes."""
        return table_render.html(self.layout(digits, per_panel))

    def to_latex(self, digits: int = 3, per_panel: int | None = None) -> str:
        """LaTeX: a booktabs ``tabular`` per panel (needs ``\\usepackage{booktabs}``), the LR
        tests' and the notes."""
        return table_render.latex(self.layout(digits, per_panel))

    def __str__(self) -> str:
        return table_render.text(self.layout())

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.fits)} {self.method.upper()} fits: {', '.join(self.names)}>"


def compare(*fits, names: list[str] | None = None, by: str | None = None, scale: str = "sd") -> Comparison:
    """Fits of the same data side by side (all ML or all MCMC): ``Comparison``.

    ``names`` label the fits (default "model 1", ...); ``by`` ranks ``criteria`` by
    another criterion (ML: AIC, BIC; MCMC: DIC, marginal_DIC, WAIC, LOO); ``scale``
    shows random effects as "sd" (SDs and correlations, the default, as ``fit.summary()``)
    or "variance" (variances and covariances).
    """
    if len(fits) == 1 and isinstance(first := fits[0], list | tuple):
        fits = tuple(first)  # compare([fit1, fit2]) as well as compare(fit1, fit2)
    if len(fits) < 1:
        raise MelsmInputError("compare needs at least one fit")
    names = list(names) if names is not None else [f"model {k + 1}" for k in range(len(fits))]
    if len(names) != len(fits):
        raise MelsmInputError(f"{len(names)} names for {len(fits)} fits")
    if len(set(names)) != len(names):
        raise MelsmInputError(f"names must differ: {names}")
    methods = {f.method for f in fits}
    if len(methods) > 1:
        raise MelsmInputError("compare fits of one kind: all maximum likelihood or all MCMC")
    n_obs = {f.model.design.n_obs for f in fits}
    if len(n_obs) > 1:
        raise MelsmInputError(f"the fits use different numbers of observations ({sorted(n_obs)})")
    if scale not in SCALES:
        raise MelsmInputError(f"scale must be 'sd' or 'variance', not {scale!r}")
    choices = fits[0].criteria_names
    if by is not None and by not in choices:
        raise MelsmInputError(f"cannot rank by '{by}'; criteria (smaller is better): {', '.join(choices)}")
    return Comparison(fits, names, by, scale)
