"""`kosmos view`'s server: the viewer started (`start`, on a thread of its own) or served until Ctrl-C (`serve`),
bound to its address. Standard library only.

Bound to 127.0.0.1 by default; without a port given, the first free one from 8000 on. Each request is answered on
a thread of its own (handler.py: the page, the JSON API, the images, the download of what is shown), and only when
it passes guard.py (the request line in origin form, a Host naming this server); an image is waited for a bounded
time (thumbs.py), so a slow one holds up no other request.
"""

from __future__ import annotations

import http.server
import os
import socket
import sys
import threading
from importlib import resources

from ..errors import UsageError
from .current import Current, Opened
from .guard import loopback
from .handler import Handler, Server
from .reading import Results
from .thumbs import DEFAULT_CACHE_MB, Thumbnails

DEFAULT_PORT = 8000
PORTS_TRIED = 20  # without a port given: the first free one from DEFAULT_PORT on


class Viewer:
    """A running viewer: `url`, and `close()` to stop it. Made by `start`. Its results are read again once the file
    changed (current.py)."""

    def __init__(self, results: str, host: str, port: int | None, cache_mb: int, quiet: bool = True):
        self.path = results
        self._current = Current(results, quiet)  # InputError before anything listens
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
        """The results as they are now (current.Current.get): read again when the file changed since it was read."""
        return self._current.get()

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
            if not loopback(host):
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


def _bind(host: str, port: int | None) -> http.server.ThreadingHTTPServer:
    tried = [port] if port is not None else list(range(DEFAULT_PORT, DEFAULT_PORT + PORTS_TRIED))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_type = type("Server", (Server,), {"address_family": family})
    last: OSError | None = None
    number = tried[0]
    for number in tried:
        try:
            return server_type((host, number), Handler)
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
