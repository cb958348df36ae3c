"""The browser app: ``melsm app`` (or ``melsm.app.serve()``) serves a page where a model
is specified in a form, fitted by ML or MCMC, and compared with others."""

from .server import make_server, serve

__all__ = ["make_server", "serve"]
