import json
import warnings
from pathlib import Path

import pytest

import melsm

REFERENCE = Path(__file__).parent / "reference"


def reference(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text())


@pytest.fixture(scope="module", autouse=True)
def release_compiled_after_module():
    """Each test file compiles its own models; XLA keeps memory maps for every compiled
    model, and a worker that ran several files could pass Linux's per-process limit."""
    yield
    melsm.release_compiled()


@pytest.fixture(scope="session")
def tutorial():
    return melsm.datasets.load("tutorial")


@pytest.fixture(scope="session")
def reisby():
    return melsm.datasets.load("reisby")


def fit(data, mean, within="~ 1", between=None, association="correlated", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        return melsm.Model(mean=mean, within=within, between=between, data=data,
                           association=association).fit(**kwargs)
