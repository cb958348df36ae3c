"""The ArviZ InferenceData of a Bayesian fit (docs/architecture.md, 'MCMC').

Groups, all with ArviZ's ``chain`` and ``draw`` dimensions where they have draws:

- ``posterior``: one variable per reported parameter, named as in ``fit.names``, and
  ``random_effects`` (chain, draw, group, effect), the groups' effects (v_j, u_j) in the
  user's order. ``group`` holds the data's own group labels with their dtype (ints stay
  ints), ``effect`` the effects' names.
- ``sample_stats``: the sampler's per-draw statistics (``melsm.estimate.mcmc``).
- ``log_likelihood``: ``y_group`` (chain, draw, group), log p(y_j | θ) of each group's
  responses with u_j and v_j integrated out, at every draw (the unit of WAIC and LOO is
  the group). Computed on first access (``MelsmInferenceData``).
- ``observed_data``: ``y`` (row), the response in the caller's row order (rows dropped
  for missing values left out), ``row`` the data frame's index labels of those rows.
- ``constant_data``: ``group_index`` (row), each row's position in ``group``; the design
  matrices ``X`` (row, mean_term), ``W`` (row, within_term) and ``Z`` (row, effect: the
  random effects' covariates, the columns of Zu for mean effects and of Zv for within
  effects); ``G`` (group, between_coef) with level-2 functions; ``offset_mean``,
  ``offset_within`` and ``weights`` (row) where the model has them.
- ``posterior_predictive`` (``fit.ppc``): ``y`` (chain, draw, row) replicated at the
  draws, y_rep ~ N(x'β_s + z'u_s,j, exp(w'α_s + s'v_s,j)).
- ``prior``, ``prior_predictive`` (``fit.sample_prior``): exact draws from the prior
  (``melsm.results.prior_draws``) and y_rep at them.
"""

from __future__ import annotations

import arviz as az
import jax.numpy as jnp
import numpy as np
import pandas as pd

from melsm.estimate.mcmc import marginal_group_loglik

#: Rows of z per call of the marginal log-likelihood: every call has this shape (the last
#: chunk padded), so one compiled program serves all draws and every thinning of them, and
#: a draw's value does not depend on which call computed it.
LOGLIK_CHUNK = 128
#: Draws per block when replicating the response (bounds the (block, rows, q) effects).
REPLICATE_CHUNK = 256


class MelsmInferenceData(az.InferenceData):
    """``az.InferenceData`` with groups computed on first access (docs/architecture.md,
    'MCMC'): ``lazy`` maps a group's name to a loader returning its ``xarray.Dataset``.
    The group is listed at once (``groups()``, ``in``) and its loader runs when anything
    reads it: ``az.loo``, ``az.waic``, ``az.compare``, ``to_netcdf``, the notebook display."""

    def __init__(self, lazy: dict | None = None, **groups):
        super().__init__(**groups)
        self._lazy = dict(lazy or {})
        self._groups.extend(name for name in self._lazy if name not in self._groups)

    def __getattr__(self, name: str):
        lazy = self.__dict__.get("_lazy")
        if not lazy or name not in lazy:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        loader = lazy.pop(name)
        try:
            dataset = loader()
        except AttributeError as err:  # hasattr() would read it as "no such group"
            lazy[name] = loader
            raise RuntimeError(f"computing the {name} group failed: {err}") from err
        object.__setattr__(self, name, dataset)
        return dataset

    def __delattr__(self, name: str) -> None:
        if name in self.__dict__.get("_lazy", {}):  # deleted before it was computed
            del self._lazy[name]
            self._groups.remove(name)
            return
        super().__delattr__(name)


class FitLoader:
    """A picklable loader: ``getattr(fit, method)()``. Copies of the InferenceData (ArviZ's
    ``sel``, ``isel``, ... deep-copy it) share it rather than copying the fit."""

    def __init__(self, fit, method: str):
        self.fit, self.method = fit, method

    def __call__(self):
        return getattr(self.fit, self.method)()

    def __deepcopy__(self, memo):
        return self


def thinning_step(n_draws: int, n_chains: int, max_draws: int | None) -> int:
    """Keep every step-th draw of each chain so that at most ``max_draws`` remain in all
    (None: every draw)."""
    if max_draws is None:
        return 1
    return max(1, int(np.ceil(n_draws * n_chains / max_draws)))


def caller_order(design) -> np.ndarray:
    """Positions of the design's rows (sorted by group) in the caller's row order."""
    return np.argsort(design.row_order, kind="stable")


def row_labels(design) -> np.ndarray:
    """The data frame's index labels of the used rows, in the caller's order (positions
    for a MultiIndex, which is no coordinate)."""
    order = caller_order(design)
    if isinstance(design.row_index, pd.MultiIndex):
        return np.asarray(design.row_order)[order]
    return np.asarray(design.row_index)[order]


def marginal_rows(rows: np.ndarray, data, sample_layout, n_quad: int) -> np.ndarray:
    """log L_j(θ) (S, J) at each row of z (S, dim), u and v integrated out
    (``melsm.estimate.mcmc.marginal_group_loglik``), in chunks of ``LOGLIK_CHUNK`` rows."""
    n = rows.shape[0]
    padded = np.concatenate([rows, np.repeat(rows[-1:], (-n) % LOGLIK_CHUNK, axis=0)])
    out = [np.asarray(marginal_group_loglik(jnp.asarray(padded[start:start + LOGLIK_CHUNK]), data,
                                            sample_layout, n_quad))
           for start in range(0, padded.shape[0], LOGLIK_CHUNK)]
    return np.concatenate(out)[:n]


def marginal_loglik(fit, draws: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``MCMCResults._marginal_loglik``: (C, D', J) at every step-th draw of each chain
    (``thinning_step``) and (J,) at the posterior mean of z, kept in ``fit._marginal`` by
    step; a thinning of draws already computed is sliced from them."""
    from melsm.estimate.ml import default_quadrature

    n_draws, n_chains, dim = fit._positions.shape
    step = thinning_step(n_draws, n_chains, draws)
    if step not in fit._marginal and 1 in fit._marginal:
        every, at_mean = fit._marginal[1]
        fit._marginal[step] = (every[:, ::step], at_mean)
    if step not in fit._marginal:
        kept = fit._positions[::step]  # (D', C, dim)
        z_mean = fit._positions.reshape(-1, dim).mean(axis=0)
        rows = np.concatenate([kept.reshape(-1, dim), z_mean[None]])  # the mean as one more row
        values = marginal_rows(rows, fit.model.sampler_data, fit._sample_layout, default_quadrature(fit.model.layout))
        per_draw = values[:-1].reshape(kept.shape[0], n_chains, -1)
        fit._marginal[step] = (np.swapaxes(per_draw, 0, 1), values[-1])
    return fit._marginal[step]


def criteria_data(fit, draws: int | None):
    """An InferenceData for WAIC and LOO on at most ``draws`` draws: ``fit.idata`` itself
    for every draw, else its posterior and log-likelihood thinned alike (every step-th
    draw of each chain), so that ArviZ's relative efficiency (posterior ESS over the
    number of draws) is that of the draws used."""
    step = thinning_step(*fit._positions.shape[:2], draws)
    if step == 1:
        return fit.idata
    draw_index = np.arange(0, fit._positions.shape[0], step)
    return az.InferenceData(posterior=fit.idata.posterior.isel(draw=slice(None, None, step)),
                            log_likelihood=loglik_dataset(marginal_loglik(fit, draws)[0], fit.model.design, draw_index))


def _draw_coords(draw_index) -> dict:
    return {} if draw_index is None else {"draw": np.asarray(draw_index)}


def posterior_data(fit, values: np.ndarray, effects: list[str]) -> dict:
    """The groups of a fit's InferenceData that come with it: ``posterior`` (from the
    reported values (draws, chains, P) and ``fit.effect_draws``, shared, not copied), ``sample_stats``,
    ``observed_data`` and ``constant_data`` (module docstring), as ``xarray`` datasets."""
    design = fit.model.design
    posterior = {name: values[:, :, k].T for k, name in enumerate(fit.names)}
    posterior["random_effects"] = fit.effect_draws
    observed, constant, coords, dims = data_variables(design, fit.model.layout, effects)
    idata = az.from_dict(posterior=posterior, sample_stats=fit.info["sample_stats"], observed_data=observed,
                         constant_data=constant, coords={**coords, "effect": effects},
                         dims={"random_effects": ["group", "effect"], **dims},
                         attrs={"inference_library": "melsm", "response": design.response,
                                **({"group_name": design.group_name} if design.group_name else {})})
    return {group: getattr(idata, group) for group in idata.groups()}


def data_variables(design, layout, effects: list[str]) -> tuple[dict, dict, dict, dict]:
    """``observed_data`` and ``constant_data`` variables in the caller's row order, with
    their coordinates and dimensions (module docstring)."""
    order = caller_order(design)
    internal = np.concatenate([design.Zv, design.Zu], axis=1)  # the effects' covariates, internal order
    constant = {"group_index": design.group[order], "X": design.X[order], "W": design.W[order]}
    if effects:
        constant["Z"] = internal[order][:, [idx for _, idx in layout.random_effects()]]
    dims = {"y": ["row"], "group_index": ["row"], "X": ["row", "mean_term"], "W": ["row", "within_term"],
            "Z": ["row", "effect"]}
    coords = {"row": row_labels(design), "group": np.asarray(design.group_labels),
              "mean_term": list(design.x_names), "within_term": list(design.w_names)}
    for name, values in (("offset_mean", design.offset_mean), ("offset_within", design.offset_within),
                         ("weights", design.weights)):
        if values is not None:
            constant[name] = values[order]
            dims[name] = ["row"]
    if design.G.shape[1]:
        constant["G"] = design.G
        dims["G"] = ["group", "between_coef"]
        coords["between_coef"] = list(design.g_names)
    return {"y": design.y[order]}, constant, coords, dims


def loglik_dataset(per_draw: np.ndarray, design, draw_index=None):
    """The ``log_likelihood`` group: ``y_group`` (chain, draw, group) from (C, D, J)."""
    idata = az.from_dict(log_likelihood={"y_group": per_draw},
                         coords={"group": np.asarray(design.group_labels), **_draw_coords(draw_index)},
                         dims={"y_group": ["group"]})
    return idata.log_likelihood


def replicate_response(theta: np.ndarray, b: np.ndarray, design, layout, rng) -> np.ndarray:
    """y_rep (C, D, N) in the caller's row order from θ draws (D, C, P) and the groups'
    effects (C, D, J, q) in user order (u, then v): y_rep ~ N(x'β + z'u_j + o_m, exp(w'α + s'v_j +
    o_w)) with the rows' offsets o (0 without), one normal deviate per draw and row (the
    means and variances of ``ParamLayout.predictors``; a weighted row is one replicate)."""
    order = caller_order(design)
    X, W, Zu, Zv, group = (design.X[order], design.W[order], design.Zu[order], design.Zv[order],
                           design.group[order])
    offset_mean, offset_within = (offset[order] for offset in design.row_offsets())
    px, pw, _, _ = layout.sizes
    qu = layout.q_u
    n_draws, n_chains = theta.shape[:2]
    out = np.empty((n_chains, n_draws, X.shape[0]))
    for chain in range(n_chains):
        for start in range(0, n_draws, REPLICATE_CHUNK):
            t = theta[start:start + REPLICATE_CHUNK, chain]
            rows = b[chain, start:start + REPLICATE_CHUNK][:, group]  # (S, N, q)
            mean = t[:, :px] @ X.T + np.einsum("nk,snk->sn", Zu, rows[:, :, :qu]) + offset_mean
            log_var = t[:, px:px + pw] @ W.T + np.einsum("nk,snk->sn", Zv, rows[:, :, qu:]) + offset_within
            noise = rng.standard_normal(mean.shape)
            out[chain, start:start + t.shape[0]] = mean + np.exp(0.5 * log_var) * noise
    return out


def response_dataset(y_rep: np.ndarray, design, group: str, draw_index=None):
    """A ``posterior_predictive`` or ``prior_predictive`` group: ``y`` (chain, draw, row)."""
    idata = az.from_dict(**{group: {"y": y_rep}}, coords={"row": row_labels(design), **_draw_coords(draw_index)},
                         dims={"y": ["row"]})
    return getattr(idata, group)


def posterior_predictive_group(fit, draws: int | None, rng):
    """``posterior_predictive`` at every step-th draw of each chain (``thinning_step``)."""
    step = thinning_step(*fit._positions.shape[:2], draws)
    y_rep = replicate_response(fit.theta_draws[::step], fit.effect_draws[:, ::step], fit.model.design,
                               fit.model.layout, rng)
    draw_index = np.arange(0, fit._positions.shape[0], step)
    return response_dataset(y_rep, fit.model.design, "posterior_predictive", draw_index)


def prior_groups(fit, theta: np.ndarray, b: np.ndarray, reported: np.ndarray, rng) -> dict:
    """``prior`` (the reported parameters and ``random_effects``, one chain) and
    ``prior_predictive`` (``y``) from prior draws: θ (S, P), the groups' effects
    (S, J, q) in internal order, the reported values (S, P')."""
    design, layout = fit.model.design, fit.model.layout
    order = [idx for _, idx in layout.random_effects()]
    prior = {name: reported[None, :, k] for k, name in enumerate(fit.names)}
    prior["random_effects"] = b[None][..., order]
    idata = az.from_dict(prior=prior, coords={"group": np.asarray(design.group_labels),
                                              "effect": [str(effect) for effect, _ in layout.random_effects()]},
                         dims={"random_effects": ["group", "effect"]})
    y_rep = replicate_response(theta[:, None], prior["random_effects"], design, layout, rng)
    return {"prior": idata.prior, "prior_predictive": response_dataset(y_rep, design, "prior_predictive")}


def replace_group(idata, name: str, dataset) -> None:
    """Add group ``name`` to ``idata``, replacing one already there."""
    if name in idata.groups():
        delattr(idata, name)
    idata.add_groups({name: dataset})
