"""The app's web server: a JSON API over the engine, and the page (standard library only).

Fits, comparisons and reports run in one worker process (``jobs``); the server keeps each
browser session's uploaded data and fitted models in memory. Nothing in a request is
ever used as a path: data sets are looked up by name among the built-in ones and the
session's uploads, and the page's files come from a fixed table.

Routes::

    GET  /                          the page (and /app.js, /app.css)
    GET  /api/datasets              built-in and uploaded data sets
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
import multiprocessing
import secrets
import threading
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlparse

import pandas as pd

from . import forms, jobs

STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
#: Uploads larger than this are refused (bytes).
MAX_UPLOAD = 20 * 1024 * 1024
MAX_SESSIONS = 50
MAX_FITS = 40
#: A worker is replaced after this many jobs (XLA keeps memory maps per compiled model).
TASKS_PER_WORKER = 25
PREVIEW_ROWS = 8


class Session:
    """One browser's data sets, fitted models and jobs."""

    def __init__(self):
        self.uploads: dict[str, tuple[str, pd.DataFrame]] = {}  # key -> (file name, data)
        self.fits: dict[int, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.next_fit = 1
        self.lock = threading.Lock()
        self.touched = time.time()


class Engine:
    """The worker process pool (one worker), replaced when it breaks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pool = self._new()
        self._pool.submit(jobs.warm_up)
        self._manager = None

    def progress_dict(self):
        """A dict shared with the worker (MCMC progress); its manager starts on first use."""
        with self._lock:
            if self._manager is None:
                self._manager = multiprocessing.get_context("spawn").Manager()
            return self._manager.dict()

    @staticmethod
    def _new() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   max_tasks_per_child=TASKS_PER_WORKER)

    def submit(self, function, *args) -> Future:
        with self._lock:
            try:
                return self._pool.submit(function, *args)
            except BrokenProcessPool:
                self._pool = self._new()
                return self._pool.submit(function, *args)

    def run(self, function, *args):
        """Run and wait; a crashed worker becomes an error result."""
        try:
            return self.submit(function, *args).result()
        except BrokenProcessPool:
            return {"error": "the worker process stopped; please try again"}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._manager is not None:
            self._manager.shutdown()


class AppState:
    def __init__(self, max_upload: int = MAX_UPLOAD):
        from .. import datasets

        self.max_upload = max_upload
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self.engine = Engine()
        self.builtin_names = tuple(datasets.NAMES)
        self._builtin: dict[str, pd.DataFrame] = {}

    def session(self, token: str | None) -> tuple[str, Session]:
        with self.lock:
            if token not in self.sessions:
                if len(self.sessions) >= MAX_SESSIONS:  # forget the least recently used
                    oldest = min(self.sessions, key=lambda k: self.sessions[k].touched)
                    del self.sessions[oldest]
                token = secrets.token_urlsafe(18)
                self.sessions[token] = Session()
            session = self.sessions[token]
            session.touched = time.time()
            return token, session

    def data(self, session: Session, name: str) -> pd.DataFrame | None:
        if name in self.builtin_names:
            if name not in self._builtin:
                from .. import datasets

                self._builtin[name] = datasets.load(name)
            return self._builtin[name]
        upload = session.uploads.get(name)
        return upload[1] if upload else None


class ClientError(Exception):
    """A request the page should show as a message: ``errors`` maps field → text."""

    def __init__(self, errors: dict[str, str], status: int = HTTPStatus.BAD_REQUEST):
        super().__init__("; ".join(errors.values()))
        self.errors, self.status = errors, status


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


class Handler(BaseHTTPRequestHandler):
    server_version = "melsm"
    state: AppState  # set by make_server

    # ---- plumbing ---------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # quiet: the app prints its address only

    def _session(self) -> Session:
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        token = cookie["melsm_session"].value if "melsm_session" in cookie else None
        self._token, session = self.state.session(token)
        self._new_cookie = token != self._token
        return session

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if getattr(self, "_new_cookie", False):
            self.send_header("Set-Cookie", f"melsm_session={self._token}; HttpOnly; SameSite=Strict; Path=/")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _download(self, text: str, filename: str, content_type: str) -> None:
        self._send(HTTPStatus.OK, text.encode(), content_type,
                   {"Content-Disposition": f'attachment; filename="{filename}"'})

    def _body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            remaining = length
            while remaining > 0:  # drain, so that the browser reads the answer
                remaining -= len(self.rfile.read(min(remaining, 1 << 20)) or b"x" * remaining)
            raise ClientError({"upload": f"the file is {_size(length)}; the limit is {_size(limit)}"},
                              HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return self.rfile.read(length) if length else b""

    def _form(self) -> dict:
        try:
            payload = json.loads(self._body(1 << 20) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ClientError({"form": "the request is not valid JSON"}) from None
        if not isinstance(payload, dict):
            raise ClientError({"form": "the request is not a form"})
        return payload

    def _dispatch(self, routes: dict) -> None:
        url = urlparse(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            session = self._session()
            for pattern, handler in routes.items():
                parts, wanted = url.path.strip("/").split("/"), pattern.strip("/").split("/")
                if len(parts) == len(wanted) and all(w.startswith("{") or w == p for w, p in zip(wanted, parts,
                                                                                                strict=True)):
                    args = [p for w, p in zip(wanted, parts, strict=True) if w.startswith("{")]
                    handler(session, *args)
                    return
            if self.command == "GET" and url.path in STATIC:
                name, content_type = STATIC[url.path]
                self._send(HTTPStatus.OK, (files(__package__) / "static" / name).read_bytes(), content_type)
                return
            self._json({"errors": {"form": f"no such address: {url.path}"}}, HTTPStatus.NOT_FOUND)
        except ClientError as err:
            self._json({"errors": err.errors}, err.status)
        except Exception as err:  # the server must not stop: answer, and keep serving
            traceback.print_exc()
            self._json({"errors": {"form": f"internal error: {type(err).__name__}: {err}"}},
                       HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_GET(self):  # noqa: N802 - the base class's name
        self._dispatch({"/api/datasets": self.datasets, "/api/data": self.preview, "/api/jobs/{id}": self.job,
                        "/api/fits": self.fits, "/api/fits/{id}": self.fit,
                        "/api/fits/{id}/{file}": self.fit_file, "/api/report.html": self.report})

    def do_POST(self):  # noqa: N802
        self._dispatch({"/api/upload": self.upload, "/api/formula": self.formula, "/api/fit": self.start_fit,
                        "/api/compare": self.compare})

    # ---- data ---------------------------------------------------------------------------
    def datasets(self, session: Session) -> None:
        self._json({"builtin": list(self.state.builtin_names),
                    "uploaded": [{"key": k, "filename": f} for k, (f, _) in session.uploads.items()]})

    def _data(self, session: Session, name: str | None, field: str = "data") -> pd.DataFrame:
        data = self.state.data(session, name or "")
        if data is None:
            raise ClientError({field: f"no data set '{name}': choose a built-in one or upload a CSV file"})
        return data

    def preview(self, session: Session) -> None:
        data = self._data(session, self.query.get("name"))
        head = data.head(PREVIEW_ROWS).astype(object).where(data.head(PREVIEW_ROWS).notna(), None)
        self._json({"name": self.query.get("name"), "n_rows": len(data), "columns": forms.column_info(data),
                    "head": head.values.tolist()})

    def upload(self, session: Session) -> None:
        filename = "".join(ch for ch in (self.query.get("filename") or "upload.csv") if ch.isprintable())[-80:]
        data = read_csv(self._body(self.state.max_upload), filename)
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

    def start_fit(self, session: Session) -> None:
        form = self._form()
        data, request = self._request(session, form)
        with session.lock:
            if len(session.fits) >= MAX_FITS:
                raise ClientError({"form": f"this session holds {MAX_FITS} fitted models, the most it keeps"})
            job_id = secrets.token_hex(6)
            job = {"name": request["name"], "method": request["method"], "status": "queued",
                   "started": time.time(), "data": form.get("data")}
            session.jobs[job_id] = job
        progress = self.state.engine.progress_dict() if request["method"] == "mcmc" else None
        future = self.state.engine.submit(jobs.fit_job, data, request, progress)
        job["future"], job["progress"] = future, progress
        future.add_done_callback(lambda f: self._finish(session, job, f))
        self._json({"job": job_id, "formulas": request["formulas"]})

    def _finish(self, session: Session, job: dict, future: Future) -> None:
        try:
            record = future.result()
        except BrokenProcessPool:
            record = {"error": "the worker process stopped (out of memory?); please try again"}
        except Exception as err:  # a bug in a job must reach the page, not kill the server
            record = {"error": f"internal error: {type(err).__name__}: {err}"}
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

    def job(self, session: Session, job_id: str) -> None:
        job = session.jobs.get(job_id)
        if job is None:
            raise ClientError({"form": "no such job"}, HTTPStatus.NOT_FOUND)
        future = job.get("future")
        status = job["status"]
        if status == "queued" and future is not None and future.running():
            status = "running"
        out = {"status": status, "name": job["name"], "method": job["method"],
               "seconds": round(job.get("seconds", time.time() - job["started"]), 1)}
        if status == "running" and job.get("progress") is not None:
            try:
                out["progress"] = dict(job["progress"])  # {"done", "total"} once warm-up is over
            except (OSError, EOFError):  # the manager is gone: no progress, but no failure either
                pass
        if status == "done":
            out["fit"] = _public(session.fits[job["fit"]], job["fit"])
        elif status == "error":
            out["errors"] = {job["field"]: job["error"]}
        self._json(out)

    # ---- fitted models ------------------------------------------------------------------
    def _fit_record(self, session: Session, fit_id: str) -> tuple[int, dict]:
        try:
            key = int(fit_id)
        except ValueError:
            key = -1
        if key not in session.fits:
            raise ClientError({"form": f"no fitted model {fit_id}"}, HTTPStatus.NOT_FOUND)
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
            raise ClientError({"form": f"no file '{name}'"}, HTTPStatus.NOT_FOUND)

    def _selected(self, session: Session, ids) -> list[tuple[int, dict]]:
        if not isinstance(ids, list) or not ids:
            raise ClientError({"compare": "tick at least one fitted model"})
        return [self._fit_record(session, str(i)) for i in ids]

    def compare(self, session: Session) -> None:
        selected = self._selected(session, self._form().get("ids"))
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
        selected = self._selected(session, ids)
        result = self.state.engine.run(jobs.report_job, [r["pickle"] for _, r in selected],
                                       [r["name"] for _, r in selected])
        self._result_page(result, "melsm_report.html")

    def _result_page(self, result: dict, filename: str) -> None:
        if "error" in result:
            raise ClientError({"form": result["error"]})
        self._send(HTTPStatus.OK, result["html"].encode(), "text/html; charset=utf-8",
                   {"Content-Disposition": f'inline; filename="{filename}"'})


def make_server(host: str = "127.0.0.1", port: int = 8050, max_upload: int = MAX_UPLOAD) -> ThreadingHTTPServer:
    """A server bound to (host, port) (port 0: any free port), not yet serving."""
    handler = type("BoundHandler", (Handler,), {})
    server = ThreadingHTTPServer((host, port), handler)  # a bad address fails here, before a worker starts
    server.daemon_threads = True
    handler.state = server.state = AppState(max_upload)
    return server


def serve(host: str = "127.0.0.1", port: int = 8050, open_browser: bool = False,
          max_upload: int = MAX_UPLOAD) -> None:
    """Run the app until interrupted; prints its address."""
    server = make_server(host, port, max_upload)
    address = f"http://{host}:{server.server_address[1]}/"
    print(f"melsm app running at {address}  (Ctrl+C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: the app is reachable from other machines on this network; it has no login", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.state.engine.shutdown()
