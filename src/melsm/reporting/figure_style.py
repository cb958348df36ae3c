"""The look shared by the figures of ``melsm.reporting.plots``: colours and markers that
still tell groups apart when printed in grey, the words for a group ("school" /
"schools"), the axes a figure draws into, limits that contain everything drawn and the
size of annotations. See docs/architecture.md, 'Figures'.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from melsm.errors import MelsmInputError

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

#: Column names that say nothing about what a group is: the figures say "group".
GENERIC_NAMES = {"id", "ids", "idx", "index", "key", "code", "group", "groups", "grp", "cluster", "clusters",
                 "unit", "units", "level2", "l2", "level 2", "cluster id", "group id"}
IRREGULAR = {"child": "children", "person": "people", "man": "men", "woman": "women", "mouse": "mice",
             "foot": "feet", "tooth": "teeth", "wife": "wives", "life": "lives", "leaf": "leaves",
             "analysis": "analyses", "thesis": "theses", "criterion": "criteria", "species": "species",
             "series": "series", "sheep": "sheep", "fish": "fish", "deer": "deer", "staff": "staff"}
SINGULAR = {plural: word for word, plural in IRREGULAR.items() if plural != word}
#: "school_id", "school.no", "school id" → "school"; "schoolID", "schoolId" → "school".
SEPARATED_ID = re.compile(r"[\s_.\-]+(?:id|ids|idx|no|nr|num|number|code|key)$", re.IGNORECASE)
CAMEL_ID = re.compile(r"(?<=[a-z])(?:ID|Id|IDs|Ids)$")


def pluralise(word: str) -> str:
    """English plural of the last word of ``word``: a few irregular nouns (child, person,
    analysis, ...), acronyms + s ("LEAs"), -s/-x/-z/-ch/-sh + es ("classes"), consonant + y
    → ies ("counties"), else + s ("schools")."""
    head, space, last = word.rpartition(" ")
    lower = last.lower()
    if lower in IRREGULAR:
        plural = IRREGULAR[lower]
        plural = plural.upper() if last.isupper() and len(last) > 1 else last[0] + plural[1:]
    elif last.isupper() and len(last) > 1:
        plural = last + "s"
    elif re.search(r"(?:s|x|z|ch|sh)$", lower):
        plural = last + "es"
    elif re.search(r"[^aeiou]y$", lower):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head}{space}{plural}"


def _singular(word: str) -> str:
    """The singular of a column name that reads as an English plural ("schools",
    "classes", "counties"), else ``word``."""
    lower = word.lower()
    if lower in SINGULAR:
        return SINGULAR[lower]
    if len(lower) < 4 or not lower.endswith("s") or lower.endswith(("ss", "us", "is")):
        return word
    if lower.endswith("ies"):
        return word[:-3] + "y"
    if re.search(r"(?:sses|xes|zes|ches|shes)$", lower):
        return word[:-2]
    return word[:-1]


def default_group_word(group_name: str | None) -> str:
    """What a group is called when the caller does not say: the group column's name
    without an id suffix ("school_id", "schoolID" → "school"), underscores as spaces, in
    lower case unless it is an acronym of up to 3 letters ("LEA"), in the singular
    ("schools" → "school"); "group" for a name that says nothing ("id", "ID", "cluster",
    "g1", none)."""
    word = CAMEL_ID.sub("", SEPARATED_ID.sub("", str(group_name or "").strip()))
    word = re.sub(r"[_.]+", " ", word).strip()
    if word.lower() in GENERIC_NAMES or sum(c.isalpha() for c in word) < 2:
        return "group"
    if (word[:1].isupper() and word[1:] == word[1:].lower()) or (word.isupper() and len(word) > 3):
        word = word.lower()
    return _singular(word)


def group_words(group_name: str | None, group_label=None) -> tuple[str, str]:
    """(singular, plural) for a group: ``group_label`` as given — one word, pluralised by
    ``pluralise``, or a (singular, plural) pair — else from the group column's name
    (``default_group_word``)."""
    if group_label is None:
        word = default_group_word(group_name)
        return word, pluralise(word)
    if isinstance(group_label, str):
        pair = (group_label, pluralise(group_label.strip()) if group_label.strip() else "")
    else:
        pair = tuple(group_label) if isinstance(group_label, list | tuple) else ()
    if len(pair) != 2 or not all(isinstance(w, str) and w.strip() for w in pair):
        raise MelsmInputError("group_label must be a word such as 'patient' or a pair such as "
                              f"('person', 'people'), not {group_label!r}")
    return pair[0].strip(), pair[1].strip()


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
