"""The voting web application: experts name each consensus cluster in a browser.

Security model (the server binds to 127.0.0.1 by default, but any web page the expert
opens in the same browser can send requests to it):

* a per-session random token (:func:`secrets.token_urlsafe`) is printed with the URL,
  as Jupyter does (``http://127.0.0.1:8765/?token=...``); every API and image request
  must carry it (``token`` query parameter, ``X-Skymorph-Token`` header or
  ``Authorization: token ...``), else 403;
* the ``Host`` header must name the bound address and port (or, for a wildcard bind,
  an IP address or this machine's name): a DNS-rebinding page, whose requests carry
  its own domain name, is refused with 403;
* an ``Origin`` header, when present, must be the server's own origin: cross-origin
  requests (a ``no-cors`` fetch, an auto-submitted form) are refused with 403;
* a vote must be ``Content-Type: application/json`` (else 415), which no HTML form
  and no ``no-cors`` fetch can send;
* every malformed request is answered with 400 and a one-line JSON reason, never a
  dropped connection or a traceback; a socket timeout keeps a client that promises
  more body than it sends from holding a handler thread forever.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from ..config import Config
from ..errors import SkymorphError
from ..io.rundir import RunDir
from ._templates import read_static
from .app import (  # noqa: F401 - TYPE_NAMES is re-exported (skymorph.inspection)
    SOFTENING_RANGE,
    TYPE_NAMES,
    _App,
    _short,
)
from .montage import InspectError

log = logging.getLogger("skymorph.inspection")

MAX_BODY = 10_000
REQUEST_TIMEOUT_S = 10.0
TOKEN_HEADER = "X-Skymorph-Token"
_WILDCARD = {"", "0.0.0.0", "::"}


class _Reject(SkymorphError):
    """A request refused with ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_body(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no number that overflows a float, bounded nesting.

    Raises
    ------
    _Reject
        400 with the reason.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject(400, "the body is not valid UTF-8") from None
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise _Reject(400, "the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, out-of-range numbers, over-long integers
        reason = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise _Reject(400, f"the body is not valid JSON: {reason}") from None



_STATIC = {"/": ("app.html", "text/html; charset=utf-8"),
           "/static/session.js": ("session.js", "text/javascript; charset=utf-8"),
           "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/static/app.css": ("app.css", "text/css; charset=utf-8"),
           "/refine": ("refine.html", "text/html; charset=utf-8"),
           "/static/refine.js": ("refine.js", "text/javascript; charset=utf-8"),
           "/static/refine.css": ("refine.css", "text/css; charset=utf-8"),
           # asked for by the browser itself, without the token: served, not refused with 403
           "/favicon.ico": ("favicon.svg", "image/svg+xml"),
           "/static/favicon.svg": ("favicon.svg", "image/svg+xml")}
_NUMBER = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]{1,3})?")


class _Handler(BaseHTTPRequestHandler):
    server: InspectionServer
    server_version = "skymorph-inspect"
    sys_version = ""

    def setup(self) -> None:
        # a client that sends less than it promised (or nothing) gives up its thread after this
        self.timeout = self.server.request_timeout
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # the token is a secret: it stays out of the log
        log.debug("%s %s", self.address_string(), (format % args).replace(self.server.token, "[token]"))

    # --- responses ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if ctype.startswith("text/html"):
            self.send_header("Content-Security-Policy",
                             "default-src 'self'; img-src 'self'; frame-ancestors 'none'")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib parser (bad request line, headers...) as one-line JSON too."""
        self.close_connection = True
        reason = (message or self.responses.get(code, ("error",))[0]).splitlines()[0][:200]
        try:
            self._json(code, {"error": reason})
        except OSError:
            pass

    # --- checks ------------------------------------------------------------------------------

    def _check_host_and_origin(self) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            raise _Reject(400, "the request needs exactly one Host header")
        host = hosts[0].strip()
        if not self.server.host_allowed(host):
            raise _Reject(403, f"host {_short(host)} is not this server (DNS rebinding?)")
        origins = self.headers.get_all("Origin") or []
        if len(origins) > 1:
            raise _Reject(400, "the request has several Origin headers")
        if origins and origins[0].strip().lower() != f"http://{host.lower()}":
            raise _Reject(403, f"cross-origin request from {_short(origins[0])} refused")

    def _check_token(self, query: dict[str, list[str]]) -> None:
        # API calls and images come from the page itself; a link from elsewhere may open the page
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in ("same-origin", "none"):
            raise _Reject(403, f"cross-site request ({_short(site)}) refused")
        given = query.get("token", [])
        header = self.headers.get(TOKEN_HEADER)
        if header is not None:
            given.append(header)
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "token ":
            given.append(auth[6:])
        want = self.server.token
        if not any(secrets.compare_digest(g.strip().encode(), want.encode()) for g in given):
            raise _Reject(403, "missing or wrong token: open the address printed by "
                               "`skymorph inspect serve` (it ends in ?token=...)")

    def _read_json(self) -> Any:
        ctype = self.headers.get_content_type()
        charset = self.headers.get_content_charset()
        if "Content-Type" not in self.headers or ctype != "application/json" \
                or charset not in (None, "utf-8"):
            raise _Reject(415, "a vote must be sent as Content-Type: application/json (UTF-8)")
        if self.headers.get("Transfer-Encoding") is not None:
            raise _Reject(400, "Transfer-Encoding is not accepted; send a Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) != 1:
            raise _Reject(400, "the request needs exactly one Content-Length header")
        text = lengths[0].strip()
        if not re.fullmatch(r"[0-9]{1,9}", text):
            raise _Reject(400, f"Content-Length {_short(text)} is not a non-negative integer")
        length = int(text)
        if not 0 < length <= MAX_BODY:
            raise _Reject(400, f"the body must be 1 to {MAX_BODY} bytes (Content-Length {length})")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise _Reject(400, f"the body is shorter than Content-Length {length} "
                               f"(nothing more came for {self.server.request_timeout:g} s)") from None
        if len(body) < length:
            raise _Reject(400, f"the body is shorter than Content-Length ({len(body)} of {length} bytes)")
        return parse_json_body(body)

    # --- dispatch ----------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        self.close_connection = True  # one request per connection: an unread body is never parsed
        try:
            self._check_host_and_origin()
            # origin-form target; "//api/vote" (a base URL with a trailing slash plus "/api/vote")
            # is the same path, not a host name as urlparse would read it
            target, _, query = self.path.partition("?")
            url = SimpleNamespace(path=re.sub(r"/{2,}", "/", target), query=query.partition("#")[0])
            if method in ("GET", "HEAD"):
                self._get(url)
            elif method == "POST":
                self._post(url)
            else:
                raise _Reject(405, f"method {method} is not allowed")
        except _Reject as exc:
            self._json(exc.status, {"error": exc.reason})
        except InspectError as exc:
            self._json(400, {"error": str(exc).splitlines()[0]})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # never a traceback in the log, always an answer
            log.error("%s %s failed: %s: %s", method, self.path[:200], type(exc).__name__, exc)
            try:
                self._json(500, {"error": f"internal error: {type(exc).__name__}"})
            except OSError:
                pass

    def _get(self, url: Any) -> None:
        app = self.server.app
        if url.path in _STATIC:
            name, ctype = _STATIC[url.path]
            self._send(200, read_static(name), ctype)
            return
        try:
            query = parse_qs(url.query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except ValueError:
            raise _Reject(400, "too many query parameters") from None
        self._check_token(query)
        if url.path.startswith(("/api/refine/", "/refine/")):
            self._refine_get(url, query)
        elif url.path == "/api/state":
            expert = query.get("expert", [""])[0]
            self._json(200, app.state(expert or None))
        elif m := re.fullmatch(r"/montage/([0-9]{1,9})\.png", url.path):
            entry = app.clusters.get(int(m.group(1)))
            if entry is None:
                raise _Reject(404, "no such cluster")
            self._send(200, (app.run.path / "inspection" / entry["png"]).read_bytes(), "image/png",
                       "private, max-age=60")
        elif m := re.fullmatch(r"/galaxy/([0-9]{1,9})\.png", url.path):
            softening = None
            if "softening" in query:
                text = query["softening"][0].strip()
                lo, hi = SOFTENING_RANGE
                if not _NUMBER.fullmatch(text) or not lo <= float(text) <= hi:
                    raise _Reject(400, f"softening must be a number from {lo:g} to {hi:g}")
                softening = float(text)
            try:
                body = app.galaxy_png(int(m.group(1)), softening)
            except KeyError:
                raise _Reject(404, "no such galaxy in the catalog") from None
            self._send(200, body, "image/png", "private, max-age=60")
        elif m := re.fullmatch(r"/colour/([0-9]{1,9})\.png", url.path):
            try:
                body = app.colour_png(int(m.group(1)))
            except KeyError:
                raise _Reject(404, "no colour view of that galaxy") from None
            self._send(200, body, "image/png", "private, max-age=60")
        elif not self._get_special(url.path, query):
            raise _Reject(404, f"not found: {url.path[:100]}")

    def _get_special(self, path: str, query: dict[str, list[str]]) -> bool:
        """'More like this' and the subclasses; False when ``path`` is none of theirs."""
        app = self.server.app
        if path == "/api/similar":
            stamp, n = query.get("stamp", [""])[0], query.get("n", ["12"])[0]
            if not stamp.isdigit() or len(stamp) > 9 or not n.isdigit() or not 1 <= int(n) <= 100:
                raise _Reject(400, "similar needs stamp=N and n from 1 to 100")
            self._json(200, app.similar(int(stamp), int(n)))
        elif path == "/api/subclasses":
            self._json(200, app.subclasses(query.get("expert", [""])[0] or None))
        elif m := re.fullmatch(r"/subclass/(group_[A-Za-z0-9_-]{1,60})/(subcluster_[0-9]{3,6}\.png)", path):
            try:
                body = app.subclass_png(m.group(1), m.group(2))
            except KeyError:
                raise _Reject(404, "no such subclass montage") from None
            self._send(200, body, "image/png", "no-store")
        else:
            return False
        return True

    def _post(self, url: Any) -> None:
        try:
            query = parse_qs(url.query, keep_blank_values=True, max_num_fields=20)
        except ValueError:
            raise _Reject(400, "too many query parameters") from None
        self._check_token(query)
        if url.path not in ("/api/vote", "/api/subclass-vote", "/api/flag", "/api/refine/label"):
            raise _Reject(404, "not found")
        payload = self._read_json()
        app = self.server.app
        cast = {"/api/vote": app.vote, "/api/subclass-vote": app.subclass_vote, "/api/flag": app.flag,
                "/api/refine/label": lambda p: app.refine.label(p)}[url.path]
        try:
            result = cast(payload)
        except OSError as exc:  # the disk refused the write: the expert must know it was not saved
            log.error("vote not saved: %s", exc)
            raise _Reject(500, f"the vote could not be saved: {exc}") from None
        self._json(200, result)

    def _refine_get(self, url: Any, query: dict[str, list[str]]) -> None:
        """The teach page's API: the next page of galaxies, and any galaxy's image."""
        app = self.server.app
        if url.path == "/api/refine/page":
            self._json(200, app.refine.page(query.get("expert", [""])[0]))
        elif m := re.fullmatch(r"/refine/galaxy/([0-9]{1,9})\.png", url.path):
            try:
                body = app.refine.galaxy_png(int(m.group(1)))
            except KeyError:
                raise _Reject(404, "no such galaxy") from None
            self._send(200, body, "image/png", "private, max-age=60")
        else:
            raise _Reject(404, f"not found: {url.path[:100]}")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802 - stdlib name
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib name
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802 - stdlib name
        self._handle("PATCH")

    def do_OPTIONS(self) -> None:  # noqa: N802 - stdlib name
        self._handle("OPTIONS")


class InspectionServer(ThreadingHTTPServer):
    """The voting web application (a :class:`~http.server.ThreadingHTTPServer`).

    ``server_address`` holds the host and the port actually bound (useful with
    port 0); ``url`` is the address of the page, ``token`` the session's secret
    and ``token_url`` the address to open in a browser (the page with the token).
    """

    daemon_threads = True
    app: _App
    token: str
    request_timeout: float = REQUEST_TIMEOUT_S
    bind_host: str = "127.0.0.1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line, no traceback (the handlers answer every error themselves)."""
        log.warning("request from %s failed: %s", client_address, sys.exc_info()[1])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if self.bind_host in _WILDCARD:
            host = "127.0.0.1" if self.address_family == socket.AF_INET else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    @property
    def token_url(self) -> str:
        return f"{self.url}?token={self.token}"

    @functools.cached_property
    def _own_names(self) -> frozenset[str]:
        """This machine's names (looked up once: getfqdn may ask the DNS)."""
        return frozenset({"localhost", socket.gethostname().lower(), socket.getfqdn().lower()})

    def host_allowed(self, host: str) -> bool:
        """Whether a ``Host`` header names this server (bound address or name, and port)."""
        m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?", host)
        if m is None:
            return False
        name, port = m.group(1).strip("[]").lower().rstrip("."), m.group(2)
        if port is None or int(port) != self.server_address[1]:
            return False
        bound = {self.bind_host.lower(), str(self.server_address[0]).lower()}
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            ip = None
        if name in bound:
            return True
        if self.bind_host in _WILDCARD:
            # any address of this machine; names only where they are this machine's own
            return ip is not None or name in self._own_names
        loopback = any(_is_loopback(b) for b in bound)
        return loopback and (name == "localhost" or (ip is not None and ip.is_loopback))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
                host: str | None = None, port: int | None = None,
                token: str | None = None) -> InspectionServer:
    """Build (but do not start) the voting web application of a run.

    The montages must be drawn (:func:`skymorph.make_server` draws them first when they
    are missing or stale, through the montage stage).  Start it with
    ``server.serve_forever()`` (in a thread, for tests and notebooks) and stop
    it with ``server.shutdown(); server.server_close()``; open ``server.token_url``.

    Parameters
    ----------
    run_dir : str, Path or RunDir
        Run directory with a catalog.
    config : Config, optional
        All settings; by default the run's own ``config.toml``.
    host, port : optional
        Override ``inspect.host`` / ``inspect.port``; port 0 picks a free port.
    token : str, optional
        The session's secret; a fresh ``secrets.token_urlsafe(32)`` by default.

    Returns
    -------
    InspectionServer
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = config if config is not None else run.config()
    bind = host or config.inspect.host
    server = InspectionServer((bind, config.inspect.port if port is None else port), _Handler)
    server.bind_host = bind
    server.token = token or secrets.token_urlsafe(32)
    server.app = _App(run, config)
    return server


def serve(run_dir: str | os.PathLike | RunDir, config: Config | None = None,
          host: str | None = None, port: int | None = None, open_browser: bool = False,
          page: str = "") -> None:
    """Run the voting web application until interrupted (Ctrl-C).

    The montages must be drawn (:func:`skymorph.serve` draws them first).  Parameters are
    those of :func:`make_server`; ``open_browser`` opens the page
    in the default browser; ``page = "refine"`` opens the "teach single galaxies" page
    (``skymorph inspect refine``).  Prints the address with the session's token.
    """
    server = make_server(run_dir, config, host, port)
    url = server.token_url if not page else f"{server.url}{page}?token={server.token}"
    if page == "refine":
        print(f"skymorph inspect refine: experts type single galaxies, least sure first (labels go to "
              f"{server.app.refine.store.path}); open\n\n    {url}\n\npress Ctrl-C to stop", flush=True)
    else:
        print(f"skymorph inspect: voting on {len(server.app.clusters)} clusters "
              f"(votes go to {server.app.store.path}); open\n\n    {url}\n\n"
              f"experts teach single galaxies at {server.url}refine\npress Ctrl-C to stop", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    if threading.current_thread() is threading.main_thread():
        # started as a background job of a script, the process inherits SIGINT ignored, and
        # Ctrl-C / `kill -INT` would never stop the server (nor save the "every vote is in" line)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped; every vote cast is in", server.app.store.path)
    finally:
        server.server_close()
