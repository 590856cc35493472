"""The viewer's HTTP handler: the routes of the page, its small JSON API over the index, the images and the download
of what is shown. Standard library only.

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
results name can be read (any other path, `..` or an absolute path is a 404). It only reads: GET and HEAD. A request
is answered only when guard.py lets it through; each answer carries guard.py's headers.
"""

from __future__ import annotations

import datetime
import http.server
import itertools
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import parse_qs

from ..errors import KosmosError, UsageError
from .current import Opened
from .export import SHOWN, offer, shown_lines
from .guard import SECURITY_HEADERS, refused
from .index import Query, cards, palette
from .reading import Changed
from .thumbs import SIZES, Slow, Thumbnails, Unshowable

log = logging.getLogger("kosmos_cli")

PAGE_LIMIT = 200
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/view.js": ("view.js", "text/javascript; charset=utf-8"),
    "/static/view.css": ("view.css", "text/css; charset=utf-8"),
}
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_IMAGE = re.compile(r"/image/([0-9]{1,12})")
_RECORD = re.compile(r"/api/record/([0-9]{1,12})")


class Served(Protocol):
    """What the handler needs of the viewer it answers for (server.Viewer)."""

    host: str  # the address listened on
    path: str  # the results file
    images: Thumbnails

    @property
    def port(self) -> int: ...
    def current(self) -> Opened: ...
    def static(self, name: str) -> bytes: ...


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    viewer: Served


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server
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
            refusal = refused(self.path, self.headers.get("Host") or "", viewer.host, viewer.port)
            if refusal is not None:
                return self._send(*refusal, _TEXT, head)
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
