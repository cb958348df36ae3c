"""ML fits of data held by a Dask cluster (melsm.distributed): the same fit as in memory, from
a Parquet directory and from a Dask DataFrame, after a worker is killed mid-fit, and the
one-line errors for data it cannot take."""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest

import melsm
from melsm.distributed.remote import RemoteBlocks

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

MEAN, WITHIN = "y ~ x + (1 | g)", "~ w + (1 | g)"


def simulated(groups: int = 120, size: int = 8, seed: int = 1) -> pd.DataFrame:
    """Random intercepts in the mean and the log variance, a level-1 covariate in each."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    x, w = rng.normal(size=g.size), rng.normal(size=g.size)
    u, v = 0.5 * rng.normal(size=groups), 0.4 * rng.normal(size=groups)
    y = 1 + 0.5 * x + u[g] + np.exp(0.5 * (0.2 + 0.3 * w + v[g])) * rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "w": w, "g": g})


def by_group(frame: pd.DataFrame, partitions: int = 4):
    """A Dask DataFrame whose partitions hold whole groups."""
    return dd.from_pandas(frame.set_index("g"), npartitions=partitions, sort=True).reset_index()


@pytest.fixture(scope="module")
def data():
    return simulated()


@pytest.fixture(scope="module")
def in_memory(data):
    return melsm.Model(MEAN, WITHIN, data=data).fit()


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False}) as c:
        yield c


def assert_same_fit(fit, reference):
    assert isinstance(fit, type(reference))
    assert fit.converged
    assert fit.names == reference.names
    np.testing.assert_allclose(fit.estimates, reference.estimates, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fit.std_errors, reference.std_errors, rtol=0, atol=1e-8)
    assert abs(fit.loglik - reference.loglik) < 1e-8
    np.testing.assert_allclose(fit.modes, reference.modes, rtol=0, atol=1e-8)
    assert (fit.n_obs, fit.n_groups) == (reference.n_obs, reference.n_groups)
    assert abs(fit.bic - reference.bic) < 1e-7


def fit_on(cluster, source, **kwargs):
    model = melsm.Model(MEAN, WITHIN, data=source, scheduler=cluster.scheduler_address)
    try:
        return model.fit(**kwargs), model
    finally:
        model.close()


def test_dask_frame_fit_equals_in_memory(cluster, data, in_memory):
    model = melsm.Model(MEAN, WITHIN, data=by_group(data), scheduler=cluster.scheduler_address)
    try:
        fit = model.fit()
        assert_same_fit(fit, in_memory)
        assert str(fit.summary()).splitlines()[:3] == str(in_memory.summary()).splitlines()[:3]
        with pytest.raises(melsm.MelsmInputError, match="held by a Dask cluster"):
            fit.random_effects()
    finally:
        model.close()
    with pytest.raises(melsm.MelsmInputError, match=r"released \(model.close\(\)\)"):
        fit.random_effects()


def test_parquet_directory_fit_equals_in_memory(cluster, data, in_memory, tmp_path):
    # groups shuffled in the file: the fit orders them by label, as in memory
    frame = data.sample(frac=1.0, random_state=0)
    by_group(frame, 3).to_parquet(tmp_path / "data")
    fit, _ = fit_on(cluster, tmp_path / "data")
    assert_same_fit(fit, in_memory)


def test_factor_and_level2_function_equal_in_memory(cluster, data):
    """A text factor (levels from every partition) and a level-2 variance function (G
    gathered on the client in label order), with string group labels."""
    frame = data.assign(site=np.where(data.x > 0.3, "b", np.where(data.x < -0.3, "a", "c")),
                        z=(data.g % 3).astype(float), g=data.g.map(lambda k: f"s{k:03d}"))
    mean, within = "y ~ x + C(site) + (1 | g)", "~ w"
    reference = melsm.Model(mean, within, between="~ z", data=frame).fit()
    model = melsm.Model(mean, within, between="~ z", data=dd.from_pandas(frame.set_index("g"), npartitions=3,
                                                                       sort=True).reset_index(),
                        scheduler=cluster.scheduler_address)
    try:
        assert_same_fit(model.fit(), reference)
    finally:
        model.close()


def test_rows_needed_in_memory_are_refused(cluster, data):
    model = melsm.Model(MEAN, WITHIN, data=by_group(data), scheduler=cluster.scheduler_address)
    try:
        with pytest.raises(melsm.MelsmInputError, match="held by a Dask cluster"):
            model.with_response(data["y"].to_numpy())
    finally:
        model.close()


def test_group_split_across_partitions(cluster, data):
    split = dd.from_pandas(data, npartitions=7, sort=False)  # cut every 138 rows: groups of 8 are split
    with pytest.raises(melsm.MelsmInputError, match=r"^group '17' of grouping column 'g' is split across "
                                                    r"partitions 0 and 1; write the data partitioned by 'g'"):
        melsm.Model(MEAN, WITHIN, data=split, scheduler=cluster.scheduler_address)


def test_missing_column(data):
    with pytest.raises(melsm.MelsmInputError, match="unknown column 'w'"):
        melsm.Model(MEAN, WITHIN, data=by_group(data.drop(columns="w")))


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(melsm.MelsmInputError, match="no Parquet data at .*: the path does not exist"):
        melsm.Model(MEAN, WITHIN, data=tmp_path / "nothing-here")


def test_stateful_transform_refused(data):
    with pytest.raises(melsm.MelsmInputError, match=r"center\(\) in the mean formula needs the whole column"):
        melsm.Model("y ~ center(x) + (1 | g)", WITHIN, data=by_group(data))


def test_worker_killed_mid_fit(cluster, data, in_memory, tmp_path, monkeypatch):
    """A worker killed (SIGKILL) after a few evaluations: its blocks are recomputed from the
    Parquet files, the nanny starts a new worker, and the fit is the same."""
    by_group(data).to_parquet(tmp_path / "data")
    original = RemoteBlocks.value_grad_nodes
    killed = []

    def killing(self, *args, **kwargs):
        if self.evaluations == 5 and not killed:
            pids = self.client.run(os.getpid)
            address = sorted(pids)[0]
            os.kill(pids[address], signal.SIGKILL)
            killed.append(address)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RemoteBlocks, "value_grad_nodes", killing)
    fit, _ = fit_on(cluster, tmp_path / "data")
    assert killed
    assert_same_fit(fit, in_memory)


def test_one_task_per_worker_whatever_the_partitions(cluster, data, in_memory, monkeypatch):
    """7 partitions on 2 workers: every evaluation sends at most 2 tasks, which between
    them evaluate each partition once, and the fit is the in-memory one."""
    plans = []
    original = RemoteBlocks.holders

    def recording(self):
        plan = original(self)
        plans.append({worker: list(parts) for worker, parts in plan.items()})
        return plan

    monkeypatch.setattr(RemoteBlocks, "holders", recording)
    fit, _ = fit_on(cluster, by_group(data, 7))
    assert_same_fit(fit, in_memory)
    assert len(plans) > 20 and all(1 <= len(plan) <= 2 for plan in plans)
    assert all(sorted(k for parts in plan.values() for k in parts) == list(range(7)) for plan in plans)
