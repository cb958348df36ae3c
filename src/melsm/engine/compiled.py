"""Compiled functions that a new process can load instead of tracing them again.

``jax.jit`` caches compiled code on disk (see ``_jax``), but a new process must still
trace and lower each function to find it there — about a second for a likelihood
Hessian, most of a cold fit. ``compiled`` also keeps the lowered function itself
(``jax.export``) on disk, keyed by the function, its static arguments, the shapes and
types of its array arguments, the JAX version and a hash of melsm's source, and calls
that.

The first call of each compiled function in a process logs what it compiles (or loads)
and how long that took (``melsm.engine.compiled`` logger, INFO): a first fit of a model
shape compiles for 15-35 s and says so.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import time
from pathlib import Path

import jax

from melsm.engine import jax_config as _jax  # noqa: F401

_memory: dict[str, object] = {}
_registered = False
log = logging.getLogger(__name__)


def _export_dir() -> Path | None:
    return _jax.cache_folder("exported")


def _register_pytrees() -> bool:
    global _registered
    if not _registered:
        try:
            import flatbuffers  # noqa: F401  (needed by jax.export serialisation)
        except ImportError:
            return False
        from melsm.engine.likelihood import Nodes
        from melsm.engine.rows import ModelData

        jax.export.register_namedtuple_serialization(ModelData, serialized_name="melsm.ModelData")
        jax.export.register_namedtuple_serialization(Nodes, serialized_name="melsm.Nodes")
        _registered = True
    return True


@functools.cache
def _source_hash() -> str:
    """Hash of the package's own code (all of melsm: the likelihood's parameters come from
    ``melsm.model``): an edited likelihood never meets a stale export."""
    digest = hashlib.sha256(jax.__version__.encode())
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _key(name: str, static: dict, args: tuple) -> str:
    leaves, tree = jax.tree_util.tree_flatten(args)
    shapes = [(getattr(x, "shape", ()), str(getattr(x, "dtype", type(x).__name__))) for x in leaves]
    text = repr((name, sorted(static.items()), str(tree), shapes, _source_hash()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def release() -> None:
    """Drop every compiled function this process holds (our in-memory exports and JAX's
    caches); the disk caches stay, so the next use reloads instead of recompiling.

    XLA's CPU runtime keeps hundreds of memory maps per compiled model and Linux allows
    65,530 per process (vm.max_map_count): ``bound_maps`` calls this when a long process
    (a notebook, the app, a study, a test suite) nears that limit; it can also be called
    between batches of work. docs/architecture.md, 'Long processes'.
    """
    import gc

    global _releases
    _memory.clear()
    jax.clear_caches()
    gc.collect()
    _trim_heap()
    _releases += 1


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc's ``malloc_trim``): they otherwise
    stay in the allocator's arenas and the resident memory hardly falls (≈ 30 MB back
    after a released Riesby fit, measured). A no-op where there is no glibc."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


#: ``bound_maps`` releases compiled functions once the process holds more memory maps than
#: this share of the kernel's limit: the rest is headroom for the model being compiled
#: (≈ 1,000-2,000 maps) and for the process's other libraries.
MAP_SHARE = 0.5
_releases = 0


def _proc_count(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:  # not Linux (no /proc): no limit to guard
        return None


@functools.cache
def _map_limit() -> int | None:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def map_count() -> int | None:
    """The memory maps this process holds (lines of /proc/self/maps); None where unknown."""
    return _proc_count("/proc/self/maps")


def bound_maps() -> bool:
    """Release every compiled function (``release``) if the process holds more than
    ``MAP_SHARE`` × vm.max_map_count memory maps; True if it did. Called before each new
    compilation and each MCMC run, so the count stays below that share plus one model's
    maps, however many distinct models the process meets (a model met again after a
    release is reloaded from the disk caches, not compiled). Costs one read of
    /proc/self/maps."""
    limit = _map_limit()
    if limit is None or not MAP_SHARE * limit < (map_count() or 0):
        return False
    log.info("%d memory maps (limit %d): releasing compiled functions", map_count(), limit)
    release()
    return True


def releases() -> int:
    """How many times this process released its compiled functions (``release``)."""
    return _releases


def compiled(static_argnames: tuple[str, ...]):
    """Like ``functools.partial(jax.jit, static_argnames=...)``, with lowered functions
    kept on disk between processes. Array arguments must come before static ones."""

    def decorate(fn):
        signature = inspect.signature(fn)
        jitted = jax.jit(fn, static_argnames=static_argnames)

        def bind(args, kwargs):
            """(static values, committed arrays, cache key) of one call's arguments."""
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            static = {k: bound.arguments[k] for k in static_argnames}
            # Every array committed to the default device: jit keys its compiled code on
            # whether an argument is committed, and the outputs of one call (committed) fed
            # to the next (the quadrature modes) would otherwise compile everything twice.
            arrays = jax.device_put(tuple(v for k, v in bound.arguments.items() if k not in static_argnames),
                                    jax.devices()[0])
            return static, arrays, _key(fn.__qualname__, static, arrays)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            static, arrays, key = bind(args, kwargs)
            runner = _memory.get(key)
            if runner is None:
                return _first_call(fn, key, jitted, static, arrays)
            return runner(*arrays)

        def runner(*args, **kwargs):
            """The compiled function for these arguments' shapes and static values, as a
            plain callable of the array arguments, which must then be committed to the
            default device (``jax.device_put``) and have these shapes: for many calls on
            arrays of one shape (``engine.blocks``), without the per-call binding, device
            transfer and key of ``call`` (≈ 3 ms a call, measured)."""
            static, arrays, key = bind(args, kwargs)
            if key not in _memory:
                _first_call(fn, key, jitted, static, arrays)
            return _memory[key]

        call.jitted = jitted
        call.runner = runner
        return call

    return decorate


def _describe(fn, static: dict, arrays: tuple) -> str:
    """``the likelihood (value_grad_nodes) for 80 groups (padded) in 80 chunks of 8 rows, n_quad=11``."""
    data = next((a for a in arrays if hasattr(a, "chunk_group")), None)  # a ModelData
    if data is not None:
        n_chunks, rows = data.y.shape
        parts = [f"{data.G.shape[0]} groups (padded) in {n_chunks} chunks of {rows} rows"]
        name = f"the likelihood ({fn.__qualname__})"
    else:
        parts = ["arrays " + " ".join("x".join(map(str, getattr(a, "shape", ()))) or "()"
                                      for a in jax.tree_util.tree_leaves(arrays))]
        name = fn.__qualname__
    parts += [f"{k}={v}" for k, v in static.items() if isinstance(v, int)]
    return f"{name} for {', '.join(parts)}"


def _first_call(fn, key: str, jitted, static: dict, arrays: tuple):
    """Get the function (``_load_or_export``), keep it and call it, logging what that took."""
    bound_maps()  # before this model adds its maps
    what = _describe(fn, static, arrays)
    directory = _export_dir()
    stored = directory is not None and (directory / f"{key}.bin").exists()
    log.info("%s %s ...", "loading" if stored else "compiling", what)
    started = time.perf_counter()
    runner = _load_or_export(key, jitted, static, arrays)
    _memory[key] = runner
    out = runner(*arrays)  # compiles (or loads the compiled code) before it returns
    log.info("%s ready in %.1f s", fn.__qualname__, time.perf_counter() - started)
    return out


def _load_or_export(key, jitted, static, arrays):
    def plain(*a):
        return jitted(*a, **static)

    directory = _export_dir()
    if directory is None or not _register_pytrees():
        return plain
    path = directory / f"{key}.bin"
    if path.exists():
        try:
            return jax.jit(jax.export.deserialize(bytearray(path.read_bytes())).call)
        except Exception:  # a stale or damaged file: export it again
            pass
    try:
        exported = jax.export.export(jax.jit(plain))(*arrays)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(exported.serialize())
        tmp.replace(path)
    except Exception:  # export unsupported or disk full: plain jit still works
        return plain
    return jax.jit(exported.call)
