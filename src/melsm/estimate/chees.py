"""ChEES warm-up whose trajectory-length floor needs no d × d matrix (docs/architecture.md, "MCMC").

The sampler's warm-up is BlackJAX's ChEES adaptation (Hoffman, Radul & Sountsov 2021):
step size by dual averaging, trajectory length L by the ChEES criterion over many
chains, a diagonal mass matrix D from the pooled positions of the last half of warm-up.
ChEES's own L is too short for the location–scale models (it serves the bulk), so the
length each trajectory uses is floored:

    L = max(L_ChEES, π, π/2 · √λ̂),

λ̂ the top eigenvalue of the whitened posterior covariance D^{-1/2} C D^{-1/2}. The jitter
draws each trajectory's length uniformly on (0, L]: L ≥ π makes the mean trajectory a
quarter turn of a unit-variance (whitened) direction, so draws of the bulk are
uncorrelated on average; π/2 · √λ̂ is BlackJAX's floor for the slowest direction. Both
terms bind in practice: 1,000 groups of bench_scale's model have λ̂ ≈ 1 and mix badly
at L = π/2 · √λ̂ (min bulk ESS 621 against 1,436 at L = π); London Model 6 has λ̂ ≈ 11
and gains 22% ESS for twice the gradients at L = π · √λ̂ (bench/README.md).

BlackJAX 1.7 estimates λ_max from a d × d covariance accumulated at
every step: O(d²) memory and work, 800 MB at 10,000 groups, and with fewer window
samples N than coordinates d its λ_max is sampling noise several times the true value
(bench/README.md, "Where the 10,000-group run spends its time"). Here the window keeps a
thinned buffer of positions (at most ``WINDOW_BYTES``) and λ̂ is cross-validated between
two halves A and B of the chains:

    v_A = top eigenvector of Ĉ_A  (power iteration on the buffer, O(N·d) a step),
    λ̂ = ½ (v_Aᵀ Ĉ_B v_A + v_Bᵀ Ĉ_A v_B),

the variance along a direction chosen on independent chains, which noise cannot inflate
(it is at most λ_max in expectation).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

#: Factor of √λ̂ in the trajectory-length floor (module docstring).
FLOOR_FACTOR = math.pi / 2
#: The floor's least value: a unit-variance (whitened) direction's half period.
BULK_LENGTH = math.pi
#: Most bytes the window's buffer of positions may take (float64).
WINDOW_BYTES = 64 * 2**20
#: Steps between refreshes of λ̂ during warm-up, and power iterations at each.
REFRESH_EVERY = 32
POWER_ITERATIONS = 5
FINAL_POWER_ITERATIONS = 20
#: Fraction of warm-up, at the end, whose positions estimate D and λ̂ (as BlackJAX).
WINDOW_FRACTION = 0.5


class Moments(NamedTuple):
    """Pooled count, mean and sum of squared deviations of the window's positions."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


class Window(NamedTuple):
    """The thinned positions of the window (slots, chains, d) and how many are filled."""

    positions: jax.Array
    filled: jax.Array


class Floor(NamedTuple):
    """λ̂ and the two halves' top eigenvectors (warm starts for the next refresh)."""

    lam: jax.Array
    v_a: jax.Array
    v_b: jax.Array


def engagement_threshold(d: int) -> int:
    """Pooled samples before D is used (BlackJAX's rule): max(64, 2√d)."""
    return max(64, int(2 * math.sqrt(d)))


def window_slots(window_steps: int, n_chains: int, d: int) -> tuple[int, int]:
    """(slots, thinning): one slot every ``thinning`` window steps, within WINDOW_BYTES."""
    fit = max(4, WINDOW_BYTES // (8 * n_chains * d))
    thin = max(1, math.ceil(window_steps / fit))
    return max(1, math.ceil(window_steps / thin)), thin


def pool(moments: Moments, batch: jax.Array) -> Moments:
    """Chan's merge of a batch (chains, d) into the pooled moments."""
    n = batch.shape[0]
    b_mean = batch.mean(axis=0)
    b_m2 = jnp.sum((batch - b_mean) ** 2, axis=0)
    count = moments.count + n
    delta = b_mean - moments.mean
    mean = moments.mean + delta * n / count
    m2 = moments.m2 + b_m2 + delta**2 * moments.count * n / count
    return Moments(count, mean, m2)


def diagonal(moments: Moments, threshold: int) -> jax.Array:
    """D: the pooled variances once ``threshold`` samples are in, ones before."""
    var = moments.m2 / jnp.maximum(moments.count - 1.0, 1.0)
    return jnp.where(moments.count >= threshold, jnp.maximum(var, 1e-12), 1.0)


def centred(positions: jax.Array, filled: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One half's positions (slots, chains, d), whitened and centred over the filled slots
    (the others zero), and how many there are."""
    weight = jnp.broadcast_to(filled[:, None], positions.shape[:2]).astype(float)
    n = jnp.sum(weight)
    mean = jnp.einsum("sc,scd->d", weight, positions) / jnp.maximum(n, 1.0)
    return (positions - mean) / scale * weight[..., None], n


def variance_along(x: jax.Array, n: jax.Array, v: jax.Array) -> jax.Array:
    """vᵀ Ĉ v for the centred rows x: ‖x v‖² / (n − 1)."""
    return jnp.sum(jnp.einsum("scd,d->sc", x, v) ** 2) / jnp.maximum(n - 1.0, 1.0)


def top_direction(x: jax.Array, v: jax.Array, iterations: int) -> jax.Array:
    """Power iteration v ← Ĉ v / ‖Ĉ v‖ on the centred rows x, warm-started at v."""

    def step(_, v):
        w = jnp.einsum("sc,scd->d", jnp.einsum("scd,d->sc", x, v), x)
        norm = jnp.linalg.norm(w)
        return w / jnp.where(norm > 0.0, norm, 1.0)

    return jax.lax.fori_loop(0, iterations, step, v)


def refresh(window: Window, inverse_mass: jax.Array, floor: Floor, iterations: int) -> Floor:
    """λ̂ = ½ (v_Aᵀ Ĉ_B v_A + v_Bᵀ Ĉ_A v_B) (module docstring), whitened by D."""
    scale = jnp.sqrt(inverse_mass)
    slots, chains = window.positions.shape[:2]  # chains ≥ 2 (``Model.sample`` checks)
    filled = jnp.arange(slots) < window.filled
    x_a, n_a = centred(window.positions[:, : chains // 2], filled, scale)
    x_b, n_b = centred(window.positions[:, chains // 2 :], filled, scale)
    v_a = top_direction(x_a, floor.v_a, iterations)
    v_b = top_direction(x_b, floor.v_b, iterations)
    lam = 0.5 * (variance_along(x_b, n_b, v_a) + variance_along(x_a, n_a, v_b))
    return Floor(jnp.maximum(lam, 1e-6), v_a, v_b)


def floored(length: jax.Array, floor: Floor, engaged: jax.Array, cap: jax.Array) -> jax.Array:
    """The length a trajectory uses: min(max(L, π, π/2·√λ̂), cap), the floor once D is engaged."""
    bound = jnp.where(engaged, jnp.maximum(BULK_LENGTH, FLOOR_FACTOR * jnp.sqrt(floor.lam)), 0.0)
    return jnp.minimum(jnp.maximum(length, bound), cap)


class Carry(NamedTuple):
    """What each warm-up step passes to the next."""

    states: object
    adaptation: object
    moments: Moments
    window: Window
    floor: Floor


def warmup(logdensity, key: jax.Array, z0: jax.Array, n_steps: int, max_sampling_steps: int,
           step_size: float = 0.05, learning_rate: float = 0.05,
           max_leapfrog_steps: int = 1000) -> tuple[object, dict, jax.Array]:
    """ChEES warm-up of the chains started at z0 (chains, d) (module docstring).

    Returns the last states, the jittered-HMC parameters (``blackjax.dynamic_hmc``'s
    keyword arguments, as BlackJAX's ``chees_adaptation``) and λ̂."""
    import optax
    from blackjax.adaptation.chees_adaptation import OPTIMAL_TARGET_ACCEPTANCE_RATE, base
    from blackjax.mcmc import dynamic_hmc

    n_chains, d = z0.shape
    start = int((1.0 - WINDOW_FRACTION) * n_steps)
    slots, thin = window_slots(n_steps - start, n_chains, d)
    threshold = engagement_threshold(d)
    max_bits = math.ceil(math.log2(n_steps + max_sampling_steps))

    def next_arg(i):
        return i + 1

    def jitter(i):
        return dynamic_hmc.halton_sequence(i, max_bits)

    def integration_steps(i, n):
        return jnp.asarray(jnp.ceil(jitter(i) * n), dtype=int)

    kernel = dynamic_hmc.build_kernel(next_random_arg_fn=next_arg, integration_steps_fn=integration_steps)
    init, update = base(jitter, next_arg, optax.adam(learning_rate), OPTIMAL_TARGET_ACCEPTANCE_RATE,
                        0.5, max_leapfrog_steps)

    def one_step(carry: Carry, inputs):
        key, i = inputs
        inverse_mass = diagonal(carry.moments, threshold)
        engaged = carry.moments.count >= threshold
        adapt = carry.adaptation
        # floored where the length is used, never fed back into ChEES's own state (as BlackJAX)
        length = floored(adapt.trajectory_length, carry.floor, engaged,
                         max_leapfrog_steps * adapt.step_size)
        step = jax.vmap(lambda k, s: kernel(k, s, logdensity, adapt.step_size, inverse_mass,
                                            (length / adapt.step_size,)))
        states, info = step(jax.random.split(key, n_chains), carry.states)
        adaptation = update(adapt, info.proposal.position, info.proposal.momentum,
                            carry.states.position, info.acceptance_rate, info.is_divergent,
                            inverse_mass)
        in_window = i >= start
        moments = jax.lax.cond(in_window, pool, lambda m, _: m, carry.moments, states.position)
        window = stored(carry.window, states.position, i - start, thin, in_window)
        floor = jax.lax.cond(in_window & engaged & ((i - start) % REFRESH_EVERY == 0),
                             lambda f: refresh(window, inverse_mass, f, POWER_ITERATIONS),
                             lambda f: f, carry.floor)
        return Carry(states, adaptation, moments, window, floor), None

    states = jax.vmap(lambda z: dynamic_hmc.init(z, logdensity, 0))(z0)
    unit = jnp.ones(d) / math.sqrt(d)
    carry = Carry(states, init(0, step_size), Moments(jnp.zeros(()), jnp.zeros(d), jnp.zeros(d)),
                  Window(jnp.zeros((slots, n_chains, d)), jnp.zeros((), dtype=int)),
                  Floor(jnp.ones(()), unit, unit))
    carry, _ = jax.lax.scan(one_step, carry, (jax.random.split(key, n_steps), jnp.arange(n_steps)))
    params, lam = final_parameters(carry, threshold, max_leapfrog_steps, integration_steps, next_arg)
    return carry.states, params, lam


def stored(window: Window, positions: jax.Array, offset: jax.Array, thin: int,
           in_window: jax.Array) -> Window:
    """The window with this step's positions in their slot when the step is a thinned one."""
    keep = in_window & (offset % thin == 0)
    slot = jnp.clip(offset // thin, 0, window.positions.shape[0] - 1)
    new = jnp.where(keep, positions, window.positions[slot])
    return Window(window.positions.at[slot].set(new), window.filled + keep.astype(int))


def final_parameters(carry: Carry, threshold: int, max_leapfrog_steps: int, integration_steps,
                     next_arg) -> tuple[dict, jax.Array]:
    """The sampling phase's parameters (moving-average step size, floored length), and λ̂."""
    inverse_mass = diagonal(carry.moments, threshold)
    floor = refresh(carry.window, inverse_mass, carry.floor, FINAL_POWER_ITERATIONS)
    step_size = jnp.exp(carry.adaptation.log_step_size_moving_average)
    length = floored(jnp.exp(carry.adaptation.log_trajectory_length_moving_average), floor,
                     carry.moments.count >= threshold, max_leapfrog_steps * step_size)
    return {"step_size": step_size, "inverse_mass_matrix": inverse_mass,
            "next_random_arg_fn": next_arg, "integration_steps_fn": integration_steps,
            "integration_steps_params": (length / step_size,)}, floor.lam
