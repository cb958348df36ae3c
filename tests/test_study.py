"""Simulation studies: summary statistics against hand computation, reproducible and
failure-proof replicates, the Parquet store, input errors, and a study on a real local
Dask cluster that is killed mid-way and resumed without losing or repeating a replicate."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

import melsm
import melsm.studies.replicate as study_module
from melsm.cli import main
from melsm.reporting.plots import coverage_figure, rejection_figure
from melsm.studies.replicate import ROW_COLUMNS, replicate_rows
from melsm.studies.run import Store
from melsm.studies.study import Study
from melsm.studies.summary import summarise

TINY = """
name = "tiny"
seed = 5
replicates = {replicates}
focus = "within:g"

[model]
mean = "y ~ x + g + (1 | group)"
within = "~ x + g + (1 | group)"

[truth]
"mean:Intercept" = 0.0
"mean:x" = 0.5
"mean:g" = 0.3
"within:Intercept" = 0.0
"within:x" = 0.0
"within:g" = 0.0
"sd:mean:Intercept" = 0.5
"sd:within:Intercept" = 0.5
"corr:mean:Intercept,within:Intercept" = 0.0

[design]
groups = 20
group_size = 6
covariates = {{ x = {{ level = 1 }}, g = {{ level = 2 }} }}

[fits.full]
mean = "y ~ x + g + (1 | group)"
within = "~ x + g + (1 | group)"

[fits.ignoring]
mean = "y ~ x + g + (1 | group)"
within = "~ x + g"
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(replicates=4))
    return melsm.load_study(path)


def row(model, parameter, truth, estimate, se, replicate, converged=True, error="", design=0):
    return {"design": design, "replicate": replicate, "model": model, "parameter": parameter, "truth": truth,
            "estimate": estimate, "se": se, "ci_low": estimate - 1.959963984540054 * se,
            "ci_high": estimate + 1.959963984540054 * se, "converged": converged, "boundary": "", "loglik": -1.0,
            "seconds": 0.1, "error": error, "message": ""}


def test_summary_statistics_by_hand():
    """Four converged replicates, one that did not converge and one failed fit."""
    est, se = np.array([0.1, -0.25, 0.5, 0.05]), np.array([0.1, 0.2, 0.2, 0.1])
    rows = [row("m", "a", 0.0, e, s, r) for r, (e, s) in enumerate(zip(est, se, strict=True))]
    rows += [row("m", "sd:x", 0.3, 0.3 + e, s, r) for r, (e, s) in enumerate(zip(est, se, strict=True))]
    rows += [row("m", "a", 0.0, 9.0, 0.1, 4, converged=False), row("m", "sd:x", 0.3, 9.0, 0.1, 4, converged=False)]
    rows += [row("m", "", np.nan, np.nan, np.nan, 5, converged=False, error="fit failed: boom")]
    summary = summarise(pd.DataFrame(rows).astype(ROW_COLUMNS)).set_index("parameter")
    a, sd = summary.loc["a"], summary.loc["sd:x"]
    assert a["n"] == 4 and a["non_converged"] == 1 and a["failed"] == 1
    assert a["bias"] == pytest.approx(0.1)  # mean of 0.1, -0.25, 0.5, 0.05
    assert a["emp_sd"] == pytest.approx(np.std(est, ddof=1))
    assert a["bias_mcse"] == pytest.approx(np.std(est, ddof=1) / 2)
    assert a["mean_se"] == pytest.approx(0.15)
    assert a["se_ratio"] == pytest.approx(0.15 / np.std(est, ddof=1))
    # |z| = 1, 1.25, 2.5, 0.5: one rejection of H0: a = 0, three CIs cover 0
    assert a["rejection"] == pytest.approx(0.25) and a["rejection_mcse"] == pytest.approx(np.sqrt(0.25 * 0.75 / 4))
    assert a["coverage"] == pytest.approx(0.75) and a["coverage_mcse"] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
    assert a["test"] == "type I"
    assert sd["bias"] == pytest.approx(0.1) and sd["coverage"] == pytest.approx(0.75)
    assert np.isnan(sd["rejection"]) and sd["test"] == ""  # no Wald test of an SD


def test_replicates_are_reproducible_and_failures_are_recorded(tiny, monkeypatch):
    first, again = replicate_rows(tiny, 0, 3), replicate_rows(tiny, 0, 3)
    other = replicate_rows(tiny, 0, 2)
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))
    assert not np.allclose(first["estimate"], other["estimate"])
    assert set(first["model"]) == {"full", "ignoring"} and (first["error"] == "").all()
    truth = first.set_index(["model", "parameter"])["truth"]
    assert truth[("ignoring", "within:g")] == 0 and truth[("full", "sd:within:Intercept")] == 0.5
    assert list(first.dtypes.astype(str)) == list(ROW_COLUMNS.values())

    real_fit = study_module.fit_model

    def failing(data, spec):
        if "(1 | group)" not in spec["within"]:
            raise RuntimeError("optimiser exploded")
        return real_fit(data, spec)

    monkeypatch.setattr(study_module, "fit_model", failing)
    rows = replicate_rows(tiny, 0, 3)
    failed = rows[rows["model"] == "ignoring"]
    assert len(failed) == 1 and failed["error"].iloc[0] == "fit failed: RuntimeError: optimiser exploded"
    np.testing.assert_allclose(rows.loc[rows["model"] == "full", "estimate"],
                               first.loc[first["model"] == "full", "estimate"])
    summary = summarise(rows).set_index(["model", "parameter"])
    assert summary.loc[("full", "within:g"), "failed"] == 0
    assert ("ignoring", "within:g") not in summary.index

    monkeypatch.setattr(study_module, "simulate", lambda *a, **k: 1 / 0)
    rows = replicate_rows(tiny, 0, 1)
    assert rows["error"].tolist() == ["simulation failed: ZeroDivisionError: division by zero"] * 2


def test_grid_of_designs_and_truths(tiny):
    spec = tiny.to_dict()
    spec["grid"] = {"groups": [10, 40], "truth.sd:within:Intercept": [0.0, 0.5]}
    study = Study.from_dict(spec)
    points = study.designs()
    assert [p.label for p in points] == ["groups=10, sd:within:Intercept=0", "groups=10, sd:within:Intercept=0.5",
                                         "groups=40, sd:within:Intercept=0", "groups=40, sd:within:Intercept=0.5"]
    assert [p.design["groups"] for p in points] == [10, 10, 40, 40]
    assert [p.truth["sd:within:Intercept"] for p in points] == [0.0, 0.5, 0.0, 0.5]
    assert tiny.designs()[0].label == "base"
    # a replicate's seed depends on (study seed, design, replicate) only
    rows = replicate_rows(study, 3, 0)
    assert rows["design"].unique().tolist() == [3]


def test_store_writes_atomically_and_resumes_only_the_same_study(tiny, tmp_path):
    out = tmp_path / "out"
    store = Store(out, tiny).open()
    rows = replicate_rows(tiny, 0, 0)
    store.write(0, 0, rows)
    (out / "rows" / ".d0000-r000001.parquet.999.tmp").write_bytes(b"half a file")
    assert store.done() == {(0, 0)}
    with pytest.raises(melsm.MelsmInputError, match="already holds 1 finished replicates of this study"):
        Store(out, tiny).open()
    other = Study.from_dict({**tiny.to_dict(), "seed": 6})
    with pytest.raises(melsm.MelsmInputError, match="holds results of a different study"):
        Store(out, other).open(resume=True)
    resumed = Store(out, tiny.with_replicates(10)).open(resume=True)  # more replicates: same study
    assert not list((out / "rows").glob(".*.tmp"))  # the stopped write's leftovers are cleared
    pd.testing.assert_frame_equal(resumed.read(), rows)
    assert melsm.read_study(out).rows.shape == rows.shape


def test_builtin_studies():
    type1 = melsm.builtin_study("type1", replicates=3)
    assert type1.name == "ignore-scale" and type1.replicates == 3
    assert [p.label for p in type1.designs()] == ["group_size=5", "group_size=20", "group_size=50"]
    assert type1.truth["within:g"] == 0 and type1.truth["sd:within:Intercept"] == 0.5
    assert type1.fits["ignoring"]["within"] == "~ x + g" and type1.focus == ["within:g", "within:x"]
    coverage = melsm.builtin_study("coverage")
    assert coverage.replicates == 500 and coverage.designs()[0].design["groups"] == 65
    assert sum(coverage.design["group_size"]) == 4059
    with pytest.raises(melsm.MelsmInputError, match="unknown built-in study 'nope'"):
        melsm.builtin_study("nope")


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace('name = "tiny"', 'name = "tiny'), "cannot read study file"),
    (lambda t: "colour = 1\n" + t, "unknown study key 'colour'"),
    (lambda t: t.replace('"within:g" = 0.0', '"within:h" = 0.0'), "unknown parameter 'within:h' in truth"),
    (lambda t: t.replace('within = "~ x + g"', 'within = "~ x + z"'), "fitted model 'ignoring': unknown column 'z'"),
    (lambda t: t.replace("[fits.full]", "[grid]\nclusters = [1, 2]\n\n[fits.full]"), "grid 'clusters' is not"),
    (lambda t: t.replace('focus = "within:g"', 'focus = "within:w"'), "focus 'within:w' is not a parameter"),
    (lambda t: t.replace("replicates = 4", "replicates = 0"), "replicates must be ≥ 1"),
    (lambda t: t.replace("groups = 20", "groups = 1"), "groups must be ≥ 2"),
], ids=["toml-syntax", "unknown-key", "truth-name", "fit-column", "grid-key", "focus", "replicates", "groups"])
def test_bad_study_files(tmp_path, capsys, edit, expected):
    path = tmp_path / "bad.toml"
    path.write_text(edit(TINY.format(replicates=4)))
    with pytest.raises(melsm.MelsmInputError) as info:
        melsm.load_study(path)
    assert expected in str(info.value) and len(str(info.value).splitlines()) == 1
    assert main(["simulate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("melsm: error: ") and len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out").exists()  # nothing written, no cluster started


def test_cli_needs_one_study(capsys, tmp_path):
    assert main(["simulate"]) == 2
    assert "give a study file" in capsys.readouterr().err
    assert main(["simulate", "x.toml", "--builtin", "type1"]) == 2
    assert main(["simulate", str(tmp_path / "none.toml")]) == 2
    assert "no such study file" in capsys.readouterr().err


def test_figures_show_the_summary():
    rows = [row(m, p, 0.0, e, 0.1, r, design=d) for d in (0, 1) for m in ("full", "ignoring")
            for p in ("within:g", "sd:within:Intercept") for r, e in enumerate((0.1, -0.3, 0.05, 0.25))]
    summary = summarise(pd.DataFrame(rows).astype(ROW_COLUMNS))
    fig = rejection_figure(summary, ["within:g"])
    top = fig.axes[0]
    rates = {c.get_label(): c.lines[0].get_ydata() for c in top.containers}
    assert sorted(rates) == ["full", "ignoring"]
    np.testing.assert_allclose(rates["full"], [50.0, 50.0])  # |z| = 1, 3, 0.5, 2.5: two of four reject
    assert [line.get_ydata()[0] for line in top.get_lines() if line.get_label() == "nominal 5%"] == [5]
    cover = coverage_figure(summary)
    assert len(cover.axes) == 2
    xs = [x for container in cover.axes[0].containers for x in container[0].get_xdata()]
    np.testing.assert_allclose(sorted(xs), [50.0] * 4)


# ---- a real local Dask cluster, killed mid-way and resumed -------------------------------------

def _processes_in_group(pgid: int) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(proc.pid)
        except (ProcessLookupError, psutil.Error, PermissionError):
            pass
    return found


@pytest.mark.slow
def test_study_killed_mid_way_resumes_without_losing_or_repeating_replicates(tmp_path):
    replicates = 30
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(replicates=replicates))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "melsm.cli", "simulate", str(path), "--out", str(out), "--workers", "2",
               "--quiet"]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    files = out / "rows"
    deadline = time.monotonic() + 300
    try:
        while len(list(files.glob("*.parquet"))) < 3:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no replicate finished in 300 s"
            time.sleep(0.02)
    finally:  # the whole session: the CLI, the Dask scheduler and its worker processes
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    for _ in range(100):
        if not _processes_in_group(first.pid):
            break
        time.sleep(0.1)
    assert not _processes_in_group(first.pid)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in files.glob("*.parquet")}
    assert 3 <= len(before) < replicates, "the study finished before it could be stopped"

    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "tiny: 30 replicates x 1 design(s) x 2 model(s)" in resumed.stdout
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in files.glob("*.parquet")}
    assert sorted(after) == [f"d0000-r{r:06d}.parquet" for r in range(replicates)]
    assert all(after[name] == before[name] for name in before)  # finished replicates were not redone
    assert not list(files.glob(".*"))  # no temporary files left

    rows = melsm.read_study(out).rows
    keys = rows[["design", "replicate", "model"]].drop_duplicates()
    assert len(keys) == replicates * 2
    assert set(map(tuple, keys.to_numpy())) == {(0, r, m) for r in range(replicates) for m in ("full", "ignoring")}
    assert rows.groupby(["design", "replicate", "model", "parameter"]).size().max() == 1  # no duplicates
    assert (rows["error"] == "").all()
    summary = pd.read_csv(out / "summary.csv").set_index(["model", "parameter"])
    assert summary.loc[("full", "within:g"), "n"] + summary.loc[("full", "within:g"), "non_converged"] == replicates


@pytest.mark.slow
def test_study_on_an_existing_scheduler(tiny, tmp_path):
    """``scheduler=ADDRESS``: the replicates run on a cluster this process did not start."""
    from distributed import LocalCluster

    calls = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                      scheduler_kwargs={"dashboard": False}) as cluster:
        results = melsm.run_study(tiny.with_replicates(3), tmp_path / "out", scheduler=cluster.scheduler_address,
                                  progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(set(results.rows["replicate"])) == [0, 1, 2]
    expected = replicate_rows(tiny, 0, 2)  # the same seed in this process: the same estimates
    got = results.rows[results.rows["replicate"] == 2]
    np.testing.assert_allclose(got["estimate"], expected["estimate"], rtol=1e-6)
    summary = results.summary().set_index(["model", "parameter"])
    assert summary.loc[("full", "within:g"), "n"] + summary.loc[("full", "within:g"), "non_converged"] == 3


def test_an_unreadable_replicate_file_is_set_aside_and_redone(tiny, tmp_path, capsys):
    """A file cut short (a full disk, an interrupted copy) neither counts as done nor blocks
    the study: reading skips it with a warning, resuming moves it aside and runs it again."""
    study = tiny.with_replicates(3)
    out = tmp_path / "out"
    store = Store(out, study).open()
    for r in range(3):
        store.write(0, r, replicate_rows(study, 0, r))
    damaged = store.path(0, 1)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.warns(melsm.MelsmStudyWarning, match="skipped 1 stored replicate file"):
        partial = melsm.read_study(out)
    assert sorted(set(partial.rows["replicate"])) == [0, 2]
    toml = tmp_path / "tiny3.toml"
    toml.write_text(TINY.format(replicates=3))
    code = main(["simulate", str(toml), "--out", str(out), "--resume", "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: 1 stored replicate file(s) could not be read and were moved to" in err
    assert (out / "unreadable" / damaged.name).exists()
    results = melsm.read_study(out)
    assert sorted(set(results.rows["replicate"])) == [0, 1, 2]
    redone = results.rows[results.rows["replicate"] == 1].reset_index(drop=True)
    np.testing.assert_allclose(redone["estimate"], replicate_rows(study, 0, 1)["estimate"], rtol=1e-6)
