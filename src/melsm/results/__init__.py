"""Results layer: fitted models (``ml``: ``MLResults``; ``mcmc``: ``MCMCResults``), their
group and population quantities (``groups``) and text summaries (``summary``).
See docs/architecture.md."""
