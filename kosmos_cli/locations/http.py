"""Fetching an image over http(s), with the standard library only (urllib).

Each fetch has one deadline (`FetchOptions.timeout`, for connecting and the whole body together, so a server that
drips bytes cannot hold a loader forever), follows redirects, and stops reading at the size cap. A 429, a 5xx, a
dropped or refused connection, a timeout and a body cut short are tried again, up to `retries` more times, after
an exponential backoff (0.5 s, 1 s, 2 s, ... with jitter, or the server's `Retry-After` when it says, up to
MAX_WAIT); any other answer (404, 403, ...) fails at once. What fails raises `Unreadable` with one line for the
image's error record.
"""

from __future__ import annotations

import http.client
import random
import socket
import ssl
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime

from ..errors import InputError
from .base import FetchOptions, Unreadable

BACKOFF = 0.5  # seconds before the first retry; doubled for each one after
MAX_WAIT = 30.0  # the longest wait between tries, whatever Retry-After says
CHUNK = 1 << 16
TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
_USER_AGENT = "kosmos-ground (+https://github.com/microsoft/unilm/tree/master/kosmos-2)"


class _Transient(Exception):
    """A failure worth another try; `wait` is what the server asked for (Retry-After), if it did."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


def fetch_bytes(url: str, fetch: FetchOptions = FetchOptions(), backoff: float = BACKOFF) -> bytes:
    """The body of `url`: tried again after transient failures, refused past the size cap. Unreadable otherwise."""
    return _retrying(lambda: _fetch_once(url, fetch), fetch, backoff)


def open_response(url: str, fetch: FetchOptions = FetchOptions(), backoff: float = BACKOFF):
    """The response for `url`, its body left to the caller to read as it comes (a WebDataset shard streamed):
    opening is tried again as `fetch_bytes` tries; what breaks later, while reading, is the caller's to handle."""
    return _retrying(lambda: _open(url, fetch), fetch, backoff)


def _retrying(attempt, fetch: FetchOptions, backoff: float):
    """`attempt()`, called again after a _Transient failure, up to `fetch.retries` more times, with backoff."""
    for tried in range(fetch.retries + 1):
        try:
            return attempt()
        except _Transient as exc:
            if tried == fetch.retries:
                tries = f" (after {tried + 1} tries)" if tried else ""
                raise Unreadable(f"{exc}{tries}") from None
            wait = exc.wait if exc.wait is not None else backoff * 2**tried * (1 + random.random() / 4)
            time.sleep(min(wait, MAX_WAIT))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _fetch_once(url: str, fetch: FetchOptions) -> bytes:
    deadline = time.monotonic() + fetch.timeout
    try:
        with _open(url, fetch) as answer:
            length = answer.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > fetch.max_bytes:
                raise Unreadable(_too_large(fetch))
            return _read_body(answer, expected, deadline, fetch)
    except (TimeoutError, socket.timeout):
        raise _Transient(_timed_out(fetch)) from None
    except (ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(f"the connection failed: {_why(exc)}") from None


def _open(url: str, fetch: FetchOptions):
    """The response for `url` once; a failure as Unreadable, or _Transient when another try may do better."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"})
    try:
        return urllib.request.urlopen(request, timeout=fetch.timeout)
    except urllib.error.HTTPError as exc:
        status = f"HTTP {exc.code} {exc.reason}".rstrip()
        if exc.code in TRANSIENT:
            raise _Transient(status, _retry_after(exc.headers.get("Retry-After"))) from None
        raise Unreadable(status) from None
    except urllib.error.URLError as exc:
        reason: object = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _Transient(_timed_out(fetch)) from None
        if isinstance(reason, (socket.gaierror, ssl.SSLCertVerificationError)) or isinstance(reason, str):
            raise Unreadable(f"cannot connect: {_why(reason)}") from None  # no retry helps: wrong host or certificate
        raise _Transient(f"cannot connect: {_why(reason)}") from None
    except (TimeoutError, socket.timeout):
        raise _Transient(_timed_out(fetch)) from None
    except (ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(f"the connection failed: {_why(exc)}") from None
    except ValueError as exc:  # a URL urllib cannot take (no host, bad port)
        raise Unreadable(f"not a URL that can be fetched: {exc}") from None


def _read_body(answer, expected: int | None, deadline: float, fetch: FetchOptions) -> bytes:
    chunks, got = [], 0
    while True:
        if time.monotonic() > deadline:
            raise _Transient(_timed_out(fetch))
        try:
            chunk = answer.read(CHUNK)
        except http.client.IncompleteRead as exc:
            got += len(exc.partial)
            raise _Transient(_cut_short(got, expected)) from None
        if not chunk:
            break
        got += len(chunk)
        if got > fetch.max_bytes:
            raise Unreadable(_too_large(fetch))
        chunks.append(chunk)
    if expected is not None and got < expected:
        raise _Transient(_cut_short(got, expected))
    return b"".join(chunks)


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
    import io

    try:
        data = fetch_bytes(url, dataclasses.replace(fetch, max_bytes=MAX_MANIFEST_BYTES))
    except Unreadable as exc:
        raise InputError(f"cannot read manifest {url}: {exc}: check the URL") from None
    if "b" in mode:
        return io.BytesIO(data)
    return io.TextIOWrapper(io.BytesIO(data), **text)
