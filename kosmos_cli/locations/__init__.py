"""Where an image lives, and how its bytes are read: a local path, an http(s) URL, a URL of any filesystem fsspec
knows (s3://, gs://, az://, hf://, ...), or one sample of a container: `SHARD.tar#KEY` (a WebDataset shard) or
`TABLE.parquet#KEY` (a Parquet file with image bytes in a column).

A path keeps the form it was given in; records and resume keys carry it as is (a URL is its own canonical form).
Reading a remote image is done by the loader workers; what fails becomes the image's error record, through
`Unreadable`, whose message is the one line the record carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
URL_SCHEMES = frozenset({"http", "https"})
CONTAINER_EXTENSIONS = (".tar", ".tar.gz", ".tgz", ".parquet")  # `X.tar#KEY`, `X.parquet#KEY`: a sample of a container
DEFAULT_TIMEOUT = 30.0  # seconds a remote read may wait for the server before it counts as failed
DEFAULT_RETRIES = 3  # further tries after a 429, a 5xx, a reset connection or a timeout
DEFAULT_MAX_BYTES = 64 << 20  # an image larger than this is refused unread (the rest of the body is not fetched)


class Unreadable(Exception):
    """An image's bytes could not be read; the message is the one line its error record carries."""


@dataclass(frozen=True)
class FetchOptions:
    """How remote images are read: per-request timeout, retries after a transient failure, size cap."""

    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self):
        if not self.timeout > 0:
            raise UsageError("{param} must be more than 0 seconds", param="fetch_timeout")
        if self.retries < 0:
            raise UsageError("{param} must be 0 or more", param="fetch_retries")
        if self.max_bytes < 1:
            raise UsageError("{param} must be more than 0", param="max_image_mb")


def check_local_output(path: str, param: str) -> None:
    """UsageError when an output (`--out`, `draw -o`, `--draw`) is named by a URL: outputs are locked, resumed and
    renamed into place, which only a local or shared filesystem does."""
    if path != "-" and is_remote(path):
        raise UsageError(
            f"{{param}} {path}: outputs are written to a local or shared-filesystem path (a run locks and resumes "
            "them there); write here, then copy up (aws s3 cp, gsutil cp, ...)",
            param=param,
        )


def scheme(path: str) -> str | None:
    """The URL scheme of `path` in lower case (`s3`, `https`), or None for a local path."""
    match = _SCHEME.match(path)
    return match.group(1).lower() if match else None


def is_url(path: str) -> bool:
    """An http(s) URL."""
    return scheme(path) in URL_SCHEMES


def is_remote(path: str) -> bool:
    """Anything but a local path: an http(s) URL or a URL of another filesystem (`file://` counts as local)."""
    return scheme(path) not in (None, "file")


def split_member(path: str) -> tuple[str, str] | None:
    """(container, key) for `SHARD.tar#KEY` or `TABLE.parquet#KEY`; None for any other path."""
    container, sep, key = path.rpartition("#")
    if sep and key and container.lower().endswith(CONTAINER_EXTENSIONS):
        return container, key
    return None


def named_suffix(path: str) -> str:
    """`path` in lower case, a URL's query and fragment left off: what its extension is read from."""
    if is_url(path):
        from urllib.parse import urlsplit

        return urlsplit(path).path.lower()
    return path.lower()


def is_local(path: str) -> bool:
    """A plain file on this machine's filesystems: opened with `open`, stat'ed with `os.stat`."""
    return not is_remote(path) and split_member(path) is None


def read_bytes(path: str, fetch: FetchOptions = FetchOptions()) -> bytes:
    """The bytes of the image at `path` (not a local one: `images.load_image` opens those itself).

    Raises Unreadable with the line the image's error record carries."""
    member = split_member(path)
    if member is not None:
        from .members import read_member

        return read_member(member[0], member[1], fetch)
    if is_url(path):
        from .http import fetch_bytes

        return fetch_bytes(path, fetch)
    if is_remote(path):
        from .fs import read_remote

        return read_remote(path, fetch)
    try:
        with open(local_path(path), "rb") as f:
            return f.read()
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None


def stat(path: str) -> tuple[int | None, float | None]:
    """(size in bytes, modification time) as far as they can be told without reading the image: what resume
    compares to tell a changed image. A URL tells nothing before it is fetched: (None, None)."""
    if split_member(path) is not None or is_url(path):
        return None, None
    if is_remote(path):
        from .fs import remote_stat

        return remote_stat(path)
    from ..images import file_stat

    return file_stat(local_path(path))


def local_path(path: str) -> str:
    """`file:///x/y.jpg` -> `/x/y.jpg`; any other local path as it is."""
    if scheme(path) == "file":
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(path).path)
    return path


def open_image(path: str, fetch: FetchOptions = FetchOptions(), draft: int | None = None, data: bytes | None = None):
    """`images.load_image` for an image wherever it lives: its bytes read first when it is not a local file (or
    given as `data`, as a WebDataset sample or a Parquet row brings them). A failure is a value, as there."""
    from ..images import Loaded, load_image

    if data is None and not is_local(path):
        try:
            data = read_bytes(path, fetch)
        except Unreadable as exc:
            return Loaded(None, error=str(exc))
    return load_image(local_path(path), draft=draft, data=data)


def display_size(path: str, data: bytes | None = None, fetch: FetchOptions = FetchOptions()) -> tuple[int, int] | None:
    """`images.display_size` wherever the image lives: a remote one is read first (refer's normalised boxes need the
    size before the image is loaded, for their resume key). None when it cannot be read."""
    from .. import images

    if data is None and not is_local(path):
        try:
            data = read_bytes(path, fetch)
        except Unreadable:
            return None
    return images.display_size(local_path(path), data)
