"""Estimation layer: maximum likelihood (``ml``) and MCMC (``mcmc``, with ``priors``).
Each estimator takes the engine's likelihood and returns raw draws or an optimum;
wrapping them as results is the results layer's job. See docs/architecture.md."""
