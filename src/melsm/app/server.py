"""The app's web server: a JSON API over the engine, and the page (standard library only).

Fits, comparisons and reports run in one worker process (``worker``, running ``jobs``);
the server keeps each browser session's uploaded data and fitted models in memory
(``sessions``). Nothing in a request is ever used as a path: data sets are looked up by
name among the built-in ones and the session's uploads, and the page's files come from
a fixed table.

Every request must name the app's host, and every POST must come from the app's page
(``guard``: a same-origin ``Origin``, or the page's token in ``X-Melsm-Token``); JSON
requests must say ``application/json``. A request's body is read only after its declared
size has been checked, in small pieces and within a deadline; every socket has a timeout.
Malformed requests get 4xx and a one-line JSON message: ``{"errors": {field: text}}``.

Routes (GET also answers HEAD)::

    GET  /                          the page (and /app.js, /app.css)
    GET  /api/datasets              built-in and uploaded data sets, the upload limit
    GET  /api/data?name=N           preview: columns (type, missing, distinct), first rows
    POST /api/upload?filename=F     body: a CSV file
    POST /api/formula               body: the form; the formulas it builds (or field errors)
    POST /api/fit                   body: the form; starts a fit, returns its job id
    GET  /api/jobs/ID               status of a job; the fit when done
    GET  /api/fits                  the session's fitted models
    GET  /api/fits/ID               one fitted model (summary, figures)
    GET  /api/fits/ID/random_effects.csv | fit.json | report.html
    POST /api/compare               body: {"ids": [...]}; the comparison table
    GET  /api/report.html?ids=1,2   the HTML report of several fits
"""

from __future__ import annotations

import io
import json
import secrets
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from contextlib import contextmanager
from functools import partial
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlparse

import pandas as pd

from . import forms, jobs
from .guard import TOKEN_HEADER, HostCheck, Refusal, check_json_type, check_origin, declared_length
from .sessions import Session, Sessions, SessionsFull
from .worker import JOB_TIMEOUT, JOBS_PER_WORKER, Engine, JobError

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
#: Where the page's token goes in index.html.
TOKEN_SLOT = b"__MELSM_PAGE_TOKEN__"
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
#: Uploads larger than this are refused (bytes).
MAX_UPLOAD = 20 * 1024 * 1024
#: A JSON request's body (the form, a list of ids) is far smaller than this.
MAX_FORM = 1024 * 1024
#: Fitted models a session keeps, counting the fits queued and running.
MAX_FITS = 40
#: Uploaded data sets a session keeps.
MAX_UPLOADS = 20
#: Jobs waiting for the worker, all sessions together.
MAX_WAITING_JOBS = 100
#: Seconds any one read or write on a connection may take.
REQUEST_TIMEOUT = 30.0
#: A body must arrive within this many request timeouts.
BODY_TIMEOUTS = 4
#: Of a refused body, at most this much is read (and thrown away) so that a client that
#: sends before it reads still gets the answer; beyond it, the connection is closed.
DRAIN_LIMIT = 8 * 1024 * 1024
CHUNK = 64 * 1024
#: Connections served at once; more are closed at once (each holds a thread).
MAX_CONNECTIONS = 64
PREVIEW_ROWS = 8
COOKIE = "melsm_session"
ALLOWED_METHODS = "GET, HEAD, POST"


class AppState:
    """What the handlers share: the sessions, the worker engine, the built-in data."""

    def __init__(self, host_check: HostCheck, max_upload: int = MAX_UPLOAD, job_timeout: float = JOB_TIMEOUT,
                 jobs_per_worker: int = JOBS_PER_WORKER, fit_job: Callable = jobs.fit_job,
                 warm_up: Callable | None = jobs.warm_up):
        from melsm import datasets

        self.host_check = host_check
        self.max_upload = max_upload
        self.sessions = Sessions()
        self.engine = Engine(job_timeout, jobs_per_worker, warm_up)
        self.fit_job = fit_job
        self.page_token = secrets.token_urlsafe(24)
        self.page = (files(__package__) / "static" / "index.html").read_bytes().replace(
            TOKEN_SLOT, self.page_token.encode())
        self.builtin_names = tuple(datasets.NAMES)
        self._builtin: dict[str, pd.DataFrame] = {}

    def data(self, session: Session, name: str) -> pd.DataFrame | None:
        if name in self.builtin_names:
            if name not in self._builtin:
                from melsm import datasets

                self._builtin[name] = datasets.load(name)
            return self._builtin[name]
        upload = session.uploads.get(name)
        return upload[1] if upload else None


class ClientError(Exception):
    """A request the page should show as a message: ``errors`` maps field → text."""

    def __init__(self, errors: dict[str, str], status: int = HTTPStatus.BAD_REQUEST):
        super().__init__("; ".join(errors.values()))
        self.errors, self.status = errors, status


class _ClientGone(Exception):
    """The client closed the connection before sending the body it announced."""


def read_csv(raw: bytes, filename: str) -> pd.DataFrame:
    """An uploaded file as a DataFrame, or ``ClientError`` saying why not."""
    if not raw.strip():
        raise ClientError({"upload": f"'{filename}' is empty"})
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        if b"\x00" in raw[:4096]:
            raise ClientError({"upload": f"'{filename}' is not a text (CSV) file"}) from None
        text = raw.decode("latin-1")
    try:
        data = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise ClientError({"upload": f"'{filename}' has no columns"}) from None
    except (pd.errors.ParserError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClientError({"upload": f"cannot read '{filename}' as CSV: {first}"}) from None
    if data.shape[1] < 2:
        raise ClientError({"upload": f"'{filename}' has only one column: is it comma-separated? A model needs "
                                     "at least a response and a group column"})
    if len(data) < 3:
        raise ClientError({"upload": f"'{filename}' has {len(data)} data rows: too few to fit a model"})
    if not any(pd.api.types.is_numeric_dtype(data[c]) for c in data.columns):
        raise ClientError({"upload": f"'{filename}' has no numeric column: the response must be numeric "
                                     "(check the decimal mark and the separator)"})
    return data


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"


def _public(record: dict, fit_id: int) -> dict:
    """A fit record as the page gets it (no pickle, no CSV, no JSON text)."""
    hidden = {"pickle", "random_effects_csv", "json"}
    return {"id": fit_id, **{k: v for k, v in record.items() if k not in hidden}}


def _listing(record: dict, fit_id: int) -> dict:
    keys = ("name", "method", "formulas", "loglik", "aic", "dic", "converged", "n_obs", "data")
    return {"id": fit_id, **{k: record[k] for k in keys if k in record}}


def _fit_number(text: object) -> int | None:
    """A fitted model's number from a path, a query or a JSON list; None when it is not one."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if text > 0 else None
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 10:
        return int(text) or None
    return None


def _refuse_constant(name: str):
    raise ClientError({"form": f"the request has {name}: send finite numbers"})


def _finish(session: Session, job: dict, future: Future) -> None:
    """Store a finished fit in its session, or the reason it failed in its job."""
    try:
        record = future.result()
    except JobError as err:
        record = {"error": str(err)}
    except CancelledError:
        record = {"error": "the app stopped before this fit ran"}
    with session.lock:
        job["seconds"] = time.time() - job["started"]
        if "error" in record:
            job.update(status="error", error=record["error"], field=forms.field_of(record["error"]))
            return
        fit_id = session.next_fit
        session.next_fit += 1
        record["data"] = job["data"]
        session.fits[fit_id] = record
        job.update(status="done", fit=fit_id)


class Handler(BaseHTTPRequestHandler):
    """One connection: checks the request (host, origin, size), then routes it."""

    server_version = "melsm"
    timeout = REQUEST_TIMEOUT  # on every read and write of the socket
    state: AppState  # set by make_server

    GET_ROUTES = {"/api/datasets": "datasets", "/api/data": "preview", "/api/jobs/{id}": "job",
                  "/api/fits": "fits", "/api/fits/{id}": "fit", "/api/fits/{id}/{file}": "fit_file",
                  "/api/report.html": "report"}
    POST_ROUTES = {"/api/upload": "upload", "/api/formula": "formula", "/api/fit": "start_fit",
                   "/api/compare": "compare"}
    #: Handlers that store something in the session: they make one when there is none.
    KEEPING = {"upload", "start_fit"}

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
        if self.command in ("GET", "HEAD") and url.path in STATIC:
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
            raise ClientError({field: f"{what} is {_size(length)}; the limit is {_size(limit)}"},
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
        body = self._body(MAX_FORM, "form")
        try:
            payload = json.loads(body or b"{}", parse_constant=_refuse_constant)
        except (ValueError, RecursionError):  # JSONDecodeError, bad encodings, huge numbers, deep nesting
            raise ClientError({"form": "the request is not valid JSON"}) from None
        if not isinstance(payload, dict):
            raise ClientError({"form": "the request is not a form (a JSON object)"})
        return payload

    # ---- the page -----------------------------------------------------------------------
    def static(self, session: Session, path: str) -> None:
        name, content_type = STATIC[path]
        if name == "index.html":
            self._send(HTTPStatus.OK, self.state.page, content_type, {"Content-Security-Policy": PAGE_POLICY})
        else:
            self._send(HTTPStatus.OK, (files(__package__) / "static" / name).read_bytes(), content_type)

    # ---- data ---------------------------------------------------------------------------
    def datasets(self, session: Session) -> None:
        self._json({"builtin": list(self.state.builtin_names),
                    "uploaded": [{"key": k, "filename": f} for k, (f, _) in list(session.uploads.items())],
                    "max_upload": self.state.max_upload})

    def _data(self, session: Session, name: object, field: str = "data") -> pd.DataFrame:
        if not isinstance(name, str | None):
            raise ClientError({field: "data must be the name of a data set"})
        data = self.state.data(session, name or "")
        if data is None:
            raise ClientError({field: f"no data set '{str(name)[:100]}': choose a built-in one or upload a CSV file"})
        return data

    def preview(self, session: Session) -> None:
        data = self._data(session, self.query.get("name"))
        head = data.head(PREVIEW_ROWS).astype(object).where(data.head(PREVIEW_ROWS).notna(), None)
        self._json({"name": self.query.get("name"), "n_rows": len(data), "columns": forms.column_info(data),
                    "head": head.values.tolist()})

    def upload(self, session: Session) -> None:
        filename = "".join(ch for ch in (self.query.get("filename") or "upload.csv") if ch.isprintable())[-80:]
        if len(session.uploads) >= MAX_UPLOADS:
            raise ClientError({"upload": f"this session holds {MAX_UPLOADS} uploaded files, the most it keeps"})
        data = read_csv(self._body(self.state.max_upload, "upload"), filename)
        with session.lock:
            key = f"upload-{len(session.uploads) + 1}"
            session.uploads[key] = (filename, data)
        self._json({"key": key, "filename": filename, "n_rows": len(data)})

    # ---- fitting ------------------------------------------------------------------------
    def _request(self, session: Session, form: dict) -> tuple[pd.DataFrame, dict]:
        data = self._data(session, form.get("data"))
        with session.lock:
            taken = {r["name"] for r in session.fits.values()} | {j["name"] for j in session.jobs.values()
                                                                   if j["status"] != "error"}
        try:
            return data, forms.build(form, data, taken)
        except forms.FormError as err:
            raise ClientError(err.errors) from None

    def formula(self, session: Session) -> None:
        form = self._form()
        data = self._data(session, form.get("data"))
        try:
            request = forms.build({**form, "name": form.get("name") or "preview"}, data, set())
        except forms.FormError as err:
            self._json({"formulas": None, "errors": err.errors})
            return
        self._json({"formulas": request["formulas"], "errors": {}})

    def _check_room(self, session: Session) -> None:
        """Refuse a fit beyond the session's limit (fits kept, queued and running) or when
        too many jobs wait already. Call with the session's lock held."""
        if len(session.fits) + session.pending() >= MAX_FITS:
            raise ClientError({"form": f"this session holds {MAX_FITS} fitted models (counting those queued and "
                                       "running), the most it keeps"})
        if self.state.engine.waiting() >= MAX_WAITING_JOBS:
            raise ClientError({"form": f"{MAX_WAITING_JOBS} fits are waiting already; try again when some have "
                                       "finished"}, HTTPStatus.SERVICE_UNAVAILABLE)

    def start_fit(self, session: Session) -> None:
        form = self._form()
        data, request = self._request(session, form)
        progress = {} if request["method"] == "mcmc" else None
        job = {"name": request["name"], "method": request["method"], "status": "queued", "started": time.time(),
               "data": form["data"], "progress": progress}
        with session.lock:
            self._check_room(session)
            try:
                job["future"] = self.state.engine.submit(self.state.fit_job, data, request, progress=progress)
            except JobError as err:
                raise ClientError({"form": str(err)}, HTTPStatus.SERVICE_UNAVAILABLE) from None
            job_id = secrets.token_hex(6)
            session.jobs[job_id] = job
            session.forget_old_jobs()
        job["future"].add_done_callback(partial(_finish, session, job))
        self._json({"job": job_id, "formulas": request["formulas"]})

    def job(self, session: Session, job_id: str) -> None:
        job = session.jobs.get(job_id)
        if job is None:
            raise ClientError({"form": "no such job"}, HTTPStatus.NOT_FOUND)
        status = job["status"]
        if status == "queued" and job["future"].running():
            status = "running"
        out = {"status": status, "name": job["name"], "method": job["method"],
               "seconds": round(job.get("seconds", time.time() - job["started"]), 1)}
        if status == "running" and job["progress"]:
            out["progress"] = dict(job["progress"])  # {"done", "total"} once warm-up is over
        if status == "done":
            out["fit"] = _public(session.fits[job["fit"]], job["fit"])
        elif status == "error":
            out["errors"] = {job["field"]: job["error"]}
        self._json(out)

    # ---- fitted models ------------------------------------------------------------------
    def _fit_record(self, session: Session, fit_id: object) -> tuple[int, dict]:
        key = _fit_number(fit_id)
        if key not in session.fits:
            raise ClientError({"form": f"no fitted model {str(fit_id)[:20]}"}, HTTPStatus.NOT_FOUND)
        return key, session.fits[key]

    def fits(self, session: Session) -> None:
        self._json([_listing(r, k) for k, r in sorted(session.fits.items())])

    def fit(self, session: Session, fit_id: str) -> None:
        key, record = self._fit_record(session, fit_id)
        self._json(_public(record, key))

    def fit_file(self, session: Session, fit_id: str, name: str) -> None:
        key, record = self._fit_record(session, fit_id)
        stem = "".join(ch if ch.isalnum() else "_" for ch in record["name"])
        if name == "random_effects.csv":
            self._download(record["random_effects_csv"], f"{stem}_random_effects.csv", "text/csv")
        elif name == "fit.json":
            self._download(record["json"], f"{stem}.json", "application/json")
        elif name == "report.html":
            result = self.state.engine.run(jobs.report_job, [record["pickle"]], [record["name"]])
            self._result_page(result, f"{stem}_report.html")
        else:
            raise ClientError({"form": f"no file '{name[:80]}'"}, HTTPStatus.NOT_FOUND)

    def _selected(self, session: Session, ids: object, field: str) -> list[tuple[int, dict]]:
        """The fits of a list of ids: 400 unless it is a list of fit numbers, 404 for one
        the session does not have."""
        if not isinstance(ids, list) or not ids:
            raise ClientError({field: "tick at least one fitted model"})
        if len(ids) > MAX_FITS or any(_fit_number(i) is None for i in ids):
            raise ClientError({field: "ids must be a list of fitted models' numbers"})
        return [self._fit_record(session, i) for i in ids]

    def compare(self, session: Session) -> None:
        selected = self._selected(session, self._form().get("ids"), "compare")
        if len(selected) < 2:
            raise ClientError({"compare": "tick two or more fitted models to compare"})
        if len({r["method"] for _, r in selected}) > 1:
            raise ClientError({"compare": "compare fits of one kind: all ML or all MCMC"})
        if len({(r["data"], r["n_obs"]) for _, r in selected}) > 1:
            raise ClientError({"compare": "the fits use different data (or different rows): they cannot be "
                                          "compared"})
        # simplest model first, so that each LR test is against the model before it
        selected.sort(key=lambda item: item[1].get("n_params", 0))
        result = self.state.engine.run(jobs.compare_job, [r["pickle"] for _, r in selected],
                                       [r["name"] for _, r in selected])
        if "error" in result:
            raise ClientError({"compare": result["error"]})
        self._json(result)

    def report(self, session: Session) -> None:
        ids = [i for i in (self.query.get("ids") or "").split(",") if i]
        selected = self._selected(session, ids, "form")
        result = self.state.engine.run(jobs.report_job, [r["pickle"] for _, r in selected],
                                       [r["name"] for _, r in selected])
        self._result_page(result, "melsm_report.html")

    def _result_page(self, result: dict, filename: str) -> None:
        if "error" in result:
            raise ClientError({"form": result["error"]})
        self._send(HTTPStatus.OK, result["html"].encode(), "text/html; charset=utf-8",
                   {"Content-Disposition": f'inline; filename="{filename}"'})


class AppServer(ThreadingHTTPServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` at once."""

    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS  # a page opens several connections at once; 5 would refuse some
    state: AppState

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the limit: closed at once rather than queued forever
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started: none will give the slot back
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(host: str = "127.0.0.1", port: int = 8050, max_upload: int = MAX_UPLOAD, *,
                job_timeout: float = JOB_TIMEOUT, jobs_per_worker: int = JOBS_PER_WORKER,
                request_timeout: float = REQUEST_TIMEOUT, fit_job: Callable = jobs.fit_job,
                warm_up: Callable | None = jobs.warm_up) -> AppServer:
    """A server bound to (host, port) (port 0: any free port), not yet serving; its worker
    starts at once. ``fit_job`` and ``warm_up`` run in the worker (module-level functions;
    tests give stand-ins)."""
    handler = type("BoundHandler", (Handler,), {"timeout": request_timeout})
    server = AppServer((host, port), handler)  # a bad address fails here, before a worker starts
    check = HostCheck(host, server.server_address[1])
    handler.state = server.state = AppState(check, max_upload, job_timeout, jobs_per_worker, fit_job, warm_up)
    return server


@contextmanager
def _stopped_by_signals(server: AppServer) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end ``server.serve_forever()``, whatever the process
    inherited (a shell starts background jobs with SIGINT ignored). The handler asks the
    loop to stop (``shutdown`` waits for it, so from another thread) rather than raise in
    the middle of whatever the main thread is doing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, name="melsm-stop", daemon=True).start()

    previous = {number: signal.signal(number, stop) for number in wanted}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def serve(host: str = "127.0.0.1", port: int = 8050, open_browser: bool = False, max_upload: int = MAX_UPLOAD,
          job_timeout: float = JOB_TIMEOUT) -> None:
    """Run the app until interrupted (Ctrl+C, SIGTERM); prints its address. Stopping it
    stops its worker process too."""
    server = make_server(host, port, max_upload, job_timeout=job_timeout)
    with _stopped_by_signals(server):
        try:
            _announce(host, server.server_address[1], open_browser)
            server.serve_forever()
        except KeyboardInterrupt:  # Ctrl+C where the handler above could not be installed
            pass
        finally:
            server.server_close()
            server.state.engine.shutdown()


def _announce(host: str, port: int, open_browser: bool) -> None:
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/"
    print(f"melsm app running at {address}  (Ctrl+C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: the app is reachable from other machines on this network; it has no login", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(address)
