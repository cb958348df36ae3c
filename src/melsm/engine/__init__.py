"""Engine layer: the log-likelihood (``likelihood``), its quadrature rules (``quadrature``),
JAX's configuration (``jax_config``) and compiled-function caching (``compiled``).
Imports only the model layer; see docs/architecture.md."""
