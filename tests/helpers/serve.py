"""A real HTTP server on 127.0.0.1 in the test process, serving files and misbehaving on purpose.

    with ImageServer() as server:
        server.files["/a.png"] = png_bytes
        url = server.url("/a.png")

Besides `files` (path -> bytes, 404 for any other path) it has routes that fail the way the web does:
- `/flaky/N/<path>`: 503 (Retry-After: 0) for the first N requests of that URL, then the file;
- `/busy/<path>`: 429 with Retry-After: 0 once, then the file;
- `/slow/<seconds>/<path>`: waits, then the file;
- `/cut/<path>`: announces the whole length, sends half, closes;
- `/moved/<path>`: 302 to the file;
- `/nolength/<path>`: the file without Content-Length (read to the close).
`hits[path]` counts the requests of each path as asked, so a test can tell a refetch from a resume.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter


class ImageServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                with server._lock:
                    server.hits[self.path] += 1
                    count = server.hits[self.path]
                try:
                    server._answer(self, self.path, count)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a size cap): fine
                    pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, handler, path: str, count: int) -> None:
        parts = path.split("/")
        if path.startswith("/flaky/") and count <= int(parts[2]):
            return _status(handler, 503, {"Retry-After": "0"})
        if path.startswith("/flaky/"):
            return self._answer(handler, "/" + "/".join(parts[3:]), count)
        if path.startswith("/busy/") and count == 1:
            return _status(handler, 429, {"Retry-After": "0"})
        if path.startswith("/busy/"):
            return self._answer(handler, "/" + "/".join(parts[2:]), count)
        if path.startswith("/slow/"):
            time.sleep(float(parts[2]))
            return self._answer(handler, "/" + "/".join(parts[3:]), count)
        if path.startswith("/moved/"):
            return _status(handler, 302, {"Location": "/" + "/".join(parts[2:])})
        if path.startswith("/cut/"):
            body = self.files.get("/" + "/".join(parts[2:]))
            if body is None:
                return _status(handler, 404)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            return None
        if path.startswith("/nolength/"):
            body = self.files.get("/" + "/".join(parts[2:]))
            if body is None:
                return _status(handler, 404)
            handler.send_response(200)
            handler.end_headers()
            handler.wfile.write(body)
            return None
        body = self.files.get(path)
        if body is None:
            return _status(handler, 404)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        handler.wfile.write(body)
        return None


def _status(handler, code: int, headers: dict[str, str] | None = None) -> None:
    handler.send_response(code)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
