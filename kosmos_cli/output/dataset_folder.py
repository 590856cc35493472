"""Where the files of a Parquet dataset are: a local folder, or a folder (prefix) in a bucket through fsspec.

Both answer the same few questions and take the same few orders, each file whole or not at all:

- `kind()`: "missing", "folder" or "file"; `names()`: the files directly in it, sorted;
- `open(name)`: read one; `put(name, write)`: write one whole (locally under a hidden temporary name, synced
  and renamed into place; in a bucket, one object put, which readers see whole or not at all); `remove(name)`.

A store's error (credentials, permissions, a missing bucket) is an OutputError of one line that says where
credentials come from (locations/fs.py).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..errors import OutputError, disk_error
from ..inputs import locations
from .atomic import atomic_write, rmdir, unlink

Write = Callable[[IO[bytes]], object]  # writes a whole file into the binary stream it is given


class LocalFolder:
    """A folder on this machine (or a shared filesystem)."""

    remote = False

    def __init__(self, path: str):
        self.path = path.rstrip("/") or "/"
        self.url = self.path + "/"

    def full(self, name: str) -> str:
        return os.path.join(self.path, name)

    def kind(self) -> str:
        if os.path.isdir(self.path):
            return "folder"
        return "file" if os.path.lexists(self.path) else "missing"

    def names(self) -> list[str]:
        try:
            with os.scandir(self.path) as entries:
                return sorted(e.name for e in entries if e.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise OutputError(f"cannot read {self.url}: {exc.strerror or exc}") from None

    def open(self, name: str) -> IO[bytes]:
        return open(self.full(name), "rb")

    def make(self) -> None:
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise disk_error(exc, self.url) from None

    def put(self, name: str, write: Write) -> None:
        self.make()
        try:
            with atomic_write(self.full(name), "wb", hidden=True) as f:
                write(f)
        except OSError as exc:
            raise disk_error(exc, self.full(name)) from None

    def remove(self, name: str) -> None:
        unlink(self.full(name))

    def tidy(self) -> None:
        """Remove the folder when nothing is left in it."""
        rmdir(self.path)


class BucketFolder:
    """A folder (a prefix) in object storage: s3://, gs://, az://, or any filesystem fsspec knows."""

    remote = True

    def __init__(self, url: str):
        from ..inputs.locations.fs import filesystem

        self.url = url if url.endswith("/") else url + "/"
        self.fs, root = filesystem(self.url)
        self.root = root.rstrip("/")

    def full(self, name: str) -> str:
        return f"{self.root}/{name}"

    def kind(self) -> str:
        """As LocalFolder.kind; OutputError when the bucket itself is not there (nothing could be written)."""
        with self._said("read"):
            self.fs.invalidate_cache(self.root)
            try:
                info = self.fs.info(self.root)
            except FileNotFoundError:
                bucket = self.root.split("/", 1)[0]
                if bucket != self.root and not self.fs.exists(bucket):
                    raise OutputError(
                        f"cannot write {self.url}: there is no bucket {bucket!r}: create it, or check the name"
                    ) from None
                return "missing"
        return "folder" if info.get("type") == "directory" else "file"

    def names(self) -> list[str]:
        with self._said("read"):
            self.fs.invalidate_cache(self.root)
            try:
                entries = self.fs.ls(self.root, detail=True)
            except FileNotFoundError:
                return []
        return sorted(os.path.basename(e["name"].rstrip("/")) for e in entries if e.get("type") != "directory")

    def open(self, name: str) -> IO[bytes]:
        with self._said("read"):
            return self.fs.open(self.full(name), "rb")

    def make(self) -> None:
        """Nothing to make: a prefix exists once an object is put under it."""

    def put(self, name: str, write: Write) -> None:
        buffer = io.BytesIO()
        write(buffer)
        with self._said("write"):
            self.fs.pipe_file(self.full(name), buffer.getvalue())

    def remove(self, name: str) -> None:
        with self._said("write"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.full(name))

    def tidy(self) -> None:
        """Nothing to remove: a prefix is gone with its last object."""

    @contextlib.contextmanager
    def _said(self, doing: str) -> Iterator[None]:
        from ..inputs.locations.fs import store_error

        try:
            yield
        except (FileNotFoundError, OutputError):
            raise
        except Exception as exc:  # the stores' libraries raise their own types (botocore, google.auth, azure, ...)
            raise OutputError(f"cannot {doing} {self.url}: {store_error(exc, self.url)}") from None


Folder = LocalFolder | BucketFolder


def folder_of(url: str) -> Folder:
    """The folder `url` names: in a bucket when it is a URL, else on this machine."""
    return BucketFolder(url) if locations.is_remote(url) else LocalFolder(url)


def is_part(name: str) -> bool:
    """A file of a dataset that readers read: `*.parquet`, not hidden (`.`, `_`: pyarrow.dataset skips those)."""
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def read_schema(folder: Folder, name: str) -> Any:
    import pyarrow.parquet as pq

    with folder.open(name) as f:
        return pq.read_schema(f)


def part_rows(folder: Folder, name: str, columns: Any = None) -> Iterator[dict[str, Any]]:
    """The rows of one part (`columns`: only those, where it has them)."""
    import pyarrow.parquet as pq

    with folder.open(name) as f:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        wanted = [c for c in columns if c in names] if columns is not None else None
        for batch in pf.iter_batches(batch_size=4096, columns=wanted):
            yield from batch.to_pylist()
