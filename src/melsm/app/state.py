"""What every request handler shares: the browser sessions, the worker engine, the
built-in data sets (loaded when first asked for) and the page with its token written
in. One ``AppState`` per server. See docs/architecture.md."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from importlib.resources import files

import pandas as pd

from . import jobs
from .guard import HostCheck
from .limits import MAX_UPLOAD
from .sessions import Session, Sessions
from .worker import JOB_TIMEOUT, JOBS_PER_WORKER, Engine

#: Where the page's token goes in index.html.
TOKEN_SLOT = b"__MELSM_PAGE_TOKEN__"


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
        """A data set by name: a built-in one, or one of the session's uploads; None when
        there is none of that name."""
        if name in self.builtin_names:
            if name not in self._builtin:
                from melsm import datasets

                self._builtin[name] = datasets.load(name)
            return self._builtin[name]
        upload = session.uploads.get(name)
        return upload[1] if upload else None
