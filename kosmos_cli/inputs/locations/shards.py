"""WebDataset shards: a tar (or .tar.gz) of samples, each sample the files that share a key, read as a stream.

A shard is read once, front to back (`tarfile` in stream mode), local or remote alike: never unpacked to disk, and
never more of it in memory than the sample being read. The WebDataset convention names the files: the key is the
member's path up to the first dot of its base name, the rest its extension (`a/b/000123.jpg` -> key `a/b/000123`,
`jpg`; `000123.meta.json` -> `000123`, `meta.json`). Consecutive files with one key are one sample, one Item:
its path `SHARD#KEY`, its image the first of jpg, jpeg, png and webp it holds (another image extension when it has
none of those), its `.json` fields and `.txt` carried like manifest columns. Hidden files and `__MACOSX` folders are
skipped, and so are files with no extension. Links (symbolic or hard: not the member's own bytes) and members named
outside the shard (an absolute name, a `..` in it: nothing could lay them out inside an output) are never read as
samples: they are counted, in one warning for the shard and in `Unlisted`.

What fails is a value: a sample without an image, a member past the size cap, or a shard that breaks off (a damaged
header, a truncated file, a dropped connection) gives an error Item for the sample where it happened, with a
warning, and the run goes on with the next shard.
"""

from __future__ import annotations

import http.client
import json
import logging
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..images import IMAGE_EXTENSIONS, NOT_REGULAR, NotRegular, open_regular
from ..listing import Item, Unlisted
from .base import FetchOptions, Unreadable, is_remote, is_url, local_path
from .http import open_response

log = logging.getLogger("kosmos_cli")

PREFERRED = ("jpg", "jpeg", "png", "webp")  # a sample's image: the first of these it has
OTHER_IMAGES = tuple(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS if e.lstrip(".") not in PREFERRED))
NO_IMAGE = "the sample has no image (jpg, jpeg, png or webp)"
BROKEN = (tarfile.TarError, OSError, EOFError, zlib.error, http.client.HTTPException)  # what a damaged stream raises
_CHUNK = 1 << 16


def split_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member by the WebDataset convention; None for a file with no extension or a hidden one
    (any part of its path starting with '.', or a `__MACOSX` folder). A `.` part names no folder: `tar -C dir .`
    writes `./000123.jpg`, key `000123`."""
    parts = [p for p in name.split("/") if p != "."]
    if any(p.startswith(".") or p == "__MACOSX" for p in parts if p):
        return None
    base = parts[-1]
    stem, dot, ext = base.partition(".")
    if not dot or not stem or not ext:
        return None
    return "/".join(parts[:-1] + [stem]), ext


def kind(ext: str) -> str:
    """What an extension holds, by its last part, in lower case: `meta.JSON` -> `json`."""
    return ext.rsplit(".", 1)[-1].lower()


def rank(ext: str) -> int | None:
    """How much a sample's file is preferred as its image (lower is better); None when it is not an image."""
    k = kind(ext)
    if k in PREFERRED:
        return PREFERRED.index(k)
    if k in OTHER_IMAGES:
        return len(PREFERRED) + OTHER_IMAGES.index(k)
    return None


@dataclass
class Sample:
    """The files of one key read so far: the best image, the carried fields, or why it cannot be used."""

    key: str
    image: bytes | None = None
    image_rank: int | None = None
    mtime: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    too_large: str | None = None  # an image left unread for its size (another of the sample's may fit)
    error: str | None = None  # where the shard broke off

    def item(self, shard: str, number: int) -> Item:
        path = f"{shard}#{self.key}"
        if self.error is not None or self.image is None:
            return Item(path, self.extra, error=self.error or self.too_large or NO_IMAGE, group=number)
        return Item(path, self.extra, data=self.image, stat=(len(self.image), self.mtime), group=number)


def iter_shard(
    path: str, number: int, fetch: FetchOptions = FetchOptions(), unseen: Unlisted | None = None
) -> Iterator[Item]:
    """One Item per sample of the shard at `path` (a local path or a URL), in the shard's order; `number` is the
    shard's place among the run's shards (Item.group: which process reads it). `unseen` counts the members refused
    (links, names outside the shard)."""
    try:
        stream = open_stream(path, fetch)
    except Unreadable as exc:
        log.warning("cannot read the shard %s: %s", path, exc)
        yield Item(path, error=f"cannot read the shard: {exc}", group=number)
        return
    refused = Unlisted()
    with stream:
        yield from _samples_of(stream, path, number, fetch, refused)
    if refused:
        log.warning(
            "%s: %d members not read: links and names outside the shard (absolute, or with ..) are refused "
            "(the first: %s)",
            path,
            refused.skipped,
            refused.first_skipped,
        )
        if unseen is not None:
            unseen.skip(f"{path} member {refused.first_skipped}", refused.skipped)


def _refused(member: tarfile.TarInfo) -> bool:
    """A member never read as part of a sample: a link (its bytes are another member's, or outside the shard), or
    a name that leaves the shard (absolute, or with a `..` part)."""
    return member.issym() or member.islnk() or member.name.startswith("/") or ".." in member.name.split("/")


def _samples_of(stream: IO[bytes], path: str, number: int, fetch: FetchOptions, refused: Unlisted) -> Iterator[Item]:
    current: Sample | None = None
    where = "at its start"
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")
    except BROKEN as exc:
        log.warning("cannot read the shard %s: %s", path, _why(exc))
        yield Item(path, error=f"cannot read the shard: not a tar file ({_why(exc)})", group=number)
        return
    try:
        for member in tar:
            tar.members = []  # type: ignore[attr-defined]  # stream mode keeps every header otherwise
            if _refused(member):
                refused.skip(member.name)
                continue
            named = split_name(member.name) if member.isfile() else None
            if named is None:
                continue
            key, ext = named
            if current is not None and current.key != key:
                yield current.item(path, number)
                current = None
            if current is None:
                current = Sample(key)
            where = f"in {member.name}"
            _add(tar, member, ext, current, fetch)
        where = "after its last sample" if current is None else f"after {current.key}"
        problem = _unfinished(tar)
    except BROKEN as exc:
        problem = _why(exc)
    if problem is not None:
        log.warning("the shard %s breaks off %s: %s; the rest of it is not read", path, where, problem)
        if current is None:
            yield Item(path, error=f"the shard breaks off {where}: {problem}", group=number)
            return
        current.error = f"the shard breaks off {where}: {problem}"
    if current is not None:
        yield current.item(path, number)


def _add(tar: tarfile.TarFile, member: tarfile.TarInfo, ext: str, sample: Sample, fetch: FetchOptions) -> None:
    """Read what the sample needs of `member`: a better image than it has, its json fields, its text."""
    k, image_rank = kind(ext), rank(ext)
    if image_rank is None and k not in ("json", "txt"):
        return  # not ours to read (.cls, .npy, ...): the stream skips it
    if image_rank is not None and sample.image_rank is not None and sample.image_rank <= image_rank:
        return
    if member.size > fetch.max_bytes:
        why = f"{member.name} is larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb): left unread"
        if image_rank is not None:
            sample.too_large = sample.too_large or why
        else:
            log.warning("%s", why)
        return
    data = read_member(tar, member)
    if image_rank is not None:
        sample.image, sample.image_rank, sample.mtime = data, image_rank, float(member.mtime)
    elif k == "txt":
        sample.extra[ext.lower()] = data.decode("utf-8", "replace")
    else:
        try:
            fields = json.loads(data.decode("utf-8", "replace"))
        except (json.JSONDecodeError, RecursionError):
            log.warning("%s is not valid JSON: its fields are not carried", member.name)
            return
        if isinstance(fields, dict):
            sample.extra.update(fields)
        else:
            sample.extra[ext.lower()] = fields


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The bytes of `member`; tarfile.ReadError when the shard ends before they do."""
    f = tar.extractfile(member)
    if f is None:
        raise tarfile.ReadError(f"{member.name} is not a file")
    with f:
        data = f.read()
    if len(data) != member.size:
        raise tarfile.ReadError(f"{member.name} is cut short ({len(data)} of {member.size} bytes)")
    return data


def _unfinished(tar: tarfile.TarFile) -> str | None:
    """Why a shard that tarfile stopped reading is not whole, or None when it ended as a tar ends.

    tarfile ends a stream quietly at a damaged header and at a file cut short; a whole tar ends with a block of
    zeros (which tarfile read) and then nothing but zeros."""
    stream: Any = tar.fileobj
    read = getattr(stream, "pos", None)
    if read is None:
        return None
    if read < tar.offset + tarfile.BLOCKSIZE:
        return "it is truncated"
    while chunk := stream.read(_CHUNK):
        if chunk.count(0) != len(chunk):
            return f"a damaged header at byte {tar.offset}"
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def open_stream(path: str, fetch: FetchOptions = FetchOptions()) -> IO[bytes]:
    """A file object reading the shard at `path` from its start: a local file, an http(s) response read as it
    comes (not the whole body first), or fsspec's file for another URL. Unreadable when it cannot be opened."""
    if is_url(path):  # read as it comes; opening is tried again after a 429, a 5xx, a dropped connection
        return open_response(path, fetch)
    if is_remote(path):
        try:
            import fsspec
        except ImportError:
            raise Unreadable("reading it needs fsspec: pip install fsspec and the package for its protocol") from None
        try:
            return fsspec.open(path, "rb").open()
        except ImportError as exc:
            raise Unreadable(f"reading it needs another package: {exc}") from None
        except (OSError, ValueError) as exc:
            raise Unreadable(_why(exc)) from None
    try:
        return open_regular(local_path(path))
    except NotRegular:
        raise Unreadable(NOT_REGULAR) from None
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
