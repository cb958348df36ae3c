"""The app's covariate rules, computed and enforced by the server from the data: each
column's level given the group (constant, level 1, level 2), the categorical toggle, and
the icon. Fits here are stand-ins (no engine); the tables of real fits are in
test_app_tables.py, the page in test_app_layout.py."""

import json

import numpy as np
import pandas as pd
import pytest
from test_app_worker import AppClient, running_app, stand_in_form

from melsm.app import forms
from melsm.app.columns import column_levels
from melsm.app.limits import MAX_CATEGORIES


@pytest.fixture(scope="module")
def app():
    with running_app(job_timeout=30) as server:
        yield server


@pytest.fixture
def client(app) -> AppClient:
    return AppClient(app.server_address[1])


def _form(**changes) -> dict:
    return stand_in_form("M", **changes)


# ---- levels --------------------------------------------------------------------------------
def test_levels_of_the_london_columns(tutorial):
    levels = column_levels(tutorial, "school")
    assert levels == {"school": "group", "student": "level-1", "normexam": "level-1", "cons": "constant",
                      "standlrt": "level-1", "girl": "level-1", "schgend": "level-2", "avslrt": "level-2",
                      "schav": "level-2", "vrband": "level-1"}
    # without a group only the constant columns are known
    assert column_levels(tutorial, None) == {c: "constant" if c == "cons" else "" for c in tutorial.columns}
    assert column_levels(tutorial, "cons")["schgend"] == ""  # a constant column is no group


def test_levels_count_a_missing_value_as_a_value_and_text_columns_too():
    data = pd.DataFrame({"g": [1, 1, 2, 2, 3, 3], "y": np.arange(6.0), "z": [1.0, np.nan, 2, 2, 3, 3],
                         "w": [5.0, 5, 6, 6, np.nan, np.nan], "city": ["a", "a", "b", "b", "a", "a"],
                         "one": ["k"] * 6})
    assert column_levels(data, "g") == {"g": "group", "y": "level-1", "z": "level-1", "w": "level-2",
                                        "city": "level-2", "one": "constant"}
    info = {c["name"]: c for c in forms.column_info(data, "g")}
    assert info["city"]["categorical"] == "always" and info["w"]["categorical"] == "can"
    assert info["one"]["level"] == "constant"


def test_the_columns_endpoint_gives_the_levels_for_the_group(client):
    status, answer = client.json("GET", "/api/columns?name=tutorial&group=school")
    assert status == 200 and answer["group"] == "school"
    levels = {c["name"]: c["level"] for c in answer["columns"]}
    assert levels["schgend"] == "level-2" and levels["standlrt"] == "level-1" and levels["cons"] == "constant"
    status, answer = client.json("GET", "/api/columns?name=tutorial")
    assert status == 200 and {c["level"] for c in answer["columns"]} == {"", "constant"}
    status, answer = client.json("GET", "/api/columns?name=../../etc/passwd&group=school")
    assert status == 400 and "no data set" in answer["errors"]["data"]


# ---- the rules, enforced -----------------------------------------------------------------------
@pytest.mark.parametrize("changes, field, message", [
    ({"between": ["standlrt"]}, "between", "'standlrt' varies within school: between-group covariates must be "
                                           "constant within each group"),
    ({"between_within": ["schgend", "vrband"]}, "between_within", "'vrband' varies within school"),
    ({"mean_fixed": ["cons"]}, "mean_fixed", "'cons' has the same value in every row"),
    ({"between": ["cons"]}, "between", "'cons' has the same value in every row"),
    ({"mean_random": ["vrband"], "categorical": ["vrband"]}, "mean_random", "'vrband' is categorical: a random "
                                                                            "slope needs a numeric"),
    ({"categorical": ["student"]}, "categorical", f"'student' has 198 distinct values, too many for a "
                                                  f"categorical covariate (at most {MAX_CATEGORIES})"),
    ({"categorical": ["nope"]}, "categorical", "no column 'nope'"),
    ({"categorical": ["school"]}, "categorical", "'school' is the group"),
    ({"categorical": "vrband"}, "categorical", "expected a list of column names"),
])
def test_a_request_against_the_rules_gets_one_line_naming_its_field(client, changes, field, message):
    status, headers, body = client.request("POST", "/api/fit", _form(**changes))
    assert status == 400 and b"\n" not in body
    assert message in json.loads(body)["errors"][field]
    status, answer = client.json("POST", "/api/formula", _form(**changes))
    assert answer["formulas"] is None and message in answer["errors"][field]


def test_a_column_named_twice_is_checked_once(tutorial):
    form = _form(between=["schgend", "schgend"], between_within=["schgend"], mean_fixed=["girl", "girl"])
    formulas = forms.build(form, tutorial, set())["formulas"]
    assert formulas["between"] == {"mean:Intercept": "~ schgend", "within:Intercept": "~ schgend"}
    assert formulas["mean"] == "normexam ~ girl + (1 | school)"
    assert column_levels(tutorial, "school", ["school", "girl", "girl"]) == {"school": "group", "girl": "level-1"}


def test_level_two_columns_go_everywhere(tutorial):
    form = _form(mean_fixed=["schgend"], within_fixed=["avslrt"], between=["schav"], between_within=["avslrt"])
    assert forms.build(form, tutorial, set())["formulas"] == {
        "mean": "normexam ~ schgend + (1 | school)", "within": "~ avslrt + (1 | school)",
        "between": {"mean:Intercept": "~ schav", "within:Intercept": "~ avslrt"}}


def test_the_categorical_toggle_wraps_the_column_in_c(tutorial, client):
    form = _form(mean_fixed=["vrband", "standlrt"], within_fixed=["girl"], between_within=["schgend"],
                 categorical=["vrband", "schgend", "girl"])
    assert forms.build(form, tutorial, set())["formulas"] == {
        "mean": "normexam ~ C(vrband) + standlrt + (1 | school)", "within": "~ C(girl) + (1 | school)",
        "between": {"within:Intercept": "~ C(schgend)"}}
    status, answer = client.json("POST", "/api/formula", form)
    assert status == 200 and answer["formulas"]["mean"] == "normexam ~ C(vrband) + standlrt + (1 | school)"
    # a column ticked categorical but in no function changes nothing
    assert forms.build(_form(categorical=["vrband"]), tutorial, set())["formulas"]["mean"] == \
        "normexam ~ 1 + (1 | school)"


def test_text_columns_are_categorical_always(tutorial):
    data = tutorial.assign(band=tutorial["vrband"].map({1: "top", 2: "middle", 3: "bottom"}))
    assert forms.build(_form(mean_fixed=["band"]), data, set())["formulas"]["mean"] == \
        "normexam ~ C(band) + (1 | school)"
    with pytest.raises(forms.FormError) as caught:
        forms.build(_form(within_random=["band"]), data, set())
    assert "'band' is text: a random slope needs a numeric column" in caught.value.errors["within_random"]
    many = tutorial.assign(tag=[f"t{k}" for k in range(len(tutorial))])
    with pytest.raises(forms.FormError) as caught:
        forms.build(_form(mean_fixed=["tag"]), many, set())
    assert "too many for a categorical covariate" in caught.value.errors["mean_fixed"]


# ---- the icon -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/favicon.svg", "/favicon.ico"])
def test_the_icon_is_served_as_svg(client, path):
    status, headers, body = client.request("GET", path)
    assert status == 200 and headers["content-type"] == "image/svg+xml"
    assert body.startswith(b"<svg") and b"<script" not in body.lower() and b"href" not in body
    assert headers["content-security-policy"].startswith("default-src 'none'")
    status, headers, head = client.request("HEAD", path)
    assert status == 200 and head == b"" and headers["content-length"] == str(len(body))


def test_the_page_links_its_icon(client):
    status, _, page = client.request("GET", "/")
    assert status == 200 and b'<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in page
