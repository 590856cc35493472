"""What a path names, told from the path alone: a local file, an http(s) URL, a URL of another filesystem, or a
sample of a container (`SHARD.tar#KEY`, `TABLE.parquet#KEY`); and how remote reads are bounded (`FetchOptions`)
and fail (`Unreadable`). Every module of `locations/` builds on this one; it imports nothing of theirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ...errors import UsageError

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
        return urlsplit(path).path.lower()
    return path.lower()


def is_local(path: str) -> bool:
    """A plain file on this machine's filesystems: opened with `open`, stat'ed with `os.stat`."""
    return not is_remote(path) and split_member(path) is None


def local_path(path: str) -> str:
    """`file:///x/y.jpg` -> `/x/y.jpg`; any other local path as it is."""
    if scheme(path) == "file":
        return unquote(urlsplit(path).path)
    return path
