"""Command-line interface: ``melsm fit DATA.csv --mean "..." [--within ...] [--json]``.

User mistakes (bad formulas, bad data, unreadable files) print one line,
``melsm: error: ...``, and exit with status 2; they never show a traceback. ``-v``
shows melsm's log messages (compilation, fits, studies) on standard error, ``-vv`` its
debug messages; ``--version`` prints the installed version.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from melsm.demo import DEMO_MCMC, RIESBY
from melsm.errors import MelsmInputError, MelsmStudyWarning
from melsm.model.association import NAMES as ASSOCIATIONS
from melsm.progress import Progress


def _read_data(source: str):
    import pandas as pd

    from melsm import datasets

    if source in datasets.NAMES and not Path(source).exists():
        return datasets.load(source)
    path = Path(source)
    if not path.exists():
        raise MelsmInputError(f"no such file '{source}' (built-in data sets: "
                              f"{', '.join(datasets.NAMES)})")
    if path.is_dir():
        raise MelsmInputError(f"'{source}' is a folder, not a CSV file")
    try:
        data = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise MelsmInputError(f"cannot read '{source}' as CSV: the file is empty") from None
    except (OSError, ValueError, csv.Error) as err:  # unreadable, not text, not CSV
        reason = str(err).strip().splitlines()
        raise MelsmInputError(f"cannot read '{source}' as CSV: "
                              f"{reason[0] if reason else type(err).__name__}") from None
    return data


def _one_line(text: str) -> str:
    """``text`` on one line of printable characters (column names of a garbage file can hold anything)."""
    text = " ".join(str(text).split())
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                   for ch in text)


def _fit(args) -> int:
    import melsm

    data = _read_data(args.data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = melsm.Model(mean=args.mean, within=args.within, between=_between(args.between),
                            data=data, association=args.association)
        if getattr(args, "method", "ml") == "mcmc":
            fit = model.sample(chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed,
                               priors=args.priors, progress=None)
        else:
            fit = model.fit(quadrature=args.quadrature, max_iter=args.max_iter)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if args.json:
        out = fit.to_dict()
        out["warnings"] = notes
        print(json.dumps(out, indent=2))
    else:
        print(fit.summary())
        for note in notes:
            print(f"warning: {note}", file=sys.stderr)
    return 0


def _between(values: list[str] | str | None):
    """``--between`` values: one plain formula (the random location intercept's), or
    ``EFFECT=FORMULA`` items (``within:Intercept=~ g``, ``corr:mean:Intercept,within:Intercept=~ g``)."""
    if values is None or isinstance(values, str):
        return values
    named = [v for v in values if "=" in v.split("~", 1)[0]]
    if not named:
        if len(values) > 1:
            raise MelsmInputError("give one plain --between formula, or name each one: --between "
                                  "'mean:Intercept=~ g' --between 'within:Intercept=~ g'")
        return values[0]
    if len(named) != len(values):
        raise MelsmInputError("name every --between formula once one is named (EFFECT=FORMULA)")
    functions = {}
    for value in values:
        effect, _, formula = value.partition("=")
        functions[effect.strip()] = formula.strip()
    return functions


def _parse_model(text: str, index: int) -> tuple[str, dict]:
    """``"[NAME =] MEAN [; WITHIN [; BETWEEN]]"`` → (name, formulas)."""
    name, sep, rest = text.partition("=")
    if not sep or "~" in name:
        name, rest = f"model {index}", text
    parts = [p.strip() for p in rest.split(";")]
    if not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise MelsmInputError(f"cannot read --model '{text}': write \"NAME = MEAN ; WITHIN ; BETWEEN\" "
                              "(WITHIN and BETWEEN optional)")
    formulas = {"mean": parts[0], "within": parts[1] if len(parts) > 1 else "~ 1",
                "between": parts[2] if len(parts) > 2 else None}
    return name.strip(), formulas


def _report(args) -> int:
    import melsm
    from melsm.reporting.report import report

    data = _read_data(args.data)
    models = [_parse_model(text, k + 1) for k, text in enumerate(args.model)]
    fits, names = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # problems are shown in the report
        # every model is checked before the first is fitted
        built = [melsm.Model(data=data, association=args.association, **formulas) for _, formulas in models]
        with Progress(total=len(models), desc="report", unit="model") as steps:
            for (name, _), model in zip(models, built, strict=True):
                fits.append(steps.step(f"fitting {name}", lambda m=model: m.sample(
                    chains=args.chains, warmup=args.warmup, draws=args.draws, seed=args.seed, priors=args.priors,
                    progress=False) if args.method == "mcmc" else m.fit(quadrature=args.quadrature,
                                                                         max_iter=args.max_iter)))
                names.append(name)
    report(fits, names, path=args.out, title=args.title)
    print(f"Report written to {Path(args.out).resolve()}")
    return 0


def _demo(args) -> int:
    from melsm.demo import run_demo

    path, _ = run_demo(args.out, mcmc=not args.no_mcmc, chains=args.chains, warmup=args.warmup,
                       draws=args.draws, seed=args.seed, figures=args.figures)
    print(f"Report written to {path}")
    if args.open:
        import webbrowser

        webbrowser.open(path.as_uri())
    return 0


def _positive_option(option: str, value: float, unit: str) -> float:
    """An app option's value, or a one-line error unless it is a positive, finite number."""
    import math

    if not (math.isfinite(value) and value > 0):
        raise MelsmInputError(f"{option} must be a positive number of {unit}, not {value:g}")
    return value


def _app(args) -> int:
    from melsm.app import serve

    if not 0 <= args.port <= 65535:
        raise MelsmInputError(f"--port must be between 0 and 65535, not {args.port}")
    max_upload = int(_positive_option("--max-upload-mb", args.max_upload_mb, "MB") * 2**20)
    if max_upload < 1:
        raise MelsmInputError(f"--max-upload-mb {args.max_upload_mb:g} is less than a byte")
    job_timeout = _positive_option("--job-timeout", args.job_timeout, "seconds")
    try:
        serve(args.host, args.port, open_browser=args.open, max_upload=max_upload, job_timeout=job_timeout)
    except OSError as err:
        raise MelsmInputError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    return 0


def _simulate(args) -> int:
    from melsm.studies.run import Store, run_study
    from melsm.studies.study import builtin, load

    if (args.study is None) == (args.builtin is None):
        raise MelsmInputError("give a study file (melsm simulate STUDY.toml) or --builtin NAME, not both")
    study = load(args.study) if args.study is not None else builtin(args.builtin)
    if args.replicates is not None:
        study = study.with_replicates(args.replicates)
    out = Path(args.out or f"melsm-study-{study.name}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MelsmStudyWarning)
            results = run_study(study, out, scheduler=args.scheduler, workers=args.workers, resume=args.resume,
                                progress=False if args.quiet else None)
        for note in caught:
            print(f"warning: {_one_line(note.message)}", file=sys.stderr)
    except KeyboardInterrupt:
        done = len(Store(out, study).done())
        print(f"\nstopped: {done} replicates are saved in {out}; continue with --resume", file=sys.stderr)
        return 130
    summary = results.summary()
    summary.to_csv(out / "summary.csv", index=False)
    figure = Path(args.figure) if args.figure else out / "figure.png"
    if not summary.empty:
        results.figure().savefig(figure, dpi=110)
    n_designs = len(study.designs())
    print(f"{study.name}: {study.replicates} replicates x {n_designs} design(s) x {len(study.fits)} model(s), "
          f"{results.seconds:.0f} s")
    print(results.table(study.focus))
    print(f"\nRows: {out / 'rows'}  summary: {out / 'summary.csv'}"
          + (f"  figure: {figure}" if not summary.empty else ""))
    return 0


def _mcmc_options(parser, chains: int = 16, warmup: int = 1000, draws: int = 1000) -> None:
    parser.add_argument("--chains", type=int, default=chains, help="MCMC chains (run as one vectorised program)")
    parser.add_argument("--warmup", type=int, default=warmup, help="MCMC warm-up iterations per chain")
    parser.add_argument("--draws", type=int, default=draws, help="MCMC draws per chain after warm-up")
    parser.add_argument("--seed", type=int, default=0, help="MCMC random seed")


def _fit_arguments(sub) -> None:
    """The ``melsm fit`` subcommand and its arguments."""
    fit = sub.add_parser("fit", help="fit a model by maximum likelihood and print its table")
    fit.add_argument("data", help="CSV file, or a built-in data set: tutorial, reisby")
    fit.add_argument("--mean", required=True, help='e.g. "y ~ x + (1 + x | group)"')
    fit.add_argument("--within", default="~ 1",
                     help='log level-1 variance, e.g. "~ x + (1 | group)" (default "~ 1")')
    fit.add_argument("--between", default=None, action="append",
                     help='log variance of the random location intercept, e.g. "~ g"; or, repeated, '
                          '"EFFECT=FORMULA" for any random effect or the location-scale correlation, e.g. '
                          '"within:Intercept=~ g"')
    fit.add_argument("--association", default="correlated",
                     choices=list(ASSOCIATIONS))
    fit.add_argument("--quadrature", type=int, default=None,
                     help="Gauss-Hermite points per random scale effect")
    fit.add_argument("--max-iter", type=int, default=None,
                     help="cap on the optimiser's iterations (default 1000)")
    fit.add_argument("--method", choices=["ml", "mcmc"], default="ml",
                     help="maximum likelihood (default) or Bayesian MCMC")
    _mcmc_options(fit)
    fit.add_argument("--priors", choices=["default", "diffuse"], default="default",
                     help="MCMC priors: weakly informative (default) or diffuse (Stat-JR-like)")
    fit.add_argument("--json", action="store_true", help="print one JSON object")
    fit.set_defaults(run=_fit)


def _demo_arguments(sub) -> None:
    """The ``melsm demo`` subcommand and its arguments."""
    demo = sub.add_parser("demo", help="fit the London schools Models 1-6 (ML and MCMC) and the Riesby "
                          "model, and write the HTML report")
    demo.add_argument("--out", default="melsm-demo.html", help="report file (default melsm-demo.html)")
    demo.add_argument("--no-mcmc", action="store_true", help="maximum likelihood only (seconds)")
    demo.add_argument("--figures", default=None, help="also write the main figures as PNG files to this folder")
    demo.add_argument("--open", action="store_true", help="open the report in a web browser")
    _mcmc_options(demo, **DEMO_MCMC)
    demo.set_defaults(run=_demo)


def _report_arguments(sub) -> None:
    """The ``melsm report`` subcommand and its arguments."""
    rep = sub.add_parser("report", help="fit several models of one data set and write an HTML report")
    rep.add_argument("data", help="CSV file, or a built-in data set: tutorial, reisby")
    rep.add_argument("--model", action="append", required=True,
                     help='repeat for each model: "NAME = MEAN ; WITHIN ; BETWEEN" (WITHIN, BETWEEN optional), '
                          'e.g. "Model 2 = normexam ~ 1 + (1 | school) ; ~ 1 + (1 | school)"')
    rep.add_argument("--method", choices=["ml", "mcmc"], default="ml")
    rep.add_argument("--association", default="correlated", choices=list(ASSOCIATIONS))
    rep.add_argument("--quadrature", type=int, default=None)
    rep.add_argument("--max-iter", type=int, default=None)
    rep.add_argument("--priors", choices=["default", "diffuse"], default="default")
    _mcmc_options(rep)
    rep.add_argument("--out", default="melsm-report.html", help="report file (default melsm-report.html)")
    rep.add_argument("--title", default="melsm report")
    rep.set_defaults(run=_report)


def _app_arguments(sub) -> None:
    """The ``melsm app`` subcommand and its arguments."""
    app = sub.add_parser("app", help="start the browser app (local web server) and print its address")
    app.add_argument("--port", type=int, default=8050, help="port (default 8050; 0: any free port)")
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    app.add_argument("--max-upload-mb", type=float, default=20, help="largest CSV upload in MB (default 20)")
    app.add_argument("--job-timeout", type=float, default=3600,
                     help="seconds one fit, comparison or report may run before its worker is stopped (default 3600)")
    app.add_argument("--open", action="store_true", help="open the page in a web browser")
    app.set_defaults(run=_app)


def _simulate_arguments(sub) -> None:
    """The ``melsm simulate`` subcommand and its arguments."""
    sim = sub.add_parser("simulate", help="run a simulation study (a TOML file or a built-in one) on Dask, "
                         "print its table and write its figure")
    sim.add_argument("study", nargs="?", default=None, help="study file (TOML; format in the README)")
    sim.add_argument("--builtin", default=None,
                     help="a built-in study: ignore-scale (alias type1), coverage (alias model5)")
    sim.add_argument("--replicates", type=int, default=None, help="replicates per design (default: the study's)")
    sim.add_argument("--scheduler", default=None, help="address of a Dask scheduler, e.g. tcp://host:8786 "
                     "(default: a local cluster)")
    sim.add_argument("--workers", type=int, default=None,
                     help="worker processes of the local cluster (default: one per core)")
    sim.add_argument("--out", default=None, help="output folder (default melsm-study-NAME)")
    sim.add_argument("--resume", action="store_true", help="continue a study whose output folder holds replicates")
    sim.add_argument("--figure", default=None, help="figure file (default OUT/figure.png)")
    sim.add_argument("--quiet", action="store_true", help="no progress bar or lines")
    sim.set_defaults(run=_simulate)


def _riesby_arguments(sub) -> None:
    """The ``melsm riesby`` subcommand and its arguments."""
    riesby = sub.add_parser("riesby", help="fit the Riesby location-scale model on the "
                            "built-in data (MIXREGLS' example) and print its table")
    riesby.add_argument("--json", action="store_true")
    riesby.set_defaults(run=lambda a: _fit(argparse.Namespace(
        quadrature=None, max_iter=None, json=a.json, **RIESBY)))


def _version() -> str:
    """The installed distribution's version (``melsm.__version__`` when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("melsm")
    except PackageNotFoundError:
        import melsm

        return melsm.__version__


def _verbose_option(parser, default) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="show what melsm does (-v), and more (-vv), on standard error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="melsm", description="Mixed-effects location scale models.")
    parser.add_argument("--version", action="version", version=f"melsm {_version()}")
    _verbose_option(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True)
    _fit_arguments(sub)
    _demo_arguments(sub)
    _report_arguments(sub)
    _app_arguments(sub)
    _simulate_arguments(sub)
    _riesby_arguments(sub)
    for command in sub.choices.values():
        _verbose_option(command, argparse.SUPPRESS)  # melsm fit -v as well as melsm -v fit
    return parser


@contextlib.contextmanager
def _logging(verbose: int):
    """melsm's log messages on standard error while the command runs (``-v``: INFO,
    ``-vv``: DEBUG); the handler is removed afterwards."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("melsm")
    handler = logging.StreamHandler()  # sys.stderr as it is now (tests capture it)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    with _logging(args.verbose):
        return _run(args)


def _run(args) -> int:
    try:
        return args.run(args)
    except MelsmInputError as err:
        print(f"melsm: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"melsm: error: the fit failed numerically: {_one_line(err)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into a reader that stopped early (| head)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
