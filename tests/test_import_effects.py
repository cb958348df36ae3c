"""What ``import melsm`` changes outside melsm: only what docs/architecture.md lists
('What import melsm changes'), each checked in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, logging, os, sys, warnings
import jax
# The libraries melsm uses add warning filters of their own when imported: the baseline has them.
import formulaic, matplotlib.figure, pandas, pyarrow, scipy.optimize, scipy.special, scipy.stats  # noqa
{before}
filters, handlers = list(warnings.filters), list(logging.getLogger().handlers)
import melsm
print(json.dumps({{
    "x64": bool(jax.config.jax_enable_x64),
    "cache": jax.config.jax_compilation_cache_dir,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "filters_same": list(warnings.filters) == filters,
    "handlers_same": list(logging.getLogger().handlers) == handlers,
    "pyplot": "matplotlib.pyplot" in sys.modules,
}}))
"""


def probe(tmp_path, before: str = "", **env) -> dict:
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MELSM_CACHE_DIR": str(tmp_path / "melsm"),
                   **env}
    done = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], capture_output=True, text=True,
                          env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_sets_float64_the_cache_and_the_xla_flag_only(tmp_path):
    state = probe(tmp_path)
    assert state["x64"] is True
    assert state["cache"] == str(tmp_path / "melsm" / "jax")
    assert state["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type="
    assert state["filters_same"] and state["handlers_same"] and not state["pyplot"]


def test_a_cache_directory_the_user_chose_is_kept(tmp_path):
    mine = str(tmp_path / "mine")
    state = probe(tmp_path, before=f"jax.config.update('jax_compilation_cache_dir', {mine!r})")
    assert state["cache"] == mine


def test_the_users_xla_flags_are_kept_and_the_cache_can_be_switched_off(tmp_path):
    flags = "--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count=1"
    state = probe(tmp_path, XLA_FLAGS=flags, MELSM_CACHE_DIR="")
    assert state["xla_flags"] == flags
    assert state["cache"] in (None, "")
    assert json.dumps(state)  # the probe ran to the end


def test_import_leaves_matplotlib_for_the_first_figure(tmp_path):
    """matplotlib (≈ 0.3–0.6 s) is imported by ``fit.plot`` or ``melsm.plots``, not by ``import melsm``."""
    code = ("import sys, melsm; before = 'matplotlib' in sys.modules; "
            "melsm.plots.population_figure; print(before, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MELSM_CACHE_DIR": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_import_leaves_tqdm_for_the_first_progress_bar(tmp_path):
    """tqdm.auto (≈ 0.1 s, it imports asyncio) comes with the first bar; the ``melsm``
    logger gets a NullHandler and nothing else."""
    code = ("import sys, logging, melsm; print('tqdm' in sys.modules, "
            "[type(h).__name__ for h in logging.getLogger('melsm').handlers])")
    src = Path(__file__).resolve().parents[1] / "src"  # this tree's melsm, installed or not
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MELSM_CACHE_DIR": "",
                               "PYTHONPATH": str(src)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "['NullHandler']"]


def test_import_melsm_leaves_the_heavy_libraries_for_their_commands(tmp_path):
    """``import melsm`` loads JAX and nothing of what a plain ML fit does not need: no
    matplotlib, Dask, distributed, ArviZ or BlackJAX (each public name is imported on
    first use, docs/architecture.md 'Start-up'); a fit then loads its own modules only."""
    heavy = ["matplotlib", "dask", "distributed", "arviz", "blackjax"]
    code = (f"import sys, melsm; heavy = {heavy!r}; print([m for m in heavy if m in sys.modules]); "
            "fit = melsm.Model(data=melsm.datasets.load('reisby'), mean='hamdep ~ week + (1 | id)').fit(); "
            "print([m for m in heavy + ['melsm.reporting.compare', 'melsm.studies.run'] if m in sys.modules])")
    src = Path(__file__).resolve().parents[1] / "src"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MELSM_CACHE_DIR": "",
                               "PYTHONPATH": str(src)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "[]"]
