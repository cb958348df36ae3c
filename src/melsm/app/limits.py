"""The app's limits: the sizes, counts and timeouts that bound what one client can make
the server hold in memory or wait for. See docs/architecture.md."""

from __future__ import annotations

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
#: A body is read in pieces of at most this many bytes.
CHUNK = 64 * 1024
#: Connections served at once; more are closed at once (each holds a thread).
MAX_CONNECTIONS = 64
#: Rows of a data set's preview.
PREVIEW_ROWS = 8
#: A categorical covariate (a text column, or a numeric one ticked categorical) has at
#: most this many distinct values (each but one becomes a column of the design).
MAX_CATEGORIES = 100
