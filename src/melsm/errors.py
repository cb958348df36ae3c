"""User-facing errors.

Every mistake a user can make with a formula or a data set is reported as a
``MelsmInputError`` with a one-line message naming the column, value or formula at
fault. Front ends print that line and exit; they never show a traceback for it.
"""


class MelsmInputError(ValueError):
    """A problem with the model specification or the data, explained in one line."""


class MelsmConvergenceWarning(UserWarning):
    """The optimiser stopped without meeting the convergence criteria."""


class MelsmBoundaryWarning(UserWarning):
    """A variance (or standard deviation) of a random effect is estimated at zero."""
