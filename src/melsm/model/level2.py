"""The level-2 ("between") design: one row per group for every level-2 function of the
model's random-effect variances and correlations (docs/architecture.md, 'Parameters')."""

from __future__ import annotations

import numpy as np

from melsm.errors import MelsmInputError
from melsm.model.checks import as_written, check_finite, check_rank, checked_model_matrix
from melsm.model.grammar import quote
from melsm.model.names import LOCATION_INTERCEPT, Coef, Effect, Pair, target_name


def correlation_functions(functions: dict, zu_names, zv_names) -> list[tuple[Pair, str]]:
    """With any correlation function: one for every pair of random effects, in the order
    of the canonical partial correlations (internal order: scale effects, then location
    effects); the pairs not given one are constant ("~ 1")."""
    given = {k: v for k, v in functions.items() if isinstance(k, Pair)}
    if not given:
        return []
    effects = [Effect("within", n) for n in zv_names] + [Effect("mean", n) for n in zu_names]
    pairs = [Pair.of(effects[i], effects[j]) for i in range(len(effects)) for j in range(i)]
    unknown = [k for k in given if k not in pairs]
    if unknown:
        shown = ", ".join(str(p) for p in pairs) or "none"
        raise MelsmInputError(f"a correlation function ({target_name(unknown[0])}) needs a pair of the model's "
                              f"random effects; the pairs are {shown}")
    return [(pair, given.get(pair, "~ 1")) for pair in pairs]


def between_design(spec, frame, codes, labels, n_groups, zu_names, zv_names):
    """G (J, p_g) of every level-2 function side by side, its coefficients (``Coef``:
    printed ``endog`` for the random location intercept's, ``<effect>:<covariate>`` such as
    ``within:Intercept:endog`` for the others), (target, first column, end column) of each
    function, and each function's formulaic ``ModelSpec`` (for new data)."""
    blocks, coefs, functions, specs, start = [], [], [], [], 0
    # location effects' functions first: the fit without scale effects uses a prefix of κ
    given = dict(spec.between or ())
    variance_functions = sorted((item for item in given.items() if isinstance(item[0], Effect)),
                                key=lambda item: item[0].part == "within")
    for effect, text in variance_functions + correlation_functions(given, zu_names, zv_names):
        if isinstance(effect, Effect):  # pairs are checked by correlation_functions
            random_names = zu_names if effect.part == "mean" else zv_names
            if effect.term not in random_names:
                raise MelsmInputError(
                    f"a between formula for {effect} needs {effect.term} among the random effects of the "
                    f"{effect.part} formula (random: {', '.join(random_names) or 'none'})")
        label = "between" if effect == LOCATION_INTERCEPT else f"between ({target_name(effect)})"
        G_rows, covariates, model_spec = checked_model_matrix(text, frame, label)
        check_finite(G_rows, covariates, label)
        first = np.searchsorted(codes, np.arange(n_groups))
        G = G_rows[first]
        varies = np.abs(G_rows - G[codes]).max(axis=0) > 1e-12 * (1 + np.abs(G_rows).max(axis=0))
        if np.any(varies):
            k = int(np.argmax(varies))
            bad = int(codes[np.argmax(np.abs(G_rows - G[codes])[:, k])])
            values = G_rows[codes == bad, k]
            where = "" if effect == LOCATION_INTERCEPT else f" (function of {target_name(effect)})"
            raise MelsmInputError(
                f"between covariate {quote(covariates[k])}{where} varies within group {as_written(labels[bad])} of "
                f"{quote(spec.group)} (from {values.min():g} to {values.max():g}); "
                "level-2 covariates must be constant within each group"
            )
        check_rank(G, covariates, label)
        blocks.append(G)
        coefs += [Coef(effect, c) for c in covariates]
        functions.append((effect, start, start + len(covariates)))
        specs.append(model_spec)
        start += len(covariates)
    G = np.concatenate(blocks, axis=1) if blocks else np.zeros((n_groups, 0))
    return G, coefs, functions, specs
