"""The constraint g(θ) = c of a profile likelihood as a reparameterisation θ = θ(φ, c)
(docs/architecture.md, 'Profile-likelihood intervals').

For a reported parameter ψ = g(θ) (a coefficient, an SD √Σ_rr or a correlation
Σ_rs/√(Σ_rr Σ_ss)) the image of φ ↦ θ(φ, c) is exactly {θ : g(θ) = c}, so the profile
log-likelihood pl(c) = max_φ log L(θ(φ, c)) is an unconstrained maximisation
(``melsm.estimate.profile``):

* a coefficient (β, α, κ, τ_q) is one entry of θ: that entry is c, φ the others;
* an SD: row r of L is c·a/|a| with a = (a_0, …, 1) (its free entries, the diagonal
  fixed at 1: a direction, as rows with a level-2 variance function are), φ the a_k;
* a correlation of rows i < j: row j of L is s·(ρ e_i + √(1 − ρ²) w), e_i = L_i/|L_i|
  and w the unit vector of a − (a·e_i) e_i, a = (a_0, …, a_j = 1) with a_i = 0 over row
  j's free columns (so w_j > 0: L_jj > 0), φ = (a_k, log s) (no s for a row with a
  level-2 variance function: a direction).

Every other entry of θ is copied from φ, except those held on a boundary by the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from melsm.estimate.convergence import identified
from melsm.model.params import ParamLayout


@dataclass(frozen=True)
class Reparam:
    """θ = θ(φ, c) over {θ : g(θ) = c} for one reported parameter (module docstring).

    ``kind``: "coef" (θ[target] = c), "sd" (row ``row`` of L has length c) or "corr"
    (rows ``pair`` = (i, j), i < j, correlate c). ``copied``: θ positions taken from
    φ[:len(copied)]; ``row_pos``: (column, θ position) of the free entries of the row the
    constraint rewrites (sd: row r, corr: row j; the diagonal included unless the row has
    a level-2 variance function); ``extra``: the columns whose a_k follow in φ."""

    layout: ParamLayout
    kind: str
    copied: tuple[int, ...]
    target: int = -1
    row: int = -1
    pair: tuple[int, int] = (-1, -1)
    row_pos: tuple[tuple[int, int], ...] = ()
    extra: tuple[int, ...] = ()

    @property
    def scaled_row(self) -> bool:
        """Whether the rewritten row has its length in θ (False: a level-2 function's row)."""
        return self.kind == "corr" and any(c == self.pair[1] for c, _ in self.row_pos)

    @property
    def dim(self) -> int:
        return len(self.copied) + len(self.extra) + int(self.scaled_row)

    def theta(self, phi, c, template):
        """θ(φ, c) (JAX-traceable); ``template`` gives the entries held on a boundary."""
        theta = jnp.asarray(template).at[jnp.asarray(self.copied, int)].set(phi[:len(self.copied)])
        rest = phi[len(self.copied):]
        if self.kind == "coef":
            return theta.at[self.target].set(c)
        if self.kind == "sd":
            return self._sd_row(theta, rest, c)
        return self._corr_row(theta, rest, c)

    def _sd_row(self, theta, rest, c):
        a = dict(zip(self.extra, rest, strict=True))
        values = [a.get(col, 1.0) for col, _ in self.row_pos]  # the diagonal is 1
        norm = jnp.sqrt(sum(v * v for v in values))
        for (col, pos), v in zip(self.row_pos, values, strict=True):
            theta = theta.at[pos].set(jnp.log(c / norm) if col == self.row else c * v / norm)
        return theta

    def _corr_row(self, theta, rest, rho):
        i, j = self.pair
        q = self.layout.q
        L = self.layout.cholesky(theta)  # row i does not depend on row j
        e = L[i] / jnp.sqrt(L[i] @ L[i])
        a = jnp.zeros(q).at[j].set(1.0)
        if self.extra:
            a = a.at[jnp.asarray(self.extra, int)].set(rest[:len(self.extra)])
        w = a - (a @ e) * e
        d = rho * e + jnp.sqrt(1 - rho * rho) * w / jnp.sqrt(w @ w)
        for col, pos in self.row_pos:
            if not self.scaled_row:  # a level-2 function's row: a direction, diagonal 1
                theta = theta.at[pos].set(d[col] / d[j])
            elif col == j:
                theta = theta.at[pos].set(rest[-1] + jnp.log(d[j]))
            else:
                theta = theta.at[pos].set(jnp.exp(rest[-1]) * d[col])
        return theta

    def phi(self, theta: np.ndarray, fresh: bool = False) -> np.ndarray:
        """φ of a θ on the constraint's surface (numpy): θ(φ(θ), g(θ)) = θ. ``fresh``: the
        rewritten row is on a boundary (an SD at 0): start its direction at the diagonal."""
        theta = np.asarray(theta, float)
        head = theta[list(self.copied)]
        if self.kind == "coef":
            return head
        L = self.layout.cholesky(theta, xp=np)
        if self.kind == "sd":
            r = self.row
            tail = np.zeros(len(self.extra)) if fresh else L[r, list(self.extra)] / L[r, r]
            return np.concatenate([head, tail])
        return np.concatenate([head, self._corr_phi(L)])

    def _corr_phi(self, L: np.ndarray) -> np.ndarray:
        i, j = self.pair
        e = L[i] / np.linalg.norm(L[i])
        length = np.linalg.norm(L[j])
        d = L[j] / length
        rho = d @ e
        a = np.zeros(len(d))
        a[j] = 1.0
        if 1 - rho * rho > 1e-12:
            w = (d - rho * e) / np.sqrt(1 - rho * rho)
            a = w / w[j]
            a = a - a[i] / e[i] * e
        tail = list(a[list(self.extra)])
        return np.asarray(tail + ([np.log(length)] if self.scaled_row else []), float)


def reparam(layout: ParamLayout, k: int, pivots: frozenset = frozenset(),
            zero_rows: frozenset = frozenset()) -> Reparam:
    """The ``Reparam`` of reported parameter k (``layout.reported_ids()[k]``), the entries of
    θ held on the boundary by ``pivots``/``zero_rows`` held, except the rewritten row's."""
    pid = layout.reported_ids()[k]
    if pid.category == "coef":  # β, α, κ in θ's order, then τ_q last
        target = k if k < sum(layout.sizes[:3]) else layout.n_params - (len(layout.reported_ids()) - k)
        free = identified(layout, pivots, zero_rows)
        return Reparam(layout, "coef", tuple(int(p) for p in free if p != target), target=target)
    if pid.kind == "sd":
        rows = (layout.row_of(pid.key),)
    else:
        rows = tuple(sorted((layout.row_of(pid.key.first), layout.row_of(pid.key.second))))
    r = rows[-1]
    free = identified(layout, frozenset(pivots) - {r}, frozenset(zero_rows) - ({r} if len(rows) == 1 else set()))
    offset = sum(layout.sizes[:3])
    row_pos = tuple((c, offset + n) for n, (rr, c) in enumerate(layout.chol_entries) if rr == r)
    rewritten = {pos for _, pos in row_pos}
    copied = tuple(int(p) for p in free if p not in rewritten)
    if len(rows) == 1:
        extra = tuple(c for c, _ in row_pos if c != r)
        return Reparam(layout, "sd", copied, row=r, row_pos=row_pos, extra=extra)
    extra = tuple(c for c, _ in row_pos if c not in rows)
    return Reparam(layout, "corr", copied, pair=rows, row_pos=row_pos, extra=extra)
