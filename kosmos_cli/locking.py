"""The lock of one output: at most one run writes it at a time.

The lock is `flock` on a small file beside the output (`<out>.lock`) that holds the holder's pid, for the message
of the run that is refused. The kernel lets go of it when the holder ends, however it ends, so a file left by a
killed run blocks nothing.
"""

from __future__ import annotations

import os

from .errors import LockedError
from .writers import disk_error


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
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
