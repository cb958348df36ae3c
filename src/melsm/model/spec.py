"""Model specification: the three formulas of a location-scale model, parsed.

Formulas use lme4 syntax for random effects::

    mean    = "y ~ x1 + x2 + (1 + x1 | group)"   # response, fixed part, random location part
    within  = "~ x1 + (1 | group)"                # log level-1 variance: fixed part, random scale part
    between = "~ g1"                              # log variance of the random location intercept
    between = {"mean:Intercept": "~ g1",          # or one log-variance function per random effect
               "within:Intercept": "~ g2"}

Parsing here is purely textual: which terms are fixed, which are random and by which
grouping factor. Every part is checked against melsm's formula grammar
(``melsm.model.grammar``: column names, formula operators and a fixed set of functions) and
stored as the grammar rebuilt it, so no formula can carry code. Turning the terms into
arrays is ``melsm.model.design``'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from melsm.errors import MelsmInputError
from melsm.model.association import Association
from melsm.model.grammar import column_name, parse_terms, quote
from melsm.model.names import LOCATION_INTERCEPT, Function, Pair, parse_function, parts_of


@dataclass(frozen=True)
class RandomPart:
    """A random-effects term ``(terms | group)``, or ``(terms || group)``: effects
    uncorrelated with each other and with every other random effect (lme4's expansion
    into separate terms)."""

    terms: str
    group: str
    uncorrelated: bool = False


@dataclass(frozen=True)
class ParsedFormula:
    response: str | None
    fixed: str
    random: RandomPart | None
    offset: str | None = None  # the inner expressions of offset(...) terms, summed


@dataclass(frozen=True)
class ModelSpec:
    """The parsed model: what is random, what is fixed, in which function."""

    response: str
    mean_fixed: str
    mean_random: str | None
    within_fixed: str
    within_random: str | None
    between: tuple[tuple[Function, str], ...] | None  # (Effect or Pair, fixed part) per level-2 function
    group: str | None
    association: Association
    formulas: dict
    #: The parts ("mean", "within") whose random term is written with '||'.
    uncorrelated: tuple[str, ...] = ()
    #: ``offset(...)`` of the mean and of the log level-1 variance (a term each, or None):
    #: added to the linear predictor with coefficient 1.
    mean_offset: str | None = None
    within_offset: str | None = None
    #: The column of frequency weights (a row counts as that many observations), or None.
    weights: str | None = None


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` characters that are not inside parentheses, backticks or quotes."""
    parts, depth, start, quoted = [], 0, 0, None
    for i, ch in enumerate(text):
        if quoted:
            quoted = None if ch == quoted else quoted
        elif ch in "`'\"":
            quoted = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise MelsmInputError("unbalanced parentheses")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise MelsmInputError("unbalanced parentheses")
    parts.append(text[start:])
    return parts


MAX_FORMULA_LENGTH = 10_000
_OFFSET_TERM = re.compile(r"^offset\s*\((?P<expr>.*)\)$", re.S)
_RANDOM_TERM = re.compile(r"^\(\s*(?P<terms>[^|]*?)\s*(?P<bars>\|\|?)\s*(?P<group>[^|()]+?)\s*\)$")


def parse_formula(formula: str, which: str, need_response: bool) -> ParsedFormula:
    """Split one formula into response, fixed terms and at most one random term."""
    text, lhs, rhs = _sides(formula, which, need_response)
    try:
        terms = [t.strip() for t in _split_top_level(rhs, "+")]
    except MelsmInputError as err:
        raise MelsmInputError(f"{which} formula {quote(text)}: {err}") from None
    fixed, random, offsets = [], [], []
    for k, term in enumerate(terms):
        if not term:
            where = ("ends with '+'" if k == len(terms) - 1 else
                     "starts with '+'" if k == 0 else "has '+' twice in a row")
            raise MelsmInputError(f"{which} formula {quote(text)} {where}: a term is missing")
        if "|" in term:
            random.append(_random_part(term, text, which))
        elif (inner := _OFFSET_TERM.match(term)) is not None:
            offsets.append(parse_terms(inner["expr"], f"offset of the {which} formula").text)
        else:
            fixed.append(term)
    if len(random) > 1:
        raise MelsmInputError(
            f"{which} formula {quote(text)} has {len(random)} random terms; give one (terms | group)"
        )
    return ParsedFormula(
        response=column_name(lhs, "response") if lhs else None,
        fixed=parse_terms(" + ".join(fixed), f"{which} formula").text if fixed else "1",
        random=random[0] if random else None,
        offset=_offset_text(offsets, text, which),
    )


def _offset_text(offsets: list[str], text: str, which: str) -> str | None:
    """The offset terms as one term: I(a + b) for several."""
    for inner in offsets:
        if " + " in inner:
            raise MelsmInputError(f"{which} formula {quote(text)}: offset({inner}) needs one term; "
                                  f"write offset(I(...)) for a sum")
    if not offsets:
        return None
    return offsets[0] if len(offsets) == 1 else "I(" + " + ".join(f"({o})" for o in offsets) + ")"


def _sides(formula: str, which: str, need_response: bool) -> tuple[str, str, str]:
    """(the formula on one line, left side, right side) of ``lhs ~ rhs``, checked."""
    if not isinstance(formula, str):
        raise MelsmInputError(
            f"{which} formula must be a string such as "
            f"'{'y ~ x + (1 | group)' if need_response else '~ x'}', not {type(formula).__name__} {formula!r}"
        )
    if not formula.strip():
        raise MelsmInputError(f"{which} formula is empty")
    if len(formula) > MAX_FORMULA_LENGTH:
        raise MelsmInputError(f"{which} formula is {len(formula):,} characters long; the limit is "
                              f"{MAX_FORMULA_LENGTH:,}")
    # messages quote the formula with its whitespace normalised: one line, even for a
    # formula written over several lines
    text = " ".join(formula.split())
    pieces = text.split("~")
    if len(pieces) != 2:
        raise MelsmInputError(
            f"{which} formula {quote(text)} needs exactly one '~' (it has {len(pieces) - 1})"
        )
    lhs, rhs = pieces[0].strip(), pieces[1].strip()
    if need_response and not lhs:
        raise MelsmInputError(f"{which} formula {quote(text)} has no response left of '~'")
    if not need_response and lhs:
        raise MelsmInputError(
            f"{which} formula {quote(text)} must not have a response (write {quote('~ ' + rhs)})"
        )
    if not rhs:
        raise MelsmInputError(f"{which} formula {quote(text)} has nothing right of '~'")
    return text, lhs, rhs


def _random_part(term: str, text: str, which: str) -> RandomPart:
    """The random term ``(terms | group)`` of a formula, checked."""
    match = _RANDOM_TERM.match(term)
    if match is None:
        raise MelsmInputError(
            f"{which} formula {quote(text)}: cannot read random term {quote(term)}; "
            "write it as (terms | group)"
        )
    if not match["group"].strip():
        raise MelsmInputError(
            f"{which} formula {quote(text)}: random term {quote(term)} has no grouping factor right of '|'"
        )
    if not match["terms"]:
        raise MelsmInputError(
            f"{which} formula {quote(text)}: random term {quote(term)} has nothing left of '|'; "
            f"write (1 | {match['group'].strip()}) for a random intercept"
        )
    return RandomPart(parse_terms(match["terms"], f"random part of the {which} formula").text,
                      column_name(match["group"].strip(), "grouping factor"), match["bars"] == "||")


def _between_functions(between) -> dict[Function, str]:
    """``between`` as {function target: formula}: a string is the random location intercept's."""
    if isinstance(between, str):
        return {LOCATION_INTERCEPT: between}
    if not isinstance(between, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in between.items()):
        raise MelsmInputError("between must be a formula, or a dict {effect: formula} with effects such as "
                              "'mean:Intercept' or 'within:Intercept'")
    return {parse_function(effect): text for effect, text in between.items()}


def make_spec(
    mean: str,
    within: str = "~ 1",
    between: str | dict | None = None,
    association: str = "correlated",
    weights: str | None = None,
) -> ModelSpec:
    """Parse and cross-check the three formulas of a location-scale model.

    ``between``: the log variance of the random location intercept as a function of
    group covariates, or a dict giving such a function for any random effect, e.g.
    ``{"within:Intercept": "~ schgend"}`` (log σ²_v0,j = g_j'γ), and for the correlation of
    one location and one scale effect, ``{"corr:mean:Intercept,within:Intercept": "~ g"}``
    (atanh ρ_j = g_j'δ)."""
    kind = Association.parse(association)
    m = parse_formula(mean, "mean", need_response=True)
    w = parse_formula(within if within is not None else "~ 1", "within", need_response=False)
    parsed = _between_formulas(between)
    groups = {p.group for p in (m.random, w.random) if p is not None}
    if len(groups) > 1:
        raise MelsmInputError(
            f"mean and within formulas use different grouping factors ({', '.join(sorted(groups))});"
            " melsm fits two-level models with one grouping factor"
        )
    group = groups.pop() if groups else None
    _check_between_effects(parsed, m, w, kind)
    uncorrelated = tuple(part for part, f in (("mean", m), ("within", w)) if f.random and f.random.uncorrelated)
    _check_uncorrelated(uncorrelated, parsed, kind)
    # "linear" (MIXREGLS' name) asks for correlated location and scale effects: both parts
    if (association == "linear" or kind.needs_both_parts) and (
        m.random is None or w.random is None
    ):
        raise MelsmInputError(
            f"association='{association}' needs random effects in both the mean and the within formula"
        )
    return ModelSpec(
        response=m.response,
        mean_fixed=m.fixed,
        mean_random=m.random.terms if m.random else None,
        within_fixed=w.fixed,
        within_random=w.random.terms if w.random else None,
        between=tuple(parsed.items()) or None,
        group=group,
        association=kind,
        formulas={"mean": mean, "within": within, "between": between},
        uncorrelated=uncorrelated,
        mean_offset=m.offset,
        within_offset=w.offset,
        weights=_weights_name(weights),
    )


def _weights_name(weights) -> str | None:
    if weights is not None and (not isinstance(weights, str) or not weights):
        raise MelsmInputError(f"weights must be the name of a column of frequency weights, not {weights!r}")
    return weights


def _check_uncorrelated(uncorrelated: tuple[str, ...], parsed: dict, kind: Association) -> None:
    """'||' effects have no correlations: none can be a level-2 function or carry the
    quadratic association."""
    if not uncorrelated:
        return
    if kind.needs_both_parts:
        raise MelsmInputError(f"association='{kind}' links a location and a scale effect; their random terms "
                              "need '|', not '||'")
    for function in parsed:
        if isinstance(function, Pair) and set(parts_of(function)) & set(uncorrelated):
            raise MelsmInputError(f"a between formula models the correlation of {function}, but '||' makes "
                                  f"the {' and '.join(uncorrelated)} random effects uncorrelated")


def _between_formulas(between) -> dict[Function, str]:
    """{effect: fixed terms} of the level-2 functions (no random terms allowed)."""
    parsed = {}
    for effect, text in (_between_functions(between) if between else {}).items():
        b = parse_formula(text, "between", need_response=False)
        if b.offset is not None:
            raise MelsmInputError(f"between formula {quote(text)} cannot have an offset")
        if b.random is not None:
            raise MelsmInputError(f"between formula {quote(text)} cannot have random terms "
                                  f"(it describes the variance of the random effect {effect})")
        parsed[effect] = b.fixed
    return parsed


def _check_between_effects(parsed: dict, m: ParsedFormula, w: ParsedFormula, kind: Association) -> None:
    """Every level-2 function is of a random effect the model has (a correlation function
    of a pair, which also needs correlated location and scale effects)."""
    for function in parsed:
        is_pair = isinstance(function, Pair)
        for where in parts_of(function):
            if (m.random if where == "mean" else w.random) is None:
                raise MelsmInputError(
                    f"a between formula models the {'correlation' if is_pair else 'variance'} of "
                    f"{function}, but the {where} formula has no random part"
                )
        if is_pair and kind.independent_blocks:
            raise MelsmInputError("a correlation function needs correlated location and scale effects, "
                                  "not association='none'")
