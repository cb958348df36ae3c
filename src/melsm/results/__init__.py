"""Results layer: fitted models with one contract (``base``: ``Results``, subclassed by
``ml``: ``MLResults`` and ``mcmc``: ``MCMCResults``), likelihood-ratio tests (``lrtest``),
group and population quantities by one code path (``groups``) and text summaries
(``summary``). See docs/architecture.md, 'Results'."""
