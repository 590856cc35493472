"""An open output as a run sees it (`Output`): what it holds (`Recorded`, `RecordedKeys`), where records go, and what
the run has told it; and what an output needs to know of the processes writing it (`Writers`).

Every kind of output (a file, stdout, a Parquet dataset: store.py, dataset.py) hands a run the same `Output`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import tasks
from ..errors import OutputError
from ..tasks import Task
from ..tasks.records import OK, Record
from .formats import Sink


class Holder(Protocol):
    """What an Output needs of the store it belongs to."""

    task: type[Task]
    spool: bool

    def settle(self, output: Output) -> None: ...


class Writers(Protocol):
    """Who writes an output, as its store sees them: a single process (ranks.Solo), rank 0 of a launch writing the
    records of every rank (ranks.Team), or a test's stand-in for a process of several."""

    @property
    def rank(self) -> int: ...  # whose parts these are
    @property
    def main(self) -> bool: ...  # this process prepares the output and compacts it
    @property
    def solo(self) -> bool: ...  # the only process: JSONL goes straight into the output
    @property
    def merged(self) -> bool: ...  # every process is done: the output may be compacted now


@dataclass
class Recorded:
    """What an output already holds for one key: enough to decide whether that image is done, and with what
    settings (None: not recorded, as in outputs written before the `decoding` field)."""

    file_size: int | None
    file_mtime: float | None
    status: str | None
    model: str | None = None
    prompt: str | None = None
    decoding: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Recorded:
        """What a row says; its settings interned (a million records share a few strings)."""
        settings = (row.get(name) for name in ("model", "prompt", "decoding"))
        return cls(
            row.get("file_size"),
            row.get("file_mtime"),
            row.get("status"),
            *(sys.intern(v) if isinstance(v, str) else None for v in settings),
        )


@dataclass
class RecordedKeys:
    """What an output holds: key -> Recorded (the last record of each key), and how many rows were written again."""

    seen: dict[str, Recorded] = field(default_factory=dict)
    duplicates: int = 0

    @classmethod
    def of(cls, task: type[Task], folder: str | None, files: Iterable[Iterable[dict[str, Any]]]) -> RecordedKeys:
        """What the rows of `files`, oldest first, hold; `folder`: where the output is (Task.key)."""
        tasks.forget_folders()  # this run's keys share one view of the file system, taken now
        found, rows = cls(), 0
        for file_rows in files:
            for row in file_rows:
                found.seen[task.key(row, folder)] = Recorded.of(row)
                rows += 1
        found.duplicates = rows - len(found.seen)  # records written again for a key: compaction keeps the last
        return found


def present_only(present: set[str]) -> Callable[[str], bool]:
    """--prune's keep function: whether the image of a key is in `present`, the paths a complete pass saw. A path
    may hold a NUL too, the separator of keys."""

    def keep(key: str) -> bool:
        return key in present or any(key[:i] in present for i, c in enumerate(key) if c == "\x00")

    return keep


@dataclass
class Output:
    """An open output, as a run sees it: what it holds, where records go, and what the run has told it."""

    store: Holder
    seen: dict[str, Recorded]
    sink: Sink
    replaced: int = 0  # records written for keys the output already held: compaction drops the older ones
    kept: int = 0  # error records not written: the output holds an ok record for their key
    kept_first: str = ""  # the first of them, "path: error"
    failed: bool = False  # a write failed: leave the parts for the next run
    present: set[str] | None = None  # after a complete pass with --prune: the paths it saw

    def write(self, records: list[Record]) -> list[Record]:
        """Write a batch of records; durable when it returns. Returns the records written: an error record for
        a key the output holds an ok record for is not written (a record that was ok is never replaced by a
        worse one; --overwrite starts afresh), only counted in `kept`."""
        written = []
        for r in records:
            held = self.seen.get(self.store.task.key(vars(r)))
            if held is not None and held.status == OK and not r.ok:
                self.kept += 1
                self.kept_first = self.kept_first or f"{r.path}: {r.error}"
                continue
            self.replaced += held is not None
            written.append(r)
        self.sink.write(written)
        return written

    def complete(self, present: set[str]) -> None:
        """A pass that provably saw every input: records of paths not in `present` may be pruned on exit."""
        self.present = present

    def keep(self) -> Callable[[str], bool] | None:
        """What settling keeps: after a complete pass with --prune, the keys of the paths it saw; else every key."""
        return present_only(self.present) if self.present is not None else None


@contextlib.contextmanager
def in_use(output: Output, writers: Writers) -> Iterator[Output]:
    """Hand `output` to a run; afterwards close its sink and, once every process is done and no write failed (also
    after Ctrl-C: what is done is kept), settle its store. A failed write (a full disk) leaves the parts for the next
    run rather than copy them now."""
    try:
        yield output
    except OutputError:
        output.failed = True
        raise
    finally:
        output.sink.close()
        if writers.merged and writers.main and not output.failed:
            output.store.settle(output)
