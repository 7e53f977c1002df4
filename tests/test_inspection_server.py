"""Hardening of the voting server (issue #11 item 7): token, Host and Origin checks, strict
request parsing, strict vote types and spreadsheet-safe votes.csv.

Every request goes over a real socket to a server on 127.0.0.1 port 0; malformed requests
are written byte by byte, so that nothing in an HTTP client library tidies them up.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import socket
import threading
import time
import urllib.parse

import pytest

from skymorph import Config, RunDir, make_server
from skymorph.inspection import VoteStore, read_votes
from skymorph.inspection.server import InspectionServer
from skymorph.inspection.votes import escape_cell, unescape_cell
from test_inspection import cluster_catalog

# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(cosmos_run, tmp_path_factory):
    """One voting server for the module (the requests here never need a fresh one)."""
    path = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(cosmos_run.path, path)
    run = RunDir(path)
    cluster_catalog(run)
    server = make_server(run, Config(), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def port_of(server: InspectionServer) -> int:
    return server.server_address[1]


def raw(server: InspectionServer, request: bytes, shut_write: bool = False,
        timeout: float = 15) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole answer (the server closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout) as sock:
        sock.sendall(request)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    assert data, "the server dropped the connection without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def http(server: InspectionServer, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None, host: str | None = "default",
         token: bool = True) -> tuple[int, dict[str, str], bytes]:
    """A well-formed request with the given headers (Host and token added unless told not to)."""
    all_headers: dict[str, str] = {}
    if host == "default":
        all_headers["Host"] = f"127.0.0.1:{port_of(server)}"
    elif host is not None:
        all_headers["Host"] = host
    if token:
        all_headers["X-Skymorph-Token"] = server.token
    if body or method == "POST":
        all_headers.setdefault("Content-Length", str(len(body)))
    all_headers.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
    return raw(server, head.encode("latin-1") + b"\r\n" + body)


def vote_body(expert="Ann", cluster=None, type_="SPH", server=None) -> bytes:
    if cluster is None:
        cluster = next(iter(server.app.clusters))
    return json.dumps({"expert": expert, "cluster": cluster, "type": type_}).encode()


def post_vote(server, body: bytes, content_type: str = "application/json", **kw):
    headers = {"Content-Type": content_type, **kw.pop("headers", {})}
    return http(server, "POST", "/api/vote", body, headers, **kw)


def votes_file(server: InspectionServer) -> list[dict[str, str]]:
    path = server.app.store.path
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_json_error(status: int, headers: dict[str, str], body: bytes, want: int) -> str:
    assert status == want, body
    assert headers["content-type"] == "application/json"
    assert b"\n" not in body  # one line
    reason = json.loads(body)["error"]
    assert isinstance(reason, str) and reason
    return reason


@pytest.fixture
def no_tracebacks(caplog, capfd):
    """The server answers every bad request itself: no traceback, no error in the log."""
    caplog.set_level(logging.DEBUG, logger="skymorph.inspection")
    yield
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text


# --- the token ----------------------------------------------------------------------------------


def test_every_api_request_needs_the_token(served, no_tracebacks):
    cluster = next(iter(served.app.clusters))
    stamp = next(iter(served.app.ids_by_stamp))
    for path in ("/api/state", f"/montage/{cluster}.png", f"/galaxy/{stamp}.png"):
        reason = assert_json_error(*http(served, "GET", path, token=False), 403)
        assert "token" in reason
        assert_json_error(*http(served, "GET", path, token=False,
                                headers={"X-Skymorph-Token": served.token[:-1] + "x"}), 403)
        assert http(served, "GET", f"{path}?token=wrong", token=False)[0] == 403
        # the three ways of passing it
        assert http(served, "GET", path)[0] == 200
        assert http(served, "GET", f"{path}?token={served.token}", token=False)[0] == 200
        assert http(served, "GET", path, token=False,
                    headers={"Authorization": f"token {served.token}"})[0] == 200
    before = votes_file(served)
    assert_json_error(*post_vote(served, vote_body(server=served), token=False), 403)
    assert votes_file(served) == before
    # the page itself holds no secret and opens without the token (its script then asks for it)
    status, _, page = http(served, "GET", "/", token=False)
    assert status == 200 and b"app.js" in page and served.token.encode() not in page


def test_token_is_random_per_session_and_printed_with_the_url(served, monkeypatch, capsys):
    assert len(served.token) >= 40  # token_urlsafe(32): 256 bits
    assert served.token_url == f"http://127.0.0.1:{port_of(served)}/?token={served.token}"
    other = make_server(served.app.run, Config(), port=0)
    try:
        assert other.token != served.token
    finally:
        other.server_close()
    from skymorph import serve

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(InspectionServer, "serve_forever", stop)
    serve(served.app.run, Config(), port=0)
    out = capsys.readouterr().out
    assert "http://127.0.0.1:" in out and "/?token=" in out


# --- Host and Origin --------------------------------------------------------------------------------


def test_dns_rebinding_hosts_are_refused(served, no_tracebacks):
    port = port_of(served)
    for host in (f"evil.example:{port}", f"attacker.com:{port}", "evil.example", f"127.0.0.1:{port + 1}",
                 f"127.0.0.1.evil.example:{port}", f"localhost.evil.example:{port}"):
        reason = assert_json_error(*http(served, "GET", "/api/state", host=host), 403)
        assert "host" in reason.lower()
        assert http(served, "GET", "/", host=host)[0] == 403  # the page too
    assert_json_error(*http(served, "GET", "/api/state", host=None), 400)
    before = votes_file(served)
    assert post_vote(served, vote_body(server=served), host=f"evil.example:{port}")[0] == 403
    assert votes_file(served) == before
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert http(served, "GET", "/api/state", host=host)[0] == 200


def test_cross_origin_requests_are_refused(served, no_tracebacks):
    port = port_of(served)
    before = votes_file(served)
    for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", f"http://localhost:{port + 1}",
                   "null", f"https://127.0.0.1:{port}"):
        reason = assert_json_error(*post_vote(served, vote_body("Mallory", server=served),
                                              headers={"Origin": origin}), 403)
        assert "origin" in reason
        assert http(served, "GET", "/api/state", headers={"Origin": origin})[0] == 403
    assert votes_file(served) == before
    assert http(served, "GET", "/api/state", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    # the server's own origin (what the page sends) is fine
    status, _, body = post_vote(served, vote_body("Origin Ok", server=served),
                                headers={"Origin": f"http://127.0.0.1:{port}",
                                         "Sec-Fetch-Site": "same-origin"})
    assert status == 200, body
    assert any(r["expert"] == "Origin Ok" for r in votes_file(served))


def test_a_vote_must_be_json(served, no_tracebacks):
    before = votes_file(served)
    body = vote_body("Mallory", server=served)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/json; charset=latin-1", "application/jsonp"):
        reason = assert_json_error(*post_vote(served, body, content_type=ctype), 415)
        assert "application/json" in reason
    status, headers, answer = http(served, "POST", "/api/vote", body)  # no Content-Type at all
    assert_json_error(status, headers, answer, 415)
    assert votes_file(served) == before
    assert post_vote(served, vote_body("Json Ok", server=served),
                     content_type="application/json; charset=utf-8")[0] == 200


# --- malformed requests ---------------------------------------------------------------------------


def _request_with_length(server, length: str, body: bytes) -> bytes:
    return (f"POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1:{port_of(server)}\r\n"
            f"X-Skymorph-Token: {server.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + body


@pytest.mark.parametrize("length", ["abc", "-5", "+5", " 1_0", "99999999999", "20000", "1e3", "0x10", "0",
                                    ""])
def test_bad_content_length_is_a_400(served, length, no_tracebacks):
    before = votes_file(served)
    status, headers, body = raw(served, _request_with_length(served, length, b'{"a": 1}'), shut_write=True)
    assert_json_error(status, headers, body, 400)
    assert votes_file(served) == before


def test_missing_or_repeated_content_length_is_a_400(served, no_tracebacks):
    body = vote_body(server=served)
    head = (f"POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1:{port_of(served)}\r\n"
            f"X-Skymorph-Token: {served.token}\r\nContent-Type: application/json\r\n")
    assert_json_error(*raw(served, head.encode() + b"\r\n" + body, shut_write=True), 400)
    twice = head + f"Content-Length: {len(body)}\r\nContent-Length: {len(body)}\r\n\r\n"
    assert_json_error(*raw(served, twice.encode() + body, shut_write=True), 400)
    chunked = head + "Transfer-Encoding: chunked\r\n\r\n"
    assert_json_error(*raw(served, chunked.encode() + b"5\r\nhello\r\n0\r\n\r\n", shut_write=True), 400)


def test_body_shorter_than_content_length_is_a_400(served, no_tracebacks):
    body = vote_body(server=served)
    # the client closes its side early
    reason = assert_json_error(*raw(served, _request_with_length(served, str(len(body) + 20), body),
                                    shut_write=True), 400)
    assert "shorter" in reason
    # the client keeps the connection open and sends nothing more: the handler gives up
    served.request_timeout = 1.0
    try:
        t0 = time.monotonic()
        reason = assert_json_error(*raw(served, _request_with_length(served, str(len(body) + 20), body)), 400)
        assert "shorter" in reason and time.monotonic() - t0 < 10
    finally:
        served.request_timeout = 10.0


def test_default_socket_timeout_is_bounded():
    assert 0 < InspectionServer.request_timeout <= 30


DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(("body", "why"), [
    (b'{"expert": "\xff\xfe", "cluster": 0, "type": "SPH"}', "UTF-8"),
    (b'{"expert": "Ann", "cluster": 0, "type": "SPH"', "JSON"),
    (b"\xef\xbb\xbf{}", "JSON"),  # a byte-order mark is not JSON
    (b"not json", "JSON"),
    (DEEP, "nested"),
    (b'{"expert": "Ann", "cluster": 1e400, "type": "SPH"}', "JSON"),
    (b'{"expert": "Ann", "cluster": NaN, "type": "SPH"}', "JSON"),
    (b'{"expert": "Ann", "cluster": -Infinity, "type": "SPH"}', "JSON"),
    (b'{"expert": "Ann", "cluster": ' + b"9" * 5000 + b', "type": "SPH"}', "JSON"),
])
def test_invalid_bodies_are_a_400(served, body, why, no_tracebacks):
    before = votes_file(served)
    reason = assert_json_error(*post_vote(served, body), 400)
    assert why in reason
    assert votes_file(served) == before


def _bad_votes(cluster: int) -> list:
    return [
        [],
        "a vote",
        None,
        {"expert": "Ann", "cluster": True, "type": "SPH"},
        {"expert": "Ann", "cluster": float(cluster) + 0.9, "type": "SPH"},
        {"expert": "Ann", "cluster": float(cluster), "type": "SPH"},
        {"expert": "Ann", "cluster": str(cluster), "type": "SPH"},
        {"expert": "Ann", "cluster": None, "type": "SPH"},
        {"expert": "Ann", "type": "SPH"},
        {"expert": "Ann", "cluster": [cluster], "type": "SPH"},
        {"expert": "Ann", "cluster": -1, "type": "SPH"},
        {"expert": "Ann", "cluster": 10**30, "type": "SPH"},
        {"expert": "Ann", "cluster": cluster, "type": 1},
        {"expert": "Ann", "cluster": cluster, "type": None},
        {"expert": "Ann", "cluster": cluster, "type": ["SPH"]},
        {"expert": "Ann", "cluster": cluster, "type": "SPHERICAL"},
        {"expert": "Ann", "cluster": cluster, "type": ""},
        {"expert": "Ann", "cluster": cluster},
        {"expert": "", "cluster": cluster, "type": "SPH"},
        {"expert": "   ", "cluster": cluster, "type": "SPH"},
        {"expert": 42, "cluster": cluster, "type": "SPH"},
        {"expert": ["Ann"], "cluster": cluster, "type": "SPH"},
        {"expert": None, "cluster": cluster, "type": "SPH"},
        {"expert": "x" * 81, "cluster": cluster, "type": "SPH"},
        {"expert": "A" * 5000, "cluster": cluster, "type": "SPH"},
        {"expert": "Ann\x00", "cluster": cluster, "type": "SPH"},
        {"expert": "Ann\nBob", "cluster": cluster, "type": "SPH"},
        {"cluster": cluster, "type": "SPH"},
    ]


def test_votes_with_wrong_types_are_a_400(served, no_tracebacks):
    cluster = next(iter(served.app.clusters))
    before = votes_file(served)
    for payload in _bad_votes(cluster):
        status, headers, body = post_vote(served, json.dumps(payload).encode())
        assert status == 400, (payload, body)
        assert_json_error(status, headers, body, 400)
    assert votes_file(served) == before
    # the same vote with the right types is recorded (type names are matched case-insensitively)
    status, _, body = post_vote(served, json.dumps({"expert": "x" * 80, "cluster": cluster,
                                                    "type": " etd "}).encode())
    assert status == 200, body
    assert json.loads(body)["vote"]["type"] == "ETD"


def test_other_malformed_requests_get_json_answers(served, no_tracebacks):
    for path in ("/api/nothing", "/galaxy/x.png", "/galaxy/99999999.png", "/montage/99999.png"):
        assert http(served, "GET", path)[0] in (400, 404)
        assert_json_error(*http(served, "GET", path), http(served, "GET", path)[0])
    stamp = next(iter(served.app.ids_by_stamp))
    for value in ("abc", "1e400", "nan", "-1", "0", "100", "inf", "1;2"):
        assert_json_error(*http(served, "GET", f"/galaxy/{stamp}.png?softening={value}"), 400)
    assert http(served, "GET", f"/galaxy/{stamp}.png?softening=0.5")[0] == 200
    assert http(served, "GET", "//api/state")[0] == 200  # server.url + "/api/state"
    assert_json_error(*http(served, "DELETE", "/api/vote"), 405)
    assert_json_error(*http(served, "PUT", "/api/vote", b"{}"), 405)
    # what the stdlib parser refuses is answered in JSON too
    assert_json_error(*raw(served, b"GARBAGE /api/vote HTTP/1.1\r\n\r\n"), 501)
    many = "&".join(f"a{i}=1" for i in range(100))
    assert_json_error(*http(served, "GET", f"/api/state?{many}"), 400)


def test_the_stretch_control_changes_the_zoomed_galaxy(served):
    stamp = next(iter(served.app.ids_by_stamp))
    default = http(served, "GET", f"/galaxy/{stamp}.png")[2]
    assert http(served, "GET", f"/galaxy/{stamp}.png?softening=0.05")[2] == default  # the setting's value
    assert http(served, "GET", f"/galaxy/{stamp}.png?softening=5")[2] != default


# --- spreadsheet-safe CSV --------------------------------------------------------------------------


DANGEROUS = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+2", "-2-3", "@SUM(A1:A2)",
             "=cmd|' /C calc'!A0", "'=already quoted", "'plain quote"]


def test_text_cells_are_written_spreadsheet_safe_and_read_back(tmp_path):
    for text in ["\tTAB", "\rCR", *DANGEROUS, "Ann", "O'Neill", "", "x=1"]:
        escaped = escape_cell(text)
        assert unescape_cell(escaped) == text
        if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
            assert escaped == "'" + text
        if text in ("Ann", "O'Neill", "", "x=1"):
            assert escaped == text
    store = VoteStore(tmp_path / "votes.csv", "abc")
    for i, name in enumerate(DANGEROUS):
        store.cast(name, i, "SPH")
    with open(tmp_path / "votes.csv", newline="", encoding="utf-8") as fh:
        raw_rows = list(csv.reader(fh))[1:]
    cells = [cell for row in raw_rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert {row[0] for row in raw_rows} == {"'" + name for name in DANGEROUS}
    # read back exactly as cast, by the store and by merge's reader
    assert {r["expert"] for r in store.rows()} == set(DANGEROUS)
    assert store.votes_of("=cmd|' /C calc'!A0") == {DANGEROUS.index("=cmd|' /C calc'!A0"): "SPH"}
    table = read_votes([tmp_path / "votes.csv"], ["SPH", "UNC"])
    assert set(table["expert"]) == set(DANGEROUS)


def test_a_formula_name_sent_to_the_server_is_stored_quoted(served):
    cluster = next(iter(served.app.clusters))
    name = "=1+2*HYPERLINK(\"http://evil.example\")"
    status, _, body = post_vote(served, vote_body(name, cluster, "IRR"))
    assert status == 200, body
    with open(served.app.store.path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert ["'" + name, str(cluster), "IRR"] in [r[:3] for r in rows]
    state = json.loads(http(served, "GET", "/api/state?expert=" + urllib.parse.quote(name))[2])
    assert state["votes"][str(cluster)] == "IRR"


def test_host_check_of_a_wildcard_bind():
    """Bound to 0.0.0.0 (colleagues vote over the network): any IP address of the machine or its
    own name, with the right port; never another domain name (DNS rebinding)."""
    from skymorph.inspection.server import _Handler

    server = InspectionServer(("127.0.0.1", 0), _Handler)  # the check only, without opening the network
    try:
        server.bind_host = "0.0.0.0"
        port = port_of(server)
        for host in (f"127.0.0.1:{port}", f"192.168.1.5:{port}", f"[::1]:{port}", f"localhost:{port}",
                     f"{socket.gethostname()}:{port}"):
            assert server.host_allowed(host), host
        for host in (f"evil.example:{port}", f"192.168.1.5:{port + 1}", "192.168.1.5", f"a b:{port}",
                     f"127.0.0.1:{port}@evil.example", ""):
            assert not server.host_allowed(host), host
        assert server.url == f"http://127.0.0.1:{port}/"
    finally:
        server.server_close()
