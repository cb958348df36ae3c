"""The HTTP side of every request: ``Transport`` checks it, routes it to an endpoint,
finds its session, reads its body and sends the answer. The endpoints themselves are in
``api`` and ``page``; ``server.Handler`` puts them together.

Every request must name the app's host, and every POST must come from the app's page
(``guard``: a same-origin ``Origin``, or the page's token in ``X-Melsm-Token``); JSON
requests must say ``application/json``. A request's body is read only after its declared
size has been checked, in small pieces and within a deadline; every socket has a timeout.
Malformed requests get 4xx and a one-line JSON message: ``{"errors": {field: text}}``.
See docs/architecture.md.
"""

from __future__ import annotations

import json
import socket
import time
import traceback
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from .guard import TOKEN_HEADER, Refusal, check_json_type, check_origin, declared_length
from .limits import BODY_TIMEOUTS, CHUNK, DRAIN_LIMIT, MAX_FORM, REQUEST_TIMEOUT
from .parsing import ClientError, parse_form, size_text
from .sessions import Session, SessionsFull
from .state import AppState

COOKIE = "melsm_session"
ALLOWED_METHODS = "GET, HEAD, POST"


class _ClientGone(Exception):
    """The client closed the connection before sending the body it announced."""


class Transport(BaseHTTPRequestHandler):
    """One connection: checks the request (host, origin, size), then routes it to the
    method its route table names, called with the request's session and the values of
    the path's ``{...}`` parts."""

    server_version = "melsm"
    timeout = REQUEST_TIMEOUT  # on every read and write of the socket
    state: AppState  # set by make_server

    #: Path pattern → endpoint method; ``{...}`` parts match any one path segment.
    GET_ROUTES: dict[str, str] = {}
    POST_ROUTES: dict[str, str] = {}
    #: Endpoints that store something in the session: they make one when there is none.
    KEEPING: frozenset[str] = frozenset()
    #: The page's files, path → (file name, content type): answered by the ``static`` endpoint.
    STATIC: dict[str, tuple[str, str]] = {}

    # ---- plumbing ---------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: the app prints its address only

    def do_GET(self):  # noqa: N802 - the base class's name
        self._handle(self.GET_ROUTES)

    do_HEAD = do_GET  # noqa: N815 - the same answer, and ``_send`` leaves out the body

    def do_POST(self):  # noqa: N802
        self._handle(self.POST_ROUTES)

    def _not_allowed(self):
        self._json({"errors": {"form": f"{self.command} is not used here; the app answers {ALLOWED_METHODS}"}},
                   HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ALLOWED_METHODS})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, headers too long, an
        unknown method) as the app's one-line JSON, with a status line even when the
        request's version could not be read (http.server then assumes HTTP/0.9, which has none)."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"
        self._json({"errors": {"form": message or HTTPStatus(code).phrase}}, code)

    def _handle(self, routes: dict[str, str]) -> None:
        self._new_token: str | None = None
        self._body_read = False
        try:
            self._check_request()
            name, args = self._route(routes)
            getattr(self, name)(self._session(keep=name in self.KEEPING), *args)
        except Refusal as refusal:
            self._json({"errors": {"form": refusal.message}}, refusal.status)
        except ClientError as err:
            self._json({"errors": err.errors}, err.status)
        except SessionsFull as err:
            self._json({"errors": {"form": str(err)}}, err.status)
        except (_ClientGone, ConnectionError, TimeoutError):  # the client left, or stopped reading: no answer
            self.close_connection = True
        except Exception as err:  # the server must not stop: answer, and keep serving
            traceback.print_exc()
            self._json({"errors": {"form": f"internal error: {type(err).__name__}: {err}"}},
                       HTTPStatus.INTERNAL_SERVER_ERROR)
        finally:
            self._discard_unread_body()

    def _check_request(self) -> None:
        self.state.host_check.check_host(self.headers.get_all("Host") or [])
        if self.command == "POST":
            check_origin(self.state.host_check, self.headers.get_all("Origin") or [],
                         self.headers.get(TOKEN_HEADER), self.state.page_token)

    def _route(self, routes: dict[str, str]) -> tuple[str, list[str]]:
        """The handler's name and the values of the path's ``{...}`` parts."""
        url = urlparse(self.path)
        try:
            self.query = {k: v[-1] for k, v in parse_qs(url.query, max_num_fields=20).items()}
        except ValueError:
            raise ClientError({"form": "the address has too many parameters"}) from None
        parts = url.path.strip("/").split("/")
        for pattern, name in routes.items():
            wanted = pattern.strip("/").split("/")
            if len(parts) == len(wanted) and all(w.startswith("{") or w == p for w, p in zip(wanted, parts,
                                                                                            strict=True)):
                return name, [p for w, p in zip(wanted, parts, strict=True) if w.startswith("{")]
        if self.command in ("GET", "HEAD") and url.path in self.STATIC:
            return "static", [url.path]
        raise ClientError({"form": f"no such address: {url.path[:200]}"}, HTTPStatus.NOT_FOUND)

    def _session(self, keep: bool) -> Session:
        """The cookie's session; a new one only when the request has something to keep
        (otherwise an empty one that is not stored)."""
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookie = SimpleCookie()
        session = self.state.sessions.find(cookie[COOKIE].value if COOKIE in cookie else None)
        if session is not None:
            return session
        if not keep:
            return Session()
        self._new_token, session = self.state.sessions.create()
        return session

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        if getattr(self, "_new_token", None):
            self.send_header("Set-Cookie", f"{COOKIE}={self._new_token}; HttpOnly; SameSite=Strict; Path=/")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = HTTPStatus.OK, extra: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", extra)

    def _download(self, text: str, filename: str, content_type: str) -> None:
        self._send(HTTPStatus.OK, text.encode(), content_type,
                   {"Content-Disposition": f'attachment; filename="{filename}"'})

    # ---- bodies -------------------------------------------------------------------------
    def _declared_length(self) -> int:
        return declared_length(self.headers.get_all("Content-Length") or [], self.headers.get("Transfer-Encoding"))

    def _body(self, limit: int, field: str) -> bytes:
        """The body, once its declared size is known to be at most ``limit``."""
        length = self._declared_length()
        if length > limit:
            what = "the file" if field == "upload" else "the request"
            raise ClientError({field: f"{what} is {size_text(length)}; the limit is {size_text(limit)}"},
                              HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self._read(length)
        self._body_read = True
        return body

    def _read(self, length: int) -> bytes:
        """``length`` bytes, in pieces (memory grows with what arrives, not with what is
        announced), within ``BODY_TIMEOUTS`` socket timeouts."""
        deadline = time.monotonic() + BODY_TIMEOUTS * self.timeout
        body = bytearray()
        while len(body) < length:
            try:
                piece = self.rfile.read1(min(CHUNK, length - len(body)))
            except TimeoutError:
                piece = None
            if piece == b"":
                raise _ClientGone
            if piece is None or time.monotonic() > deadline:
                self._body_read = True  # what is left will not be waited for again
                self.close_connection = True
                raise ClientError({"form": f"the request's body did not arrive in time ({len(body)} of {length} "
                                           "bytes)"}, HTTPStatus.REQUEST_TIMEOUT)
            body += piece
        return bytes(body)

    def _discard_unread_body(self) -> None:
        """After answering a POST without reading its body: end the answer (the client
        sees the end at once), then read and drop at most ``DRAIN_LIMIT`` bytes of the
        body for at most one timeout. Closing a socket with unread data resets it, and a
        client still sending could lose the answer."""
        if self.command != "POST" or getattr(self, "_body_read", True):
            return
        self.close_connection = True
        try:
            remaining = min(self._declared_length(), DRAIN_LIMIT)
            self.connection.shutdown(socket.SHUT_WR)
        except (Refusal, OSError):
            return
        deadline = time.monotonic() + self.timeout
        try:
            while remaining > 0 and time.monotonic() < deadline:
                piece = self.rfile.read1(min(CHUNK, remaining))
                if not piece:
                    return
                remaining -= len(piece)
        except OSError:  # a timeout, or the client is gone
            return

    def _form(self) -> dict:
        check_json_type(self.headers.get("Content-Type"))
        return parse_form(self._body(MAX_FORM, "form"))
