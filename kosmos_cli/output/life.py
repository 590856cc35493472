"""The life every output shares, behind one `with`: lock -> check -> repair -> --overwrite or what is left over ->
scan -> write -> settle (once every process is done) -> unlock; and what a store checks before a model loads.

A store (store.Store for a file, dataset.DatasetStore for a folder of parts) says how each step is done; the order
of the steps lives here alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import disk_error
from ..tasks import Task
from .formats import Sink
from .handle import Output, Recorded, RecordedKeys, Writers, in_use
from .locking import OutputLock


class OutputStore(ABC):
    """One output and its life: what a run opens, writes and settles, under the output's lock (None: a bucket, where
    nothing is locked)."""

    task: type[Task]
    path: str
    spool = False  # a stand-in for stdout: resumed like any output; after a run, copied to stdout and removed
    _lock: OutputLock | None

    @contextlib.contextmanager
    def open(self, writers: Writers, *, overwrite: bool = False, wait: bool = False) -> Iterator[Output]:
        """Prepare the output for a run, yield what it holds and where to write, and settle it afterwards.

        The main process locks it, checks it (under the lock: nothing but this task's output is touched), repairs
        what a crash left, and removes it (`overwrite`) or folds leftovers in. On exit the sink is closed; once
        every writer is done (`writers.merged`) the main one settles it (compacts and tidies), then lets go of the
        lock.
        """
        try:
            if writers.main:
                self.lock(wait=wait)
                self.check(overwrite=overwrite)
                self.repair()
                if overwrite:
                    self.remove()
                else:
                    self.fold_leftovers()
            held = self.scan(parts=writers.solo).seen
            with in_use(Output(self, held, self.sink(direct=writers.solo)), writers) as output:
                yield output
        finally:
            self.unlock()

    def lock(self, wait: bool = False) -> None:
        """Take the output's lock. The kernel drops it when this process ends, however it ends."""
        if self._lock is not None:
            self.make()
            self._lock.take(wait)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def recorded_keys(self) -> dict[str, Recorded]:
        """Key -> what is recorded for it (the last record of each key): what a run skips."""
        return self.scan().seen

    # -- each store's own steps (`make`: the folder the output goes in; `fold_leftovers`: what a killed run left) --
    @abstractmethod
    def check(self, inputs: Iterable[Any] = (), overwrite: bool = False) -> None: ...
    @abstractmethod
    def make(self) -> None: ...
    @abstractmethod
    def repair(self) -> None: ...
    @abstractmethod
    def remove(self) -> None: ...
    @abstractmethod
    def fold_leftovers(self) -> None: ...
    @abstractmethod
    def scan(self, parts: bool = True) -> RecordedKeys: ...
    @abstractmethod
    def sink(self, direct: bool = True) -> Sink: ...
    @abstractmethod
    def settle(self, output: Output) -> None: ...


def nearest_folder(start: str, own: str | None = None) -> str:
    """The nearest folder that exists at `start` or above it; creates nothing. A file in the way (other than `own`,
    the output itself) is a disk_error: the folder cannot be made."""
    existing = start
    while not os.path.isdir(existing):
        if os.path.lexists(existing) and existing != own:  # a file where a folder has to be
            raise disk_error(NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), existing)
        existing = os.path.dirname(os.path.abspath(existing))
    return existing


def refuse_unwritable(place: str) -> None:
    """A disk_error when `place` cannot be written."""
    if not os.access(place, os.W_OK):
        raise disk_error(PermissionError(errno.EACCES, os.strerror(errno.EACCES)), place)
