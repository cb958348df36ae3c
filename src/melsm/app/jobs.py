"""Work the app hands to its worker process: fitting, comparing, reporting.

Everything that compiles or runs JAX happens here, in a separate process, so that the
server stays small and a worker that has compiled many models (XLA keeps memory maps
per compiled model) can be replaced. Inputs and outputs are plain picklable values;
fits travel as pickled bytes.
"""

from __future__ import annotations

import base64
import json
import pickle
import warnings

import pandas as pd

#: Figures shown for a fit: (key, title), drawn when the model has what they need.
CATERPILLARS = (("caterpillar_mean", "mean"), ("caterpillar_variance", "variance"), ("caterpillar_icc", "icc"))


def _png(fig) -> str:
    from melsm.reporting.report import figure_png

    return base64.b64encode(figure_png(fig, dpi=90)).decode("ascii")


def _figures(fit, name: str) -> list[dict]:
    from melsm.results.groups import has_group_quantities, random_slopes

    layout = fit.model.layout
    figures = [{"key": "observed", "title": "Observed group means and variances", "png": _png(fit.plot.observed())}]
    if has_group_quantities(layout):
        for key, quantity in CATERPILLARS:
            figures.append({"key": key, "title": f"Groups ranked by {quantity}",
                            "png": _png(fit.plot.caterpillar(quantity, name=name))})
    for function, term in random_slopes(layout):
        figures.append({"key": f"lines_{function}_{term}", "title": f"Group lines of the {function} against {term}",
                        "png": _png(fit.plot.group_lines(term, function, name=name))})
    return figures


def fit_job(data: pd.DataFrame, request: dict, progress=None) -> dict:
    """Fit one model; the result record the page shows, with the pickled fit.
    ``progress``: a callable ``(done, total)`` that gets the MCMC iterations as the
    sampler runs (the worker's, which sends them to the page's job)."""
    import melsm
    from melsm.errors import MelsmInputError

    from .tables import result_tables

    formulas, options = request["formulas"], request["options"]
    name = request["name"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = melsm.Model(formulas["mean"], within=formulas["within"], between=formulas["between"],
                                data=data, association=request["association"])
            if request["method"] == "mcmc":
                fit = model.sample(progress=False if progress is None else progress, **options)
            else:
                fit = model.fit()
        except MelsmInputError as err:
            return {"error": str(err)}
        except FloatingPointError as err:
            return {"error": f"the fit failed numerically: {err}"}
        figures = _figures(fit, name)
        tables = result_tables(fit)  # after the figures, which compute the group quantities it shows
    notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
    record = {"name": name, "method": request["method"], "formulas": formulas,
              "association": request["association"], "options": options, "summary": fit.summary(),
              "tables": tables, "converged": bool(fit.converged), "warnings": notes, "figures": figures,
              "n_obs": fit.model.design.n_obs, "n_groups": fit.model.design.n_groups}
    if request["method"] == "mcmc":
        record.update(dic=fit.dic["DIC"], p_d=fit.dic["p_D"], seconds=fit.info["seconds"])
    else:
        record.update(loglik=fit.loglik, aic=fit.aic, bic=fit.bic, n_params=fit.n_params, seconds=fit.seconds)
    effects = fit.random_effects()
    record["random_effects_csv"] = effects.to_csv()
    record["json"] = json.dumps({"name": name, **fit.to_dict()}, indent=2)
    record["pickle"] = pickle.dumps(fit)
    return record


def compare_job(pickles: list[bytes], names: list[str]) -> dict:
    """The comparison of pickled fits: ``{"tables", "notes"}`` (``tables.comparison_tables``:
    estimates side by side by the API's names, LR tests of consecutive nested fits)."""
    from melsm.errors import MelsmInputError

    from .tables import comparison_tables

    fits = [pickle.loads(p) for p in pickles]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            answer = comparison_tables(fits, names)
        except MelsmInputError as err:
            return {"error": str(err)}
    answer["notes"] += list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))
    return answer


def report_job(pickles: list[bytes], names: list[str]) -> dict:
    """The HTML report of pickled fits."""
    import melsm

    fits = [pickle.loads(p) for p in pickles]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"html": melsm.report(fits, names, title="melsm report")}


def warm_up() -> bool:
    """Import the engine in the worker before the first request needs it."""
    import melsm  # noqa: F401

    return True
