"""Files replaced whole or not at all: write a temporary file beside the target, then rename it into place.

A reader (another process, a crash's next run) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any


class AtomicFile:
    """A file written under a temporary name beside `path`: `commit()` renames it into place, `discard()` drops it.

    `sync`: make the data durable before the rename (a batch of records); off for files that are cheap to redo.
    `hidden`: the temporary name starts with a dot (`.name.PID.tmp`), so that readers of the folder skip it.
    """

    def __init__(self, path: str, mode: str = "w", *, sync: bool = True, suffix: str = ".tmp", hidden: bool = False):
        self.path, self.sync = path, sync
        folder, name = os.path.split(path)
        self.tmp = os.path.join(folder, f".{name}.{os.getpid()}{suffix}") if hidden else f"{path}.{os.getpid()}{suffix}"
        self.file: IO[Any] = open(self.tmp, mode, encoding=None if "b" in mode else "utf-8")

    def commit(self) -> None:
        try:
            if self.sync:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        unlink(self.tmp)


@contextlib.contextmanager
def atomic_write(
    path: str, mode: str = "w", *, sync: bool = True, suffix: str = ".tmp", hidden: bool = False
) -> Iterator[IO[Any]]:
    """`with atomic_write(path) as f: f.write(...)`: `path` appears complete on a clean exit, else not at all."""
    atomic = AtomicFile(path, mode, sync=sync, suffix=suffix, hidden=hidden)
    try:
        yield atomic.file
    except BaseException:
        atomic.discard()
        raise
    atomic.commit()


def unlink(path: str) -> None:
    """Remove `path` if it is there (a file never written, or already gone, is not an error)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        os.unlink(path)


def rmdir(path: str) -> None:
    """Remove an empty folder; a folder still holding files, or none at all, is left as it is."""
    with contextlib.suppress(OSError):
        os.rmdir(path)
