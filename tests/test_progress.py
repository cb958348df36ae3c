"""Progress and logging (docs/architecture.md, "Progress and logging"): one reporter for
MCMC, studies and the demo's steps; ``progress=False`` is silent, a callable gets
``(done, total)`` up to the total; log messages under the ``melsm`` logger; ``melsm --version``."""

import io
import logging
import re
import warnings

import pytest
from test_study import TINY

import melsm
from melsm.cli import main
from melsm.progress import Progress, from_host, relay

FAST_MEAN = "hamdep ~ week + (1 | id)"


# ---- the reporter itself --------------------------------------------------------------------

def test_false_reports_nothing_and_a_callable_gets_done_and_total(capsys):
    calls = []
    for progress in (False, lambda done, total: calls.append((done, total))):
        with Progress(progress, total=5, desc="x") as bar:
            for _ in range(5):
                bar.advance(failed=0)
            assert bar.step("last", lambda: 42) == 42
    assert capsys.readouterr() == ("", "")
    assert calls == [(k, 5) for k in range(1, 7)]  # the step counts as one more


def test_plain_lines_when_the_stream_is_not_a_terminal():
    stream = io.StringIO()
    with Progress(None, total=20, desc="tiny", unit="replicates", initial=4, file=stream) as bar:
        for k in range(16):
            bar.advance(failed=k // 10)
    lines = stream.getvalue().splitlines()
    # one line per tenth of the work (from 4/20 on: 6/20, 8/20, ...) and the last one
    assert [int(re.match(r"tiny: (\d+)/20 replicates, \d+ s", line).group(1)) for line in lines] == list(
        range(6, 21, 2))
    assert lines[-1].endswith("failed=1") and "left" not in lines[-1] and "left" in lines[0]

    steps = io.StringIO()
    with Progress(None, total=12, file=steps) as bar:
        bar.step("first", lambda: None)
    assert re.fullmatch(r"\[ 1/12\] first \.\.\. \d+\.\d s\n", steps.getvalue())


def test_true_draws_a_tqdm_bar_anywhere():
    stream = io.StringIO()
    with Progress(True, total=3, desc="bar", unit="it", file=stream) as bar:
        bar.update_to(3, failed=1)
    text = stream.getvalue()
    assert "bar: 100%" in text and "3/3" in text and "failed=1" in text


def test_a_bad_progress_value_is_an_input_error():
    with pytest.raises(melsm.MelsmInputError, match="progress must be True, False, None or a function"):
        Progress("yes", total=3)


def test_compiled_code_reaches_its_own_reporter_by_number():
    first, second = [], []
    with relay(Progress(lambda d, t: first.append(d), total=9)) as a, \
            relay(Progress(lambda d, t: second.append(d), total=9)) as b:
        from_host(a, 3)
        from_host(b, 5)
    from_host(a, 7)  # the run is over: nobody listens
    assert a != b and first == [3] and second == [5]


# ---- MCMC, studies, the demo's steps --------------------------------------------------------

@pytest.fixture(scope="module")
def small_model(reisby):
    return melsm.Model(FAST_MEAN, within="~ 1 + (1 | id)", data=reisby)


def test_mcmc_progress(small_model, capsys):
    start = small_model.fit()
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains
        small_model.sample(chains=2, warmup=10, draws=20, start=start, progress=False)
        assert capsys.readouterr() == ("", "")
        calls = []
        small_model.sample(chains=2, warmup=10, draws=20, start=start, progress=lambda d, t: calls.append((d, t)))
        assert capsys.readouterr() == ("", "")
        assert calls == [(10 + k, 30) for k in range(1, 21)] and calls[-1] == (30, 30)
        small_model.sample(chains=2, warmup=10, draws=20, start=start)  # default: stderr is no terminal here
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("MCMC: ") for line in lines) and lines[-1].startswith("MCMC: 30/30 it")


def test_study_progress_reaches_the_total(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(replicates=2))
    calls = []
    melsm.run_study(melsm.load_study(path), tmp_path / "out", workers=1,
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    assert capsys.readouterr().err == ""


def test_demo_steps_report_to_a_callable(monkeypatch, tmp_path, capsys):
    """The demo's steps, with the fits replaced by stand-ins (the real ones: test_cli)."""
    import melsm.demo
    import melsm.reporting.report

    monkeypatch.setattr(melsm.Model, "fit", lambda self, **kw: "fit")
    monkeypatch.setattr(melsm.reporting.report, "report", lambda *a, **kw: None)
    calls = []
    melsm.demo.run_demo(tmp_path / "demo.html", mcmc=False, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(k, 8) for k in range(1, 9)]
    melsm.demo.run_demo(tmp_path / "demo.html", mcmc=False, progress=False)
    assert capsys.readouterr() == ("", "")


# ---- logging and the command line ----------------------------------------------------------

def test_log_messages_under_the_melsm_logger(reisby, caplog):
    melsm.release_compiled()  # so that this fit meets its compiled functions for the first time
    with caplog.at_level(logging.INFO, logger="melsm"):
        fit = melsm.Model(FAST_MEAN, data=reisby).fit()
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert all(name.startswith("melsm.") for name, _ in messages)
    first_use = [m for name, m in messages if name == "melsm.engine.compiled"]
    assert any(re.match(r"(compiling|loading) the likelihood \(value_grad_nodes\) for \d+ groups \(padded\) "
                        r"in \d+ chunks of \d+ rows, n_quad=\d+", m) for m in first_use), first_use
    assert any(re.match(r"value_grad_nodes ready in \d+\.\d s", m) for m in first_use), first_use
    done = [m for name, m in messages if name == "melsm.pipeline" and m.startswith("maximum likelihood in")]
    iterations = sum(stage["iterations"] for stage in fit.stages)
    assert len(done) == 1 and f"log L = {fit.loglik:.4f}, converged" in done[0]
    assert sum(int(n) for n in re.search(r"s: ([\d + ]+) iterations", done[0]).group(1).split(" + ")) == iterations


def test_import_melsm_adds_only_a_null_handler():
    handlers = logging.getLogger("melsm").handlers
    assert handlers and all(isinstance(h, logging.NullHandler) for h in handlers)


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"melsm {version('melsm')}\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_log_on_stderr(capsys, where):
    flag, command = ["-v"], ["fit", "reisby", "--mean", FAST_MEAN, "--json"]
    argv = flag + command if where == "before" else command + flag
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.lstrip().startswith("{")
    assert re.search(r"^melsm\.pipeline: maximum likelihood in \d+\.\d s: [\d + ]+ iterations, log L = -\d+",
                     err, re.M), err
    assert logging.getLogger("melsm").handlers == [h for h in logging.getLogger("melsm").handlers
                                                   if isinstance(h, logging.NullHandler)]
    assert main(command) == 0 and capsys.readouterr().err == ""  # quiet again without -v


def test_ml_fit_reports_its_stages(capsys):
    data = melsm.datasets.load("reisby")
    model = melsm.Model(FAST_MEAN, within="~ week + (1 | id)", data=data)
    calls = []
    fit = model.fit(progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]  # without random scale effects, then the full model
    calls.clear()
    model.fit(start=fit.theta, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]
    model.fit()  # the default: nothing where standard error is no terminal (a log)
    model.fit(progress=False)
    assert capsys.readouterr() == ("", "")


def test_a_delayed_report_stays_silent_when_the_job_is_quick():
    import io
    import time

    quick, slow = io.StringIO(), io.StringIO()
    for stream, pause in ((quick, 0.0), (slow, 0.4)):
        with Progress(True, total=2, desc="fit", file=stream, delay=0.3) as bar:
            bar.step("a", lambda p=pause: time.sleep(p))
            bar.step("b", lambda: None)
    assert quick.getvalue() == ""
    assert "2/2" in slow.getvalue()
    lines = io.StringIO()  # plain lines: a step that started within the delay is written whole
    reporter = Progress(None, total=1, file=lines, delay=0.2)
    reporter.step("slow step", lambda: time.sleep(0.3))
    assert re.fullmatch(r"\[1/1\] slow step \.\.\. 0\.\d s\n", lines.getvalue())
