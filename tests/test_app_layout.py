"""The page in headless Chromium at 1280 and 800 px wide: covariates offered by their level
(computed by the server), the categorical toggle, results and comparisons as HTML tables
with the API's names, the LR row of nested fits only, the icon, and nothing wider than
the window. Screenshots are written to pytest's temporary folder (``--basetemp DIR``
keeps them where you want them)."""

import json

import numpy as np
import pandas as pd
import pytest
from test_app import app_server, app_url  # noqa: F401 - the fixtures, shared

WIDTHS = (1280, 800)

#: Elements that stick out of the window or of their card, left or right, other than
#: inside a container that fits and scrolls sideways (``.table-scroll``, the preview).
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  const fits = (el) => {
    const box = el.getBoundingClientRect();
    const card = el.closest(".card");
    const right = card && card !== el ? Math.min(width, card.getBoundingClientRect().right) : width;
    return box.right <= right + 0.5 && box.left >= -0.5;
  };
  const scroller = (el) => {
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (["auto", "scroll"].includes(getComputedStyle(up).overflowX)) return up;
    }
    return null;
  };
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.getBoundingClientRect().width === 0 || fits(el)) continue;
    const box = scroller(el);
    if (box && fits(box)) continue;
    const r = el.getBoundingClientRect();
    out.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} ${Math.round(r.left)}..${Math.round(r.right)}`);
  }
  return out;
}"""


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def page(browser, app_url):  # noqa: F811 - the fixtures imported above
    page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900}, bypass_csp=True)
    page.problems = []  # console errors and failed requests (a missing icon was one)
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: page.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.set_default_timeout(180_000)
    page.goto(app_url)
    page.wait_for_selector("#preview table")
    yield page
    page.close()


def _check_layout(page, shots, name: str) -> None:
    """At each width: a screenshot, and no element wider than the window."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(200)
        page.screenshot(path=str(shots / f"{name}_{width}.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), (name, width)
        assert page.evaluate(OVERFLOWING) == [], (name, width)
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def _choose(page, part: str, column: str, checked: bool = True) -> None:
    page.set_checked(f'#predictors input[data-part="{part}"][data-col="{column}"]', checked)


def _fit(page, name: str, ticks: list[tuple[str, str]], within_random: bool = True) -> None:
    page.set_checked("#within-random-intercept", within_random)
    for part, column in ticks:
        _choose(page, part, column)
    page.fill("#model-name", name)
    page.click("#run")
    page.wait_for_function(f"document.querySelector('#result-title').textContent.startsWith({json.dumps(name)})")
    for part, column in ticks:
        if part != "categorical":
            _choose(page, part, column, False)


def test_covariates_are_offered_by_their_level(page, shots):
    page.select_option("#data-select", "tutorial")
    page.select_option("#response", "normexam")
    page.select_option("#group", "school")
    page.wait_for_selector('#predictors tbody tr[data-level="level-2"]')
    rows = page.eval_on_selector_all("#predictors tbody tr", "rows => rows.map(r => [r.dataset.col, r.dataset.level])")
    assert rows == [["student", "level-1"], ["standlrt", "level-1"], ["girl", "level-1"], ["schgend", "level-2"],
                    ["avslrt", "level-2"], ["schav", "level-2"], ["vrband", "level-1"]]  # no 'cons'
    between = page.eval_on_selector_all('#predictors input[data-part="between"]', "els => els.map(e => e.dataset.col)")
    assert between == ["schgend", "avslrt", "schav"]
    assert page.locator('#predictors input[data-part="between_within"]').count() == 3
    assert "cons (the same value in every row)" in page.inner_text("#predictors-note")
    assert "cons" not in page.eval_on_selector_all("#response option, #group option", "os => os.map(o => o.value)")
    # the categorical toggle: C(...) in the formula, and no random slope
    _choose(page, "categorical", "vrband")
    _choose(page, "mean_fixed", "vrband")
    page.locator("#formula-preview", has_text="C(vrband)").wait_for()
    assert page.inner_text("#formula-preview").startswith("mean:    normexam ~ C(vrband) + (1 | school)")
    assert page.is_disabled('#predictors input[data-part="mean_random"][data-col="vrband"]')
    _choose(page, "categorical", "vrband", False)
    page.locator("#formula-preview", has_text="normexam ~ vrband +").wait_for()
    assert page.is_enabled('#predictors input[data-part="mean_random"][data-col="vrband"]')
    _choose(page, "mean_fixed", "vrband", False)
    _check_layout(page, shots, "form")


def test_results_are_html_tables_with_the_apis_names(page, shots, app_url):  # noqa: F811
    _fit(page, "Band", [("categorical", "vrband"), ("mean_fixed", "standlrt"), ("mean_fixed", "vrband")],
         within_random=False)
    _fit(page, "Band and scale", [("mean_fixed", "standlrt"), ("mean_fixed", "vrband"),
                                  ("between_within", "schgend")])
    assert page.locator("#result pre:visible").count() == 0  # the text summary is folded away
    keys = page.eval_on_selector_all("#result-tables table.results", "ts => ts.map(t => t.dataset.key)")
    assert keys == ["parameters", "covariance", "typical", "population"]
    fit_id = page.get_attribute("#download-json", "href").split("/")[3]
    names = [p["name"] for p in page.request.get(f"{app_url}/api/fits/{fit_id}/fit.json").json()["params"]]
    shown = page.locator('table[data-key="parameters"] tbody tr:not(.block) th').all_inner_texts()
    assert shown == names and "between:within:Intercept:schgend" in names and "mean:C(vrband)[T.2]" in names
    assert page.locator('table[data-key="parameters"] thead th').all_inner_texts() == [
        "parameter", "estimate", "std_error", "lower", "upper", "z", "p"]
    assert page.locator('table[data-key="typical"] tbody th').all_inner_texts() == [
        "sd:mean:Intercept", "sd:within:Intercept", "corr:mean:Intercept,within:Intercept"]
    formulas = page.locator("#result-formulas dt").all_inner_texts()  # one line each
    assert formulas == ["mean", "within", "between (within:Intercept)", "association", "data"]
    _check_layout(page, shots, "result")


def test_the_comparison_has_an_lr_row_for_nested_fits_only(page, shots):
    _fit(page, "Girls", [("mean_fixed", "girl")], within_random=False)  # fewest parameters; not nested in "Band"
    page.wait_for_function("document.querySelectorAll('#fits tbody tr').length === 3")
    for fit_id in ("1", "2", "3"):
        page.check(f'.fit-select[value="{fit_id}"]')
    page.click("#compare-button")
    page.wait_for_selector('#compare-table table[data-key="compare"]')
    models = page.locator('#compare-table table[data-key="compare"] thead th').all_inner_texts()
    assert models == ["parameter", "Girls", "Band", "Band and scale"]  # by number of parameters
    lr = page.locator('#compare-table table[data-key="lrtests"] tbody tr').all_inner_texts()
    assert len(lr) == 1 and lr[0].startswith("Band and scale vs Band") and "χ̄²: ½χ²(" in lr[0]
    notes = page.locator("#compare-notes li").all_inner_texts()
    assert len(notes) == 1 and notes[0].startswith("Girls and Band are not nested (") and "no LR test" in notes[0]
    row = page.locator('#compare-table table[data-key="compare"] tr', has_text="LR test vs the model before")
    cells = row.locator("td").all_inner_texts()
    assert cells[:2] == ["", ""] and cells[2].startswith("LR ")
    _check_layout(page, shots, "compare")


def test_names_from_the_data_are_shown_as_text(page):
    """A category's value becomes part of a parameter's name: the page shows it as text."""
    rng = np.random.default_rng(3)
    hostile = '<img src=x onerror="window.pwned=1">'
    data = pd.DataFrame({"y": rng.normal(size=150).round(3), "g": np.repeat(np.arange(30), 5),
                         "city": np.tile(["0 base", hostile, "a&b", "0 base", hostile], 30)})
    page.set_input_files("#upload-input", files=[{"name": "cities.csv", "mimeType": "text/csv",
                                                  "buffer": data.to_csv(index=False).encode()}])
    page.wait_for_function("document.querySelector('#data-select').value.startsWith('upload-')")
    page.select_option("#response", "y")
    page.select_option("#group", "g")
    page.wait_for_selector('#predictors tbody tr[data-col="city"]')
    assert page.is_checked('#predictors input[data-part="categorical"][data-col="city"]')  # text: always
    _fit(page, "Cities", [("mean_fixed", "city")], within_random=False)
    shown = page.locator('table[data-key="parameters"] tbody tr:not(.block) th').all_inner_texts()
    assert f"mean:C(city)[T.{hostile}]" in shown and "mean:C(city)[T.a&b]" in shown
    assert page.locator("#result img, #fits img").count() == len(page.locator("#result-figures img").all())
    assert page.evaluate("window.pwned") is None
    assert "cities.csv: 150 observations, 30 groups" in page.inner_text("#result-formulas")


def test_the_icon_loads_and_nothing_failed(page, app_url):  # noqa: F811
    assert page.eval_on_selector('link[rel="icon"]', "l => l.href") == f"{app_url}/favicon.svg"
    response = page.request.get(f"{app_url}/favicon.svg")
    assert response.ok and response.headers["content-type"] == "image/svg+xml"
    assert page.problems == []
