"""Running a study on Dask, with a Parquet store that survives being stopped.

The store is a folder: ``study.json`` (the study, to refuse mixing replicates of
different studies) and ``rows/d<design>-r<replicate>.parquet``, one file per finished
replicate. Files are written under a hidden temporary name and renamed into place
(``os.replace`` is atomic on one file system), so a file exists exactly when its
replicate is complete, whatever moment the run was stopped at. Resuming lists the files
and submits only the missing (design, replicate) keys: nothing is lost or done twice. A
file that cannot be read (a disk that filled up, a copy cut short) is moved aside to
``unreadable/`` on resume and its replicate run again; reading results skips it with a
warning.

Replicates are Dask tasks (``studies.replicate.replicate_rows``, a top-level function, so it
pickles; a worker meeting many model shapes stays under the memory-map limit by
``engine.compiled.bound_maps``);
their rows come back to this process, which writes them as they complete
(``as_completed``), so the workers need no shared file system. The cluster comes from
``melsm.parallel.connect``, which the parametric bootstrap shares. A replicate whose task
raised, or whose worker died, is recorded as failed rows and the study goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from melsm.errors import MelsmInputError, MelsmStudyWarning, count
from melsm.parallel import connect
from melsm.progress import Progress
from melsm.studies.replicate import failed_rows, replicate_rows, typed_rows
from melsm.studies.study import Study
from melsm.studies.summary import StudyResults

_FILE = re.compile(r"^d(\d+)-r(\d+)\.parquet$")
#: What reading a damaged Parquet file raises.
_READ_ERRORS = (OSError, ValueError, pa.ArrowException)
log = logging.getLogger(__name__)


class Store:
    """The output folder of a study (see the module docstring)."""

    def __init__(self, folder: str | Path, study: Study):
        self.folder = Path(folder)
        self.rows_folder = self.folder / "rows"
        self.study = study

    def open(self, resume: bool = False) -> Store:
        """Check the folder is this study's (or new), create it, clear stale temporary files."""
        study = self.study
        spec_path = self.folder / "study.json"
        if self.folder.exists() and not self.folder.is_dir():
            raise MelsmInputError(f"'{self.folder}' is a file, not a folder for the study's results")
        if spec_path.exists():
            stored = Study.from_dict(_read_json(spec_path))
            if stored.identity() != study.identity():
                raise MelsmInputError(f"'{self.folder}' holds results of a different study "
                                      f"('{stored.name}'); choose another output folder")
            done = len(self.done())
            if done and not resume:
                raise MelsmInputError(f"'{self.folder}' already holds {done} finished replicates of this study; "
                                      "resume it (--resume, resume=True) or choose another output folder")
        elif self.rows_folder.exists() and any(self.rows_folder.iterdir()):
            raise MelsmInputError(f"'{self.folder}' holds rows without a study.json; choose another output folder")
        self.rows_folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(spec_path, lambda p: p.write_text(_json(study.to_dict())))
        for stale in self.rows_folder.glob(".*.tmp"):  # left by a run stopped mid-write
            stale.unlink(missing_ok=True)
        self.set_aside_unreadable()
        return self

    def set_aside_unreadable(self) -> list[Path]:
        """Move replicate files that cannot be read (truncated, damaged) to ``OUT/unreadable/``,
        with a warning, so that their replicates count as missing and are run again."""
        moved = []
        for path in sorted(self.rows_folder.glob("*.parquet")):
            if _FILE.match(path.name) and _unreadable(path):
                aside = self.folder / "unreadable" / path.name
                aside.parent.mkdir(exist_ok=True)
                os.replace(path, aside)
                moved.append(aside)
        if moved:
            warnings.warn(f"{len(moved)} stored replicate file(s) could not be read and were moved to "
                          f"'{moved[0].parent}' (e.g. {moved[0].name}); their replicates will be run again",
                          MelsmStudyWarning, stacklevel=3)
        return moved

    def path(self, design_id: int, replicate: int) -> Path:
        return self.rows_folder / f"d{design_id:04d}-r{replicate:06d}.parquet"

    def done(self) -> set[tuple[int, int]]:
        """(design, replicate) keys with a finished file."""
        keys = set()
        for path in self.rows_folder.glob("*.parquet") if self.rows_folder.exists() else ():
            match = _FILE.match(path.name)
            if match:
                keys.add((int(match.group(1)), int(match.group(2))))
        return keys

    def write(self, design_id: int, replicate: int, rows: pd.DataFrame) -> None:
        _write_atomic(self.path(design_id, replicate), lambda p: rows.to_parquet(p, index=False))

    def read(self) -> pd.DataFrame:
        """Every stored row of the study's current designs and replicates, in key order; a
        file that cannot be read is skipped with a warning (its replicate is missing)."""
        wanted = {(d.id, r) for d in self.study.designs() for r in range(self.study.replicates)}
        frames, skipped = [], []
        for d, r in sorted(self.done() & wanted):
            try:
                frames.append(pd.read_parquet(self.path(d, r)))
            except _READ_ERRORS:
                skipped.append(self.path(d, r).name)
        if skipped:
            warnings.warn(f"skipped {len(skipped)} stored replicate file(s) that cannot be read (e.g. {skipped[0]}); "
                          "resume the study to run them again", MelsmStudyWarning, stacklevel=3)
        if not frames:
            return failed_rows(self.study, 0, 0, "", models=[]).iloc[:0]
        return typed_rows(pd.concat(frames, ignore_index=True))


def _unreadable(path: Path) -> bool:
    try:
        pq.read_table(path)
    except _READ_ERRORS:
        return True
    return False


def _json(spec: dict) -> str:
    return json.dumps(spec, indent=2, sort_keys=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MelsmInputError(f"cannot read '{path}': {err}") from None


def _write_atomic(path: Path, write) -> None:
    """Write through a hidden temporary file in the same folder, then rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def run_study(study: Study, out: str | Path, scheduler: str | None = None, workers: int | None = None,
              resume: bool = False, progress: Any = None) -> StudyResults:
    """Run every missing replicate of ``study`` on Dask, writing each to ``out`` as it finishes.

    ``scheduler``: address of an existing Dask scheduler (``tcp://host:8786``); else a
    local cluster of ``workers`` processes (default: one per core). ``resume``: continue a
    study whose folder already holds replicates (otherwise that is an error). ``progress``:
    the replicates done (of all the study's) as ``melsm.progress.Progress`` shows them: a
    bar by default, with the count of failed replicates; False: nothing; or a callable
    ``(done, total)``.
    """
    workers = None if workers is None else count(workers, "workers")
    store = Store(out, study).open(resume)
    keys = [(d.id, r) for d in study.designs() for r in range(study.replicates)]
    done = store.done()
    todo = [key for key in keys if key not in done]
    started = time.perf_counter()
    if todo:
        from distributed import as_completed

        log.info("study %s: %d of %d replicates to run", study.name, len(todo), len(keys))
        failed = 0
        with Progress(progress, total=len(keys), desc=study.name, unit="replicates",
                      initial=len(keys) - len(todo)) as bar:
            client, cluster = connect(scheduler, workers)
            try:
                futures = {client.submit(replicate_rows, study, d, r, pure=False): (d, r) for d, r in todo}
                for future in as_completed(futures):
                    d, r = futures.pop(future)
                    try:
                        rows = future.result()
                    except Exception as err:  # noqa: BLE001  (a task that raised or a worker that died)
                        rows = failed_rows(study, d, r,
                                           f"replicate failed on the cluster: {type(err).__name__}: {err}")
                    store.write(d, r, rows)
                    future.release()
                    failed += bool((rows["error"] != "").any())
                    bar.advance(failed=failed)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    seconds = time.perf_counter() - started
    log.info("study %s: %d replicates run in %.0f s", study.name, len(todo), seconds)
    return StudyResults(study, store.read(), seconds=seconds)


def read_results(out: str | Path) -> StudyResults:
    """The results stored in a study folder so far (no Dask needed)."""
    folder = Path(out)
    if not (folder / "study.json").is_file():
        raise MelsmInputError(f"'{folder}' is not a study folder (no study.json)")
    study = Study.from_dict(_read_json(folder / "study.json"))
    return StudyResults(study, Store(folder, study).read())
