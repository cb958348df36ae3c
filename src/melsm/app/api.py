"""The JSON API: the endpoints the page calls for data sets, formulas, fits, jobs,
comparisons and reports, and the route table that names them. Fits, comparisons and
reports run in the worker (``worker``, running ``jobs``); a session's uploads and fitted
models stay in memory (``sessions``). Data sets are looked up by name among the built-in
ones and the session's uploads, never as a path. See docs/architecture.md.

Routes (GET also answers HEAD)::

    GET  /api/datasets              built-in and uploaded data sets, the upload limit
    GET  /api/data?name=N           preview: columns (type, missing, distinct), first rows
    GET  /api/columns?name=N&group=G  the columns' levels given the group (``columns``)
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

import secrets
import time
from concurrent.futures import CancelledError, Future
from functools import partial
from http import HTTPStatus

import pandas as pd

from . import forms, jobs
from .limits import MAX_FITS, MAX_UPLOADS, MAX_WAITING_JOBS, PREVIEW_ROWS
from .parsing import ClientError, fit_number, read_csv
from .sessions import Session
from .transport import Transport
from .worker import JobError


def _public(record: dict, fit_id: int) -> dict:
    """A fit record as the page gets it (no pickle, no CSV, no JSON text)."""
    hidden = {"pickle", "random_effects_csv", "json"}
    return {"id": fit_id, **{k: v for k, v in record.items() if k not in hidden}}


def _listing(record: dict, fit_id: int) -> dict:
    keys = ("name", "method", "formulas", "loglik", "aic", "dic", "converged", "n_obs", "data")
    return {"id": fit_id, **{k: record[k] for k in keys if k in record}}


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
        record["data"], record["data_label"] = job["data"], job["data_label"]
        session.fits[fit_id] = record
        job.update(status="done", fit=fit_id)


class ApiRoutes(Transport):
    """The endpoints of the JSON API (the methods its route tables name)."""

    GET_ROUTES = {"/api/datasets": "datasets", "/api/data": "preview", "/api/columns": "columns",
                  "/api/jobs/{id}": "job", "/api/fits": "fits", "/api/fits/{id}": "fit",
                  "/api/fits/{id}/{file}": "fit_file", "/api/report.html": "report"}
    POST_ROUTES = {"/api/upload": "upload", "/api/formula": "formula", "/api/fit": "start_fit",
                   "/api/compare": "compare"}
    #: Endpoints that store something in the session: they make one when there is none.
    KEEPING = frozenset({"upload", "start_fit"})

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

    def columns(self, session: Session) -> None:
        """Each column's type and level given the group (the form offers covariates by it)."""
        data = self._data(session, self.query.get("name"))
        group = self.query.get("group") or None
        self._json({"name": self.query.get("name"), "group": group, "columns": forms.column_info(data, group)})

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
            # an upload is shown by its file's name
            job["data_label"] = session.uploads[form["data"]][0] if form["data"] in session.uploads else form["data"]
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
        key = fit_number(fit_id)
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
        if len(ids) > MAX_FITS or any(fit_number(i) is None for i in ids):
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
