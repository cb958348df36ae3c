"""The user-facing model object: specification + data → fits."""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from melsm.distributed.source import is_distributed
from melsm.engine.blocks import Blocks, block_data
from melsm.engine.rows import ModelData, model_data
from melsm.errors import MelsmDataWarning, MelsmInputError, count
from melsm.estimate.ml import default_quadrature, fit_ml, warn_boundary
from melsm.model.association import Association
from melsm.model.design import build_design
from melsm.model.params import ParamLayout
from melsm.model.scaling import Units, standardise
from melsm.model.spec import make_spec
from melsm.progress import Progress, interactive_only
from melsm.results.ml import MLResults

#: The most quadrature nodes per group a fit may ask for (memory grows with them).
MAX_NODES_PER_GROUP = 10_000
#: Seconds an ML fit runs before its progress bar appears (warm fits take well under one).
ML_PROGRESS_DELAY = 2.0
log = logging.getLogger(__name__)


def _check_quadrature_size(points: int, layout: ParamLayout) -> None:
    """Refuse a rule with more than ``MAX_NODES_PER_GROUP`` nodes: K^d for d scale effects,
    K(4K − 3) for the quadratic association's nested rule."""
    def nodes(k: int) -> int:
        return layout.association.nodes_per_group(k, layout.n_agq)

    if nodes(points) > MAX_NODES_PER_GROUP:
        largest = max(k for k in range(1, MAX_NODES_PER_GROUP + 1) if nodes(k) <= MAX_NODES_PER_GROUP)
        raise MelsmInputError(f"quadrature={points} gives {nodes(points):,} nodes per group; the limit is "
                              f"{MAX_NODES_PER_GROUP:,} (quadrature={largest} for this model)")


class Model:
    """A two-level mixed-effects location scale model.

    Parameters
    ----------
    mean : str
        ``"y ~ x + (z | group)"``: response, fixed part and random location effects.
    within : str
        ``"~ w + (s | group)"``: log level-1 variance, fixed part and random scale effects.
    between : str or dict, optional
        ``"~ g"``: log variance of the random location intercept as a function of group
        covariates (constant within group); or one such function per random effect,
        ``{"mean:Intercept": "~ g", "within:Intercept": "~ g"}`` (log σ²_k,j = g_j'κ_k).
    data : pandas.DataFrame, Parquet path or Dask DataFrame
        A path (a Parquet file or directory, on storage every worker can read) or a Dask
        DataFrame is held by a Dask cluster: each partition must hold whole groups, the
        likelihood is evaluated there and the optimiser runs here (ML fits only;
        docs/architecture.md, 'Data on a cluster').
    scheduler, workers : optional
        For such data, the Dask scheduler's address (``"tcp://host:8786"``), else a local
        cluster of ``workers`` processes (``melsm.parallel.connect``).
    association : {"correlated", "none", "linear", "quadratic"}
        All random effects of a group are correlated by default; ``"none"`` makes the
        location and scale blocks independent; ``"linear"`` is MIXREGLS' name for the
        correlated random-intercept model; ``"quadratic"`` (one random location and one
        random scale effect) adds τ_q θ1² to the scale effect, θ1 the standardised location
        effect: v_j = τ_l θ1_j + τ_q θ1_j² + σ θ2_j in MIXREGLS' terms.
    weights : str, optional
        A column of frequency weights: a row of weight w counts as w identical
        observations (every term of the likelihood is multiplied by w; BIC uses Σw).

    ``offset(expr)`` in the mean or within formula adds ``expr`` to that linear
    predictor with coefficient 1 (e.g. ``offset(log(exposure))`` in the log variance).

    Rows with a missing value in a used column are dropped (with a warning; the count
    is in the summary).
    """

    def __init__(self, mean: str, within: str = "~ 1", between: str | dict | None = None,
                 data: pd.DataFrame | None = None, association: str = "correlated", weights: str | None = None,
                 scheduler: str | None = None, workers: int | None = None):
        if data is None:
            raise MelsmInputError("no data given (data=...)")
        self.spec = make_spec(mean, within, between, association, weights)
        self._cluster = None
        if is_distributed(data):
            from melsm.distributed.cluster import ClusterData

            self._cluster = ClusterData.open(self.spec, data, scheduler, workers)
            self.design = d = self._cluster.design
        else:
            self.design = d = build_design(self.spec, data)
        if d.n_dropped:
            counts = ", ".join(f"{name}: {n}" for name, n in d.n_missing.items())
            warnings.warn(f"dropped {d.n_dropped} of {d.n_dropped + d.n_obs} rows with missing values "
                          f"in the model's columns (missing values: {counts})",
                          MelsmDataWarning, stacklevel=2)
        self.spec.association.check_effects(len(d.zu_names), len(d.zv_names))
        self.layout = ParamLayout(tuple(d.x_names), tuple(d.w_names), tuple(d.g_coefs),
                                  tuple(d.zu_names), tuple(d.zv_names), self.spec.association,
                                  g_functions=tuple(tuple(f) for f in d.g_functions),
                                  uncorrelated=self.spec.uncorrelated)
        self._units: Units | None = None
        self._fit_data: dict[int, ModelData | Blocks] = {}
        self._model_data: ModelData | None = None
        self._sampler_data: ModelData | None = None

    def _rows_here(self, what: str) -> None:
        """Refuse what needs the rows in this process for data held by a cluster."""
        if self._cluster is not None:
            raise MelsmInputError(f"{what} need the rows in memory; this model's data are held by a Dask "
                                  "cluster (ML fits only: load the data as a pandas DataFrame for the rest)")

    def close(self) -> None:
        """Release data held by a Dask cluster and close the connection (and a local cluster)."""
        if self._cluster is not None:
            self._cluster.close()

    @property
    def association(self) -> Association:
        """The association of location and scale effects (``melsm.model.association``), as
        the specification holds it (``"linear"`` is ``"correlated"``)."""
        return self.spec.association

    @property
    def units(self) -> Units:
        """The standardised design the ML fit works on, and the map of its estimates back to
        the data's units (``melsm.model.scaling``)."""
        if self._units is None:
            self._units = (standardise(self.design, self.layout) if self._cluster is None
                           else self._cluster.units(self.layout))
        return self._units

    @property
    def internal_data(self) -> ModelData | Blocks:
        """Arrays of the standardised design (``units``) that an ML fit with the default
        quadrature works on (``fit_data``)."""
        return self.fit_data()

    def fit_data(self, quadrature: int | None = None) -> ModelData | Blocks:
        """Arrays of the standardised design for an ML fit with ``quadrature`` points (None:
        the default): padded to bucketed sizes (``melsm.engine.rows.model_data``), in blocks
        of groups when one block's likelihood would need more memory than
        ``melsm.engine.blocks.block_budget`` allows (``engine.blocks.block_data``). Kept per
        rule, so a fit and its results use the same blocks."""
        layout = self.layout
        points = layout.association.nodes_per_group(quadrature or default_quadrature(layout), layout.n_agq)
        if self._cluster is not None:
            return self._cluster.fit_data(self.units, points)
        if points not in self._fit_data:
            self._fit_data[points] = block_data(self.units.design, points)
        return self._fit_data[points]

    @property
    def model_data(self) -> ModelData:
        """Arrays of the design in the data's own units, padded as ``internal_data``: the
        likelihood at a fit's ``theta`` (``likelihood.loglik``)."""
        self._rows_here("the rows' arrays")
        if self._model_data is None:
            self._model_data = model_data(self.design, padded=True)
        return self._model_data

    @property
    def sampler_data(self) -> ModelData:
        """Arrays for MCMC, unpadded: every group's η_v is a sampled parameter."""
        self._rows_here("the rows' arrays")
        if self._sampler_data is None:
            self._sampler_data = model_data(self.design)
        return self._sampler_data

    def with_response(self, y) -> Model:
        """This model with the response replaced by ``y`` (one value per row used, in the
        design's row order: sorted by group, as ``design.y``). Covariates, groups, weights
        and offsets are kept, so the arrays have the same shapes and a fit reuses the
        compiled likelihood; the parametric bootstrap refits with it
        (``melsm.results.bootstrap``)."""
        self._rows_here("a new response")
        y = np.asarray(y, dtype=float)
        if y.shape != self.design.y.shape or not np.isfinite(y).all():
            raise MelsmInputError(f"the new response must be {self.design.n_obs} finite numbers (one per row "
                                  f"used, in the design's order), not an array of shape {y.shape}")
        new = copy.copy(self)
        new.design = replace(self.design, y=y, y_scale=float(np.std(y)))
        new._units = new._model_data = new._sampler_data = None
        new._fit_data = {}
        return new

    def fit(self, quadrature: int | None = None, start=None, max_iter: int | None = None,
            progress: Any = None) -> MLResults:
        """Maximum-likelihood fit.

        ``quadrature``: Gauss–Hermite points per random scale effect (default 11 for one,
        7 for two; 1 is the Laplace approximation); under the quadratic association the
        outer points of the nested rule (default 11, with 4n − 3 inner points each).
        ``start``: θ (``fit.theta`` of another fit of this model).
        ``max_iter``: cap on the iterations of each optimiser run (default 1000).
        ``progress``: the stages as ``melsm.progress.Progress`` steps; by default a bar in a
        terminal or notebook once the fit has taken ``ML_PROGRESS_DELAY`` seconds (a first
        fit, which compiles), nothing in a log; False: none.

        Convergence is judged by the gradient (every |∂ log L/∂θ| < 1e-3) and a
        positive-definite −Hessian over the identified parameters; otherwise the result
        has ``converged=False`` and a ``MelsmConvergenceWarning`` says why. Random effects
        estimated on the boundary (variance 0, or a singular covariance matrix) are listed
        in ``boundary`` with a ``MelsmBoundaryWarning``.
        """
        if quadrature is not None:
            quadrature = count(quadrature, "quadrature", meaning="points per random scale effect")
            _check_quadrature_size(quadrature, self.layout)
        if max_iter is not None:
            max_iter = count(max_iter, "max_iter")
        units = self.units
        start = None if start is None else units.to_internal(start)
        log.info("maximum likelihood: %s by %s, %d groups, %d rows", self.spec.response, self.spec.group,
                 self.design.n_groups, self.design.n_obs)
        stages = 1 if start is not None or not self.layout.q_v else 2
        with Progress(interactive_only(progress), total=stages, desc="ML fit", unit="stage",
                      delay=ML_PROGRESS_DELAY if progress is None else 0.0) as reporter:
            opt, info = fit_ml(units.design, self.fit_data(quadrature), self.layout, quadrature, start, max_iter,
                               reporter)
        for stage in info["stages"]:
            stage["loglik"] = units.loglik_to_user(stage["loglik"])
        result = MLResults(self, units.optimum_to_user(opt), info)
        log.info("maximum likelihood in %.1f s: %s iterations, log L = %.4f, %s", info["seconds"],
                 " + ".join(str(stage["iterations"]) for stage in info["stages"]), info["stages"][-1]["loglik"],
                 "converged" if result.converged else "NOT converged")
        warn_boundary(result.boundary_values)
        return result

    def sample(self, chains: int = 16, warmup: int = 1000, draws: int = 1000, seed: int = 0,
               priors=None, progress: bool | None = None, start=None):
        """Bayesian fit by MCMC (u integrated out, drawn exactly afterwards).

        ``priors``: "default" (weakly informative), "diffuse" (close to Stat-JR/MLwiN) or a
        dict of ``melsm.estimate.priors.Priors`` fields. ``start``: an ML fit to start from (else one
        is made). ``progress``: the iterations done after warm-up, as ``melsm.progress.Progress``
        shows them (a tqdm bar by default; False: nothing; a callable ``(done, total)``).
        Returns ``MCMCResults``.
        """
        from melsm.estimate.mcmc import sample
        from melsm.results.mcmc import MCMCResults

        chains, warmup, draws = count(chains, "chains", 2), count(warmup, "warmup", 10), count(draws, "draws", 10)
        positions, sample_layout, info = sample(self, chains, warmup, draws, seed, priors, progress, start)
        return MCMCResults(self, positions, sample_layout, info)
