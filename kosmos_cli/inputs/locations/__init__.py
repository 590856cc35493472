"""Where an image lives, and how its bytes are read: a local path, an http(s) URL, a URL of any filesystem fsspec
knows (s3://, gs://, az://, hf://, ...), or one sample of a container: `SHARD.tar#KEY` (a WebDataset shard) or
`TABLE.parquet#KEY` (a Parquet file with image bytes in a column). base.py tells which from the path alone.

A path keeps the form it was given in; records and resume keys carry it as is (a URL is its own canonical form).
Reading a remote image is done by the loader workers; what fails becomes the image's error record, through
`Unreadable`, whose message is the one line the record carries.
"""

from __future__ import annotations

from ..images import Loaded, file_stat, load_image
from ..images import display_size as image_display_size
from .base import (
    CONTAINER_EXTENSIONS,
    DEFAULT_MAX_BYTES,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    URL_SCHEMES,
    FetchOptions,
    Unreadable,
    check_local_output,
    is_local,
    is_remote,
    is_url,
    local_path,
    named_suffix,
    scheme,
    split_member,
)
from .fs import read_remote, remote_stat


def read_bytes(path: str, fetch: FetchOptions = FetchOptions()) -> bytes:
    """The bytes of the image at `path` (not a local one: `images.load_image` opens those itself).

    Raises Unreadable with the line the image's error record carries."""
    member = split_member(path)
    if member is not None:
        from .members import read_member  # tarfile, http.client: loaded when a container is read, not at start-up

        return read_member(member[0], member[1], fetch)
    if is_url(path):
        from .http import fetch_bytes  # httpx: loaded when a URL is read, not at start-up

        return fetch_bytes(path, fetch)
    if is_remote(path):
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
        return remote_stat(path)
    return file_stat(local_path(path))


def open_image(path: str, fetch: FetchOptions = FetchOptions(), draft: int | None = None, data: bytes | None = None):
    """`images.load_image` for an image wherever it lives: its bytes read first when it is not a local file (or
    given as `data`, as a WebDataset sample or a Parquet row brings them). A failure is a value, as there."""
    if data is None and not is_local(path):
        try:
            data = read_bytes(path, fetch)
        except Unreadable as exc:
            return Loaded(None, error=str(exc))
    return load_image(local_path(path), draft=draft, data=data)


def display_size(path: str, data: bytes | None = None, fetch: FetchOptions = FetchOptions()) -> tuple[int, int] | None:
    """`images.display_size` wherever the image lives: a remote one is read first (refer's normalised boxes need the
    size before the image is loaded, for their resume key). None when it cannot be read."""
    if data is None and not is_local(path):
        try:
            data = read_bytes(path, fetch)
        except Unreadable:
            return None
    return image_display_size(local_path(path), data)


__all__ = [
    "CONTAINER_EXTENSIONS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "URL_SCHEMES",
    "FetchOptions",
    "Unreadable",
    "check_local_output",
    "display_size",
    "is_local",
    "is_remote",
    "is_url",
    "local_path",
    "named_suffix",
    "open_image",
    "read_bytes",
    "scheme",
    "split_member",
    "stat",
]
