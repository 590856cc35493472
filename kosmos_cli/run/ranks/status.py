"""Each rank's status file beside the output, kept fresh by a heartbeat thread, and reading the others'.

`<out>.ranks/<run tag>.rank-NNNNN.json` holds a rank's state, its counts and a beat counter (`RankStatus`: what
a rank says of itself). Files are renamed into place, so a reader never sees half a status; the run tag keeps
files of an earlier run from being taken for this one's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ...output.atomic import atomic_write, rmdir, unlink
from .watchdog import DONE, FAILED, INTERRUPTED

log = logging.getLogger("kosmos_cli")

LOADING, PREPARING, WAITING = "loading", "preparing", "waiting"


class RankStatus:
    """What this rank says of itself: its state (and error), its counts, its time and a beat counter.

    Set from the pipeline's thread and read by the heartbeat's: every access holds one lock.
    """

    def __init__(self, rank: int, world: int, host: str, space: str):
        self.fixed = {"rank": rank, "world": world, "host": host, "space": space, "pid": os.getpid()}
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.state: str = LOADING
            self.error: str | None = None
            self.counts: tuple[int, int, int] = (0, 0, 0)  # done, failed, skipped
            self.failures: list[str] = []
            self.seconds = 0.0
            self.beats = 0
            self.t0 = time.perf_counter()  # when this rank's own time started

    @property
    def ended(self) -> bool:
        return self.state in (DONE, FAILED, INTERRUPTED)

    def set(self, state: str, error: str | None = None) -> None:
        with self.lock:
            self.state, self.error = state, error

    def count(self, done: int, failed: int, skipped: int) -> None:
        with self.lock:
            self.counts = (done, failed, skipped)

    def start_clock(self) -> None:
        self.t0 = time.perf_counter()

    def finish(self, summary: Any) -> None:
        """This rank's share is done: its final counts, first failures and time, from its summary."""
        with self.lock:
            self.counts = (summary.done, summary.failed, summary.skipped)
            self.failures = list(summary.failures[:5])
            self.seconds = time.perf_counter() - self.t0

    def snapshot(self) -> dict[str, Any]:
        """The status to publish now (one more beat)."""
        with self.lock:
            self.beats += 1
            done, failed, skipped = self.counts
            return {
                **self.fixed,
                "state": self.state,
                "error": self.error,
                "beat": self.beats,
                "done": done,
                "failed": failed,
                "skipped": skipped,
                "seconds": round(self.seconds, 3),
                "failures": self.failures,
            }


class StatusBoard:
    """This rank's status file (written) and the other ranks' (read), in one folder, for one run tag."""

    def __init__(self, rank: int, folder: str, tag: str, beat: float):
        self.rank, self.folder, self.tag, self.beat = rank, folder, tag, beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, rank: int) -> str:
        return os.path.join(self.folder, f"{self.tag}.rank-{rank:05d}.json")

    def open(self) -> None:
        """Make the folder (raises OSError when it cannot be written)."""
        os.makedirs(self.folder, exist_ok=True)

    def publish(self, status: dict[str, Any], strict: bool = False) -> None:
        """Write this rank's status. `strict`: raise when it cannot be written (at start), else log it."""
        try:
            with atomic_write(self.path(self.rank), sync=False, suffix="~") as f:
                json.dump({"run": self.tag, **status}, f)
        except OSError as exc:
            if strict:
                raise
            log.debug("cannot write %s: %s", self.path(self.rank), exc)

    def read(self, rank: int) -> dict | None:
        """Rank `rank`'s last status in this run, or None when it has not written one."""
        try:
            with open(self.path(rank), encoding="utf-8") as f:
                status = json.load(f)
        except (OSError, ValueError):
            return None
        return status if isinstance(status, dict) and status.get("run") == self.tag else None

    # -- the heartbeat -------------------------------------------------------------------------------------
    def start(self, on_beat: Callable[[], None]) -> None:
        """Call `on_beat` every `beat` seconds on a thread of its own until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(on_beat,), name="kosmos-rank-status", daemon=True)
        self._thread.start()

    def _loop(self, on_beat: Callable[[], None]) -> None:
        while not self._stop.wait(self.beat):
            on_beat()

    @property
    def beating(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- tidying -----------------------------------------------------------------------------------------
    def remove(self, size: int) -> None:
        """After a complete run: every rank's file of this run, and the folder when it is empty."""
        for r in range(size):
            unlink(self.path(r))
        rmdir(self.folder)

    def forget_old_runs(self) -> None:
        """Rank 0, holding the output's lock: status files of earlier runs on this output."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.folder):
                if not name.startswith(self.tag + "."):
                    unlink(os.path.join(self.folder, name))
