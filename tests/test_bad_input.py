"""Bad input gets a clear one-line ``MelsmInputError`` naming the column, value or formula.

Almost every test here stops at ``melsm.Model(...)`` (no fitting); only the missing-value
tests fit, with a small model that has no random scale effects.
"""

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import melsm

FAST_MEAN = "hamdep ~ week + (1 | id)"


def input_error(**model_args) -> str:
    """Build a model that must fail; return its message, checked to be one line."""
    with pytest.raises(melsm.MelsmInputError) as info:
        melsm.Model(**model_args)
    return one_line(info.value)


def one_line(err: Exception) -> str:
    assert isinstance(err, ValueError)
    message = str(err)
    assert message.strip() == message and message
    assert len(message.splitlines()) == 1, message
    return message


def test_input_error_is_a_value_error_and_always_one_line():
    assert issubclass(melsm.MelsmInputError, ValueError)
    assert str(melsm.MelsmInputError("a\nb\r\n  c")) == "a b c"


# ---- unknown columns ---------------------------------------------------------------------

@pytest.mark.parametrize("formulas, column, where", [
    ({"mean": "hamdep ~ wek + (1 | id)"}, "wek", "in the mean formula"),
    ({"mean": FAST_MEAN, "within": "~ wek"}, "wek", "in the within formula"),
    ({"mean": FAST_MEAN, "between": "~ endogg"}, "endogg", "in the between formula"),
    ({"mean": "hamdep ~ week + (1 + wek | id)"}, "wek", "random part of the mean formula"),
    ({"mean": FAST_MEAN, "within": "~ 1 + (wek | id)"}, "wek", "random part of the within formula"),
    ({"mean": "hamdp ~ week + (1 | id)"}, "hamdp", "response"),
], ids=["mean", "within", "between", "mean-random", "within-random", "response"])
def test_unknown_column(reisby, formulas, column, where):
    message = input_error(data=reisby, **formulas)
    assert f"'{column}'" in message
    assert where in message
    assert "columns: id, hamdep, week, endog, endweek" in message


def test_unknown_grouping_column(reisby):
    message = input_error(mean="hamdep ~ week + (1 | patient)", data=reisby)
    assert "grouping column 'patient'" in message


def test_unknown_function_is_named(reisby):
    message = input_error(mean="hamdep ~ lg(week) + (1 | id)", data=reisby)
    assert "unknown function 'lg'" in message and "mean formula" in message


def test_transformed_response_is_rejected(reisby):
    message = input_error(mean="np.log(hamdep) ~ week + (1 | id)", data=reisby)
    assert "'np.log(hamdep)'" in message and "column name" in message


def test_duplicate_column_name(reisby):
    data = pd.concat([reisby, reisby[["week"]]], axis=1)
    message = input_error(mean=FAST_MEAN, data=data)
    assert "column 'week' appears 2 times" in message


# ---- non-numeric values ------------------------------------------------------------------

def test_non_numeric_value_in_csv_column(reisby, tmp_path):
    text = reisby.astype({"week": str})
    text.loc[7, "week"] = "abc"
    path = tmp_path / "bad.csv"
    text.to_csv(path, index=False)
    data = pd.read_csv(path)
    message = input_error(mean=FAST_MEAN, data=data)
    assert "column 'week'" in message
    assert "'abc'" in message
    assert "row 7" in message


def test_non_numeric_values_are_counted(reisby):
    data = reisby.astype({"endog": object})
    data.loc[[3, 9], "endog"] = ["x", "y"]
    message = input_error(mean="hamdep ~ week + endog + (1 | id)", data=data)
    assert "column 'endog'" in message and "'x' in row 3" in message
    assert "2 of 375 values are not numbers" in message


def test_numbers_stored_as_text(reisby):
    message = input_error(mean=FAST_MEAN, data=reisby.assign(week=reisby["week"].astype(str)))
    assert "column 'week'" in message and "numbers stored as text" in message


def test_text_response(reisby):
    data = reisby.assign(hamdep=reisby["hamdep"].map(lambda v: f"score {v}"))
    message = input_error(mean=FAST_MEAN, data=data)
    assert "response 'hamdep'" in message and "numeric" in message


def test_infinite_value_names_column_and_row(reisby):
    data = reisby.astype({"week": float})
    data.loc[11, "week"] = np.inf
    message = input_error(mean=FAST_MEAN, data=data)
    assert "column 'week'" in message and "infinite" in message and "row 11" in message


def test_complex_column(reisby):
    message = input_error(mean="hamdep ~ w + (1 | id)", data=reisby.assign(w=reisby["week"] + 1j))
    assert "column 'w'" in message and "complex" in message


# ---- missing values ----------------------------------------------------------------------

def with_missing(reisby):
    data = reisby.astype({"week": float, "hamdep": float, "id": float})
    data.loc[[4, 50], "week"] = np.nan
    data.loc[100, "hamdep"] = np.nan
    data.loc[[4, 200], "id"] = np.nan  # row 4 has two missing values: dropped once
    data.loc[300, "endweek"] = np.nan  # not used by the model: kept
    return data, [4, 50, 100, 200]


def test_missing_values_drop_rows_and_match_fit_without_them(reisby):
    data, dropped = with_missing(reisby)
    with pytest.warns(melsm.MelsmDataWarning, match="dropped 4 of 375 rows") as caught:
        model = melsm.Model(mean=FAST_MEAN, within="~ 1", data=data)
    warning = str(caught[0].message)
    assert "week: 2" in warning and "hamdep: 1" in warning and "id: 2" in warning
    assert "endweek" not in warning
    assert model.design.n_dropped == 4
    assert model.design.n_obs == 371
    fit = model.fit()
    assert "Dropped 4 rows" in fit.summary()
    assert fit.to_dict()["n_dropped"] == 4

    by_hand = data.drop(index=dropped)
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmDataWarning)
        reference = melsm.Model(mean=FAST_MEAN, within="~ 1", data=by_hand)
    assert reference.design.n_dropped == 0
    reference_fit = reference.fit()
    assert fit.loglik == pytest.approx(reference_fit.loglik, abs=1e-8)
    np.testing.assert_allclose(fit.estimates, reference_fit.estimates, rtol=1e-5, atol=1e-7)


def test_no_missing_values_no_warning_and_no_dropped_line(reisby):
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmDataWarning)
        model = melsm.Model(mean=FAST_MEAN, data=reisby)
    assert model.design.n_dropped == 0


def test_empty_data(reisby):
    message = input_error(mean=FAST_MEAN, data=reisby.iloc[:0])
    assert "empty" in message and "no rows" in message


def test_all_rows_missing(reisby):
    data = reisby.assign(week=np.nan)
    message = input_error(mean=FAST_MEAN, data=data)
    assert "no complete rows" in message
    assert "week: 375" in message


def test_data_missing_or_wrong_type(reisby):
    assert "no data" in input_error(mean=FAST_MEAN)
    assert "DataFrame" in input_error(mean=FAST_MEAN, data=reisby.to_numpy())


# ---- groups ------------------------------------------------------------------------------

def test_fewer_than_two_groups(reisby):
    message = input_error(mean=FAST_MEAN, data=reisby[reisby["id"] == 101])
    assert "grouping column 'id'" in message
    assert "only one group (101)" in message and "at least two" in message


def test_one_group_left_after_dropping_missing_rows(reisby):
    data = reisby.assign(week=reisby["week"].where(reisby["id"] == 101))
    message = input_error(mean=FAST_MEAN, data=data)
    assert "only one group" in message and "after dropping 369 rows" in message


# ---- covariates --------------------------------------------------------------------------

@pytest.mark.parametrize("formulas, where", [
    ({"mean": "hamdep ~ week + c + (1 | id)"}, "mean formula"),
    ({"mean": FAST_MEAN, "within": "~ c"}, "within formula"),
    ({"mean": FAST_MEAN, "between": "~ c"}, "between formula"),
], ids=["mean", "within", "between"])
def test_covariate_without_variation(reisby, formulas, where):
    message = input_error(data=reisby.assign(c=3.0), **formulas)
    assert "covariate 'c'" in message and "no variation" in message and where in message


@pytest.mark.parametrize("formulas, where", [
    ({"mean": "hamdep ~ week + x2 + (1 | id)"}, "mean formula"),
    ({"mean": FAST_MEAN, "within": "~ week + x2"}, "within formula"),
], ids=["mean", "within"])
def test_collinear_covariates(reisby, formulas, where):
    message = input_error(data=reisby.assign(x2=2 * reisby["week"]), **formulas)
    assert "covariate 'x2'" in message and "collinear" in message and "'week'" in message
    assert where in message


def test_between_covariate_varying_within_group(reisby):
    message = input_error(mean=FAST_MEAN, between="~ endog + week", data=reisby)
    assert "between covariate 'week'" in message
    assert "group 101 of 'id'" in message
    assert "np.int64" not in message


def test_between_covariate_varying_within_string_group(reisby):
    data = reisby.assign(id="p" + reisby["id"].astype(str), x=reisby["endog"])
    data.loc[data.index[-1], "x"] = 1 - data.loc[data.index[-1], "x"]
    last = data.loc[data.index[-1], "id"]
    message = input_error(mean=FAST_MEAN, between="~ x", data=data)
    assert f"between covariate 'x' varies within group '{last}'" in message


# ---- formula syntax ----------------------------------------------------------------------

@pytest.mark.parametrize("formulas, expected", [
    ({"mean": "hamdep week + (1 | id)"}, ["mean formula", "'~'"]),
    ({"mean": "hamdep ~ week + (1 | id) ~ x"}, ["mean formula", "exactly one '~'"]),
    ({"mean": "hamdep ~ (week + (1 | id)"}, ["mean formula", "unbalanced parentheses"]),
    ({"mean": "hamdep ~ week + (1 | id))"}, ["mean formula", "unbalanced parentheses"]),
    ({"mean": "hamdep ~ week +"}, ["'hamdep ~ week +'", "ends with '+'"]),
    ({"mean": "hamdep ~ week ++ endog"}, ["'+' twice"]),
    ({"mean": "hamdep ~ week + (1 | )"}, ["random term '(1 | )'", "no grouping factor"]),
    ({"mean": "hamdep ~ week + (1|)"}, ["random term '(1|)'"]),
    ({"mean": "hamdep ~ week + ( | id)"}, ["nothing left of '|'", "(1 | id)"]),
    ({"mean": "hamdep ~ week + (1 || id)", "within": "~ 1 + (1 | id)", "association": "quadratic"},
     ["association='quadratic'", "need '|', not '||'"]),
    ({"mean": "hamdep ~ week + (1 | id) + (0 + week | id)"}, ["2 random terms"]),
    ({"mean": "hamdep ~ "}, ["nothing right of '~'"]),
    ({"mean": "~ week + (1 | id)"}, ["no response"]),
    ({"mean": FAST_MEAN, "within": "hamdep ~ week"}, ["within formula", "must not have a response"]),
    ({"mean": FAST_MEAN, "between": "hamdep ~ endog"}, ["between formula", "must not have a response"]),
    ({"mean": FAST_MEAN, "within": "~ 1 + (1 | week)"}, ["different grouping factors", "id", "week"]),
    ({"mean": FAST_MEAN, "between": "~ endog + (1 | id)"}, ["between formula", "cannot have random terms"]),
    ({"mean": "hamdep ~ week", "between": "~ endog"}, ["mean formula has no random part"]),
    ({"mean": FAST_MEAN, "within": ""}, ["within formula is empty"]),
    ({"mean": FAST_MEAN, "within": "~ 0"}, ["within formula has no terms"]),
    ({"mean": "hamdep ~ week $ endog + (1 | id)"}, ["mean formula", "week $ endog", "character '$'"]),
    ({"mean": 3}, ["mean formula must be a string", "int 3"]),
], ids=["no-tilde", "two-tildes", "open-paren", "close-paren", "trailing-plus", "double-plus",
        "random-no-group", "random-no-group-nospace", "random-no-terms", "double-bar", "two-random-terms",
        "no-rhs", "no-response",
        "response-in-within", "response-in-between", "two-groups", "random-in-between",
        "between-without-random", "empty-within", "within-no-intercept", "bad-operator", "not-a-string"])
def test_formula_syntax_error(reisby, formulas, expected):
    message = input_error(data=reisby, **formulas)
    for text in expected:
        assert text in message


def test_formula_over_several_lines_gives_one_line_message(reisby):
    message = input_error(mean="hamdep ~ week +\n    (1 | id) +\n    (week | id)", data=reisby)
    assert "'hamdep ~ week + (1 | id) + (week | id)' has 2 random terms" in message


# ---- options -----------------------------------------------------------------------------

@pytest.mark.parametrize("association", ["linearr", "None", None, 1])
def test_invalid_association(reisby, association):
    message = input_error(mean=FAST_MEAN, data=reisby, association=association)
    assert f"association {association!r}" in message
    assert "correlated, none, linear" in message


def test_association_linear_needs_both_random_parts(reisby):
    message = input_error(mean=FAST_MEAN, data=reisby, association="linear")
    assert "association='linear'" in message


@pytest.mark.parametrize("quadrature", [0, -3, 2.5, float("nan"), "abc", "7", True])
def test_invalid_quadrature(reisby, quadrature):
    model = melsm.Model(mean=FAST_MEAN, within="~ 1 + (1 | id)", data=reisby)
    with pytest.raises(melsm.MelsmInputError) as info:
        model.fit(quadrature=quadrature)
    message = one_line(info.value)
    assert "quadrature must be a positive integer" in message
    assert repr(quadrature) in message


# ---- categorical columns -----------------------------------------------------------------

@pytest.fixture
def schools(tutorial):
    return tutorial.assign(sg=tutorial["schgend"].map({1: "mixed", 2: "boys", 3: "girls"}))


def test_text_column_without_c_is_an_error(schools):
    message = input_error(mean="normexam ~ standlrt + sg + (1 | school)", data=schools)
    assert "column 'sg'" in message and "in the mean formula" in message
    assert "'mixed'" in message and "C(sg)" in message


def test_pandas_categorical_without_c_is_an_error(schools):
    data = schools.assign(sg=schools["sg"].astype("category"))
    message = input_error(mean="normexam ~ standlrt + sg + (1 | school)", data=data)
    assert "column 'sg'" in message and "C(sg)" in message


def test_text_column_with_c_in_one_formula_but_bare_in_another(schools):
    message = input_error(mean="normexam ~ standlrt + C(sg) + (1 | school)", within="~ sg", data=schools)
    assert "column 'sg' in the within formula" in message and "C(sg)" in message


@pytest.mark.parametrize("formulas, part", [
    ({"mean": "normexam ~ standlrt + C(sg) + (1 | school)"}, "x_names"),
    ({"mean": "normexam ~ standlrt + C(sg, contr.treatment('mixed')) + (1 | school)"}, "x_names"),
    ({"mean": "normexam ~ standlrt + (1 | school)", "within": "~ C(sg)"}, "w_names"),
    ({"mean": "normexam ~ standlrt + (1 | school)", "between": "~ C(sg)"}, "g_names"),
], ids=["mean", "mean-contrast", "within", "between"])
def test_text_column_with_c_works(schools, formulas, part):
    model = melsm.Model(data=schools, **formulas)
    names = getattr(model.design, part)
    assert len([n for n in names if n.startswith("C(sg")]) == 2  # three levels, one is the reference
    assert model.design.n_obs == len(schools)


def test_numeric_coded_column_without_c_is_numeric(tutorial):
    model = melsm.Model(mean="normexam ~ standlrt + schgend + (1 | school)", data=tutorial)
    assert model.design.x_names == ["Intercept", "standlrt", "schgend"]


def test_string_group_labels_are_fine(reisby):
    model = melsm.Model(mean=FAST_MEAN, data=reisby.assign(id="p" + reisby["id"].astype(str)))
    assert model.design.n_groups == 66


def test_messages_never_show_numpy_reprs(reisby):
    data = reisby.astype({"week": object})
    data.loc[5, "week"] = "abc"
    data.loc[6, "week"] = np.nan  # a float NaN makes the index label a numpy integer in some paths
    message = input_error(mean=FAST_MEAN, data=data)
    assert not re.search(r"np\.\w+\(", message)
    assert "'abc' in row 5" in message


def test_processes_from_a_script_without_the_main_guard(tmp_path):
    """A script that asks for worker processes at its top level: the workers import it
    again and fail; the user gets one line saying what to do, not Dask's traceback."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("import melsm\n"
                      "data = melsm.datasets.load('reisby')\n"
                      "fit = melsm.Model(mean='hamdep ~ week + (1 | id)', data=data).fit()\n"
                      "fit.bootstrap(2, scheduler='processes', workers=1, progress=False)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("melsm.errors.MelsmInputError: the local Dask cluster's worker processes failed to "
                           "start (")
    assert last.endswith('its code must be under `if __name__ == "__main__":`, as for any process pool')
