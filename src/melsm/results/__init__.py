"""Results layer: the contract both estimators' fits share (``base``), ``MLResults``
(``ml``), ``MCMCResults`` (``mcmc``) with its ArviZ InferenceData (``inference_data``) and exact
prior draws (``prior_draws``), likelihood-ratio tests (``lrtest``) of fits found nested (``nesting``), group and
population quantities (``groups``) and text summaries (``summary``). See
docs/architecture.md."""

#: Accessors registered before ``base`` is imported, name -> function returning the class:
#: the top layer registers ``fit.plot`` here so that ``import melsm`` need not import
#: ``base`` (pandas, SciPy); ``base`` adds them to ``Results`` when it is imported.
PENDING_ACCESSORS: dict = {}
