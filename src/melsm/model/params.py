"""Parameter layout: the unconstrained vector θ the optimiser sees, and the reported scale.

θ = (β, α, κ, chol). The random effects b_j = (v_j, u_j) (scale effects first, as in
docs/architecture.md, "Parameters") have covariance Σ = L Lᵀ with L lower triangular; ``chol`` holds the free
entries of L, diagonal entries on the log scale. ``association="none"`` fixes the
block of L linking u to v at zero, which makes the location and scale blocks independent.

With level-2 (``between``) functions, the row of L of each random effect k that has one
is a direction only (its raw diagonal is fixed at 1 and the row is normalised to unit
length) and its length is the group's SD, σ_k,j = exp(½ g_jᵀκ_k). So Σ_j = S_j L Lᵀ S_j
with S_j = diag(1, .., σ_k,j, .., 1), which is positive definite for every group, and the
correlations are the same in every group, as in MIXREGLS' linear association.

Correlation functions: with any, the correlations are parameterised by canonical partial
correlations (CPCs, as in the LKJ construction), each a level-2 function
z_ik,j = tanh(g_jᵀδ_ik) (intercept only for the pairs not given one). Each group's factor
is L_j = diag(σ_j) C_j with C_j built from its CPCs: C_ik = z_ik √(1 − Σ_{m<k} C_im²),
C_ii the rest of row i's unit length. Any δ gives a positive definite Σ_j. In internal
order (scale effects first, then location effects) the pairs in the first column have
z = ρ, so with one location and one scale effect atanh ρ_j = g_jᵀδ exactly; other pairs'
z are partial correlations. The raw diagonal entries of L are then log SDs (or fixed, for
an effect with a variance function) and no off-diagonal entry is free. δ sits in κ,
named ``between:corr:<effect>,<effect>:<covariate>``.

Quadratic association (MIXREGLS): with one random location effect u and one random scale
effect v, the scale effect is v_j = b_v,j + τ_q θ1_j², θ1_j = b_u,j / σ_u,j, where b_j = (b_v, b_u)
~ N(0, Σ_j) is parameterised as above and u_j = b_u,j. In MIXREGLS' terms
v = τ_l θ1 + τ_q θ1² + σ θ2 with τ_l = ρ σ_bv and σ = σ_bv √(1 − ρ²); τ_q = 0 is the
linear association (a free correlation). τ_q is the last entry of θ, reported as
``assoc:quadratic``; ``sd:within:<term>`` is then the SD of the linear part b_v.

Reported scale: β, α, κ as they are; random-effect SDs sqrt(Σ_rr); correlations
Σ_rs / sqrt(Σ_rr Σ_ss). Names follow ``mean:<term>``, ``within:<term>``,
``between:<term>``, ``sd:<part>:<term>``, ``corr:<part>:<term>,<part>:<term>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from melsm.model.association import Association
from melsm.model.names import Coef, Effect, Function, Pair, ParamName, parse_effect
from melsm.model.transforms import corr_cholesky

#: A correlation within this of ±1 is reported on the boundary (Σ nearly singular).
CORRELATION_BOUNDARY = 1e-3


class Params(NamedTuple):
    """The model's parameters in structured form, a JAX pytree (docs/architecture.md,
    'Parameters'). The likelihood takes it directly; the optimiser's θ
    (``ParamLayout.params``/``ParamLayout.theta``) and the sampler's z
    (``melsm.estimate.priors.SampleLayout``) are two bijections onto it.

    ``chol`` is the shared factor L of Σ = L Lᵀ (internal order: scale effects, then
    location effects). A row with a level-2 variance function is a unit-length direction
    (its length is the group's SD from κ); under correlation functions L = diag(σ) C with
    C the CPC factor at g = 0 (``ParamLayout.group_cholesky`` gives each group's).
    """

    beta: Any  # (p_x,) mean function
    alpha: Any  # (p_w,) log level-1 variance function
    kappa: Any  # (p_g,) level-2 functions: log variances and atanh CPCs
    chol: Any  # (q, q) L
    assoc: Any  # (n_assoc,) τ_q under the quadratic association, else empty


def level2_row(g_coefs, covariates: dict) -> np.ndarray:
    """A row of G for a group whose level-2 covariates are ``covariates`` (name → value,
    missing ones 0): 1 for each function's intercept."""
    return np.array([1.0 if c.is_intercept else float(covariates.get(c.covariate, 0.0)) for c in g_coefs])


@dataclass(frozen=True)
class ParamLayout:
    """Where each parameter sits in θ. Hashable, so it can be a static JAX argument."""

    x_names: tuple[str, ...]
    w_names: tuple[str, ...]
    g_coefs: tuple[Coef, ...]
    zu_names: tuple[str, ...]
    zv_names: tuple[str, ...]
    association: Association = Association.CORRELATED
    #: (target ``Effect`` or ``Pair``, first, end index in κ and G) per level-2 function
    g_functions: tuple[tuple[Function, int, int], ...] = ()
    #: Parts ("mean", "within") whose random effects are uncorrelated with every other
    #: random effect ('||'): their off-diagonal entries of L, in row and column, are 0.
    uncorrelated: tuple[str, ...] = ()

    @property
    def g_names(self) -> tuple[str, ...]:
        """The level-2 coefficients' printed names (``endog``, ``within:Intercept:endog``)."""
        return tuple(str(c) for c in self.g_coefs)

    @property
    def q_u(self) -> int:
        return len(self.zu_names)

    @property
    def q_v(self) -> int:
        return len(self.zv_names)

    @property
    def q(self) -> int:
        return self.q_u + self.q_v

    @property
    def n_agq(self) -> int:
        """Dimension of the adaptive quadrature: the scale effects, and under the quadratic
        association the location effect as well (it then enters v non-linearly)."""
        return self.association.integration_dims(self.q_u, self.q_v)

    @property
    def n_assoc(self) -> int:
        """Association coefficients after the Cholesky entries in θ: τ_q, or none."""
        return self.association.n_params

    def row_of(self, effect: Effect | str) -> int:
        """Internal row of L of a random effect (or of its printed name, ``within:Intercept``)."""
        effect = parse_effect(effect) if isinstance(effect, str) else effect
        if effect.part == "mean":
            return self.q_v + self.zu_names.index(effect.term)
        return self.zv_names.index(effect.term)

    @property
    def function_rows(self) -> tuple[tuple[int, int, int], ...]:
        """(row of L, first, end index in κ and G) for each level-2 variance function."""
        return tuple((self.row_of(effect), a, b) for effect, a, b in self.g_functions
                     if isinstance(effect, Effect))

    @property
    def corr_functions(self) -> tuple[tuple[int, int, int, int], ...]:
        """(row i, column j < i, first, end index in κ and G) of each correlation function:
        with any, every pair of correlated effects has one (a constant pair: intercept only)."""
        out = []
        for pair, a, b in self.g_functions:
            if isinstance(pair, Pair):
                rows = sorted((self.row_of(pair.first), self.row_of(pair.second)))
                out.append((rows[1], rows[0], a, b))
        return tuple(out)

    @property
    def between_rows(self) -> tuple[int, ...]:
        """Rows of L whose length is a level-2 function (unit directions in L)."""
        return tuple(r for r, _, _ in self.function_rows)

    def group_cholesky(self, params: Params | Any, G, xp: Any = jnp):
        """(J, q, q): each group's factor L_j (Σ_j = L_j L_jᵀ) for level-2 covariates G:
        L_j = S_j L, and under correlation functions L_j = S_j diag(|L_r|) C_j with C_j the
        CPC factor of tanh(G_j δ) (module docstring). ``params``: ``Params`` or θ."""
        p = self.as_params(params, xp)
        scales = self.group_sd_scales(p.kappa, G, xp=xp)
        if not self.corr_functions:
            return scales[:, :, None] * p.chol[None]
        w = {(i, j): G[:, a:b] @ p.kappa[a:b] for i, j, a, b in self.corr_functions}
        length = xp.sqrt(xp.sum(p.chol * p.chol, axis=1))  # row lengths at g = 0: σ, or 1 for function rows
        return (scales * length[None])[:, :, None] * corr_cholesky(w, self.q, xp, (G.shape[0],))

    def group_sd_scales(self, kappa, G, xp=jnp):
        """(J, q): each group's SD multiplier per row of L, exp(½ g_jᵀκ_k) for rows with a
        level-2 function, 1 elsewhere."""
        columns = [xp.ones(G.shape[0]) for _ in range(self.q)]
        for row, a, b in self.function_rows:
            columns[row] = xp.exp(0.5 * (G[:, a:b] @ kappa[a:b]))
        return xp.stack(columns, axis=1) if columns else xp.ones((G.shape[0], 0))

    def correlated(self, r: int) -> bool:
        """Whether random effect r (internal row) may correlate with others (not '||')."""
        return ("within" if r < self.q_v else "mean") not in self.uncorrelated

    @property
    def chol_entries(self) -> tuple[tuple[int, int], ...]:
        """Free (row, col) entries of L in θ order."""
        entries = []
        for r in range(self.q):
            for c in range(r + 1):
                if r == c and r in self.between_rows:
                    continue
                if self.association.independent_blocks and r >= self.q_v and c < self.q_v:
                    continue
                if r != c and (self.corr_functions or not (self.correlated(r) and self.correlated(c))):
                    continue  # a correlation function's, or an '||' effect's: only log SDs are free
                entries.append((r, c))
        return tuple(entries)

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        return (len(self.x_names), len(self.w_names), len(self.g_names), len(self.chol_entries))

    @property
    def n_params(self) -> int:
        return sum(self.sizes) + self.n_assoc

    def split(self, theta):
        """θ → (β, α, κ, chol-entries) as views (works for numpy and JAX arrays)."""
        px, pw, pg, pc = self.sizes
        return (theta[:px], theta[px:px + pw], theta[px + pw:px + pw + pg],
                theta[px + pw + pg:px + pw + pg + pc])

    # ---- the optimiser's bijection θ ↔ Params ------------------------------------------
    def params(self, theta, xp: Any = jnp) -> Params:
        """θ → ``Params`` (docs/architecture.md, 'Parameters'): the free entries of L, its
        diagonal as log L_rr, rows with a level-2 variance function normalised to unit
        length, and under correlation functions L = diag(|L_r|) C(δ at g = 0).

        ``xp=numpy`` evaluates it eagerly without JAX (no compilation outside ``jit``).
        """
        beta, alpha, kappa, raw = self.split(theta)
        position = {rc: k for k, rc in enumerate(self.chol_entries)}
        zero = raw[:0].sum() if raw.shape[0] else 0.0
        rows = []
        for r in range(self.q):
            row = []
            for c in range(self.q):
                if (r, c) in position:
                    value = raw[position[(r, c)]]
                    row.append(xp.exp(value) if r == c else value)
                else:
                    row.append(zero + (1.0 if r == c and r in self.between_rows else 0.0))
            if r in self.between_rows:
                norm = xp.sqrt(sum(v * v for v in row))
                row = [v / norm for v in row]
            rows.append(xp.stack(row))
        L = xp.stack(rows) if rows else xp.zeros((0, 0))
        return Params(beta, alpha, kappa, self.correlation_functions_at_zero(L, kappa, xp),
                      theta[sum(self.sizes):])

    def correlation_functions_at_zero(self, L, kappa, xp: Any = jnp):
        """Under correlation functions, the diagonal L (row lengths) times the CPC factor
        of the functions' intercepts (their value at g = 0); otherwise L unchanged."""
        if not self.corr_functions:
            return L
        w = {}
        for i, j, a, b in self.corr_functions:  # at g = 0 only the intercept is left
            k = next((k for k, c in enumerate(self.g_coefs[a:b]) if c.is_intercept), None)
            if k is not None:
                w[(i, j)] = kappa[a + k]
        lengths = xp.stack([L[r, r] for r in range(self.q)])
        return lengths[:, None] * corr_cholesky(w, self.q, xp)

    def theta(self, params: Params, xp: Any = np):
        """Inverse of ``params``: ``Params`` → θ. Rows with a level-2 function may have any
        length (only their direction is kept); under correlation functions only the rows'
        lengths are kept (the correlations are in κ). A zero SD gives log 0 = −∞."""
        L = params.chol
        if self.corr_functions:
            L = xp.diag(xp.sqrt(xp.sum(L**2, axis=1)))
        between = self.between_rows

        def entry(r, c):
            value = L[r, c] / L[r, r] if r in between else L[r, c]
            return xp.log(value) if r == c else value

        chol = [entry(r, c) for r, c in self.chol_entries]
        return xp.concatenate([xp.asarray(params.beta, float), xp.asarray(params.alpha, float),
                               xp.asarray(params.kappa, float), xp.asarray(chol, float).reshape(-1),
                               xp.asarray(params.assoc, float)])

    def as_params(self, params: Params | Any, xp: Any = jnp) -> Params:
        """``params`` as it is, or θ unpacked by ``params`` (for callers that hold θ)."""
        return params if isinstance(params, Params) else self.params(params, xp)

    def cholesky(self, theta, xp: Any = jnp):
        """The shared factor L (q × q) of θ (``params(theta).chol``)."""
        return self.params(theta, xp).chol

    def pack(self, beta, alpha, kappa, L, assoc=None) -> np.ndarray:
        """θ from its parts (numpy; ``assoc`` None: τ_q = 0): ``theta(Params(...))``."""
        assoc = np.zeros(self.n_assoc) if assoc is None else np.asarray(assoc, float)
        return self.theta(Params(np.asarray(beta, float), np.asarray(alpha, float), np.asarray(kappa, float),
                                 np.asarray(L, dtype=float), assoc))

    # ---- reported scale -------------------------------------------------------------
    def random_effects(self) -> list[tuple[Effect, int]]:
        """(random effect, internal row of L) in user order: mean terms, then within terms."""
        out = [(Effect("mean", name), self.q_v + k) for k, name in enumerate(self.zu_names)]
        out += [(Effect("within", name), k) for k, name in enumerate(self.zv_names)]
        return out

    def correlation_pairs(self) -> list[tuple[tuple[Effect, int], tuple[Effect, int]]]:
        """Pairs of random effects whose correlation is a parameter of its own, in user order."""
        if self.corr_functions:
            return []  # the correlations are level-2 functions, reported in κ
        effects = self.random_effects()
        return [(effects[a], effects[b]) for a in range(len(effects)) for b in range(a + 1, len(effects))
                if not (self.association.independent_blocks and effects[a][0].part != effects[b][0].part)
                and self.correlated(effects[a][1]) and self.correlated(effects[b][1])]

    def reported_ids(self) -> list[ParamName]:
        """The reported parameters, in the order of ``report``."""
        ids = [ParamName("mean", n) for n in self.x_names]
        ids += [ParamName("within", n) for n in self.w_names]
        ids += [ParamName("between", c) for c in self.g_coefs]
        ids += [ParamName("sd", effect) for effect, idx in self.random_effects() if idx not in self.between_rows]
        ids += [ParamName("corr", Pair(a[0], b[0])) for a, b in self.correlation_pairs()]
        ids += [ParamName("assoc", term) for term in self.association.param_terms]
        return ids

    def reported_names(self) -> list[str]:
        return [str(i) for i in self.reported_ids()]

    def reported_kinds(self) -> list[str]:
        """'coef', 'sd' or 'corr' for each reported name (drives CIs and tests)."""
        return [i.category for i in self.reported_ids()]

    def report(self, params: Params | Any):
        """θ (or ``Params``) → reported estimates (JAX-traceable, so the delta method can
        differentiate it): β, α, κ, SDs √Σ_rr, correlations Σ_rs / √(Σ_rr Σ_ss), τ_q."""
        p = self.as_params(params)
        sigma = p.chol @ p.chol.T
        sds = jnp.sqrt(jnp.diag(sigma))
        out = [p.beta, p.alpha, p.kappa]
        out += [sds[idx][None] for _, idx in self.random_effects() if idx not in self.between_rows]
        for (_, i), (_, j) in self.correlation_pairs():
            out.append((sigma[i, j] / (sds[i] * sds[j]))[None])
        out.append(p.assoc)
        return jnp.concatenate([jnp.atleast_1d(o) for o in out]) if out else jnp.zeros(0)

    def boundary_values(self, theta, pivots, zero_rows, G=None) -> list[tuple[str, float]]:
        """``boundary_params`` by printed name."""
        return [(str(pid), value) for pid, value in self.boundary_params(theta, pivots, zero_rows, G)]

    def boundary_params(self, theta, pivots, zero_rows, G=None) -> list[tuple[ParamName, float]]:
        """Reported parameters on the boundary of the parameter space, with their values.

        ``pivots`` are rows of L with a zero diagonal (the effect is an exact linear
        combination of the effects before it, so Σ is singular), ``zero_rows`` those whose
        whole row is zero. A zero-variance effect gives ``sd:<part>:<term>`` = 0; another
        zero pivot gives each of its correlations at ±1, or ``singular:<part>:<term>``
        (value NaN) where none is (a combination of several effects). Any other
        correlation within ``CORRELATION_BOUNDARY`` of ±1 is on the boundary too, with its
        value: in every model form (with level-2 functions a correlation near ±1 is
        approached through an unbounded direction of L, not a zero pivot). Under
        correlation functions that is any group's correlation, for the groups' rows ``G``.
        """
        sigma = self.cholesky(np.asarray(theta, dtype=float), xp=np)
        sigma = sigma @ sigma.T
        zero = set(zero_rows)
        out = {ParamName("sd", effect): 0.0 for effect, idx in self.random_effects() if idx in zero}
        pairs = [(ParamName("corr", Pair(a, b)), i, j) for (a, i), (b, j) in self.correlation_pairs()
                 if not {i, j} & zero]

        def rho(i, j):
            return sigma[i, j] / np.sqrt(sigma[i, i] * sigma[j, j])

        for effect, idx in self.random_effects():
            if idx not in pivots or idx in zero:
                continue
            at_one = {name: float(np.sign(rho(i, j))) for name, i, j in pairs
                      if idx in (i, j) and abs(rho(i, j)) > 1 - 1e-6}
            out.update(at_one or {ParamName("singular", effect): float("nan")})
        out.update({name: float(rho(i, j)) for name, i, j in pairs
                    if name not in out and abs(rho(i, j)) > 1 - CORRELATION_BOUNDARY})
        out.update(self._group_correlations_at_boundary(theta, G))
        return list(out.items())

    def _group_correlations_at_boundary(self, theta, G) -> dict:
        """Correlation functions whose correlation is within ``CORRELATION_BOUNDARY`` of ±1
        for some group: {``corr:<effect>,<effect>``: the most extreme group's value}."""
        if not self.corr_functions or G is None:
            return {}
        factors = self.group_cholesky(np.asarray(theta, dtype=float), np.asarray(G, dtype=float), xp=np)
        sigma = factors @ np.swapaxes(factors, -1, -2)
        sd = np.sqrt(np.einsum("jii->ji", sigma))
        effects = {idx: effect for effect, idx in self.random_effects()}
        out = {}
        for i, j, _, _ in self.corr_functions:
            rho = sigma[:, i, j] / (sd[:, i] * sd[:, j])
            extreme = float(rho[np.argmax(np.abs(rho))])
            if abs(extreme) > 1 - CORRELATION_BOUNDARY:
                out[ParamName("corr", Pair.of(effects[i], effects[j]))] = extreme
        return out

    def effects_from_eta(self, params: Params | Any, G, eta) -> np.ndarray:
        """(J, q) random effects b_j (internal order) of standard normal draws ``eta``
        (J, q) for groups with level-2 rows ``G`` (numpy): b_j = L_j η_j, and under the
        quadratic association v_j = b_v,j + τ_q θ1_j², θ1_j = b_u,j / σ_u,j."""
        p = self.as_params(params, np)
        factors = self.group_cholesky(p, G, xp=np)
        b = np.einsum("jab,jb->ja", factors, eta)
        if self.association.location_in_scale:  # one u, one v: rows (v, u)
            sd_u = np.sqrt(np.sum(factors[:, 1, :] ** 2, axis=1))
            with np.errstate(invalid="ignore", divide="ignore"):
                theta1 = np.where(sd_u > 0, b[:, 1] / sd_u, 0.0)
            b[:, 0] += np.asarray(p.assoc)[0] * theta1**2
        return b

    def predictors(self, params: Params | Any, X, W, Zu, Zv, b_rows):
        """Mean x'β + z'u and log level-1 variance w'α + s'v per row (numpy), with
        ``b_rows`` each row's random effects (v, u) in internal order."""
        p = self.as_params(params, np)
        beta, alpha = np.asarray(p.beta), np.asarray(p.alpha)
        v, u = b_rows[:, :self.q_v], b_rows[:, self.q_v:]
        return X @ beta + np.sum(Zu * u, axis=1), W @ alpha + np.sum(Zv * v, axis=1)
