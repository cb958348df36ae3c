"""Built-in data sets.

- ``"tutorial"``: Inner-London schools exam scores, 4,059 students in 65 schools
  (MLwiN's tutorial data): school, student, normexam, cons, standlrt, girl, schgend,
  avslrt, schav, vrband.
- ``"reisby"``: Riesby depression study, 375 weekly Hamilton ratings of 66 patients
  (Hedeker's MIXREGLS example): id, hamdep, week, endog, endweek.
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from melsm.errors import MelsmInputError

NAMES = ("tutorial", "reisby")


def path(name: str):
    if name not in NAMES:
        raise MelsmInputError(f"unknown data set '{name}'; built-in: {', '.join(NAMES)}")
    return files(__package__) / "data" / f"{name}.csv"


def load(name: str) -> pd.DataFrame:
    """Load a built-in data set as a DataFrame."""
    with path(name).open("r") as handle:
        return pd.read_csv(handle)
