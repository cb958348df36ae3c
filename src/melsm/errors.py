"""User-facing errors.

Every mistake a user can make with a formula or a data set is reported as a
``MelsmInputError`` with a one-line message naming the column, value or formula at
fault. Front ends print that line and exit; they never show a traceback for it.
"""

import numbers
import re

import numpy as np

_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")


class MelsmInputError(ValueError):
    """A problem with the model specification or the data, explained in one line.

    Line breaks in the message (from a formula written over several lines, say) are
    replaced by single spaces, so the message is always exactly one line.
    """

    def __init__(self, message: object = ""):
        super().__init__(_LINE_BREAKS.sub(" ", str(message)).strip())


class MelsmConvergenceWarning(UserWarning):
    """The optimiser stopped without meeting the convergence criteria."""


class MelsmBoundaryWarning(UserWarning):
    """A variance (or standard deviation) of a random effect is estimated at zero."""


class MelsmFitWarning(UserWarning):
    """Fits contradict what they must satisfy: a larger nested model with a lower
    log-likelihood than a smaller one (the larger fit did not find its maximum); bootstrap
    refits that failed or are too few for the intervals asked for; or a profile-likelihood
    refit that did not converge (that interval end is NaN)."""


class MelsmStudyWarning(UserWarning):
    """A stored replicate of a simulation study could not be read (it is set aside and redone)."""


class MelsmDataWarning(UserWarning):
    """Rows were dropped for missing values."""


def count(value: object, name: str, minimum: int = 1, meaning: str = "") -> int:
    """``value`` as an int when it is a whole number ≥ ``minimum`` (an integral float such as
    ``5.0`` counts; booleans, NaN and infinities do not), else a ``MelsmInputError`` naming
    ``name`` (``meaning``, if given, says what the number counts)."""
    whole = (not isinstance(value, bool) and isinstance(value, numbers.Real) and np.isfinite(value)
             and int(value) == value and value >= minimum)
    if not whole:
        kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise MelsmInputError(f"{name} must be {kind}{f' ({meaning})' if meaning else ''}, not {value!r}")
    return int(value)
