"""The page's files: a fixed table of the paths the page is made of (index.html, app.js,
app.css, the icon favicon.svg), served from the package's ``static`` folder, never from a
path a request names. index.html is served as ``AppState`` prepared it (with the page's
token), under a Content-Security-Policy; the icon (also at /favicon.ico, which browsers
ask for on pages without an icon link, such as the reports) under one that allows
nothing. See docs/architecture.md."""

from __future__ import annotations

from http import HTTPStatus
from importlib.resources import files

from .sessions import Session
from .transport import Transport

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8"), "/favicon.svg": ("favicon.svg", "image/svg+xml"),
          "/favicon.ico": ("favicon.svg", "image/svg+xml")}
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
#: The icon's policy: an image, nothing to run or load.
ICON_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


class PageRoutes(Transport):
    """The ``static`` endpoint, which answers GET (and HEAD) for the paths of ``STATIC``."""

    STATIC = STATIC

    def static(self, session: Session, path: str) -> None:
        name, content_type = STATIC[path]
        if name == "index.html":
            self._send(HTTPStatus.OK, self.state.page, content_type, {"Content-Security-Policy": PAGE_POLICY})
        else:
            extra = {"Content-Security-Policy": ICON_POLICY} if name.endswith(".svg") else None
            self._send(HTTPStatus.OK, (files(__package__) / "static" / name).read_bytes(), content_type, extra)
