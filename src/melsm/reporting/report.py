"""One self-contained HTML report for a list of fits (figures embedded as PNG).

Fits are grouped into sections by data set (response and rows) and method (ML, MCMC),
in the order given. Each section has the comparison table (``melsm.compare``), the
findings (``melsm.reporting.findings``) and the figures (``melsm.reporting.plots``):

- observed group means against within-group variances (once per data set);
- population averages across the fits, with % changes;
- caterpillar plots of group means, level-1 variances and ICCs of one fit with a random
  scale intercept (``groups_of``; by default the first);
- predicted group lines against each covariate with a random slope, for one fit with
  random slopes (``lines_of``; by default the last);
- each fit's summary, folded.

Which fits carry a study's story is the caller's choice (``melsm.demo`` names the models
of its paper). ML and MCMC fits go through the same code (the results contract,
``melsm.results.base``); see docs/architecture.md, 'Results'.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path

from melsm.errors import MelsmInputError
from melsm.model.evaluation import describe
from melsm.reporting.compare import compare
from melsm.reporting.findings import findings, group_fit, lines_fit
from melsm.results.groups import has_group_quantities, random_slopes

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 2px solid #1f3a93; }
h3 { margin-top: 1.5em; color: #1f3a93; } .meta { color: #666; font-size: 0.9em; }
div.melsm-comparison { margin: 1em 0; }
table.melsm-compare { border-collapse: collapse; font-size: 0.88em; margin: 0 0 1.2em 0;
                      border-top: 1.5px solid #333; border-bottom: 1.5px solid #333; }
table.melsm-compare caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
table.melsm-compare th, table.melsm-compare td { padding: 2px 8px; }
table.melsm-compare td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.melsm-compare td:first-child { text-align: left; white-space: normal; min-width: 8em; max-width: 16em;
                                     padding-left: 2.3em; text-indent: -0.8em; }
table.melsm-compare thead th { border-bottom: 1px solid #999; white-space: nowrap; }
table.melsm-compare tr.block th { text-align: left; background: #eef1f8; font-weight: 600; }
table.melsm-lrtests td:first-child { padding-left: 8px; text-indent: 0; }
table.melsm-lrtests td:nth-child(4), table.melsm-lrtests th:nth-child(-n+4) { text-align: left; }
div.melsm-notes { font-size: 0.85em; color: #444; max-width: 60em; } div.melsm-notes p { margin: 0.25em 0; }
@media print { body { max-width: none; margin: 0; } figure, tr, div.melsm-notes { break-inside: avoid; }
               table.melsm-compare { font-size: 8.5pt; } tr.block, h2, h3 { break-after: avoid; } }
div.scroll { overflow-x: auto; } figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; } ul.findings li { margin: 0.3em 0; }
details pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def figure_png(fig, dpi: int = 110) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _figure_html(fig, caption: str) -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _sections(fits, names):
    """{(response, rows, group, method): [(name, fit)]} in order of first appearance."""
    sections: dict[tuple, list] = {}
    for name, fit in zip(names, fits, strict=True):
        design = fit.model.design
        key = (design.response, design.n_obs, design.group_name, fit.method)
        sections.setdefault(key, []).append((name, fit))
    return sections


def _figures(fits, names, with_observed: bool, groups_of: str | None = None,
             lines_of: str | None = None) -> list[tuple]:
    """(figure, caption) pairs chosen for a section (see the module docstring)."""
    from melsm.reporting import plots

    out = []
    if with_observed:
        out.append((plots.observed_figure(fits[0]), "Observed group means against observed within-group variances."))
    supported = [(n, f) for n, f in zip(names, fits, strict=True) if has_group_quantities(f.model.layout)]
    if len(supported) >= 2:
        out.append((plots.population_figure([f for _, f in supported], [n for n, _ in supported]),
                    f"Population averages of each model ({supported[0][1].wording.population_interval}) "
                    "and their % change from the model before, at "
                    f"{describe(supported[-1][1].model.design, per_group=False)}."))
    key = group_fit(fits, names, groups_of)
    if key is not None:
        name, fit = names[key], fits[key]
        for quantity, what in (("mean", "means"), ("variance", "level-1 variances"), ("icc", "ICCs")):
            out.append((plots.caterpillar(fit, quantity, name),
                        f"{name}: group {what} ranked, with {fit.wording.group_intervals}, at "
                        f"{describe(fit.model.design)}; dark red diamonds: the interval excludes the "
                        "average for groups like it."))
    key = lines_fit(fits, names, lines_of)
    if key is not None:
        name, fit = names[key], fits[key]
        for function, term in random_slopes(fit.model.layout):
            out.append((plots.group_lines_figure(fit, term, function, name),
                        f"{name}: predicted group lines of the {function} function against {term}; "
                        "dashed dark red: against the average trend."))
    return out


def report(fits, names: list[str] | None = None, path: str | Path | None = None,
           title: str = "melsm report", intro: str | None = None, groups_of: str | None = None,
           lines_of: str | None = None) -> str:
    """Write (if ``path``) and return one self-contained HTML report of ``fits``.

    ``names`` label the fits (default "model 1", ...; they must differ within a section,
    so "Model 1" may name both an ML and an MCMC fit); ``intro`` is a paragraph shown
    under the title (plain text). ``groups_of`` and ``lines_of`` name the fits whose group
    quantities and group lines each section shows (``melsm.reporting.findings``); a
    section without such a fit uses the defaults.
    """
    fits = list(fits)
    if not fits:
        raise MelsmInputError("report needs at least one fit")
    names = list(names) if names is not None else [f"model {k + 1}" for k in range(len(fits))]
    if len(names) != len(fits):
        raise MelsmInputError(f"{len(names)} names for {len(fits)} fits")
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p class='meta'>Written by melsm on {datetime.now():%Y-%m-%d %H:%M}.</p>"]
    if intro:
        parts.append(f"<p>{esc(intro)}</p>")
    seen_data = set()
    focus = {"groups_of": groups_of, "lines_of": lines_of}
    for (response, n_obs, group, _), members in _sections(fits, names).items():
        section_names, section_fits = [n for n, _ in members], [f for _, f in members]
        design = section_fits[0].model.design
        label = section_fits[0].wording.title
        parts.append(f"<h2>{esc(response)} by {esc(group or '-')}: {label}</h2>")
        parts.append(f"<p class='meta'>{design.n_obs} observations in {design.n_groups} groups "
                     f"({esc(group or '-')}). Models: {esc(', '.join(section_names))}.</p>")
        parts.append("<h3>Findings</h3><ul class='findings'>"
                     + "".join(f"<li>{esc(s)}</li>" for s in findings(section_fits, section_names, **focus)) + "</ul>")
        table = compare(*section_fits, names=section_names).to_html(digits=3)  # names must differ per section
        parts.append(f"<h3>Estimates</h3><div class='scroll'>{table}</div>")
        parts.append("<h3>Figures</h3>")
        data_key = (response, n_obs, group)
        for fig, caption in _figures(section_fits, section_names, data_key not in seen_data, **focus):
            parts.append(_figure_html(fig, caption))
        seen_data.add(data_key)
        parts.append("<h3>Fits</h3>")
        for name, fit in members:
            formulas = "; ".join(f"{k}: {v}" for k, v in fit.model.spec.formulas.items() if v)
            parts.append(f"<details><summary>{esc(name)} — {esc(formulas)}</summary>"
                         f"<pre>{esc(fit.summary())}</pre></details>")
    parts.append("</body></html>\n")
    text = "\n".join(parts)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
