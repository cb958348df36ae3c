"""Engine layer: the data in chunks per group (``rows``), the log-likelihood (``likelihood``)
and its quadrature rules (``quadrature``), JAX's configuration (``jax_config``) and
compiled-function caching (``compiled``). Imports only the model layer; see
docs/architecture.md."""
