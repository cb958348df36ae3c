"""Built-in simulation studies, as TOML files (``melsm.study.builtin``)."""
