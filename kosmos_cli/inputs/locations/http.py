"""Fetching an image over http(s), with the standard library only (http.client), on kept connections.

Connections are kept open between fetches (HTTP keep-alive): one pool, shared by the loader threads, keeps at most
`POOL.size` idle connections (the oldest closed first) and hands a thread one to the same server when it has one, so
a link list of a thousand images from one host costs a few TCP and TLS handshakes, not a thousand. A connection the
server closed meanwhile is noticed and replaced, at no try's cost. Proxies are taken from the environment
(`https_proxy`, `http_proxy`, `no_proxy`), as urllib takes them.

Each try of a fetch has one deadline (`FetchOptions.timeout`) for connecting, the answer's headers and its whole
body together: a server that drips bytes fails at the deadline, however it drips them. Redirects are followed (to
http and https only, at most MAX_REDIRECTS), and reading stops at the size cap. A 429, a 5xx, a dropped or refused
connection, a timeout and a body cut short are tried again, up to `retries` more times, after an exponential
backoff (0.5 s, 1 s, 2 s, ... with jitter, or the server's `Retry-After` when it says, up to MAX_WAIT); any other
answer (404, 403, ...) fails at once. What fails raises `Unreadable` with one line for the image's error record.

A fetch on a loader thread (`ordered.ordered_map`) gives up within WATCH_SLICE seconds when the run stops (Ctrl-C,
SIGTERM, SIGHUP, an error): one watcher thread shuts the socket of every fetch past its deadline or whose run has
stopped, so no read stays blocked, and the waits between tries end at once.
"""

from __future__ import annotations

import base64
import http.client
import io
import math
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cache
from typing import IO
from urllib.parse import quote, unquote, urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

from ...errors import InputError
from ...run.threads import current_stop
from .base import URL_SCHEMES, FetchOptions, Unreadable, scheme

BACKOFF = 0.5  # seconds before the first retry; doubled for each one after
MAX_WAIT = 30.0  # the longest wait between tries, whatever Retry-After says
MAX_REDIRECTS = 10
CHUNK = 1 << 16
DRAIN = 1 << 16  # an error or redirect answer's body up to this is read, so its connection can be kept
CONNECT_SLICE = 2.0  # a connection not made in this long is started again (until the deadline): a stop is noticed
WATCH_SLICE = 0.2  # how often the watcher looks at the fetches in flight
TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
STOPPED = "not fetched: the run stopped"
_USER_AGENT = "kosmos-ground (+https://github.com/microsoft/unilm/tree/master/kosmos-2)"
_NEVER = threading.Event()  # the stop of a fetch made outside the loaders: never set


class _Transient(Exception):
    """A failure worth another try; `wait` is what the server asked for (Retry-After), if it did."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


def fetch_bytes(url: str, fetch: FetchOptions = FetchOptions(), backoff: float = BACKOFF) -> bytes:
    """The body of `url`: tried again after transient failures, refused past the size cap. Unreadable otherwise."""
    return _retrying(lambda stop: _fetch_once(url, fetch, stop), fetch, backoff)


def open_response(url: str, fetch: FetchOptions = FetchOptions(), backoff: float = BACKOFF) -> IO[bytes]:
    """The body of `url` as a file, to read as it comes (a WebDataset shard streamed): opening is tried again as
    `fetch_bytes` tries; then each read waits `fetch.timeout` at most, and what breaks while reading is the caller's
    to handle. It has a connection of its own, closed with it."""
    return _retrying(lambda stop: _open_once(url, fetch, stop), fetch, backoff)


def _retrying(attempt, fetch: FetchOptions, backoff: float):
    """`attempt(stop)`, called again after a _Transient failure, up to `fetch.retries` more times, with backoff."""
    stop = current_stop() or _NEVER
    for tried in range(fetch.retries + 1):
        try:
            return attempt(stop)
        except _Transient as exc:
            if tried == fetch.retries:
                tries = f" (after {tried + 1} tries)" if tried else ""
                raise Unreadable(f"{exc}{tries}") from None
            wait = exc.wait if exc.wait is not None else backoff * 2**tried * (1 + random.random() / 4)
            if stop.wait(min(wait, MAX_WAIT)):
                raise Unreadable(STOPPED) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _fetch_once(url: str, fetch: FetchOptions, stop: threading.Event) -> bytes:
    with _WATCH.guarding(time.monotonic() + fetch.timeout, stop) as guard:
        try:
            route, conn, answer = _answer(url, fetch, guard)
            try:
                body = _read_body(answer, fetch, guard)
            except BaseException:
                conn.close()
                raise
            _done_with(route, conn, answer, everything_read=True)
            return body
        except (OSError, http.client.HTTPException) as exc:
            raise guard.failure(fetch, exc) from None


def _open_once(url: str, fetch: FetchOptions, stop: threading.Event) -> IO[bytes]:
    guard = _Guard(time.monotonic() + fetch.timeout, stop)
    _WATCH.add(guard)
    try:
        _, conn, answer = _answer(url, fetch, guard, pooled=False)
    except (OSError, http.client.HTTPException) as exc:
        _WATCH.discard(guard)
        raise guard.failure(fetch, exc) from None
    except BaseException:
        _WATCH.discard(guard)
        raise
    guard.deadline = math.inf  # reading is the caller's, at its pace; the socket's timeout bounds each read
    conn.close()  # the answer holds the socket until it is closed
    return io.BufferedReader(_Stream(answer, guard), CHUNK)


def _answer(url: str, fetch: FetchOptions, guard: _Guard, pooled: bool = True):
    """(route, connection, answer) for `url`, redirects followed: an answer with a 2xx status, its body unread.
    Unreadable for a status no retry helps, _Transient for one that may; OSError or HTTPException from the wire."""
    for _ in range(MAX_REDIRECTS + 1):
        route = _Route.of(url)
        conn, answer = _exchange(route, fetch, guard, pooled)
        if 200 <= answer.status < 300:
            return route, conn, answer
        location = answer.getheader("Location") if answer.status in REDIRECTS else None
        refused = None if location else _refusal(answer)
        _done_with(route, conn, answer, everything_read=False, pooled=pooled)
        if refused is not None:
            raise refused
        url = urljoin(url, location)
        if scheme(url) not in URL_SCHEMES:
            raise Unreadable(f"redirected to {url}: only http and https are followed")
    raise Unreadable(f"redirected more than {MAX_REDIRECTS} times")


def _exchange(route: _Route, fetch: FetchOptions, guard: _Guard, pooled: bool):
    """A GET of `route` on a kept connection to its server, or a new one: (connection, answer with its headers)."""
    conn = POOL.take(route.key) if pooled else None
    while True:
        reused = conn is not None
        if conn is None:
            conn = _connect(route, fetch, guard)
        try:
            guard.watch(conn.sock, fetch)
            conn.sock.settimeout(fetch.timeout)  # a backstop: the watcher ends the fetch at its deadline
            conn.request("GET", route.target, headers=route.headers)
            return conn, conn.getresponse()
        except ConnectionError:  # RemoteDisconnected too
            conn.close()
            if not reused or guard.ended:
                raise
            conn = None  # the server closed a kept connection in the meantime: once more, on a new one
        except BaseException:
            conn.close()
            raise


def _connect(route: _Route, fetch: FetchOptions, guard: _Guard) -> http.client.HTTPConnection:
    """A new connection to `route`'s server (or its proxy), in slices of CONNECT_SLICE until the deadline."""
    while True:
        guard.check(fetch)
        try:
            return route.connect(min(guard.left(), CONNECT_SLICE))
        except TimeoutError:
            continue  # this slice ran out: again, unless the deadline passed or the run stopped
        except (socket.gaierror, ssl.SSLCertVerificationError) as exc:
            raise Unreadable(f"cannot connect: {_why(exc)}") from None  # no retry helps: wrong host or certificate
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"cannot connect: {_why(exc)}") from None
        except ValueError as exc:  # a host the socket layer cannot take
            raise Unreadable(f"not a URL that can be fetched: {exc}") from None


def _read_body(answer: http.client.HTTPResponse, fetch: FetchOptions, guard: _Guard) -> bytes:
    expected = answer.length  # None when chunked or read to the close
    if expected is not None and expected > fetch.max_bytes:
        raise Unreadable(_too_large(fetch))
    chunks, got = [], 0
    while True:
        try:
            chunk = answer.read1(CHUNK)  # what has come, at most one read of the socket: the deadline holds
        except http.client.IncompleteRead as exc:
            guard.check(fetch)
            raise _Transient(_cut_short(got + len(exc.partial), expected)) from None
        guard.check(fetch)
        if not chunk:
            break
        got += len(chunk)
        if got > fetch.max_bytes:
            raise Unreadable(_too_large(fetch))
        chunks.append(chunk)
    if expected is not None and got < expected:
        raise _Transient(_cut_short(got, expected))
    return b"".join(chunks)


def _done_with(route: _Route, conn, answer, everything_read: bool, pooled: bool = True) -> None:
    """Back to the pool when the server keeps the connection and the answer is read to its end (a short one is read
    here); closed otherwise."""
    if not everything_read and answer.length is not None and answer.length <= DRAIN and not answer.will_close:
        try:
            answer.read()
            everything_read = True
        except (OSError, http.client.HTTPException):
            pass
    answer.close()
    if pooled and everything_read and not answer.will_close and conn.sock is not None:
        POOL.give(route.key, conn)
    else:
        conn.close()


def _refusal(answer: http.client.HTTPResponse) -> Exception:
    status = f"HTTP {answer.status} {answer.reason}".rstrip()
    if answer.status in TRANSIENT:
        return _Transient(status, _retry_after(answer.getheader("Retry-After")))
    return Unreadable(status)


# -- where a request goes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Route:
    """Where the request for a URL goes: its server, or the proxy the environment names for it."""

    scheme: str
    host: str
    port: int
    target: str  # what the request line names: the path and query, or the whole URL through an http proxy
    headers: dict[str, str]
    proxy: tuple[str, int] | None = None
    proxy_headers: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple:
        """Connections with the same key can serve each other's requests."""
        return self.scheme, self.host, self.port, self.proxy, self.proxy_headers

    @classmethod
    def of(cls, url: str) -> _Route:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # a port that is no number, a bracket unclosed
            raise Unreadable(f"not a URL that can be fetched: {exc}") from None
        kind, host = parts.scheme.lower(), parts.hostname
        if kind not in URL_SCHEMES or not host:
            raise Unreadable(f"not a URL that can be fetched: {url}")
        port = port or (443 if kind == "https" else 80)
        path = parts.path or "/"
        target = _ascii(path + (f"?{parts.query}" if parts.query else ""))
        headers = {"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"}
        proxy = _proxy(kind, parts.netloc)
        if proxy is None:
            return cls(kind, host, port, target, headers)
        address, credentials = proxy
        if kind == "http":  # the proxy is asked for the whole URL
            whole = f"http://{parts.netloc.rpartition('@')[2]}{target}"
            return cls(kind, host, port, whole, {**headers, **dict(credentials)}, address)
        return cls(kind, host, port, target, headers, address, credentials)  # https: a tunnel through the proxy

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        host, port = self.proxy or (self.host, self.port)
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_tls())
            if self.proxy:
                conn.set_tunnel(self.host, self.port, headers=dict(self.proxy_headers))
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        return conn


def _ascii(target: str) -> str:
    """A request target with what HTTP cannot carry as is (spaces, non-ASCII letters) percent-encoded."""
    if target.isascii() and target.isprintable() and " " not in target:
        return target
    return "".join(c if c.isascii() and c.isprintable() and c != " " else quote(c) for c in target)


def _proxy(kind: str, netloc: str) -> tuple[tuple[str, int], tuple[tuple[str, str], ...]] | None:
    """(proxy host and port, its Proxy-Authorization header if it has credentials) for a URL, from the environment
    as urllib reads it (`https_proxy`, `http_proxy`, `no_proxy`); None to go to the server itself."""
    address = getproxies().get(kind)
    if not address or proxy_bypass(netloc):
        return None
    parts = urlsplit(address if "://" in address else f"http://{address}")
    if not parts.hostname:
        return None
    credentials: tuple[tuple[str, str], ...] = ()
    if parts.username:
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        credentials = (("Proxy-Authorization", "Basic " + base64.b64encode(user.encode()).decode("ascii")),)
    return (parts.hostname, parts.port or 80), credentials


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every connection (loading the trusted certificates costs more than a handshake)."""
    return ssl.create_default_context()


# -- kept connections --------------------------------------------------------------------------------------------
class Pool:
    """Idle connections kept open for the next fetch from the same server, at most `size` in all (the oldest is
    closed first); shared by the loader threads, each connection used by one at a time. `size` 0: a connection per
    fetch (benchmarks/bench_sources.py measures both)."""

    def __init__(self, size: int):
        self.size = size
        self._idle: deque[tuple[tuple, http.client.HTTPConnection]] = deque()
        self._lock = threading.Lock()

    def take(self, key: tuple) -> http.client.HTTPConnection | None:
        """The most recently kept connection for `key` that the server has not closed meanwhile; None if none."""
        while True:
            with self._lock:
                found = next((i for i in range(len(self._idle) - 1, -1, -1) if self._idle[i][0] == key), None)
                if found is None:
                    return None
                conn = self._idle[found][1]
                del self._idle[found]
            if not _dropped(conn):
                return conn
            conn.close()

    def give(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((key, conn))
            extra = [self._idle.popleft()[1] for _ in range(len(self._idle) - self.size)]
        for old in extra:
            old.close()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can no longer carry a request: the server closed it (or sent what nobody asked
    for), which makes its socket readable."""
    try:
        return conn.sock is None or bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


POOL = Pool(32)


# -- deadlines and stops -----------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Guard:
    """One fetch's deadline and stop, and the socket it reads from: what the watcher shuts to end the fetch."""

    deadline: float
    stop: threading.Event
    sock: socket.socket | None = None
    ended: bool = False  # the watcher shut the socket (past the deadline, or the run stopped)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket, fetch: FetchOptions) -> None:
        self.sock = sock
        self.check(fetch)  # the watcher may have come by just before

    def check(self, fetch: FetchOptions) -> None:
        """Raises when the run stopped or the deadline passed."""
        if self.stop.is_set():
            raise Unreadable(STOPPED)
        if self.ended or self.left() <= 0:
            raise _Transient(_timed_out(fetch))

    def failure(self, fetch: FetchOptions, exc: BaseException) -> Exception:
        """What a fetch that broke with `exc` fails with, told by why it broke."""
        if self.stop.is_set():
            return Unreadable(STOPPED)
        if self.ended or self.left() <= 0 or isinstance(exc, TimeoutError):
            return _Transient(_timed_out(fetch))
        return _Transient(f"the connection failed: {_why(exc)}")

    def end_if_due(self, now: float) -> None:
        if not self.ended and (self.stop.is_set() or now >= self.deadline) and self.sock is not None:
            self.ended = True
            try:
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # the blocked read returns at once (TLS too)
            except OSError:
                pass


class _Watch:
    """One thread that ends the fetches past their deadline or whose run stopped, by shutting their sockets; it
    sleeps while no fetch is in flight."""

    def __init__(self) -> None:
        self._guards: set[_Guard] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, guard: _Guard) -> None:
        with self._changed:
            self._guards.add(guard)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kosmos-fetch-watch", daemon=True)
                self._thread.start()
            self._changed.notify()

    def discard(self, guard: _Guard) -> None:
        with self._changed:
            self._guards.discard(guard)

    @contextmanager
    def guarding(self, deadline: float, stop: threading.Event) -> Iterator[_Guard]:
        guard = _Guard(deadline, stop)
        self.add(guard)
        try:
            yield guard
        finally:
            self.discard(guard)

    def _run(self) -> None:
        with self._changed:
            while True:
                self._changed.wait(WATCH_SLICE if self._guards else None)
                now = time.monotonic()
                for guard in self._guards:
                    guard.end_if_due(now)


_WATCH = _Watch()


class _Stream(io.RawIOBase):
    """An answer's body read as it comes, on a connection of its own; closing it (or the run stopping) ends it."""

    def __init__(self, answer: http.client.HTTPResponse, guard: _Guard):
        self._answer, self._guard = answer, guard

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._answer.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            _WATCH.discard(self._guard)
            self._answer.close()
        super().close()


# -- what is said --------------------------------------------------------------------------------------------------
def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _why(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _timed_out(fetch: FetchOptions) -> str:
    return f"timed out after {fetch.timeout:g} s (--fetch-timeout)"


def _too_large(fetch: FetchOptions) -> str:
    return f"larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb): left unread"


def _cut_short(got: int, expected: int | None) -> str:
    of = f" of {expected}" if expected is not None else ""
    return f"the connection closed before the whole image came ({got}{of} bytes)"


MAX_MANIFEST_BYTES = 2 << 30  # a manifest or table behind a URL is read into memory whole, up to this


def open_url(url: str, mode: str = "rb", fetch: FetchOptions = FetchOptions(), **text):
    """A manifest or table behind an http(s) URL, as an open file (`read_manifest`'s opener): fetched whole into
    memory, up to MAX_MANIFEST_BYTES, with the fetch's timeout and retries. InputError, in one line, when it cannot
    be read (a manifest that cannot be read stops the run, as a missing local one does)."""
    import dataclasses

    try:
        data = fetch_bytes(url, dataclasses.replace(fetch, max_bytes=MAX_MANIFEST_BYTES))
    except Unreadable as exc:
        raise InputError(f"cannot read manifest {url}: {exc}: check the URL") from None
    if "b" in mode:
        return io.BytesIO(data)
    return io.TextIOWrapper(io.BytesIO(data), **text)
