"""A comparison table's ``Layout`` (``melsm.reporting.table_layout``) in HTML, Markdown,
LaTeX (booktabs) and plain text.

Each renderer only encodes the layout's cells, in the same order, so the formats show
the same content: one table per panel (row labels repeated), the LR tests' table, then
the notes, a note's letter set as a superscript where a cell or model name carries it.
See docs/architecture.md, 'Tables'.
"""

from __future__ import annotations

import html as html_module
import re

from melsm.reporting.table_layout import LABEL_CHARS, Cell, Layout

#: LaTeX's special characters, and characters pdfLaTeX's default fonts lack (in math mode).
LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": "$<$", ">": "$>$",
         "χ̄²": r"$\bar\chi^2$", "χ²": r"$\chi^2$", "½": r"$\frac12$", "±": r"$\pm$", "τ": r"$\tau$",
         "σ": r"$\sigma$", "ρ": r"$\rho$", "—": "---"}
_LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(LATEX, key=len, reverse=True)))


# ---- HTML ---------------------------------------------------------------------------------
def _h(cell: Cell) -> str:
    return html_module.escape(cell.text) + (f"<sup>{cell.mark}</sup>" if cell.mark else "")


def html(layout: Layout) -> str:
    """``<div class="melsm-comparison">``: a ``<table class="melsm-compare">`` per panel (its
    title as caption), the LR tests' table and ``<div class="melsm-notes">``."""
    esc = html_module.escape
    out = ['<div class="melsm-comparison">']
    for panel in layout.panels:
        span = 1 + 2 * len(panel.models)
        caption = f"<caption>{esc(panel.title)}</caption>\n" if panel.title else ""
        head = "".join(f'<th colspan="2">{_h(c)}</th>' for c in panel.models)
        sub = f"<th>{esc(layout.estimate)}</th><th>{esc(layout.error)}</th>" * len(panel.models)
        body = [f'<tr class="block"><th colspan="{span}">{esc(row.label)}</th></tr>' if row.block else
                f"<tr><td>{esc(row.label)}</td>" + "".join(f"<td>{_h(c)}</td>" for c in row.cells) + "</tr>"
                for row in panel.rows]
        out.append(f'<table class="melsm-compare">\n{caption}<thead><tr><th></th>{head}</tr>'
                   f"<tr><th></th>{sub}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>")
    if layout.lr_rows:
        head = "".join(f"<th>{esc(h)}</th>" for h in layout.lr_header)
        body = "\n".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in layout.lr_rows)
        out.append(f'<table class="melsm-compare melsm-lrtests">\n<caption>{esc(layout.lr_title)}</caption>\n'
                   f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>")
    notes = "".join(f"<p>{_h(Cell('', note.mark))} {esc(note.text)}</p>" if note.mark else
                    f"<p><em>Note.</em> {esc(note.text)}</p>" for note in layout.notes)
    out.append(f'<div class="melsm-notes">{notes}</div>\n</div>\n')
    return "\n".join(out)


# ---- Markdown -------------------------------------------------------------------------------
def _m(cell: Cell) -> str:
    text = cell.text.replace("|", r"\|").replace("*", r"\*")
    return text + (f"<sup>{cell.mark}</sup>" if cell.mark else "")


def markdown(layout: Layout) -> str:
    """GitHub-flavoured Markdown: a table per panel (block titles in bold, the panel's
    title above it), the LR tests' table, the notes as paragraphs."""
    out = []
    for panel in layout.panels:
        width = 2 * len(panel.models)
        lines = [f"**{panel.title}**", ""] if panel.title else []
        lines += ["| |" + "".join(f" {_m(c)} | |" for c in panel.models),
                  "|:--|" + "--:|" * width,
                  "| | " + " | ".join(f"{layout.estimate} | {layout.error}" for _ in panel.models) + " |"]
        for row in panel.rows:
            lines.append(f"| **{_m(Cell(row.label))}** |" + " |" * width if row.block else
                         f"| {_m(Cell(row.label))} | " + " | ".join(_m(c) for c in row.cells) + " |")
        out.append("\n".join(lines))
    if layout.lr_rows:
        lines = [f"**{layout.lr_title}**", "", "| " + " | ".join(layout.lr_header) + " |", "|:--|--:|--:|:--|--:|"]
        lines += ["| " + " | ".join(_m(c) for c in row) + " |" for row in layout.lr_rows]
        out.append("\n".join(lines))
    out += [f"<sup>{note.mark}</sup> {_m(Cell(note.text))}" if note.mark else f"*Note.* {_m(Cell(note.text))}"
            for note in layout.notes]
    return "\n\n".join(out) + "\n"


# ---- LaTeX ----------------------------------------------------------------------------------
def latex_text(text: str) -> str:
    """``text`` for pdfLaTeX: specials escaped, Greek letters and symbols in math mode."""
    return _LATEX_PATTERN.sub(lambda match: LATEX[match.group()], text)


def _l(cell: Cell) -> str:
    return latex_text(cell.text) + (rf"\textsuperscript{{{cell.mark}}}" if cell.mark else "")


def _latex_panel(panel, layout: Layout, wrap: bool) -> list[str]:
    n = len(panel.models)
    first = rf"p{{{LABEL_CHARS // 2}em}}" if wrap else "l"
    lines = [rf"\textit{{{latex_text(panel.title)}}}\par\nopagebreak\smallskip"] if panel.title else []
    lines += [rf"\begin{{tabular}}{{@{{}}{first}*{{{n}}}{{rr}}@{{}}}}", r"\toprule",
              " & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{_l(m)}}}" for m in panel.models) + r" \\",
              "".join(rf"\cmidrule(lr){{{2 + 2 * k}-{3 + 2 * k}}}" for k in range(n)),
              " & " + " & ".join(f"{layout.estimate} & {layout.error}" for _ in range(n)) + r" \\", r"\midrule"]
    indent = r"\raggedright\hangindent=1em\hspace*{1em}" if wrap else r"\quad "
    for row in panel.rows:
        lines.append(rf"\multicolumn{{{1 + 2 * n}}}{{@{{}}l}}{{\textit{{{latex_text(row.label)}}}}} \\" if row.block
                     else indent + latex_text(row.label) + " & " + " & ".join(_l(c) for c in row.cells) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}\par\medskip"]


def latex(layout: Layout) -> str:
    """A booktabs ``tabular`` per panel in ``\\small`` type (labels longer than
    ``LABEL_CHARS`` wrap), the LR tests' ``tabular`` and the notes in ``\\footnotesize``;
    needs ``\\usepackage{booktabs}``."""
    wrap = any(len(row.label) > LABEL_CHARS for panel in layout.panels for row in panel.rows if not row.block)
    lines = [r"% a melsm comparison table: needs \usepackage{booktabs}", r"{\small"]
    for panel in layout.panels:
        lines += _latex_panel(panel, layout, wrap)
    if layout.lr_rows:
        lines += [rf"\textit{{{latex_text(layout.lr_title)}}}\par\nopagebreak\smallskip",
                  r"\begin{tabular}{@{}lrrlr@{}}", r"\toprule", " & ".join(layout.lr_header) + r" \\", r"\midrule"]
        lines += [" & ".join(_l(c) for c in row) + r" \\" for row in layout.lr_rows]
        lines += [r"\bottomrule", r"\end{tabular}\par\medskip"]
    lines.append(r"{\footnotesize")
    lines += [(rf"\textsuperscript{{{note.mark}}} " if note.mark else r"\textit{Note.} ") + latex_text(note.text)
              + r"\par" for note in layout.notes]
    return "\n".join(lines + ["}", "}"]) + "\n"


# ---- plain text -----------------------------------------------------------------------------
def _t(cell: Cell) -> str:
    return cell.text + (f"^{cell.mark}" if cell.mark else "")


def text(layout: Layout) -> str:
    """Fixed-width text: each panel's columns right-aligned under the model names."""
    out = []
    for panel in layout.panels:
        rows = [row for row in panel.rows if not row.block]
        label = max([len(row.label) for row in rows] + [10]) + 4
        cell = max([len(_t(c)) for row in rows for c in row.cells] + [len(_t(m)) // 2 + 1 for m in panel.models]
                   + [8]) + 2
        lines = [panel.title] if panel.title else []
        lines += [" " * label + "".join(f"{_t(m):^{2 * cell}}" for m in panel.models),
                  " " * label + f"{layout.estimate:>{cell}}{layout.error:>{cell}}" * len(panel.models)]
        lines += [row.label if row.block else f"  {row.label:<{label - 2}}" + "".join(f"{_t(c):>{cell}}"
                                                                                   for c in row.cells)
                  for row in panel.rows]
        out.append("\n".join(lines))
    if layout.lr_rows:
        lines = [layout.lr_title] + ["  " + "  ".join(_t(c) for c in row) for row in layout.lr_rows]
        out.append("\n".join(lines))
    out.append("\n".join(f"{note.mark + ' ' if note.mark else 'Note. '}{note.text}" for note in layout.notes))
    return "\n\n".join(out)
