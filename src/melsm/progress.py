"""Progress of long jobs, and melsm's loggers (docs/architecture.md, "Progress and logging").

Every long job (MCMC chains, a study's replicates, the demo's and the report's fits)
takes a ``progress=`` argument and reports through one ``Progress``:

* ``None`` (the default): a tqdm bar (``tqdm.auto``: a widget in Jupyter, a text bar in
  a terminal) when standard error is a terminal or the code runs in a notebook; else (a
  log file, a pipe, a captured stream) plain lines: one every 10% of the work, or one
  per named step;
* ``True``: a tqdm bar wherever the output goes;
* ``False``: nothing at all;
* a callable ``(done, total)``: called at each report, nothing printed (the app and the
  tests use one).

The reporter is an argument, never module state. One exception is forced by JAX: code
compiled once cannot hold a Python object that changes from call to call, so a sampler
compiled with a host callback carries a number, and ``relay`` keeps the reporters of the
runs now going under their numbers for ``from_host`` (a table keyed by run, emptied as
each run ends; no "current reporter").

tqdm is imported with the first bar, not with melsm. Informational messages go to the
``melsm`` logger and its children (``logging.getLogger(__name__)``), which have only a
NullHandler; the command line adds a handler for ``-v``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from melsm.errors import MelsmInputError

log = logging.getLogger(__name__)
#: Plain-line reports (no terminal, no notebook) come at every 1/LINES of the work.
LINES = 10


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (as ``tqdm.autonotebook`` decides)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # noqa: BLE001  (an odd shell: no notebook)
        return False


def _mode(progress: Any, file) -> str:
    """``off``, ``call``, ``bar`` or ``lines`` for a ``progress=`` value (module docstring)."""
    if progress is False:
        return "off"
    if progress is True:
        return "bar"
    if progress is None:
        if in_notebook():
            return "bar"
        try:
            terminal = (file or sys.stderr).isatty()
        except (AttributeError, ValueError):  # no stream, or a closed one
            terminal = False
        return "bar" if terminal else "lines"
    if callable(progress):
        return "call"
    raise MelsmInputError(f"progress must be True, False, None or a function (done, total), not {progress!r}")


def _size(file) -> dict:
    """80 x 24 for a terminal that reports a size of 0 (a pseudo-terminal never sized, where
    tqdm would print nothing); tqdm's own choice otherwise."""
    try:
        size = os.get_terminal_size((file or sys.stderr).fileno())
    except (AttributeError, OSError, ValueError):  # not a terminal, or no file number (a notebook)
        return {}
    return {"ncols": size.columns or 80, "nrows": size.lines or 24} if 0 in size else {}


def interactive_only(progress: Any) -> Any:
    """``progress`` for a job that is usually quick: the default (None) shows a bar in a
    terminal or notebook (with a delay) but no plain lines in a log."""
    return False if progress is None and _mode(None, None) == "lines" else progress


class Progress:
    """One progress report (module docstring): counts with ``update_to``/``advance``, or
    named, timed steps with ``step``. Thread-safe; use as a context manager or ``close``."""

    def __init__(self, progress: Any = None, total: int = 0, desc: str = "", unit: str = "it",
                 initial: int = 0, file=None, delay: float = 0.0):
        self.mode = _mode(progress, file)
        #: seconds before anything is shown (a bar or lines; a callable is called at once):
        #: a job that is usually quick stays silent when it is
        self.delay = float(delay)
        self.total, self.done, self.initial = int(total), int(initial), int(initial)
        self.desc, self.unit, self.file = desc, unit, file
        self._callback: Callable | None = progress if self.mode == "call" else None
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._last_line = self._tenth(self.done)
        self._postfix = ""
        self._steps = False
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, file=file, delay=self.delay,
                             **_size(file))

    @property
    def shown(self) -> bool:
        """Whether anything is reported at all (``progress`` was not False)."""
        return self.mode != "off"

    def _tenth(self, done: int) -> int:
        return done * LINES // self.total if self.total else 0

    def update_to(self, done: int, **postfix) -> None:
        """``done`` of ``total`` are done; ``postfix``: counts to show beside (``failed=2``)."""
        with self._lock:
            done = int(done)
            self.done = done
            if postfix:
                self._postfix = "".join(f", {key}={value}" for key, value in postfix.items())
            if self._callback is not None:
                self._callback(done, self.total)
            elif self._bar is not None:
                if postfix:
                    self._bar.set_postfix(postfix, refresh=False)
                self._bar.update(done - self._bar.n)
            elif self.mode == "lines" and not self._steps:
                tenth = self._tenth(done)
                if tenth != self._last_line or done == self.total:
                    self._last_line = tenth
                    self._write(self._line() + "\n")

    def advance(self, n: int = 1, **postfix) -> None:
        """``n`` more are done."""
        self.update_to(self.done + n, **postfix)

    def describe(self, desc: str) -> None:
        """Change the description (the bar's label, the lines' prefix)."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description_str(desc, refresh=not self.delay)  # a refresh would show a delayed bar

    def step(self, what: str, job: Callable[[], Any]) -> Any:
        """Run ``job`` as the next step, called ``what``; returns its result. Plain lines
        read ``[k/n] what ... 1.2 s``; a bar shows ``what`` as its label."""
        k = self.done + 1
        self._steps = True
        if self._bar is not None:
            self._bar.set_description_str(what, refresh=not self.delay)
        head = f"[{k:{len(str(self.total))}d}/{self.total}] {what} ..."
        opened = self.mode == "lines" and self._write(head)
        started = time.perf_counter()
        result = job()
        seconds = time.perf_counter() - started
        log.debug("%s: %.1f s", what, seconds)
        if self.mode == "lines":  # the whole line if its start fell within the delay
            self._write(f" {seconds:.1f} s\n" if opened else f"{head} {seconds:.1f} s\n")
        self.update_to(k)
        return result

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._started
        new = self.done - self.initial
        left = f", ~{elapsed / new * (self.total - self.done):.0f} s left" if new and self.done < self.total else ""
        prefix = f"{self.desc}: " if self.desc else ""
        return f"{prefix}{self.done}/{self.total} {self.unit}, {elapsed:.0f} s{left}{self._postfix}"

    def _write(self, text: str) -> bool:
        """Write ``text`` unless still within the delay; whether it was written."""
        if time.perf_counter() - self._started < self.delay:
            return False
        stream = self.file or sys.stderr
        stream.write(text)
        stream.flush()
        return True

    def close(self) -> None:
        """End the report (a bar stays on screen at its last state)."""
        if self._bar is not None:
            if self._steps:  # the last step's name gives way to the whole job's
                self._bar.set_description_str(self.desc, refresh=False)
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_live: dict[int, Progress] = {}
_numbers = itertools.count(1)
_live_lock = threading.Lock()


@contextlib.contextmanager
def relay(reporter: Progress) -> Iterator[int]:
    """A number under which compiled code reaches ``reporter`` through ``from_host``
    while the ``with`` block runs (module docstring)."""
    with _live_lock:
        number = next(_numbers) % 2**31
        _live[number] = reporter
    try:
        yield number
    finally:
        with _live_lock:
            _live.pop(number, None)


def from_host(number, done) -> None:
    """A host callback's report: ``done`` for the run ``number`` (``relay``)."""
    reporter = _live.get(int(number))
    if reporter is not None:
        reporter.update_to(int(done))
