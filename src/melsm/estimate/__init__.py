"""Estimation layer: maximum likelihood (``ml`` with ``start``, ``objective``, ``boundary``,
``convergence``) and MCMC (``mcmc`` with ``sample_layout`` and ``priors``). Each estimator
takes the engine's likelihood and returns an optimum or draws; wrapping them as results
is the results layer's job. See docs/architecture.md."""
