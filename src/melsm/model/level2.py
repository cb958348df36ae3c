"""The level-2 ("between") design: one row per group for every level-2 function of the
model's random-effect variances and correlations (docs/architecture.md, 'Parameters')."""

from __future__ import annotations

import numpy as np

from melsm.errors import MelsmInputError
from melsm.model.checks import as_written, check_finite, check_rank, checked_matrix
from melsm.model.grammar import quote
from melsm.model.spec import LOCATION_INTERCEPT


def correlation_functions(functions: dict, zu_names, zv_names) -> list[tuple[str, str]]:
    """With any correlation function: one for every pair of random effects, in the order
    of the canonical partial correlations (internal order: scale effects, then location
    effects); the pairs not given one are constant ("~ 1")."""
    given = {k: v for k, v in functions.items() if k.startswith("corr:")}
    if not given:
        return []
    effects = [f"within:{n}" for n in zv_names] + [f"mean:{n}" for n in zu_names]
    pairs = ["corr:" + ",".join(sorted((effects[i], effects[j]))) for i in range(len(effects)) for j in range(i)]
    unknown = [k for k in given if k not in pairs]
    if unknown:
        raise MelsmInputError(f"a correlation function ({unknown[0]}) needs a pair of the model's random effects; "
                              f"the pairs are {', '.join(p.removeprefix('corr:') for p in pairs) or 'none'}")
    return [(pair, given.get(pair, "~ 1")) for pair in pairs]


def between_design(spec, frame, codes, labels, n_groups, zu_names, zv_names):
    """G (J, p_g) of every level-2 function side by side, the coefficient names, and
    (effect, first column, end column) of each function. The random location
    intercept's coefficients are named by covariate (``endog``), the others
    ``<part>:<effect term>:<covariate>`` (``within:Intercept:endog``)."""
    blocks, names, functions, start = [], [], [], 0
    # location effects' functions first: the fit without scale effects uses a prefix of κ
    given = dict(spec.between or ())
    variance_functions = sorted((item for item in given.items() if not item[0].startswith("corr:")),
                                key=lambda item: item[0].startswith("within:"))
    for effect, text in variance_functions + correlation_functions(given, zu_names, zv_names):
        part, term = effect.split(":", 1)
        random_names = zu_names if part == "mean" else zv_names
        if part != "corr" and term not in random_names:  # pairs are checked by _correlation_functions
            raise MelsmInputError(
                f"a between formula for {effect} needs {term} among the random effects of the {part} formula"
                f" (random: {', '.join(random_names) or 'none'})")
        label = "between" if effect == LOCATION_INTERCEPT else f"between ({effect})"
        G_rows, covariates = checked_matrix(text, frame, label)
        check_finite(G_rows, covariates, label)
        first = np.searchsorted(codes, np.arange(n_groups))
        G = G_rows[first]
        varies = np.abs(G_rows - G[codes]).max(axis=0) > 1e-12 * (1 + np.abs(G_rows).max(axis=0))
        if np.any(varies):
            k = int(np.argmax(varies))
            bad = int(codes[np.argmax(np.abs(G_rows - G[codes])[:, k])])
            values = G_rows[codes == bad, k]
            where = "" if effect == LOCATION_INTERCEPT else f" (function of {effect})"
            raise MelsmInputError(
                f"between covariate {quote(covariates[k])}{where} varies within group {as_written(labels[bad])} of "
                f"{quote(spec.group)} (from {values.min():g} to {values.max():g}); "
                "level-2 covariates must be constant within each group"
            )
        check_rank(G, covariates, label)
        blocks.append(G)
        names += covariates if effect == LOCATION_INTERCEPT else [f"{effect}:{c}" for c in covariates]
        functions.append((effect, start, start + len(covariates)))
        start += len(covariates)
    G = np.concatenate(blocks, axis=1) if blocks else np.zeros((n_groups, 0))
    return G, names, functions
