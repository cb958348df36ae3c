"""Simulation studies: a grid of designs × replicates × competing fitted models.

A ``Study`` names a true model with its parameters (``truth``), a base ``design`` (see
``melsm.studies.simulate``), a ``grid`` of values that vary the design or the truth, and the
``fits``: models fitted by maximum likelihood to every simulated data set. Replicate r of
design d draws its data with the seed ``SeedSequence([seed, d, r])``, so any replicate can
be recomputed alone, in any order, on any machine (``melsm.studies.replicate``).

The fitted models' parameters take their truth from ``truth``; a mean or within
coefficient the true model does not have is 0, as is the SD of a random effect it does not
have and a correlation it does not give of two effects it has (``implied_truth``).

``load`` reads a study from TOML, ``builtin`` gives the packaged studies; running one on
Dask with a Parquet store that resumes is ``melsm.studies.run``, its statistics
``melsm.studies.summary``. See docs/architecture.md, 'Studies'.
"""

from __future__ import annotations

import copy
import itertools
import json
import tomllib
import warnings
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from melsm.errors import MelsmInputError
from melsm.model.names import Effect, ParamName
from melsm.pipeline import Model
from melsm.studies.simulate import _number, check_design, model_formulas, simulate

STUDY_KEYS = ("name", "description", "seed", "replicates", "model", "truth", "design", "grid", "fits", "focus")
FIT_OPTIONS = ("quadrature", "max_iter")
#: Built-in studies: name → packaged TOML file (``melsm/studies``).
BUILTIN = {"ignore-scale": "ignore_scale.toml", "coverage": "coverage_model5.toml"}
ALIASES = {"type1": "ignore-scale", "model5": "coverage"}
#: Columns of the rows a replicate gives, with their types (every Parquet file the same schema).
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


def implied_truth(pid: ParamName, truth: dict[ParamName, float]) -> float:
    """The value a fitted model's parameter ``pid`` estimates when the data come from a
    model with parameters ``truth`` (``simulate.truth_by_id``; see the module docstring;
    NaN: none is implied)."""
    if pid in truth:
        return float(truth[pid])
    if pid.kind in ("mean", "within"):
        return 0.0
    effects = _true_effects(truth)
    if pid.kind == "sd":  # an effect with a level-2 variance function has no one SD
        return np.nan if pid.key in effects else 0.0
    if pid.kind == "corr":
        return 0.0 if pid.key.first in effects and pid.key.second in effects else np.nan
    return np.nan


def _true_effects(truth: dict[ParamName, float]) -> set[Effect]:
    """Random effects with a nonzero variance in the true model: a positive SD, or a
    level-2 variance function."""
    effects = {pid.key for pid, v in truth.items() if pid.kind == "sd" and v > 0}
    return effects | {pid.key.function for pid in truth
                      if pid.kind == "between" and isinstance(pid.key.function, Effect)}


def _fit_names(study: Study, fit_name: str, point: DesignPoint) -> list[str]:
    data = simulate(study.model, point.truth, point.design, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Model(data=data, **_formulas(study.fits[fit_name])).layout.reported_names()


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

