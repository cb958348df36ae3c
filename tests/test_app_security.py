"""The app's HTTP layer, through real sockets: declared sizes checked before anything is
read, timeouts on every connection, only the app's own host names, POSTs only from the
app's page, one-line 4xx answers to malformed fields, sessions that strangers cannot push
out, HEAD."""

import json
import re
import socket
import threading
import time

import pytest
from test_app_worker import AppClient, running_app, stand_in_form

MAX_UPLOAD = 128 * 2**20
REQUEST_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def app():
    with running_app(max_upload=MAX_UPLOAD, request_timeout=REQUEST_TIMEOUT, job_timeout=30) as server:
        yield server


@pytest.fixture(scope="module")
def port(app) -> int:
    return app.server_address[1]


@pytest.fixture(scope="module")
def page_token(port) -> str:
    status, _, page = AppClient(port).request("GET", "/")
    assert status == 200
    return re.search(rb'<meta name="melsm-token" content="([^"]+)">', page).group(1).decode()


def _request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    """An HTTP/1.0 request as bytes: Host and Content-Length unless ``headers`` say otherwise
    (a value of None leaves a header out)."""
    sent = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)) if body or method == "POST" else None}
    sent.update(headers or {})
    lines = [f"{method} {path} HTTP/1.0", *(f"{k}: {v}" for k, v in sent.items() if v is not None)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _exchange(port: int, data: bytes, seconds: float = 15) -> bytes:
    """Send ``data`` and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(data)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def _answer(response: bytes) -> tuple[int, dict, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _status_and_message(response: bytes) -> tuple[int, str]:
    """The status and the one-line JSON message of an error answer."""
    status, headers, body = _answer(response)
    assert headers["content-type"] == "application/json" and b"\n" not in body and b"Traceback" not in body
    return status, " ".join(json.loads(body)["errors"].values())


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024


def _wait_for_threads(count: int, seconds: float = 15) -> int:
    deadline = time.monotonic() + seconds
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def _origin(port: int) -> dict:
    return {"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"}


# ---- sizes and timeouts ----------------------------------------------------------------------
@pytest.mark.parametrize("path, declared, content_type, message", [
    ("/api/fit", 209715200, "application/json", "the request is 200.0 MB; the limit is 1.0 MB"),
    ("/api/upload?filename=a.csv", 2**30, "text/csv", "the file is 1024.0 MB; the limit is 128.0 MB"),
])
def test_an_oversized_body_is_refused_before_it_is_read(port, path, declared, content_type, message):
    before = _rss_bytes()
    headers = {"Origin": f"http://127.0.0.1:{port}", "Content-Type": content_type, "Content-Length": str(declared)}
    status, text = _status_and_message(_exchange(port, _request(port, "POST", path, b"x" * 80, headers)))
    assert (status, text) == (413, message)
    assert _rss_bytes() - before < 32 * 2**20


def test_a_body_that_never_comes_holds_no_memory_and_no_thread(port):
    """100 MB announced (under the 128 MB limit), 80 bytes sent, then the client leaves."""
    threads, before = threading.active_count(), _rss_bytes()
    headers = {"Origin": f"http://127.0.0.1:{port}", "Content-Type": "text/csv", "Content-Length": str(100 * 2**20)}
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(_request(port, "POST", "/api/upload?filename=a.csv", b"y,g\n" * 20, headers))
    assert _wait_for_threads(threads) <= threads
    assert _rss_bytes() - before < 32 * 2**20


@pytest.mark.parametrize("value", ["-5", "abc", "1e3", "", "12 x", "0x10", "9" * 20])
def test_a_bad_content_length_gets_400(port, value):
    headers = {**_origin(port), "Content-Length": value}
    status, text = _status_and_message(_exchange(port, _request(port, "POST", "/api/fit", b"{}", headers)))
    assert status == 400 and "Content-Length must be a number of bytes" in text


def test_conflicting_lengths_and_chunked_bodies_are_refused(port):
    request = _request(port, "POST", "/api/fit", b"{}", _origin(port)).replace(
        b"Content-Length: 2\r\n", b"Content-Length: 2\r\nContent-Length: 7\r\n")
    assert _status_and_message(_exchange(port, request))[0] == 400
    headers = {**_origin(port), "Content-Length": None, "Transfer-Encoding": "chunked"}
    status, text = _status_and_message(_exchange(port, _request(port, "POST", "/api/fit", b"2\r\n{}\r\n0\r\n\r\n",
                                                                headers)))
    assert status == 501 and "send Content-Length" in text


def test_a_short_body_gets_408_after_the_timeout(port):
    threads = threading.active_count()
    headers = {**_origin(port), "Content-Length": "100"}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_request(port, "POST", "/api/fit", b"{" + b" " * 79, headers))  # 80 of 100 bytes, then silence
        status, text = _status_and_message(_read_all(sock))
    assert status == 408 and text == "the request's body did not arrive in time (80 of 100 bytes)"
    assert _wait_for_threads(threads) <= threads


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.0\r\nHost: 127.0.0.1"])
def test_a_silent_client_is_disconnected(port, sent):
    threads = threading.active_count()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(sent)
        assert _read_all(sock) == b""  # closed by the server, after its timeout
    assert _wait_for_threads(threads) <= threads


# ---- hosts and origins -------------------------------------------------------------------------
@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST:{port}", 200), ("[::1]:{port}", 200),
    ("evil.example:{port}", 421), ("evil.example", 421), ("localhost.evil.example:{port}", 421),
    ("127.0.0.1:1", 421), ("127.0.0.1", 421), ("127.0.0.1:{port}@evil.example", 421), ("", 421),
    ("127.0.0.1:{port}:{port}", 421),
])
def test_only_the_apps_own_host_names_are_served(port, host, expected):
    response = _exchange(port, _request(port, "GET", "/api/datasets", headers={"Host": host.format(port=port)}))
    assert _answer(response)[0] == expected
    if expected != 200:
        assert "this app does not serve the host" in _status_and_message(response)[1]


def test_a_request_without_one_host_header_gets_400(port):
    assert _status_and_message(_exchange(port, _request(port, "GET", "/", headers={"Host": None})))[0] == 400
    twice = _request(port, "GET", "/").replace(b"\r\n\r\n", b"\r\nHost: localhost:%d\r\n\r\n" % port)
    assert _status_and_message(_exchange(port, twice))[0] == 400


def test_the_app_listening_on_all_addresses_serves_any_address_but_no_other_name():
    from melsm.app.guard import HostCheck

    check = HostCheck("0.0.0.0", 8050)
    assert check.serves("192.168.1.20:8050") and check.serves("[fe80::1]:8050") and check.serves("localhost:8050")
    assert not check.serves("evil.example:8050") and not check.serves("192.168.1.20:8051")
    assert HostCheck("lab-pc", 80).serves("lab-pc") and not HostCheck("lab-pc", 80).serves("other-pc")


@pytest.mark.parametrize("origin, token, expected", [
    ("http://127.0.0.1:{port}", None, 200), ("http://localhost:{port}", None, 200),
    ("http://evil.example", None, 403), ("null", None, 403), ("https://127.0.0.1:{port}", None, 403),
    ("http://127.0.0.1:1", None, 403), ("http://evil.example", "page", 403),
    (None, None, 403), (None, "page", 200), (None, "wrong", 403),
])
def test_posts_only_from_the_apps_page(port, page_token, origin, token, expected):
    headers = {"Content-Type": "application/json", "Origin": origin and origin.format(port=port),
               "X-Melsm-Token": page_token if token == "page" else token}
    body = json.dumps(stand_in_form("Model")).encode()
    response = _exchange(port, _request(port, "POST", "/api/formula", body, headers))
    assert _answer(response)[0] == expected


def test_another_sites_page_starts_no_fit_and_makes_no_session(app, port):
    sessions, waiting = len(app.state.sessions), app.state.engine.waiting()
    body = json.dumps(stand_in_form("from elsewhere")).encode()
    for content_type in ("text/plain", "application/json"):
        headers = {"Origin": "http://evil.example", "Content-Type": content_type}
        status, text = _status_and_message(_exchange(port, _request(port, "POST", "/api/fit", body, headers)))
        assert status == 403 and "another site's page" in text
    assert (len(app.state.sessions), app.state.engine.waiting()) == (sessions, waiting)


@pytest.mark.parametrize("content_type, expected", [
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
    (None, 415), ("application/json; charset=utf-8", 200), ("Application/JSON", 200),
])
def test_json_requests_must_say_so(port, content_type, expected):
    headers = {**_origin(port), "Content-Type": content_type}
    body = json.dumps(stand_in_form("Model")).encode()
    assert _answer(_exchange(port, _request(port, "POST", "/api/formula", body, headers)))[0] == expected


def test_an_upload_keeps_its_content_type_but_needs_the_page(port, page_token):
    csv = b"y,g\n1,1\n2,1\n3,2\n4,2\n"
    path = "/api/upload?filename=a.csv"
    for headers, expected in (({"Content-Type": "text/csv"}, 403),
                              ({"Content-Type": "text/csv", "X-Melsm-Token": page_token}, 200),
                              ({"Content-Type": "text/csv", "Origin": f"http://127.0.0.1:{port}"}, 200),
                              ({"Content-Type": "text/csv", "Origin": "http://evil.example"}, 403)):
        assert _answer(_exchange(port, _request(port, "POST", path, csv, headers)))[0] == expected


# ---- malformed fields ----------------------------------------------------------------------------
@pytest.mark.parametrize("body, field, message", [
    (b"[1, 2]", "form", "not a form"),
    (b'"tutorial"', "form", "not a form"),
    (b"{not json", "form", "not valid JSON"),
    (b'{"name": "\xff\xfe"}', "form", "not valid JSON"),
    (b"[" * 100000, "form", "not valid JSON"),
    (b'{"data": "tutorial", "chains": ' + b"9" * 5000 + b"}", "form", "not valid JSON"),
    (b'{"data": "tutorial", "chains": NaN}', "form", "NaN"),
    (b'{"data": "tutorial", "draws": -Infinity}', "form", "-Infinity"),
    ({"data": ["tutorial"]}, "data", "must be the name of a data set"),
    ({"data": {"name": "tutorial"}}, "data", "must be the name of a data set"),
    ({"data": "../../etc/passwd"}, "data", "no data set"),
    ({"response": ["normexam"]}, "response", "response must be text"),
    ({"group": 7}, "group", "group must be text"),
    ({"name": ["x"]}, "name", "name must be text"),
    ({"association": ["none"]}, "association", "association must be text"),
    ({"method": {"ml": 1}}, "method", "method must be text"),
    ({"mean_random_intercept": "false"}, "mean_random_intercept", "must be true or false"),
    ({"within_random_intercept": 1}, "within_random_intercept", "must be true or false"),
    ({"mean_fixed": "standlrt"}, "mean_fixed", "expected a list of column names"),
    ({"mean_fixed": [1]}, "mean_fixed", "expected a list of column names"),
    ({"between": [["schgend"]]}, "between", "expected a list of column names"),
    ({"method": "mcmc", "chains": "abc"}, "chains", "chains must be a whole number"),
    ({"method": "mcmc", "chains": -3}, "chains", "chains must be between 2 and 64"),
    ({"method": "mcmc", "chains": 2.5}, "chains", "chains must be a whole number"),
    ({"method": "mcmc", "chains": True}, "chains", "chains must be a whole number"),
    ({"method": "mcmc", "chains": [4]}, "chains", "chains must be a whole number"),
    (b'{"data": "tutorial", "method": "mcmc", "draws": 1e400}', "draws", "draws must be a whole number, not 'inf'"),
    ({"method": "mcmc", "draws": "9" * 5000}, "draws", "draws must be a whole number"),
    ({"method": "mcmc", "seed": -1}, "seed", "seed must be between 0"),
])
def test_a_malformed_field_gets_400_and_one_line(port, body, field, message):
    form = body if isinstance(body, bytes) else json.dumps({**stand_in_form("Model"), **body}).encode()
    status, headers, answer = _answer(_exchange(port, _request(port, "POST", "/api/fit", form, _origin(port))))
    assert status == 400 and b"\n" not in answer
    assert message in json.loads(answer)["errors"][field]


@pytest.mark.parametrize("ids, expected", [
    ("1", 400), ([], 400), ([True, False], 400), ([1.5, 2], 400), ([-1, 1], 400), ([0, 1], 400),
    (["a", "b"], 400), ([[1], [2]], 400), ([None, 1], 400), (list(range(1, 100)), 400), ([98, 99], 404),
])
def test_bad_ids_get_400_and_unknown_ones_404(port, ids, expected):
    body = json.dumps({"ids": ids}).encode()
    status, text = _status_and_message(_exchange(port, _request(port, "POST", "/api/compare", body, _origin(port))))
    assert status == expected


@pytest.mark.parametrize("path, expected", [
    ("/api/report.html?ids=a,b", 400), ("/api/report.html?ids=-1", 400), ("/api/report.html?ids=1.0", 400),
    ("/api/report.html?ids=99", 404), ("/api/report.html", 400), ("/api/jobs/zzz", 404), ("/api/fits/-1", 404),
    ("/api/fits/1e3/fit.json", 404), ("/api/data?name=x&name=y", 400), ("/api/data?" + "&".join(["a=1"] * 50), 400),
])
def test_bad_addresses_get_4xx_and_one_line(port, path, expected):
    assert _status_and_message(_exchange(port, _request(port, "GET", path)))[0] == expected


# ---- methods ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/app.js", "/api/datasets", "/api/fits"])
def test_head_answers_like_get_without_the_body(port, path):
    get_status, get_headers, get_body = _answer(_exchange(port, _request(port, "GET", path)))
    status, headers, body = _answer(_exchange(port, _request(port, "HEAD", path)))
    assert (status, body) == (200, b"") and get_status == 200
    assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405_with_allow(port, method):
    status, headers, body = _answer(_exchange(port, _request(port, method, "/api/fit")))
    assert status == 405 and headers["allow"] == "GET, HEAD, POST"
    assert _answer(_exchange(port, _request(port, "BREW", "/")))[0] == 501


@pytest.mark.parametrize("request_bytes, expected", [
    (b"GET / FOO/1.0\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n", 414),
    (b"GET / HTTP/1.0\r\n" + b"".join(b"X-%d: 1\r\n" % k for k in range(101)) + b"\r\n", 431),
])
def test_requests_http_server_refuses_get_one_line_json(port, request_bytes, expected):
    assert _status_and_message(_exchange(port, request_bytes))[0] == expected


def test_the_page_carries_its_policy_and_the_api_its_guards(port):
    status, headers, _ = _answer(_exchange(port, _request(port, "GET", "/")))
    assert "frame-ancestors 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    status, headers, _ = _answer(_exchange(port, _request(port, "GET", "/api/fits")))
    assert headers["cross-origin-resource-policy"] == "same-origin" and "set-cookie" not in headers


# ---- sessions -------------------------------------------------------------------------------------
def test_requests_without_a_cookie_cannot_push_out_a_session():
    from melsm.app.sessions import MAX_SESSIONS

    with running_app() as server:
        port = server.server_address[1]
        user = AppClient(port)
        job = user.wait(user.fit(stand_in_form("mine")))
        assert job["status"] == "done" and len(server.state.sessions) == 1
        stranger = AppClient(port)
        for k in range(60):  # reading, and asking for formulas, makes no session
            stranger.cookie = None
            assert stranger.request("GET", "/")[0] == stranger.request("GET", "/api/fits")[0] == 200
            assert stranger.json("POST", "/api/formula", stand_in_form(f"m{k}"))[0] == 200
        assert len(server.state.sessions) == 1
        statuses = []
        for _ in range(60):  # uploads keep something: a session each, until the table is full
            stranger.cookie = None
            statuses.append(stranger.upload()[0])
        assert statuses == [200] * (MAX_SESSIONS - 1) + [503] * (60 - MAX_SESSIONS + 1)
        assert [fit["name"] for fit in user.json("GET", "/api/fits")[1]] == ["mine"]


def test_an_empty_session_makes_room_and_one_with_work_does_not():
    from melsm.app.sessions import Sessions, SessionsFull

    sessions = Sessions(limit=2)
    _, busy = sessions.create()
    busy.jobs["a"] = {"status": "queued"}
    empty_token, _ = sessions.create()
    sessions.create()  # the empty one goes
    assert sessions.find(empty_token) is None and len(sessions) == 2
    for session in sessions._sessions.values():
        session.fits[1] = {}
    with pytest.raises(SessionsFull):
        sessions.create()
