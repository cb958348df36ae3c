"""The page's files: a fixed table of the paths the page is made of (index.html, app.js,
app.css), served from the package's ``static`` folder, never from a path a request names.
index.html is served as ``AppState`` prepared it (with the page's token), under a
Content-Security-Policy. See docs/architecture.md."""

from __future__ import annotations

from http import HTTPStatus
from importlib.resources import files

from .sessions import Session
from .transport import Transport

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class PageRoutes(Transport):
    """The ``static`` endpoint, which answers GET (and HEAD) for the paths of ``STATIC``."""

    STATIC = STATIC

    def static(self, session: Session, path: str) -> None:
        name, content_type = STATIC[path]
        if name == "index.html":
            self._send(HTTPStatus.OK, self.state.page, content_type, {"Content-Security-Policy": PAGE_POLICY})
        else:
            self._send(HTTPStatus.OK, (files(__package__) / "static" / name).read_bytes(), content_type)
