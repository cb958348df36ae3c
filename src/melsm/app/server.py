"""The app's web server (standard library only): binds the address, serves each
connection on its own thread, and stops, with its worker process, on Ctrl+C or SIGTERM.

A request's handler is put together from parts with one job each:

- ``transport``: the HTTP side (host and origin checks, routing, sessions, bodies, answers);
- ``api``: the JSON API's endpoints (data sets, formulas, fits, jobs, comparisons, reports);
- ``page``: the page's files (``GET /``, ``/app.js``, ``/app.css``, the icon);
- ``state``: what all handlers share (sessions, the worker engine, the built-in data);
- ``parsing``: reading uploads, forms and ids; ``limits``: the sizes and timeouts.

See docs/architecture.md.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer

from . import jobs
from .api import ApiRoutes
from .guard import HostCheck
from .limits import MAX_CONNECTIONS, MAX_UPLOAD, REQUEST_TIMEOUT
from .page import PageRoutes
from .state import AppState
from .worker import JOB_TIMEOUT, JOBS_PER_WORKER


class Handler(ApiRoutes, PageRoutes):
    """One connection: ``transport.Transport`` checks and routes the request to an
    endpoint of the JSON API or of the page."""


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
