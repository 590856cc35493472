"""The lock of one output: at most one run writes it at a time.

The lock is `flock` on a small file beside the output (`<out>.lock`) that holds the holder's pid, for the message
of the run that is refused. The kernel lets go of it when the holder ends, however it ends, so a file left by a
killed run blocks nothing (the next run takes it, and removes it when it ends).

A run that ends removes the file while it still holds the lock, so that only what the user asked for is left
beside the output. A run waiting on that file meanwhile then holds a lock on a file that no longer has the name:
whoever gets a lock checks that the name still leads to the file it locked, and tries again when it does not.
So two runs never hold the lock at once, whatever the order of their steps.
"""

from __future__ import annotations

import os

from ..errors import LockedError, disk_error
from .atomic import unlink


class OutputLock:
    """The lock file `path` of the output `target` (named in messages)."""

    def __init__(self, path: str, target: str):
        self.path, self.target = path, target
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def probe(self) -> None:
        """Raise LockedError now when another run holds the lock; creates nothing, holds nothing after."""
        if os.path.exists(self.path):  # none: nobody holds it (a holder makes it before locking)
            self.take(wait=False)
            self.release()

    def take(self, wait: bool = False) -> None:
        """Take the lock (`wait`: until the holder lets go), or raise LockedError naming the holder."""
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise disk_error(exc, self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise LockedError(
                    f"another kosmos run (pid {holder}) is writing {self.target}: "
                    "let it finish, or pass --wait to wait for it"
                ) from None
            if self._named(fd):
                break
            os.close(fd)  # the holder removed it as it let go: lock the file that has the name now
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock, removing its file first (still holding it: nobody can be mid-way to take it)."""
        if self._fd is not None:
            if self._named(self._fd):
                unlink(self.path)
            os.close(self._fd)
            self._fd = None

    def _named(self, fd: int) -> bool:
        """Whether the lock file's name still leads to the file open as `fd`."""
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
