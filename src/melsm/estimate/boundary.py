"""Random effects on the boundary of the parameter space in an ML fit (docs/architecture.md,
'Maximum likelihood').

Random-effect SDs enter θ through the log-diagonal of the Cholesky factor L, so a variance
of zero (or a singular Σ, e.g. a correlation of ±1) lies at θ = −∞: the optimiser can only
approach it, and near it the likelihood is flat in θ (∂ℓ/∂ log σ = σ² ∂ℓ/∂σ², so the
gradient vanishes long before σ does). ``settle_boundary`` decides each boundary
explicitly, as lme4 does by constraining L's diagonal to [0, ∞):

* a diagonal entry of L below its floor (``BOUNDARY_FRACTION`` of its natural scale) is a
  *zero pivot*: the effect is an exact linear combination of the ones before it. If its
  whole row is below the floor too its variance is zero, otherwise Σ is singular;
* at a stationary point, every other random effect whose log-SD pivot is poorly
  determined (``FLAT_LOG_SE``) is screened: if moving it onto the boundary with the other
  parameters unchanged costs less than ``BOUNDARY_SCREEN`` in log L, the model is refitted
  with it held there, and that fit is kept when its log L is within
  ``BOUNDARY_TOLERANCE`` of the interior one;
* a boundary the optimiser ran into is checked from the other side: the model is refitted
  from that SD set back to ``STEP_OFF_FRACTION`` of its scale, and a higher log L wins.

A held zero pivot sits at ``HELD_FRACTION`` of its natural scale, its column of L is held
at 0 (otherwise the column would trade variance with the next diagonal entry: a flat
direction), and for a zero variance its row as well (``convergence.held_positions``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from melsm.estimate.convergence import Optimum, covariance, identified, is_positive_definite
from melsm.estimate.objective import Objective
from melsm.estimate.start import effect_scale
from melsm.model.params import ParamLayout

#: A random-effect SD below this fraction of its natural scale is reported as zero.
BOUNDARY_FRACTION = 1e-4
#: A diagonal entry of L held at the boundary sits at this fraction of its natural scale.
HELD_FRACTION = 1e-8
#: Screen: a random effect whose removal, other parameters unchanged, costs less than this
#: in log L is refitted at the boundary (a cheap filter; the refit decides).
BOUNDARY_SCREEN = 1.0
#: Only random effects whose log-SD pivot has an SE above this are screened (see
#: ``_flat_rows``); near a boundary the SE of log σ grows without bound.
FLAT_LOG_SE = 1.0
#: The boundary fit is kept when its log L is within this of the interior optimum.
BOUNDARY_TOLERANCE = 1e-6
#: A boundary the optimiser ran into is checked by refitting from an SD of this fraction
#: of its natural scale (the size of the starting values, ``initial_cholesky``).
STEP_OFF_FRACTION = 0.3


#: The optimiser ``settle_boundary`` refits with: (objective, θ0, layout, floors, pivots,
#: zero_rows, max_iter, first inverse Hessian) → Optimum (``melsm.estimate.ml``'s runs).
Optimiser = Callable[..., Optimum]


def settle_boundary(opt: Optimum, objective: Objective, layout: ParamLayout, floors: dict,
                    max_iter: int, optimise: Optimiser) -> Optimum:
    """Decide which random effects sit on the boundary and refit with them held there.

    Each round tries the candidates of ``_trials`` in order, refitting at each boundary,
    and keeps the first whose log L is within ``BOUNDARY_TOLERANCE`` of the current fit's
    (a boundary the optimiser ran into is held regardless: its last trial is taken). The
    loop ends when nothing more is held; each round holds one more effect.
    """
    held_p, held_z = frozenset(), frozenset()
    iterations = opt.iterations
    rejected: set = set()
    released: set = set()
    while True:
        base, accepted = opt, None
        trials, forced = _trials(base, held_p, held_z, objective, layout, floors, rejected)
        for k, (kind, r) in enumerate(trials):
            p, z = structure(held_p, held_z, kind, r)
            trial = optimise(objective, restrict(base.theta, layout, floors, p, z), layout, floors, p, z,
                             max_iter, inverse_start(base, layout, p, z))
            iterations += trial.iterations
            last_forced = forced and k == len(trials) - 1
            as_good = trial.loglik >= base.loglik - BOUNDARY_TOLERANCE
            if last_forced or (as_good and (trial.small_gradient or not base.small_gradient)):
                accepted = trial
                held_p, held_z = p, z
                break
            rejected.add((kind, r))
        if accepted is None:
            break
        if forced and r not in released and accepted.small_gradient:
            released.add(r)
            accepted, held_p, held_z, extra = _step_off_refit(accepted, held_p, held_z, r, objective, layout,
                                                              floors, max_iter, optimise)
            iterations += extra
        opt = accepted
    opt.iterations = iterations
    return opt


def _trials(base: Optimum, held_p: frozenset, held_z: frozenset, objective: Objective, layout: ParamLayout,
            floors: dict, rejected: set) -> tuple[list[tuple[str, int]], bool]:
    """The boundaries to try from ``base``, in order, as (kind "zero" or "pivot", row), and
    whether the optimiser ran into one (a zero pivot not yet held).

    A zero pivot the optimiser ran into is tried as a zero variance if holding the whole
    row costs nothing, then as a singular Σ. Otherwise, at a stationary point, each flat
    row (``_flat_rows``) is screened (``_screen``), zero variance first, then a zero
    pivot, and the candidates costing less than ``BOUNDARY_SCREEN`` come cheapest first.
    """
    def screened(kind, r):
        return _screen(objective, base, layout, floors, *structure(held_p, held_z, kind, r))

    forced = sorted(base.pivots - held_p)
    if forced:
        r = forced[0]
        if r in base.zero_rows or not _has_free_row(layout, r, held_p):
            return [("zero", r)], True
        trials = [("zero", r)] if screened("zero", r) < BOUNDARY_SCREEN else []
        return trials + [("pivot", r)], True
    if not base.small_gradient:
        return [], False
    candidates = []
    flat = _flat_rows(base, layout, floors)
    for r in sorted(floors):
        if r in held_p or r not in flat:
            continue
        for kind in ["zero"] + (["pivot"] if _has_free_row(layout, r, held_p) else []):
            if (kind, r) not in rejected and (drop := screened(kind, r)) < BOUNDARY_SCREEN:
                candidates.append((drop, kind, r))
    return [(kind, r) for _, kind, r in sorted(candidates)], False


def _step_off_refit(accepted: Optimum, held_p: frozenset, held_z: frozenset, r: int, objective: Objective,
                    layout: ParamLayout, floors: dict, max_iter: int, optimise: Optimiser):
    """(fit, held pivots, held zero rows, iterations) after checking a boundary the optimiser
    ran into from the other side: its path may have run into it from a poor start, so row
    r's SD is set back to a moderate size (the rest as in the boundary fit) and refitted; a
    higher log L there means the boundary was not the maximum."""
    free_p, free_z = held_p - {r}, held_z - {r}
    release = optimise(objective, _step_off(accepted.theta, layout, floors, r), layout, floors,
                       free_p, free_z, max_iter)
    if release.loglik > accepted.loglik + BOUNDARY_TOLERANCE:
        return release, free_p, free_z, release.iterations
    return accepted, held_p, held_z, release.iterations


def _flat_rows(opt: Optimum, layout: ParamLayout, floors: dict) -> set:
    """Rows of L whose log-diagonal is so poorly determined (SE above ``FLAT_LOG_SE``)
    that the likelihood may be flat all the way to the boundary. A well-determined
    pivot (say σ = 0.12 ± 0.04, SE of log σ 0.35) cannot have its maximum at 0, and
    screening it would cost a refit for nothing."""
    cov = covariance(opt, layout)
    out = set()
    for r, (position, _) in floors.items():
        variance = cov[position, position]
        if not np.isfinite(variance) or variance < 0 or np.sqrt(variance) > FLAT_LOG_SE:
            out.add(r)
    return out


def _step_off(theta: np.ndarray, layout: ParamLayout, floors: dict, r: int) -> np.ndarray:
    """θ with the diagonal entry of L in row r set to STEP_OFF_FRACTION of its scale."""
    p = layout.params(np.asarray(theta, float), xp=np)
    L = p.chol.copy()
    L[r, r] = np.exp(floors[r][1]) * STEP_OFF_FRACTION / BOUNDARY_FRACTION
    return layout.theta(p._replace(chol=L))


def _screen(objective: Objective, base: Optimum, layout: ParamLayout, floors: dict,
            pivots: frozenset, zero_rows: frozenset) -> float:
    """Loss of log L from moving ``base`` onto a boundary, other parameters unchanged."""
    value = objective.evaluate(restrict(base.theta, layout, floors, pivots, zero_rows))[0]
    return base.loglik - value if np.isfinite(value) else np.inf


def structure(held_p: frozenset, held_z: frozenset, kind: str, r: int) -> tuple[frozenset, frozenset]:
    """The held (pivots, zero rows) with row r added as a zero pivot, and for ``kind``
    "zero" as a zero variance too."""
    return held_p | {r}, (held_z | {r}) if kind == "zero" else held_z


def _has_free_row(layout: ParamLayout, r: int, held_p: frozenset) -> bool:
    """Whether row r of L has off-diagonal entries that could carry variance."""
    return any(rr == r and c != r and c not in held_p for rr, c in layout.chol_entries)


def floors_by_row(layout: ParamLayout, boundary_log_sd: np.ndarray) -> dict:
    """{row of L: (θ position of its log-diagonal, log floor)}."""
    offset = sum(layout.sizes[:3])
    diag = [(offset + k, r) for k, (r, c) in enumerate(layout.chol_entries) if r == c]
    return {r: (pos, float(floor)) for (pos, r), floor in zip(diag, boundary_log_sd, strict=True)}


def restrict(theta: np.ndarray, layout: ParamLayout, floors: dict, pivots: frozenset,
             zero_rows: frozenset) -> np.ndarray:
    """θ moved onto the boundary given by ``pivots``/``zero_rows``, Σ otherwise kept.

    Σ = L Lᵀ loses the rows and columns of ``zero_rows`` and is factored again with a
    zero pivot at each row of ``pivots`` (so that effect becomes the linear combination
    of the earlier ones given by its row of L, and its column of L is zero); the held
    diagonal entries are set to ``HELD_FRACTION`` of their natural scale.
    """
    p = layout.params(np.asarray(theta, float), xp=np)
    sigma = p.chol @ p.chol.T
    for r in zero_rows:
        sigma[r, :] = 0.0
        sigma[:, r] = 0.0
    q = len(sigma)
    L = np.zeros_like(sigma)
    for j in range(q):
        if j in pivots:
            L[j, j] = np.exp(floors[j][1]) * HELD_FRACTION / BOUNDARY_FRACTION
            continue
        d = sigma[j, j] - L[j, :j] @ L[j, :j]
        tiny = (np.exp(floors[j][1]) * HELD_FRACTION / BOUNDARY_FRACTION) if j in floors else 1e-8
        L[j, j] = np.sqrt(max(d, tiny**2))
        for i in range(j + 1, q):
            L[i, j] = (sigma[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    return layout.theta(p._replace(chol=L))


def inverse_start(opt: Optimum, layout: ParamLayout, pivots: frozenset, zero_rows: frozenset):
    """BFGS's first inverse Hessian for a refit: −H⁻¹ over its free entries, if usable."""
    free = identified(layout, pivots, zero_rows)
    sub = -opt.hessian[np.ix_(free, free)]
    if not (np.all(np.isfinite(sub)) and is_positive_definite(sub)):
        return None
    inv = np.linalg.inv(0.5 * (sub + sub.T))
    return 0.5 * (inv + inv.T) if np.all(np.isfinite(inv)) else None


def boundary_floors(design, layout: ParamLayout) -> np.ndarray:
    """log of the smallest SD still reported as non-zero, for each diagonal entry of L."""
    floors = []
    for r, c in layout.chol_entries:
        if r != c:
            continue
        if r < layout.q_v:
            scale = 1.0 / effect_scale(design.Zv[:, r], layout.zv_names[r])
        else:
            k = r - layout.q_v
            scale = design.y_scale / effect_scale(design.Zu[:, k], layout.zu_names[k])
        floors.append(np.log(BOUNDARY_FRACTION * scale))
    return np.asarray(floors)
