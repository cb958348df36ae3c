"""A long process that meets many distinct models stays below the kernel's limit on memory
maps: ``melsm.engine.compiled.bound_maps`` releases every compiled function once the
process holds more than ``MAP_SHARE`` × vm.max_map_count maps (docs/architecture.md,
'Long processes'). Checked in a fresh process with the threshold set just above its
starting count, so that a few dozen small programs and three fits cross it several times."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from melsm.engine.compiled import map_count

PROBE = r"""
import json, warnings
import jax.numpy as jnp, numpy as np
import melsm
from melsm.engine import compiled

@compiled.compiled(static_argnames=("k",))
def program(x, k):
    return jnp.sum(jnp.sin(x) ** k) + jnp.linalg.norm(x @ x.T)

program(np.ones((2, 2)), k=1)
data = melsm.datasets.load("reisby")
melsm.Model(mean="hamdep ~ week + (1 | id)", data=data).fit()  # libraries and the runtime loaded once
start = compiled.map_count()
compiled.MAP_SHARE = (start + {headroom}) / compiled._map_limit()
counts = []
for n in range(3, 3 + {programs}):  # distinct shapes: one executable each
    program(np.ones((n, 3)), k=n)
    counts.append(compiled.map_count())
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for mean, within in [("hamdep ~ week + endog + (1 | id)", "~ 1"), ("hamdep ~ week + (1 | id)", "~ week"),
                         ("hamdep ~ week + endog + endweek + (1 | id)", "~ week")]:
        melsm.Model(mean=mean, within=within, data=data).fit()
        counts.append(compiled.map_count())
print(json.dumps({{"start": start, "threshold": start + {headroom}, "counts": counts,
                  "releases": compiled.releases()}}))
"""


@pytest.mark.skipif(map_count() is None, reason="needs /proc (Linux)")
def test_memory_maps_stay_bounded_over_many_distinct_models():
    headroom, programs = 150, 36
    src = Path(__file__).resolve().parents[1] / "src"
    done = subprocess.run([sys.executable, "-c", PROBE.format(headroom=headroom, programs=programs)],
                          capture_output=True, text=True, timeout=1200, env={
                              "PATH": "/usr/bin:/bin", "PYTHONPATH": str(src),
                              "HOME": str(Path.home()), "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Each small program adds a few maps (≈ 6), a fit a few hundred: without the bound the
    # count would grow past start + 36 × 6 + 3 × 300; with it, a release comes before the
    # compilation that finds the count above the threshold, so no count exceeds the
    # threshold by more than one fit's maps (< 1,500).
    assert out["releases"] >= 2
    assert max(out["counts"]) < out["threshold"] + 1500
    assert max(out["counts"][:programs]) < out["threshold"] + 100
