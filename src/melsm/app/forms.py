"""The app's model form: checking the fields and building the formulas (pandas only).

A form is a dict of fields::

    data, name, response, group,
    mean_fixed [cols], mean_random [cols], mean_random_intercept (bool),
    within_fixed [cols], within_random [cols], within_random_intercept (bool),
    between [cols], between_within [cols], categorical [cols], association,
    method ("ml" | "mcmc"), chains, warmup, draws, seed

``between`` are the covariates of the log variance of the random location intercept,
``between_within`` those of the random scale intercept's (level-2 variance functions).

``build(form, data)`` returns the checked fit request or raises ``FormError`` with a
message for each field at fault (shown next to that field). The columns' levels
(``columns``) are computed here from the data: a level-2 function takes only columns
constant within each group, and no function takes a column that is constant overall.
Text columns, and the numeric columns listed in ``categorical``, enter the formulas as
``C(col)``; they cannot have random slopes.
"""

from __future__ import annotations

import pandas as pd

from melsm.model.association import NAMES

from .columns import IDENTIFIER, column_info, column_levels
from .limits import MAX_CATEGORIES

__all__ = ["IDENTIFIER", "FormError", "build", "column_info", "field_of", "formulas"]

COVARIATE_FIELDS = ("mean_fixed", "mean_random", "within_fixed", "within_random", "between", "between_within")
LIST_FIELDS = (*COVARIATE_FIELDS, "categorical")
ASSOCIATIONS = NAMES
MCMC_LIMITS = {"chains": (2, 64), "warmup": (10, 20000), "draws": (10, 20000), "seed": (0, 2**31 - 1)}
MCMC_DEFAULTS = {"chains": 8, "warmup": 500, "draws": 500, "seed": 0}
NAME_LENGTH = 60


class FormError(Exception):
    """Field → message for every field at fault."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _term(column: str, data: pd.DataFrame, categorical: set[str]) -> str:
    numeric = pd.api.types.is_numeric_dtype(data[column])
    return column if numeric and column not in categorical else f"C({column})"


def _random(intercept: bool, slopes: list[str], group: str) -> str | None:
    if not intercept and not slopes:
        return None
    terms = (["1"] if intercept else ["0"]) + slopes
    return f"({' + '.join(terms)} | {group})"


def formulas(form: dict, data: pd.DataFrame) -> dict:
    """The mean, within and between formulas of a form (fields assumed checked)."""
    response, group = form["response"], form["group"]
    categorical = set(form.get("categorical") or [])

    def term(column: str) -> str:
        return _term(column, data, categorical)

    mean_terms = [term(c) for c in form.get("mean_fixed", [])] or ["1"]
    random = _random(bool(form.get("mean_random_intercept")), list(form.get("mean_random", [])), group)
    mean = f"{response} ~ {' + '.join(mean_terms + ([random] if random else []))}"
    within_terms = [term(c) for c in form.get("within_fixed", [])] or ["1"]
    random = _random(bool(form.get("within_random_intercept")), list(form.get("within_random", [])), group)
    within = f"~ {' + '.join(within_terms + ([random] if random else []))}"
    functions = {effect: f"~ {' + '.join(term(c) for c in columns)}"
                 for effect, columns in (("mean:Intercept", form.get("between") or []),
                                         ("within:Intercept", form.get("between_within") or [])) if columns}
    if set(functions) <= {"mean:Intercept"}:  # the location intercept's alone: the plain formula
        return {"mean": mean, "within": within, "between": functions.get("mean:Intercept")}
    return {"mean": mean, "within": within, "between": functions}


def _columns(form: dict, field: str) -> list[str]:
    value = form.get(field) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FormError({field: "expected a list of column names"})
    return list(dict.fromkeys(value))  # a column named twice counts once


def _text(form: dict, field: str, errors: dict) -> str:
    """A text field ("" when missing or null); an error when it is anything but text."""
    value = form.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[field] = f"{field} must be text"
        return ""
    return value


def _flag(form: dict, field: str, errors: dict) -> bool:
    """A tick box: true or false (missing or null: false); an error for anything else,
    since a text "false" would read as true."""
    value = form.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        errors[field] = f"{field} must be true or false"
        return False
    return value


def _integer(form: dict, field: str, errors: dict) -> int | None:
    low, high = MCMC_LIMITS[field]
    value = form.get(field, MCMC_DEFAULTS[field])
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError
        number = int(str(value).strip())
    except ValueError:  # also a number too long to convert
        errors[field] = f"{field} must be a whole number, not '{str(value)[:40]}'"
        return None
    if not low <= number <= high:
        errors[field] = f"{field} must be between {low} and {high}"
        return None
    return number


def _known(columns: dict, errors: dict, field: str, column: str) -> bool:
    """Whether ``column`` is in the data and usable in a formula; an error for ``field`` if not."""
    if column not in columns:
        errors[field] = f"no column '{column}' in the data"
        return False
    if not columns[column]["usable"]:
        errors[field] = f"column '{column}' has a name a formula cannot use; rename it"
        return False
    return True


def _check_response_and_group(response: str, group: str, columns: dict, errors: dict) -> None:
    if not response:
        errors.setdefault("response", "choose the response")
    elif _known(columns, errors, "response", response) and columns[response]["type"] != "numeric":
        errors["response"] = f"the response '{response}' must be numeric"
    if not group:
        errors.setdefault("group", "choose the level-2 identifier (the group)")
    elif _known(columns, errors, "group", group):
        if group == response:
            errors["group"] = "the group cannot be the response"
        elif columns[group]["distinct"] < 2:
            errors["group"] = f"'{group}' has only one value: there is nothing to group"


def _column_lists(form: dict, columns: dict, response: str, group: str, errors: dict) -> dict[str, list[str]]:
    """The column lists of the form, each checked; a field at fault gets one error (its
    first bad column) and, when it is not a list of names, is taken as empty."""
    lists = {}
    for field in LIST_FIELDS:
        try:
            lists[field] = _columns(form, field)
        except FormError as err:
            errors.update(err.errors)
            lists[field] = []
    categorical = set(lists["categorical"])
    for field in LIST_FIELDS:
        for column in lists[field]:
            if not _known(columns, errors, field, column):
                break
            if problem := _column_problem(field, columns[column], response, group, categorical):
                errors[field] = problem
                break
    return lists


def _column_problem(field: str, info: dict, response: str, group: str, categorical: set[str]) -> str | None:
    """Why a known, usable column cannot be in list ``field`` (None if it can)."""
    column = info["name"]
    if column in (response, group):
        return f"'{column}' is the {'response' if column == response else 'group'}"
    if field == "categorical":
        if info["categorical"] == "no":
            return (f"'{column}' has {info['distinct']} distinct values, too many for a categorical covariate "
                    f"(at most {MAX_CATEGORIES})")
        return None
    if info["level"] == "constant":
        return f"'{column}' has the same value in every row: the intercept already stands for it"
    text = info["type"] != "numeric"
    if (text or column in categorical) and info["distinct"] > MAX_CATEGORIES:
        return (f"'{column}' has {info['distinct']} distinct values, too many for a categorical covariate "
                f"(at most {MAX_CATEGORIES})")
    if field.endswith("_random") and text:
        return f"'{column}' is text: a random slope needs a numeric column"
    if field.endswith("_random") and column in categorical:
        return f"'{column}' is categorical: a random slope needs a numeric (not categorical) column"
    return None


def _check_level_two(lists: dict, flags: dict, data: pd.DataFrame, group: str, columns: dict,
                     errors: dict) -> None:
    """Between-group covariates are level-2 columns (constant within each group, computed
    here from the data: ``columns.column_levels``), and each variance function has the
    random intercept whose variance it models."""
    fields = [f for f in ("between", "between_within") if f not in errors and lists[f]]
    if fields and group in columns and "group" not in errors:
        levels = column_levels(data, group, [group, *(c for f in fields for c in lists[f])])
        for field in fields:
            if varying := [c for c in lists[field] if levels.get(c) == "level-1"]:
                errors[field] = (f"'{varying[0]}' varies within {group}: between-group covariates must be "
                                 f"constant within each group")
    if lists["between_within"] and not flags["within_random_intercept"] and "between_within" not in errors:
        errors["between_within"] = "a level-2 function of the scale variance needs the random scale intercept"
    if lists["between"] and not flags["mean_random_intercept"] and "between" not in errors:
        errors["between"] = "a level-2 function of the location variance needs the random location intercept"


def _name(text: str, taken_names: set[str], errors: dict) -> str:
    name = text.strip()
    if not name:
        errors.setdefault("name", "give the model a name")
    elif len(name) > NAME_LENGTH:
        errors["name"] = f"the name is longer than {NAME_LENGTH} characters"
    elif name in taken_names:
        errors["name"] = f"a fitted model is already called '{name}'"
    return name


def _method(form: dict, text: str, errors: dict) -> tuple[str, dict]:
    """The method ("ml" by default) and its options (MCMC's chains, warm-up, draws, seed)."""
    method = text or "ml"
    options = {}
    if method == "mcmc":
        options = {field: _integer(form, field, errors) for field in MCMC_LIMITS}
    elif method != "ml" and "method" not in errors:
        errors["method"] = "method must be ML or MCMC"
    return method, options


def build(form: dict, data: pd.DataFrame, taken_names: set[str]) -> dict:
    """Check every field of ``form`` against ``data``; return the fit request
    ``{"name", "formulas", "association", "method", "options"}``."""
    if not isinstance(form, dict):
        raise FormError({"form": "the request is not a form"})
    errors: dict[str, str] = {}
    columns = {c["name"]: c for c in column_info(data)}
    texts = {field: _text(form, field, errors) for field in ("response", "group", "name", "association", "method")}
    flags = {field: _flag(form, field, errors) for field in ("mean_random_intercept", "within_random_intercept")}
    response, group = texts["response"], texts["group"]
    # The errors keep the order of these checks (a one-line message lists them in it).
    _check_response_and_group(response, group, columns, errors)
    lists = _column_lists(form, columns, response, group, errors)
    _check_level_two(lists, flags, data, group, columns, errors)
    association = texts["association"] or "correlated"
    if association not in ASSOCIATIONS and "association" not in errors:
        errors["association"] = f"association must be one of {', '.join(ASSOCIATIONS)}"
    if not (flags["mean_random_intercept"] or lists["mean_random"]) and not errors.get("mean_random") \
            and "mean_random_intercept" not in errors:
        errors["mean_random"] = "the mean function needs a random effect (tick the random intercept)"
    name = _name(texts["name"], taken_names, errors)
    method, options = _method(form, texts["method"], errors)
    if errors:
        raise FormError(errors)
    return {"name": name, "formulas": formulas({**form, **lists, **flags}, data), "association": association,
            "method": method, "options": options}


def field_of(message: str) -> str:
    """The form field an engine error message is about (for messages the checks above
    cannot foresee, e.g. a singular design)."""
    text = message.lower()
    if "between" in text and "within:intercept" in text:
        return "between_within"
    for needle, field in (("between", "between"), ("within", "within_fixed"), ("level-1 variance", "within_fixed"),
                          ("mean formula", "mean_fixed"), ("mean function", "mean_fixed"), ("response", "response"),
                          ("group", "group")):
        if needle in text:
            return field
    return "form"
