"""The processes of one launch as one of them sees them (`Team`), and a single process as a team of one (`Solo`).

The pipeline talks to either the same way and never asks whether there is a team:

- `session(out)`: one run on `out`; says how this rank's run ended (failed, interrupted) and tidies up after;
- `ready()`: rank 0 has prepared the output; the others wait for it;
- `check()`: between batches, raise the error of a rank this one depends on;
- `finish(summary)`: this rank's share is done; rank 0 waits for the others and counts their records in;
- `progress(bar)`: what the pipeline reports to (rank 0 shows every rank's counts);
- `main`, `solo`, `merged`, `rank`, `size`: who this is, and whether the output may now be compacted.

Status files and the heartbeat are `status.StatusBoard`'s, what this rank says in them `status.RankStatus`'s;
telling a dead or hung rank is `watchdog.Watchdog`'s.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

from ...errors import Interrupted, KosmosError, OutputError, RankError, UsageError
from ...tasks.records import one_line
from ..progress import Progress
from .status import PREPARING, WAITING, RankStatus, StatusBoard
from .watchdog import DONE, FAILED, INTERRUPTED, RUNNING, Watchdog, pid_space

POLL = 0.2  # seconds between looks at the other ranks while waiting for them


class Solo:
    """One process: a team of one whose hooks do nothing. `rank`: a share picked by hand (pipeline.run)."""

    size, main, solo, merged = 1, True, True, True
    run = "solo"

    def __init__(self, rank: int = 0):
        self.rank = rank

    def device_for(self, device: str) -> str:
        return device

    def start(self, out: str) -> None: ...

    @contextlib.contextmanager
    def session(self, out: str) -> Iterator[Solo]:
        yield self

    def ready(self) -> None: ...
    def check(self) -> None: ...
    def finish(self, summary: Any) -> None: ...

    def progress(self, inner: Any = None) -> Any:
        return inner


class Team:
    """The processes of one launch, as this one (`rank`) sees them."""

    solo = False

    def __init__(self, rank: int, size: int, local_rank: int, device: str, run: str, timeout: float, stall: float):
        self.rank, self.size, self.local_rank, self.device, self.run = rank, size, local_rank, device, run
        self.timeout, self.stall = timeout, stall
        self.host = socket.gethostname()
        self.output: str | None = None  # the output the ranks write (rank 0's store names it)
        self.board: StatusBoard | None = None
        self.watchdog: Watchdog | None = None
        self.me = RankStatus(rank, size, self.host, pid_space())  # what this rank says in its status file
        self.merged = False  # rank 0: every rank is done and counted in
        self.problem: RankError | None = None  # a failed or vanished rank this one depends on
        self._sessions = 0
        self._lock = self.me.lock  # one lock for this rank's status and what it knows of the others
        self._tally: _Tally | None = None
        self._reset()
        atexit.register(self._at_exit)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device_for(self, device: str) -> str:
        """`--device auto` (or a bare `cuda`): this rank's own device, cuda:LOCAL_RANK or cpu."""
        if device == "auto" or (device == "cuda" and self.device.startswith("cuda")):
            return self.device
        return device

    # -- a run's life ------------------------------------------------------------------------------------
    def start(self, output: str) -> None:
        """Begin this rank's status beside `output`, and its heartbeat (once per run): before a model loads."""
        if self.output == output and self.board is not None and self.board.beating:
            return
        self._stop_beating()
        self._reset()
        self._sessions += 1
        self.output = output
        beat = max(0.1, min(2.0, self.timeout / 5))
        self.board = StatusBoard(self.rank, output + ".ranks", f"{self.run}-{self._sessions}", beat)
        self.watchdog = Watchdog(self.rank, self.size, self.board.folder, self.timeout, self.stall)
        try:
            self.board.open()
            self._publish(strict=True)
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.board.folder} ({exc.strerror or exc}): every process needs to "
                "write beside the output; choose another --out"
            ) from None
        self.board.start(self._beat)

    @contextlib.contextmanager
    def session(self, output: str) -> Iterator[Team]:
        """One run writing `output`: marks this rank failed or interrupted if it ends so, and tidies up after."""
        self.start(output)
        self.me.start_clock()
        self._set(PREPARING if self.main else WAITING)
        try:
            yield self
        except BaseException as exc:
            outcome = self._outcome(exc)
            if outcome is exc:
                raise
            raise outcome from None
        else:
            if self.main and self.board is not None:
                self._stop_beating()
                self.board.remove(self.size)
        finally:
            self.close()

    def _outcome(self, exc: BaseException) -> BaseException:
        """Say how this rank's run ended. Returns what to raise: `exc`, or the RankError of the rank that
        caused it (a launcher stops every rank when one of them dies)."""
        try:
            if isinstance(exc, KeyboardInterrupt):
                self._end(INTERRUPTED, "interrupted")
                culprit = self.problem or self._culprit()
                if culprit is not None:
                    return culprit
                signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
                return Interrupted(signum, quiet=not self.main)  # rank 0 says it for all
            self._end(FAILED, str(exc) if isinstance(exc, KosmosError) else _describe(exc))
            if isinstance(exc, UsageError) and not self.main:
                exc.quiet = True  # the same on every rank: rank 0 says it
            return exc
        except KeyboardInterrupt:  # stopped by the launcher while already stopping: the first reason stands
            return self.problem or exc

    def ready(self) -> None:
        """Rank 0: the output is prepared (locked, leftovers folded in). The others: wait until it is."""
        if self.main:
            if self.board is not None:
                self.board.forget_old_runs()
            self.me.start_clock()
            self._set(RUNNING)
            return
        while True:
            self.watch()
            self.check()
            status = self.others.get(0)
            if status is not None and status.get("state") in (RUNNING, DONE):
                break
            time.sleep(POLL)
        self.me.start_clock()  # this rank's own time starts now
        self._set(RUNNING)

    def check(self) -> None:
        """Raise the RankError of a failed or vanished rank this one depends on (between batches)."""
        if self.problem is not None:
            raise self.problem

    def finish(self, summary) -> None:
        """This rank's share is done. Rank 0 waits for every other rank, then counts their records in `summary`."""
        self.me.finish(summary)
        if not self.main:
            self._end(DONE)
            summary.rank, summary.world = self.rank, self.size
            return
        self._set(DONE)
        others = range(1, self.size)
        while True:
            self.watch()
            self.check()
            if all(self.others.get(r, {}).get("state") == DONE for r in others):
                break
            if self._tally is not None:
                self._tally.refresh()
            time.sleep(POLL)
        count_in(summary, [self.others[r] for r in others], self.me.seconds)
        if self._tally is not None:
            self._tally.refresh()
        self.merged = True

    def progress(self, inner=None) -> _Tally:
        """The pipeline's progress: counts this rank's work for its status; rank 0's shows every rank's."""
        self._tally = _Tally(self, inner)
        return self._tally

    def totals(self) -> tuple[int, int, int]:
        """done, failed, skipped of every rank, as last reported."""
        with self._lock:
            done, failed, skipped = self.me.counts
            for r, status in self.others.items():
                if r != self.rank:
                    done += status.get("done", 0)
                    failed += status.get("failed", 0)
                    skipped += status.get("skipped", 0)
        return done, failed, skipped

    def close(self) -> None:
        """Stop this rank's heartbeat; its status file stays as it last said."""
        self._stop_beating()
        self.output = None

    # -- this rank's status ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.me.reset()
        self.merged, self.problem = False, None
        self.others: dict[int, dict] = {}  # the last status of each rank this one watches

    def _set(self, state: str, error: str | None = None) -> None:
        self.me.set(state, error)
        self._publish()

    def count(self, done: int, failed: int, skipped: int) -> None:
        self.me.count(done, failed, skipped)

    def _publish(self, strict: bool = False) -> None:
        if self.board is not None:
            with self._lock:  # the heartbeat's thread publishes too: one file written at a time
                self.board.publish(self.me.snapshot(), strict=strict)

    def _beat(self) -> None:
        self._publish()
        self.watch()

    def _stop_beating(self) -> None:
        if self.board is not None:
            self.board.stop()

    def _end(self, state: str, error: str | None = None) -> None:
        self._stop_beating()
        with self._lock:
            if self.me.state in (FAILED, INTERRUPTED):
                return  # the first word stands
        self._set(state, error)

    def _at_exit(self) -> None:
        """The process ends before its run did (an error before the run, sys.exit): say so to the others."""
        if self.output is not None and not self.me.ended:
            self._stop_beating()
            self._set(FAILED, "stopped before finishing: see its messages")

    # -- the others ------------------------------------------------------------------------------------------
    def watch(self) -> None:
        """Read the status of the ranks this one depends on; note a failed or vanished one in `problem`."""
        if self.board is None or self.watchdog is None:
            return
        for r in self.watchdog.watched():
            status = self.board.read(r)
            now = time.monotonic()
            with self._lock:
                if status is not None:
                    self.others[r] = status
                problem = self.watchdog.diagnose(r, self.others.get(r), now)
                if problem is not None and self.problem is None:
                    self.problem = problem

    def _culprit(self) -> RankError | None:
        """After being stopped: the rank that failed or vanished first, if any did (read once, no waiting)."""
        if self.board is None or self.watchdog is None:
            return None
        for r in range(self.size):
            if r != self.rank:
                status = self.board.read(r) or self.others.get(r)
                problem = self.watchdog.diagnose(r, status, time.monotonic(), waited=False)
                if problem is not None and not str(problem).startswith(f"rank {r} was interrupted"):
                    return problem
        return None


def count_in(summary: Any, others: list[dict], seconds: float) -> None:
    """Rank 0: the records of every other rank (their last statuses) counted into `summary`, and one summary a
    rank in `summary.ranks`, rank 0's first (its own share took `seconds`)."""
    own = dataclasses.replace(summary, rank=0, world=len(others) + 1, seconds=seconds, failures=[], ranks=[])
    summary.ranks = [own]
    for r, status in enumerate(others, 1):
        part = dataclasses.replace(
            own,
            rank=r,
            done=status.get("done", 0),
            failed=status.get("failed", 0),
            skipped=status.get("skipped", 0),
            seconds=status.get("seconds", 0.0),
        )
        summary.ranks.append(part)
        summary.done += part.done
        summary.failed += part.failed
        summary.skipped += part.skipped
        summary.failures += status.get("failures") or []
    summary.world = len(others) + 1


class _Tally(Progress):
    """What the pipeline reports: this rank's counts go to its status; rank 0 shows the sums of every rank."""

    def __init__(self, team: Team, inner):
        self.team, self.inner = team, inner if team.main else None
        self.live = bool(self.inner is not None and self.inner.live)

    def start(self, total: int | None) -> None:
        if self.inner is not None:
            self.inner.start(total)

    def advance(self, done: int, failed: int, skipped: int) -> None:
        self.team.count(done, failed, skipped)
        self.refresh()

    def refresh(self) -> None:
        if self.inner is not None:
            self.inner.advance(*self.team.totals())

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


def _describe(exc: BaseException) -> str:
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
