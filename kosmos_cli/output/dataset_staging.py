"""A dataset's staging folder, `DIR/.kosmos-parts/`: each batch of a run, durable, until a run folds it in.

    DIR/.kosmos-parts/<stamp>-<rank>-<seq>.parquet   a batch of one process of a run (StagedSink)
    DIR/.kosmos-parts/<stamp>-<rank>.run             in a bucket: that process (host, boot, pid, when it started)

A run folds only its own batches, and those of runs that are provably dead (`foldable`): in a local folder every
other run's (the lock proves it ended); in a bucket, where two runs may write at once, a run's batches once its
marker names a process of this machine that is gone (same host and boot, and its pid not running, or running as a
process started later), or once it has written nothing for STALE_AFTER seconds (an hour). A live run's batches are
never folded, rewritten or removed by another.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from typing import Any

from ..errors import UsageError
from ..tasks import Task
from ..tasks.records import Record
from .dataset_folder import Folder
from .formats import Sink, records_table

STAGING = ".kosmos-parts"  # each batch of a run, durable, until the run folds them into the dataset
STALE_AFTER = 3600.0  # seconds: a run in a bucket that has written nothing for this long is taken for dead
_STAGED = re.compile(r"^(\d{8}T\d{12})-(\d{4})-(\d{8})\.parquet$")  # <stamp>-<rank>-<seq>: a batch of a run
_MARKER = re.compile(r"^(\d{8}T\d{12})-(\d{4})\.run$")  # <stamp>-<rank>.run: the process writing those batches

Run = tuple[str, str]  # (stamp, rank): one process of a run


def batches(staging: Folder, path: str) -> list[str]:
    """The staging folder's Parquet files, each a batch of a run (UsageError naming one that is not; `path`: the
    dataset's)."""
    names = [name for name in staging.names() if name.endswith(".parquet")]
    for name in names:
        if not _STAGED.match(name):
            raise not_a_batch(path, staging, name, "kosmos names them <stamp>-<rank>-<seq>.parquet")
    return names


def not_a_batch(path: str, staging: Folder, name: str, why: str) -> UsageError:
    """A file in the staging folder of the dataset `path` that is no batch of ours (`why`), named, with what to do."""
    return UsageError(
        f"{{param}} {path}: {staging.url}{name} is not a batch kosmos staged ({why}); kosmos keeps only its own "
        f"batches in {STAGING}/: move it out of there and run again",
        param="out",
    )


def staged(staging: Folder) -> list[str]:
    """The names of the staged batches (this run's, another run's, or a dead run's), in the order written."""
    return sorted(name for name in staging.names() if _STAGED.match(name))


def runs(staging: Folder) -> dict[Run, list[str]]:
    """(stamp, rank) -> the staged batches of that process of a run, in the order written."""
    found: dict[Run, list[str]] = {}
    for name in staged(staging):
        m = _STAGED.match(name)
        assert m is not None
        found.setdefault((m.group(1), m.group(2)), []).append(name)
    return found


def foldable(staging: Folder, stamp: str | None) -> dict[Run, list[str]]:
    """The staged batches the run of `stamp` may fold or remove: in a local folder (under the lock, once every
    process of the launch is done), all; in a bucket, this run's own, and those of runs that are provably dead."""
    found = runs(staging)
    if not staging.remote:
        return found
    files = staging.modified()
    markers = {(m.group(1), m.group(2)): n for n in files if (m := _MARKER.match(n))}
    return {
        run: names for run, names in found.items() if run[0] == stamp or _dead(staging, names, markers.get(run), files)
    }


def marker(run: Run) -> str:
    return f"{run[0]}-{run[1]}.run"


def _dead(staging: Folder, names: list[str], marker: str | None, files: dict[str, float]) -> bool:
    """Whether the process of a run that staged `names` has provably ended: its marker names a process of this
    machine that is gone, or nothing of it was written for STALE_AFTER seconds."""
    if marker is not None:
        try:
            with staging.snapshot(marker) as f:
                who = json.loads(f.read())
        except FileNotFoundError:
            return False  # its run is folding it now
        except ValueError:
            who = None
        if isinstance(who, dict) and _gone(who):
            return True
    newest = max((files.get(n, 0.0) for n in [*names, *([marker] if marker else [])]), default=0.0)
    return time.time() - newest > STALE_AFTER


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux), to tell it from a later one given its pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _boot() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _this_process() -> dict[str, Any]:
    """What a run's marker says of the process writing its batches."""
    return {"host": socket.gethostname(), "boot": _boot(), "pid": os.getpid(), "started": _started(os.getpid())}


def _gone(who: dict[str, Any]) -> bool:
    """Whether a marker's process provably ended: it ran on this machine (same host, same boot) and is not running
    now (or its pid is another process's)."""
    me = _this_process()
    if not me["boot"] or who.get("host") != me["host"] or who.get("boot") != me["boot"]:
        return False  # another machine (or no way to tell): only its age can say
    pid = who.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # running, as another user
    return who.get("started") is not None and _started(pid) != who.get("started")


class StagedSink(Sink):
    """Each batch of one process as a staged batch of its own, whole and durable when `write` returns. Named
    `<stamp>-<rank>-<seq>.parquet`: in the order written, and never the name of another run's batch (two runs at
    once on a bucket, which no lock keeps apart, never write over each other's batches). In a bucket, the first
    batch goes with a marker (`<stamp>-<rank>.run`: this host, its boot, this pid) by which a later run knows this
    one ended."""

    def __init__(self, staging: Folder, path: str, task: type[Task], stamp: str, rank: int):
        self.staging, self.path, self.task = staging, path, task
        self._run = (stamp, f"{rank:04d}")
        self._seq = 0

    def write(self, records: list[Record]) -> None:
        import pyarrow.parquet as pq

        if not records:
            return
        table = records_table(records, self.task)
        if self._seq == 0 and self.staging.remote:
            who = json.dumps(_this_process()).encode()
            self.staging.put(marker(self._run), lambda f: f.write(who))
        self.staging.put(f"{self._run[0]}-{self._run[1]}-{self._seq:08d}.parquet", lambda f: pq.write_table(table, f))
        self._seq += 1
