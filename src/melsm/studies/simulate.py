"""Draw data sets from any model melsm fits: ``simulate(model, truth, design, seed)``.

A *design* says how many groups there are, how large they are (fixed, one size per
group, or drawn) and how the covariates are distributed (level 1: a value per row;
level 2: one value per group). The *truth* gives every reported parameter of the model
(``mean:x``, ``within:x``, ``between:...``, ``sd:<part>:<term>``,
``corr:<part>:<term>,<part>:<term>``; see the README's table). Data are drawn as the
model says (docs/architecture.md, "The model"):

    b_j = L_j η_j,  η_j ~ N(0, I)          (b_j = (v_j, u_j), Σ_j = L_j L_jᵀ)
    y_ij = x_ij'β + z_ij'u_j + exp(½ (w_ij'α + s_ij'v_j)) ε_ij,   ε_ij ~ N(0, 1)

with L_j the group's Cholesky factor, so level-2 variance and correlation functions are
honoured exactly as the likelihood reads them (``ParamLayout.group_cholesky``).

The same ``seed`` gives the same data set, draw for draw. The design format (a dict,
as read from a study's TOML file)::

    {"groups": 50,                                   # number of groups J
     "group_size": 20,                               # or [n_1, ..., n_J], or a distribution:
     #   {"dist": "poisson", "mean": 20, "min": 2}   n_j = max(min, Poisson(mean))
     #   {"dist": "uniform", "low": 5, "high": 30}   n_j uniform on the integers low..high
     "covariates": {
         "x": {"level": 1, "dist": "normal", "mean": 0, "sd": 1, "group_sd": 0},
         "g": {"level": 2, "dist": "bernoulli", "p": 0.5},
         "u": {"level": 2, "dist": "uniform", "low": 0, "high": 1}}}

``group_sd`` (normal level-1 covariates only) adds a group component N(0, group_sd²),
so the covariate varies between groups too (like pupils' intake scores by school).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import pandas as pd

from melsm.errors import MelsmInputError
from melsm.model.names import ParamName
from melsm.model.spec import make_spec
from melsm.model.transforms import sd_corr_cholesky
from melsm.pipeline import Model

#: Distributions of covariates and their parameters (with defaults).
DISTRIBUTIONS: dict[str, dict[str, float]] = {
    "normal": {"mean": 0.0, "sd": 1.0, "group_sd": 0.0},
    "uniform": {"low": 0.0, "high": 1.0},
    "bernoulli": {"p": 0.5},
}
#: Distributions of group sizes and their parameters (with defaults; None: required).
SIZE_DISTRIBUTIONS: dict[str, dict[str, float | None]] = {
    "poisson": {"mean": None, "min": 1},
    "uniform": {"low": None, "high": None},
}
DESIGN_KEYS = ("groups", "group_size", "covariates", "group")


def model_formulas(model: Any) -> dict:
    """``mean``, ``within``, ``between``, ``association`` of a ``melsm.Model`` or a dict."""
    if hasattr(model, "spec") and hasattr(model, "association"):
        formulas = dict(model.spec.formulas)
        return {"mean": formulas["mean"], "within": formulas.get("within") or "~ 1",
                "between": formulas.get("between"), "association": model.association}
    if not isinstance(model, dict) or "mean" not in model:
        raise MelsmInputError("a model is a melsm.Model or a dict with a 'mean' formula "
                              "(and optionally 'within', 'between', 'association')")
    unknown = sorted(set(model) - {"mean", "within", "between", "association"})
    if unknown:
        raise MelsmInputError(f"unknown model key '{unknown[0]}' (keys: mean, within, between, association)")
    return {"mean": model["mean"], "within": model.get("within") or "~ 1", "between": model.get("between"),
            "association": model.get("association", "correlated")}


def _number(value: Any, what: str, low: float | None = None, integer: bool = False,
            strict: bool = False) -> float:
    """``value`` as a finite number (≥ ``low``, or > ``low`` when ``strict``), else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise MelsmInputError(f"{what} must be a finite number, not {value!r}")
    if integer and int(value) != value:
        raise MelsmInputError(f"{what} must be a whole number, not {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise MelsmInputError(f"{what} must be {'>' if strict else '≥'} {low:g}, not {value!r}")
    return int(value) if integer else float(value)


def check_design(design: Any) -> dict:
    """Validate a design dict (see the module docstring); returns it with defaults filled."""
    if not isinstance(design, dict):
        raise MelsmInputError("a design is a dict with 'groups', 'group_size' and 'covariates'")
    unknown = sorted(set(design) - set(DESIGN_KEYS))
    if unknown:
        raise MelsmInputError(f"unknown design key '{unknown[0]}' (keys: {', '.join(DESIGN_KEYS)})")
    size = design.get("group_size")
    if size is None:
        raise MelsmInputError("the design needs 'group_size' (a number, a list of sizes or a distribution)")
    groups = design.get("groups")
    if isinstance(size, list | tuple):
        sizes = [_number(n, "a group size", 1, integer=True) for n in size]
        if groups is not None and _number(groups, "groups", 2, integer=True) != len(sizes):
            raise MelsmInputError(f"the design gives {len(sizes)} group sizes for {groups} groups")
        groups = len(sizes)
        size = sizes
    elif isinstance(size, dict):
        size = _size_distribution(size)
    else:
        size = _number(size, "group_size", 1, integer=True)
    if groups is None:
        raise MelsmInputError("the design needs 'groups' (the number of groups)")
    groups = _number(groups, "groups", 2, integer=True)
    covariates = design.get("covariates", {}) or {}
    if not isinstance(covariates, dict):
        raise MelsmInputError("design covariates must be a table {name: {level, dist, ...}}")
    checked = {name: _covariate(name, spec) for name, spec in covariates.items()}
    group = design.get("group")
    if group is not None and not isinstance(group, str):
        raise MelsmInputError(f"the design's group must be a column name, not {group!r}")
    return {"groups": groups, "group_size": size, "covariates": checked, "group": group}


def _size_distribution(size: dict) -> dict:
    dist = size.get("dist")
    if dist not in SIZE_DISTRIBUTIONS:
        raise MelsmInputError(f"group_size dist must be one of {', '.join(SIZE_DISTRIBUTIONS)}, not {dist!r}")
    allowed = SIZE_DISTRIBUTIONS[dist]
    unknown = sorted(set(size) - set(allowed) - {"dist"})
    if unknown:
        raise MelsmInputError(f"unknown group_size parameter '{unknown[0]}' for {dist} "
                              f"(parameters: {', '.join(allowed)})")
    out: dict = {"dist": dist}
    for key, default in allowed.items():
        if key not in size and default is None:
            raise MelsmInputError(f"group_size {dist} needs '{key}'")
        out[key] = _number(size.get(key, default), f"group_size {key}", 1 if key != "mean" else 0,
                           integer=key != "mean", strict=key == "mean")
    if dist == "uniform" and out["high"] < out["low"]:
        raise MelsmInputError("group_size uniform needs low ≤ high")
    return out


def _covariate(name: str, spec: Any) -> dict:
    if not isinstance(spec, dict):
        raise MelsmInputError(f"covariate '{name}' must be a table {{level, dist, ...}}, not {spec!r}")
    level = spec.get("level", 1)
    if level not in (1, 2):
        raise MelsmInputError(f"covariate '{name}': level must be 1 (varies within groups) or 2 "
                              f"(constant within groups), not {level!r}")
    dist = spec.get("dist", "normal")
    if dist not in DISTRIBUTIONS:
        raise MelsmInputError(f"covariate '{name}': dist must be one of {', '.join(DISTRIBUTIONS)}, not {dist!r}")
    allowed = DISTRIBUTIONS[dist]
    unknown = sorted(set(spec) - set(allowed) - {"level", "dist"})
    if unknown:
        raise MelsmInputError(f"covariate '{name}': unknown parameter '{unknown[0]}' for {dist} "
                              f"(parameters: {', '.join(allowed)})")
    out: dict = {"level": level, "dist": dist}
    for key, default in allowed.items():
        out[key] = _number(spec.get(key, default), f"covariate '{name}' {key}",
                           0 if key in ("sd", "group_sd", "p") else None)
    if dist == "bernoulli" and out["p"] > 1:
        raise MelsmInputError(f"covariate '{name}': p must be a probability, not {out['p']!r}")
    if dist == "uniform" and out["high"] <= out["low"]:
        raise MelsmInputError(f"covariate '{name}': uniform needs low < high")
    if out.get("group_sd") and level == 2:
        raise MelsmInputError(f"covariate '{name}': group_sd is for level-1 covariates")
    return out


def _draw(rng: np.random.Generator, spec: dict, n: int) -> np.ndarray:
    if spec["dist"] == "normal":
        return spec["mean"] + spec["sd"] * rng.standard_normal(n)
    if spec["dist"] == "uniform":
        return rng.uniform(spec["low"], spec["high"], n)
    return (rng.random(n) < spec["p"]).astype(float)


def draw_sizes(rng: np.random.Generator, design: dict) -> np.ndarray:
    """Group sizes n_1..n_J of a checked design."""
    size, groups = design["group_size"], design["groups"]
    if isinstance(size, list):
        return np.asarray(size, dtype=int)
    if isinstance(size, dict):
        if size["dist"] == "poisson":
            return np.maximum(size["min"], rng.poisson(size["mean"], groups))
        return rng.integers(size["low"], size["high"] + 1, groups)
    return np.full(groups, size, dtype=int)


def draw_covariates(rng: np.random.Generator, design: dict, group_name: str) -> pd.DataFrame:
    """Rows of a checked design: the group column (labels 1..J) and every covariate."""
    sizes = draw_sizes(rng, design)
    group = np.repeat(np.arange(len(sizes)), sizes)
    frame = {group_name: group + 1}
    for name, spec in design["covariates"].items():
        if spec["level"] == 2:
            frame[name] = _draw(rng, spec, len(sizes))[group]
        else:
            values = _draw(rng, spec, len(group))
            if spec.get("group_sd"):
                values = values + spec["group_sd"] * rng.standard_normal(len(sizes))[group]
            frame[name] = values
    return pd.DataFrame(frame)


def truth_theta(layout, truth: dict) -> np.ndarray:
    """θ (``melsm.model.params`` layout) of a model whose reported parameters are ``truth``.

    Coefficients go straight into β, α, κ. The random-effect covariance is built as
    Σ = D R D from the SDs (D) and correlations (R; pairs not reported, e.g. under
    ``association="none"`` or with a correlation function, are 0 here) and factored as
    L = D chol(R), so an SD of 0 is allowed (its row of L is 0). Rows whose SD is a
    level-2 function get SD 1 here (a unit direction; κ gives the length).
    """
    values = truth_by_id(layout, truth)
    ids = list(values)
    px, pw, pg, _ = layout.sizes
    coefficients = [values[pid] for pid in ids[:px + pw + pg]]
    beta, alpha, kappa = coefficients[:px], coefficients[px:px + pw], coefficients[px + pw:]
    effects = dict(layout.random_effects())
    sd = np.ones(layout.q)
    corr = np.eye(layout.q)
    for pid, v in values.items():
        if pid.kind == "sd":
            sd[effects[pid.key]] = v
        elif pid.kind == "corr":
            a, b = effects[pid.key.first], effects[pid.key.second]
            corr[a, b] = corr[b, a] = v
    try:
        L = sd_corr_cholesky(sd, corr)
    except np.linalg.LinAlgError:
        raise MelsmInputError("the correlations in truth do not form a positive-definite matrix") from None
    assoc = [v for pid, v in values.items() if pid.kind == "assoc"]
    with np.errstate(divide="ignore"):  # an SD of 0 is log 0 = -inf in θ, exp(-inf) = 0 back
        return layout.pack(beta, alpha, kappa, L, assoc)


def truth_by_id(layout, truth: dict) -> dict[ParamName, float]:
    """``truth`` ({printed name: value}, as a user writes it) checked against the model's
    reported parameters: {``ParamName``: value} in the model's order. One line names an
    unknown or missing parameter, or a value out of range."""
    if not isinstance(truth, dict):
        raise MelsmInputError("truth must be a dict {parameter name: value}")
    ids = {str(pid): pid for pid in layout.reported_ids()}
    unknown = [k for k in truth if k not in ids]
    if unknown:
        raise MelsmInputError(f"unknown parameter '{unknown[0]}' in truth; the model's parameters are "
                              f"{', '.join(ids)}")
    missing = [n for n in ids if n not in truth]
    if missing:
        raise MelsmInputError(f"truth lacks {len(missing)} of the model's parameters: {', '.join(missing)}")
    values = {pid: _number(truth[n], f"truth '{n}'", 0 if pid.kind == "sd" else None) for n, pid in ids.items()}
    for pid, v in values.items():
        if pid.kind == "corr" and not -1 < v < 1:
            raise MelsmInputError(f"truth '{pid}' must be a correlation strictly between -1 and 1, not {v!r}")
    return values


def _seed(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise MelsmInputError(f"seed must be a non-negative integer, not {seed!r}")
    return np.random.default_rng(int(seed))


def simulate(model: Any, truth: dict, design: dict, seed: Any = None,
             effects: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Draw one data set from ``model`` with parameters ``truth`` under ``design``.

    ``model``: a ``melsm.Model`` or a dict of formulas ``{"mean": "y ~ x + (1 | g)",
    "within": "~ x + (1 | g)", "between": ..., "association": ...}``. ``truth``: a value
    for every reported parameter of the model (names as in ``fit.params``). ``design``:
    see the module docstring. ``seed``: an integer, a ``numpy.random.SeedSequence`` or a
    ``Generator``; the same seed gives the same data.

    Returns a DataFrame with the group column (labels 1..J), the covariates and the
    response, sorted by group; with ``effects=True`` also each group's random effects
    (columns ``<part>:<term>``, one row per group).
    """
    formulas = model_formulas(model)
    design = check_design(design)
    rng = _seed(seed)
    spec = make_spec(formulas["mean"], formulas["within"], formulas["between"], formulas["association"])
    if spec.mean_offset or spec.within_offset:
        raise MelsmInputError("simulation studies do not support offset(...) terms")
    group_name = spec.group or design["group"] or "group"
    if design["group"] and spec.group and design["group"] != spec.group:
        raise MelsmInputError(f"the design's group '{design['group']}' is not the model's '{spec.group}'")
    for name in design["covariates"]:
        if name in (spec.response, group_name):
            raise MelsmInputError(f"design covariate '{name}' has the name of the model's "
                                  f"{'response' if name == spec.response else 'group column'}")
    frame = draw_covariates(rng, design, group_name)
    # a placeholder response with variation, so the design can be built and checked
    frame[spec.response] = np.linspace(-1.0, 1.0, len(frame))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = Model(data=frame, **formulas)
    except MelsmInputError as err:
        raise MelsmInputError(f"cannot simulate this model under this design: {err}") from None
    d, layout = built.design, built.layout
    params = layout.params(truth_theta(layout, truth), xp=np)
    b = layout.effects_from_eta(params, d.G, rng.standard_normal((d.n_groups, layout.q)))
    mean, log_var = layout.predictors(params, d.X, d.W, d.Zu, d.Zv, b[d.group])
    y = mean + np.exp(0.5 * log_var) * rng.standard_normal(d.n_obs)
    response = np.empty(len(frame))
    response[d.row_order] = y
    frame[spec.response] = response
    if not effects:
        return frame
    table = pd.DataFrame({str(effect): b[:, idx] for effect, idx in layout.random_effects()},
                         index=pd.Index(d.group_labels, name=group_name))
    return frame, table
