"""Model layer: formulas (``grammar``, ``matrices``, ``spec``), the data as design matrices
(``design``), the parameter vector θ (``params``) and the units of the data (``scaling``).
Imports nothing above it; see docs/architecture.md."""
