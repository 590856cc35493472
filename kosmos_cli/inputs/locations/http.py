"""Fetching over http(s) with httpx: one client per process, shared by the loader threads, for kept connections,
redirects, proxies from the environment (`https_proxy`, `no_proxy`, ...) and TLS. What this module adds is policy:

- one deadline per try (`FetchOptions.timeout`) for connecting, the headers and the whole body together: the
  client's sockets wait in slices (`_Stream`), between which the try's deadline and its run's stop are looked at.
  A server that drips bytes fails at the deadline, and a fetch on a loader thread (`threads.ordered_map`) gives up
  within SLICE seconds of its run stopping (Ctrl-C, SIGTERM, an error), as do the waits between tries;
- a 429, a 5xx, a dropped or refused connection, a timeout and a body cut short are tried again, up to `retries`
  more times, after a backoff (0.5 s, 1 s, 2 s, ... with jitter, or the server's `Retry-After`, up to MAX_WAIT);
  any other answer fails at once. A kept connection the server closed as it was reused is replaced at no cost;
- redirects to http and https only, at most MAX_REDIRECTS; reading stops at the size cap.
What fails raises `Unreadable`: one line for the image's error record, with no URL's credentials in it.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from functools import cache, partial
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import IO, TypeVar
from urllib.parse import urljoin

import httpcore
import httpx

from ...errors import InputError
from ...run.threads import current_stop
from .base import URL_SCHEMES, FetchOptions, Unreadable, scheme

BACKOFF = 0.5  # seconds before the first retry; doubled for each one after
MAX_WAIT = 30.0  # the longest wait between tries, whatever Retry-After says
MAX_REDIRECTS = 10
KEPT = 32  # idle connections kept for the next fetch (the client's pool); 0: a connection per fetch
SLICE = 0.25  # the longest a read waits before the try's deadline and its run's stop are looked at again
CONNECT_SLICE = 1.0  # a connection not made in this long is started again, until the deadline
DRAIN = 1 << 16  # an error answer's body up to this is read, so its connection is kept
MAX_MANIFEST_BYTES = 2 << 30  # a manifest or table behind a URL is read into memory whole, up to this
TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
STOPPED = "not fetched: the run stopped"
_USER_AGENT = "kosmos-ground (+https://github.com/microsoft/unilm/tree/master/kosmos-2)"
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_ENVIRONMENT = (*_PROXIES, *(name.upper() for name in _PROXIES), "SSL_CERT_FILE", "SSL_CERT_DIR")  # a client reads
_CREDENTIALS = re.compile(r"(?<=://)[^/?#@\s]+@")
_NEVER = threading.Event()  # the stop of a fetch made outside the loaders: never set
T = TypeVar("T")


class _Transient(Exception):
    """A failure worth another try; `wait` is what the server asked for (Retry-After), if it did."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


def fetch_bytes(url: str, fetch: FetchOptions = FetchOptions(), backoff: float = BACKOFF) -> bytes:
    """The body of `url`: tried again after transient failures, refused past the size cap. Unreadable otherwise."""
    return _retrying(lambda this: _fetch_once(url, fetch), fetch, backoff)


def open_response(url: str, fetch: FetchOptions = FetchOptions(), backoff: float = BACKOFF) -> IO[bytes]:
    """The body of `url` as a file, read as it comes (a WebDataset shard streamed): opening is tried as `fetch_bytes`
    tries; then each read waits `fetch.timeout` at most, gives up when the run that opened it stops (an OSError, as a
    broken connection raises), and closing the file closes the answer."""

    def reading(this: _Try) -> _Body:
        return _Body(_answer(url, fetch), dataclasses.replace(this, deadline=math.inf))

    return io.BufferedReader(_retrying(reading, fetch, backoff), 1 << 16)


def open_url(url: str, mode: str = "rb", fetch: FetchOptions = FetchOptions(), **text):
    """A manifest or table behind an http(s) URL, as an open file (`read_manifest`'s opener): fetched whole into
    memory, up to MAX_MANIFEST_BYTES, with the fetch's timeout and retries. InputError, in one line, when it cannot
    be read (a manifest that cannot be read stops the run, as a missing local one does)."""
    try:
        data = fetch_bytes(url, dataclasses.replace(fetch, max_bytes=MAX_MANIFEST_BYTES))
    except Unreadable as exc:
        raise InputError(f"cannot read manifest {redacted(url)}: {exc}: check the URL") from None
    return io.BytesIO(data) if "b" in mode else io.TextIOWrapper(io.BytesIO(data), **text)


def redacted(text: str) -> str:
    """`text` with the credentials of any URL in it (`user:password@`) left out."""
    return _CREDENTIALS.sub("***@", text)


def _retrying(attempt: Callable[[_Try], T], fetch: FetchOptions, backoff: float) -> T:
    """`attempt(this try)`, called again after a transient failure, up to `fetch.retries` more times, with backoff."""
    stop = current_stop() or _NEVER
    for tried in range(fetch.retries + 1):
        this = _Try(time.monotonic() + fetch.timeout, stop, fetch)
        try:
            with this.current():
                return attempt(this)
        except httpx.HTTPError as exc:
            failure = this.failure(exc)
        except (_Transient, Unreadable) as exc:
            failure = exc
        if not isinstance(failure, _Transient) or tried == fetch.retries:
            tries = f" (after {tried + 1} tries)" if tried and isinstance(failure, _Transient) else ""
            raise Unreadable(redacted(f"{failure}{tries}")) from None
        wait = failure.wait if failure.wait is not None else backoff * 2**tried * (1 + random.random() / 4)
        if stop.wait(min(wait, MAX_WAIT)):
            raise Unreadable(STOPPED) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _fetch_once(url: str, fetch: FetchOptions) -> bytes:
    response = _answer(url, fetch)
    too_large = Unreadable(f"larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb): left unread")
    expected = _length(response)
    try:
        if expected > fetch.max_bytes:
            raise too_large
        chunks, got = [], 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            got += len(chunk)
            if got > fetch.max_bytes:
                raise too_large
        return b"".join(chunks)
    except httpx.RemoteProtocolError:  # the server closed before the length it announced
        came = f"{response.num_bytes_downloaded}" + (f" of {expected}" if expected >= 0 else "")
        raise _Transient(f"the connection closed before the whole image came ({came} bytes)") from None
    finally:
        response.close()


def _answer(url: str, fetch: FetchOptions) -> httpx.Response:
    """The 2xx answer for `url`, redirects followed, its body unread (the caller closes it). Unreadable for a status
    no retry helps, _Transient for one that may; httpx's errors from the wire."""
    client, this = _client(), _CURRENT.attempt
    try:
        request = client.build_request("GET", url, timeout=fetch.timeout)
    except httpx.InvalidURL as exc:
        raise Unreadable(f"not a URL that can be fetched: {exc}") from None
    if not request.url.host:
        raise Unreadable(f"not a URL that can be fetched: {url}")
    while True:
        this.connected = False
        try:
            response = client.send(request, stream=True)
            break
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if this.connected:  # else it was sent on a kept connection the server had closed: again, on another
                raise
    if response.is_success:
        return response
    try:
        if 0 <= _length(response) <= DRAIN:
            response.read()  # so its connection is kept
    finally:
        response.close()
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    if response.status_code in TRANSIENT:
        raise _Transient(status, _retry_after(response.headers.get("Retry-After")))
    raise Unreadable(status)


def _length(response: httpx.Response) -> int:
    """The length the answer's body is announced to have; -1 when it is not."""
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else -1


def _http_only(response: httpx.Response) -> None:
    """The client's hook on each answer: a redirect to anything but http(s) (file://, ftp://) is refused."""
    if response.has_redirect_location:
        target = urljoin(str(response.request.url), response.headers["Location"])
        if scheme(target) not in URL_SCHEMES:
            raise Unreadable(f"redirected to {target}: only http and https are followed")


def _client() -> httpx.Client:
    """The process's client, shared by its threads, for KEPT and the environment (proxies, trusted certificates) as
    they are now: made again when they change, or in a forked child (the parent's connections are the parent's)."""
    environment = tuple(os.environ.get(name) for name in _ENVIRONMENT)
    try:
        with _MAKING:
            return _client_for(KEPT, environment, os.getpid())
    except (ImportError, ValueError) as exc:  # a SOCKS proxy without socksio, a proxy URL of another scheme
        why = redacted(str(exc)).rstrip(".")
        raise InputError(f"cannot use the proxy the environment names: {why}: fix or unset it") from None


@cache
def _client_for(kept: int, environment: tuple[str | None, ...], pid: int) -> httpx.Client:
    client = httpx.Client(
        headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"},
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # a fetch carries no cookie of another one
        verify=ssl.create_default_context(),  # the system's certificates (or SSL_CERT_FILE's), as urllib trusts
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=kept, keepalive_expiry=None),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        event_hooks={"response": [_http_only]},
        trust_env=True,
    )
    for transport in (client._transport, *client._mounts.values()):  # the direct one and the proxies'
        if isinstance(transport, httpx.HTTPTransport):  # httpx takes no network backend yet (encode/httpx#3749)
            transport._pool._network_backend = _Backend()
    return client


_MAKING = threading.Lock()


# -- deadlines and stops -------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class _Try:
    """One try of a fetch: its deadline, its run's stop, and whether it made a connection."""

    deadline: float
    stop: threading.Event
    fetch: FetchOptions
    connected: bool = False

    @contextmanager
    def current(self) -> Iterator[None]:
        """This try is the one that bounds the waits of this thread's sockets, in the block."""
        before, _CURRENT.attempt = _CURRENT.attempt, self
        try:
            yield
        finally:
            _CURRENT.attempt = before

    def failure(self, exc: httpx.HTTPError) -> Exception:
        """What a try that broke with `exc` fails with, told by why it broke."""
        if self.stop.is_set():
            return Unreadable(STOPPED)
        if isinstance(exc, httpx.TimeoutException) or time.monotonic() >= self.deadline:
            return _Transient(f"timed out after {self.fetch.timeout:g} s (--fetch-timeout)")
        if isinstance(exc, httpx.TooManyRedirects):
            return Unreadable(f"redirected more than {MAX_REDIRECTS} times")
        if isinstance(exc, httpx.ConnectError):  # no retry helps a wrong host name or an untrusted certificate
            final = isinstance(_cause(exc), (socket.gaierror, ssl.SSLCertVerificationError))
            return (Unreadable if final else _Transient)(f"cannot connect: {_why(exc)}")
        return _Transient(f"the connection failed: {_why(exc)}")


class _Current(threading.local):
    attempt = _Try(math.inf, _NEVER, FetchOptions())  # outside a try: the client's timeouts only


_CURRENT = _Current()


def _waiting(wait: Callable[[float | None], T], timeout: float | None, step: float, expired: type[Exception]) -> T:
    """`wait(seconds)`, again each time a `step` of it passes, until it returns, `timeout` has passed, the current
    try's deadline has, or its run stopped: `expired` then."""
    this = _CURRENT.attempt
    end = min(this.deadline, math.inf if timeout is None else time.monotonic() + timeout)
    while (left := end - time.monotonic()) > 0 and not this.stop.is_set():
        try:
            return wait(min(left, step) if min(left, step) < math.inf else None)
        except httpcore.TimeoutException:
            continue
    raise expired("timed out")


class _Backend(httpcore.SyncBackend):
    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        _CURRENT.attempt.connected = True
        connect = partial(super().connect_tcp, host, port, local_address=local_address, socket_options=socket_options)
        return _Stream(_waiting(connect, timeout, CONNECT_SLICE, httpcore.ConnectTimeout))


class _Stream:
    """httpcore's socket, its reads in slices (`_waiting`), its TLS handshake bounded by the try's deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def __getattr__(self, name: str):  # write (a request: the socket's buffer takes it), close, get_extra_info
        return getattr(self._stream, name)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return _waiting(partial(self._stream.read, max_bytes), timeout, SLICE, httpcore.ReadTimeout)

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> _Stream:
        start = partial(self._stream.start_tls, ssl_context, server_hostname)
        return _Stream(_waiting(start, timeout, math.inf, httpcore.ConnectTimeout))


class _Body(io.RawIOBase):
    """An answer's body as a raw file (`open_response`), its reads bounded by `this` try."""

    def __init__(self, response: httpx.Response, this: _Try):
        self._response, self._this, self._chunks, self._rest = response, this, response.iter_bytes(), memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._rest:
            try:
                with self._this.current():
                    self._rest = memoryview(next(self._chunks, b""))
            except httpx.HTTPError as exc:
                raise OSError(str(self._this.failure(exc))) from None
        size = min(len(buffer), len(self._rest))
        buffer[:size], self._rest = self._rest[:size], self._rest[size:]
        return size

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


# -- what is said --------------------------------------------------------------------------------------------------
def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date; None when absent or unreadable."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _cause(exc: BaseException) -> BaseException:
    """What `exc` was raised for, at the bottom: httpx's error is raised from httpcore's, which holds the socket's."""
    while (inner := exc.__cause__ or next((a for a in exc.args if isinstance(a, BaseException)), None)) is not None:
        exc = inner
    return exc


def _why(exc: BaseException) -> str:
    reason = _cause(exc)
    return reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason) or type(reason).__name__
