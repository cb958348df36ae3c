"""Ranking fits by their fit criteria."""

from __future__ import annotations

import pandas as pd

from .errors import MelsmInputError


def compare(*fits, names: list[str] | None = None, by: str | None = None) -> pd.DataFrame:
    """Fit criteria of several fits of the same data, best first.

    Maximum-likelihood fits: log-likelihood, number of parameters, AIC, BIC (default
    ranking: AIC). MCMC fits: conditional DIC as Stat-JR reports it (D̄, p_D), the
    marginal DIC (u and v integrated out), and WAIC and PSIS-LOO by group on the deviance
    scale (default ranking: DIC). Smaller is better for every criterion; ``delta`` is the
    difference from the best.
    """
    if len(fits) < 1:
        raise MelsmInputError("compare needs at least one fit")
    names = list(names) if names is not None else [f"model {k + 1}" for k in range(len(fits))]
    if len(names) != len(fits):
        raise MelsmInputError(f"{len(names)} names for {len(fits)} fits")
    methods = {type(f).__name__ for f in fits}
    if len(methods) > 1:
        raise MelsmInputError("compare fits of one kind: all maximum likelihood or all MCMC")
    n_obs = {f.model.design.n_obs for f in fits}
    if len(n_obs) > 1:
        raise MelsmInputError(f"the fits use different numbers of observations ({sorted(n_obs)})")
    rows = []
    for name, fit in zip(names, fits, strict=True):
        if hasattr(fit, "aic"):
            rows.append({"model": name, "loglik": fit.loglik, "n_params": fit.n_params, "AIC": fit.aic,
                         "BIC": fit.bic, "converged": fit.converged})
        else:
            marginal, waic, loo = fit.marginal_dic(), fit.waic(), fit.loo()
            rows.append({"model": name, "DIC": fit.dic["DIC"], "D_bar": fit.dic["D_bar"], "p_D": fit.dic["p_D"],
                         "marginal_DIC": marginal["DIC"], "marginal_p_D": marginal["p_D"],
                         "WAIC": -2 * float(waic.elpd_waic), "LOO": -2 * float(loo.elpd_loo),
                         "converged": fit.converged})
    table = pd.DataFrame(rows).set_index("model")
    by = by or ("AIC" if "AIC" in table else "DIC")
    if by not in table:
        raise MelsmInputError(f"cannot rank by '{by}'; criteria: {', '.join(c for c in table if c != 'converged')}")
    table = table.sort_values(by)
    table.insert(0, "delta", table[by] - table[by].iloc[0])
    return table
