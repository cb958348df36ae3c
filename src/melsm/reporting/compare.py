"""Fits side by side: the comparison table of a paper, fit criteria and LR tests.

``compare(fit1, fit2, ...)`` returns a ``Comparison``:

- ``table``: one row per parameter, grouped as Mean function / Level-2 variance function /
  Level-1 variance function / Cross-function (correlations between location and scale
  effects), then Model fit; an estimate and SE (ML) or posterior mean and SD (MCMC)
  column per fit. Random-effect variances are shown as variances, σ² (SE by the delta
  method, 2σ·SE(σ); MCMC: mean and SD of the σ² draws) unless ``scale="sd"``.
- ``criteria``: the fits ranked by AIC (ML) or DIC (MCMC), computed on first use.
- ``lrtests``: LR tests of consecutive ML fits one of which is nested in the other
  (``melsm.results.nesting``: through level-2 functions and associations too; either
  may be the larger); consecutive fits that are not nested get no row.
- ``to_markdown()``, ``to_html()``, ``to_latex()`` and ``str()`` render the table.

Fits are read only through the results contract (``melsm.results.base``: ``table``,
``fit_statistics``, ``information_criteria``, ``has_likelihood``, ``wording``), so ML and
MCMC fits go through the same code. See docs/architecture.md, 'Results'.
"""

from __future__ import annotations

import html
from functools import cached_property

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.results.lrtest import lrtest
from melsm.results.nesting import nested

BLOCK_TITLES = {"mean": "Mean function", "between": "Level-2 variance functions (log variances of random "
                "effects)", "within": "Level-1 variance function (log variance)",
                "cross": "Cross-function", "fit": "Model fit"}
BLOCK_ORDER = tuple(BLOCK_TITLES)
KIND_ORDER = {"coef": 0, "sd": 1, "corr": 2, "assoc": 3, "criterion": 4}


def _row_key(pid) -> tuple[str, str, str]:
    """(block, kind, label) of a reported parameter (``melsm.model.names.ParamName``)."""
    if pid.kind == "sd":
        return pid.key.part, "sd", pid.key.term
    if pid.kind == "corr":
        a, b = pid.key
        if a.part == b.part:
            return a.part, "corr", f"Corr({a.term}, {b.term})"
        word = {"mean": "mean", "within": "variance"}
        return "cross", "corr", f"Corr({word[a.part]} {a.term}, {word[b.part]} {b.term})"
    if pid.kind == "assoc":
        return "cross", "assoc", "Quadratic association τ_q"
    return pid.kind, "coef", str(pid.key)


def _values(fit, scale: str) -> dict:
    """``ParamName`` → (estimate, SE or posterior SD), SDs turned into variances if asked."""
    table = fit.table(scale)
    return {pid: (float(table.at[name, "estimate"]), float(table.at[name, "std_error"]))
            for pid, name in zip(fit.ids, fit.names, strict=True)}


def _label(kind: str, label: str, scale: str) -> str:
    if kind == "sd":
        return f"Var({label})" if scale == "variance" else f"SD({label})"
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

    def _criteria_rows(self, fit, name) -> dict[str, tuple[float, float]]:
        rows = {label: (value, np.nan) for label, value in fit.fit_statistics().items()}
        k = self.names.index(name)
        previous = {self.names[k - 1], name} if k else set()
        # the test of this fit and the one before it, whichever is the larger (none without a likelihood)
        tests = self.lrtests[[{a, b} == previous for a, b in zip(self.lrtests.restricted, self.lrtests.full,
                                                                 strict=True)]]
        if len(tests):
            test = tests.iloc[0]
            rows["LR test vs previous (statistic, p)"] = (test.statistic, test.p)
        return rows

    def _table(self) -> pd.DataFrame:
        order: dict[tuple[str, str, str], int] = {}
        cells: dict[tuple[str, str], dict[tuple[str, str, str], tuple[float, float]]] = {}
        for model, fit in zip(self.names, self.fits, strict=True):
            values = {}
            for pid, pair in _values(fit, self.scale).items():
                values[_row_key(pid)] = pair
            for label, pair in self._criteria_rows(fit, model).items():
                values[("fit", "criterion", label)] = pair
            for key in values:
                order.setdefault(key, len(order))
            cells[model] = values
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
    def _text_rows(self, digits: int) -> list[tuple[str, str, list[str]]]:
        """(block, label, cells) with numbers formatted; block rows have label ''."""
        rows, current = [], None
        for (block, label), values in self.table.iterrows():
            if block != current:
                rows.append((block, "", []))
                current = block
            cells = []
            for value in values.to_numpy():
                if not np.isfinite(value):
                    cells.append("")
                elif label == "Parameters":
                    cells.append(f"{value:.0f}")
                elif label.startswith("LR test") and len(cells) % 2 == 1:
                    cells.append("p < 0.0001" if value < 1e-4 else f"p = {value:.4f}")
                elif block == BLOCK_TITLES["fit"]:
                    cells.append(f"{value:.{max(1, digits - 1)}f}")
                else:
                    cells.append(f"{value:.{digits}f}")
            rows.append((block, label, cells))
        return rows

    def _footnote(self) -> str:
        wording = self.fits[0].wording
        scale = "variances" if self.scale == "variance" else "standard deviations"
        notes = [f"Est./{self.second}: {wording.estimate_and_error}. Random effects as {scale}."]
        if wording.criteria_note:
            notes.append(wording.criteria_note)
        for test in self.lrtests.itertuples():
            notes.append(f"LR test {test.full} vs {test.restricted}: LR = {test.statistic:.2f} on {test.distribution}"
                         + (f" ({test.note})" if test.note else "") + ".")
        unconverged = [n for n, f in zip(self.names, self.fits, strict=True) if not f.converged]
        if unconverged:
            notes.append(f"Not converged: {', '.join(unconverged)}.")
        return " ".join(notes)

    def to_markdown(self, digits: int = 2) -> str:
        """GitHub-flavoured Markdown table (block titles in bold), with a footnote."""
        width = 2 * len(self.names)
        lines = ["| | " + " | ".join(f"{n} | " for n in self.names) + "|",
                 "|:--|" + "--:|" * width,
                 "| | " + " | ".join(f"Est. | {self.second}" for _ in self.names) + " |"]
        for block, label, cells in self._text_rows(digits):
            if not label:
                lines.append(f"| **{block}** |" + " |" * width)
            else:
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + f"\n\n{self._footnote()}\n"

    def to_html(self, digits: int = 2) -> str:
        """An HTML ``<table class="melsm-compare">`` with the footnote as its caption."""
        esc = html.escape
        head = "".join(f'<th colspan="2">{esc(n)}</th>' for n in self.names)
        sub = "".join(f"<th>Est.</th><th>{self.second}</th>" for _ in self.names)
        body = []
        for block, label, cells in self._text_rows(digits):
            if not label:
                body.append(f'<tr class="block"><th colspan="{1 + 2 * len(self.names)}">{esc(block)}</th></tr>')
            else:
                body.append(f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        return (f'<table class="melsm-compare">\n<caption>{esc(self._footnote())}</caption>\n'
                f"<thead><tr><th></th>{head}</tr><tr><th></th>{sub}</tr></thead>\n<tbody>\n"
                + "\n".join(body) + "\n</tbody>\n</table>\n")

    def to_latex(self, digits: int = 2) -> str:
        """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
        def esc(text: str) -> str:
            for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                               ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("<", r"$<$")):
                text = text.replace(char, repl)
            return text
        n = len(self.names)
        rules = "".join(rf"\cmidrule(lr){{{2 + 2 * k}-{3 + 2 * k}}}" for k in range(n))
        lines = [rf"\begin{{tabular}}{{l{'rr' * n}}}", r"\toprule",
                 " & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{esc(m)}}}" for m in self.names) + r" \\",
                 rules, " & " + " & ".join(f"Est. & {self.second}" for _ in self.names) + r" \\", r"\midrule"]
        for block, label, cells in self._text_rows(digits):
            if not label:
                lines.append(rf"\multicolumn{{{1 + 2 * n}}}{{l}}{{\textit{{{esc(block)}}}}} \\")
            else:
                lines.append(rf"\quad {esc(label)} & " + " & ".join(esc(c) for c in cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        rows = self._text_rows(3)
        width = max([len(label) for _, label, _ in rows] + [10]) + 4
        cell = max([len(c) for _, _, cells in rows for c in cells] + [len(n) // 2 + 1 for n in self.names] + [8]) + 2
        lines = [" " * width + "".join(f"{n:^{2 * cell}}" for n in self.names),
                 " " * width + "".join(f"{'Est.':>{cell}}{self.second:>{cell}}" for _ in self.names)]
        for block, label, cells in rows:
            lines.append(block if not label else f"  {label:<{width - 2}}" + "".join(f"{c:>{cell}}" for c in cells))
        return "\n".join(lines) + "\n" + self._footnote()

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.fits)} {self.method.upper()} fits: {', '.join(self.names)}>"


def compare(*fits, names: list[str] | None = None, by: str | None = None, scale: str = "variance") -> Comparison:
    """Fits of the same data side by side (all ML or all MCMC): ``Comparison``.

    ``names`` label the fits (default "model 1", ...); ``by`` ranks ``criteria`` by
    another criterion (ML: AIC, BIC; MCMC: DIC, marginal_DIC, WAIC, LOO); ``scale``
    shows random effects as "variance" (default) or "sd".
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
    if scale not in ("variance", "sd"):
        raise MelsmInputError(f"scale must be 'variance' or 'sd', not {scale!r}")
    choices = fits[0].criteria_names
    if by is not None and by not in choices:
        raise MelsmInputError(f"cannot rank by '{by}'; criteria (smaller is better): {', '.join(choices)}")
    return Comparison(fits, names, by, scale)
