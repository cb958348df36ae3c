"""A fit as compact HTML, for notebooks: ``fit._repr_html_()`` (``melsm.results.base``).

What it builds: a heading (method, response, groups), the formulas, the fit statistics
and whether the fit converged, then the parameter table of ``fit.table()`` as an HTML
table in blocks (mean function, level-2 variance functions, level-1 variance function,
random effects as SDs and correlations — the scale of ``summary()`` — and the
association), with the estimate and SE (or posterior SD) rounded as in every melsm table
(``melsm.results.formatting``), the 95% interval and the method's own columns (ML: z, p;
MCMC: R-hat, ESS, MCSE). Estimates on the boundary carry a note. It reads only the
results contract, so ML and MCMC fits share it; ``fit.summary()`` is the full text. See
docs/architecture.md, 'Tables'.
"""

from __future__ import annotations

import html

from melsm.results import formatting

BLOCKS = {"mean": "Mean function", "between": "Level-2 variance functions (log variances of random effects)",
          "within": "Level-1 variance function (log variance)", "sd": "Random effects (SDs and correlations)",
          "corr": "Random effects (SDs and correlations)", "assoc": "Association"}
BLOCK_ORDER = ("mean", "between", "within", "sd", "assoc")
#: The method's own columns of ``fit.table()``: heading and how a value is printed.
OWN_COLUMNS = {"z": ("z", formatting.statistic), "p": ("p", formatting.p_value),
               "r_hat": ("R-hat", lambda x: f"{x:.3f}" if x == x else ""),
               "ess_bulk": ("ESS bulk", formatting.count), "ess_tail": ("ESS tail", formatting.count),
               "mcse_mean": ("MCSE", lambda x: formatting.significant(x, 2))}
STYLE = "border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:0.9em"
#: Inline, so that the table reads the same without a notebook's style sheet.
CELL = "padding:1px 8px;text-align:right;white-space:nowrap"


def _label(pid) -> str:
    if pid.kind == "sd":
        return f"SD({pid.key})"
    if pid.kind == "corr":
        return f"Corr({pid.key.first}, {pid.key.second})"
    return str(pid.key)


def _header(fit) -> str:
    esc = html.escape
    design = fit.model.design
    formulas = "<br>".join(f"<code>{esc(k)}: {esc(v)}</code>" for k, v in fit.model.spec.formulas.items() if v)
    statistics = " · ".join(f"{esc(k)} {formatting.count(v) if k == 'Parameters' else formatting.statistic(v)}"
                            for k, v in fit.fit_statistics().items())
    converged = ("yes" if fit.converged else
                 f"<strong style='color:#a00'>NO</strong> — {esc(fit.convergence_problem)}")
    return (f"<p><strong>Mixed-effects location scale model</strong> — {esc(fit.wording.title)}<br>"
            f"Response <code>{esc(design.response)}</code> · {design.n_obs} observations in {design.n_groups} "
            f"groups (<code>{esc(design.group_name or '-')}</code>)<br>{formulas}<br>"
            f"{statistics} · converged: {converged}</p>")


def _rows(fit, own: list[str]) -> list[str]:
    table, boundary = fit.table(), {str(pid) for pid in fit.boundary_params}
    rows, span = [], 4 + len(own)
    for block in BLOCK_ORDER:
        members = [pid for pid in fit.ids if BLOCKS.get(pid.kind) == BLOCKS[block]]
        if not members:
            continue
        rows.append(f"<tr><th colspan='{span}' style='text-align:left;background:#eef1f8'>"
                    f"{html.escape(BLOCKS[block])}</th></tr>")
        for pid in members:
            row = table.loc[str(pid)]
            est, err = formatting.estimate_and_error(row.estimate, row.std_error)
            mark = "<sup>a</sup>" if str(pid) in boundary else ""
            cells = [est + mark, err, formatting.interval(row.lower, row.upper, row.std_error)]
            cells += [OWN_COLUMNS[c][1](float(row[c])) for c in own]
            rows.append(f"<tr><td style='{CELL};text-align:left'>{html.escape(_label(pid))}</td>"
                        + "".join(f"<td style='{CELL}'>{c}</td>" for c in cells) + "</tr>")
    return rows


def fit_html(fit) -> str:
    """The compact HTML summary of ``fit`` (module docstring)."""
    own = [c for c in fit.table().columns if c in OWN_COLUMNS]
    heads = ["", "Est.", fit.wording.error, fit.wording.interval] + [OWN_COLUMNS[c][0] for c in own]
    head = "".join(f"<th style='{CELL};border-bottom:1px solid #999'>{html.escape(h)}</th>" for h in heads)
    notes = []
    if fit.boundary_params:
        notes.append("<sup>a</sup> On the boundary of the parameter space: no SE; test it with an LR test.")
    if fit.problems:
        notes.append("Problems: " + html.escape("; ".join(fit.problems)))
    notes.append("SEs to 3 significant digits, estimates to the same decimal place; "
                 "<code>fit.summary()</code> has the full text, <code>fit.table()</code> the numbers.")
    return (f"<div class='melsm-fit'>{_header(fit)}<table style='{STYLE}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(_rows(fit, own))}</tbody></table>"
            + "".join(f"<p style='font-size:0.9em;color:#555'>{n}</p>" for n in notes) + "</div>")
