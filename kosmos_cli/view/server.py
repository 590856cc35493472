"""The viewer's HTTP server: the page, a small JSON API over the index, and the images. Standard library only.

    GET /                        the page (static/index.html); its address keeps the filters
    GET /static/view.js|.css     the page's script and style
    GET /api/info                the results: name, task, how many records, draw's palette, the image sizes
    GET /api/facets              what the filters offer: error count, common classes, phrases (find), regions (refer)
    GET /api/records?QUERY       a page of cards: offset, limit (at most 200), and the query (index.Query)
    GET /api/record/ROW?QUERY    one whole record, its card, and where it stands in the query's order
    GET /api/export?QUERY&to=F   the `kosmos export` command line for what is shown (export.py)
    GET /api/shown.jsonl?QUERY   the records shown, whole, to export only those
    GET /image/ROW?size=N        record ROW's image, N (256, 512, 1024, 2048) pixels at most a side, as a JPEG

The first page in the order written is read straight from the results, so it shows while the index over every
record (index.py) is still being built, on a thread of its own; what needs the index waits for it.

Nothing else is served: an image is asked for by its record's number, never by a path, so only the images the
results name can be read (any other path, `..` or an absolute path is a 404). It only reads: GET and HEAD.
Bound to 127.0.0.1 by default; on a loopback address, a request naming another host is refused (a web page
elsewhere cannot reach it by DNS rebinding).
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import threading
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import InputError, KosmosError, UsageError
from .export import SHOWN, offer, shown_lines
from .index import Index, Query, cards, palette
from .reading import open_results
from .thumbs import DEFAULT_CACHE_MB, SIZES, Thumbnails, Unshowable

log = logging.getLogger("kosmos_cli")

DEFAULT_PORT = 8000
PORTS_TRIED = 20  # without a port given: the first free one from DEFAULT_PORT on
PAGE_LIMIT = 200
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/view.js": ("view.js", "text/javascript; charset=utf-8"),
    "/static/view.css": ("view.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
_IMAGE = re.compile(r"/image/([0-9]{1,12})")
_RECORD = re.compile(r"/api/record/([0-9]{1,12})")


class Viewer:
    """A running viewer: `url`, and `close()` to stop it. Made by `start`."""

    def __init__(self, results: str, host: str, port: int | None, cache_mb: int):
        self.results = open_results(results)  # InputError before anything listens
        self._index: Index | None = None
        self._index_error: Exception | None = None
        self._indexed = threading.Event()
        threading.Thread(target=self._build_index, name="kosmos-view-index", daemon=True).start()
        self.images = Thumbnails(cache_mb << 20)
        self.host = host
        self._server = _bind(host, port)
        self._server.viewer = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._static: dict[str, bytes] = {}

    def _build_index(self) -> None:
        try:
            self._index = Index(self.results)
            import pyarrow as pa

            pa.default_memory_pool().release_unused()  # what reading and building took, given back
        except Exception as exc:  # a damaged row group past the footer: said by each answer that needs it
            self._index_error = InputError(f"{self.results.path} cannot be read: {' '.join(str(exc).split())}")
        finally:
            self._indexed.set()

    @property
    def indexed(self) -> bool:
        return self._indexed.is_set()

    @property
    def index(self) -> Index:
        """The index over every record, once built (waits for it)."""
        self._indexed.wait()
        if self._index is None:
            assert self._index_error is not None
            raise self._index_error
        return self._index

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.25)

    def start(self) -> Viewer:
        self._thread = threading.Thread(target=self.serve_forever, name="kosmos-view", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def static(self, name: str) -> bytes:
        if name not in self._static:
            self._static[name] = resources.files(__package__).joinpath("static").joinpath(name).read_bytes()
        return self._static[name]


def start(results: str, host: str = "127.0.0.1", port: int | None = 0, *, cache_mb: int = DEFAULT_CACHE_MB) -> Viewer:
    """Serve `results` from a background thread; returns the running Viewer (`.url`, `.close()`).

    `port` 0: any free port; None: the first free one from 8000 on. InputError (one line) when the results
    cannot be read, UsageError when the address cannot be had; both before anything listens."""
    _check(host, port, cache_mb)
    return Viewer(os.fspath(results), host, port, cache_mb).start()


def serve(
    results: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    open_browser: bool = False,
    cache_mb: int = DEFAULT_CACHE_MB,
    quiet: bool = False,
) -> None:
    """Serve `results` until Ctrl-C (then return). Prints the address on stdout, and how to stop on stderr."""
    _check(host, port, cache_mb)
    viewer = Viewer(os.fspath(results), host, port, cache_mb)
    try:
        print(viewer.url, flush=True)
        if not quiet:
            print(
                f"kosmos view: {len(viewer.results)} {viewer.results.task.name} records of {results} at {viewer.url} "
                "(Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            if not _loopback(host):
                print(
                    f"kosmos view: listening on {host}: anyone who can reach this machine can see these results "
                    "and their images",
                    file=sys.stderr,
                    flush=True,
                )
        if open_browser:
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(viewer.url,), daemon=True).start()
        viewer.serve_forever()
    except KeyboardInterrupt:
        if not quiet:
            print("kosmos view: stopped", file=sys.stderr, flush=True)
    finally:
        viewer.close()


def _check(host: str, port: int | None, cache_mb: int) -> None:
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise UsageError(f"{{param}} {port!r}: a port number from 0 to 65535 (0: any free one)", param="port")
    if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) or cache_mb < 1:
        raise UsageError(f"{{param}} {cache_mb!r}: megabytes of images to keep, at least 1", param="cache_mb")
    if not host:
        raise UsageError("{param} is empty: name an address to listen on, e.g. 127.0.0.1", param="host")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int | None) -> http.server.ThreadingHTTPServer:
    tried = [port] if port is not None else list(range(DEFAULT_PORT, DEFAULT_PORT + PORTS_TRIED))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_type = type("Server", (_Server,), {"address_family": family})
    last: OSError | None = None
    for number in tried:
        try:
            return server_type((host, number), _Handler)
        except OSError as exc:
            last = exc
            if exc.errno not in (98, 48, 10048):  # EADDRINUSE (Linux, macOS, Windows)
                break
    assert last is not None
    if port is None:
        what = f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORTS_TRIED - 1} are all in use"
    elif last.errno in (98, 48, 10048):
        what = f"port {port} is in use"
    else:
        what = f"cannot listen on {host}:{port} ({last.strerror or last})"
    raise UsageError(f"{what}: pass another {{param}} (0: any free one)", param="port")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    viewer: Viewer


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "kosmos-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("view: " + format, *args)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        viewer = self.server.viewer
        try:
            if not self._host_allowed(viewer):
                return self._send(403, b"unknown host\n", "text/plain; charset=utf-8", head)
            url = urlsplit(self.path)
            route, params = url.path, parse_qs(url.query, keep_blank_values=True)
            if route in STATIC:
                name, kind = STATIC[route]
                return self._send(200, viewer.static(name), kind, head)
            if route == "/favicon.ico":
                return self._send(204, b"", "image/x-icon", head)
            if route == "/api/info":
                return self._json(self._info(viewer), head)
            if route == "/api/facets":
                return self._json(viewer.index.facets(), head)
            if route == "/api/records":
                return self._json(self._records(viewer, params), head)
            if route == "/api/export":
                return self._json(offer(viewer.index, Query.from_params(params), _one(params, "to") or "coco"), head)
            if route == "/api/shown.jsonl":
                return self._stream(shown_lines(viewer.index, Query.from_params(params)), head)
            match = _RECORD.fullmatch(route)
            if match:
                return self._record(viewer, int(match.group(1)), params, head)
            match = _IMAGE.fullmatch(route)
            if match:
                return self._image(viewer, int(match.group(1)), params, head)
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
        except UsageError as exc:
            self._send(400, _dumps({"error": exc.render(exc.param)}), "application/json", head)
        except KosmosError as exc:
            self._send(500, _dumps({"error": str(exc)}), "application/json", head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away

    def _host_allowed(self, viewer: Viewer) -> bool:
        """On a loopback address, only requests naming a loopback host (DNS rebinding gets nothing)."""
        if not _loopback(viewer.host):
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]") in ("localhost", "127.0.0.1", "::1") or name.startswith("127.")

    # -- routes ----------------------------------------------------------------------------------------------
    def _info(self, viewer: Viewer) -> dict[str, Any]:
        task = viewer.results.task
        return {
            "results": viewer.results.path,
            "name": os.path.basename(os.path.normpath(viewer.results.path)),
            "task": task.name,
            "detects": task.detects,
            "records": len(viewer.results),
            "palette": palette(),
            "sizes": list(SIZES),
        }

    def _records(self, viewer: Viewer, params: dict[str, list[str]]) -> dict[str, Any]:
        query = Query.from_params(params)
        offset = _number(params, "offset", 0)
        limit = min(_number(params, "limit", 60), PAGE_LIMIT)
        total = len(viewer.results)
        if query == Query() and not viewer.indexed:  # every record, as written: no index needed
            table = viewer.results.head(offset, limit)
            shown = cards(viewer.results.task, table, range(offset, offset + table.num_rows), query)
        else:
            rows = viewer.index.order(query)
            total, shown = len(rows), viewer.index.cards(rows[offset : offset + limit], query)
        return {
            "total": total,
            "records": len(viewer.results),
            "offset": offset,
            "query": query.params(),
            "cards": shown,
        }

    def _record(self, viewer: Viewer, row: int, params: dict[str, list[str]], head: bool) -> None:
        if row >= len(viewer.results):
            return self._send(404, b"no such record\n", "text/plain; charset=utf-8", head)
        index = viewer.index
        query = Query.from_params(params)
        rows = index.order(query)
        import numpy as np

        at = np.flatnonzero(rows == row)
        self._json(
            {
                "record": viewer.results.record(row),
                "card": index.cards([row], query)[0],
                "position": int(at[0]) if len(at) else None,
                "total": len(rows),
            },
            head,
        )

    def _image(self, viewer: Viewer, row: int, params: dict[str, list[str]], head: bool) -> None:
        size = _number(params, "size", 512)
        if row >= len(viewer.results) or size not in SIZES:
            return self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
        try:
            data = viewer.images.get(viewer.results.source(viewer.results.image_path(row)), size)
        except Unshowable as exc:
            return self._send(422, f"{exc}\n".encode(), "text/plain; charset=utf-8", head)
        self._send(200, data, "image/jpeg", head, cache=True)

    # -- answers ---------------------------------------------------------------------------------------------
    def _json(self, value: Any, head: bool) -> None:
        self._send(200, _dumps(value), "application/json", head)

    def _send(self, code: int, body: bytes, kind: str, head: bool, cache: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _stream(self, lines, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Disposition", f'attachment; filename="{SHOWN}"')
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        if not head:
            for line in lines:
                self.wfile.write(line)


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name) or []
    return values[-1] if values else None


def _number(params: dict[str, list[str]], name: str, default: int) -> int:
    value = _one(params, name)
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 12:
        raise UsageError(f"{{param}} {value!r}: a whole number, 0 or more", param=name)
    return int(value)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
