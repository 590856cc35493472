"""Where the files of a Parquet dataset are: a local folder, or a folder (prefix) in a bucket through fsspec.

Both answer the same few questions and take the same few orders, each file whole or not at all:

- `kind()`: "missing", "folder" or "file"; `names()`: the files directly in it, sorted; `modified()`: when each
  was last written;
- `open(name)`: read one (an object by ranges, only what is read); `snapshot(name)`: read one as it was at one
  moment (a local file by its inode; an object in one GET, so a part that another run replaces meanwhile is read
  whole, old or new, never mixed: a read by ranges that fails is tried once so); `put(name, write)`: write one whole
  (locally under a hidden temporary name, synced and renamed into place; in a bucket, one object put, which
  readers see whole or not at all); `remove(name)`.

Which files are the parts of a dataset is said by their names alone, the names kosmos gives them
(`part-<stamp>-<writer>.parquet`, `is_part`), and they are read in the order of the runs that wrote them
(`in_order`: stamp, then writer and sequence), never in an order a user's file name could change.

A store's error (credentials, permissions, a missing bucket) is an OutputError of one line that says where
credentials come from (locations/fs.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol

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

    def modified(self) -> dict[str, float]:
        """Name -> when it was last written (seconds since the epoch), for the files directly in it."""
        found = {}
        for name in self.names():
            with contextlib.suppress(FileNotFoundError):
                found[name] = os.stat(self.full(name)).st_mtime
        return found

    def open(self, name: str) -> IO[bytes]:
        return open(self.full(name), "rb")

    def snapshot(self, name: str) -> IO[bytes]:
        return self.open(name)  # an open file keeps its inode: a file renamed over it meanwhile is another

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

    def modified(self) -> dict[str, float]:
        with self._said("read"):
            self.fs.invalidate_cache(self.root)
            try:
                entries = self.fs.ls(self.root, detail=True)
            except FileNotFoundError:
                return {}
        found = {}
        for e in entries:
            when = e.get("LastModified") or e.get("mtime") or e.get("last_modified")
            if e.get("type") != "directory" and when is not None:
                found[os.path.basename(e["name"].rstrip("/"))] = when if isinstance(when, float) else when.timestamp()
        return found

    def open(self, name: str) -> IO[bytes]:
        with self._said("read"):
            return self.fs.open(self.full(name), "rb")

    def snapshot(self, name: str) -> IO[bytes]:
        """The object in one GET: whole, even when another run replaces it while it is read."""
        with self._said("read"):
            return io.BytesIO(self.fs.cat_file(self.full(name)))

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


class Readable(Protocol):
    """What reading a part needs: where it is (for messages) and its bytes."""

    url: str

    def open(self, name: str) -> IO[bytes]: ...
    def snapshot(self, name: str) -> IO[bytes]: ...


def folder_of(url: str) -> Folder:
    """The folder `url` names: in a bucket when it is a URL, else on this machine."""
    return BucketFolder(url) if locations.is_remote(url) else LocalFolder(url)


PART = re.compile(r"^part-(\d{8}T\d{12})Z?-([A-Za-z0-9_.-]+)\.parquet$")  # part-<stamp>-<writer>[-<seq>]


def is_part(name: str) -> bool:
    """A part of a dataset: a file kosmos named so (`part-<stamp>-<writer>.parquet`). Any other file in the folder
    (a results file moved in, a user's copy) is no part: never read, rewritten or removed as one."""
    return PART.match(name) is not None


def is_table(name: str) -> bool:
    """A file that readers of the folder take for a table (`*.parquet`, not hidden: pyarrow.dataset, DuckDB and
    polars skip `.` and `_` names)."""
    return name.lower().endswith(".parquet") and not name.startswith((".", "_"))


def read_as_one(names: list[str]) -> list[str]:
    """What a reader of a folder (draw, export) reads, in order: a dataset's parts in run order, and nothing else
    there; a folder holding no part of a dataset (a file output's `<out>.parts/`, a cluster's output), its
    `*.parquet` files in name order."""
    return in_order(names) or [name for name in names if is_table(name)]


def in_order(names: list[str]) -> list[str]:
    """The parts among `names`, in the order their runs wrote them: by stamp, then by writer and sequence."""
    found = [(m.group(1), m.group(2), name) for name in names if (m := PART.match(name))]
    return [name for _, _, name in sorted(found)]


def damaged(folder: Readable, name: str, exc: BaseException) -> OutputError:
    """A part (or staged batch) that cannot be read, named, with what to do."""
    why = " ".join(str(exc).split())[:200] or type(exc).__name__
    return OutputError(
        f"{folder.url}{name} cannot be read: it is damaged ({why}); restore it from a copy, or move it out of "
        f"{folder.url} to have its images done again"
    )


def read_schema(folder: Readable, name: str) -> Any:
    """A part's schema. FileNotFoundError when it is gone; OutputError (naming it) when it is damaged."""
    import pyarrow.parquet as pq

    for attempt in (folder.open, folder.snapshot):  # a part replaced while read by ranges: read whole, once
        with attempt(name) as f:
            try:
                return pq.read_schema(f)
            except (FileNotFoundError, OutputError):
                raise
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
                failed = exc
    raise damaged(folder, name, failed) from None


def part_rows(folder: Readable, name: str, columns: Any = None) -> Iterator[dict[str, Any]]:
    """The rows of one part (`columns`: only those, where it has them). OutputError (naming it) when it is
    damaged; FileNotFoundError when it is gone. A read by ranges that fails (in a bucket, another run may have
    replaced the part meanwhile) is tried again from one whole read: rows may then come twice, never go missing."""
    try:
        with folder.open(name) as f:
            yield from _rows(f, columns)
        return
    except (FileNotFoundError, OutputError, GeneratorExit):
        raise
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        pass
    try:
        with folder.snapshot(name) as f:
            yield from _rows(f, columns)
    except (FileNotFoundError, OutputError, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001
        raise damaged(folder, name, exc) from None


def _rows(f: IO[bytes], columns: Any) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f)
    names = pf.schema_arrow.names
    wanted = [c for c in columns if c in names] if columns is not None else None
    for batch in pf.iter_batches(batch_size=4096, columns=wanted):
        yield from batch.to_pylist()


def stamp_of(part: str) -> str:
    """The stamp of the run that wrote a part (`part-<stamp>-...`); "" for a name that is no part."""
    m = PART.match(part)
    return m.group(1) if m else ""


def rows_while_there(folder: Readable, name: str, columns: Any = None) -> Iterator[dict[str, Any]]:
    """A part's (or batch's) rows; none when it is gone (folded or tidied away by another run, in a bucket)."""
    with contextlib.suppress(FileNotFoundError):
        yield from part_rows(folder, name, columns)


def schema_while_there(folder: Readable, name: str) -> Any:
    """A part's (or batch's) schema; None when it is gone."""
    try:
        return read_schema(folder, name)
    except FileNotFoundError:
        return None
