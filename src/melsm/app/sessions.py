"""The browser sessions the app keeps: each one's uploads, fitted models and jobs.

A session is made only when a request has something to keep (an upload, a fit), and
such a request must come from the app's page (``guard``); reading requests without a
session see an empty one that is not stored. So no other site, and no request without a
cookie, can fill the table. When it is full, the session to make room is the least
recently used one that holds nothing, or failing that one that has been idle for
``IDLE_SECONDS``; a session with a queued or running job is never dropped. If none can
go, no new session is made (the request gets 503) rather than lose someone's work.
"""

from __future__ import annotations

import secrets
import threading
import time
from http import HTTPStatus

import pandas as pd

#: Sessions kept at once.
MAX_SESSIONS = 50
#: A session holding fits or uploads may be dropped for a new one after this long unused.
IDLE_SECONDS = 24 * 3600
#: Job records kept per session (finished ones beyond this are forgotten, oldest first).
MAX_JOB_RECORDS = 200


class SessionsFull(Exception):
    """No session can be made without dropping someone's work."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class Session:
    """One browser's data sets, fitted models and jobs."""

    def __init__(self):
        self.uploads: dict[str, tuple[str, pd.DataFrame]] = {}  # key -> (file name, data)
        self.fits: dict[int, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.next_fit = 1
        self.lock = threading.Lock()
        self.touched = time.monotonic()

    def pending(self) -> int:
        """Jobs queued or running."""
        return sum(job["status"] == "queued" for job in list(self.jobs.values()))

    def holds_work(self) -> bool:
        return bool(self.uploads or self.fits or self.jobs)

    def forget_old_jobs(self) -> None:
        """Drop the oldest finished job records beyond ``MAX_JOB_RECORDS`` (call with the lock held)."""
        finished = [key for key, job in self.jobs.items() if job["status"] != "queued"]
        for key in finished[:max(0, len(self.jobs) - MAX_JOB_RECORDS)]:
            del self.jobs[key]


class Sessions:
    """The table of sessions, by cookie token."""

    def __init__(self, limit: int = MAX_SESSIONS, idle_seconds: float = IDLE_SECONDS):
        self._limit, self._idle_seconds = limit, idle_seconds
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def find(self, token: str | None) -> Session | None:
        """The session of a cookie's token, if there is one."""
        with self._lock:
            session = self._sessions.get(token) if token else None
            if session is not None:
                session.touched = time.monotonic()
            return session

    def create(self) -> tuple[str, Session]:
        """A new session and its token; ``SessionsFull`` when no room can be made."""
        with self._lock:
            if len(self._sessions) >= self._limit:
                del self._sessions[self._evictable()]
            token = secrets.token_urlsafe(18)
            self._sessions[token] = Session()
            return token, self._sessions[token]

    def _evictable(self) -> str:
        now = time.monotonic()
        idle = [(session.holds_work(), session.touched, token) for token, session in self._sessions.items()
                if session.pending() == 0 and (not session.holds_work() or now - session.touched > self._idle_seconds)]
        if not idle:
            raise SessionsFull(f"the app already keeps {self._limit} sessions with uploads, fitted models or "
                               "running jobs; restart it to start afresh")
        return min(idle)[2]
