"""The look shared by the figures of ``melsm.reporting.plots``: colours and markers that
still tell groups apart when printed in grey, the words for a group ("school" /
"schools"), the axes a figure draws into, limits that contain everything drawn and the
size of annotations. See docs/architecture.md, 'Figures'.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from melsm.errors import MelsmInputError
from melsm.reporting.words import default_group_word, group_words, pluralise  # noqa: F401 (used by plots)

#: Dark red (prints dark grey), mid grey, dark blue (prints near black), text.
HIGHLIGHT = "#b2182b"
PLAIN = "#8c8c8c"
AVERAGE = "#1f3a93"
TEXT = "#222222"
#: Markers of a plain group and of a group marked as differing (shape, not only colour).
PLAIN_MARKER, HIGHLIGHT_MARKER = "o", "D"
#: Line styles of a plain group's line and of a highlighted one.
PLAIN_STYLE, HIGHLIGHT_STYLE = "-", "--"
#: Fraction of an axis left free on each side of what is drawn.
PAD = 0.04

def axes_for(ax, figsize: tuple[float, float]) -> tuple[Figure | None, Axes]:
    """(new figure or None, axes to draw into): the caller's ``ax``, or the one axes of a
    new constrained-layout figure of ``figsize`` (made without pyplot)."""
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.subplots()
    if not isinstance(ax, Axes):
        raise MelsmInputError(f"ax must be a matplotlib Axes (e.g. from fig.subplots()), not {type(ax).__name__}")
    return None, ax


def given_axes(ax, count: int, what: str) -> list[Axes]:
    """The caller's ``ax`` as a list of ``count`` Axes (one Axes, or any sequence or array
    of them, read row by row); ``what`` says what each is for, in the error."""
    axes = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != count or not all(isinstance(a, Axes) for a in axes):
        raise MelsmInputError(f"ax must be {count} matplotlib Axes, {what}, not {len(axes)}")
    return axes


def text_size(ax: Axes) -> float:
    """Font size in points of ``ax``'s tick labels: the least any annotation gets."""
    sizes = [tick.label1.get_fontsize() for axis in (ax.xaxis, ax.yaxis) for tick in axis.get_major_ticks()[:1]]
    return max(sizes) if sizes else FontProperties(size=rcParams["ytick.labelsize"]).get_size_in_points()


def contain(ax: Axes, x=None, y=None, pad: float = PAD) -> None:
    """Set ``ax``'s limits to hold every finite value of ``x`` and of ``y`` (lists of
    arrays or numbers), with ``pad`` of the range free on each side."""
    for values, setter in ((x, ax.set_xlim), (y, ax.set_ylim)):
        if values is None:
            continue
        flat = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in values])
        flat = flat[np.isfinite(flat)]
        if flat.size:
            low, high = float(flat.min()), float(flat.max())
            span = (high - low) or abs(high) or 1.0
            setter(low - pad * span, high + pad * span)


def legend(ax: Axes, loc: str = "best", **kwargs) -> None:
    """The legend of ``ax`` in the annotation size, by default where it hides least, on a
    translucent white box so that its text stays legible over data."""
    ax.legend(fontsize=text_size(ax), loc=loc, framealpha=0.85, edgecolor="none", **kwargs)


def wrap(ax: Axes, text: str, size: float, vertical: bool = False) -> str:
    """``text`` with each line wrapped to the width (``vertical``: the height) of ``ax``,
    estimated from the figure size and an average glyph width of 0.5 em."""
    fig, box = ax.get_figure(), ax.get_position()
    inches = (box.height * fig.get_figheight() if vertical else box.width * fig.get_figwidth()) if fig else 4.0
    width = max(24, int(inches * 72 / (0.5 * size)))
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def title(ax: Axes, what: str, finding: str | None, name: str | None, note: str | None) -> None:
    """What the figure shows (of model ``name``); on a second line the finding and ``note``
    (the method and its intervals); wrapped to the axes' width, in the tick labels' size."""
    text = f"{name}: {what}" if name else what[:1].upper() + what[1:]
    if finding:
        text += f"\n{finding} ({note})" if note else f"\n{finding}"
    size = text_size(ax)
    ax.set_title(wrap(ax, text, size), fontsize=size, loc="left", color=TEXT)
