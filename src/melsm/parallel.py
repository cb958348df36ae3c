"""Where repeated fits run: a Dask cluster of worker processes (docs/architecture.md,
'Studies').

A study's replicates (``melsm.studies.run``) and a fit's bootstrap refits
(``melsm.results.bootstrap``) are many independent fits. Both send them to Dask through
``connect``: a client of an existing scheduler (``tcp://host:8786``), or of a new local
cluster of single-threaded worker processes, one per core. Processes, not threads: the
fits are CPU-bound Python and XLA, and JAX's compiled functions belong to a process.
Each worker imports melsm (so JAX is set up as in ``melsm.engine.jax_config``) and finds
the model's compiled likelihood in the persistent caches (``~/.cache/melsm``), so only
the first process to meet a model shape compiles it. Dask (``distributed``) is imported
here on the first call, not with melsm.
"""

from __future__ import annotations

import logging
import os

from melsm.errors import MelsmInputError


def connect(scheduler: str | None, workers: int | None):
    """A Dask client: to ``scheduler`` if given, else to a new local cluster of ``workers``
    single-threaded processes (default: one per core). Returns (client, cluster or None);
    close both when done."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError, ValueError) as err:
            raise MelsmInputError(f"cannot connect to the Dask scheduler at '{scheduler}': {err}") from None
    n = workers or os.cpu_count() or 1
    # no dashboard; the scheduler's small HTTP server on a free port of this machine only
    # (its default, 8787, is taken by any other cluster running here)
    try:
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                               scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR)
    except RuntimeError as err:
        if not _running_a_script():
            raise
        # The workers are spawned processes, which import the script again; without the
        # guard its top level starts another cluster inside each one, and they fail.
        raise MelsmInputError(f"the local Dask cluster's worker processes failed to start ({err}): they import "
                              "this script again, so its code must be under `if __name__ == \"__main__\":`, as "
                              "for any process pool") from None
    return Client(cluster), cluster


def _running_a_script() -> bool:
    """Whether ``__main__`` is a script file (not an interactive session or a notebook)."""
    import sys

    return bool(getattr(sys.modules.get("__main__"), "__file__", None))
