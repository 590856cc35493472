"""Progress on stderr: a live bar on a terminal; nothing but the summary line elsewhere (cron, logs)."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """The interface the pipeline reports to: by default silence (cron, logs, library calls)."""

    live = False  # a live display wants the total, counted in the background

    def start(self, total: int | None) -> None: ...
    def advance(self, done: int, failed: int, skipped: int) -> None: ...
    def close(self) -> None: ...


class BarProgress(Progress):
    """A tqdm bar counting images handled (done, failed or skipped), with failed and skipped in its postfix.

    The total arrives from a background count of the inputs (`start` may come after the first `advance`).
    """

    live = True

    def __init__(self, task: str, stream=None):
        self._task, self._stream = task, stream or sys.stderr
        self._bar: Any = None  # a tqdm bar once started

    def start(self, total: int | None) -> None:
        from tqdm import tqdm

        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()
            return
        self._bar = tqdm(
            total=total, desc=f"kosmos {self._task}", unit="img", file=self._stream, dynamic_ncols=True, leave=False
        )

    def advance(self, done: int, failed: int, skipped: int) -> None:
        if self._bar is None:
            self.start(None)
        assert self._bar is not None
        self._bar.n = done + failed + skipped
        self._bar.set_postfix(failed=failed, skipped=skipped, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def for_terminal(task: str, quiet: bool, stream=None) -> Progress:
    """A live bar when `stream` (stderr) is a terminal and not --quiet; otherwise silence."""
    stream = stream or sys.stderr
    if quiet or not getattr(stream, "isatty", lambda: False)():
        return Progress()
    return BarProgress(task, stream)
