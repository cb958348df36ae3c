"""Likelihood-ratio tests of nested maximum-likelihood fits.

The statistic is LR = 2 (log L_full − log L_restricted), referred to χ²(df) with df the
difference in parameters, or to the χ̄² mixture ½χ²(df−1) + ½χ²(df) when the larger
model adds one random effect (the null puts its variance on the boundary; Self & Liang
1987). Fits that are not nested (``melsm.results.nesting``) are refused. See
docs/architecture.md, 'Results'.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import scipy.special

from melsm.errors import MelsmFitWarning, MelsmInputError
from melsm.results.nesting import added_effects, boundary_label, nested

#: LR statistics below this (log-likelihoods equal to the optimiser's accuracy) count as 0;
#: a larger model whose log L is lower than the smaller's by more than this gets a warning.
LR_ZERO = 1e-6

#: The Unicode of the reference distributions and their plain-ASCII spelling.
ASCII = (("χ̄²", "chibar2"), ("½χ²", "0.5*chi2"), ("χ²", "chi2"))


def chi2_sf(x: float, df: float) -> float:
    """Upper tail of χ²(df); χ²(0) is a point mass at 0."""
    if df == 0:
        return 1.0 if x <= 0 else 0.0
    return float(scipy.special.chdtrc(df, x))


@dataclass(frozen=True)
class LRTest:
    """Likelihood-ratio test of a restricted fit against a larger one. ``distribution``:
    ``χ²(4)``, or the mixture ``χ̄²: ½χ²(3) + ½χ²(4)`` (``df`` is then the larger degrees
    of freedom); ``distribution_ascii`` spells it in ASCII."""

    statistic: float
    df: int
    p_value: float
    distribution: str
    note: str = ""

    @property
    def distribution_ascii(self) -> str:
        """``distribution`` in plain ASCII: ``chi2(4)``, ``chibar2: 0.5*chi2(3) + 0.5*chi2(4)``."""
        text = self.distribution
        for unicode, ascii_ in ASCII:
            text = text.replace(unicode, ascii_)
        return text

    def __str__(self) -> str:
        p = "< 0.0001" if self.p_value < 1e-4 else f"= {self.p_value:.4f}"
        text = f"LR test: LR = {self.statistic:.2f} on {self.distribution}, p {p}"
        return text + (f"  ({self.note})" if self.note else "")


def ordered(one, other):
    """(restricted, full): the two fits by number of parameters, after checking that the
    restricted one is nested in the full one (``MelsmInputError`` naming why not)."""
    if not (one.has_likelihood and other.has_likelihood):
        raise MelsmInputError("lrtest needs another maximum-likelihood fit")
    small, big = sorted((one, other), key=lambda f: f.n_params)
    ok, reason = nested(small, big)
    if not ok and small.n_params == big.n_params:
        if not nested(big, small)[0]:
            raise MelsmInputError(f"not nested: neither model restricts the other (the first against the "
                                  f"second: {reason})")
        ok = True
    if not ok:
        raise MelsmInputError(f"not nested: {reason}")
    if small.n_params == big.n_params:
        raise MelsmInputError("the two fits have the same number of parameters: the same model, nothing to test")
    return small, big


def lrtest(one, other) -> LRTest:
    """LR test between two nested fits with a likelihood (either order).

    When the larger model adds random effects (so the null puts variances on their
    boundary) the statistic is referred to the χ̄² mixture ½χ²(df−1) + ½χ²(df) for one
    added random effect (Self & Liang 1987; runmixregls' chibar2(01) for one SD).
    With more than one added random effect the plain χ²(df) is used, which is
    conservative. A fit that did not converge is named in the note; a larger fit with a
    lower log-likelihood than the smaller did not find its maximum: a ``MelsmFitWarning``
    and a note say so.
    """
    small, big = ordered(one, other)
    df = big.n_params - small.n_params
    statistic = 2 * (big.loglik - small.loglik)
    notes = []
    if big.loglik < small.loglik - LR_ZERO:
        notes.append(_worse_fit(small, big))
    # Below the optimiser's accuracy the statistic is 0; otherwise noise of 1e-12 would
    # drop the χ²(0) atom of the χ̄² mixture and halve the p-value (1 → 0.5).
    statistic = 0.0 if statistic < LR_ZERO else statistic
    added = added_effects(small, big)
    if len(added) == 1:
        p = 0.5 * chi2_sf(statistic, df) + 0.5 * chi2_sf(statistic, df - 1)
        dist = f"χ̄²: ½χ²({df - 1}) + ½χ²({df})"
        notes.insert(0, f"{boundary_label(added[0])} is on the boundary")
    else:
        p = chi2_sf(statistic, df)
        dist = f"χ²({df})"
        if len(added) > 1:
            notes.insert(0, "conservative: the null puts several variances on their boundary")
    failed = [label for label, f in (("restricted", small), ("full", big)) if not f.converged]
    if failed:
        notes.append(f"UNRELIABLE: the {' and '.join(failed)} fit did not converge")
    return LRTest(statistic=statistic, df=df, p_value=float(p), distribution=dist, note="; ".join(notes))


def _worse_fit(small, big) -> str:
    """Warn that the larger fit's log L is below the smaller's, and the note that says so."""
    note = (f"UNRELIABLE: the full fit's log-likelihood is {small.loglik - big.loglik:.3g} below the "
            "restricted fit's, so the full fit did not find its maximum (refit it, e.g. from other starting "
            "values); the statistic is set to 0")
    warnings.warn(f"LR test: {note}", MelsmFitWarning, stacklevel=4)
    return note
