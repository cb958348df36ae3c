"""Structured identifiers of random effects and parameters (docs/architecture.md, 'Parameters').

Inside melsm a parameter is identified by a small immutable record, never by its printed
name: a random effect is ``Effect(part, term)``, a pair of them ``Pair(first, second)``, a
level-2 coefficient ``Coef(function, covariate)`` and a reported parameter
``ParamName(kind, key)``. Their ``str`` is the name users see and type
(``mean:Intercept``, ``corr:mean:Intercept,within:Intercept``,
``between:within:Intercept:schgend``, ``sd:within:Intercept``); a term may itself contain
':' or ',' (``x:z``, ``poly(x, 2)[1]``), so names are rendered from these records and only
user input is ever parsed (``parse_effect``), at the edges.
"""

from __future__ import annotations

from typing import NamedTuple, Union

from melsm.errors import MelsmInputError
from melsm.model.vocabulary import quote

#: The parts of a model that can have random effects.
RANDOM_PARTS = ("mean", "within")


class Effect(NamedTuple):
    """A random effect: ``part`` "mean" (location) or "within" (scale), and its term."""

    part: str
    term: str

    def __str__(self) -> str:
        return f"{self.part}:{self.term}"


class Pair(NamedTuple):
    """Two random effects whose correlation is meant, in name order (mean effects first)."""

    first: Effect
    second: Effect

    @classmethod
    def of(cls, a: Effect, b: Effect) -> Pair:
        """The pair of ``a`` and ``b`` in its one order (by printed name)."""
        return cls(*sorted((a, b), key=str))

    def __str__(self) -> str:
        return f"{self.first},{self.second}"


#: What a level-2 function describes: a random effect's log variance, or a pair's correlation.
Function = Union[Effect, Pair]  # noqa: UP007 (a runtime alias)


def target_name(function: Function) -> str:
    """How a level-2 function's target is written: ``within:Intercept``, or
    ``corr:mean:Intercept,within:Intercept`` for a correlation."""
    return f"corr:{function}" if isinstance(function, Pair) else str(function)

#: The random location intercept: its level-2 coefficients are named by covariate alone.
LOCATION_INTERCEPT = Effect("mean", "Intercept")


class Coef(NamedTuple):
    """A coefficient of a level-2 function: the function's target and the covariate."""

    function: Function
    covariate: str

    @property
    def is_intercept(self) -> bool:
        return self.covariate == "Intercept"

    def __str__(self) -> str:
        if self.function == LOCATION_INTERCEPT:
            return self.covariate
        return f"{target_name(self.function)}:{self.covariate}"


class ParamName(NamedTuple):
    """A reported parameter. ``kind``: "mean", "within" (``key`` the term), "between"
    (``key`` a ``Coef``), "sd" or "singular" (an ``Effect``), "corr" (a ``Pair``) or
    "assoc" (the association coefficient's name)."""

    kind: str
    key: object

    @property
    def category(self) -> str:
        """'sd', 'corr', or 'coef' (everything on an unbounded scale)."""
        return self.kind if self.kind in ("sd", "corr") else "coef"

    @property
    def effect(self) -> Function | None:
        """The random effect (or pair) the parameter belongs to, if any."""
        if self.kind == "between":
            return self.key.function
        return self.key if isinstance(self.key, Effect | Pair) else None

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


def parse_effect(text: str) -> Effect:
    """A random effect written ``mean:<term>`` or ``within:<term>`` by a user."""
    part, _, term = str(text).strip().partition(":")
    if part not in RANDOM_PARTS or not term:
        raise ValueError(text)
    return Effect(part, term)


def parse_function(text: str) -> Function:
    """The target of a level-2 function as a user writes it: ``mean:<term>``,
    ``within:<term>`` or ``corr:<effect>,<effect>`` (one line naming the key if not)."""
    text = str(text)
    if text.startswith("corr:"):
        pieces = [p.strip() for p in text.removeprefix("corr:").split(",")]
        try:
            pair = [parse_effect(p) for p in pieces]
        except ValueError:
            pair = []
        if len(pair) != 2 or pair[0] == pair[1]:
            raise MelsmInputError(f"between: {quote(text)} is not a pair of random effects; write "
                                  "'corr:<effect>,<effect>', e.g. 'corr:mean:Intercept,within:Intercept'")
        return Pair.of(*pair)
    try:
        return parse_effect(text)
    except ValueError:
        raise MelsmInputError(f"between: {quote(text)} is not a random effect; write 'mean:<term>' or "
                              "'within:<term>', e.g. 'within:Intercept', or a correlation "
                              "'corr:mean:Intercept,within:Intercept'") from None


def parts_of(function: Function) -> tuple[str, ...]:
    """The parts ("mean", "within") whose random effects a function concerns."""
    effects = (function.first, function.second) if isinstance(function, Pair) else (function,)
    return tuple(dict.fromkeys(e.part for e in effects))
