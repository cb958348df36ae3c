"""The command line: bad input prints one line ``melsm: error: ...`` and exits 2, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from melsm.cli import main

FAST_MEAN = "hamdep ~ week + (1 | id)"
RIESBY_MEAN = "hamdep ~ week + endog + endweek + (1 | id)"
GLMMTMB_LOGLIK = -1134.4997077  # glmmTMB, random location intercept, within ~ week + endog, between ~ endog


def error_line(stderr: str) -> str:
    """The single line a CLI user error prints."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert stderr == lines[0] + "\n"
    assert lines[0].startswith("melsm: error: ")
    assert lines[0].isprintable()
    assert "Traceback" not in stderr
    return lines[0]


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- bad files, in-process --------------------------------------------------------------

def non_numeric_csv(reisby, path: Path) -> Path:
    data = reisby.astype({"week": str})
    data.loc[3, "week"] = "abc"
    data.to_csv(path, index=False)
    return path


def make_bad_file(kind: str, tmp_path: Path, reisby) -> Path:
    path = tmp_path / f"{kind}.csv"
    if kind == "non-numeric":
        return non_numeric_csv(reisby, path)
    if kind == "unknown-column":
        reisby.rename(columns={"week": "wk"}).to_csv(path, index=False)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "header-only":
        path.write_text("id,hamdep,week\n")
    elif kind == "binary":  # a PNG header and noise: not UTF-8
        noise = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + noise)
    elif kind == "control-characters":  # parses as CSV, with terminal escapes in the column names
        path.write_bytes(b"\x1b[31mred\x00,\x07bell\x0bx\n1,2\n3,4\n")
    elif kind == "ragged":
        path.write_text("id,hamdep,week\n1,2,3\n4,5,6,7,8\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "missing-file":
        pass
    return path


BAD_FILES = {
    # kind: text the error line must contain
    "non-numeric": ["column 'week'", "'abc'", "row 3"],
    "unknown-column": ["unknown column 'week'", "mean formula", "columns: id, hamdep, wk"],
    "empty": ["cannot read", "empty"],
    "header-only": ["empty", "no rows"],
    "binary": ["cannot read", "as CSV"],
    "control-characters": ["unknown response column 'hamdep'", "\\x1b"],
    "ragged": ["cannot read", "as CSV"],
    "folder": ["is a folder"],
    "missing-file": ["no such file", "missing-file.csv"],
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_file_gives_one_line_and_exit_2(capsys, tmp_path, reisby, kind):
    path = make_bad_file(kind, tmp_path, reisby)
    code, out, err = run_main(capsys, "fit", str(path), "--mean", FAST_MEAN)
    assert code == 2
    assert out == ""
    line = error_line(err)
    for text in BAD_FILES[kind]:
        assert text in line


@pytest.mark.parametrize("argv, expected", [
    (["--mean", "hamdep ~ week + (1 | id)", "--within", "~ wk"], ["'wk'", "within formula"]),
    (["--mean", FAST_MEAN, "--between", "~ week"], ["between covariate 'week'", "group 101"]),
    (["--mean", "hamdep ~ week +"], ["ends with '+'"]),
    (["--mean", "hamdep ~ week + (1 || id)", "--within", "~ 1 + (1 | id)", "--association", "quadratic"],
     ["'||'"]),
    (["--mean", FAST_MEAN, "--within", "~ 1 + (1 | id)", "--quadrature", "0"], ["quadrature", "not 0"]),
    (["--mean", FAST_MEAN, "--within", "~ 1 + (1 | id)", "--quadrature", "100000"],
     ["quadrature=100000 gives 100,000 nodes per group", "limit is 10,000"]),
], ids=["unknown-within", "between-varies", "trailing-plus", "double-bar", "quadrature-0", "quadrature-huge"])
def test_bad_model_gives_one_line_and_exit_2(capsys, argv, expected):
    code, out, err = run_main(capsys, "fit", "reisby", *argv)
    assert code == 2 and out == ""
    line = error_line(err)
    for text in expected:
        assert text in line


# ---- a real process: no traceback ----------------------------------------------------------

def run_cli(*argv, entry_point=False) -> subprocess.CompletedProcess:
    if entry_point:
        script = Path(sys.executable).parent / "melsm"
        if not script.exists():
            pytest.skip("the melsm entry point is not installed next to this Python")
        command = [str(script), *argv]
    else:
        command = [sys.executable, "-m", "melsm.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["non-numeric", "binary", "folder"])
def test_subprocess_bad_file_no_traceback(tmp_path, reisby, kind):
    path = make_bad_file(kind, tmp_path, reisby)
    result = run_cli("fit", str(path), "--mean", FAST_MEAN)
    assert result.returncode == 2
    assert result.stdout == ""
    line = error_line(result.stderr)
    for text in BAD_FILES[kind]:
        assert text in line


def test_entry_point_unknown_column_no_traceback(tmp_path, reisby):
    path = make_bad_file("unknown-column", tmp_path, reisby)
    result = run_cli("fit", str(path), "--mean", FAST_MEAN, entry_point=True)
    assert result.returncode == 2
    assert "unknown column 'week'" in error_line(result.stderr)


# ---- success ----------------------------------------------------------------------------------

def test_fit_json_matches_glmmtmb(capsys):
    code, out, err = run_main(capsys, "fit", "reisby", "--mean", RIESBY_MEAN, "--within", "~ week + endog",
                              "--between", "~ endog", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {"loglik", "converged", "n_obs", "n_groups", "params"} <= result.keys()
    assert result["converged"] is True
    assert result["n_obs"] == 375 and result["n_groups"] == 66 and result["n_dropped"] == 0
    assert result["loglik"] == pytest.approx(GLMMTMB_LOGLIK, abs=1e-4)
    assert all(set(p) == {"name", "estimate", "se"} for p in result["params"])
    assert all(isinstance(p["estimate"], float) and isinstance(p["se"], float) for p in result["params"])
    names = [p["name"] for p in result["params"]]
    assert names == ["mean:Intercept", "mean:week", "mean:endog", "mean:endweek",
                     "within:Intercept", "within:week", "within:endog",
                     "between:Intercept", "between:endog"]


def test_fit_json_with_random_scale(capsys):
    code, out, err = run_main(capsys, "fit", "reisby", "--mean", RIESBY_MEAN,
                              "--within", "~ week + endog + (1 | id)", "--between", "~ endog",
                              "--association", "none", "--json")
    assert code == 0, err
    result = json.loads(out)
    params = {p["name"]: p for p in result["params"]}
    assert params["sd:within:Intercept"]["estimate"] == pytest.approx(0.6986, abs=2e-3)
    assert params["sd:within:Intercept"]["se"] > 0
    assert not any(name.startswith("corr:") for name in params)  # association none
    assert result["quadrature_points"] > 0


def test_fit_summary_reports_dropped_rows(capsys, tmp_path, reisby):
    data = reisby.astype({"week": float})
    data.loc[[0, 10], "week"] = np.nan
    path = tmp_path / "gaps.csv"
    data.to_csv(path, index=False)
    code, out, err = run_main(capsys, "fit", str(path), "--mean", FAST_MEAN)
    assert code == 0, err
    assert "Dropped 2 rows with missing values" in out
    assert "Observations: 373" in out
    assert err.splitlines() == ["warning: dropped 2 of 375 rows with missing values in the model's columns "
                                "(missing values: week: 2)"]


# ---- demo and report --------------------------------------------------------------------

def test_demo_writes_the_report(capsys, tmp_path):
    """The ML part of the demo (the MCMC part is the same code with more fits: test_report)."""
    out_file = tmp_path / "demo.html"
    code, out, err = run_main(capsys, "demo", "--no-mcmc", "--out", str(out_file), "--figures", str(tmp_path / "f"))
    assert code == 0 and out == f"Report written to {out_file.resolve()}\n"
    steps = [line for line in err.splitlines() if line.startswith("[")]
    assert len(steps) == 8 and steps[0].startswith("[1/8] Model 1, maximum likelihood ...")
    assert all(line.endswith(" s") for line in steps)
    html = out_file.read_text(encoding="utf-8")
    assert html.count("<h2>") == 2 and "hamdep by id: Maximum likelihood" in html
    assert html.count("data:image/png;base64,") == 7 + 4  # London 7, Riesby: observed + 3 caterpillars
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "caterpillar_icc.png", "caterpillar_mean.png", "caterpillar_variance.png", "lines_mean.png",
        "lines_variance.png", "observed.png", "population.png"]


def test_report_command(capsys, tmp_path):
    out_file = tmp_path / "r.html"
    code, out, err = run_main(capsys, "report", "reisby", "--model", f"small = {FAST_MEAN}",
                              "--model", f"{FAST_MEAN} ; ~ week + (1 | id)", "--out", str(out_file))
    assert code == 0 and "Report written to" in out and "[2/2] fitting model 2" in err
    html = out_file.read_text(encoding="utf-8")
    assert "<th colspan=\"2\">small</th>" in html and "<th colspan=\"2\">model 2</th>" in html
    # the LR test in the comparison's LR table and in the findings
    assert "<td>model 2 vs small<sup>a</sup></td><td>35.25</td><td>3</td><td>χ̄²: ½χ²(2) + ½χ²(3)</td>" in html
    assert "model 2 vs small: LR = " in html and " on χ̄²: ½χ²(2) + ½χ²(3)" in html


@pytest.mark.parametrize("spec, message", [
    ("a = ", "cannot read --model 'a = '"),
    ("hamdep ~ week ; ; ~ 1", "cannot read --model"),
    ("m = hamdep ~ week + (1 | id) ; ~ 1 ; ~ 1 ; ~ 1", "cannot read --model"),
    ("m = hamdep ~ wek + (1 | id)", "wek"),
])
def test_report_command_bad_model(capsys, spec, message, tmp_path):
    code, out, err = run_main(capsys, "report", "reisby", "--model", spec, "--out", str(tmp_path / "x.html"))
    assert code == 2 and message in error_line(err)


def test_between_functions_from_the_command_line(capsys):
    code, out, err = run_main(capsys, "fit", "reisby", "--mean", FAST_MEAN, "--within", "~ week + (1 | id)",
                              "--between", "~ endog", "--between", "within:Intercept=~ endog", "--json")
    assert code == 2 and "name every --between formula" in error_line(err)
    code, out, err = run_main(capsys, "fit", "reisby", "--mean", FAST_MEAN, "--within", "~ week + (1 | id)",
                              "--between", "mean:Intercept=~ endog", "--between", "within:Intercept=~ endog",
                              "--json")
    assert code == 0, err
    names = [p["name"] for p in json.loads(out)["params"]]
    assert {"between:endog", "between:within:Intercept:endog"} <= set(names)
    code, out, err = run_main(capsys, "fit", "reisby", "--mean", FAST_MEAN, "--within", "~ week + (1 | id)",
                              "--between", "within:week=~ endog")
    assert code == 2 and "needs week among the random effects of the within formula" in error_line(err)


def test_a_huge_column_name_is_not_echoed(capsys, tmp_path, reisby):
    """A CSV header of a million characters: the error line quotes it cut short."""
    path = tmp_path / "wide.csv"
    reisby.rename(columns={"week": "w" * 1_000_000}).to_csv(path, index=False)
    code, out, err = run_main(capsys, "fit", str(path), "--mean", "hamdep ~ week + (1 | id)")
    assert code == 2 and out == ""
    line = error_line(err)
    assert "unknown column 'week'" in line and len(line) < 1000
