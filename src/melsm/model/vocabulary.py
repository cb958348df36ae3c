"""The words of melsm formulas: the functions and codings a formula may use (a fixed list;
nothing else can be called), and the tokenizer that splits a formula part into words,
refusing any character a formula cannot use. How the words may be put together is
``melsm.model.grammar``'s job. See docs/architecture.md."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from melsm.errors import MelsmInputError

#: The numeric functions of arithmetic (numpy's, element by element).
MATH = ("log", "log2", "log10", "exp", "sqrt", "abs")
#: Stateful transforms (their state is learnt from the fitted data).
STATEFUL = ("center", "scale", "standardize")
#: Every function a formula may call.
FUNCTIONS = ("C", "I", *MATH, *STATEFUL, "poly")
#: Codings of a categorical covariate, ``C(column, contr.sum)``.
CONTRASTS = ("contr.treatment", "contr.sum", "contr.helmert", "contr.poly", "contr.diff")
#: ``np.log`` etc. are accepted as spellings of ``log`` etc.
ALIASES = {f"{prefix}.{name}": name for prefix in ("np", "numpy") for name in MATH}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<backtick>`[^`\n\r]*`)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'[^'\\\n\r]*'|"[^"\\\n\r]*")
  | (?P<name>[^\W\d]\w*(?:\.[^\W\d]\w*)*)
  | (?P<op>\*\*|==|!=|<=|>=|[-+*/:^(),<>])
""", re.VERBOSE)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def quote(text: str, limit: int = 60) -> str:
    """``text`` in quotes for a message, cut to ``limit`` characters (a message stays short
    whatever a user or a file sends)."""
    text = " ".join(str(text).split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


@dataclass(frozen=True)
class Token:
    """One word of a formula, at character ``pos`` of its text."""

    kind: str  # "name", "backtick", "number", "string", "op", "end"
    text: str
    pos: int


def tokens(text: str, where: str) -> list[Token]:
    """The words of ``text`` (spaces dropped), ending with an ``"end"`` token; a one-line
    ``MelsmInputError`` naming ``where`` at the first character no word can start with."""
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            hint = {"{": "braces are not allowed", "[": "subscripts are not allowed",
                    ".": "attribute access is not allowed",
                    "|": "a random term must be written (terms | group)", "`": "a backtick is not closed",
                    "=": "keyword arguments are not allowed", "%": "'%' operators are not supported"}
            raise MelsmInputError(f"{where}: {quote(text[max(0, pos - 20): pos + 20])} has a character "
                                  f"{char!r} a formula cannot use" + (f" ({hint[char]})" if char in hint else ""))
        if match.lastgroup != "space":
            out.append(Token(match.lastgroup, match.group(), pos))
        pos = match.end()
    out.append(Token("end", "", pos))
    return out


def column_text(name: str) -> str:
    """How a column is written in the rebuilt formula: bare when it is a plain identifier
    that cannot be read as anything else, in backticks otherwise."""
    if (_PLAIN_NAME.fullmatch(name) and not keyword.iskeyword(name) and name not in FUNCTIONS
            and not name.startswith("__")):
        return name
    return f"`{name}`"
