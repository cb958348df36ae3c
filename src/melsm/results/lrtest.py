"""Likelihood-ratio tests of nested maximum-likelihood fits.

The statistic is LR = 2 (log L_full − log L_restricted), referred to χ²(df) with df the
difference in parameters, or to the χ̄² mixture ½χ²(df−1) + ½χ²(df) when the larger
model adds one random effect (the null puts its variance on the boundary; Self & Liang
1987). See docs/architecture.md, 'Results'.
"""

from __future__ import annotations

from dataclasses import dataclass

import scipy.special

from melsm.errors import MelsmInputError

#: LR statistics below this (log-likelihoods equal to the optimiser's accuracy) count as 0.
LR_ZERO = 1e-6


def chi2_sf(x: float, df: float) -> float:
    """Upper tail of χ²(df); χ²(0) is a point mass at 0."""
    if df == 0:
        return 1.0 if x <= 0 else 0.0
    return float(scipy.special.chdtrc(df, x))


@dataclass(frozen=True)
class LRTest:
    """Likelihood-ratio test of a restricted fit against a larger one."""

    statistic: float
    df: int
    p_value: float
    distribution: str
    note: str = ""

    def __str__(self) -> str:
        p = "< 0.0001" if self.p_value < 1e-4 else f"{self.p_value:.4f}"
        text = f"LR test: {self.distribution} = {self.statistic:.2f}, p {p if p[0] == '<' else '= ' + p}"
        return text + (f"  ({self.note})" if self.note else "")


def lrtest(one, other) -> LRTest:
    """LR test between two nested fits with a likelihood (either order).

    When the larger model adds random effects (so the null puts variances on their
    boundary) the statistic is referred to the χ̄² mixture ½χ²(df−1) + ½χ²(df) for one
    added random effect (Self & Liang 1987; runmixregls' chibar2(01) for one SD).
    With more than one added random effect the plain χ²(df) is used, which is
    conservative. A fit that did not converge is named in the note.
    """
    if not (one.has_likelihood and other.has_likelihood):
        raise MelsmInputError("lrtest needs another maximum-likelihood fit")
    small, big = sorted((one, other), key=lambda f: f.n_params)
    if small.n_obs != big.n_obs or small.model.design.response != big.model.design.response:
        raise MelsmInputError("LR test needs fits of the same response on the same rows")
    df = big.n_params - small.n_params
    if df <= 0:
        raise MelsmInputError("the two fits have the same number of parameters: not nested")
    statistic = 2 * (big.loglik - small.loglik)
    # Below the optimiser's accuracy the statistic is 0; otherwise noise of 1e-12 would
    # drop the χ²(0) atom of the χ̄² mixture and halve the p-value (1 → 0.5).
    statistic = 0.0 if statistic < LR_ZERO else statistic
    added = [str(pid) for pid in big.ids if pid.kind == "sd" and pid not in small.ids]
    if len(added) == 1:
        p = 0.5 * chi2_sf(statistic, df) + 0.5 * chi2_sf(statistic, df - 1)
        dist = f"chibar2({df - 1}{df})" if df < 10 else f"chibar2({df - 1},{df})"
        note = f"{added[0]} = 0 is on the boundary"
    else:
        p = chi2_sf(statistic, df)
        dist = f"chi2({df})"
        note = ("conservative: the null puts several variances on their boundary"
                if len(added) > 1 else "")
    failed = [label for label, f in (("restricted", small), ("full", big)) if not f.converged]
    if failed:
        note = "; ".join(filter(None, [note, f"UNRELIABLE: the {' and '.join(failed)} fit did not converge"]))
    return LRTest(statistic=statistic, df=df, p_value=float(p), distribution=dist, note=note)
