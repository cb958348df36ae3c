"""Model layer: formulas (``vocabulary``, ``grammar``, ``spec``, ``matrices``), the data as
checked design matrices (``checks``, ``level2``, ``design``, and ``newdata`` for
predictions), the association of location and scale effects (``association``), the
parameters (``params``, with the CPC transform in ``transforms`` and the identifiers of
effects and parameters in ``names``) and the units of the data (``scaling``). Imports
nothing above it; see docs/architecture.md."""
