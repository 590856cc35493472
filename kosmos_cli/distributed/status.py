"""Each rank's status file beside the output, kept fresh by a heartbeat thread, and reading the others'.

`<out>.ranks/<run tag>.rank-NNNNN.json` holds a rank's state, its counts and a beat counter. Files are renamed
into place, so a reader never sees half a status; the run tag keeps files of an earlier run from being taken for
this one's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ..atomic import atomic_write, rmdir, unlink

log = logging.getLogger("kosmos_cli")


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
