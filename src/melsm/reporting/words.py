"""What groups are called in figures and findings: "school"/"schools", "group"/"groups"
for an id column (docs/architecture.md, 'Figures'). Plain Python: no matplotlib, so the
findings (imported with melsm) do not import it."""

from __future__ import annotations

import re

from melsm.errors import MelsmInputError

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
