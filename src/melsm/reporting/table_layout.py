"""The cells of a comparison table, once, for every format (HTML, Markdown, LaTeX, text).

``build_layout(comparison, digits, per_panel)`` turns a ``Comparison``
(``melsm.reporting.compare``) into a ``Layout`` that the renderers
(``melsm.reporting.table_render``) only encode, so the formats cannot disagree:

- **Numbers** by ``melsm.results.formatting``: SEs to ``digits`` significant digits and
  estimates to the same decimal place; fit statistics with two decimals; p-values with three.
- **Panels.** Six models of two columns each do not fit a printed page, so models are
  split into panels of at most ``per_panel`` each, as papers split wide tables; every
  panel repeats the row labels and drops the rows none of its models has. By default
  ``per_panel`` is the most models whose columns fit ``PANEL_CHARS`` characters next to
  the labels (a portrait A4 or Letter page, and the report's column), with the models
  spread evenly over the panels (4 models: 2 + 2, not 3 + 1).
- **LR tests** in a table of their own: test, LR statistic, df, reference distribution, p.
- **Notes**, lettered a, b, ... where a cell or a model name carries the letter: estimates
  on the boundary of the parameter space (``fit.boundary_params``), fits that did not
  converge (``fit.converged``), notes of the LR tests; and one unlettered note that says
  what the columns are and how they are rounded.

See docs/architecture.md, 'Tables'.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from melsm.results import formatting

#: The width of a panel, in characters of the label and the numbers (the report's CSS and
#: the LaTeX renderer's small type fit this on a portrait A4 or Letter page).
PANEL_CHARS = 84
#: Labels wrap (HTML) beyond this many characters, so they count this much at most.
LABEL_CHARS = 26
#: Space between two columns, in characters.
GAP = 2
LR_HEADER = ["Test", "LR", "df", "Reference distribution", "p"]


@dataclass(frozen=True)
class Cell:
    """A cell's text and the letter of its note ("" if none)."""

    text: str
    mark: str = ""

    @property
    def width(self) -> int:
        return len(self.text) + len(self.mark)


@dataclass
class Row:
    """A parameter's row (``cells``: estimate and SE per model of the panel), or a block's
    title (``block=True``, no cells)."""

    label: str
    cells: list[Cell] = field(default_factory=list)
    block: bool = False


@dataclass
class Panel:
    title: str  #: "" when the table has one panel
    models: list[Cell]
    rows: list[Row]


@dataclass
class Layout:
    """What every format prints (module docstring)."""

    estimate: str  #: the first column's heading, "Est."
    error: str  #: the second's: "SE" or "SD"
    panels: list[Panel]
    lr_title: str
    lr_rows: list[list[Cell]]
    notes: list[Cell]  #: the note's letter as ``mark``; the general note first, unlettered
    lr_header: list[str] = field(default_factory=lambda: list(LR_HEADER))


class _Notes:
    """Letters a, b, ... for notes, in the order they are asked for; one letter per note."""

    def __init__(self):
        self.notes: dict[str, str] = {}

    def letter(self, text: str) -> str:
        if text not in self.notes:
            self.notes[text] = "abcdefghijklmnopqrstuvwxyz"[len(self.notes) % 26]
        return self.notes[text]

    def cells(self) -> list[Cell]:
        return [Cell(text, mark) for text, mark in self.notes.items()]


def _boundary_note(comparison) -> str:
    parts = [f"{name}: {', '.join(sorted(label for _, label in rows))}"
             for name, rows in comparison.boundary.items() if rows]
    return ("On the boundary of the parameter space (a variance of 0, a correlation of ±1 or a "
            f"singular covariance matrix) — {'; '.join(parts)}. No SE is given for such an estimate "
            "(nor for correlations it makes undefined); test it with an LR test.")


def _convergence_note(comparison) -> str:
    parts = [f"{name} ({fit.convergence_problem.rstrip('.')})" for name, fit in zip(comparison.names, comparison.fits,
                                                                        strict=True) if not fit.converged]
    return (f"Did not converge: {'; '.join(parts)}. The numbers of a fit that did not converge "
            "are not those of a maximum of the likelihood (ML) or of a converged sampler (MCMC).")


def _model_cells(comparison, notes: _Notes, digits: int) -> dict[str, dict]:
    """Per model: its heading, and (block, label) → (estimate cell, SE cell)."""
    out = {}
    boundary_note = _boundary_note(comparison)
    for m, (name, fit) in enumerate(zip(comparison.names, comparison.fits, strict=True)):
        head = Cell(name, "" if fit.converged else notes.letter(_convergence_note(comparison)))
        cells = {}
        for (block, label), values in comparison.table.iterrows():
            est, err = values.iloc[2 * m], values.iloc[2 * m + 1]
            if not np.isfinite(est):
                continue
            if block == "Model fit":
                text = formatting.count(est) if label == "Parameters" else formatting.statistic(est)
                cells[(block, label)] = (Cell(text), Cell(""))
                continue
            text, error = formatting.estimate_and_error(est, err, digits)
            mark = notes.letter(boundary_note) if (block, label) in comparison.boundary[name] else ""
            cells[(block, label)] = (Cell(text, mark), Cell(error))
        out[name] = {"head": head, "cells": cells}
    return out


def _model_width(model: dict) -> int:
    est = max([c.width for c, _ in model["cells"].values()] + [0])
    err = max([c.width for _, c in model["cells"].values()] + [0])
    return max(model["head"].width, est + err + GAP) + GAP


def panel_sizes(widths: list[int], label: int, per_panel: int | None) -> list[int]:
    """How many models each panel holds: at most ``per_panel`` (default: as many of the
    widest as fit ``PANEL_CHARS`` beside a label ``label`` wide), spread evenly."""
    n = len(widths)
    if per_panel is None:
        per_panel = max(1, (PANEL_CHARS - min(label, LABEL_CHARS)) // max(widths))
    per_panel = max(1, min(int(per_panel), n))
    panels = math.ceil(n / per_panel)
    return [n // panels + (1 if k < n % panels else 0) for k in range(panels)]


def _panel(title: str, names: list[str], models: dict, index) -> Panel:
    rows, current = [], None
    for block, label in index:
        present = [models[n]["cells"].get((block, label)) for n in names]
        if all(p is None for p in present):
            continue  # none of this panel's models has the parameter
        if block != current:
            rows.append(Row(block, block=True))
            current = block
        cells = [c for p in present for c in (p or (Cell(""), Cell("")))]
        rows.append(Row(label, cells))
    return Panel(title, [models[n]["head"] for n in names], rows)


def _lr_rows(comparison, notes: _Notes) -> list[list[Cell]]:
    rows = []
    for test in comparison.lrtests.itertuples():
        note = re.sub(r"^(\S+ = 0) is on the boundary", r"under the null hypothesis \1, on the boundary", test.note)
        mark = notes.letter(f"{test.full} vs {test.restricted}: {note}.") if note else ""
        rows.append([Cell(f"{test.full} vs {test.restricted}", mark), Cell(formatting.statistic(test.statistic)),
                     Cell(formatting.count(test.df)), Cell(test.distribution), Cell(formatting.p_value(test.p))])
    return rows


def _general_note(comparison, digits: int) -> Cell:
    wording = comparison.fits[0].wording
    scale = ("variances and covariances" if comparison.scale == "variance"
             else "standard deviations and correlations")
    text = (f"Est. and {comparison.second}: {wording.estimate_and_error}; {comparison.second}s to {digits} "
            f"significant digits, estimates to the same decimal place. Random effects as {scale}.")
    if any(str(d).startswith("χ̄²") for d in comparison.lrtests.distribution):
        text += (" χ̄²: the null hypothesis puts a variance on the boundary of the parameter space, so the "
                 "reference distribution is a 50:50 mixture of χ² distributions.")
    return Cell(f"{text} {wording.criteria_note}".strip())


def build_layout(comparison, digits: int = 3, per_panel: int | None = None) -> Layout:
    """The ``Layout`` of ``comparison`` (module docstring)."""
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be a positive integer, not {digits!r}")
    notes = _Notes()
    models = _model_cells(comparison, notes, digits)
    index = list(comparison.table.index)
    label = max(len(label) for _, label in index)
    sizes = panel_sizes([_model_width(models[n]) for n in comparison.names], label, per_panel)
    panels, start = [], 0
    for k, size in enumerate(sizes):
        names = comparison.names[start:start + size]
        title = f"Panel {k + 1} of {len(sizes)}: {', '.join(names)}" if len(sizes) > 1 else ""
        panels.append(_panel(title, names, models, index))
        start += size
    lr_rows = _lr_rows(comparison, notes)
    lr_title = "Likelihood-ratio tests of consecutive nested models" if lr_rows else ""
    return Layout("Est.", comparison.second, panels, lr_title, lr_rows,
                  [_general_note(comparison, digits), *notes.cells()])
