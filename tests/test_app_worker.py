"""The app's worker, through HTTP: a queue that never stalls (workers retired after N jobs,
replaced when they crash or hang, no queued fit lost) and the app stopping with all its
processes on SIGINT and SIGTERM.

Most fits here are stand-ins (``stand_in_fit``) that take milliseconds, so that the worker
machinery is what runs. The worker imports this module to run them: keep its top-level
imports light (the engine is imported inside the fixtures)."""

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

SMALL_CSV = b"y,g\n" + b"".join(f"{i % 7 + 0.5},{i % 3}\n".encode() for i in range(30))


def stand_in_fit(data, request, progress=None) -> dict:
    """Runs in the worker in place of ``jobs.fit_job``; what it does depends on the model's
    name: ``crash`` (the process dies), ``hang``, ``sleep S``, anything else returns at once."""
    name = request["name"]
    if name.startswith("crash"):
        os._exit(3)
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("sleep"):
        time.sleep(float(name.split()[1]))
    if progress is not None:
        progress(3, 4)  # a melsm.progress callable (done, total)
        time.sleep(1.0)  # so that a poll sees the job running with its progress
    return {"name": name, "method": request["method"], "formulas": request["formulas"], "n_obs": len(data),
            "worker_pid": os.getpid(), "summary": "", "converged": True, "warnings": [], "figures": [],
            "pickle": b"", "json": "{}", "random_effects_csv": ""}


def stand_in_form(name: str, **changes) -> dict:
    form = {"data": "tutorial", "name": name, "response": "normexam", "group": "school",
            "mean_random_intercept": True, "within_random_intercept": True}
    return {**form, **changes}


class AppClient:
    """HTTP to an app on 127.0.0.1, sent as its page sends it: POSTs with the app's
    ``Origin``, the session cookie once the app gives one."""

    def __init__(self, port: int, cookie: str | None = None):
        self.port, self.cookie = port, cookie

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        sent = {"Origin": f"http://127.0.0.1:{self.port}"} if method == "POST" else {}
        if body is not None and not isinstance(body, bytes):
            body, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
        if self.cookie:
            sent["Cookie"] = self.cookie
        sent.update(headers or {})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body, {k: v for k, v in sent.items() if v is not None})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        if response.getheader("Set-Cookie"):
            self.cookie = response.getheader("Set-Cookie").split(";")[0]
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def json(self, method: str, path: str, payload=None) -> tuple[int, object]:
        status, _, data = self.request(method, path, payload)
        return status, json.loads(data)

    def upload(self, content: bytes = SMALL_CSV) -> tuple[int, object]:
        status, _, data = self.request("POST", "/api/upload?filename=small.csv", content,
                                       {"Content-Type": "text/csv"})
        return status, json.loads(data)

    def fit(self, form: dict) -> str:
        status, answer = self.json("POST", "/api/fit", form)
        assert status == 200, answer
        return answer["job"]

    def wait(self, job_id: str, seconds: float = 120) -> dict:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status, job = self.json("GET", f"/api/jobs/{job_id}")
            assert status == 200, job
            if job["status"] in ("done", "error"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish in {seconds} s: {job}")


@contextlib.contextmanager
def running_app(**options):
    """An app serving in a thread on a free port, with stand-in fits unless told otherwise."""
    from melsm.app import make_server

    options = {"fit_job": stand_in_fit, "warm_up": None, **options}
    server = make_server("127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        server.state.engine.shutdown()


@pytest.fixture
def app():
    with running_app(job_timeout=2, jobs_per_worker=5) as server:
        yield server


def _port(server) -> int:
    return server.server_address[1]


# ---- the queue -------------------------------------------------------------------------------
def test_thirty_fits_posted_at_once_all_finish():
    """A worker retires after 25 jobs (the default): 30 fits posted at once need two, and
    none of them waits forever."""
    with running_app() as server:
        client = AppClient(_port(server))
        assert client.upload()[0] == 200
        started = time.monotonic()
        form = {"data": "upload-1", "response": "y", "group": "g"}
        with ThreadPoolExecutor(30) as pool:
            job_ids = list(pool.map(lambda k: client.fit(stand_in_form(f"fit {k}", **form)), range(30)))
        jobs = [client.wait(job_id) for job_id in job_ids]
        seconds = time.monotonic() - started
        assert [job["status"] for job in jobs] == ["done"] * 30
        assert {job["fit"]["n_obs"] for job in jobs} == {30}
        assert sorted(Counter(job["fit"]["worker_pid"] for job in jobs).values()) == [5, 25]
        status, fits = client.json("GET", "/api/fits")
        assert status == 200 and len(fits) == 30
    print(f"30 stand-in fits posted at once, through 2 workers: all done in {seconds:.1f} s")


def test_a_hung_fit_is_stopped_and_the_next_one_runs(app):
    client = AppClient(_port(app))
    hung, after = client.fit(stand_in_form("hang")), client.fit(stand_in_form("after"))
    job = client.wait(hung)
    assert job["status"] == "error"
    message = job["errors"]["form"]
    assert message.startswith("stopped after 2 s, the app's limit for one job") and "--job-timeout" in message
    assert client.wait(after)["status"] == "done"


def test_a_crashed_worker_fails_its_fit_and_the_next_one_runs(app):
    client = AppClient(_port(app))
    crashed, after = client.fit(stand_in_form("crash")), client.fit(stand_in_form("after"))
    job = client.wait(crashed)
    assert job["status"] == "error"
    assert "the worker process stopped while running this job (exited with status 3" in job["errors"]["form"]
    assert client.wait(after)["status"] == "done"


def test_a_worker_killed_while_idle_loses_no_fit(app):
    client = AppClient(_port(app))
    first = client.wait(client.fit(stand_in_form("first")))
    pid = first["fit"]["worker_pid"]
    os.kill(pid, signal.SIGKILL)
    _wait_gone({pid})
    job = client.wait(client.fit(stand_in_form("second")))
    assert job["status"] == "done", job.get("errors")
    assert job["fit"]["worker_pid"] != pid


def test_mcmc_progress_reaches_the_job(app):
    client = AppClient(_port(app))
    job_id = client.fit(stand_in_form("sampled", method="mcmc", chains=2, warmup=10, draws=10))
    seen = None
    deadline = time.monotonic() + 60
    while seen is None and time.monotonic() < deadline:
        status, job = client.json("GET", f"/api/jobs/{job_id}")
        if job["status"] == "running" and "progress" in job:
            seen = job["progress"]
        time.sleep(0.05)
    assert seen == {"done": 3, "total": 4}
    assert client.wait(job_id)["status"] == "done"


def test_fits_queued_and_running_count_towards_the_session_limit():
    from melsm.app.limits import MAX_FITS

    with running_app(job_timeout=600) as server:
        client = AppClient(_port(server))
        client.fit(stand_in_form("hang"))  # holds the worker while the rest queue
        for k in range(1, MAX_FITS):
            client.fit(stand_in_form(f"queued {k}"))
        status, answer = client.json("POST", "/api/fit", stand_in_form("one too many"))
        assert status == 400 and "counting those queued and running" in answer["errors"]["form"]
        assert client.json("GET", "/api/fits") == (200, [])


# ---- stopping the app ------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.add(int(entry))
    return found


def _descendants(pid: int) -> set[int]:
    found = _children(pid)
    for child in list(found):
        found |= _descendants(child)
    return found


def _alive(pid: int) -> bool:
    """Whether any thread of the process still runs (a zombie's have all ended; the
    main thread of a dying process can be a zombie while others still run)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for thread in threads:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{thread}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return True
    return False


def _wait_gone(pids: set[int], seconds: float = 30) -> set[int]:
    """The pids still alive after ``seconds`` (or as soon as none is)."""
    deadline = time.monotonic() + seconds
    while (alive := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@contextlib.contextmanager
def _melsm_app(*argv: str):
    """``melsm app --port 0`` as a subprocess: (process, port), a long fit running in its
    worker (so that the worker is busy when it is stopped)."""
    process = subprocess.Popen([sys.executable, "-m", "melsm.cli", "app", "--port", "0", *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group, as in a terminal
    try:
        line = process.stdout.readline()
        assert line.startswith("melsm app running at http://127.0.0.1:"), line + process.stderr.read()
        port = int(line.split()[4].rstrip("/").rsplit(":", 1)[1])
        client = AppClient(port)
        job_id = client.fit(stand_in_form("long", method="mcmc", chains=2, warmup=20000, draws=20000))
        while client.json("GET", f"/api/jobs/{job_id}")[1]["status"] == "queued":
            time.sleep(0.1)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("signal_number, to_group", [(signal.SIGINT, False), (signal.SIGTERM, False),
                                                     (signal.SIGINT, True), (signal.SIGHUP, True)])
def test_a_signal_stops_the_app_and_all_its_processes(signal_number, to_group):
    """To the app alone (kill PID), or to its whole process group as a terminal sends
    Ctrl+C (SIGINT) or its closing (SIGHUP)."""
    with _melsm_app() as (process, _):
        spawned = _descendants(process.pid)
        assert len(spawned) >= 2  # the worker and multiprocessing's resource tracker
        if to_group:
            os.killpg(process.pid, signal_number)
        else:
            process.send_signal(signal_number)
        assert process.wait(timeout=60) == 0
        assert _wait_gone(spawned) == set()


def test_the_worker_ends_when_the_app_is_killed():
    """Even SIGKILL (no clean-up at all) leaves no orphan: the worker watches its parent."""
    with _melsm_app() as (process, _):
        spawned = _descendants(process.pid)
        process.kill()
        process.wait(timeout=30)
        assert _wait_gone(spawned) == set()
