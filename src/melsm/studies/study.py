"""Simulation studies: a grid of designs × replicates × competing fitted models.

A ``Study`` names a true model with its parameters (``truth``), a base ``design`` (see
``melsm.simulate``), a ``grid`` of values that vary the design or the truth, and the
``fits``: models fitted by maximum likelihood to every simulated data set. Replicate r of
design d draws its data with the seed ``SeedSequence([seed, d, r])``, so any replicate can
be recomputed alone, in any order, on any machine (``replicate_rows``).

Per replicate, model and parameter a row records the estimate, its SE and 95% CI, the
value the estimate aims at (``truth``), convergence (with the optimiser's message when
not converged), the log-likelihood and, for a fit that failed, the error. ``summarise``
turns the rows into, per design, model and parameter (θ the truth, θ̂_r the R converged
estimates, s_r their SEs, z = Φ⁻¹(0.975)):

    bias       = mean(θ̂_r) − θ                          MC SE  sd(θ̂_r)/√R
    emp_sd     = sd(θ̂_r)            (the estimator's actual spread)
    mean_se    = mean(s_r)          se_ratio = mean_se / emp_sd (1: honest SEs)
    coverage   = share of 95% CIs that contain θ           MC SE  √(c(1 − c)/R)
    rejection  = share with |θ̂_r / s_r| > z, the two-sided 5% Wald test of H0: parameter = 0;
                 the Type I error where θ = 0, the power elsewhere (not for SDs: a test of an
                 SD at 0 is on the boundary)              MC SE  √(p(1 − p)/R)

and counts of non-converged and failed fits (left out of the statistics above). The fitted
models' parameters take their truth from ``truth``; a mean or within coefficient the true
model does not have is 0, as is the SD of a random effect it does not have and a
correlation it does not give of two effects it has.

Running a study on Dask with a Parquet store that resumes is ``melsm.studies.run``;
``load`` reads a study from TOML, ``builtin`` gives the packaged studies.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
import tomllib
import warnings
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.pipeline import Model
from melsm.results.ml import Z95
from melsm.studies.simulate import _number, check_design, model_formulas, simulate

STUDY_KEYS = ("name", "description", "seed", "replicates", "model", "truth", "design", "grid", "fits", "focus")
FIT_OPTIONS = ("quadrature", "max_iter")
#: Built-in studies: name → packaged TOML file (``melsm/studies``).
BUILTIN = {"ignore-scale": "ignore_scale.toml", "coverage": "coverage_model5.toml"}
ALIASES = {"type1": "ignore-scale", "model5": "coverage"}
#: Columns of the rows a replicate gives, with their types (every Parquet file the same schema).
ROW_COLUMNS = {"design": "int64", "replicate": "int64", "model": "object", "parameter": "object",
               "truth": "float64", "estimate": "float64", "se": "float64", "ci_low": "float64",
               "ci_high": "float64", "converged": "bool", "boundary": "object", "loglik": "float64",
               "seconds": "float64", "error": "object", "message": "object"}


@dataclass(frozen=True)
class DesignPoint:
    """One point of a study's grid: its index, a label and the design and truth there."""

    id: int
    label: str
    settings: dict
    design: dict
    truth: dict


@dataclass(frozen=True)
class Study:
    """A simulation study (see the module docstring). Checked when made: every design
    point is drawn once and every fitted model built on it, so a mistake in a formula, the
    truth or the design is a ``MelsmInputError`` before any replicate runs."""

    name: str
    model: dict
    truth: dict
    design: dict
    fits: dict
    replicates: int = 100
    seed: int = 0
    grid: dict = field(default_factory=dict)
    focus: list[str] | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise MelsmInputError("a study needs a name")
        object.__setattr__(self, "model", model_formulas(self.model))
        object.__setattr__(self, "replicates", _number(self.replicates, "replicates", 1, integer=True))
        object.__setattr__(self, "seed", _number(self.seed, "seed", 0, integer=True))
        if not isinstance(self.truth, dict):
            raise MelsmInputError("truth must be a table {parameter name: value}")
        if not isinstance(self.fits, dict) or not self.fits:
            raise MelsmInputError("a study needs at least one fitted model in 'fits'")
        object.__setattr__(self, "fits", {str(k): _fit_spec(str(k), v) for k, v in self.fits.items()})
        _check_grid(self.grid)
        points = self.designs()  # checks every design point's design and truth
        for point in points:
            data = simulate(self.model, point.truth, point.design, seed=0)
            for name, spec in self.fits.items():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        Model(data=data, **model_formulas(_formulas(spec)))
                except MelsmInputError as err:
                    raise MelsmInputError(f"fitted model '{name}': {err}") from None
        if self.focus is not None:
            focus = [self.focus] if isinstance(self.focus, str) else self.focus
            if not isinstance(focus, list) or not focus or not all(isinstance(f, str) for f in focus):
                raise MelsmInputError("focus must be a parameter name or a list of them")
            names = {n for name in self.fits for n in _fit_names(self, name, points[0])}
            for name in focus:
                if name not in names:
                    raise MelsmInputError(f"focus '{name}' is not a parameter of any fitted model")
            object.__setattr__(self, "focus", list(focus))

    def designs(self) -> list[DesignPoint]:
        """The grid's points in order (one point, ``base``, without a grid)."""
        keys = list(self.grid)
        points = []
        for k, values in enumerate(itertools.product(*(self.grid[key] for key in keys))):
            settings = dict(zip(keys, values, strict=True))
            design, truth = copy.deepcopy(self.design), dict(self.truth)
            for key, value in settings.items():
                _set(design, truth, key, value)
            label = ", ".join(f"{key.removeprefix('truth.').removeprefix('covariates.')}={_short(value)}"
                              for key, value in settings.items()) or "base"
            points.append(DesignPoint(k, label, settings, check_design(design), truth))
        return points

    def to_dict(self) -> dict:
        """JSON/TOML-ready; ``Study.from_dict(study.to_dict())`` gives the same study."""
        return asdict(self)

    @classmethod
    def from_dict(cls, spec: dict) -> Study:
        """A study from a dict (as read from TOML); unknown keys are an error."""
        if not isinstance(spec, dict):
            raise MelsmInputError("a study is a table of name, model, truth, design, fits, ...")
        unknown = sorted(set(spec) - set(STUDY_KEYS))
        if unknown:
            raise MelsmInputError(f"unknown study key '{unknown[0]}' (keys: {', '.join(STUDY_KEYS)})")
        for key in ("name", "model", "truth", "design", "fits"):
            if key not in spec:
                raise MelsmInputError(f"the study lacks '{key}'")
        return cls(**spec)

    def identity(self) -> str:
        """What must not change for stored replicates to stay valid: everything but the
        number of replicates and the description (a study can be extended)."""
        spec = self.to_dict()
        spec.pop("replicates")
        spec.pop("description")
        return json.dumps(spec, sort_keys=True)

    def with_replicates(self, replicates: int) -> Study:
        return Study.from_dict({**self.to_dict(), "replicates": replicates})

    def run(self, out: str | Path, scheduler: str | None = None, workers: int | None = None,
            resume: bool = False, progress: Any = None):
        """Run on Dask (``melsm.studies.run.run_study``); returns ``StudyResults``."""
        from melsm.studies.run import run_study

        return run_study(self, out, scheduler=scheduler, workers=workers, resume=resume, progress=progress)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"[{len(value)} values]"
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fit_spec(name: str, spec: Any) -> dict:
    if not isinstance(spec, dict):
        raise MelsmInputError(f"fitted model '{name}' must be a table with a 'mean' formula")
    options = {k: spec[k] for k in FIT_OPTIONS if k in spec}
    for key, value in options.items():
        _number(value, f"fitted model '{name}' {key}", 1, integer=True)
    formulas = model_formulas({k: v for k, v in spec.items() if k not in FIT_OPTIONS})
    return {k: v for k, v in {**formulas, **options}.items() if v is not None}


def _formulas(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in FIT_OPTIONS}


def _check_grid(grid: Any) -> None:
    if not isinstance(grid, dict):
        raise MelsmInputError("grid must be a table {setting: [values]}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise MelsmInputError(f"grid '{key}' must be a non-empty list of values")
        head = key.split(".", 1)[0]
        if head not in ("groups", "group_size", "covariates", "truth"):
            raise MelsmInputError(f"grid '{key}' is not a setting: use groups, group_size, "
                                  "covariates.<name>.<parameter> or truth.<parameter>")


def _set(design: dict, truth: dict, key: str, value: Any) -> None:
    """Apply one grid setting: ``groups``, ``group_size``, ``covariates.x.sd``, ``truth.<name>``."""
    if key.startswith("truth."):
        name = key.removeprefix("truth.")
        if name not in truth:
            raise MelsmInputError(f"grid '{key}': '{name}' is not in the truth")
        truth[name] = value
        return
    path = key.split(".")
    if path[0] == "covariates":
        if len(path) != 3 or path[1] not in design.get("covariates", {}):
            raise MelsmInputError(f"grid '{key}' needs an existing covariate: covariates.<name>.<parameter>")
        design["covariates"][path[1]][path[2]] = value
    else:
        design[path[0]] = value


def implied_truth(name: str, truth: dict) -> float:
    """The value a fitted model's parameter ``name`` estimates when the data come from a
    model with parameters ``truth`` (see the module docstring; NaN: none is implied)."""
    if name in truth:
        return float(truth[name])
    kind, _, rest = name.partition(":")
    if kind in ("mean", "within"):
        return 0.0
    effects = _true_effects(truth)
    if kind == "sd":  # an effect with a level-2 variance function has no one SD
        return np.nan if rest in effects else 0.0
    if kind == "corr":
        return 0.0 if all(e in effects for e in rest.split(",")) else np.nan
    return np.nan


def _true_effects(truth: dict) -> set[str]:
    """Random effects (``<part>:<term>``) with a nonzero variance in the true model: a
    positive SD, or a level-2 variance function (``between:<covariate>`` is the location
    intercept's, ``between:<part>:<term>:<covariate>`` another effect's)."""
    effects = {k.removeprefix("sd:") for k, v in truth.items() if k.startswith("sd:") and v > 0}
    for key in truth:
        parts = key.split(":")
        if parts[0] == "between" and len(parts) == 2:
            effects.add("mean:Intercept")
        elif parts[0] == "between" and parts[1] in ("mean", "within"):
            effects.add(f"{parts[1]}:{parts[2]}")
    return effects


def _fit_names(study: Study, fit_name: str, point: DesignPoint) -> list[str]:
    data = simulate(study.model, point.truth, point.design, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Model(data=data, **_formulas(study.fits[fit_name])).layout.reported_names()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def failed_rows(study: Study, design_id: int, replicate: int, message: str, models=None) -> pd.DataFrame:
    """One row per model (``parameter`` empty) recording a replicate or fit that failed."""
    rows = [{"design": design_id, "replicate": replicate, "model": name, "parameter": "", "truth": np.nan,
             "estimate": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan, "converged": False,
             "boundary": "", "loglik": np.nan, "seconds": np.nan, "error": message, "message": ""}
            for name in (models if models is not None else study.fits)]
    return typed_rows(pd.DataFrame(rows, columns=list(ROW_COLUMNS)))


def typed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the row columns' types (``ROW_COLUMNS``; Parquet reads text back as
    strings); a text column that rows stored by an earlier version lack is empty."""
    missing = {c: "" for c, kind in ROW_COLUMNS.items() if c not in frame.columns and kind == "object"}
    return frame.assign(**missing).astype(ROW_COLUMNS)


def fit_model(data: pd.DataFrame, spec: dict):
    """One competing model's ML fit (warnings are recorded in the rows, not shown)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Model(data=data, **_formulas(spec))
        return model.fit(quadrature=spec.get("quadrature"), max_iter=spec.get("max_iter"))


def replicate_rows(study: Study, design_id: int, replicate: int) -> pd.DataFrame:
    """Draw replicate ``replicate`` of design ``design_id`` and fit every competing model.

    Never raises for a failed simulation or fit: those become rows with ``error`` set
    (``failed_rows``), so one bad replicate cannot stop a study.
    """
    point = study.designs()[design_id]
    seed = np.random.SeedSequence([study.seed, design_id, replicate])
    try:
        data = simulate(study.model, point.truth, point.design, seed=seed)
    except Exception as err:  # noqa: BLE001  (recorded, not fatal)
        return failed_rows(study, design_id, replicate, f"simulation failed: {_one_line(err)}")
    frames = []
    for name, spec in study.fits.items():
        start = time.perf_counter()
        try:
            fit = fit_model(data, spec)
        except Exception as err:  # noqa: BLE001
            frames.append(failed_rows(study, design_id, replicate, f"fit failed: {_one_line(err)}", [name]))
            continue
        table = fit.table()
        frames.append(pd.DataFrame({
            "design": design_id, "replicate": replicate, "model": name, "parameter": table.index.to_list(),
            "truth": [implied_truth(n, point.truth) for n in table.index],
            "estimate": table["estimate"].to_numpy(), "se": table["std_error"].to_numpy(),
            "ci_low": table["lower"].to_numpy(), "ci_high": table["upper"].to_numpy(),
            "converged": bool(fit.converged), "boundary": ",".join(fit.boundary), "loglik": float(fit.loglik),
            "seconds": time.perf_counter() - start, "error": "", "message": "" if fit.converged else fit.message,
        }))
    return typed_rows(pd.concat(frames, ignore_index=True))


def _rate(hits: pd.Series) -> tuple[float, float]:
    """Share of True and its Monte Carlo SE √(p(1−p)/R)."""
    n = len(hits)
    if not n:
        return np.nan, np.nan
    p = float(hits.mean())
    return p, float(np.sqrt(p * (1 - p) / n))


def summarise(rows: pd.DataFrame, study: Study | None = None) -> pd.DataFrame:
    """Per design, model and parameter: the statistics of the module docstring.

    Columns: ``label`` (with a study), ``truth``, ``n`` (converged fits with an
    estimate), ``mean``, ``bias``, ``bias_mcse``, ``emp_sd``, ``mean_se``, ``se_ratio``,
    ``coverage``, ``coverage_mcse``, ``rejection``, ``rejection_mcse``, ``test`` ("type I"
    where the truth is 0, "power" elsewhere, "" for SDs), ``non_converged``, ``failed``.
    """
    fits = rows.groupby(["design", "model", "replicate"], sort=False).agg(
        failed=("error", lambda e: bool((e != "").any())), converged=("converged", "all"))
    counts = fits.groupby(["design", "model"]).agg(
        replicates=("failed", "size"), failed=("failed", "sum"),
        non_converged=("converged", lambda c: int((~c).sum())))
    counts["non_converged"] -= counts["failed"]  # a failed fit is counted as failed only
    good = rows[(rows["error"] == "") & rows["converged"] & (rows["parameter"] != "")]
    out = []
    for (design, model, parameter), group in good.groupby(["design", "model", "parameter"], sort=False):
        est = group["estimate"][np.isfinite(group["estimate"])]
        truth = float(group["truth"].iloc[0])
        with_se = group[np.isfinite(group["se"]) & np.isfinite(group["estimate"])]
        n = len(est)
        emp_sd = float(est.std(ddof=1)) if n > 1 else np.nan
        mean_se = float(with_se["se"].mean()) if len(with_se) else np.nan
        coverage = _rate((with_se["ci_low"] <= truth) & (truth <= with_se["ci_high"])) \
            if np.isfinite(truth) else (np.nan, np.nan)
        is_sd = parameter.startswith("sd:")
        rejection = (np.nan, np.nan) if is_sd else _rate((with_se["estimate"] / with_se["se"]).abs() > Z95)
        out.append({
            "design": design, "model": model, "parameter": parameter, "truth": truth, "n": n,
            "mean": float(est.mean()) if n else np.nan,
            "bias": float(est.mean()) - truth if n else np.nan,
            "bias_mcse": emp_sd / np.sqrt(n) if n > 1 else np.nan,
            "emp_sd": emp_sd, "mean_se": mean_se,
            "se_ratio": mean_se / emp_sd if emp_sd and np.isfinite(emp_sd) else np.nan,
            "coverage": coverage[0], "coverage_mcse": coverage[1],
            "rejection": rejection[0], "rejection_mcse": rejection[1],
            "test": "" if is_sd or not np.isfinite(truth) else ("type I" if truth == 0 else "power"),
            "non_converged": int(counts.loc[(design, model), "non_converged"]),
            "failed": int(counts.loc[(design, model), "failed"]),
        })
    summary = pd.DataFrame(out)
    if summary.empty:
        return summary
    if study is not None:
        labels = {p.id: p.label for p in study.designs()}
        summary.insert(1, "label", summary["design"].map(labels))
    return summary


def format_table(summary: pd.DataFrame, parameters: list[str] | None = None) -> str:
    """The summary as aligned text: one line per design, model and parameter, rates in %
    with their Monte Carlo SEs."""
    if summary.empty:
        return "(no converged fits)"
    table = summary if parameters is None else summary[summary["parameter"].isin(parameters)]

    def pct(value, se):
        return "" if not np.isfinite(value) else f"{100 * value:5.1f} ± {100 * se:3.1f}"

    text = pd.DataFrame({
        "design": table.get("label", table["design"]), "model": table["model"], "parameter": table["parameter"],
        "truth": table["truth"].map(lambda v: f"{v:.3g}"), "bias": table["bias"].map(lambda v: f"{v:+.4f}"),
        "emp SD": table["emp_sd"].map(lambda v: f"{v:.4f}"), "mean SE": table["mean_se"].map(lambda v: f"{v:.4f}"),
        "SE ratio": table["se_ratio"].map(lambda v: f"{v:.2f}"),
        "coverage %": [pct(v, s) for v, s in zip(table["coverage"], table["coverage_mcse"], strict=True)],
        "reject H0:0 %": [pct(v, s) for v, s in zip(table["rejection"], table["rejection_mcse"], strict=True)],
        "test": table["test"], "n": table["n"], "non-conv": table["non_converged"], "failed": table["failed"],
    })
    return text.to_string(index=False)


class StudyResults:
    """The rows of a study (``rows``: one per replicate, model and parameter) and their
    summary (``summary()``), table (``table()``) and figure (``figure()``)."""

    def __init__(self, study: Study, rows: pd.DataFrame, seconds: float = float("nan")):
        self.study = study
        self.rows = rows
        self.seconds = seconds  # wall time of the run that made these results (NaN: read back)

    def summary(self) -> pd.DataFrame:
        if not hasattr(self, "_summary"):
            self._summary = summarise(self.rows, self.study)
        return self._summary

    def table(self, parameters: list[str] | None = None) -> str:
        return format_table(self.summary(), parameters)

    def figure(self):
        """The focus parameter's rejection rate and SE ratio across designs (``focus`` set),
        otherwise every parameter's coverage (``melsm.reporting.plots``)."""
        from melsm.reporting.plots import coverage_figure, rejection_figure

        if self.study.focus:
            return rejection_figure(self.summary(), self.study.focus, title=self.study.name)
        return coverage_figure(self.summary(), title=self.study.name)


def load(path: str | Path) -> Study:
    """A study from a TOML file (format in the README)."""
    path = Path(path)
    if not path.is_file():
        raise MelsmInputError(f"no such study file '{path}'")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise MelsmInputError(f"cannot read study file '{path}': {err}") from None
    return Study.from_dict(spec)


def builtin(name: str, replicates: int | None = None) -> Study:
    """A packaged study: ``"ignore-scale"`` (alias ``"type1"``): the Type I error of a
    level-2 covariate's coefficient in the level-1 variance function when the random
    scale effects are ignored and when they are fitted; ``"coverage"`` (alias
    ``"model5"``): CI coverage of the full model with London Model 5's ML estimates as
    truth. ``replicates`` overrides the file's number."""
    key = ALIASES.get(name, name)
    if key not in BUILTIN:
        raise MelsmInputError(f"unknown built-in study '{name}'; built-in: "
                              f"{', '.join(list(BUILTIN) + [f'{a} (= {b})' for a, b in ALIASES.items()])}")
    spec = tomllib.loads((files("melsm.studies") / BUILTIN[key]).read_text())
    if replicates is not None:
        spec["replicates"] = replicates
    return Study.from_dict(spec)

