"""The app's result tables (``melsm.app.tables``), made in the worker from the results'
DataFrames: the API's names and columns, every value as the DataFrame has it, and the
comparison's LR rows for nested fits only, with the API's wording of χ̄²."""

import json
import warnings

import pytest

import melsm
from melsm.app.tables import comparison_tables, number, p_value, result_tables

MODEL_1 = ("normexam ~ 1 + (1 | school)", "~ 1")
MODEL_2 = ("normexam ~ 1 + (1 | school)", "~ 1 + (1 | school)")
SLOPE_ONLY = ("normexam ~ standlrt + (1 | school)", "~ 1")  # Model 1 plus standlrt; not nested in Model 2
BETWEEN = {"within:Intercept": "~ C(schgend)"}


def _fit(data, mean, within, between=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return melsm.Model(mean, within=within, between=between, data=data).fit()


@pytest.fixture(scope="module")
def fits(tutorial):
    return {"model 1": _fit(tutorial, *MODEL_1), "model 2": _fit(tutorial, *MODEL_2),
            "slope": _fit(tutorial, *SLOPE_ONLY), "between": _fit(tutorial, *MODEL_2, BETWEEN)}


def _labels(table) -> list[str]:
    return [r["label"] for r in table["rows"] if "label" in r]


def _cells(table) -> dict[str, list[str]]:
    return {r["label"]: r["cells"] for r in table["rows"] if "label" in r}


def test_the_parameter_table_is_fit_table_by_the_apis_names(fits):
    fit = fits["between"]
    tables = {t["key"]: t for t in result_tables(fit)}
    assert list(tables) == ["parameters", "covariance", "typical", "population"]
    json.dumps(tables, allow_nan=False)  # plain values: nothing a browser's JSON.parse refuses
    parameters, frame = tables["parameters"], fit.table()
    assert _labels(parameters) == list(fit.names)
    assert "between:within:Intercept:C(schgend)[T.2]" in fit.names and "sd:mean:Intercept" in fit.names
    assert parameters["columns"] == list(frame.columns) == ["estimate", "std_error", "lower", "upper", "z", "p"]
    for name, cells in _cells(parameters).items():
        row = frame.loc[name]
        assert cells[:5] == [number(row[c]) for c in ("estimate", "std_error", "lower", "upper", "z")]
        assert cells[5] == p_value(row["p"])
    blocks = [r["block"] for r in parameters["rows"] if "block" in r]
    assert blocks == ["Mean function", "Level-1 variance function (log variance)",
                      "Level-2 variance functions (log variances of random effects)",
                      "Random-effect standard deviations", "Random-effect correlations"]


def test_covariances_typical_groups_and_population_are_their_dataframes(fits):
    fit = fits["between"]
    tables = {t["key"]: t for t in result_tables(fit)}
    sigma = fit.covariance_matrix()
    assert tables["covariance"]["columns"] == list(sigma.columns) == ["mean:Intercept", "within:Intercept"]
    assert _cells(tables["covariance"]) == {
        "mean:Intercept": [number(sigma.iloc[0, 0]), ""],
        "within:Intercept": [number(sigma.iloc[1, 0]), number(sigma.iloc[1, 1])]}
    typical = fit.typical_groups()  # turned on its side: a row per parameter
    assert _labels(tables["typical"]) == list(typical.columns)
    assert tables["typical"]["columns"] == list(typical.index)
    assert _cells(tables["typical"])["sd:within:Intercept"] == [number(v) for v in typical["sd:within:Intercept"]]
    population = fit.population_quantities()
    assert _labels(tables["population"]) == list(population.index)
    assert _cells(tables["population"])["icc"] == [number(v) for v in population.loc["icc"]]
    # without level-2 functions, no typical groups
    assert [t["key"] for t in result_tables(fits["model 2"])] == ["parameters", "covariance", "population"]


def test_nested_fits_get_an_lr_row_with_the_apis_chibar_wording(fits):
    small, big = fits["model 1"], fits["model 2"]
    answer = comparison_tables([small, big], ["Model 1", "Model 2"])
    json.dumps(answer, allow_nan=False)
    side, lr = answer["tables"]
    expected = big.lrtest(small)
    assert expected.distribution == "χ̄²: ½χ²(1) + ½χ²(2)"
    assert lr["key"] == "lrtests" and lr["columns"] == ["statistic", "df", "distribution", "p", "note"]
    assert _cells(lr) == {"Model 2 vs Model 1": [number(expected.statistic), "2", expected.distribution,
                                                 p_value(expected.p_value), expected.note]}
    assert _cells(side)["LR test vs the model before"] == ["", f"LR {number(expected.statistic)}, p <0.0001"]
    assert answer["notes"] == []
    # the side-by-side rows are the API's names, each fit's estimate (std_error)
    assert _labels(side)[:6] == ["mean:Intercept", "within:Intercept", "sd:mean:Intercept", "sd:within:Intercept",
                                 "corr:mean:Intercept,within:Intercept", "Log-likelihood"]
    row = big.table().loc["sd:within:Intercept"]
    assert _cells(side)["sd:within:Intercept"] == ["", f"{number(row['estimate'])} ({number(row['std_error'])})"]


def test_pairs_that_are_not_nested_get_no_lr_row(fits):
    ordered = [fits["model 1"], fits["slope"], fits["model 2"]]  # by number of parameters, as the app sends them
    answer = comparison_tables(ordered, ["Model 1", "Slope", "Model 2"])
    side, lr = answer["tables"]
    assert list(_cells(lr)) == ["Slope vs Model 1"]  # Model 2 vs Slope: not nested, no row
    assert _cells(lr)["Slope vs Model 1"][2] == "χ²(1)"
    assert _cells(side)["LR test vs the model before"][2] == ""
    assert answer["notes"] == ["Slope and Model 2 are not nested (the smaller model's mean function has "
                               "'standlrt', which the larger lacks): no LR test."]
    answer = comparison_tables([fits["slope"], fits["model 2"]], ["Slope", "Model 2"])
    assert [t["key"] for t in answer["tables"]] == ["compare"]  # no test at all: no LR table, no LR row
    assert "LR test vs the model before" not in _cells(answer["tables"][0])
