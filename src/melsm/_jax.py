"""JAX set-up shared by the package: float64 and a persistent compilation cache.

The cache lets a second process reuse the compiled likelihood of a model it has seen
before (same shapes), which is most of the cold-start cost of a fit. Set
``MELSM_CACHE_DIR`` to move it, or to an empty string to switch it off.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

_cache = os.environ.get("MELSM_CACHE_DIR", str(Path.home() / ".cache" / "melsm" / "jax"))
if _cache:
    try:
        Path(_cache).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", _cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except OSError:  # a read-only home: run without the cache rather than fail
        pass
