"""JAX set-up shared by the package: float64, an XLA flag, a persistent compilation cache.

These are the only things ``import melsm`` changes outside melsm, each documented with its
reason in docs/architecture.md, 'What import melsm changes': float64 process-wide; the
XLA flag only if the user's ``XLA_FLAGS`` does not mention it; the compilation cache only
if the process has not set one. The cache lets a second process reuse the compiled
likelihood of a model it has seen before (same shapes), which is most of the cold-start
cost of a fit. Set ``MELSM_CACHE_DIR`` to move it, or to an empty string to switch it off.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _jaxlib_version() -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version("jaxlib").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return (0, 0)


# XLA's CPU backend (jaxlib 0.10) hands small fused loops to the YNNPACK library, which
# made our likelihood six times slower (bench/README.md). Switch that off unless the
# user set XLA_FLAGS. Takes effect if no JAX computation has run yet in this process.
if _jaxlib_version() >= (0, 10) and "ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_experimental_ynn_fusion_type="
    ).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


def cache_folder(name: str) -> Path | None:
    """``MELSM_CACHE_DIR/name`` (default ``~/.cache/melsm/name``), created; None when the
    cache is switched off (``MELSM_CACHE_DIR=""``) or cannot be created."""
    root = os.environ.get("MELSM_CACHE_DIR", str(Path.home() / ".cache" / "melsm"))
    if not root:
        return None
    path = Path(root) / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return None
    return path


# A cache directory the user's code already chose is kept (theirs wins).
_cache = cache_folder("jax") if not jax.config.jax_compilation_cache_dir else None
if _cache is not None:
    try:
        jax.config.update("jax_compilation_cache_dir", str(_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except OSError:
        pass
