"""The watchdog: tells from the ranks' last statuses which one failed, vanished or hung, and names it.

A rank that says "failed" or "interrupted" has failed; one whose process is gone (on this machine) or whose
heartbeat stopped for `timeout` seconds has vanished; one that is alive and running but has recorded nothing for
`stall` seconds looks hung. Loading a model (maybe downloading it) takes what it takes: it is never called hung.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from ...errors import RankError

TIMEOUT_ENV = "KOSMOS_RANK_TIMEOUT"
STALL_ENV = "KOSMOS_STALL_TIMEOUT"
DONE, FAILED, INTERRUPTED, RUNNING = "done", "failed", "interrupted", "running"


class Watchdog:
    """What rank `rank` of `size` makes of the others' statuses, seen over time."""

    def __init__(self, rank: int, size: int, folder: str, timeout: float, stall: float):
        self.rank, self.size, self.folder, self.timeout, self.stall = rank, size, folder, timeout, stall
        self.space = pid_space()
        self._since = time.monotonic()
        self._changed: dict[int, tuple[object, float]] = {}  # rank -> (beat, when it last changed)
        self._progressed: dict[int, tuple[object, float]] = {}  # rank -> (work, when it last changed)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def watched(self) -> range | list[int]:
        """The ranks this one depends on: rank 0 watches all, the others watch rank 0."""
        return range(1, self.size) if self.main else [0]

    def diagnose(self, r: int, status: dict | None, now: float, waited: bool = True) -> RankError | None:
        """What is wrong with rank `r`, given its last status; None while it is fine (or done)."""
        if status is None:
            if waited and now - self._since > self.timeout:
                return self._error(
                    r,
                    f"rank {r} has not reported for {self.timeout:.0f}s: it did not start, or "
                    f"cannot see {self.folder} (every machine must share the output's folder)",
                )
            return None
        state = status.get("state")
        if state == DONE:
            return None
        if state == FAILED:
            return self._error(r, f"rank {r} failed: {status.get('error') or 'see its messages'}", said=True)
        if state == INTERRUPTED:
            return self._error(r, f"rank {r} was interrupted", said=True)
        pid = status.get("pid")
        if status.get("space") == self.space and not alive(pid):
            return self._error(
                r, f"rank {r} (pid {pid} on {status.get('host')}) ended without finishing: see its messages"
            )
        if not waited:
            return None
        beat, seen = status.get("beat"), self._changed.get(r)
        if seen is None or seen[0] != beat:
            self._changed[r] = (beat, now)
        elif now - seen[1] > self.timeout:
            return self._error(
                r,
                f"rank {r} on {status.get('host')} stopped responding: no heartbeat for "
                f"{self.timeout:.0f}s (set {TIMEOUT_ENV} to wait longer)",
            )
        return self._stalled(r, status, now)

    def _stalled(self, r: int, status: dict, now: float) -> RankError | None:
        work = (status.get("state"), status.get("done"), status.get("failed"), status.get("skipped"))
        seen = self._progressed.get(r)
        if seen is None or seen[0] != work:
            self._progressed[r] = (work, now)
            return None
        if work[0] == RUNNING and self.stall and now - seen[1] > self.stall:
            return self._error(
                r,
                f"rank {r} on {status.get('host')} has recorded nothing for {self.stall:.0f}s "
                "although it is still running: it looks hung (a stuck GPU, driver or file "
                f"system); set {STALL_ENV} to wait longer",
            )
        return None

    def _error(self, r: int, message: str, said: bool = False) -> RankError:
        hint = "; run the same command again to finish the rest" if self.main else ""
        # rank 0 speaks for the run; another rank only when rank 0 vanished without a word
        return RankError(message + hint, r, quiet=not self.main and (r != 0 or said))


def pid_space() -> str:
    """Which processes this one can see by pid: its machine (host, boot) and its pid namespace."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            parts.append(f.read().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")  # a zombie has ended; its parent has not looked yet
        except FileNotFoundError:
            return False
        except (OSError, IndexError):
            pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
