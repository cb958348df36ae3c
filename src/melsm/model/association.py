"""The association between a group's random location and scale effects.

One object answers every question that depends on it (docs/architecture.md,
'Association'), so no other module tests the name:

- ``correlated`` (alias ``linear``, MIXREGLS' name): b_j = (v_j, u_j) ~ N(0, Σ_j), every
  pair of effects correlated;
- ``none``: the location and scale blocks of Σ are independent (the block of L linking u
  to v is fixed at 0);
- ``quadratic`` (MIXREGLS, one location effect u and one scale effect v):
  v_j = b_v,j + τ_q θ1_j², θ1_j = u_j / σ_u,j, with b_j = (b_v, u) correlated as above.
  The location effect then enters the level-1 variance non-linearly: it can no longer be
  integrated in closed form, so the quadrature runs over (η_v, η_u) by a nested rule, the
  effects given the data are not Gaussian, and τ_q is one more parameter,
  ``assoc:quadratic``.
"""

from __future__ import annotations

from enum import StrEnum

from melsm.errors import MelsmInputError

#: The names a user may give, ``linear`` being MIXREGLS' name for ``correlated``.
NAMES = ("correlated", "none", "linear", "quadratic")


class Association(StrEnum):
    """The association of location and scale effects; a ``str`` (its name), so it compares
    equal to ``"quadratic"`` and serialises as text."""

    CORRELATED = "correlated"
    NONE = "none"
    QUADRATIC = "quadratic"

    @classmethod
    def parse(cls, name: object) -> Association:
        """The association called ``name`` (one of ``NAMES``; ``linear`` is ``correlated``)."""
        if not isinstance(name, str) or name not in NAMES:
            raise MelsmInputError(f"association {name!r} is not one of {', '.join(NAMES)}")
        return cls.CORRELATED if name == "linear" else cls(name)

    # ---- structure of Σ and θ ---------------------------------------------------------
    @property
    def independent_blocks(self) -> bool:
        """Whether the location and scale blocks of Σ are independent (no correlation
        between a location and a scale effect)."""
        return self is Association.NONE

    @property
    def param_terms(self) -> tuple[str, ...]:
        """Its own parameters (reported ``assoc:<term>``), which come last in θ: τ_q, or none."""
        return ("quadratic",) if self is Association.QUADRATIC else ()

    @property
    def n_params(self) -> int:
        return len(self.param_terms)

    @property
    def needs_both_parts(self) -> bool:
        """Whether it needs random effects in both the mean and the within formula."""
        return self is Association.QUADRATIC

    def check_effects(self, n_location: int, n_scale: int) -> None:
        """Raise ``MelsmInputError`` unless the model's random effects suit it: the
        quadratic association needs exactly one location and one scale effect."""
        if self is Association.QUADRATIC and (n_location != 1 or n_scale != 1):
            raise MelsmInputError(
                "association='quadratic' needs exactly one random effect in the mean formula and one in the "
                f"within formula (as in MIXREGLS), not {n_location} and {n_scale}")

    @property
    def location_in_scale(self) -> bool:
        """Whether the scale effect is a function of the location effect,
        v_j = b_v,j + τ_q θ1_j² (``melsm.engine.likelihood.quadratic_effects``)."""
        return self is Association.QUADRATIC

    # ---- integration ----------------------------------------------------------------
    @property
    def location_exact(self) -> bool:
        """Whether the location effects are integrated in closed form given the scale
        effects (they enter the model linearly)."""
        return self is not Association.QUADRATIC

    def integration_dims(self, q_u: int, q_v: int) -> int:
        """Dimension of the adaptive quadrature: the scale effects, plus the location
        effects where they are not integrated exactly."""
        return q_v if self.location_exact else q_u + q_v

    @property
    def nested_rule(self) -> bool:
        """Whether the quadrature is the nested rule over (η_v, η_u) (outer points in η_v,
        inner points in η_u given η_v; ``melsm.engine.likelihood.nested_nodes``)."""
        return self is Association.QUADRATIC

    def nodes_per_group(self, points: int, dims: int) -> int:
        """Quadrature nodes per group for ``points`` per dimension: K^d for a tensor rule,
        K(4K − 3) for the nested rule (``likelihood.inner_points``)."""
        return points * (4 * points - 3) if self.nested_rule else points ** dims

    # ---- derived quantities -----------------------------------------------------------
    @property
    def gaussian_effects(self) -> bool:
        """Whether the random effects are Gaussian, which the closed-form group means,
        variances and ICCs and the groups' lines need (not under the quadratic one)."""
        return self is not Association.QUADRATIC
