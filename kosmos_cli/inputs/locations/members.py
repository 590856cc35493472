"""One sample's image out of its container, for `kosmos draw` (and anything else given a `SHARD.tar#KEY` or
`TABLE.parquet#KEY` path): the pixels a record of a WebDataset shard or a Parquet row was made from.

A local tar is read by random access: its headers once (an index of key -> image member, kept for the last
CACHED containers), then each member where it lies. A remote tar has no index to jump by: it is streamed from
its start until the key. A Parquet file's key column is read once into an index of key -> row; then only that
row's row group's image column is read. Which columns: `key` (or the first string or integer column holding the
key) and the image column, the binary column (or struct with `bytes`) named jpg, jpeg, png, webp, image or img,
else the first one. Every cache is shared by the drawing threads, behind a lock.
"""

from __future__ import annotations

import os
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..images import NOT_REGULAR, is_special
from .base import FetchOptions, Unreadable, is_remote, is_url, local_path
from .shards import BROKEN, _why, open_stream, rank, split_name
from .table import image_bytes, readable_image

CACHED = 8  # containers whose index is kept (and, for a tar, whose file stays open)
IMAGE_NAMES = ("jpg", "jpeg", "png", "webp", "image", "img")


def read_member(container: str, key: str, fetch: FetchOptions = FetchOptions()) -> bytes:
    """The image bytes of sample `key` of `container`. Unreadable, with one line, when it is not there."""
    if container.lower().endswith(".parquet"):
        return _row_image(container, key, fetch)
    if is_remote(container):
        return _streamed(container, key, fetch)
    return _local_member(container, key, fetch)


class _Cache:
    """The last CACHED opened containers, by path and version (size, modification time: a rewritten file is
    indexed again), each made once even when threads ask for it together. One pushed out is closed when the last
    thread reading it lets it go (by the garbage collector), never under a reader."""

    def __init__(self, make: Callable[[str], Any]):
        self._make = make
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, Any], Any] = OrderedDict()

    def get(self, path: str, version: Any = None) -> Any:
        with self._lock:
            name = (path, version)
            if name in self._entries:
                self._entries.move_to_end(name)
                return self._entries[name]
            entry = self._make(path)  # under the lock: two threads never index one file twice
            self._entries[name] = entry
            while len(self._entries) > CACHED:
                self._entries.popitem(last=False)
            return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _version(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# -- a local tar -----------------------------------------------------------------------------------------------
class _IndexedTar:
    """An opened tar and, per key, its best image member. Reads are one at a time (one file position)."""

    def __init__(self, path: str):
        if is_special(local_path(path)):  # a FIFO would hold tarfile's open forever
            raise Unreadable(f"cannot read the shard {path}: {NOT_REGULAR}")
        try:
            self.tar = tarfile.open(local_path(path))
        except OSError as exc:
            raise Unreadable(f"cannot read the shard {path}: {exc.strerror or exc}") from None
        except BROKEN as exc:
            raise Unreadable(f"cannot read the shard {path}: {_why(exc)}") from None
        self.path, self.lock = path, threading.Lock()
        self.images: dict[str, tarfile.TarInfo] = {}
        self.keys: set[str] = set()
        try:
            for member in self.tar:
                named = split_name(member.name) if member.isfile() else None
                if named is None:
                    continue
                key, ext = named
                self.keys.add(key)
                best = self.images.get(key)
                if rank(ext) is not None and (best is None or rank(ext) < rank(_ext(best))):  # type: ignore[operator]
                    self.images[key] = member
        except BROKEN:
            pass  # a shard that breaks off: the samples before the break can still be drawn
        self.tar.members = []  # type: ignore[attr-defined]  # the index holds what is needed

    def read(self, key: str, fetch: FetchOptions) -> bytes:
        member = self.images.get(key)
        if member is None:
            raise Unreadable(_missing(key, self.path, key in self.keys))
        if member.size > fetch.max_bytes:
            raise Unreadable(f"larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb): left unread")
        with self.lock:
            try:
                f = self.tar.extractfile(member)
                assert f is not None
                data = f.read()
            except BROKEN as exc:
                raise Unreadable(f"cannot read {member.name}: {_why(exc)}") from None
        if len(data) != member.size:
            raise Unreadable(f"{member.name} is cut short ({len(data)} of {member.size} bytes)")
        return data


def _ext(member: tarfile.TarInfo) -> str:
    named = split_name(member.name)
    return named[1] if named else ""


_tars = _Cache(_IndexedTar)


def _local_member(container: str, key: str, fetch: FetchOptions) -> bytes:
    path = os.path.abspath(local_path(container))
    if not os.path.exists(path):
        raise Unreadable(f"the shard {container} is not there: check the path")
    return _tars.get(path, _version(path)).read(key, fetch)


# -- a remote tar ----------------------------------------------------------------------------------------------
def _streamed(container: str, key: str, fetch: FetchOptions) -> bytes:
    """Stream the shard from its start until the sample `key` has gone by; its best image."""
    best: tuple[int, bytes] | None = None
    seen = False
    with open_stream(container, fetch) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    tar.members = []  # type: ignore[attr-defined]  # stream mode: headers not kept
                    named = split_name(member.name) if member.isfile() else None
                    if named is None:
                        continue
                    if named[0] != key:
                        if seen:
                            break  # the sample's files are consecutive: it is over
                        continue
                    seen, image_rank = True, rank(named[1])
                    if image_rank is None or (best is not None and best[0] <= image_rank):
                        continue
                    if member.size > fetch.max_bytes:
                        raise Unreadable(f"larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb): left unread")
                    f = tar.extractfile(member)
                    assert f is not None
                    best = (image_rank, f.read())
        except BROKEN as exc:
            if best is None:
                raise Unreadable(f"cannot read the shard {container}: {_why(exc)}") from None
    if best is None:
        raise Unreadable(_missing(key, container, seen))
    return best[1]


def _missing(key: str, container: str, seen: bool) -> str:
    if seen:
        return f"the sample {key!r} of {container} has no image (jpg, jpeg, png or webp)"
    return f"no sample {key!r} in {container}: was the shard rewritten since?"


# -- a Parquet file --------------------------------------------------------------------------------------------
class _IndexedTable:
    """A Parquet file's key -> (row group, row in it), and which columns hold keys and images."""

    def __init__(self, path: str):
        import pyarrow.parquet as pq

        try:
            self.file = _open_binary(path)
            self.parquet = pq.ParquetFile(self.file)
        except Unreadable:
            raise
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise Unreadable(f"cannot read {path}: {exc}") from None
        self.path = path
        self.lock = threading.Lock()
        schema = self.parquet.schema_arrow
        self.image = _image_column(schema)
        if self.image is None:
            raise Unreadable(f"{path} has no column of image bytes")
        self.candidates = [n for n in schema.names if n != self.image and _keyish(schema.field(n).type)]
        self.candidates.sort(key=lambda n: n != "key")
        self.indexes: dict[str, dict[str, tuple[int, int]]] = {}

    def locate(self, key: str) -> tuple[int, int] | None:
        with self.lock:
            for column in self.candidates:
                if column not in self.indexes:
                    self.indexes[column] = self._index(column)
                found = self.indexes[column].get(key)
                if found is not None:
                    return found
        return None

    def _index(self, column: str) -> dict[str, tuple[int, int]]:
        index: dict[str, tuple[int, int]] = {}
        for group in range(self.parquet.num_row_groups):
            values = self.parquet.read_row_group(group, columns=[column]).column(0).to_pylist()
            for row, value in enumerate(values):
                if value is not None:
                    index.setdefault(str(value), (group, row))
        return index

    def read(self, key: str, fetch: FetchOptions) -> bytes:
        found = self.locate(key)
        if found is None:
            raise Unreadable(f"no row {key!r} in {self.path}: was the table rewritten since?")
        group, row = found
        with self.lock:
            column = self.parquet.read_row_group(group, columns=[self.image]).column(0)
        (data,) = image_bytes(column.slice(row, 1).combine_chunks())
        if data is None:
            raise Unreadable(f"the row {key!r} of {self.path} has no image (its {self.image!r} is null)")
        if len(data) > fetch.max_bytes:
            raise Unreadable(f"larger than {fetch.max_bytes / 2**20:g} MB (--max-image-mb)")
        return data


def _image_column(schema: Any) -> str | None:
    found = [n for n in schema.names if readable_image(schema.field(n).type)]
    for name in IMAGE_NAMES:
        if name in found:
            return name
    return found[0] if found else None


def _keyish(data_type: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_integer(data_type))


def _open_binary(path: str) -> Any:
    """The table's file, for reading at any place: through fsspec for an http(s) URL (a response streamed by
    open_stream could only be read front to back), as a shard is opened otherwise."""
    if is_url(path):
        try:
            import fsspec

            return fsspec.open(path, "rb").open()
        except ImportError as exc:
            raise Unreadable(f"reading {path} needs another package: {exc}") from None
        except (OSError, ValueError) as exc:
            raise Unreadable(f"cannot read {path}: {_why(exc)}") from None
    try:
        return open_stream(path)
    except Unreadable as exc:
        raise Unreadable(f"cannot read {path}: {exc}") from None


_tables = _Cache(_IndexedTable)


def _row_image(container: str, key: str, fetch: FetchOptions) -> bytes:
    if is_remote(container):
        return _tables.get(container).read(key, fetch)
    path = os.path.abspath(local_path(container))
    if not os.path.exists(path):
        raise Unreadable(f"the table {container} is not there: check the path")
    return _tables.get(path, _version(path)).read(key, fetch)
