"""How numbers are printed in tables: one rule for every table melsm shows.

- **Estimates with an SE** (or posterior SD): the SE to ``digits`` significant digits
  (default 3: 0.0123, 0.456, 12.3, 1234) and the estimate to the same decimal place, so an
  estimate never claims more precision than its SE and a small SE never reads "0.01". SEs
  below 1e-6 or estimates at or above 1e7 switch to e-notation with ``digits`` significant
  digits (data in very small or large units).
- **Numbers without an SE** (an estimate on the boundary, a covariance of it): ``digits``
  significant digits.
- **Fit statistics** (log-likelihood, AIC, BIC, DIC, LR statistics): two decimals;
  counts (parameters, df) as integers.
- **p-values**: three decimals, "< 0.001" below that.

Used by the comparison tables (``melsm.reporting.compare``) and a fit's HTML display
(``melsm.results.display``). See docs/architecture.md, 'Tables'.
"""

from __future__ import annotations

import math

#: The most decimals fixed notation is used for; smaller SEs switch to e-notation.
MAX_DECIMALS = 6
#: Estimates this large switch to e-notation.
LARGE = 1e7


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def _fixed(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def decimals_for(se: float, digits: int = 3) -> int | None:
    """Decimal places that show ``se`` to ``digits`` significant digits; None when that
    needs more than ``MAX_DECIMALS`` (then e-notation is used) or ``se`` is not a positive
    number."""
    if not _finite(se) or se <= 0:
        return None
    places = digits - 1 - math.floor(math.log10(se))
    return max(places, 0) if places <= MAX_DECIMALS else None


def significant(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits ("" for a missing value, "0" for zero)."""
    if not _finite(x):
        return ""
    if x == 0:
        return "0"
    places = digits - 1 - math.floor(math.log10(abs(x)))
    if places > MAX_DECIMALS or abs(x) >= LARGE:
        return f"{x:.{digits - 1}e}"
    return _fixed(x, max(places, 0))


def estimate_and_error(estimate: float, error: float, digits: int = 3) -> tuple[str, str]:
    """(estimate, SE) as printed: the SE to ``digits`` significant digits and the estimate
    to the same decimal place; without a usable SE the estimate alone to ``digits``
    significant digits and the SE as ""."""
    if not _finite(estimate):
        return "", ""
    places = decimals_for(error, digits)
    if places is None or abs(estimate) >= LARGE:
        if _finite(error) and error > 0:  # too small or too large for fixed decimals
            return f"{estimate:.{digits - 1}e}", f"{error:.{digits - 1}e}"
        return significant(estimate, digits), ""
    return _fixed(estimate, places), _fixed(error, places)


def interval(lower: float, upper: float, error: float, digits: int = 3) -> str:
    """"[lower, upper]" at the decimal place of the estimate (``estimate_and_error``)."""
    if not (_finite(lower) and _finite(upper)):
        return ""
    places = decimals_for(error, digits)
    if places is None:
        return f"[{significant(lower, digits)}, {significant(upper, digits)}]"
    return f"[{_fixed(lower, places)}, {_fixed(upper, places)}]"


def statistic(x: float) -> str:
    """A fit statistic or test statistic: two decimals ("" if missing)."""
    return _fixed(float(x), 2) if _finite(x) else ""


def count(x: float) -> str:
    """A count (parameters, degrees of freedom)."""
    return f"{float(x):.0f}" if _finite(x) else ""


def p_value(p: float) -> str:
    """Three decimals, "< 0.001" below that ("" if missing)."""
    if not _finite(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
