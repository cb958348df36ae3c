"""The browser app: the HTTP API directly, then end to end in headless Chromium (Debian's
chromium driven by Playwright; `.ci/run` installs both). Outside CI the browser tests are
skipped when no Chromium is installed; in CI they fail."""

import json
import os
import threading
import urllib.error
import urllib.request
import warnings
from http.cookiejar import CookieJar

import pytest

import melsm
from melsm.app import forms, make_server

MODEL_2 = ("normexam ~ 1 + (1 | school)", "~ 1 + (1 | school)")


@pytest.fixture(scope="module")
def app_server():
    # workers retire after 4 jobs here (25 in use), so that fits, comparisons and reports
    # cross worker replacements
    server = make_server("127.0.0.1", 0, max_upload=64 * 1024, jobs_per_worker=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    server.state.engine.shutdown()


@pytest.fixture(scope="module")
def app_url(app_server):
    return f"http://127.0.0.1:{app_server.server_address[1]}"


class Client:
    """A browser-like HTTP client: the session cookie, and the page's Origin on POSTs."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def request(self, path: str, body: bytes | None = None, content_type: str = "application/json"):
        headers = {"Content-Type": content_type} | ({"Origin": self.base} if body is not None else {})
        req = urllib.request.Request(self.base + path, data=body, headers=headers)
        try:
            with self.opener.open(req, timeout=120) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def json(self, path: str, payload=None):
        status, body = self.request(path, None if payload is None else json.dumps(payload).encode())
        return status, json.loads(body)


def model_2_form(**changes) -> dict:
    form = {"data": "tutorial", "name": "Model 2", "response": "normexam", "group": "school",
            "mean_random_intercept": True, "within_random_intercept": True}
    form.update(changes)
    return form


# ---- the HTTP API -------------------------------------------------------------------
def test_form_builds_the_london_formulas(tutorial):
    request = forms.build(model_2_form(name="M6", mean_fixed=["standlrt", "girl"], mean_random=["standlrt"],
                                       within_fixed=["standlrt", "girl"], within_random=["standlrt"]),
                          tutorial, set())
    assert request["formulas"] == {"mean": "normexam ~ standlrt + girl + (1 + standlrt | school)",
                                   "within": "~ standlrt + girl + (1 + standlrt | school)", "between": None}
    request = forms.build(model_2_form(within_random_intercept=False, between=["schgend"], mean_fixed=["vrband"]),
                          tutorial.astype({"vrband": str}), set())
    assert request["formulas"] == {"mean": "normexam ~ C(vrband) + (1 | school)", "within": "~ 1",
                                   "between": "~ schgend"}


def test_form_builds_level2_functions_of_both_intercepts(tutorial):
    request = forms.build(model_2_form(between=["schgend"], between_within=["schgend", "avslrt"]), tutorial, set())
    assert request["formulas"]["between"] == {"mean:Intercept": "~ schgend", "within:Intercept": "~ schgend + avslrt"}
    request = forms.build(model_2_form(between_within=["schgend"]), tutorial, set())
    assert request["formulas"]["between"] == {"within:Intercept": "~ schgend"}
    with pytest.raises(forms.FormError) as caught:
        forms.build(model_2_form(between_within=["schgend"], within_random_intercept=False), tutorial, set())
    assert "needs the random scale intercept" in caught.value.errors["between_within"]
    assert forms.field_of("between covariate 'x' (function of within:Intercept) varies") == "between_within"


@pytest.mark.parametrize("changes, field, message", [
    ({"response": ""}, "response", "choose the response"),
    ({"group": "normexam"}, "group", "the group cannot be the response"),
    ({"group": "cons"}, "group", "'cons' has only one value"),
    ({"mean_fixed": ["nope"]}, "mean_fixed", "no column 'nope'"),
    ({"mean_fixed": ["school"]}, "mean_fixed", "'school' is the group"),
    ({"between": ["standlrt"]}, "between", "'standlrt' varies within school"),
    ({"between_within": ["girl"]}, "between_within", "'girl' varies within school"),
    ({"mean_random_intercept": False}, "mean_random", "needs a random effect"),
    ({"name": ""}, "name", "give the model a name"),
    ({"method": "mcmc", "chains": "abc"}, "chains", "chains must be a whole number, not 'abc'"),
    ({"method": "mcmc", "draws": 5}, "draws", "draws must be between 10 and 20000"),
    ({"association": "cubic"}, "association", "association must be one of"),
])
def test_form_errors_name_their_field(tutorial, changes, field, message):
    with pytest.raises(forms.FormError) as caught:
        forms.build(model_2_form(**changes), tutorial, set())
    assert message in caught.value.errors[field]


def test_fit_through_the_api_equals_the_python_fit(app_url, tutorial):
    client = Client(app_url)
    status, started = client.json("/api/fit", model_2_form())
    assert status == 200 and started["formulas"]["mean"] == MODEL_2[0]
    import time

    for _ in range(600):
        status, job = client.json(f"/api/jobs/{started['job']}")
        if job["status"] in ("done", "error"):
            break
        time.sleep(0.2)
    assert job["status"] == "done", job
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = melsm.Model(MODEL_2[0], within=MODEL_2[1], data=tutorial).fit()
    fit = job["fit"]
    assert fit["loglik"] == pytest.approx(expected.loglik, abs=1e-6)
    status, started = client.json("/api/fit", model_2_form(name="scale by school gender", between_within=["schgend"]))
    with_function = _wait(client, started["job"])
    assert with_function["status"] == "done", with_function
    status, body = client.request(f"/api/fits/{with_function['fit']['id']}/fit.json")
    assert "between:within:Intercept:schgend" in [p["name"] for p in json.loads(body)["params"]]
    assert "Implied random-effect SDs and correlations for typical groups" in with_function["fit"]["summary"]
    tables = {t["key"]: t for t in with_function["fit"]["tables"]}  # the page's tables: the API's names
    assert [r["label"] for r in tables["parameters"]["rows"] if "label" in r] == \
        [p["name"] for p in json.loads(body)["params"]]
    assert "typical" in tables and "typical" not in {t["key"] for t in fit["tables"]}
    assert {f["key"] for f in fit["figures"]} == {"observed", "caterpillar_mean", "caterpillar_variance",
                                                  "caterpillar_icc"}
    status, csv = client.request(f"/api/fits/{fit['id']}/random_effects.csv")
    assert status == 200 and csv.decode().count("\n") == 65 + 1
    status, body = client.request(f"/api/fits/{fit['id']}/fit.json")
    assert json.loads(body)["loglik"] == pytest.approx(expected.loglik, abs=1e-6)
    status, _ = client.json("/api/fit", model_2_form())
    assert status == 400  # the name is taken
    other = Client(app_url)  # another browser session sees none of it
    assert other.json("/api/fits")[1] == []


def _wait(client, job_id):
    import time

    for _ in range(1200):
        status, job = client.json(f"/api/jobs/{job_id}")
        if job["status"] in ("done", "error"):
            return job
        time.sleep(0.2)
    raise AssertionError("the job did not finish")


def test_mcmc_fit_compare_and_report_through_the_api(app_url):
    client = Client(app_url)
    ids = []
    for name, within in (("A", False), ("B", True)):
        form = model_2_form(name=name, within_random_intercept=within, method="mcmc", chains=2, warmup=40,
                            draws=40, seed=1)
        status, started = client.json("/api/fit", form)
        job = _wait(client, started["job"])
        assert job["status"] == "done", job
        fit = job["fit"]
        assert fit["method"] == "mcmc" and fit["dic"] > 10000 and fit["options"]["chains"] == 2
        assert "MCMC" in fit["summary"] and not fit["converged"]  # 2 x 40 draws: too short, and it says so
        ids.append(fit["id"])
    status, answer = client.json("/api/compare", {"ids": ids})
    assert status == 200 and answer["tables"][0]["columns"] == ["A", "B"]
    assert "DIC" in [r.get("label") for r in answer["tables"][0]["rows"]] and len(answer["tables"]) == 1
    assert answer["notes"][0].startswith("No LR tests: Bayesian (MCMC) fits have no likelihood")
    assert {t["key"] for t in fit["tables"]} >= {"parameters", "covariance"}
    status, page = client.request(f"/api/report.html?ids={ids[0]},{ids[1]}")
    assert status == 200 and page.count(b"data:image/png;base64,") >= 4 and b"Bayesian (MCMC)" in page
    status, answer = client.json("/api/compare", {"ids": [ids[0]]})
    assert status == 400 and "two or more" in answer["errors"]["compare"]


def test_the_app_survives_a_dead_worker(app_server, app_url):
    """A worker killed (as by the kernel when out of memory): the job says so, the next works."""
    import signal
    import time

    client = Client(app_url)
    status, started = client.json("/api/fit", model_2_form(name="first"))
    assert _wait(client, started["job"])["status"] == "done"
    while (pid := app_server.state.engine.worker_pid()) is None:  # between a retired worker and the next
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    status, started = client.json("/api/fit", model_2_form(name="after crash"))
    assert status == 200
    job = _wait(client, started["job"])
    if job["status"] == "error":  # the pool noticed the dead worker while running this job
        assert "worker process stopped" in job["errors"]["form"]
        status, started = client.json("/api/fit", model_2_form(name="after crash"))
        job = _wait(client, started["job"])
    assert job["status"] == "done"


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"a\n1\n2\n3\n", "has only one column"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00binary", "is not a text (CSV) file"),
    (b"a,b\nx,y\nz,w\nu,v\n", "has no numeric column"),
    (b"a,b\n1,2\n", "too few to fit a model"),
    (b'a,b\n1,"2\n3,4\n', "cannot read 'f.csv' as CSV"),
    (b"a,b\n" + b"1,2\n" * 40000, "the limit is 64 kB"),  # the test server's limit
])
def test_bad_uploads_get_a_message(app_url, content, message):
    status, body = Client(app_url).request("/api/upload?filename=f.csv", content, "text/csv")
    assert status in (400, 413)
    assert message in json.loads(body)["errors"]["upload"]


def test_the_server_never_reads_a_requested_path_and_survives_bad_requests(app_url):
    client = Client(app_url)
    for name in ("../../etc/passwd", "/etc/passwd", "tutorial.csv", "upload-1"):
        status, answer = client.json(f"/api/data?name={name}")
        assert status == 400 and "no data set" in answer["errors"]["data"]
    for path in ("/../../etc/passwd", "/static/../server.py", "/api/fits/abc/fit.json", "/api/fits/1/../../x"):
        status, _ = client.request(path)
        assert status == 404
    status, answer = client.request("/api/fit", b"{not json", "application/json")
    assert status == 400 and b"not valid JSON" in answer
    status, answer = client.json("/api/compare", {"ids": "1"})
    assert status == 400
    status, _ = client.request("/")
    assert status == 200  # still serving


# ---- end to end in Chromium ---------------------------------------------------------------
@pytest.fixture(scope="module")
def page(browser, app_url):
    # wait_for_function evaluates its text, which the page's Content-Security-Policy forbids;
    # test_page_works_under_its_content_security_policy runs the page with the policy
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, bypass_csp=True)
    page.set_default_timeout(120_000)
    page.goto(app_url)
    page.wait_for_selector("#preview table")
    return page


def test_page_works_under_its_content_security_policy(browser, app_url):
    page = browser.new_page()
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.set_default_timeout(120_000)
    page.goto(app_url)
    page.wait_for_selector("#preview table")
    page.select_option("#response", "normexam")
    page.select_option("#group", "school")
    page.locator("#formula-preview", has_text="(1 | school)").wait_for()
    assert page.inner_text("#formula-preview") == f"mean:    {MODEL_2[0]}\nwithin:  {MODEL_2[1]}"
    assert refused == []
    page.close()


def _fit_in_page(page, name: str, within_random: bool = True) -> None:
    page.select_option("#response", "normexam")
    page.select_option("#group", "school")
    page.set_checked("#within-random-intercept", within_random)
    page.fill("#model-name", name)
    page.click("#run")
    page.wait_for_function("document.querySelector('#result-title') && "
                           f"document.querySelector('#result-title').textContent.startsWith({json.dumps(name)})")


def test_page_fits_london_model_2(page, tutorial):
    assert page.select_option("#data-select", "tutorial") == ["tutorial"]
    page.wait_for_load_state("networkidle")
    assert "4059 rows" in page.inner_text("#preview")
    page.select_option("#response", "normexam")
    page.select_option("#group", "school")
    page.wait_for_function("document.querySelector('#formula-preview').textContent.includes('(1 | school)')")
    assert page.inner_text("#formula-preview") == f"mean:    {MODEL_2[0]}\nwithin:  {MODEL_2[1]}"
    _fit_in_page(page, "Model 2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = melsm.Model(MODEL_2[0], within=MODEL_2[1], data=tutorial).fit().loglik
    shown = page.inner_text("#result-loglik")
    assert shown == f"{expected:.4f}"
    assert float(page.get_attribute("#result-loglik", "data-value")) == pytest.approx(expected, abs=1e-6)
    assert page.locator("#result-figures img").count() == 4
    assert "Mixed-effects location scale model" in page.text_content("#result-summary")  # folded away
    names = page.locator('table.results[data-key="parameters"] tbody tr:not(.block) th').all_inner_texts()
    assert names == ["mean:Intercept", "within:Intercept", "sd:mean:Intercept", "sd:within:Intercept",
                     "corr:mean:Intercept,within:Intercept"]


def test_page_shows_a_bad_csv_message(page):
    page.set_input_files("#upload-input", files=[{"name": "scores.csv", "mimeType": "text/csv",
                                                  "buffer": b"score\n1\n2\n3\n"}])
    page.wait_for_function("document.querySelector('#upload-error').textContent.length > 0")
    assert page.inner_text("#upload-error") == ("'scores.csv' has only one column: is it comma-separated? "
                                                "A model needs at least a response and a group column")


def test_page_refuses_a_file_over_the_limit_before_sending_it(page):
    sent = []
    page.on("request", lambda request: sent.append(request.url) if "/api/upload" in request.url else None)
    page.set_input_files("#upload-input", files=[{"name": "big.csv", "mimeType": "text/csv",
                                                  "buffer": b"a,b\n" + b"1,2\n" * 20000}])
    page.wait_for_function("document.querySelector('#upload-error').textContent.length > 0")
    assert page.inner_text("#upload-error") == "the file is 78 kB; the limit is 64 kB"
    assert sent == []


def test_page_shows_field_errors(page):
    page.select_option("#response", "normexam")
    page.select_option("#group", "school")
    page.fill("#model-name", "Model 2")  # fitted above
    page.click("#run")
    page.wait_for_function("document.querySelector('.error[data-for=\"name\"]').textContent.length > 0")
    assert page.inner_text('.error[data-for="name"]') == "a fitted model is already called 'Model 2'"
    assert "has-error" in page.get_attribute("#model-name", "class")


def test_page_compares_two_models(page, tutorial):
    _fit_in_page(page, "Model 1", within_random=False)
    page.wait_for_function("document.querySelectorAll('#fits tbody tr').length === 2")
    page.check('.fit-select[value="1"]')
    page.check('.fit-select[value="2"]')
    page.click("#compare-button")
    page.wait_for_selector('#compare-table table.results[data-key="lrtests"]')
    table = page.inner_text('#compare-table table[data-key="compare"]')
    assert "Model 2" in table and "Model 1" in table and "corr:mean:Intercept,within:Intercept" in table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_1 = melsm.Model(MODEL_2[0], data=tutorial).fit()
    assert f"{model_1.loglik:.4f}" in table
    lr = page.locator('#compare-table table[data-key="lrtests"] tbody tr').all_inner_texts()
    assert len(lr) == 1 and lr[0].startswith("Model 2 vs Model 1") and "χ̄²: ½χ²(1) + ½χ²(2)" in lr[0]


# ---- the command ------------------------------------------------------------------------
def test_melsm_app_prints_its_address_and_serves(tmp_path):
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "melsm.cli", "app", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("melsm app running at http://127.0.0.1:") and line.rstrip().endswith("(Ctrl+C to stop)")
        address = line.split()[4]
        with urllib.request.urlopen(address, timeout=30) as response:
            assert b"<title>melsm" in response.read()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--host", "256.1.1.1"], "cannot listen on 256.1.1.1:8050"),
    (["--max-upload-mb", "nan"], "--max-upload-mb must be a positive number of MB, not nan"),
    (["--max-upload-mb", "inf"], "--max-upload-mb must be a positive number of MB, not inf"),
    (["--max-upload-mb", "-1"], "--max-upload-mb must be a positive number of MB, not -1"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be a positive number of MB, not 0"),
    (["--job-timeout", "nan"], "--job-timeout must be a positive number of seconds, not nan"),
    (["--job-timeout", "0"], "--job-timeout must be a positive number of seconds, not 0"),
])
def test_melsm_app_bad_address(capsys, argv, message):
    from melsm.cli import main

    assert main(["app", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("melsm: error: ") and message in err and err.count("\n") == 1


def test_sampler_reports_progress_to_a_callable(tutorial):
    """The app's MCMC progress: (done, total) after warm-up, ending at total."""
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        melsm.Model(*MODEL_2, data=tutorial).sample(chains=2, warmup=20, draws=40, progress=lambda d, t: calls.append(
            (d, t)))
    assert calls == [(20 + k, 60) for k in range(2, 41, 2)]
