"""Bayesian estimation by MCMC with the location effects integrated out (docs/architecture.md, "MCMC").

The sampler's target is p(z | y) with z = (β, α, κ, log σ, correlations, η_v) and the
location effects u collapsed exactly (the same per-group likelihood as the ML fit):

    log p(z | y) = Σ_j [log p(y_j | η_v,j; θ) + log φ(η_v,j)] + log p(θ) + const.

Sampler: jittered HMC whose step size, trajectory length and diagonal mass matrix are
tuned by ChEES across many chains run as one vectorised program (BlackJAX's kernel;
the warm-up's loop and trajectory-length floor in ``estimate.chees``), which amortises
XLA's per-operation cost on CPUs. After sampling, each draw's location effects
are drawn exactly from η_u | η_v, y ~ N(M⁻¹c, M⁻¹). Under the quadratic association u
enters the level-1 variance, so η = (η_v, η_u) is sampled with the rest.

Per draw and chain the sampler records, under ArviZ's ``sample_stats`` names:
``acceptance_rate`` (the Metropolis acceptance probability of the trajectory),
``diverging`` (its energy error exceeded 1000), ``n_steps`` (leapfrog steps),
``step_size``, ``lp`` (log p(z | y) up to a constant, at the draw) and ``energy``, the
Hamiltonian −lp + ½ pᵀM⁻¹p of the draw with the momentum it ended with (the proposal's
final momentum if accepted, else the momentum drawn for the trajectory), as Stan's
``energy__`` for E-BFMI.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from melsm.engine import jax_config as _jax  # noqa: F401
from melsm.engine.compiled import bound_maps
from melsm.engine.likelihood import LOG_2PI, conditional_terms, group_factors, log_joint, quadratic_effects
from melsm.estimate import chees
from melsm.estimate.priors import Priors, prior_scales
from melsm.estimate.sample_layout import SampleLayout, log_prior
from melsm.progress import Progress, from_host, relay

log = logging.getLogger(__name__)


def log_density(z, data, scales, sample_layout: SampleLayout, priors: Priors):
    """log p(z | y) up to a constant (module docstring)."""
    params = sample_layout.params(z)
    eta = sample_layout.eta(z)
    return jnp.sum(log_joint(params, data, eta, sample_layout.layout)) + log_prior(
        z, scales, sample_layout, priors)


@partial(jax.jit, static_argnames=("sample_layout", "priors", "n_chains", "n_warmup", "n_draws",
                                   "report_every", "step_size_scale"))
def run_chains(key, z0, data, scales, sample_layout, priors, n_chains, n_warmup, n_draws,
               report_every=0, step_size_scale=1.0, channel=0):
    """ChEES warm-up, then ``n_draws`` iterations of every chain (one compiled program).

    Returns the positions (draws, chains, dim), the per-draw statistics (module
    docstring), each (draws, chains), and the warm-up's λ̂ (``estimate.chees``).
    ``step_size_scale`` multiplies the adapted step size (1: as adapted; the tests use a
    large one to provoke divergences). Every ``report_every`` draws (0: never) a host
    callback reports the iterations done to the reporter relayed under ``channel``
    (``melsm.progress.relay``; a traced number, so one compiled program serves every
    reporter)."""
    import blackjax

    def logdensity(z):
        return log_density(z, data, scales, sample_layout, priors)

    warm_key, sample_key = jax.random.split(key)
    state, params, floor_eigenvalue = chees.warmup(logdensity, warm_key, z0, n_warmup, n_draws)
    params = {**params, "step_size": params["step_size"] * step_size_scale}
    kernel = blackjax.dynamic_hmc(logdensity, **params)

    def one(carry, inputs):
        k, i = inputs
        new, info = jax.vmap(kernel.step)(jax.random.split(k, n_chains), carry)
        if report_every:
            jax.lax.cond((i + 1) % report_every == 0,
                         lambda: jax.debug.callback(from_host, channel, n_warmup + i + 1),
                         lambda: None)
        return new, (new.position, draw_stats(new, info, params))

    steps = (jax.random.split(sample_key, n_draws), jnp.arange(n_draws))
    _, (positions, stats) = jax.lax.scan(one, state, steps)
    return positions, stats, floor_eigenvalue


def draw_stats(state, info, params) -> dict:
    """The per-chain statistics of one transition (module docstring), ArviZ's names."""
    kinetic_start = 0.5 * jnp.sum(info.momentum**2 * params["inverse_mass_matrix"], axis=-1)
    # rejected: the chain stays where it was, with the momentum drawn for the trajectory
    energy = jnp.where(info.is_accepted, info.energy, -state.logdensity + kinetic_start)
    return {"acceptance_rate": info.acceptance_rate, "diverging": info.is_divergent,
            "n_steps": info.num_integration_steps, "lp": state.logdensity, "energy": energy,
            "step_size": jnp.broadcast_to(params["step_size"], info.acceptance_rate.shape)}


@partial(jax.jit, static_argnames=("sample_layout",))
def draw_random_effects(key, z, data, sample_layout: SampleLayout):
    """b_j = (v_j, u_j) for one draw of z: u drawn exactly given η_v and y."""
    layout = sample_layout.layout
    params = sample_layout.params(z)
    theta = layout.theta(params, jnp)
    eta_v = sample_layout.eta(z)
    _, _, L_vv_j, L_uv_j, L_uu_j = group_factors(params, data, layout)
    if layout.association.location_in_scale:  # both effects are sampled: b is a function of the draw
        v, u = quadratic_effects(params, L_vv_j, L_uv_j, L_uu_j, eta_v, layout)
        return jnp.concatenate([v, u], axis=1), theta
    _, mean, cov = conditional_terms(params, data, eta_v, layout)
    if layout.q_u:
        chol = jnp.linalg.cholesky(cov)
        eta_u = mean + jnp.einsum("jab,jb->ja", chol, jax.random.normal(key, mean.shape))
        u = jnp.einsum("juv,jv->ju", L_uv_j, eta_v) + jnp.einsum("jab,jb->ja", L_uu_j, eta_u)
    else:
        u = jnp.zeros((eta_v.shape[0], 0))
    v = jnp.einsum("jab,jb->ja", L_vv_j, eta_v)
    return jnp.concatenate([v, u], axis=1), theta


@partial(jax.jit, static_argnames=("sample_layout",))
def _chain_effects(keys, z, data, sample_layout: SampleLayout):
    """θ (D, P) and b (D, J, q) in user order (``ParamLayout.random_effects``) for one
    chain's draws z (D, dim)."""
    order = np.asarray([idx for _, idx in sample_layout.layout.random_effects()], dtype=int)

    def one(inputs):
        b, theta = draw_random_effects(inputs[0], inputs[1], data, sample_layout)
        return theta, b[:, order]

    return jax.lax.map(one, (keys, z))


def effects_by_chain(model, positions: np.ndarray, sample_layout: SampleLayout, seed: int):
    """θ of every draw (draws, chains, P) and every group's effects b (chains, draws, J, q)
    in user order (``ParamLayout.random_effects``), ArviZ's layout of ``random_effects``.

    One chain at a time into one host array: the draws' effects are the largest thing a
    fit holds (10,000 groups, 16 × 1000 draws, q = 2: 2.6 GB), and a second copy, on the
    device or permuted for ArviZ, would double the peak. Draw (d, c) uses key d·C + c
    of ``split(PRNGKey(seed + 1), D·C)``."""
    n_draws, n_chains, _ = positions.shape
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), n_draws * n_chains).reshape(n_draws, n_chains, -1)
    theta = effects = None
    for chain in range(n_chains):
        t, b = _chain_effects(keys[:, chain], jnp.asarray(positions[:, chain]), model.sampler_data,
                              sample_layout)
        if effects is None:
            theta = np.empty((n_draws, n_chains, t.shape[-1]))
            effects = np.empty((n_chains, *b.shape))
        theta[:, chain], effects[chain] = t, b
    return theta, effects


def sample(model, chains: int = 16, warmup: int = 1000, draws: int = 1000, seed: int = 0,
           priors=None, progress: bool | None = None, start=None, step_size_scale: float = 1.0):
    """Run the sampler; returns (draws of z (draws, chains, dim), its SampleLayout, info).

    ``info`` has the per-draw ``sample_stats`` (each (chains, draws)) and their summaries:
    ``acceptance`` (mean acceptance rate), ``divergences`` (count), ``mean_leapfrog_steps``,
    ``gradients`` (leapfrog steps of the sampling phase, all chains), ``step_size``,
    ``floor_eigenvalue`` (λ̂ of the trajectory-length floor, ``estimate.chees``).
    ``progress``: ``melsm.progress.Progress``'s argument (a bar by default; False: none;
    a callable ``(done, total)``), reported every 1/20 of the draws once warm-up is over."""
    priors = Priors.resolve(priors)
    design, layout = model.design, model.layout
    sample_layout = SampleLayout.for_model(layout, design.n_groups, priors)
    scales = {k: jnp.asarray(v) for k, v in prior_scales(design, layout, priors).items()}
    ml_fit = start if start is not None else model.fit()
    z0 = starting_points(ml_fit, sample_layout, chains, np.random.default_rng(seed))
    key = jax.random.PRNGKey(seed)
    reporter = Progress(progress, total=warmup + draws, desc="MCMC", unit="it")
    report_every = max(1, draws // 20) if reporter.shown else 0
    log.info("MCMC: %d chains x (%d warm-up + %d draws), %d groups", chains, warmup, draws, design.n_groups)
    bound_maps()  # the sampler is a plain jax.jit: bound the memory maps before it compiles
    started = time.perf_counter()
    with reporter, relay(reporter) as channel:
        positions, stats, floor_eigenvalue = run_chains(
            key, jnp.asarray(z0), model.sampler_data, scales, sample_layout, priors, chains, warmup, draws,
            report_every, float(step_size_scale), channel)
        positions = np.asarray(positions)  # every report is in once the draws are
        stats = {name: np.swapaxes(np.asarray(value), 0, 1) for name, value in stats.items()}  # (chain, draw)
    info = {
        "seconds": time.perf_counter() - started,
        "sample_stats": stats,
        "acceptance": float(np.mean(stats["acceptance_rate"])),
        "divergences": int(np.sum(stats["diverging"])),
        "mean_leapfrog_steps": float(np.mean(stats["n_steps"])),
        "gradients": int(np.sum(stats["n_steps"])),
        "step_size": float(np.mean(stats["step_size"])),
        "floor_eigenvalue": float(floor_eigenvalue),
        "priors": priors,
        "chains": chains, "warmup": warmup, "draws": draws, "seed": seed,
    }
    log.info("MCMC done in %.1f s: acceptance %.2f, %d divergences", info["seconds"], info["acceptance"],
             info["divergences"])
    return positions, sample_layout, info


def starting_points(ml_fit, sample_layout: SampleLayout, chains: int, rng) -> np.ndarray:
    """Over-dispersed starts (chains, dim): the ML estimates plus noise of twice their SE
    (β, α, κ), 10% of the SD (SDs: 0.1 on log σ, 0.1·s on signed s), 0.1 (correlations) or
    0.5 (η)."""
    layout = sample_layout.layout
    centre = sample_layout.from_theta(ml_fit.theta, ml_fit.modes)
    se = np.sqrt(np.clip(np.nan_to_num(np.diag(ml_fit.cov_theta), nan=0.01), 1e-6, 1.0))
    jitter_theta = np.full(sample_layout.n_theta, 0.1)
    px, pw, pg, _ = layout.sizes
    jitter_theta[:px + pw + pg] = 2 * se[:px + pw + pg]
    signed = px + pw + pg + np.asarray(sample_layout.signed_entries, int)
    jitter_theta[signed] = 0.1 * centre[signed]
    jitter = np.concatenate([jitter_theta, np.full(sample_layout.n_eta, 0.5)])
    return centre[None] + jitter[None] * rng.normal(size=(chains, sample_layout.size))


@partial(jax.jit, static_argnames=("sample_layout", "n_quad"))
def marginal_group_loglik(z_batch, data, sample_layout: SampleLayout, n_quad: int):
    """log L_j(θ) for each draw in ``z_batch`` (S, dim): both u and v integrated out
    (v by adaptive quadrature, started from the draw's own η_v). Returns (S, J)."""
    from melsm.engine.likelihood import find_nodes, group_loglik
    from melsm.estimate.objective import newton_steps

    layout = sample_layout.layout

    def one(z):
        params = sample_layout.params(z)
        if not layout.n_agq:
            return group_loglik(params, data, None, layout, n_quad)
        nodes = find_nodes(params, data, sample_layout.eta(z), layout, newton_steps(layout),
                           implicit=False)
        return group_loglik(params, data, nodes, layout, n_quad)

    return jax.lax.map(one, z_batch)


def conditional_deviances(b, theta, design, layout, chunk: int = 256) -> np.ndarray:
    """D_s = −2 Σ_ij log N(y_ij; x'β_s + z'u_j,s, exp(w'α_s + s'v_j,s)) for each draw s
    (numpy): ``b`` (S, J, q) random effects in user order (u, then v), ``theta`` (S, P).
    Draws go in chunks, which keeps the (chunk, n_obs, q) effects per row in memory."""
    y, X, W, Zu, Zv, group = design.y, design.X, design.W, design.Zu, design.Zv, design.group
    offset_mean, offset_within = design.row_offsets()
    w = design.row_weights()
    px, pw, _, _ = layout.sizes
    qu = layout.q_u
    out = []
    for start in range(0, theta.shape[0], chunk):
        beta, alpha = theta[start:start + chunk, :px], theta[start:start + chunk, px:px + pw]
        rows = b[start:start + chunk][:, group]  # (C, n_obs, q)
        mean = beta @ X.T + np.einsum("nk,cnk->cn", Zu, rows[:, :, :qu]) + offset_mean
        log_var = alpha @ W.T + np.einsum("nk,cnk->cn", Zv, rows[:, :, qu:]) + offset_within
        out.append(np.sum(w * (LOG_2PI + log_var + (y - mean) ** 2 / np.exp(log_var)), axis=1))
    return np.concatenate(out)
