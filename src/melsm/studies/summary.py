"""The statistics of a study's rows. Per design, model and parameter (θ the truth, θ̂_r the
R converged estimates, s_r their SEs, z = Φ⁻¹(0.975)):

    bias       = mean(θ̂_r) − θ                          MC SE  sd(θ̂_r)/√R
    emp_sd     = sd(θ̂_r)            (the estimator's actual spread)
    mean_se    = mean(s_r)          se_ratio = mean_se / emp_sd (1: honest SEs)
    coverage   = share of 95% CIs that contain θ           MC SE  √(c(1 − c)/R)
    rejection  = share with |θ̂_r / s_r| > z, the two-sided 5% Wald test of H0: parameter = 0;
                 the Type I error where θ = 0, the power elsewhere (not for SDs: a test of an
                 SD at 0 is on the boundary)              MC SE  √(p(1 − p)/R)

and counts of non-converged and failed fits (left out of the statistics above).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from melsm.results.ml import Z95
from melsm.studies.study import Study


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

    @cached_property
    def _summary(self) -> pd.DataFrame:
        return summarise(self.rows, self.study)

    def summary(self) -> pd.DataFrame:
        """The statistics of the module docstring, per design, model and parameter (a copy)."""
        return self._summary.copy()

    def table(self, parameters: list[str] | None = None) -> str:
        return format_table(self.summary(), parameters)

    def figure(self):
        """The focus parameter's rejection rate and SE ratio across designs (``focus`` set),
        otherwise every parameter's coverage (``melsm.reporting.plots``)."""
        from melsm.reporting.plots import coverage_figure, rejection_figure

        if self.study.focus:
            return rejection_figure(self.summary(), self.study.focus, title=self.study.name)
        return coverage_figure(self.summary(), title=self.study.name)


