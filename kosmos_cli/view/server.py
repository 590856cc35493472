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
Bound to 127.0.0.1 by default. Only a request line in origin form (`GET /path HTTP/1.1`, never a whole URL) is
answered, and only when its Host names this server (`host_allowed`): on a loopback address a loopback IP or
`localhost`, with the port served; on another address that address (a web page elsewhere cannot reach it by
DNS rebinding). Each request is answered on a thread of its own, and an image is waited for a bounded time
(thumbs.py), so a slow one holds up no other request.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import itertools
import json
import logging
import math
import os
import re
import socket
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from ..errors import InputError, KosmosError, UsageError
from .export import SHOWN, offer, shown_lines
from .index import Index, Query, cards, palette
from .reading import Changed, Results, grown, open_results, signature
from .thumbs import DEFAULT_CACHE_MB, SIZES, Slow, Thumbnails, Unshowable

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
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_IMAGE = re.compile(r"/image/([0-9]{1,12})")
_RECORD = re.compile(r"/api/record/([0-9]{1,12})")


class Opened:
    """One reading of the results file: its records, the index over them (built on a thread of its own) and its
    version (1, then one more each time the file changed and was read again)."""

    def __init__(self, results: Results, version: int):
        self.results, self.version = results, version
        self._index: Index | None = None
        self._index_error: Exception | None = None
        self._indexed = threading.Event()
        threading.Thread(target=self._build_index, name="kosmos-view-index", daemon=True).start()

    def _build_index(self) -> None:
        try:
            self._index = Index(self.results)
            import pyarrow as pa

            pa.default_memory_pool().release_unused()  # what reading and building took, given back
        except Changed as exc:  # rewritten while it was read: the next request reads it again
            self._index_error = exc
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


class Viewer:
    """A running viewer: `url`, and `close()` to stop it. Made by `start`.

    The results file is looked at (a stat) before each answer: once it changed (rewritten, cut short, a part
    added), it is read again. When records were only added after the others, the version stays; otherwise it is
    one more, and answers for the page's older version are refused (409) so the page reloads."""

    def __init__(self, results: str, host: str, port: int | None, cache_mb: int, quiet: bool = True):
        self.path, self.quiet = results, quiet
        self._opened = Opened(open_results(results), 1)  # InputError before anything listens
        self._broken: tuple[tuple, str] | None = None  # a changed file that could not be read: its signature, why
        self._reading = threading.Lock()
        self.images = Thumbnails(cache_mb << 20)
        self.host = host
        self._server = _bind(host, port)
        self._server.viewer = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._static: dict[str, bytes] = {}

    @property
    def results(self) -> Results:
        return self.current().results

    def current(self) -> Opened:
        """The results as they are now: read again when the file changed since it was read. Changed (one line)
        when it changed and cannot be read now (it is tried again once it changes again)."""
        opened = self._opened
        if signature(self.path) == opened.results.signature:
            return opened
        with self._reading:  # one reading at a time; the requests that noticed too wait for it
            opened = self._opened
            now = signature(self.path)
            if now == opened.results.signature:
                return opened
            if self._broken is not None and self._broken[0] == now:
                raise Changed(self._broken[1])
            try:
                results = open_results(self.path)
            except InputError as exc:
                why = f"{self.path} changed and cannot be read now: {exc}"
                self._broken = (now, why)
                self._say(why)
                raise Changed(why) from None
            self._broken = None
            try:
                appended = grown(opened.results, results)
            except Changed:  # changed again while it was compared: a new reading all the same
                appended = False
            # records added after the others: their numbers still name them, so the page goes on as it is
            self._opened = Opened(results, opened.version if appended else opened.version + 1)
            how = "grew" if appended else "changed"
            self._say(f"{self.path} {how}: read again, {len(results)} {results.task.name} records")
            return self._opened

    def _say(self, line: str) -> None:
        if not self.quiet:
            print(f"kosmos view: {line}", file=sys.stderr, flush=True)

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


def start(
    results: str, host: str = "127.0.0.1", port: int | None = 0, *, cache_mb: int = DEFAULT_CACHE_MB, quiet: bool = True
) -> Viewer:
    """Serve `results` from a background thread; returns the running Viewer (`.url`, `.close()`).

    `port` 0: any free port; None: the first free one from 8000 on. InputError (one line) when the results
    cannot be read, UsageError when the address cannot be had; both before anything listens. `quiet` False: a
    line on stderr when the results file changed and was read again."""
    _check(host, port, cache_mb)
    return Viewer(os.fspath(results), host, port, cache_mb, quiet).start()


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
    viewer = Viewer(os.fspath(results), host, port, cache_mb, quiet)
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
            threading.Thread(target=_open_browser, args=(viewer.url,), daemon=True).start()
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


def _open_browser(url: str) -> None:
    """Open `url` in a browser; where none can be opened, say so in one line (the server goes on)."""
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except Exception:  # webbrowser.Error, or a browser command that cannot be started
        opened = False
    if not opened:
        print(f"kosmos view: no browser could be opened here: open {url} yourself", file=sys.stderr, flush=True)


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
    number = tried[0]
    for number in tried:
        try:
            return server_type((host, number), _Handler)
        except OSError as exc:
            last = exc
            if exc.errno not in (98, 48, 10048) or isinstance(exc, socket.gaierror):  # EADDRINUSE (Linux, macOS, Win)
                break
    assert last is not None
    if isinstance(last, socket.gaierror):
        raise UsageError(
            f"{{param}} {host}: not an address or a name of this machine (pass one of its own addresses: 127.0.0.1 "
            "for this machine alone, 0.0.0.0 for every interface)",
            param="host",
        )
    elif last.errno in (99, 49, 10049):  # EADDRNOTAVAIL (Linux, macOS, Windows)
        raise UsageError(
            f"{{param}} {host}: not an address of this machine (pass one of its own: 127.0.0.1 for this machine "
            "alone, 0.0.0.0 for every interface)",
            param="host",
        )
    elif port is None and last.errno in (98, 48, 10048):
        what = f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORTS_TRIED - 1} are all in use"
    elif last.errno in (98, 48, 10048):
        what = f"port {port} is in use"
    else:
        what = f"cannot listen on {host}:{number} ({last.strerror or last})"
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
            if not self.path.startswith("/"):  # a whole URL (as asked of a proxy), or `*`: never this server's
                return self._send(400, b"only a path is asked for here, not a whole URL\n", _TEXT, head)
            if not host_allowed(self.headers.get("Host") or "", viewer.host, viewer.port):
                return self._send(403, b"unknown host\n", _TEXT, head)
            route, _, query = self.path.partition("#")[0].partition("?")
            params = parse_qs(query, keep_blank_values=True)
            if route in STATIC:
                name, kind = STATIC[route]
                return self._send(200, viewer.static(name), kind, head)
            if route == "/favicon.ico":
                return self._send(204, b"", "image/x-icon", head)
            opened = viewer.current()
            asked = _one(params, "v")
            if asked and asked != str(opened.version):  # the page shows an older reading of the file
                changed = f"{viewer.path} changed since the page read it: reload the page"
                return self._send(409, _dumps({"error": changed, "version": opened.version}), _JSON, head)
            if route == "/api/info":
                return self._json(self._info(opened), head)
            if route == "/api/facets":
                return self._json(opened.index.facets(), head)
            if route == "/api/records":
                return self._json(self._records(opened, params), head)
            if route == "/api/export":
                return self._json(offer(opened.index, Query.from_params(params), _one(params, "to")), head)
            if route == "/api/shown.jsonl":
                return self._stream(shown_lines(opened.index, Query.from_params(params)), head)
            match = _RECORD.fullmatch(route)
            if match:
                return self._record(opened, int(match.group(1)), params, head)
            match = _IMAGE.fullmatch(route)
            if match:
                return self._image(opened, int(match.group(1)), params, head)
            self._send(404, b"not found\n", _TEXT, head)
        except UsageError as exc:
            self._send(400, _dumps({"error": exc.render(exc.param)}), _JSON, head)
        except Changed as exc:  # changed under a request, or cannot be read now: the next one reads it again
            self._send(503, _dumps({"error": str(exc)}), _JSON, head, retry_after=1)
        except KosmosError as exc:
            self._send(500, _dumps({"error": str(exc)}), "application/json", head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away

    # -- routes ----------------------------------------------------------------------------------------------
    def _info(self, opened: Opened) -> dict[str, Any]:
        task = opened.results.task
        return {
            "results": opened.results.path,
            "name": os.path.basename(os.path.normpath(opened.results.path)),
            "task": task.name,
            "detects": task.detects,
            "records": len(opened.results),
            "version": opened.version,
            "palette": palette(),
            "sizes": list(SIZES),
        }

    def _records(self, opened: Opened, params: dict[str, list[str]]) -> dict[str, Any]:
        query = Query.from_params(params)
        offset = _number(params, "offset", 0)
        limit = min(_number(params, "limit", 60), PAGE_LIMIT)
        results = opened.results
        total = len(results)
        if query == Query() and not opened.indexed:  # every record, as written: no index needed
            table = results.head(offset, limit)
            shown = cards(results.task, table, range(offset, offset + table.num_rows), query)
        else:
            rows = opened.index.order(query)
            total, shown = len(rows), opened.index.cards(rows[offset : offset + limit], query)
        return {
            "total": total,
            "records": len(results),
            "version": opened.version,
            "offset": offset,
            "query": query.params(),
            "cards": shown,
        }

    def _record(self, opened: Opened, row: int, params: dict[str, list[str]], head: bool) -> None:
        if row >= len(opened.results):
            return self._send(404, b"no such record\n", _TEXT, head)
        index = opened.index
        query = Query.from_params(params)
        rows = index.order(query)
        import numpy as np

        at = np.flatnonzero(rows == row)
        record = opened.results.record(row)
        self._json(
            {
                "record": record,
                "readable": readable(record),
                "card": index.cards([row], query)[0],
                "position": int(at[0]) if len(at) else None,
                "total": len(rows),
            },
            head,
        )

    def _image(self, opened: Opened, row: int, params: dict[str, list[str]], head: bool) -> None:
        size = _number(params, "size", 512)
        if size not in SIZES:
            raise UsageError(f"{{param}} {size}: one of {', '.join(map(str, SIZES))} (pixels a side)", param="size")
        if row >= len(opened.results):
            return self._send(404, b"not found\n", _TEXT, head)
        try:
            source = opened.results.source(opened.results.image_path(row))
            data = self.server.viewer.images.get(source, size)
        except Unshowable as exc:
            return self._send(422, f"{exc}\n".encode(), _TEXT, head)
        except Slow as exc:
            return self._send(503, f"{exc}\n".encode(), _TEXT, head, retry_after=5)
        self._send(200, data, "image/jpeg", head, cache=True)

    # -- answers ---------------------------------------------------------------------------------------------
    def _json(self, value: Any, head: bool) -> None:
        self._send(200, _dumps(value), _JSON, head)

    def _send(
        self, code: int, body: bytes, kind: str, head: bool, cache: bool = False, retry_after: int | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _stream(self, lines: Iterator[bytes], head: bool) -> None:
        """A download of unknown length, in chunks: one cut short (the results changed under it, the page went
        away) ends without the last, empty chunk, so it reads as cut short, never as a whole file."""
        first = next(lines, None)  # what fails at once is an error answer, not a download
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Disposition", f'attachment; filename="{SHOWN}"')
        self.send_header("Cache-Control", "no-store")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        try:
            for line in itertools.chain([] if first is None else [first], lines):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        except Changed as exc:
            self.close_connection = True  # no last chunk: the download is cut short
            log.warning("view: %s", exc)
            return
        except BaseException:
            self.close_connection = True
            raise
        self.wfile.write(b"0\r\n\r\n")


def readable(record: dict[str, Any]) -> dict[str, str]:
    """Fields of a record shown otherwise than as stored: `file_mtime` (seconds since 1970) as an ISO 8601 date, UTC."""
    out: dict[str, str] = {}
    mtime = record.get("file_mtime")
    if isinstance(mtime, (int, float)) and not isinstance(mtime, bool) and math.isfinite(mtime):
        try:
            when = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc)
        except (OverflowError, OSError, ValueError):
            return out
        out["file_mtime"] = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    return out


def host_allowed(header: str, bound: str, port: int) -> bool:
    """Whether a request's Host header names this server, listening on `bound`:`port`: a loopback IP literal
    (127.0.0.0/8, ::1) or `localhost` on a loopback address; that address on another one (any IP literal on
    0.0.0.0 or ::, where no name is known to be ours). Always with the port served (none only for port 80). A
    name that merely begins like an address (`127.0.0.1.attacker.example`) is not one."""
    header = header.strip().lower()
    given: str | None
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        given = rest[1:] if rest else None
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.IPv6Address(name)
        except ValueError:
            return False
    else:
        name, colon, rest = header.partition(":")
        given = rest if colon else None
        try:
            ip = ipaddress.IPv4Address(name)
        except ValueError:
            ip = None
    if not name:
        return False
    if given is None:
        if port != 80:
            return False
    elif not (given.isascii() and given.isdigit() and len(given) <= 5 and int(given) == port):
        return False
    bound = bound.strip("[]").lower()
    everywhere = bound in ("0.0.0.0", "::")
    if ip is not None:
        if everywhere or (_loopback(bound) and ip.is_loopback):
            return True
        try:
            return ip == ipaddress.ip_address(bound)
        except ValueError:
            return False  # listening on a name: the Host names it, not an address
    if name == "localhost":
        return everywhere or _loopback(bound)
    return name == bound


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
