"""The app's worker process: one at a time, fed from a queue, replaced when it must be.

Fits run in a separate process so that the server stays small and answers while a model
is fitted, and so that a process that has compiled many models can be thrown away: XLA
keeps memory maps for every compiled model, and Linux limits a process's maps.

``Engine`` owns that process. One dispatcher thread takes jobs from the queue in order
(comparisons and reports, which a page is waiting for, before queued fits), hands each
to the worker over a pipe and waits for the answer until the job's deadline. The worker
is replaced

* after ``jobs_per_worker`` jobs: retired between two jobs, so no queued job is lost;
* when it dies (a crash, or the kernel killing it when memory runs out): the job it was
  running fails with a message, the next job gets a new worker;
* when a job runs past ``job_timeout`` seconds: the worker is killed, the job fails with
  a message.

Stopping the engine kills the worker. A worker whose server died without stopping it
exits by itself: it watches its parent.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

#: Seconds one job may run before its worker is killed (``melsm app --job-timeout``).
JOB_TIMEOUT = 3600.0
#: A worker is retired after this many jobs (XLA keeps memory maps per compiled model).
JOBS_PER_WORKER = 25
#: Seconds a worker gets to exit by itself before it is killed.
STOP_GRACE = 5.0
#: Seconds a new worker gets to start (import the engine) before it counts as hung.
START_TIMEOUT = 300.0


class JobError(Exception):
    """A job that gave no result; the message says why, in words for the page."""


class _WorkerLost(Exception):
    """The worker died or was killed while running a job."""


class _NotStarted(Exception):
    """The worker died before it got the job (the job can go to the next one)."""


@dataclass
class _Task:
    function: Callable
    args: tuple
    future: Future
    progress: dict | None  # gets {"done", "total"} as the worker reports them


class Engine:
    """One worker process and the queue of jobs waiting for it."""

    def __init__(self, job_timeout: float = JOB_TIMEOUT, jobs_per_worker: int = JOBS_PER_WORKER,
                 warm_up: Callable[[], object] | None = None):
        """``warm_up``: called in each new worker before its first job (imports, say);
        ``None``: nothing."""
        if not job_timeout > 0 or jobs_per_worker < 1:
            raise ValueError("job_timeout must be positive and jobs_per_worker at least 1")
        self.job_timeout = float(job_timeout)
        self.jobs_per_worker = int(jobs_per_worker)
        self._warm_up = warm_up
        self._context = multiprocessing.get_context("spawn")
        self._urgent: deque[_Task] = deque()
        self._queued: deque[_Task] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._worker: _Worker | None = None
        self.workers_started = 0
        self._dispatcher = threading.Thread(target=self._serve_queue, name="melsm-dispatcher", daemon=True)
        self._dispatcher.start()

    # ---- the server's side ------------------------------------------------------------------
    def submit(self, function: Callable, *args, progress: dict | None = None, urgent: bool = False) -> Future:
        """Queue ``function(*args)`` for the worker; ``urgent`` jobs go before the others.
        With ``progress`` (a dict), the function gets a ``progress`` argument, a callable
        ``(done, total)`` whose reports land in that dict. A job that gives no result ends
        with ``JobError``."""
        task = _Task(function, args, Future(), progress)
        with self._changed:
            if self._stopping:
                raise JobError("the app is stopping")
            (self._urgent if urgent else self._queued).append(task)
            self._changed.notify()
        return task.future

    def run(self, function: Callable, *args) -> dict:
        """Run ``function(*args)`` before queued fits and wait for its result; a job that
        gives none becomes ``{"error": message}``."""
        try:
            future = self.submit(function, *args, urgent=True)
            # at worst it waits for the running job, then runs itself: two deadlines
            return future.result(timeout=2 * self.job_timeout + 2 * START_TIMEOUT)
        except JobError as err:
            return {"error": str(err)}
        except CancelledError:
            return {"error": "the app is stopping"}
        except TimeoutError:
            future.cancel()
            return {"error": "the worker did not answer in time; please try again"}

    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        with self._changed:
            return len(self._urgent) + len(self._queued)

    def worker_pid(self) -> int | None:
        """The current worker's process id (None between workers)."""
        worker = self._worker
        return worker.process.pid if worker is not None else None

    def shutdown(self) -> None:
        """Cancel waiting jobs, kill the worker and let the dispatcher end."""
        with self._changed:
            self._stopping = True
            waiting = [*self._urgent, *self._queued]
            self._urgent.clear()
            self._queued.clear()
            self._changed.notify_all()
        for task in waiting:
            task.future.cancel()
        worker = self._worker
        if worker is not None:
            worker.kill()
        self._dispatcher.join(timeout=STOP_GRACE)

    # ---- the dispatcher thread ----------------------------------------------------------------
    def _serve_queue(self) -> None:
        self._replace_worker()  # at once: the engine's imports overlap the page's first steps
        while (task := self._next_task()) is not None:
            if task.future.set_running_or_notify_cancel():
                self._run(task)
        if self._worker is not None:
            self._worker.close()

    def _next_task(self) -> _Task | None:
        with self._changed:
            while not (self._urgent or self._queued or self._stopping):
                self._changed.wait()
            if self._stopping:
                return None
            return (self._urgent or self._queued).popleft()

    def _run(self, task: _Task) -> None:
        try:
            task.future.set_result(self._call(task))
        except JobError as err:
            task.future.set_exception(err)
        except _WorkerLost as lost:
            task.future.set_exception(JobError("the app is stopping" if self._stopping else str(lost)))
            self._replace_worker()
            return
        except Exception as err:  # a bug here must fail one job, never stop the queue
            task.future.set_exception(JobError(f"internal error: {type(err).__name__}: {err}"))
            self._replace_worker()
            return
        if self._worker is not None and self._worker.jobs_done >= self.jobs_per_worker:
            self._replace_worker()

    def _call(self, task: _Task):
        try:
            return self._live_worker().call(task.function, task.args, task.progress, self.job_timeout)
        except _NotStarted:  # it died idle just now (its threads still ending): the job goes to a new one
            self._replace_worker()
            try:
                return self._live_worker().call(task.function, task.args, task.progress, self.job_timeout)
            except _NotStarted as again:
                raise _WorkerLost(str(again)) from None

    def _live_worker(self) -> _Worker:
        """The worker, waiting for a job; replaced first if it died while idle (no job
        is lost that way)."""
        if self._worker is None or not self._worker.ready(START_TIMEOUT):
            self._replace_worker()
            if self._worker is None or not self._worker.ready(START_TIMEOUT):
                if self._stopping:
                    raise _WorkerLost("the app is stopping")
                raise JobError("the worker process did not start; please try again")
        return self._worker

    def _replace_worker(self) -> None:
        old, self._worker = self._worker, None
        if old is not None:
            old.retire()
        with self._changed:
            if self._stopping:
                return
            try:
                self._worker = _Worker(self._context, self._warm_up)
            except OSError:  # no process to be had now (memory, process limit): the next job tries again
                return
            self.workers_started += 1


class _Worker:
    """One worker process and the pipe to it. Messages from it are ``(kind, sequence,
    payload)``: ``ready`` once, then ``progress`` and one ``result`` or ``failure`` per job."""

    def __init__(self, context, warm_up: Callable[[], object] | None):
        self._pipe, child_end = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child_end, warm_up), name="melsm-worker",
                                       daemon=True)
        self.process.start()
        child_end.close()  # only the worker holds it now: its death reads as the end of the pipe
        self.jobs_done = 0
        self._is_ready = False

    def ready(self, timeout: float) -> bool:
        """Whether the worker is alive and waiting for a job (after its warm-up)."""
        if not self._is_ready:
            try:
                self._is_ready = self._receive(0, None, time.monotonic() + timeout) == "ready"
            except (_WorkerLost, JobError, TimeoutError):
                return False
        return self._is_ready and self.process.is_alive()

    def call(self, function: Callable, args: tuple, progress: dict | None, timeout: float):
        """Run one job and return its result; ``JobError`` when it raised or ran past
        ``timeout`` seconds (the worker is then killed), ``_WorkerLost`` when the worker died."""
        self.jobs_done += 1
        try:
            self._pipe.send((self.jobs_done, function, args, progress is not None))
        except (OSError, EOFError):  # the pipe broke: the worker is gone
            raise _NotStarted("the worker process stopped before the job started; please try again") from None
        except Exception as err:  # arguments that cannot be pickled: a bug, reported as such
            raise JobError(f"internal error: cannot send the job: {type(err).__name__}: {err}") from None
        try:
            return self._receive(self.jobs_done, progress, time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            raise _WorkerLost(f"stopped after {timeout:g} s, the app's limit for one job (melsm app --job-timeout "
                              f"SECONDS sets it)") from None

    def _receive(self, sequence: int, progress: dict | None, deadline: float):
        """Messages of job ``sequence`` until its result; raises ``TimeoutError`` at the deadline."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready = wait([self._pipe, self.process.sentinel], remaining)
            if not ready:
                continue
            if self._pipe not in ready:  # exited with nothing more to say
                raise _WorkerLost(self._death_message())
            try:
                kind, number, payload = self._pipe.recv()
            except (EOFError, OSError):
                raise _WorkerLost(self._death_message()) from None
            except Exception as err:  # a result the server cannot unpickle
                raise JobError(f"internal error: cannot read the result: {type(err).__name__}: {err}") from None
            if number != sequence:
                continue  # a late progress report of an earlier job
            if kind == "progress":
                if progress is not None:
                    progress.update(payload)
            elif kind == "failure":
                raise JobError(f"internal error: {payload}")
            else:
                return payload

    def _death_message(self) -> str:
        self.process.join(timeout=STOP_GRACE)
        code = self.process.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        return f"the worker process stopped while running this job ({how}; out of memory?); please try again"

    def retire(self) -> None:
        """Ask the worker to exit after its job, kill it if it does not, close the pipe."""
        try:
            self._pipe.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=STOP_GRACE)
        self.close()

    def kill(self) -> None:
        """Kill the process if it still runs (from any thread: the pipe stays open for the
        dispatcher, which closes it)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=STOP_GRACE)

    def close(self) -> None:
        """Kill the process and close the pipe (the dispatcher's thread only: closing a pipe
        another thread waits on could close whatever file gets its number next)."""
        self.kill()
        self._pipe.close()


# ---- in the worker process ----------------------------------------------------------------------
def _send_progress(pipe: Connection, sequence: int, lock: threading.Lock, done: int, total: int) -> None:
    """A job's progress, a ``melsm.progress`` callable ``(done, total)`` once the first
    three arguments are bound: a message on the pipe (from any thread)."""
    with lock:
        pipe.send(("progress", sequence, {"done": int(done), "total": int(total)}))


def worker_main(pipe: Connection, warm_up: Callable[[], object] | None) -> None:
    """The worker's loop: run jobs from the pipe until told to stop (``None``) or the
    server goes away."""
    # Ctrl+C in a terminal reaches the whole process group; the server stops its worker itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    if warm_up is not None:
        warm_up()
    lock = threading.Lock()  # progress may come from an XLA thread while the main one answers
    with lock:
        pipe.send(("ready", 0, "ready"))
    while True:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        sequence, function, args, wants_progress = message
        extra = {"progress": functools.partial(_send_progress, pipe, sequence, lock)} if wants_progress else {}
        try:
            answer = ("result", sequence, function(*args, **extra))
        except Exception as err:
            answer = ("failure", sequence, f"{type(err).__name__}: {err}")
        with lock:
            try:
                pipe.send(answer)
            except Exception as err:  # a result that cannot be pickled
                pipe.send(("failure", sequence, f"cannot send the result: {type(err).__name__}: {err}"))


def _exit_with_parent() -> None:
    """Exit as soon as the server's process ends, even in the middle of a job: no orphans."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="melsm-parent-watch", daemon=True).start()
