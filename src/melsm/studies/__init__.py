"""Studies layer: simulation studies (``study``: designs from TOML, ``run``: running and
storing replicates, ``simulate``: data from a model with known parameters). The built-in
studies are the TOML files of this folder. See docs/architecture.md."""
