"""The demo: the London schools analysis (Leckie 2014) and the Riesby model, as one report.

``run_demo(path)`` fits Models 1–6 of the London schools data by maximum likelihood and
by MCMC, and the Riesby location-scale model (MIXREGLS' example) by maximum likelihood,
then writes the HTML report (``melsm.report``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from melsm.progress import Progress

LONDON_MODELS = {
    "Model 1": ("normexam ~ 1 + (1 | school)", "~ 1"),
    "Model 2": ("normexam ~ 1 + (1 | school)", "~ 1 + (1 | school)"),
    "Model 3": ("normexam ~ standlrt + girl + (1 | school)", "~ 1 + (1 | school)"),
    "Model 4": ("normexam ~ standlrt + girl + (standlrt | school)", "~ 1 + (1 | school)"),
    "Model 5": ("normexam ~ standlrt + girl + (standlrt | school)", "~ standlrt + girl + (1 | school)"),
    "Model 6": ("normexam ~ standlrt + girl + (standlrt | school)", "~ standlrt + girl + (standlrt | school)"),
}
RIESBY = {
    "data": "reisby",
    "mean": "hamdep ~ week + endog + endweek + (1 | id)",
    "within": "~ week + endog + (1 | id)",
    "between": "~ endog",
    "association": "none",
}
INTRO = ("The London schools data (4,059 pupils in 65 schools; normexam: age-16 exam score, standlrt: "
         "age-11 reading test, girl) fitted as in Leckie (2014): Models 1-6 let the school means and the "
         "school level-1 variances vary, explain them with covariates and correlate them. Then the Riesby "
         "depression data (Hamilton scores of 66 patients over 6 weeks) with MIXREGLS' location-scale model. "
         "Everything below is computed by melsm from these fits. As in the paper, the school rankings are "
         "those of Model 2 (the first model with school-specific variances) and the predicted school lines "
         "those of Model 6 (random slopes in both functions).")
#: The fits the paper's story is told with (``melsm.report``'s ``groups_of`` and ``lines_of``):
#: Model 2's school means, variances and ICCs; Model 6's predicted school lines.
FOCUS = {"groups_of": "Model 2", "lines_of": "Model 6"}
#: MCMC settings of the demo: every fit converges by the package's criteria (R-hat < 1.01,
#: bulk and tail ESS ≥ 400, no divergences). R-hat needs long chains more than many: the
#: slowest parameter, Model 6's scale random-slope SD, has an ESS of about 0.25 per draw,
#: so 500 draws per chain left R-hat at 1.006-1.013 (16 chains did not lower it) and
#: 1,000 give 1.003-1.005 with bulk ESS ≥ 1,800. ChEES adapts well within 300 warm-up
#: iterations on these models.
DEMO_MCMC = {"chains": 8, "warmup": 300, "draws": 1000}


def run_demo(path: str | Path = "melsm-demo.html", mcmc: bool = True, chains: int = DEMO_MCMC["chains"],
             warmup: int = DEMO_MCMC["warmup"], draws: int = DEMO_MCMC["draws"], seed: int = 0,
             figures: str | Path | None = None, stream=None, quiet: bool = False,
             progress=None) -> tuple[Path, dict]:
    """Fit the demo models and write the report to ``path``; returns (path, fits by name).

    ``figures``: a folder to also write the main figures to as PNG files. ``progress``:
    the steps done, as ``melsm.progress.Progress`` shows them (a bar by default, else
    ``[ k/n] what ... 1.2 s`` lines; False or ``quiet``: nothing; a callable
    ``(done, total)``), on ``stream`` (default: standard error).
    """
    import melsm
    from melsm.reporting.report import report

    london, riesby_data = melsm.datasets.load("tutorial"), melsm.datasets.load(RIESBY["data"])
    total = len(LONDON_MODELS) * (2 if mcmc else 1) + 2
    fits: dict = {}
    with Progress(False if quiet else progress, total=total, desc="demo", unit="step", file=stream) as steps, \
            warnings.catch_warnings():
        # problems are reported in the fits' summaries and in the report, not as warnings here
        warnings.simplefilter("ignore")
        models = {name: melsm.Model(mean, within=within, data=london) for name, (mean, within) in LONDON_MODELS.items()}
        for name, model in models.items():
            fits[f"{name} (ML)"] = steps.step(f"{name}, maximum likelihood", model.fit)
        if mcmc:
            for name, model in models.items():
                fits[f"{name} (MCMC)"] = steps.step(
                    f"{name}, MCMC {chains} chains x {draws} draws",
                    lambda m=model, n=name: m.sample(chains=chains, warmup=warmup, draws=draws, seed=seed,
                                                     start=fits[f"{n} (ML)"], progress=False))
        riesby = melsm.Model(RIESBY["mean"], within=RIESBY["within"], between=RIESBY["between"], data=riesby_data,
                             association=RIESBY["association"])
        fits["Riesby (ML)"] = steps.step("Riesby model, maximum likelihood", riesby.fit)
        path = Path(path)
        names = [key.split(" (")[0] for key in fits]  # "Model 1" names the ML and the MCMC fit
        steps.step("writing the report", lambda: report(list(fits.values()), names, path=path,
                                                        title="melsm demo: London schools and Riesby",
                                                        intro=INTRO, **FOCUS))
        if figures is not None:
            _write_figures(fits, Path(figures), mcmc)
    return path.resolve(), fits


def _write_figures(fits: dict, folder: Path, mcmc: bool) -> None:
    """The main figures as PNG files (for documents and the README)."""
    from melsm.reporting.plots import population_figure

    folder.mkdir(parents=True, exist_ok=True)
    kind = "MCMC" if mcmc else "ML"
    groups, lines = (f"{FOCUS[key]} ({kind})" for key in ("groups_of", "lines_of"))
    figures = {f"caterpillar_{q}.png": fits[groups].plot.caterpillar(q, name=groups)
               for q in ("mean", "variance", "icc")}
    figures["lines_mean.png"] = fits[lines].plot.group_lines("standlrt", "mean", name=lines)
    figures["lines_variance.png"] = fits[lines].plot.group_lines("standlrt", "variance", name=lines)
    figures["observed.png"] = fits[groups].plot.observed()
    names = [f"{model} ({kind})" for model in LONDON_MODELS]
    figures["population.png"] = population_figure([fits[n] for n in names], [n.split(" (")[0] for n in names])
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=110)
