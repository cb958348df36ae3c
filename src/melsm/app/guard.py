"""Checks a request passes before the app looks at what it asks: the host it names, where
a state-changing request comes from, and the body size it declares.

The app serves one user on their own machine and has no login, so what it must stop is
other web pages in that user's browser:

* **DNS rebinding.** A page on ``evil.example`` whose name is made to resolve to
  127.0.0.1 becomes same-origin with the app in the browser's eyes, but its requests
  still say ``Host: evil.example``. Only the names the app is served under are accepted:
  the loopback names (``127.0.0.1``, ``localhost``, ``[::1]``) with the app's port, the
  ``--host`` it listens on, and, when it listens on every address (``0.0.0.0``, ``::``),
  any IP address (a rebinding attack needs a name, not an address).
* **Cross-site requests.** Any page can send a POST to 127.0.0.1; the browser adds an
  ``Origin`` header saying where it comes from. A POST is accepted with an ``Origin``
  that is one of the app's own, or, without ``Origin`` (a script, not a browser), with
  the page's token in ``X-Melsm-Token``: a value only a reader of the page has. JSON
  requests must also say ``Content-Type: application/json``, which another site's page
  cannot send without asking first (a CORS preflight, which the app never grants).
"""

from __future__ import annotations

import hmac
import ipaddress
from http import HTTPStatus
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
#: The header a script sends the page's token in, when it sends no ``Origin``.
TOKEN_HEADER = "X-Melsm-Token"
#: More digits than any body the app accepts could need.
LENGTH_DIGITS = 15


class Refusal(Exception):
    """A request refused before it is read: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _ip_address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _split_authority(authority: str) -> tuple[str, int | None] | None:
    """``host[:port]`` as (lower-case host without IPv6 brackets, port or None); None when
    it is not a host and port."""
    try:
        parts = urlsplit(f"//{authority}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None


class HostCheck:
    """Which ``Host`` and ``Origin`` values name this app."""

    def __init__(self, bind_host: str, port: int):
        names = {*LOOPBACK_NAMES, bind_host.strip("[]").lower()}
        self._names = frozenset(names - set(WILDCARD_ADDRESSES))
        self._any_address = bind_host in WILDCARD_ADDRESSES
        self._port = port

    def serves(self, authority: str) -> bool:
        """Whether ``host:port`` (a Host header's value) names this app."""
        if not authority or any(ch.isspace() or ch in "/?#@\\" for ch in authority):
            return False
        split = _split_authority(authority)
        if split is None:
            return False
        host, port = split
        if port != self._port and not (port is None and self._port == 80):
            return False
        return host in self._names or (self._any_address and _ip_address(host) is not None)

    def check_host(self, values: list[str]) -> None:
        """Refuse a request without exactly one Host header that names this app."""
        if len(values) != 1:
            raise Refusal(HTTPStatus.BAD_REQUEST, "the request needs exactly one Host header")
        if not self.serves(values[0].strip()):
            raise Refusal(HTTPStatus.MISDIRECTED_REQUEST,
                          f"this app does not serve the host '{values[0].strip()[:100]}'; open it at the address it "
                          "printed")

    def is_own_origin(self, origin: str) -> bool:
        """Whether an ``Origin`` header's value is one of this app's addresses."""
        scheme, _, authority = origin.partition("://")
        return scheme.lower() == "http" and self.serves(authority)


def check_origin(check: HostCheck, origins: list[str], token: str | None, page_token: str) -> None:
    """Refuse a state-changing request unless it comes from the app's page: its ``Origin``
    is the app's, or it has none and carries the page's token."""
    if len(origins) > 1:
        raise Refusal(HTTPStatus.BAD_REQUEST, "the request has more than one Origin header")
    if origins:
        if not check.is_own_origin(origins[0].strip()):
            raise Refusal(HTTPStatus.FORBIDDEN, "this request comes from another site's page; the app accepts "
                                                "changes only from its own page")
        return
    if token is None or not hmac.compare_digest(token.encode(), page_token.encode()):
        raise Refusal(HTTPStatus.FORBIDDEN, f"a request without an Origin header needs the page's token in "
                                            f"{TOKEN_HEADER}")


def check_json_type(content_type: str | None) -> None:
    """Refuse a JSON request that does not say it is JSON (another site's page could send
    text/plain or a form without asking the browser first)."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                      f"send the request as application/json, not '{media_type[:60] or 'no content type'}'")


def declared_length(values: list[str], transfer_encoding: str | None) -> int:
    """The body size a request declares (0 without a body), or ``Refusal`` when it
    declares nothing sound."""
    if transfer_encoding is not None:
        raise Refusal(HTTPStatus.NOT_IMPLEMENTED, "the app does not accept chunked bodies; send Content-Length")
    if not values:
        return 0
    if len(set(v.strip() for v in values)) > 1:
        raise Refusal(HTTPStatus.BAD_REQUEST, "the request has conflicting Content-Length headers")
    text = values[0].strip()
    if not (text.isascii() and text.isdigit()) or len(text) > LENGTH_DIGITS:
        raise Refusal(HTTPStatus.BAD_REQUEST, f"Content-Length must be a number of bytes, not '{text[:40]}'")
    return int(text)
