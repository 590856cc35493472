"""Files replaced whole or not at all: write a temporary file beside the target, then rename it into place.

A reader (another process, a crash's next run) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", *, sync: bool = True, suffix: str = ".tmp") -> Iterator[IO[Any]]:
    """`with atomic_write(path) as f: f.write(...)`: `path` appears complete on a clean exit, else not at all.

    `sync`: make the data durable before the rename (a batch of records); off for files that are cheap to redo.
    """
    tmp = f"{path}.{os.getpid()}{suffix}"
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        unlink(tmp)
        raise


def unlink(path: str) -> None:
    """Remove `path` if it is there (a file never written, or already gone, is not an error)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        os.unlink(path)


def rmdir(path: str) -> None:
    """Remove an empty folder; a folder still holding files, or none at all, is left as it is."""
    with contextlib.suppress(OSError):
        os.rmdir(path)
