import json
import os
import shutil
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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright, for the app's and the tables' browser tests;
    skipped without them, except in CI (.ci/run installs them)."""
    executable = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        executable = None
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("the browser tests need Chromium and Playwright: .ci/run installs them")
        pytest.skip("no Chromium or Playwright on this machine")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()
